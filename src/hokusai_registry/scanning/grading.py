"""How bad a pickle's globals are: unsafe, suspicious or clean, with a line saying why.

A global is what unpickling imports and may call, so it is the whole attack surface of a pickle. The
order of the checks is the policy:

1. our own list of dangerous callables (process execution, ``eval``/``exec``, import machinery,
   nested unpickling, file and network access, ``ctypes``, debuggers), every submodule of a
   dangerous module, and dotted names that walk into one (``os.path`` / ``os.system``);
2. the allowlist of what ML libraries pickle (numpy, torch, sklearn, pandas, ... classes and their
   reconstructors): clean;
3. picklescan's own list of dangerous globals (additive: a picklescan upgrade can add names, never
   remove ours), then everything else: suspicious.

Functions and classes a pickle *carries* (cloudpickle and dill by-value code) are suspicious, not
unsafe: that is how a custom MLflow ``PythonModel`` ships, and its code runs only when called. Any
dangerous global beside them still makes the pickle unsafe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hokusai_registry.scanning.report import Verdict

__all__ = ["CARRIES_CODE", "PickleFacts", "grade", "grade_module", "grade_pickle", "loads_nested"]

CARRIES_CODE = "carries Python code (a by-value cloudpickle function or class)"

# ---------------------------------------------------------------------------------------------
# Dangerous: modules whose every attribute and submodule is dangerous, and dangerous names


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_PROCESS = "process execution"
_CODE = "runs or builds code"
_IMPORT = "import machinery"
_NESTED = "unpickles nested data"
_FILES = "file access"
_NETWORK = "network access"
_INTERPRETER = "interpreter internals"

_UNSAFE_MODULE_GROUPS = {
    _PROCESS: "os posix nt subprocess _posixsubprocess pty asyncio commands popen2 multiprocessing _winapi "
    "signal _signal atexit venv ensurepip pip",
    _CODE: "code codeop pdb bdb runpy timeit cProfile profile trace pydoc doctest idlelib lib2to3 test "
    "numpy.testing numpy.f2py numpy.distutils distutils setuptools torch.utils.cpp_extension torch.package "
    "torch.hub",
    _IMPORT: "importlib imp pkgutil zipimport",
    _NESTED: "pickle _pickle cPickle marshal shelve dill cloudpickle",
    _FILES: "shutil tempfile _io fileinput mmap sqlite3 tarfile zipfile",
    _NETWORK: "socket _socket ssl http httplib urllib.request urllib2 requests httpx aiohttp ftplib smtplib "
    "telnetlib poplib imaplib nntplib xmlrpc socketserver asyncore asynchat webbrowser _osx_support "
    "_aix_support",
    _INTERPRETER: "sys ctypes _ctypes cffi gc _thread resource _pyrepl",
}
_UNSAFE_MODULES = {
    module: reason for reason, text in _UNSAFE_MODULE_GROUPS.items() for module in text.split()
}
_BUILTINS_UNSAFE = _names(
    "eval exec execfile compile __import__ getattr setattr delattr globals locals vars open file breakpoint "
    "input help exit quit apply reload"
)
_NUMPY_FILES = _names(
    "load loads save savez savez_compressed savetxt loadtxt genfromtxt fromfile fromregex memmap DataSource "
    "ctypeslib"
)
_UNSAFE_NAMES: dict[str, tuple[str, frozenset[str]]] = {
    "builtins": (_CODE, _BUILTINS_UNSAFE),
    "__builtin__": (_CODE, _BUILTINS_UNSAFE),
    "types": (_CODE, _names("CodeType FunctionType LambdaType MethodType ModuleType")),
    "io": (_FILES, _names("open open_code FileIO")),
    "codecs": (_FILES, _names("open EncodedFile")),
    "logging": (_FILES, _names("FileHandler handlers")),
    "operator": (_CODE, _names("attrgetter methodcaller itemgetter")),
    "_operator": (_CODE, _names("attrgetter methodcaller itemgetter")),
    "functools": (_CODE, _names("partial")),
    "numpy": (_FILES, _NUMPY_FILES),
    "numpy.lib.npyio": (_FILES, _NUMPY_FILES),
    "pandas": (_NESTED, _names("read_pickle to_pickle")),
    "pandas.io.pickle": (_NESTED, _names("read_pickle to_pickle")),
    "joblib": (_NESTED, _names("load dump")),
    "joblib.numpy_pickle": (_NESTED, _names("load dump")),
    "torch": (_NESTED, _names("load save")),
    "torch.serialization": (_NESTED, _names("load save _load")),
    "torch.jit": (_CODE, _names("load _load_for_lite_interpreter")),
    "torch._ops": (_CODE, _names("load_library")),
    "torch.ops": (_CODE, _names("load_library")),
    "torch.classes": (_CODE, _names("load_library")),
    "mlflow.pyfunc": (_CODE, _names("load_model _load_pyfunc")),
    "mlflow.artifacts": (_NETWORK, _names("download_artifacts load_text load_dict")),
    "uuid": (_PROCESS, _names("_get_command_stdout _popen")),
}
# Callables dangerous under any module they are re-exported from (``some.module.system``), and the
# attributes a dotted name can walk through to reach anything (``x.__globals__``, ``x.__builtins__``).
_UNSAFE_ANYWHERE = _names(
    "system popen Popen exec eval execfile execv execve execvp execl spawnv spawnl posix_spawn fork_exec "
    "getoutput getstatusoutput check_output check_call run_path run_module runstring runcode runsource "
    "__import__ import_module load_module breakpoint set_trace settrace setprofile urlopen urlretrieve "
    "create_connection rmtree unlink write_text write_bytes tofile __subclasses__ __globals__ __builtins__ "
    "__getattribute__ __code__ __closure__ __dict__ __loader__ __spec__ __class__ __base__ __bases__ __mro__"
)
_NESTED_LOADERS = frozenset(
    tuple(ref.rsplit(".", 1))
    for ref in _names(
        "pickle.loads pickle.load _pickle.loads _pickle.load cPickle.loads dill.loads marshal.loads "
        "numpy.loads numpy.load joblib.load torch.load torch.serialization.load "
        "torch.storage._load_from_bytes "
        "pandas.read_pickle"
    )
)

# ---------------------------------------------------------------------------------------------
# Carried code: cloudpickle (and the copies vendored by joblib, ray, srsly) and dill

_CODE_MODULE_TAILS = ("cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast", "dill._dill")
_CODE_HELPERS = _names(
    "_make_function _builtin_type _make_skeleton_class _make_skeleton_enum _class_setstate "
    "_function_setstate _make_cell _make_empty_cell _make_dict_keys _make_dict_values _make_dict_items "
    "_create_parametrized_type_hint _enum_getstate _rehydrate_skeleton_class _fill_function _make_skel_func "
    "subimport dynamic_subimport _lookup_module_and_qualname _make_typevar _file_reconstructor "
    "_get_dataclass_field_type_sentinel _create_function _create_code _create_cell _create_type _load_type "
    "_import_module _create_namedtuple _create_typemap"
)
_IMPORTERS = _names("subimport dynamic_subimport _import_module")
_TYPE_NAME = re.compile(r"[A-Z]\w*")  # types.py's classes; its lowercase names are functions (and sys)
# What by-value code is rebuilt from: part of the carried-code finding when a code helper is present.
_CODE_PARTS = frozenset(
    {("types", name) for name in _names("CodeType FunctionType CellType MethodType ModuleType")}
    | {("types", name) for name in _names("MappingProxyType SimpleNamespace")}
    | {(module, name) for module in ("builtins", "__builtin__") for name in _names("type classmethod")}
    | {(module, name) for module in ("builtins", "__builtin__") for name in _names("staticmethod property")}
)

# ---------------------------------------------------------------------------------------------
# The allowlist: what torch, numpy, sklearn, pandas, ... models pickle

_BUILTINS_ALLOWED = _names(
    "set frozenset slice complex bytearray range bytes int float str list dict tuple bool object unicode "
    "long Ellipsis NotImplemented"
)
_NUMPY_TYPES = _names(
    "ndarray dtype matrix bool_ float16 float32 float64 float128 longdouble int8 int16 int32 int64 uint8 "
    "uint16 uint32 uint64 intp uintp complex64 complex128 complex256 str_ bytes_ object_ datetime64 "
    "timedelta64 void half single double longlong ulonglong short ushort intc uintc"
)
# numpy math that sklearn's FunctionTransformer and friends pickle by reference
_NUMPY_MATH = _names(
    "log log1p log2 log10 exp exp2 expm1 sqrt cbrt square abs absolute fabs sign negative reciprocal sin cos "
    "tan arcsin arccos arctan arctan2 sinh cosh tanh arcsinh arccosh arctanh floor ceil rint trunc round "
    "around clip maximum minimum fmax fmin add subtract multiply divide true_divide power float_power mean "
    "median sum prod std var nanmean nanmedian nansum max min amax amin argmax argmin"
)
_TORCH_NAMES = _names(
    "Size device Tensor dtype float32 float64 float16 bfloat16 half float double int8 int16 int32 int64 "
    "uint8 uint16 uint32 uint64 bool complex64 complex128 cfloat cdouble long int short float8_e4m3fn "
    "float8_e5m2 qint8 quint8 qint32 strided sparse_coo sparse_csr _mkldnn channels_last channels_last_3d "
    "contiguous_format preserve_format per_tensor_affine per_channel_affine"
)
_RECONSTRUCTORS = _names("_reconstructor __newobj__ __newobj_ex__")
_ALLOWED: dict[str, frozenset[str]] = {
    "collections": _names("OrderedDict defaultdict deque Counter"),
    "builtins": _BUILTINS_ALLOWED,
    "__builtin__": _BUILTINS_ALLOWED,
    "copyreg": _RECONSTRUCTORS,
    "copy_reg": _RECONSTRUCTORS,
    "_codecs": _names("encode"),
    "datetime": _names("datetime date time timedelta timezone"),
    "decimal": _names("Decimal"),
    "fractions": _names("Fraction"),
    "uuid": _names("UUID SafeUUID"),
    "pathlib": _names("Path PosixPath WindowsPath PurePath PurePosixPath PureWindowsPath"),
    "re": _names("_compile"),
    "numpy": _NUMPY_TYPES | _NUMPY_MATH,
    "numpy.core.multiarray": _names("_reconstruct scalar"),
    "numpy._core.multiarray": _names("_reconstruct scalar"),
    "numpy.core.numeric": _names("_frombuffer"),
    "numpy._core.numeric": _names("_frombuffer"),
    "numpy.ma.core": _names("_mareconstruct MaskedArray"),
    "numpy.random._pickle": _names("__randomstate_ctor __bit_generator_ctor __generator_ctor"),
    "torch": _TORCH_NAMES,
    "torch._tensor": _names("_rebuild_from_type_v2"),
    "torch.nn.parameter": _names("Parameter UninitializedParameter Buffer"),
    "torch.storage": _names("_load_from_bytes UntypedStorage TypedStorage"),  # its bytes are scanned too
    "torch.serialization": _names("_get_layout"),
    "joblib.numpy_pickle": _names("NumpyArrayWrapper"),
    "pyarrow.lib": _names("_restore_array py_buffer type_for_alias schema field"),
    "pandas._libs.tslibs.nattype": _names("__nat_unpickle"),
    "mlflow.pyfunc.utils.data_validation": _names("_validate_model_input _wrap_predict_with_pyfunc"),
}
# Packages whose classes (and reconstructor functions) are allowed wherever in the package they are.
_ALLOWED_PACKAGES = tuple(
    sorted(
        _names(
            "sklearn scipy.sparse pandas xgboost lightgbm catboost mlflow torch.nn torch.optim numpy.random "
            "numpy.dtypes numpy.ma pyarrow"
        )
    )
)
_NOT_ALLOWED_SEGMENTS = _names("tests testing _testing conftest estimator_checks externals")
_RECONSTRUCTOR = re.compile(
    r"_{0,2}(pyx_unpickle|rebuild|reconstruct|unpickle|new_|restore|frombuffer|from_bytes)\w*"
)
_CLASS = re.compile(r"_?[A-Z]\w*")  # classes, private ones too (sklearn's _BinMapper)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def _picklescan_unsafe() -> dict[str, frozenset[str] | None]:
    """picklescan's own list, as {module: names, or None for the whole module}; added to ours."""
    try:
        # Private to picklescan (no public accessor): imported here and nowhere else. If a release
        # renames it, only this addition is lost; our own lists above still apply.
        from picklescan.scanner import _unsafe_globals
    except ImportError:
        return {}
    table: dict[str, frozenset[str] | None] = {}
    for module, names in dict(_unsafe_globals).items():
        if names == "*":
            table[str(module)] = None
        elif isinstance(names, str):
            table[str(module)] = frozenset({names})
        else:
            table[str(module)] = frozenset(str(name) for name in names)
    return table


