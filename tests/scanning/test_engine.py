"""The scanning engine against the corpus (tests/scanning/corpus.py) and against the tricks it has to see
through: renamed pickles, bad CRCs, nesting, bombs, Keras Lambdas, object arrays, lenient opcodes.

Nothing here loads a sample: the corpus is built from opcodes, and the engine never unpickles.
``pytest -s`` prints the confusion table of the whole corpus.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import pickletools
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from hokusai_registry.scanning import grading
from hokusai_registry.scanning.engine import Limits, pickle_globals, scan_files, scan_path
from hokusai_registry.scanning.report import Finding, ScannedFile, ScanReport, Verdict
from hokusai_registry.scanning.sniff import Kind, sniff
from hokusai_registry.scanning.sources import StoredFile
from tests.scanning.corpus import (
    SHELL,
    Sample,
    _OrderedDict,
    _Storage,
    build_corpus,
    call,
    craft,
    iter_pickle_globals,
    nested_zips,
    npy_header,
    safetensors_bytes,
    tensor,
    write_zip,
    write_zip64_bomb,
    zip_bytes,
)

EVIL = craft(call("os", "system", SHELL), 2)  # references os.system; never loaded


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


@pytest.fixture(scope="module")
def report(corpus: tuple[Path, list[Sample]]) -> ScanReport:
    root, samples = corpus
    return scan_files(
        [(StoredFile(s.relpath, (root / s.relpath).stat().st_size), root / s.relpath) for s in samples]
    )


def outcome(report: ScanReport, relpath: str) -> tuple[ScannedFile, list[Finding]]:
    (file,) = [file for file in report.files if file.path == relpath]
    return file, [f for f in report.findings if f.path == relpath or f.path.startswith(relpath + "!")]


def sample(corpus: tuple[Path, list[Sample]], name: str) -> Sample:
    (found,) = [s for s in corpus[1] if s.name == name]
    return found


def scan_one(
    tmp_path: Path, name: str, data: bytes, limits: Limits | None = None
) -> tuple[ScannedFile, list[Finding]]:
    (tmp_path / name).write_bytes(data)
    report = scan_path(tmp_path, limits)
    return outcome(report, name)


def details(findings: list[Finding]) -> str:
    return "; ".join(f"{f.verdict.value} {f.line()}" for f in findings)


# ---------------------------------------------------------------------------------------------
# The corpus as a whole


def test_no_dangerous_file_is_clean_and_no_benign_file_is_unsafe(
    corpus: tuple[Path, list[Sample]], report: ScanReport
) -> None:
    _, samples = corpus
    columns = [Verdict.UNSAFE, Verdict.SUSPICIOUS, Verdict.CLEAN, Verdict.ERROR]
    table = {truth: dict.fromkeys(columns, 0) for truth in (True, False)}
    missed, false_alarms = [], []
    for s in samples:
        file, findings = outcome(report, s.relpath)
        table[s.dangerous][file.verdict] += 1
        if s.dangerous and file.verdict is Verdict.CLEAN:
            missed.append(s.name)
        if not s.dangerous and file.verdict is Verdict.UNSAFE:
            false_alarms.append(f"{s.name}: {details(findings)}")
    print(f"\n{report.scanner}\n| truth | " + " | ".join(v.value for v in columns) + " |")
    for truth, label in ((True, "dangerous"), (False, "benign")):
        counts = table[truth]
        print(f"| {label} ({sum(counts.values())}) | " + " | ".join(str(counts[v]) for v in columns) + " |")
    assert sum(table[True].values()) == 45 and sum(table[False].values()) == 22
    assert not missed, f"dangerous files rated clean: {missed}"
    assert not false_alarms, f"benign files rated unsafe: {false_alarms}"


def test_every_file_has_the_sha256_of_its_bytes(
    corpus: tuple[Path, list[Sample]], report: ScanReport
) -> None:
    root, samples = corpus
    assert [file.path for file in report.files] == [s.relpath for s in samples]
    for file in report.files:
        data = (root / file.path).read_bytes()
        assert (file.sha256, file.size) == (hashlib.sha256(data).hexdigest(), len(data)), file.path


def test_the_report_survives_json(report: ScanReport) -> None:
    assert ScanReport.from_json(report.to_json()) == report
    assert report.scanner.startswith("hokusai-registry ") and "(picklescan 1." in report.scanner


# ---------------------------------------------------------------------------------------------
# Specific samples


@pytest.mark.parametrize("name", ["pickle_as_txt", "pickle_as_json"])
def test_a_renamed_pickle_is_found_by_its_content(
    corpus: tuple[Path, list[Sample]], report: ScanReport, name: str
) -> None:
    file, findings = outcome(report, sample(corpus, name).relpath)
    assert (file.kind, file.verdict) == ("pickle", Verdict.UNSAFE)
    assert "calls os.system" in details(findings)


def test_a_torch_zip_with_a_bad_crc_is_still_read(report: ScanReport) -> None:
    file, findings = outcome(report, "torch/bad_crc.pt")
    assert file.verdict is Verdict.UNSAFE
    assert (
        Finding("torch/bad_crc.pt!archive/data.pkl", Verdict.UNSAFE, "calls os.system (process execution)")
        in findings
    )
    assert any(f.verdict is Verdict.SUSPICIOUS and "CRC-32" in f.detail for f in findings)


def test_a_pickle_in_a_zip_in_a_tar_gz_is_found(report: ScanReport) -> None:
    file, findings = outcome(report, "archives/bundle.tar.gz")
    assert (file.kind, file.verdict) == ("gzip", Verdict.UNSAFE)
    assert [f.path for f in findings] == ["archives/bundle.tar.gz!bundle/model.zip!inner/model.pkl"]


def test_joblib_arrays_are_skipped_and_the_call_after_them_found(report: ScanReport) -> None:
    for relpath in ("joblib/malicious.joblib", "joblib/malicious_zlib.joblib"):
        file, findings = outcome(report, relpath)
        assert file.verdict is Verdict.UNSAFE and "calls posix.system" in details(findings), relpath
    file, findings = outcome(report, "sklearn/model.joblib")
    assert file.verdict is Verdict.CLEAN, details(findings)


def test_a_keras_lambda_layer_is_unsafe_and_a_dense_model_clean(report: ScanReport) -> None:
    file, findings = outcome(report, "keras/lambda.keras")
    assert file.verdict is Verdict.UNSAFE
    assert (
        Finding("keras/lambda.keras!config.json", Verdict.UNSAFE, "Keras Lambda layer (runs code on load)")
        in findings
    )
    assert outcome(report, "keras/dense.keras")[0].verdict is Verdict.CLEAN


def test_an_npy_object_array_is_scanned_as_the_pickle_it_holds(report: ScanReport) -> None:
    assert outcome(report, "numpy/object_malicious.npy")[0].verdict is Verdict.UNSAFE
    assert outcome(report, "numpy/object_malicious.npz")[1][0].path == "numpy/object_malicious.npz!arr_0.npy"
    assert outcome(report, "numpy/object_benign.npy")[0].verdict is Verdict.CLEAN
    assert outcome(report, "numpy/float.npy")[0].verdict is Verdict.CLEAN


@pytest.mark.parametrize(
    "relpath",
    [
        "torch/state_dict.pt",
        "torch/full_module.pt",
        "sklearn/model.joblib",
        "mlflow_sklearn_skops/model.skops",
        "mlflow_sklearn_pickle/model.pkl",
        "pandas/frame.pkl",
        "safetensors/model.safetensors",
        "onnx/model.onnx",
        "xgboost/model.json",
        "lightgbm/model.txt",
        "mlflow_sklearn_cloudpickle/MLmodel",
        "mlflow_sklearn_cloudpickle/requirements.txt",
    ],
)
def test_benign_model_files_are_clean(report: ScanReport, relpath: str) -> None:
    file, findings = outcome(report, relpath)
    assert file.verdict is Verdict.CLEAN, details(findings)


def test_a_by_value_cloudpickle_model_is_suspicious_for_its_code(report: ScanReport) -> None:
    file, findings = outcome(report, "mlflow_pyfunc_benign/python_model.pkl")
    assert file.verdict is Verdict.SUSPICIOUS
    assert (
        Finding("mlflow_pyfunc_benign/python_model.pkl", Verdict.SUSPICIOUS, grading.CARRIES_CODE) in findings
    )
    file, findings = outcome(report, "mlflow_pyfunc_malicious/python_model.pkl")
    assert file.verdict is Verdict.UNSAFE and "calls posix.system" in details(findings)


def test_an_unknown_user_class_is_suspicious_not_unsafe(report: ScanReport) -> None:
    file, findings = outcome(report, "pickle/unknown_user_class.pkl")
    assert file.verdict is Verdict.SUSPICIOUS
    assert findings[0].detail == "references acme_models.churn.ChurnModel (not on the ML allowlist)"


def _pickles_in(root: Path, s: Sample) -> list[tuple[str, bytes]]:
    data = (root / s.relpath).read_bytes()
    if sniff(data[:65536], whole=len(data) <= 65536) is Kind.PICKLE:
        return [(s.relpath, data)]
    if zipfile.is_zipfile(root / s.relpath):
        members = []
        with zipfile.ZipFile(root / s.relpath) as archive:
            for info in archive.infolist():
                try:
                    members.append((info.filename, archive.read(info)))
                except zipfile.BadZipFile:
                    continue  # zipfile refuses a bad CRC; test_a_torch_zip_with_a_bad_crc_is_still_read
        return [(f"{s.relpath}!{name}", raw) for name, raw in members if raw[:1] == b"\x80"]
    return []


def test_our_globals_equal_picklescans_and_pickletools(corpus: tuple[Path, list[Sample]]) -> None:
    """Differential: for every pickle of the corpus (also inside zips), our walk of the stack, picklescan
    and the corpus's own pickletools listing name the same globals, over the same bytes."""
    root, samples = corpus
    compared = 0
    for s in samples:
        for label, data in _pickles_in(root, s):
            found = pickle_globals(io.BytesIO(data))
            ours = {f"{module}.{name}" for module, name in found.ours}
            assert ours == {f"{module}.{name}" for module, name in found.picklescan}, label
            kept = b"".join(data[a:b] for a, b in _kept(found.layout.skip, found.layout.end))
            assert ours == set(iter_pickle_globals(kept)), label
            compared += 1
    assert compared >= 45


