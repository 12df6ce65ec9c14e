"""The walk of a pickle's stack, opcode by opcode, without unpickling it.

picklescan lists a pickle's globals; the walk answers what it does not: where pickle data ends and
raw data begins (joblib writes each numpy array's bytes *inside* the pickle stream, legacy
``torch.save`` appends storages after five pickles), which STACK_GLOBAL operands were computed at
load time, which byte strings are embedded archives a nested loader would open, and whether a
function the pickle carries is called while it loads. Nothing is imported or called: globals are
``(module, name)`` pairs, call results are opaque. The opcodes are read by opcodes.iter_ops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hokusai_registry.scanning.opcodes import SKIP_BYTES, PickleParseError, PickleStream, Skipped, iter_ops

__all__ = ["Embedded", "PickleLayout", "TooManyOpcodes", "walk"]

MAX_OPS = 5_000_000  # picklescan keeps every opcode of a pickle in a list (~100 B each): bounds memory
MAX_EMBEDDED = 64  # embedded archives remembered per file
_KEEP_ITEMS = 256  # container items the walk keeps (it needs small ones: shapes, dtype states)
_KEEP_CHARS = 4096  # longer strings become opaque (still an unresolved name if imported)
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save's first pickle before the zip format
_JOBLIB_WRAPPERS = frozenset({"joblib.numpy_pickle", "sklearn.externals.joblib.numpy_pickle"})
_CODE_BUILDERS = frozenset({"_make_function", "_create_function"})  # cloudpickle, dill
# cloudpickle/dill helpers whose first argument names what they import or look up: graded by name.
_NAMING = frozenset({"subimport", "dynamic_subimport", "_import_module", "_builtin_type", "_load_type"})


class TooManyOpcodes(Exception):
    """A pickle with more opcodes than the scanner will hold (see MAX_OPS)."""


@dataclass(eq=False)
class _Ref:
    module: str
    name: str


@dataclass(eq=False)
class _Obj:
    """The result of calling ``func`` while loading (REDUCE, NEWOBJ, INST, OBJ)."""

    func: object
    args: object
    state: object = None


class _Opaque:
    """A value only known at load time (a persistent id, or a string too long to keep)."""


class _Data:
    """A value that is known not to be a str (bytes, a set, a buffer, a container too big to keep)."""


_OPAQUE = _Opaque()
_DATA = _Data()


@dataclass(frozen=True)
class Embedded:
    """A byte string inside a pickle that starts like a pickle or a zip (what a nested loader opens):
    ``offset``/``length`` into the stream, or ``data`` when it was a str (``_codecs.encode``)."""

    offset: int
    length: int
    data: bytes | None = None


@dataclass
class PickleLayout:
    """What a walk over one file's pickle stream(s) found."""

    end: int = 0  # pickle data stops here; raw storages (legacy torch) or trailing bytes follow
    skip: list[tuple[int, int]] = field(default_factory=list)  # raw array bytes inside [0, end): joblib
    imports: set[tuple[str, str]] = field(default_factory=set)  # what GLOBAL/STACK_GLOBAL/INST name
    unresolved: int = 0  # STACK_GLOBALs (or EXT codes) whose name is only known at load time
    helper_args: set[tuple[str, str]] = field(default_factory=set)  # ("subimport", "os"): see _NAMING
    calls_carried_code: bool = False  # a function rebuilt from code in the pickle is called on load
    embedded: list[Embedded] = field(default_factory=list)
    pickles: int = 0
    ops: int = 0
    error: str | None = None  # a parse failure after something was imported
    inert: bool = False  # the first pickle fails before importing anything: nothing could run


def walk(stream: PickleStream) -> PickleLayout:
    """Walk every pickle in ``stream`` from its start, symbolically; never raises PickleParseError."""
    layout = PickleLayout()
    legacy_torch = False
    while stream.tell() < stream.size:
        segment = _Segment(stream, layout)
        try:
            value = segment.run()
        except PickleParseError as exc:
            if segment.imported:
                layout.error, layout.end = str(exc), stream.size
            elif layout.pickles == 0:
                layout.inert = True
            break  # after a complete pickle, bytes that import nothing are data, not a pickle
        layout.pickles += 1
        layout.end = stream.tell()
        legacy_torch = legacy_torch or (layout.pickles == 1 and value == _TORCH_LEGACY_MAGIC)
        if legacy_torch and layout.pickles == 5:
            break  # magic, protocol, sys_info, the object, storage keys; raw storages follow
    return layout


