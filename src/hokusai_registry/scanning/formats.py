"""The model formats that are not archives or pickles, parsed for the parts that can carry code.

An .npy file's header (an object dtype makes its payload a pickle), a safetensors header (valid, or an
error), a Keras model's config (HDF5 ``model_config``, v3 ``config.json``: Lambda layers and objects
named by module), a skops schema (every type it rebuilds), an MLmodel whose flavor runs code shipped
with the model. Config names are graded as pickle globals are (grading.py).
"""

from __future__ import annotations

import ast
import json
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from hokusai_registry.scanning import grading
from hokusai_registry.scanning.pickles import scan_pickle
from hokusai_registry.scanning.report import Verdict
from hokusai_registry.scanning.sniff import HEAD_BYTES
from hokusai_registry.scanning.state import READ_BYTES, MiB, Scan

__all__ = ["scan_config_archive", "scan_hdf5", "scan_npy", "scan_safetensors", "scan_text"]


def scan_npy(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """An .npy header is a Python literal; an object dtype means the payload is a pickle."""
    from numpy.lib.format import descr_to_dtype

    stream.seek(6)
    major = stream.read(2)[:1]
    length_format, offset = ("<H", 10) if major == b"\x01" else ("<I", 12)
    raw_length = stream.read(offset - 8)
    if major not in (b"\x01", b"\x02", b"\x03") or len(raw_length) != offset - 8:
        scan.add(path, Verdict.ERROR, "not a readable .npy header")
        return
    (length,) = struct.unpack(length_format, raw_length)
    if length > 1 * MiB:
        scan.add(path, Verdict.ERROR, "an .npy header over 1 MiB")
        return
    text = stream.read(length).decode("utf-8" if major == b"\x03" else "latin-1")
    try:
        header = ast.literal_eval(text)
        dtype = descr_to_dtype(header["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError, RecursionError, MemoryError) as exc:
        scan.add(path, Verdict.ERROR, f"not a readable .npy header ({type(exc).__name__})")
        return
    if dtype.hasobject:
        scan_pickle(scan, path, stream, size, depth, start=offset + length)


def scan_safetensors(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """A JSON header and raw tensors: clean if the header is what the safetensors library accepts."""
    stream.seek(0)
    (length,) = struct.unpack("<Q", stream.read(8))
    problem = None
    try:
        header = json.loads(stream.read(length)) if 8 + length <= size else None
        problem = _safetensors_problem(header, size - 8 - length)
    except (ValueError, UnicodeDecodeError) as exc:
        problem = f"header is not JSON ({exc})"
    if problem:
        scan.add(path, Verdict.ERROR, f"not a valid safetensors file: {problem}")


def _safetensors_problem(header: object, data_size: int) -> str | None:
    if not isinstance(header, dict):
        return "header is not a JSON object"
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                return "__metadata__ is not a map of strings"
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
            return f"tensor {name!r} has no dtype"
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            return f"tensor {name!r} has no valid shape"
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)):
            return f"tensor {name!r} has no valid data_offsets"
        if not 0 <= offsets[0] <= offsets[1] <= data_size:
            return f"tensor {name!r} lies outside the file"
    return None


_LAMBDA = re.compile(rb'"class_name":\s*"(Lambda|__lambda__)"')
_LAMBDA_DETAIL = "Keras Lambda layer (runs code on load)"
_KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")
_JSON_START = b'{"class_name"'


def scan_hdf5(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Without an HDF5 library: a Keras .h5 model keeps its architecture as JSON text in a
    ``model_config`` attribute (attributes are never compressed), so search the bytes for it."""
    has_config, has_lambda, starts = False, False, list[int]()
    stream.seek(0)
    offset, tail = 0, b""
    while chunk := stream.read(READ_BYTES):
        data = tail + chunk
        has_config = has_config or b"model_config" in data
        has_lambda = has_lambda or bool(_LAMBDA.search(data))
        position = data.find(_JSON_START)
        while position != -1 and len(starts) < 16:
            absolute = offset - len(tail) + position
            if absolute not in starts:
                starts.append(absolute)
            position = data.find(_JSON_START, position + 1)
        tail = data[-64:]
        offset += len(chunk)
    if has_lambda:
        scan.add(path, Verdict.UNSAFE, _LAMBDA_DETAIL)
    if not has_config:
        return  # weights only: nothing in it names code
    configs = [
        config for config in (_json_at(stream, start, scan.limits.max_document) for start in starts) if config
    ]
    if not configs:
        scan.add(path, Verdict.SUSPICIOUS, "HDF5 Keras model_config not inspected (could not be parsed)")
    for config in configs:
        for verdict, detail in _keras_findings(config):
            scan.add(path, verdict, detail)


def _json_at(stream: IO[bytes], start: int, limit: int) -> object:
    stream.seek(start)
    text = stream.read(limit).decode("utf-8", "replace")
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except ValueError:
        return None


def scan_config_archive(
    scan: Scan, path: str, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]
) -> None:
    """Zips whose JSON names the code a loader will import: a Keras v3 ``.keras`` (``config.json``,
    where a Lambda layer carries code) and a skops file (``schema.json``, every type it rebuilds)."""
    names = {info.filename: info for info in members}
    if "config.json" in names and {"metadata.json", "model.weights.h5", "model.weights.npz"} & names.keys():
        config = _read_json_member(scan, path, archive, names["config.json"])
        for verdict, detail in _keras_findings(config):
            scan.add(f"{path}!config.json", verdict, detail)
    if "schema.json" in names:
        schema = _read_json_member(scan, path, archive, names["schema.json"])
        if isinstance(schema, dict) and "_skops_version" in schema:
            for verdict, detail in _graded_refs(_skops_refs(schema), "skops schema"):
                scan.add(f"{path}!schema.json", verdict, detail)


def _read_json_member(scan: Scan, path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> object:
    where = f"{path}!{info.filename}"
    if info.file_size > scan.limits.max_document:
        scan.add(where, Verdict.ERROR, "too large to inspect")
        return None
    try:
        with archive.open(info) as opened:
            return json.loads(opened.read(scan.limits.max_document))
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        scan.add(where, Verdict.ERROR, f"could not be read ({exc})")
        return None


def _dicts(document: object) -> Iterator[dict[str, Any]]:
    """Every JSON object in a document, without recursion (a deep document cannot overflow the stack)."""
    todo = [document]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            todo.extend(node.values())
            yield node


def _graded_refs(refs: Iterable[tuple[str, str]], label: str) -> list[tuple[Verdict, str]]:
    """Module/name pairs a config makes its loader import, graded like pickle globals."""
    found: dict[str, Verdict] = {}
    for module, name in refs:
        verdict, detail = grading.grade(module, name)
        if verdict is not Verdict.CLEAN:
            found[f"{label}: {detail}"] = verdict
    return sorted(((v, d) for d, v in found.items()), key=lambda item: (-item[0].rank, item[1]))


def _keras_findings(config: object) -> list[tuple[Verdict, str]]:
    """Lambda layers, and objects a Keras config names by module outside Keras (graded as globals)."""
    lambdas = any(node.get("class_name") in ("Lambda", "__lambda__") for node in _dicts(config))
    found = [(Verdict.UNSAFE, _LAMBDA_DETAIL)] if lambdas else []
    return found + _graded_refs(_keras_refs(config), "Keras config")


def _keras_refs(config: object) -> Iterator[tuple[str, str]]:
    for node in _dicts(config):
        class_name, module = node.get("class_name"), node.get("module")
        if not isinstance(module, str) or any(
            module == m or module.startswith(m + ".") for m in _KERAS_MODULES
        ):
            continue
        name = node.get("config") if class_name == "function" else class_name  # a function by reference
        if isinstance(name, str):
            yield module, name


def _skops_refs(schema: object) -> Iterator[tuple[str, str]]:
    """skops rebuilds every ``__module__``/``__class__`` it names (and calls some: its ReduceNode), and
    MLflow trusts the types the model's own MLmodel lists: so they are graded here."""
    for node in _dicts(schema):
        module, name = node.get("__module__"), node.get("__class__")
        if isinstance(module, str) and isinstance(name, str):
            yield module, name
        module, name = node.get("module_path"), node.get("function")
        if isinstance(module, str) and isinstance(name, str):
            yield module, name


_MAX_MLMODEL = 1 * MiB  # an MLmodel is a few KiB; larger YAML is not parsed


def scan_text(scan: Scan, path: str, stream: IO[bytes], size: int, depth: int) -> None:
    """Text is data, except an MLmodel whose flavor runs Python code shipped with the model."""
    stream.seek(0)
    if size > _MAX_MLMODEL or b"flavors:" not in stream.read(HEAD_BYTES):
        return
    import yaml

    stream.seek(0)
    data = stream.read()
    try:  # libyaml where PyYAML has it: 0.2 ms for a scikit-learn MLmodel with a signature, not 1.8 ms
        document = yaml.load(data, Loader=yaml.CSafeLoader) if yaml.__with_libyaml__ else yaml.safe_load(data)
    except yaml.YAMLError:
        return
    flavors = document.get("flavors") if isinstance(document, dict) else None
    if not isinstance(flavors, dict):
        return
    for name, flavor in flavors.items():
        if isinstance(flavor, dict) and (flavor.get("model_code_path") or flavor.get("code")):
            scan.add(
                path, Verdict.SUSPICIOUS, f"MLmodel flavor {name} runs Python code shipped with the model"
            )
