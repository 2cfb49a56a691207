"""Item 7: a file name that a spreadsheet would read as a formula (the gradebook's first
column); the submission itself is a correct normalize_rows."""


def normalize_rows(E, eps=1e-8):
    return E / E.norm(dim=-1, keepdim=True).clamp(min=eps)