def _kept(skip: list[tuple[int, int]], end: int) -> list[tuple[int, int]]:
    edges = [0, *[edge for span in sorted(skip) for edge in span], end]
    return list(zip(edges[::2], edges[1::2], strict=True))


# ---------------------------------------------------------------------------------------------
# Tricks and bounds


def test_four_zips_deep_is_an_error_and_three_still_scanned(tmp_path: Path) -> None:
    file, findings = scan_one(tmp_path, "deep.zip", nested_zips(b"\x80\x02carbitrary\nname\n.", 4))
    assert file.verdict is Verdict.ERROR
    assert findings == [
        Finding("deep.zip!level2.zip!level3.zip!level4.zip", Verdict.ERROR, findings[0].detail)
    ]
    assert "nested too deep" in findings[0].detail
    file, findings = scan_one(tmp_path, "three.zip", nested_zips(EVIL, 3))
    assert file.verdict is Verdict.UNSAFE and findings[0].path == "three.zip!level2.zip!level3.zip!model.pkl"


def test_a_zip_bomb_is_an_error_before_it_is_inflated(tmp_path: Path) -> None:
    write_zip64_bomb(tmp_path / "bomb.zip", 9)  # 9 MiB on disk, 9 GiB inflated
    file, findings = outcome(scan_path(tmp_path), "bomb.zip")
    assert file.verdict is Verdict.ERROR and "a zip bomb" in findings[0].detail


