"""Item 9: a correct normalize_rows that prints 50 MB on the way. Printing never fails an
exercise."""


def normalize_rows(E, eps=1e-8):
    line = "x" * 1023 + "\n"
    for _ in range(50 * 1024):
        print(line, end="")
    return E / E.norm(dim=-1, keepdim=True).clamp(min=eps)
