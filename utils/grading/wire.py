"""Messages between the grader and the student's process: a JSON header plus raw bytes.

A message is a JSON object (the header) and a list of byte buffers (array data). On a
pipe it travels as one frame::

    <u32 header length> <u64 payload length> <header JSON> <buffer 0> <buffer 1> ...

with the buffers' lengths listed in the header. Reading checks every length against a
limit before allocating anything, so a hostile peer costs the reader at most that limit.

Values inside a header are encoded by ``encode``: plain data (numbers, strings, tensors,
arrays, lists, tuples, dicts with string keys) as itself, torch generators and dtypes by
value, anything else through a hook the caller supplies (an object reference, see
``utils.grading.remote``). Decoding runs no code of the sender's: no pickle.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any, Callable

import numpy as np
import torch

from utils.plain import DTYPES, SCALARS

FRAME = struct.Struct("<IQ")
MAX_HEADER_BYTES = 16 << 20


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed message."""


class TooLarge(ProtocolError):
    """A message is larger than the reader accepts."""


# --------------------------------------------------------------------------- values


class Hooks:
    """What a sender does with values that are not scalars or containers."""

    def special(self, value: Any) -> Any:
        """A node for a value the sender treats specially, or None for the plain encoding."""
        return None

    def other(self, value: Any) -> Any:
        """A node for a value the plain encoding cannot carry (or raise)."""
        raise TypeError(f"cannot send a {type(value).__qualname__}")


def encode(value: Any, buffers: list, hooks: Hooks) -> Any:
    """``value`` as a JSON-ready tree; array bytes are appended to ``buffers``."""
    return _Encoder(buffers, hooks).node(value)


class _Encoder:
    def __init__(self, buffers: list, hooks: Hooks):
        self.buffers, self.hooks = buffers, hooks

    def array(self, a: np.ndarray, kind: str) -> dict:
        self.buffers.append(np.ascontiguousarray(a).tobytes())
        return {"$array": len(self.buffers) - 1, "dtype": a.dtype.name, "shape": list(a.shape), "kind": kind}

    def node(self, value: Any) -> Any:
        kind = type(value)
        if kind in SCALARS:
            return {"$float": repr(value)} if kind is float and not math.isfinite(value) else value
        if kind in (list, tuple):
            return {"$list" if kind is list else "$tuple": [self.node(v) for v in value]}
        if kind is dict and all(type(k) is str for k in value):
            return {"$dict": {k: self.node(v) for k, v in value.items()}}
        special = self.hooks.special(value)
        if special is not None:
            return special
        if kind is torch.Tensor:
            return tensor_node(value, self.buffers)
        if kind is np.ndarray and value.dtype.name in DTYPES:
            return self.array(value, "ndarray")
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return self.node(value.item())
        if kind is torch.dtype:
            return {"$dtype": str(value).removeprefix("torch.")}
        if kind is torch.Generator:
            state = self.array(value.get_state().numpy(), "state")
            return {"$generator": state, "device": str(value.device)}
        return self.hooks.other(value)



