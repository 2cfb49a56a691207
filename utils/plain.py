"""Plain data: what a check program returns, and what the grader compares.

``to_plain`` turns what a check program returned into tensors, arrays, numbers, strings,
lists, tuples and dicts, refusing anything else (an object whose ``__eq__`` always says
True never gets through). Objects of the student's process that a program returns
(``utils.grading.remote``) copy themselves through ``_plain_copy``, or refuse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SCALARS = (bool, int, float, str, type(None))
DTYPES = {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
           "complex64", "complex128"}


class NotPlainData(TypeError):
    """A check program's result held something other than plain data."""


def to_plain(x: Any, where: str = "the result") -> Any:
    """A detached, CPU, exact-type copy of ``x``; raises ``NotPlainData`` otherwise."""
    if type(x) in SCALARS:
        return x
    if hasattr(type(x), "_plain_copy"):  # a tensor or object of the student's process
        return x._plain_copy(where)
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if type(x) in (torch.Tensor, torch.nn.Parameter):
        t = x.detach().cpu().as_subclass(torch.Tensor)
        return (t.float() if t.dtype == torch.bfloat16 else t).clone().contiguous()
    if type(x) is np.ndarray:
        if x.dtype.name not in DTYPES:
            raise NotPlainData(f"{where} is an array of {x.dtype}; return numbers or tensors")
        return x.copy()
    if type(x) in (list, tuple):
        items = [to_plain(item, f"item {i} of {where}") for i, item in enumerate(x)]
        return items if type(x) is list else tuple(items)
    if type(x) is dict:
        if not all(type(k) is str for k in x):
            raise NotPlainData(f"{where} is a dict whose keys are not all strings")
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in x.items()}
    raise NotPlainData(
        f"{where} is a {type(x).__module__}.{type(x).__qualname__}; "
        "return torch tensors, numbers, strings, or lists/tuples/dicts of them")
