"""Objects that live in another process, and the conversation that reaches them.

A check case runs in the grader's process; the student's functions and objects stay in
the student's process. Each side has an ``Endpoint``: it sends requests (read an
attribute, call, iterate), serves the other side's, and lends out its objects by
reference. What crosses is plain data (``utils.grading.wire``) or a reference:

* ``Proxy``: an object of the other side (a student's function, class, model, iterator;
  or, seen from the student's side, a callable the check passed in). Attribute reads and
  writes, calls, ``iter``, ``next``, ``len``, ``bool`` and ``[]`` are sent over.
* ``RemoteTensor``: a tensor the student's process owns (a parameter, or any tensor read
  as an attribute of a student's object). The grader sees a snapshot that is brought up
  to date before each use; its in-place methods (``copy_``, ``mul_``, ``-=``, ...) run in
  the student's process. Autograd through the student's code runs there too, through a
  public helper (``in_student_process``, e.g. ``utils.checks.gradients``).

Arguments cross as copies. After a call the student's side reports which of them it
changed and their new state; the caller copies that state back into its own arguments
(so a check sees what it would have seen in one process) and, on the grader's side,
records the change as a side effect that the verdict can hold against the student.

``local_session`` runs both endpoints in one process, with the same copies and the same
rules, each side with its own random number generator state: the notebook's ``check``
and the reference's expected values go through it, so they see exactly what a sandboxed
run sees.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib
import inspect
import json
import linecache
import operator
import os
import random
import re
import types
import weakref
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from utils.grading import wire
from utils.grading.wire import ProtocolError
from utils.plain import NotPlainData

STUDENT, GRADER = "student", "grader"
MAX_FILE_BYTES = 64 << 20  # a file a check passes to the student's code


class RemoteError(Exception):
    """Base of the exceptions re-raised for the student's code, which raised one in its process.

    Each is built with the student's exception's name and its nearest built-in base, so
    ``except ValueError`` in a check catches a student's ``ValueError``.
    """

    description = ""  # what the student is told: type, message, and where in their code


class WorkerLost(BaseException):
    """The student's process stopped answering: it ended, hung past its deadline, sent
    something that is not a message, or a message that is too large.

    A ``BaseException``, so that no ``except Exception`` in a check swallows it.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


class ResultTooLarge(ValueError):
    """What the student's code returned is too large to send to the grader."""


class CaseError(Exception):
    """A check case used an object of the student's process in a way that cannot work."""


_error_classes: dict[tuple[str, str], type] = {}


def remote_error(info: Any) -> RemoteError:
    """The exception to raise here for an error report from the other side."""
    info = info if type(info) is dict else {}
    name = re.sub(r"\W", "_", str(info.get("type", "Exception")))[:60] or "Exception"
    base = getattr(builtins, str(info.get("base", "Exception")), Exception)
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base = Exception
    cls = _error_classes.get((name, base.__name__))
    if cls is None:
        cls = _error_classes[name, base.__name__] = type(name if name[0].isalpha() else "E" + name,
                                                         (RemoteError, base), {})
    error = cls(str(info.get("message", ""))[:1000])
    error.description = str(info.get("description", ""))[:2000]
    return error