def tensor_node(t: torch.Tensor, buffers: list) -> dict:
    """A tensor's values (detached, on the CPU, bfloat16 as float32) as an array node."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    if t.layout != torch.strided:
        t = t.to_dense()
    array = t.resolve_conj().resolve_neg().numpy()
    buffers.append(np.ascontiguousarray(array).tobytes())
    return {"$array": len(buffers) - 1, "dtype": array.dtype.name, "shape": list(array.shape), "kind": "tensor"}


def decode(node: Any, buffers: list, resolve: Callable[[dict], Any]) -> Any:
    """Inverse of ``encode``; ``resolve(node)`` builds what the sender's hook encoded.

    Every node is validated: anything malformed raises ``ProtocolError``.
    """
    kind = type(node)
    if kind in SCALARS:
        return node
    if kind is not dict or len(node) == 0:
        raise ProtocolError("malformed value")
    if "$float" in node:
        if node["$float"] not in ("nan", "inf", "-inf"):
            raise ProtocolError("malformed float")
        return float(node["$float"])
    if "$list" in node or "$tuple" in node:
        items = node.get("$list", node.get("$tuple"))
        if type(items) is not list:
            raise ProtocolError("malformed sequence")
        values = [decode(v, buffers, resolve) for v in items]
        return values if "$list" in node else tuple(values)
    if "$dict" in node:
        if type(node["$dict"]) is not dict:
            raise ProtocolError("malformed dict")
        return {str(k): decode(v, buffers, resolve) for k, v in node["$dict"].items()}
    if "$array" in node:
        array = decode_array(node, buffers)
        return torch.from_numpy(array) if node.get("kind") == "tensor" else array
    if "$dtype" in node:
        dtype = getattr(torch, str(node["$dtype"]), None)
        if type(dtype) is not torch.dtype:
            raise ProtocolError("unknown dtype")
        return dtype
    if "$generator" in node:
        state = decode_array(node["$generator"], buffers)
        try:
            generator = torch.Generator(str(node.get("device", "cpu")))
            generator.set_state(torch.from_numpy(state))
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed generator state ({exc})") from None
        return generator
    return resolve(node)


def decode_array(node: dict, buffers: list) -> np.ndarray:
    try:
        dtype, shape, index = node["dtype"], node["shape"], node["$array"]
        if dtype not in DTYPES or type(index) is not int or not 0 <= index < len(buffers):
            raise ProtocolError("malformed array")
        if type(shape) is not list or len(shape) > 64 or not all(type(n) is int and n >= 0 for n in shape):
            raise ProtocolError("malformed array shape")
        data = buffers[index]
        if math.prod(shape) * np.dtype(dtype).itemsize != len(data):
            raise ProtocolError("array size does not match its shape")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed array ({exc})") from None


# --------------------------------------------------------------------------- frames


def frame(header: dict, buffers: list) -> list[bytes]:
    """The pieces of one frame, ready to write in order."""
    header = dict(header, buffers=[len(b) for b in buffers])
    text = json.dumps(header, separators=(",", ":")).encode()
    return [FRAME.pack(len(text), sum(len(b) for b in buffers)), text, *buffers]


def parse_header(text: bytes, payload: int) -> dict:
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("the header is not JSON") from None
    if type(header) is not dict or type(header.get("buffers")) is not list or \
            not all(type(n) is int and n >= 0 for n in header["buffers"]) or sum(header["buffers"]) != payload:
        raise ProtocolError("malformed header")
    return header


class PipeTransport:
    """Frames over a pair of file descriptors, with a deadline on every read and write.

    ``deadline`` (a ``time.monotonic()`` value, or None for none) is set by the owner;
    waiting past it raises ``TimeoutError``. End of file raises ``EOFError``.
    """

    def __init__(self, read_fd: int, write_fd: int, max_bytes: int):
        self.read_fd, self.write_fd, self.max_bytes = read_fd, write_fd, max_bytes
        self.deadline: float | None = None

    def _wait(self, fd: int, for_writing: bool) -> None:
        if self.deadline is None:
            return
        remaining = self.deadline - time.monotonic()
        ready = select.select([], [fd], [], max(0.0, remaining)) if for_writing else \
            select.select([fd], [], [], max(0.0, remaining))
        if not any(ready):
            raise TimeoutError

    def send(self, header: dict, buffers: list) -> None:
        for piece in frame(header, buffers):
            view = memoryview(piece)
            while view:
                self._wait(self.write_fd, for_writing=True)
                view = view[os.write(self.write_fd, view):]

    def _read(self, n: int) -> bytearray:
        data = bytearray(n)
        view, got = memoryview(data), 0
        while got < n:
            self._wait(self.read_fd, for_writing=False)
            chunk = os.readv(self.read_fd, [view[got:]])
            if chunk == 0:
                raise EOFError
            got += chunk
        return data

    def receive(self) -> tuple[dict, list]:
        length, payload = FRAME.unpack(self._read(FRAME.size))
        if length > MAX_HEADER_BYTES or length + payload > self.max_bytes:
            raise TooLarge(f"a message of {(length + payload) / 2**20:.0f} MB (the limit is "
                           f"{self.max_bytes / 2**20:.0f} MB)")
        header = parse_header(self._read(length), payload)
        return header, [self._read(n) for n in header.pop("buffers")]

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