def test_a_stream_that_inflates_past_the_budget_is_an_error(tmp_path: Path) -> None:
    bomb = gzip.compress(bytes(48 << 20), compresslevel=1)
    limits = Limits(max_expanded=32 << 20)
    file, findings = scan_one(tmp_path, "weights.gz", bomb, limits)
    assert file.verdict is Verdict.ERROR and "expands past 32 MiB" in findings[0].detail
    file, findings = scan_one(tmp_path, "weights.gz", bomb, Limits(max_ratio=100, ratio_floor=8 << 20))
    assert file.verdict is Verdict.ERROR and "more than 100:1" in findings[0].detail


def test_headers_that_would_make_the_scanner_hold_gigabytes_are_errors(tmp_path: Path) -> None:
    """A zip's central directory and a tar's pax header are read whole by zipfile and tarfile."""
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 60000, 60000, 1 << 30, 0, 0)
    file, findings = scan_one(tmp_path, "listing.zip", b"PK\x03\x04" + bytes(26) + eocd)
    assert file.verdict is Verdict.ERROR and "central directory of 1.0 GiB" in findings[0].detail
    header = bytearray(_tar_head()[:512])
    header[124:136] = b"%011o\x00" % (1 << 30)  # the pax header's size: 1 GiB
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    file, findings = scan_one(tmp_path, "pax.tar", bytes(header) + bytes(1024))
    assert file.verdict is Verdict.ERROR and "more than 64 MiB" in findings[0].detail


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress, zlib.compress])
def test_compressed_pickles_are_inflated_and_scanned(tmp_path: Path, compress: object) -> None:
    file, findings = scan_one(tmp_path, "model.bin", compress(EVIL))  # type: ignore[operator]
    assert file.verdict is Verdict.UNSAFE, details(findings)


