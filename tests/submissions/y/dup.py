"""Item 7: see x/dup.py. This one forgets to clamp the norm (zero rows become NaN)."""


def normalize_rows(E, eps=1e-8):
    return E / E.norm(dim=-1, keepdim=True)