def _error_report(exc: BaseException) -> dict:
    from utils.checks import describe_exception

    base = next(c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins")
    if isinstance(exc, ResultTooLarge):
        description = str(exc)
    elif isinstance(exc, SystemExit):
        description = f"the code called sys.exit({exc.code!r}); a function must return"
    elif isinstance(exc, RecursionError):
        description = "RecursionError: maximum recursion depth exceeded (or a result nested too deeply)"
    else:
        description = describe_exception(exc)
    return {"type": type(exc).__name__, "base": base if issubclass(getattr(builtins, base), Exception)
            else "Exception", "message": str(exc)[:1000], "description": description}


# --------------------------------------------------------------------------- lending objects


class Exports:
    """The objects one side has lent to the other in the current case, by number."""

    def __init__(self):
        self.objects: dict[int, Any] = {}
        self.numbers: dict[int, int] = {}  # id(object) -> its number

    def lend(self, obj: Any) -> int:
        number = self.numbers.get(id(obj))
        if number is None:
            number = self.numbers[id(obj)] = len(self.objects)
            self.objects[number] = obj
        return number

    def lent(self, obj: Any) -> bool:
        return id(obj) in self.numbers and self.objects[self.numbers[id(obj)]] is obj

    def __getitem__(self, number: Any) -> Any:
        if type(number) is not int or number not in self.objects:
            raise ProtocolError("a reference to an object that was never lent")
        return self.objects[number]

    def clear(self) -> None:
        self.objects.clear()
        self.numbers.clear()


def _label(obj: Any) -> dict:
    kind = type(obj)
    name = getattr(obj, "__qualname__", None) if callable(obj) else None
    return {"type": f"{kind.__module__}.{kind.__qualname__}"[:120],
            "name": name[:80] if isinstance(name, str) else None}


class Proxy:
    """An object of the other process. What a check does with it is sent there."""

    __slots__ = ("_endpoint", "_number", "_type", "_name")

    def __init__(self, endpoint: Endpoint, number: int, type_name: str, name: str | None):
        for slot, value in zip(Proxy.__slots__, (endpoint, number, type_name, name)):
            object.__setattr__(self, slot, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # what Python, numpy and torch probe
            raise AttributeError(name)
        return self._endpoint.request("get", self._number, name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._endpoint.request("set", self._number, name=name, payload=value)

    def __call__(self, *args, **kwargs) -> Any:
        return self._endpoint.call(self._name or self._type, args, kwargs, target=self._number)

    def __iter__(self) -> Any:
        return self._endpoint.request("builtin", self._number, name="iter")

    def __next__(self) -> Any:
        return self._endpoint.request("builtin", self._number, name="next")

    def __len__(self) -> int:
        return operator.index(self._endpoint.request("builtin", self._number, name="len"))

    def __bool__(self) -> bool:
        return self._endpoint.request("builtin", self._number, name="bool") is True

    def __getitem__(self, key: Any) -> Any:
        return self._endpoint.request("builtin", self._number, name="getitem", payload=[key])

    def __repr__(self) -> str:
        return f"<{self._name or self._type} in the {self._endpoint.peer}'s process>"

    def _plain_copy(self, where: str) -> Any:
        raise NotPlainData(f"{where} is a {self._type}; return torch tensors, numbers, strings, "
                           "or lists/tuples/dicts of them")


_AUTOGRAD = {torch.Tensor.backward, torch.autograd.grad, torch.autograd.backward, torch.Tensor.register_hook}
_FORWARDED_PROPERTIES = {torch.Tensor.grad.__get__: "grad", torch.Tensor.requires_grad.__get__: "requires_grad",
                         torch.Tensor.is_leaf.__get__: "is_leaf"}
_IN_PLACE_OPERATORS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                       "__imod__", "__ipow__", "__imatmul__", "__iand__", "__ior__", "__ixor__",
                       "__ilshift__", "__irshift__"}


class RemoteTensor(torch.Tensor):
    """A tensor owned by the student's process, seen here as an up-to-date snapshot.

    Reads use the snapshot (refreshed whenever the student's code may have run since);
    in-place methods run on the student's tensor; autograd raises ``CaseError``: use
    ``utils.checks.gradients`` (it runs in the student's process).
    """

    @staticmethod
    def __new__(cls, snapshot: torch.Tensor, endpoint: Endpoint, number: int):
        tensor = torch.Tensor._make_subclass(cls, snapshot)
        tensor._endpoint, tensor._number, tensor._epoch = endpoint, number, endpoint.epoch
        return tensor

    def _update(self, snapshot: torch.Tensor) -> None:
        with torch._C.DisableTorchFunctionSubclass():
            torch.Tensor.set_(self, snapshot)
        self._epoch = self._endpoint.epoch

    def _refresh(self) -> None:
        if self._epoch != self._endpoint.epoch:
            self._update(self._endpoint.request("value", self._number))

    def _plain_copy(self, where: str) -> torch.Tensor:
        self._refresh()
        with torch._C.DisableTorchFunctionSubclass():
            return self.as_subclass(torch.Tensor).clone()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _AUTOGRAD:
            raise CaseError("autograd through the student's code runs in the student's process: "
                            "use utils.checks.gradients(...)")
        remote = [a for a in _leaves((args, kwargs)) if isinstance(a, RemoteTensor)]
        for tensor in remote:
            tensor._refresh()
        first = args[0] if args and isinstance(args[0], RemoteTensor) else None
        name = getattr(func, "__name__", "")
        if first is not None and func in _FORWARDED_PROPERTIES:
            return first._endpoint.request("get", first._number, name=_FORWARDED_PROPERTIES[func])
        in_place = name in _IN_PLACE_OPERATORS or (name.endswith("_") and not name.startswith("_"))
        if any(isinstance(a, RemoteTensor) for a in _leaves(kwargs.get("out"))) or \
                in_place and any(a is not first for a in remote) or \
                in_place and first is not None and getattr(torch.Tensor, name, None) is not func:
            raise CaseError(f"{name} would change a tensor of the student's process here: call it as "
                            "a method of that tensor (t.copy_(x)), or change it through the student's code")
        if in_place and first is not None:
            return first._endpoint.call(name, args[1:], kwargs, target=first._number, method=name)
        with torch._C.DisableTorchFunctionSubclass():
            plain = [a.as_subclass(torch.Tensor) if isinstance(a, RemoteTensor) else a for a in args]
            return func(*plain, **kwargs)


def _leaves(tree: Any):
    if type(tree) in (list, tuple):
        for item in tree:
            yield from _leaves(item)
    elif type(tree) is dict:
        for item in tree.values():
            yield from _leaves(item)
    else:
        yield tree


# --------------------------------------------------------------------------- the conversation


class _Hooks(wire.Hooks):
    """How one side sends what is not plain data: by reference."""

    def __init__(self, endpoint: Endpoint, buffers: list, live: bool):
        self.endpoint, self.buffers, self.live = endpoint, buffers, live

    def special(self, value: Any) -> Any:
        endpoint = self.endpoint
        if isinstance(value, (Proxy, RemoteTensor)):
            if value._endpoint is not endpoint:
                raise CaseError("an object of another grading session was passed along")
            return {"$object": value._number, "owner": endpoint.peer}
        if endpoint.owner == STUDENT and isinstance(value, torch.Tensor) and (
                type(value) is torch.nn.Parameter or self.live or endpoint.exports.lent(value)):
            if type(value) not in (torch.Tensor, torch.nn.Parameter):
                return None  # a tensor subclass is the student's object, not a tensor
            return {"$tensor": endpoint.exports.lend(value), "snapshot": wire.tensor_node(value, self.buffers)}
        if endpoint.owner == GRADER and isinstance(value, PurePath):
            return self.file(Path(value))
        if endpoint.owner == GRADER and isinstance(value, torch.Tensor) and value.requires_grad:
            raise CaseError("a tensor that requires grad was passed to the student's code: gradients "
                            "through it are computed in the student's process, with utils.checks.gradients")
        return None

    def other(self, value: Any) -> Any:
        return {"$object": self.endpoint.exports.lend(value), "owner": self.endpoint.owner, **_label(value)}

    def file(self, path: Path) -> dict:
        """A path crosses as a copy of the file it names (or as a path to nothing, like it)."""
        if path.is_dir() or path.exists() and not path.is_file():
            raise CaseError(f"{path} is not a file: only files can be passed to the student's code")
        data = None
        if path.exists():
            if path.stat().st_size > MAX_FILE_BYTES:
                raise CaseError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MB")
            self.buffers.append(path.read_bytes())
            data = len(self.buffers) - 1
        return {"$file": path.name, "path": str(path), "data": data}


def _mutable(value: Any) -> bool:
    """Whether a call could change ``value`` in place (a tuple, through what it holds)."""
    return type(value) in (torch.Tensor, np.ndarray, list, dict, torch.Generator) or \
        type(value) is tuple and any(map(_mutable, value))


class _Identities(wire.Hooks):
    def other(self, value: Any) -> Any:
        return {"$identity": id(value)}


def _digest(value: Any) -> bytes:
    """A fingerprint of a value's state, to tell whether a call changed it."""
    buffers: list = []
    tree = wire.encode(value, buffers, _Identities())
    digest = hashlib.blake2b(json.dumps(tree).encode(), digest_size=16)
    for buffer in buffers:
        digest.update(buffer)
    return digest.digest()


def _callees(function: Any) -> list[str]:
    """The functions of its module that ``function`` refers to by name (it may call them)."""
    function = getattr(function, "__func__", function)
    code, scope = getattr(function, "__code__", None), getattr(function, "__globals__", {})
    return [n for n in dict.fromkeys(code.co_names) if isinstance(scope.get(n), types.FunctionType)] if code else []


def _identifier(text: Any) -> str:
    return re.sub(r"\W", "", str(text))[:40]


def _parameter_names(function: Any, args: list, kwargs: dict) -> dict:
    try:
        bound = inspect.signature(function).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {}
    names = {}
    for name, value in bound.arguments.items():
        positions = [i for i, a in enumerate(args) if a is value]
        names[positions[0] if positions else name] = name
    return names


class Endpoint:
    """One side of the conversation between the grader and the student's process."""

    def __init__(self, transport, owner: str, root: Any = None, files: int | None = None):
        self.transport, self.owner, self.root = transport, owner, root
        self.files = files  # files received so far (None: in the grader's own process, use them in place)
        self.peer = GRADER if owner == STUDENT else STUDENT
        self.exports = Exports()
        self.epoch = 0  # counts requests, after any of which the peer's tensors may have changed
        self.answer_limit: int | None = None  # bytes of data one answer may hold (the student's side)
        self.largest_answer = 0  # bytes of data in the largest answer of this case (the grader's side)
        self.side_effects: list[str] = []
        self._tensors: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._next_id = 0

    # ---- sending

    def _send(self, header: dict, value: Any, live: bool = False) -> None:
        buffers: list = []
        header["value"] = wire.encode(value, buffers, _Hooks(self, buffers, live))
        size = sum(map(len, buffers))
        if self.owner == STUDENT and self.answer_limit is not None and size > self.answer_limit:
            raise ResultTooLarge(f"the result holds {_megabytes(size)} of data, far more than this check "
                                 f"expects (at most {_megabytes(self.answer_limit)})")
        self.transport.send(header, buffers)

    def _resolve(self, node: dict, buffers: list) -> Any:
        if "$file" in node and self.owner == STUDENT:
            return self._file(node, buffers)
        if "$tensor" in node and self.owner == GRADER:
            snapshot = torch.from_numpy(wire.decode_array(node.get("snapshot"), buffers))
            number = node["$tensor"]
            if type(number) is not int:
                raise ProtocolError("malformed reference")
            tensor = self._tensors.get(number)
            if tensor is None:
                tensor = self._tensors[number] = RemoteTensor(snapshot, self, number)
            else:
                tensor._update(snapshot)
            return tensor
        if "$object" in node:
            if node.get("owner") == self.owner:
                return self.exports[node["$object"]]
            if node.get("owner") == self.peer and type(node["$object"]) is int:
                return Proxy(self, node["$object"], str(node.get("type", "object"))[:120],
                             str(node["name"])[:80] if node.get("name") else None)
        raise ProtocolError("malformed reference")

    def _file(self, node: dict, buffers: list) -> Path:
        """Where a file the grader sent is, here: its own path in one process, a copy in the
        scratch directory otherwise."""
        if self.files is None:
            return Path(str(node["path"]))
        name = str(node["$file"])
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ProtocolError("malformed file name")
        self.files += 1
        path = Path.cwd() / "files" / str(self.files) / name
        path.parent.mkdir(parents=True)
        if node.get("data") is not None:
            index = node["data"]
            if type(index) is not int or not 0 <= index < len(buffers):
                raise ProtocolError("malformed file")
            path.write_bytes(buffers[index])
        return path

    def _decode(self, header: dict, buffers: list) -> Any:
        return wire.decode(header.get("value"), buffers, lambda node: self._resolve(node, buffers))

    def request(self, op: str, target: int | None = None, name: str | None = None, payload: Any = None) -> Any:
        """Ask the peer to do ``op``; serve its requests until the answer comes back."""
        self.epoch += op != "value"
        ident = self._next_id
        self._next_id += 1
        self._send({"op": op, "id": ident, "grad": torch.is_grad_enabled(), "target": target, "name": name},
                   payload)
        while True:
            try:
                header, buffers = self.transport.receive()
                if "op" in header:
                    self.serve(header, buffers)
                    continue
                if header.get("reply") != ident:
                    raise ProtocolError("an answer to a question that was not asked")
                if "error" not in header:
                    self.largest_answer = max(self.largest_answer, sum(map(len, buffers)))
                    return self._decode(header, buffers)
            except (ProtocolError, RecursionError) as exc:  # a message too deep to decode, not the peer's error
                raise WorkerLost("garbage", str(exc)) from None
            raise remote_error(header["error"])  # the peer's code raised (a RecursionError too)

    def call(self, label: str, args: tuple, kwargs: dict, target: int | None = None, method: str | None = None,
             helper: str | None = None) -> Any:
        """Call an object of the peer (or a method of it, or a helper on it); copy back the
        arguments the call changed, and note each change as a side effect."""
        answer = self.request("helper" if helper else "call", target, name=helper or method,
                              payload=[list(args), kwargs])
        if type(answer) is not dict or set(answer) != {"result", "changed"} or type(answer["changed"]) is not list:
            raise ProtocolError("malformed answer to a call")
        for change in answer["changed"]:
            if type(change) is not list or len(change) != 4 or type(change[3]) is not list:
                raise ProtocolError("malformed change report")
            key, parameter, after, callees = change
            before = args[key] if type(key) is int and 0 <= key < len(args) else kwargs.get(key) \
                if type(key) is str else None
            if before is None or not _restore(before, after):
                continue
            if type(before) is not torch.Generator:
                which = _identifier(parameter) or (f"{key + 1}" if type(key) is int else str(key))
                called = ", ".join(filter(None, map(_identifier, callees[:5])))
                self.side_effects.append(f"{label} changed its argument {which!r} in place"
                                         + (f", or a function it calls did ({called})" if called else ""))
        return answer["result"]

    # ---- serving

    def serve(self, header: dict, buffers: list) -> None:
        """Carry out one request of the peer and answer it (an error is an answer too)."""
        ident, pid = header.get("id"), os.getpid()
        try:
            op = header.get("op")
            handler = self._handlers().get(op)
            if handler is None:
                raise PermissionError(f"the {self.owner}'s side does not do {op!r}")
            with torch.set_grad_enabled(header.get("grad") is not False):
                value, live = handler(header, buffers)
            _only_in(pid)
            self._send({"reply": ident}, value, live)
        except (ProtocolError, WorkerLost):
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever the code raised is the answer
            _only_in(pid)
            report = _error_report(exc) if self.owner == STUDENT else \
                {"type": type(exc).__name__, "message": "the check's code raised an error",
                 "description": f"{type(exc).__name__} raised by a function the check passed to your code "
                                "(it was given arguments, or used in a way, that it does not expect)"}
            self.transport.send({"reply": ident, "error": report, "value": None}, [])

    def _handlers(self) -> dict:
        if self.owner == GRADER:  # the check's callables only: nothing else of the grader is reachable
            # ``sampler or default`` asks a callable for its truth value: always True, and harmless
            return {"call": self._serve_call, "builtin": self._serve_truth}
        return {"begin": self._serve_begin, "exec": self._serve_exec, "get": self._serve_get,
                "set": self._serve_set, "call": self._serve_call, "builtin": self._serve_builtin,
                "value": self._serve_value, "helper": self._serve_call}

    def _target(self, header: dict) -> Any:
        return self.exports[header.get("target")]

    def _serve_begin(self, header, buffers):
        self.exports.clear()
        seed, self.answer_limit = self._decode(header, buffers)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return self.root, False

    def _serve_exec(self, header, buffers):
        code, origin = self._decode(header, buffers)
        _remember_source(code, f"<{origin}>")
        exec(compile(code, f"<{origin}>", "exec"), vars(self.root))
        return None, False

    def _serve_get(self, header, buffers):
        return getattr(self._target(header), str(header.get("name"))), True

    def _serve_set(self, header, buffers):
        setattr(self._target(header), str(header.get("name")), self._decode(header, buffers))
        return None, False

    def _serve_value(self, header, buffers):
        target = self._target(header)
        if not isinstance(target, torch.Tensor):
            raise ProtocolError("a value asked of something that is not a tensor")
        return target.detach().clone(), False

    def _serve_truth(self, header, buffers):
        if header.get("name") != "bool":
            raise PermissionError("the grader's side answers only bool() of what it lent")
        return bool(self._target(header)), False

    def _serve_builtin(self, header, buffers):
        function = {"iter": iter, "next": next, "len": len, "bool": bool, "getitem": operator.getitem}.get(
            header.get("name"))
        if function is None:
            raise ProtocolError("an unknown built-in")
        extra = self._decode(header, buffers) or []
        return function(self._target(header), *extra), False

    def _serve_call(self, header, buffers):
        args, kwargs = self._decode(header, buffers)
        if header.get("op") == "helper":
            function = _helper(str(header.get("name")))
        else:
            function = self._target(header)
            if header.get("name") is not None:
                function = getattr(function, str(header["name"]))
        # arguments that came by value: the caller wants to know whether the call changed them
        by_value = [(key, value) for key, value in [*enumerate(args), *kwargs.items()]
                    if _mutable(value) and not self.exports.lent(value)]
        before = {key: _digest(value) for key, value in by_value}
        result = function(*args, **kwargs)
        changed = [(key, value) for key, value in by_value if _digest(value) != before[key]]
        names = _parameter_names(function, args, kwargs) if changed else {}
        called = _callees(function) if changed else []
        return {"result": result, "changed": [[key, names.get(key, key), value, called] for key, value in changed]}, \
            False


def _remember_source(code: str, filename: str) -> None:
    """Let tracebacks quote the student's lines: statements keep their cell's line numbers."""
    known = linecache.cache.get(filename)
    lines = list(known[2]) if known else []
    for number, line in enumerate(code.splitlines(keepends=True)):
        if line.strip():
            lines += ["\n"] * (number + 1 - len(lines))
            lines[number] = line
    linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def _only_in(pid: int) -> None:
    """A process the student's code forked, back from that code: it ends here, silently,
    rather than answer on the channel it shares with the process that serves."""
    if os.getpid() != pid:
        os._exit(0)


def _restore(mine: Any, theirs: Any) -> bool:
    """Make ``mine`` hold ``theirs`` (the state the other side left it in); True if it changed."""
    if type(mine) is torch.Generator:
        if type(theirs) is not torch.Generator:
            return False
        mine.set_state(theirs.get_state())
        return True
    if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor):
        if mine.shape != theirs.shape or torch.equal(mine, theirs.to(mine.dtype)):
            return mine.shape != theirs.shape
        with torch.no_grad():
            mine.copy_(theirs)
        return True
    if type(mine) is np.ndarray and type(theirs) is np.ndarray:
        if mine.shape != theirs.shape or np.array_equal(mine, theirs, equal_nan=True):
            return mine.shape != theirs.shape
        mine[...] = theirs
        return True
    if type(mine) is tuple and type(theirs) is tuple and len(mine) == len(theirs):
        return any([_restore(a, b) for a, b in zip(mine, theirs) if _mutable(a)])
    if type(mine) is list and type(theirs) is list:
        if len(mine) == len(theirs):
            return any([_restore(a, b) if _mutable(a) else _replace(mine, i, b) for i, (a, b) in
                        enumerate(zip(mine, theirs))])
        mine[:] = theirs
        return True
    if type(mine) is dict and type(theirs) is dict:
        changed = set(mine) != set(theirs)
        for key in set(mine) - set(theirs):
            del mine[key]
        for key, value in theirs.items():
            changed |= _restore(mine[key], value) if key in mine and _mutable(mine[key]) else \
                _replace(mine, key, value)
        return changed
    return False


def _replace(container: Any, key: Any, value: Any) -> bool:
    if key in (range(len(container)) if type(container) is list else container) and \
            type(container[key]) is type(value) and container[key] == value:
        return False
    container[key] = value
    return True


# --------------------------------------------------------------------------- helpers


def in_student_process(function):
    """Mark a public helper that must run where the student's objects live.

    Called with a ``Proxy`` or ``RemoteTensor`` among its arguments, it runs in the
    student's process (the helper's code is public; the check's is not), and its result
    comes back as any call's does. Called with local objects, it just runs.
    """
    name = f"{function.__module__}:{function.__qualname__}"

    @functools.wraps(function)
    def run(*args, **kwargs):
        endpoint = next((a._endpoint for a in _leaves((args, kwargs)) if isinstance(a, (Proxy, RemoteTensor))),
                        None)
        if endpoint is None:
            return function(*args, **kwargs)
        return endpoint.call(function.__name__, args, kwargs, helper=name)

    run.__helper__ = function
    return run


def _helper(name: str):
    module, _, qualname = name.partition(":")
    if not module.startswith("utils."):
        raise PermissionError(f"{name} is not a course helper")
    helper = getattr(importlib.import_module(module), qualname, None)
    if getattr(helper, "__helper__", None) is None:
        raise PermissionError(f"{name} is not marked to run in the student's process")
    return helper.__helper__


# --------------------------------------------------------------------------- one process


class _World:
    """The global random state of one side, kept apart from the other's (see ``LocalTransport``)."""

    def __init__(self):
        self.state = None

    def swap(self, other: _World) -> None:
        """Save the process's random state as ``other``'s and load this one's."""
        other.state = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
        if self.state is not None:
            torch.random.set_rng_state(self.state[0])
            np.random.set_state(self.state[1])
            random.setstate(self.state[2])


class LocalTransport:
    """Messages handed straight to an endpoint in this process (``local_session``).

    Each side has its own random state, swapped in while it runs, as if in two processes.
    """

    def __init__(self, world: _World):
        self.world, self.peer, self.inbox = world, None, []

    def send(self, header: dict, buffers: list) -> None:
        header = json.loads(json.dumps(header))  # what a pipe would carry: copies, not shared objects
        buffers = [bytearray(b) for b in buffers]
        transport = self.peer.transport
        if "op" not in header:
            transport.inbox.append((header, buffers))
            return
        transport.world.swap(self.world)
        try:
            self.peer.serve(header, buffers)
        finally:
            self.world.swap(transport.world)

    def receive(self) -> tuple[dict, list]:
        if not self.inbox:
            raise ProtocolError("no answer")
        return self.inbox.pop()


def local_session(namespace: Any) -> Endpoint:
    """The grader's endpoint of a conversation with ``namespace`` in this same process."""
    grader_side, student_side = LocalTransport(_World()), LocalTransport(_World())
    grader = Endpoint(grader_side, GRADER)
    student = Endpoint(student_side, STUDENT, root=namespace)
    grader_side.peer, student_side.peer = student, grader
    return grader


def begin(endpoint: Endpoint, seed: int, answer_limit: int | None = None) -> Proxy:
    """Start a case: both sides forget the previous case's objects; returns the student's
    namespace. ``answer_limit``: the bytes of data one answer of the student's code may hold."""
    endpoint.exports.clear()
    endpoint.side_effects.clear()
    endpoint._tensors.clear()
    endpoint.largest_answer = 0
    return endpoint.request("begin", payload=[seed, answer_limit])


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} kB"
