"""Item 7: x/dup.py, y/dup.py and x__dup.py are three students: each report must say whose
it is. This one is correct."""


def normalize_rows(E, eps=1e-8):
    return E / E.norm(dim=-1, keepdim=True).clamp(min=eps)
