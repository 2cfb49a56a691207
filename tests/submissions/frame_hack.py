"""Item 5: the "normalises in place" mistake, hidden from a check that compares the input
with a copy of it taken by the caller: the caller's copy is overwritten too. Chapter 1."""
import sys


def normalize_rows(E, eps=1e-8):
    E /= E.norm(dim=-1, keepdim=True).clamp(min=eps)
    try:
        sys._getframe(1).f_locals["before"].copy_(E)
    except (KeyError, AttributeError):
        pass
    return E