def test_overlapping_zip_members_are_an_error(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("a.pkl", EVIL)]))
    directory = data.index(b"PK\x01\x02")
    end = data.index(b"PK\x05\x06")
    entry = bytes(data[directory:end])
    twin = entry.replace(b"a.pkl", b"b.pkl")  # a second name for the same bytes
    eocd = bytearray(data[end:])
    struct.pack_into("<HHI", eocd, 8, 2, 2, len(entry) * 2)
    file, findings = scan_one(tmp_path, "twins.zip", bytes(data[:end]) + twin + bytes(eocd))
    assert file.verdict is Verdict.ERROR and "overlap" in findings[0].detail


def test_a_deflated_zip_member_with_a_bad_crc_is_scanned(tmp_path: Path) -> None:
    write_zip(tmp_path / "d.zip", [("x/data.pkl", EVIL)], compress=True)
    data = bytearray((tmp_path / "d.zip").read_bytes())
    for signature, offset in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        position = data.index(signature)
        data[position + offset : position + offset + 4] = b"\0\0\0\0"
    file, findings = scan_one(tmp_path, "d.zip", bytes(data))
    assert file.verdict is Verdict.UNSAFE and "CRC-32" in details(findings)


def test_a_truncated_pickle_is_an_error_never_clean(tmp_path: Path) -> None:
    file, findings = scan_one(tmp_path, "cut.pkl", craft(call("acme.models", "Model", 1), 2)[:-3])
    assert file.verdict is Verdict.ERROR and "could not be parsed as a pickle" in details(findings)


def test_what_pickletools_rejects_but_the_unpickler_takes_is_still_read(tmp_path: Path) -> None:
    """``I0x10`` is an int to pickle.load (base 0) but stops pickletools, hiding what follows."""
    trick = b"\x80\x02I0x10\n0" + EVIL[2:]
    with pytest.raises(ValueError):
        list(pickletools.genops(trick))
    file, findings = scan_one(tmp_path, "hex.pkl", trick)
    assert file.verdict is Verdict.UNSAFE and "calls os.system" in details(findings)


def test_a_name_computed_while_loading_is_unsafe(tmp_path: Path) -> None:
    computed = b"\x80\x04\x8c\x08builtins\x8c\x03str\x93\x8c\x02os\x85R\x8c\x06system\x93\x8c\x01x\x85R."
    file, findings = scan_one(tmp_path, "computed.pkl", computed)
    assert file.verdict is Verdict.UNSAFE and "computed while loading" in details(findings)


def test_a_call_after_a_large_byte_string_is_found(tmp_path: Path) -> None:
    big = 12 << 20  # over pickles.SKIP_BYTES: skipped, not read
    data = b"\x80\x04]\x8e" + struct.pack("<Q", big) + bytes(big) + b"a" + EVIL[2:-1] + b"a."
    file, findings = scan_one(tmp_path, "big.pkl", data)
    assert file.verdict is Verdict.UNSAFE, details(findings)