_PICKLESCAN_UNSAFE = _picklescan_unsafe()


def _parents(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _unsafe(module: str, name: str) -> tuple[str, str] | None:
    """(verb, reason) when our own lists call ``module.name`` dangerous."""
    for parent in _parents(module):
        if parent in _UNSAFE_MODULES:
            reason = _UNSAFE_MODULES[parent]
            return ("imports" if reason == _IMPORT else "calls"), reason
    attrs = name.split(".")
    for i, attr in enumerate(attrs):
        owner = ".".join([module, *attrs[:i]])  # what attrs[i] is looked up on: os.path.os -> system
        entry = _UNSAFE_NAMES.get(owner)
        if entry and attr in entry[1]:
            return ("imports" if attr in ("__import__", "import_module") else "calls"), entry[0]
        if i < len(attrs) - 1 and attr in _UNSAFE_MODULES:
            return "calls", f"reaches the {attr} module through an attribute"
        if attr in _UNSAFE_ANYWHERE:
            return ("imports" if attr in ("__import__", "import_module") else "calls"), _CODE
    return None


def _allowed(module: str, name: str) -> bool:
    if name in _ALLOWED.get(module, ()):
        return True
    if not _IDENTIFIER.fullmatch(name) or _NOT_ALLOWED_SEGMENTS & set(module.split(".")):
        return False
    if module == "torch" and name.endswith("Storage"):
        return True
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True
    in_package = any(module == package or module.startswith(package + ".") for package in _ALLOWED_PACKAGES)
    if in_package and module.startswith("scipy.sparse") and re.fullmatch(r"\w+_(matrix|array)", name):
        return True
    return in_package and bool(_CLASS.fullmatch(name) or _RECONSTRUCTOR.fullmatch(name))


def _picklescan_says_unsafe(module: str, name: str) -> bool:
    for parent in _parents(module):
        if parent in _PICKLESCAN_UNSAFE and _PICKLESCAN_UNSAFE[parent] is None:
            return True
    names = _PICKLESCAN_UNSAFE.get(module)
    return names is not None and name in names


def carries_code(module: str, name: str) -> bool:
    """A cloudpickle/dill helper that rebuilds functions and classes from code in the pickle."""
    return name in _CODE_HELPERS and (
        module in ("cloudpickle", "dill") or module.endswith(_CODE_MODULE_TAILS)
    )


def grade(module: str, name: str) -> tuple[Verdict, str]:
    """The verdict on one global on its own, and the detail a finding shows."""
    ref = f"{module}.{name}"
    if not module or not name or module == "unknown" or name == "unknown":
        return Verdict.UNSAFE, "imports a name computed while loading (cannot be checked before it runs)"
    if carries_code(module, name):
        return Verdict.SUSPICIOUS, CARRIES_CODE
    found = _unsafe(module, name)
    if found:
        verb, reason = found
        return Verdict.UNSAFE, f"{verb} {ref} ({reason})"
    if _allowed(module, name):
        return Verdict.CLEAN, f"{ref} is on the ML allowlist"
    if _picklescan_says_unsafe(module, name):
        return Verdict.UNSAFE, f"calls {ref} (on picklescan's list of dangerous globals)"
    return Verdict.SUSPICIOUS, f"references {ref} (not on the ML allowlist)"


def grade_module(module: str) -> tuple[Verdict, str]:
    """A module a pickle imports by name (cloudpickle's ``subimport("os")``): dangerous ones are unsafe."""
    if module == "unknown" or not module:
        return Verdict.UNSAFE, "imports a module whose name is computed while loading"
    for parent in _parents(module):
        if parent in _UNSAFE_MODULES or (parent in _PICKLESCAN_UNSAFE and _PICKLESCAN_UNSAFE[parent] is None):
            return Verdict.UNSAFE, f"imports the {module} module (through cloudpickle's subimport)"
    return Verdict.CLEAN, f"imports {module}"


def _grade_helper_arg(helper: str, argument: str) -> tuple[Verdict, str]:
    """``subimport("os")`` imports os; ``_builtin_type("CodeType")`` is types.CodeType, but
    ``_builtin_type("sys")`` would hand out the sys module that types.py imports."""
    if helper in _IMPORTERS:
        return grade_module(argument)
    if _TYPE_NAME.fullmatch(argument):
        return Verdict.CLEAN, f"looks up the type {argument}"
    return Verdict.UNSAFE, f"looks up {argument!r} with {helper} (not a type: reaches arbitrary objects)"


def loads_nested(module: str, name: str) -> bool:
    """Whether the global unpickles a byte string the pickle carries (so the engine scans those too)."""
    return (module, name) in _NESTED_LOADERS


@dataclass(frozen=True)
class PickleFacts:
    """What a walk of one pickle stream found beyond its globals (see pickles.Layout)."""

    unresolved: int = 0
    helper_args: frozenset[tuple[str, str]] = frozenset()  # (cloudpickle/dill helper, literal argument)
    calls_carried_code: bool = False


def grade_pickle(
    globals_: Iterable[tuple[str, str]], facts: PickleFacts = PickleFacts()
) -> list[tuple[Verdict, str]]:
    """Every non-clean verdict for one pickle stream, worst first, one per distinct detail."""
    refs = sorted(set(globals_))
    has_code = any(carries_code(module, name) for module, name in refs)
    graded: dict[str, Verdict] = {}
    for module, name in refs:
        if has_code and (module, name) in _CODE_PARTS:
            verdict, detail = Verdict.SUSPICIOUS, CARRIES_CODE
        else:
            verdict, detail = grade(module, name)
        if verdict is not Verdict.CLEAN:
            graded[detail] = verdict
    if facts.unresolved:
        graded["imports a name computed while loading (cannot be checked before it runs)"] = Verdict.UNSAFE
    for helper, argument in sorted(facts.helper_args):
        verdict, detail = _grade_helper_arg(helper, argument)
        if verdict is not Verdict.CLEAN:
            graded[detail] = verdict
    if facts.calls_carried_code:
        graded["calls a function it carries while loading (its code runs on load)"] = Verdict.UNSAFE
    return sorted(((v, d) for d, v in graded.items()), key=lambda item: (-item[0].rank, item[1]))