class _Segment:
    """One pickle, from PROTO (or its first opcode) to STOP, with its own stack and memo."""

    def __init__(self, stream: PickleStream, layout: PickleLayout, depth: int = 0) -> None:
        self.stream, self.layout, self.depth = stream, layout, depth
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.imported = False

    def run(self) -> Any:
        for name, arg in iter_ops(self.stream):
            self.layout.ops += 1
            if self.layout.ops > MAX_OPS:
                raise TooManyOpcodes(f"more than {MAX_OPS:,} opcodes")
            if name == "STOP":
                return self.pop()
            try:
                self.step(name, arg)
            except (IndexError, KeyError, TypeError) as exc:
                raise PickleParseError(f"{name}: the stack does not hold what it needs ({exc!r})") from None
        raise PickleParseError("pickle data ends before STOP")

    # stack helpers, as pickle._Unpickler has them
    def pop(self) -> Any:
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def step(self, name: str, arg: Any) -> None:  # one branch per opcode family, as in pickle.py
        if name in _LITERALS:
            self.push(self.literal(arg))
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name == "POP":
            _ = self.pop() if self.stack else self.pop_mark()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.push(self.stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if arg < 0:
                raise PickleParseError("negative PUT argument")
            self.memo[arg] = self.stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            self.push(self.memo[arg])
        elif name in _CONTAINERS:
            self.container(name)
        elif name in ("GLOBAL", "INST"):
            ref = self.import_(*arg)
            self.push(ref if name == "GLOBAL" else _Obj(ref, _bounded(self.pop_mark())))
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            self.push(self.stack_global(module, attr))
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.layout.unresolved += 1  # copyreg's extension registry: a global by number
            self.imported = True
            self.push(_OPAQUE)
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ"):
            self.call(name)
        elif name == "BUILD":
            state = self.pop()
            target = self.stack[-1]
            if isinstance(target, _Obj):
                target.state = state
                self.after_build(target)
        elif name == "PERSID":
            self.push(_OPAQUE)
        elif name == "BINPERSID":
            self.stack[-1] = _OPAQUE
        elif name == "NEXT_BUFFER":
            self.push(_DATA)
        # PROTO, FRAME, READONLY_BUFFER change nothing a scanner needs

    def literal(self, arg: Any) -> Any:
        if isinstance(arg, bytes | bytearray):
            self.maybe_embedded(arg)
            return _DATA  # contents are never needed again; do not keep them
        if isinstance(arg, str):
            self.maybe_embedded_str(arg)
            return arg if len(arg) <= _KEEP_CHARS else _OPAQUE
        return arg

    def container(self, name: str) -> None:
        if name == "EMPTY_TUPLE":
            self.push(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(self.stack) < count:
                raise PickleParseError(f"{name} on a stack of {len(self.stack)}")
            items = self.stack[-count:]
            del self.stack[-count:]
            self.push(tuple(items))
        elif name == "TUPLE":
            self.push(_bounded(self.pop_mark()))
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
            self.push([] if name == "EMPTY_LIST" else {} if name == "EMPTY_DICT" else _DATA)
        elif name == "LIST":
            self.push(list(self.pop_mark()[:_KEEP_ITEMS]))
        elif name == "DICT":
            items = self.pop_mark()
            self.push(_pairs({}, items))
        elif name == "FROZENSET":
            self.pop_mark()
            self.push(_DATA)
        elif name == "ADDITEMS":
            self.pop_mark()
            _ = self.stack[-1]  # the set must exist
        elif name == "APPEND":
            value = self.pop()
            _append(self.stack[-1], [value])
        elif name == "APPENDS":
            items = self.pop_mark()
            _append(self.stack[-1], items)
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            _pairs(self.stack[-1], [key, value])
        elif name == "SETITEMS":
            items = self.pop_mark()
            _pairs(self.stack[-1], items)

    def import_(self, module: str, attr: str) -> _Ref:
        self.imported = True
        self.layout.imports.add((module, attr))
        return _Ref(module, attr)

    def stack_global(self, module: Any, attr: Any) -> _Ref:
        if type(module) is str and type(attr) is str:
            return self.import_(module, attr)
        if module is _OPAQUE or attr is _OPAQUE or isinstance(module, _Obj) or isinstance(attr, _Obj):
            self.layout.unresolved += 1  # a name computed while loading: cannot be known here
            self.imported = True
            return _Ref("unknown", "unknown")
        raise PickleParseError("STACK_GLOBAL requires str")  # as the unpickler says, before importing

    def call(self, name: str) -> None:
        if name == "OBJ":
            items = self.pop_mark()
            func, args = items[0], tuple(items[1:_KEEP_ITEMS])
        elif name == "NEWOBJ_EX":
            _kwargs, args, func = self.pop(), self.pop(), self.pop()
        else:
            args, func = self.pop(), self.pop()
        if isinstance(func, _Obj) and _is_ref(func.func, names=_CODE_BUILDERS):
            self.layout.calls_carried_code = True  # calls a function defined by the pickle itself
        if isinstance(func, _Ref) and func.name in _NAMING:
            named = args[0] if isinstance(args, tuple) and args and type(args[0]) is str else "unknown"
            self.layout.helper_args.add((func.name, named))
        self.push(_Obj(func, args))

    def after_build(self, target: _Obj) -> None:
        """joblib: a NumpyArrayWrapper's BUILD is followed by the array's bytes (or, for object
        arrays, a nested pickle): skip the first, walk the second."""
        func = target.func
        if not (
            isinstance(func, _Ref) and func.module in _JOBLIB_WRAPPERS and func.name == "NumpyArrayWrapper"
        ):
            return
        state = target.state
        if not isinstance(state, dict):
            raise PickleParseError("a joblib array wrapper without its state")
        itemsize, has_object = _dtype_size(state.get("dtype"))
        if has_object:
            if self.depth > 2:
                raise PickleParseError("joblib object arrays nested too deep")
            nested = _Segment(self.stream, self.layout, self.depth + 1)
            nested.run()
            self.imported = self.imported or nested.imported
            return
        shape = state.get("shape")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise PickleParseError("a joblib array wrapper with an unreadable shape")
        count = 1
        for n in shape:
            count *= n
        start = self.stream.tell()
        padding = 0
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = self.stream.read(1)
            if len(pad) != 1:
                raise PickleParseError("joblib array data ends early")
            padding = 1 + pad[0]
        end = start + padding + count * itemsize
        if end > self.stream.size:
            raise PickleParseError("joblib array data ends early")
        self.stream.seek(end)
        self.layout.skip.append((start, end))

    def maybe_embedded(self, data: bytes | bytearray) -> None:
        prefix = data.prefix if isinstance(data, Skipped) else bytes(data[:16])
        if len(self.layout.embedded) < MAX_EMBEDDED and _looks_embedded(prefix):
            self.layout.embedded.append(Embedded(self.stream.tell() - len(data), len(data)))

    def maybe_embedded_str(self, text: str) -> None:
        if len(self.layout.embedded) >= MAX_EMBEDDED or len(text) > SKIP_BYTES:
            return
        if not _looks_embedded(text[:16].encode("latin-1", "replace")):
            return
        try:
            data = text.encode("latin-1")  # protocol 2 writes bytes as _codecs.encode(str, "latin1")
        except UnicodeEncodeError:
            return
        self.layout.embedded.append(Embedded(-1, len(data), data))


_LITERALS = frozenset(
    {
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
        "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
        "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NONE", "NEWTRUE",
        "NEWFALSE",
    }
)  # fmt: skip
_CONTAINERS = frozenset(
    {
        "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET",
        "LIST", "DICT", "FROZENSET", "ADDITEMS", "APPEND", "APPENDS", "SETITEM", "SETITEMS",
    }
)  # fmt: skip


def _is_ref(value: object, names: frozenset[str]) -> bool:
    return isinstance(value, _Ref) and value.name in names


def _looks_embedded(prefix: bytes) -> bool:
    return (len(prefix) > 1 and prefix[0] == 0x80 and prefix[1] <= 5) or prefix.startswith(b"PK\x03\x04")


def _bounded(items: list[Any]) -> tuple[Any, ...] | _Data:
    return tuple(items) if len(items) <= _KEEP_ITEMS else _DATA


def _append(target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items[: max(0, _KEEP_ITEMS - len(target))])


def _pairs(target: Any, items: list[Any]) -> Any:
    if len(items) % 2:
        raise PickleParseError("odd number of items for a dict")
    if isinstance(target, dict):
        for key, value in zip(items[::2], items[1::2], strict=True):
            if len(target) >= _KEEP_ITEMS:
                break
            if isinstance(key, str | int | float | bool | None):
                target[key] = value
    return target


def _dtype_size(dtype: object) -> tuple[int, bool]:
    """(itemsize, holds objects) of a pickled ``numpy.dtype(descr, ...)`` with its BUILD state."""
    if not (isinstance(dtype, _Obj) and isinstance(dtype.args, tuple) and dtype.args):
        raise PickleParseError("a joblib array wrapper without a readable dtype")
    descr = dtype.args[0]
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and type(state[7]) is int else 0
    if not isinstance(descr, str):
        raise PickleParseError("a joblib array wrapper without a readable dtype")
    if descr.startswith("O") or flags & 0x01:  # NPY_ITEM_REFCOUNT: the array holds Python objects
        return 0, True
    if len(state) > 5 and type(state[5]) is int and state[5] > 0:
        return state[5], False  # flexible and structured dtypes carry their element size
    import numpy  # a dtype from its type string: numpy parses it, nothing is unpickled

    try:
        return int(numpy.dtype(descr).itemsize), False
    except TypeError as exc:
        raise PickleParseError(f"a joblib array of unknown dtype {descr!r}") from exc