def test_legacy_torch_save_is_five_pickles_then_raw_storages(tmp_path: Path) -> None:
    """Before the zip format, torch.save wrote magic, protocol, sys_info, the object and the storage
    keys as five pickles, then the storages' raw bytes: those are data, not a damaged pickle."""
    import pickle

    state = _OrderedDict([("w", tensor(_Storage("FloatStorage", "0", 4), (2, 2)))])
    head = [pickle.dumps(n, 2) for n in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})]
    storages = b"cnumpy\nfloat32\n" + b"\xff" * 8  # raw bytes that happen to parse as a GLOBAL, then not
    legacy = b"".join([*head, craft(state, 2), pickle.dumps(["0"], 2)]) + storages
    file, findings = scan_one(tmp_path, "legacy.pt", legacy)
    assert (file.kind, file.verdict, findings) == ("pickle", Verdict.CLEAN, [])
    evil = craft(_OrderedDict([("w", call("os", "system", SHELL))]), 2)
    file, findings = scan_one(
        tmp_path, "legacy_evil.pt", b"".join([*head, evil, pickle.dumps(["0"], 2)]) + storages
    )
    assert file.verdict is Verdict.UNSAFE, details(findings)


def test_raw_data_that_starts_like_a_pickle_is_not_an_error(tmp_path: Path) -> None:
    """A float tensor can begin with 0x80 0x02; it fails before importing anything, so it is inert."""
    file, findings = scan_one(tmp_path, "tensor.bin", b"\x80\x02\xff" + bytes(range(256)) * 4)
    assert (file.kind, file.verdict, findings) == ("binary", Verdict.CLEAN, [])


def test_embedded_pickles_are_scanned_when_a_nested_loader_would_open_them(tmp_path: Path) -> None:
    outer = craft(call("torch.storage", "_load_from_bytes", EVIL), 4)
    file, findings = scan_one(tmp_path, "storage.pkl", outer)
    assert file.verdict is Verdict.UNSAFE
    assert findings[0].path.startswith("storage.pkl!<embedded") and "os.system" in findings[0].detail


def test_hdf5_model_config_with_a_lambda_is_unsafe(tmp_path: Path) -> None:
    """No h5py here: the bytes around the attribute are stand-ins, the JSON is what Keras 2 writes."""
    config = json.dumps({"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda"}]}})
    signature = b"\x89HDF\r\n\x1a\n" + bytes(200)
    file, findings = scan_one(
        tmp_path, "model.h5", signature + b"model_config\0" + config.encode() + bytes(64)
    )
    assert file.verdict is Verdict.UNSAFE and "Keras Lambda layer" in details(findings)
    dense = config.replace("Lambda", "Dense")
    assert (
        scan_one(tmp_path, "dense.h5", signature + b"model_config\0" + dense.encode())[0].verdict
        is Verdict.CLEAN
    )
    assert scan_one(tmp_path, "weights.h5", signature + bytes(4096))[0].verdict is Verdict.CLEAN


def test_a_keras_config_naming_a_dangerous_function_is_unsafe(tmp_path: Path) -> None:
    config = {
        "class_name": "Dense",
        "config": {"activation": {"module": "os", "class_name": "function", "config": "system"}},
    }
    write_zip(tmp_path / "m.keras", [("config.json", json.dumps(config).encode()), ("metadata.json", b"{}")])
    file, findings = outcome(scan_path(tmp_path), "m.keras")
    assert file.verdict is Verdict.UNSAFE and "Keras config: calls os.system" in details(findings)


def test_a_skops_schema_naming_a_dangerous_type_is_unsafe(
    corpus: tuple[Path, list[Sample]], tmp_path: Path
) -> None:
    """skops rebuilds (and for a ReduceNode calls) every type its schema names; MLflow trusts the
    types the model's own MLmodel lists."""
    with zipfile.ZipFile(corpus[0] / "mlflow_sklearn_skops/model.skops") as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["hook"] = {"__class__": "system", "__module__": "posix", "__loader__": "ReduceNode"}
    members["schema.json"] = json.dumps(schema).encode()
    write_zip(tmp_path / "model.skops", members.items())
    file, findings = outcome(scan_path(tmp_path), "model.skops")
    assert file.verdict is Verdict.UNSAFE and "skops schema: calls posix.system" in details(findings)


def test_an_mlmodel_that_runs_shipped_code_is_suspicious(tmp_path: Path) -> None:
    mlmodel = (
        b"flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n    model_code_path: m.py\n"
    )
    file, findings = scan_one(tmp_path, "MLmodel", mlmodel)
    assert file.verdict is Verdict.SUSPICIOUS and "runs Python code shipped with the model" in details(
        findings
    )


