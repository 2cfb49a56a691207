"""Item 7: control characters in what a student's code raises must not break the batch's
JUnit XML, CSV or JSON."""


def normalize_rows(E, eps=1e-8):
    raise ValueError("escape \x1b[31m, nul \x00, bell \x07, form feed \x0c, lone surrogate \ud800, "
                     "XML-forbidden \ufffe")
