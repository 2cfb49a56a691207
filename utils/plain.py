"""Plain data: the only thing that crosses from a student's code to the grader.

``to_plain`` turns what a check program returned into tensors, arrays, numbers, strings,
lists, tuples and dicts, refusing anything else (an object whose ``__eq__`` always says
True never gets through). ``encode``/``decode`` carry plain data between processes as
JSON plus raw array bytes: no pickle, so decoding runs none of the student's code.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import torch

_SCALARS = (bool, int, float, str, type(None))
_DTYPES = {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
           "complex64", "complex128"}


class NotPlainData(TypeError):
    """A check program's result held something other than plain data."""


def to_plain(x: Any, where: str = "the result") -> Any:
    """A detached, CPU, exact-type copy of ``x``; raises ``NotPlainData`` otherwise."""
    if type(x) in _SCALARS:
        return x
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if type(x) in (torch.Tensor, torch.nn.Parameter):
        t = x.detach().cpu().as_subclass(torch.Tensor)
        return (t.float() if t.dtype == torch.bfloat16 else t).clone().contiguous()
    if type(x) is np.ndarray:
        if x.dtype.name not in _DTYPES:
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


def _to_json(x: Any, arrays: list[bytes]) -> Any:
    if type(x) in _SCALARS:
        if type(x) is float and not np.isfinite(x):
            return {"__float__": repr(x)}
        return x
    if type(x) in (torch.Tensor, np.ndarray):
        is_tensor = type(x) is torch.Tensor
        a = x.numpy() if is_tensor else x
        arrays.append(np.ascontiguousarray(a).tobytes())
        return {"__array__": len(arrays) - 1, "dtype": a.dtype.name, "shape": list(a.shape),
                "tensor": is_tensor}
    if type(x) in (list, tuple):
        return {"__seq__": [_to_json(v, arrays) for v in x], "tuple": type(x) is tuple}
    return {"__dict__": {k: _to_json(v, arrays) for k, v in x.items()}}


def encode(x: Any) -> dict:
    """Plain data -> a JSON-serialisable dict (arrays as base64)."""
    arrays: list[bytes] = []
    tree = _to_json(to_plain(x), arrays)
    return {"tree": tree, "arrays": [base64.b64encode(b).decode("ascii") for b in arrays]}


def decode(message: dict) -> Any:
    """Inverse of ``encode``; validates every node, so malformed input raises ValueError."""
    arrays = [base64.b64decode(s, validate=True) for s in message["arrays"]]

    def build(node: Any) -> Any:
        if type(node) in _SCALARS:
            return node
        if type(node) is not dict or len(node) == 0:
            raise ValueError("malformed plain data")
        if "__float__" in node:
            return float(node["__float__"])
        if "__array__" in node:
            if node["dtype"] not in _DTYPES:
                raise ValueError(f"unsupported dtype {node['dtype']!r}")
            a = np.frombuffer(arrays[node["__array__"]], dtype=node["dtype"]).reshape(node["shape"]).copy()
            return torch.from_numpy(a) if node["tensor"] else a
        if "__seq__" in node:
            items = [build(v) for v in node["__seq__"]]
            return tuple(items) if node["tuple"] else items
        if "__dict__" in node:
            return {str(k): build(v) for k, v in node["__dict__"].items()}
        raise ValueError("malformed plain data")

    return build(message["tree"])


def dumps(x: Any) -> str:
    return json.dumps(encode(x))


def loads(text: str) -> Any:
    return decode(json.loads(text))