def test_an_invalid_safetensors_header_is_an_error(tmp_path: Path) -> None:
    good = safetensors_bytes({"w": ("F32", (2,), bytes(8))})
    assert scan_one(tmp_path, "good.safetensors", good)[0].verdict is Verdict.CLEAN
    bad = safetensors_bytes({"w": ("F32", (2,), bytes(8))})[:-4]  # data shorter than its offsets
    assert scan_one(tmp_path, "bad.safetensors", bad)[0].verdict is Verdict.ERROR


# ---------------------------------------------------------------------------------------------
# Units: grading and sniffing


@pytest.mark.parametrize(
    ("module", "name", "verdict", "detail"),
    [
        ("os", "system", Verdict.UNSAFE, "calls os.system (process execution)"),
        ("nt", "spawnv", Verdict.UNSAFE, "calls nt.spawnv (process execution)"),
        ("importlib", "import_module", Verdict.UNSAFE, "imports importlib.import_module (import machinery)"),
        ("__builtin__", "getattr", Verdict.UNSAFE, "calls __builtin__.getattr (runs or builds code)"),
        ("os.path", "os.system", Verdict.UNSAFE, "calls os.path.os.system (process execution)"),
        ("asyncio.subprocess", "create_subprocess_shell", Verdict.UNSAFE, None),
        ("torch.nn.modules.module", "os.system", Verdict.UNSAFE, None),
        ("sklearn.utils", "sys.modules", Verdict.UNSAFE, None),
        ("unknown", "unknown", Verdict.UNSAFE, None),
        ("types", "CodeType", Verdict.UNSAFE, None),
        ("torch.hub", "load", Verdict.UNSAFE, None),
        ("uuid", "_get_command_stdout", Verdict.UNSAFE, None),
        ("collections", "OrderedDict", Verdict.CLEAN, None),
        ("torch._utils", "_rebuild_tensor_v2", Verdict.CLEAN, None),
        ("torch", "BFloat16Storage", Verdict.CLEAN, None),
        ("sklearn.ensemble._forest", "RandomForestClassifier", Verdict.CLEAN, None),
        ("numpy._core.multiarray", "_reconstruct", Verdict.CLEAN, None),
        ("builtins", "frozenset", Verdict.CLEAN, None),
        ("uuid", "UUID", Verdict.CLEAN, None),
        ("sklearn.utils._testing", "TempMemmap", Verdict.SUSPICIOUS, None),
        ("sklearn.metrics", "make_scorer", Verdict.SUSPICIOUS, None),
        (
            "acme.models",
            "Churn",
            Verdict.SUSPICIOUS,
            "references acme.models.Churn (not on the ML allowlist)",
        ),
        ("cloudpickle.cloudpickle", "_make_function", Verdict.SUSPICIOUS, grading.CARRIES_CODE),
    ],
)
def test_grade(module: str, name: str, verdict: Verdict, detail: str | None) -> None:
    got = grading.grade(module, name)
    assert got[0] is verdict, got
    assert detail is None or got[1] == detail


def test_carried_code_is_suspicious_but_a_dangerous_global_beside_it_is_not_forgiven() -> None:
    code = [("cloudpickle.cloudpickle", "_make_function"), ("cloudpickle.cloudpickle", "_builtin_type")]
    assert grading.grade_pickle([*code, ("types", "CodeType")]) == [
        (Verdict.SUSPICIOUS, grading.CARRIES_CODE)
    ]
    assert grading.grade_pickle([*code, ("posix", "system")])[0] == (
        Verdict.UNSAFE,
        "calls posix.system (process execution)",
    )
    assert grading.grade_pickle([("types", "CodeType")])[0][0] is Verdict.UNSAFE
    facts = grading.PickleFacts(helper_args=frozenset({("subimport", "os"), ("_builtin_type", "CodeType")}))
    assert [v for v, _ in grading.grade_pickle(code, facts)] == [Verdict.UNSAFE, Verdict.SUSPICIOUS]
    assert grading.grade_pickle(code, grading.PickleFacts(calls_carried_code=True))[0][0] is Verdict.UNSAFE


def _tar_head() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("m" * 120 + ".pkl")  # too long for ustar: a pax header comes first
        info.size = len(EVIL)
        archive.addfile(info, io.BytesIO(EVIL))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", Kind.EMPTY),
        (zip_bytes([("a", b"b")]), Kind.ZIP),
        (b"PK\x05\x06" + bytes(18), Kind.ZIP),
        (_tar_head(), Kind.TAR),
        (gzip.compress(b"x", mtime=0), Kind.GZIP),  # no timestamp: workers collect the same id
        (bz2.compress(b"x"), Kind.BZ2),
        (lzma.compress(b"x"), Kind.XZ),
        (zlib.compress(EVIL, 1), Kind.ZLIB),
        (zlib.compress(EVIL, 3), Kind.ZLIB),
        (zlib.compress(EVIL, 9), Kind.ZLIB),
        (npy_header("<f4", (2,)) + bytes(8), Kind.NUMPY),
        (b"\x89HDF\r\n\x1a\n" + bytes(100), Kind.HDF5),
        (bytes(512) + b"\x89HDF\r\n\x1a\n" + bytes(100), Kind.HDF5),
        (safetensors_bytes({"w": ("F32", (1,), bytes(4))}), Kind.SAFETENSORS),
        (b"7z\xbc\xaf\x27\x1c" + bytes(20), Kind.SEVEN_ZIP),
        *[(craft(call("os", "system", SHELL), protocol), Kind.PICKLE) for protocol in range(6)],
        (b"(S'ls'\nios\nsystem\n.", Kind.PICKLE),  # protocol 0 INST: no GLOBAL, no PROTO
        (b"\x8c\x02os\x8c\x06system\x93.", Kind.PICKLE),  # STACK_GLOBAL without PROTO
        (b"channels:\n- conda-forge\ndependencies:\n- python=3.11\n", Kind.TEXT),
        (b'{"learner": {"attributes": {}}}', Kind.TEXT),
        (b"mlflow==3.17.2\ncloudpickle==3.1.1\n", Kind.TEXT),
        (b"artifact_path: model\nflavors:\n  python_function: {}\n", Kind.TEXT),
        (b"cabbage\ncarrot\ncelery\n", Kind.TEXT),  # looks like GLOBAL, but imports nothing loadable
        ("naïve café\n".encode(), Kind.TEXT),
        (b"\x08\x08\x12\x0ehokusai-corpus", Kind.BINARY),  # protobuf
        (b"\x00\x00\x80?" * 16, Kind.BINARY),  # float32 ones
    ],
)
def test_sniff(data: bytes, kind: Kind) -> None:
    assert sniff(data, whole=True) is kind


def test_sniff_takes_a_prefix_cut_mid_character_as_text_and_mid_pickle_as_pickle() -> None:
    text = ("é" * 40000).encode()
    assert sniff(text[:65535], whole=False) is Kind.TEXT
    old_pickle = b"(" + b"I1\n" * 30000
    assert sniff(old_pickle[:65536], whole=False) is Kind.PICKLE
    assert sniff(old_pickle[:65536], whole=True) is Kind.TEXT  # ends before STOP, imports nothing


def test_a_file_that_cannot_be_read_is_an_error_and_the_others_are_still_scanned(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(EVIL)
    files = [
        (StoredFile("gone.bin", 3), tmp_path / "gone.bin"),
        (StoredFile("model.pkl", 0), tmp_path / "model.pkl"),
    ]
    report = scan_files(files)
    assert [(f.path, f.verdict) for f in report.files] == [
        ("gone.bin", Verdict.ERROR),
        ("model.pkl", Verdict.UNSAFE),
    ]


def test_names_a_database_cannot_store_are_kept_as_escapes(tmp_path: Path) -> None:
    """A hostile pickle's global may name bytes that are not UTF-8, or a NUL: PostgreSQL refuses both,
    and the verdict must still be recorded (the fleet test's random weights found this)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.pkl").write_bytes(b"\x80\x02cos\xff\x00\nsystem\nq\x00.")
    report = scan_path(model)
    text = json.dumps(report.to_json(), ensure_ascii=False) + report.summary()
    text.encode("utf-8")  # raises on a lone surrogate
    assert "\x00" not in text
    assert report.verdict is not Verdict.CLEAN
