"""What a pickle may import and call: allowlist, review tier, dangerous names.

Pure data plus :func:`classify`. Nothing here imports torch or numpy.

Tiers (see :class:`Verdict` values):

* ``allow``     - may be called while loading a model file (tensor/storage
  rebuild helpers, ``collections.OrderedDict``, numpy array reconstruction,
  plain builtin containers).
* ``critical``  - a name that reaches code execution, the shell, the network,
  the import system or another deserialiser (``os.system``,
  ``builtins.eval``, ``runpy._run_code``, ``pickle.loads``, ``torch.load``...).
* ``unknown``   - anything else; whether it is a finding of severity *high*
  (it is called) or a *review* finding (a class that is only instantiated
  without running ``__init__``, or referenced) is decided by how the pickle
  uses it.
"""

from __future__ import annotations

ALLOW = "allow"
CRITICAL = "critical"
UNKNOWN = "unknown"

# Callables a benign model file calls while loading.
ALLOWED: frozenset[str] = frozenset({
    # torch tensor / parameter rebuild helpers (torch's own weights_only list)
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._tensor._rebuild_from_type",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.nn.parameter.UninitializedParameter",
    "torch.nn.parameter.Buffer",
    "torch.Size",
    "torch.device",
    "torch.Tensor",
    "torch._tensor.Tensor",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.UntypedStorage",
    "torch.TypedStorage",
    "torch.serialization._get_layout",
    "torch.per_tensor_affine",
    "torch.per_channel_affine",
    # containers
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.Counter",
    "collections.deque",
    "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.bytes",
    "builtins.complex", "builtins.slice", "builtins.range", "builtins.list",
    "builtins.dict", "builtins.tuple", "builtins.int", "builtins.float",
    "builtins.str", "builtins.bool", "builtins.object", "builtins.NoneType",
    "builtins.Ellipsis", "builtins.NotImplemented",
    "__builtin__.set", "__builtin__.frozenset", "__builtin__.bytearray",
    "__builtin__.complex", "__builtin__.slice", "__builtin__.object",
    "__builtin__.list", "__builtin__.dict", "__builtin__.tuple", "__builtin__.int",
    "__builtin__.float", "__builtin__.str", "__builtin__.unicode", "__builtin__.long",
    "_codecs.encode",  # protocol 2 pickles of bytes: _codecs.encode('...', 'latin1')
    "codecs.encode",
    # copyreg reconstruction (arguments are checked, see CALLS_ARGUMENTS)
    "copyreg._reconstructor", "copy_reg._reconstructor",
    "copyreg.__newobj__", "copyreg.__newobj_ex__", "copy_reg.__newobj__",
    "functools.partial",
    # numpy array / scalar / dtype reconstruction
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    "numpy.dtype", "numpy.ndarray", "numpy.ma.core._mareconstruct",
    "numpy.ma.core.MaskedArray", "numpy.matrix", "numpy.matrixlib.defmatrix.matrix",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random.mtrand.RandomState", "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64", "numpy.random._generator.Generator",
    # joblib's inline array wrapper (the array bytes follow in the stream)
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    "joblib.numpy_pickle_compat.NDArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper",
    "joblib.numpy_pickle.ZNDArrayWrapper", "sklearn.externals.joblib.numpy_pickle.NDArrayWrapper",
    "numpy.core._internal._reconstruct",  # ndarray pickles from NumPy < 1.0
    "joblib.numpy_pickle_compat.ZNDArrayWrapper",
    # pandas reconstruction helpers (DataFrame / Series / Index pickles)
    "pandas.core.indexes.base._new_Index", "pandas._libs.internals._unpickle_block",
    "pandas._libs.tslibs.timestamps._unpickle_timestamp",
    "pandas._libs.tslibs.timedeltas._timedelta_unpickle", "pandas.core.internals.blocks.new_block",
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    # torch pickled with plain pickle: storages travel as torch.save bytes, which the scanner
    # scans as a nested zip (a computed argument is a high finding, see pickle_sim)
    "torch.storage._load_from_bytes",
    # path objects (construction does no I/O) and argparse namespaces, common in checkpoints
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    "pathlib.Path", "pathlib.PurePath", "argparse.Namespace", "torch.torch_version.TorchVersion",
    "types.SimpleNamespace", "re._compile", "zoneinfo.ZoneInfo._unpickle",
    # numpy ufuncs: _ufunc_reconstruct(module, name) imports module.name; resolved and classified in pickle_sim
    "numpy.core._ufunc_reconstruct", "numpy._core._ufunc_reconstruct",
    # plain value types
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
    "datetime.timezone", "decimal.Decimal", "fractions.Fraction", "uuid.UUID",
})

# Pure builtins: they compute on their arguments and reach no code, file, process or import (what they are
# given is still checked: a huge range or size makes a resource-exhaustion finding, see pickle_sim).
SAFE_BUILTINS: frozenset[str] = frozenset({
    "len", "abs", "min", "max", "sum", "round", "divmod", "ord", "chr", "bin", "hex", "oct", "ascii",
    "isinstance", "issubclass", "callable", "id", "hash", "all", "any", "reversed", "enumerate", "zip",
    "property", "staticmethod", "classmethod", "int.from_bytes", "dict.fromkeys", "float.fromhex",
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "EOFError", "Exception",
    "FileNotFoundError", "IndexError", "KeyError", "KeyboardInterrupt", "LookupError", "MemoryError",
    "NotImplementedError", "OSError", "OverflowError", "RuntimeError", "StopIteration", "TypeError",
    "UnicodeDecodeError", "UnicodeEncodeError", "ValueError", "ZeroDivisionError", "Warning", "UserWarning",
    "DeprecationWarning", "RuntimeWarning", "FutureWarning", "TimeoutError", "PermissionError",
})
ALLOWED = ALLOWED | {f"{m}.{n}" for m in ("builtins", "__builtin__") for n in SAFE_BUILTINS}
# Calls with a range/size argument beyond these materialise that much (resource exhaustion, not code).
HUGE_BYTES = 256 << 20
HUGE_ELEMENTS = 10_000_000
SIZED_CONSTRUCTORS: frozenset[str] = frozenset({
    "builtins.bytearray", "builtins.bytes", "__builtin__.bytearray", "torch.storage.UntypedStorage",
    "torch.UntypedStorage", "torch.storage.TypedStorage", "torch.TypedStorage",
})
RANGE_OK = frozenset({"builtins.len", "builtins.range", "builtins.reversed", "builtins.bool", "builtins.enumerate",
                      "builtins.zip", "builtins.iter", "builtins.slice"})

# torch dtype / storage names are referenced as values ('torch', 'float32').
_TORCH_VALUE_NAMES = {
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int8",
    "uint8", "int16", "short", "int32", "int", "int64", "long", "bool", "complex64",
    "complex128", "cfloat", "cdouble", "qint8", "quint8", "qint32", "quint4x2",
    "quint2x4", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
    "uint16", "uint32", "uint64", "strided", "sparse_coo", "sparse_csr", "sparse_csc",
    "sparse_bsr", "sparse_bsc", "_mkldnn", "jagged", "contiguous_format",
    "channels_last", "preserve_format", "channels_last_3d",
}
_TORCH_VALUE_NAMES |= {f"{t}Tensor" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short",
                                               "Char", "Byte", "Bool", "ComplexFloat", "ComplexDouble")}
STORAGE_ELEMENT_SIZES: dict[str, int] = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "BFloat16Storage": 2, "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8, "QUInt8Storage": 1, "QInt8Storage": 1,
    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}

# Allowlisted callables that call (or store-and-later-call) their arguments:
# position -> how the argument is used ("call" | "new"); "*" = every argument.
CALLS_ARGUMENTS: dict[str, dict] = {
    "torch._tensor._rebuild_from_type": {0: "call", 1: "new"},
    "torch._tensor._rebuild_from_type_v2": {0: "call", 1: "new"},
    "torch._utils._rebuild_wrapper_subclass": {0: "new"},
    # backward hooks are stored on the tensor and called during backward
    "torch._utils._rebuild_tensor_v2": {"*": "call"},
    "torch._utils._rebuild_tensor_v3": {"*": "call"},
    "torch._utils._rebuild_parameter": {"*": "call"},
    "torch._utils._rebuild_parameter_with_state": {"*": "call"},
    "torch._utils._rebuild_qtensor": {"*": "call"},
    "copyreg._reconstructor": {0: "new", 1: "base"},
    "copy_reg._reconstructor": {0: "new", 1: "base"},
    "copyreg.__newobj__": {0: "new"},
    "copy_reg.__newobj__": {0: "new"},
    "copyreg.__newobj_ex__": {0: "new"},
    "collections.defaultdict": {0: "call"},  # the default factory runs on a missing key
    "functools.partial": {0: "call"},
}

# Modules where every name reaches code execution, processes, the import
# system, the network, files, or another deserialiser.
CRITICAL_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "_winapi",
    "_subprocess", "sys", "pty", "runpy", "importlib", "imp", "zipimport", "pkgutil",
    "pickle", "_pickle", "cPickle", "pickletools", "copyreg", "copy_reg", "shelve", "marshal", "dill",
    "cloudpickle", "ctypes", "_ctypes", "cffi", "code", "codeop", "timeit", "pdb", "bdb",
    "trace", "profile", "cProfile", "doctest", "webbrowser", "socket", "_socket", "ssl",
    "http", "urllib", "urllib2", "urllib3", "requests", "httplib", "ftplib", "smtplib", "telnetlib",
    "xmlrpc", "asyncio", "multiprocessing", "concurrent", "threading", "_thread", "thread",
    "signal", "shutil", "tempfile", "glob", "io", "_io", "fileinput", "linecache", "site",
    "sysconfig", "distutils", "setuptools", "pip", "venv", "ensurepip", "pydoc", "platform",
    "operator", "_operator", "types", "inspect", "gc", "weakref", "atexit", "builtins_",
    "sqlite3", "tarfile", "zipfile", "commands", "popen2", "spawn", "uuid", "_osx_support",
    "_aix_support", "idlelib", "lib2to3", "_bootlocale", "nturl2path", "mailcap", "cgi",
    "cgitb", "pathlib", "tkinter", "turtle", "antigravity", "this", "readline", "rlcompleter",
    "pexpect", "paramiko", "fabric", "invoke", "sh", "plumbum", "IPython", "jupyter_client",
    "numexpr", "jinja2", "mako", "yaml", "ruamel", "dis", "ast", "compileall", "py_compile",
    "faulthandler", "resource", "fcntl", "termios", "mmap", "select", "selectors",
    "logging.config", "imaplib", "poplib", "nntplib", "socketserver", "wsgiref", "smtpd",
    "pkg_resources", "importlib_metadata", "huggingface_hub", "fsspec", "boto3", "botocore",
    "git", "psutil", "docker", "mlflow", "httpx", "aiohttp", "cmd", "dbm",
})

# Exact names (module prefix match inside these packages) that execute code.
CRITICAL_NAMES: frozenset[str] = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__",
    "builtins.getattr", "builtins.setattr", "builtins.delattr", "builtins.open",
    "builtins.globals", "builtins.locals", "builtins.vars", "builtins.breakpoint",
    "builtins.input", "builtins.help", "builtins.exit", "builtins.quit",
    "builtins.__build_class__", "builtins.__loader__", "builtins.memoryview",
    "builtins.type", "builtins.super", "builtins.apply", "builtins.execfile",
    "builtins.file", "builtins.reload", "builtins.copyright", "builtins.credits",
    "builtins.license", "builtins.print", "builtins.dir", "builtins.hasattr",
    "numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.save",
    "numpy.lib.npyio.load", "numpy.lib._npyio_impl.load", "numpy.ctypeslib",
    "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.lib.utils",
    "numpy.core._internal", "numpy._core._internal", "numpy.memmap", "numpy.core.memmap",
    "numpy._core.memmap", "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.DataSource", "numpy.lib._datasource",
    "numpy.fromregex", "numpy.savez", "numpy.savetxt", "numpy.tofile",
    "torch.utils.tensorboard", "torch.profiler", "torch.autograd.profiler", "torch.utils.benchmark",
    "torch.from_file", "torch.utils.hooks", "torch.export", "torch.onnx",
    "torch.load", "torch.save", "torch.serialization", "torch.hub", "torch.jit",
    "torch.package", "torch.utils.cpp_extension", "torch._inductor", "torch._dynamo",
    "torch.compile", "torch.fx", "torch.ops", "torch._ops", "torch.library",
    "torch.utils.data", "torch.multiprocessing", "torch.distributed", "torch._C",
    "torch.backends", "torch.utils.collect_env", "torch.testing", "torch._utils._import_dotted_name",
    "torch.classes", "torch._classes", "torch.cuda", "torch.utils.checkpoint",
    "joblib.load", "joblib.numpy_pickle.load", "joblib.numpy_pickle_compat.load_compatibility",
    "joblib.Parallel", "joblib.parallel", "joblib.externals", "joblib._parallel_backends",
    "sklearn.utils._testing", "sklearn.utils.fixes", "sklearn.externals",
    "transformers.dynamic_module_utils",
    "pandas.io", "pandas.read_pickle", "pandas.eval", "pandas.core.computation",
    "scipy.io", "scipy.weave", "scipy._lib._testutils", "functools.reduce",
    "keras.models", "tensorflow", "keras.src.saving", "onnx.load",
    "scipy.LowLevelCallable", "scipy._lib._ccallback", "pandas.HDFStore", "pandas.ExcelWriter",
    "pandas.ExcelFile", "pandas.read_csv", "pandas.read_json", "pandas.read_sql", "pandas.read_hdf",
})

BUILTIN_MODULES = {"builtins", "__builtin__", "__builtins__", "exceptions"}

# Builtin callables that execute code when found *inside* a dotted attribute path.
_BARE_DANGEROUS = {"eval", "exec", "compile", "__import__", "getattr", "setattr", "system",
                   "popen", "Popen", "spawn", "spawnv", "execv", "execve", "execl", "execvp",
                   "check_output", "check_call", "loads", "import_module", "_run_code", "run_path",
                   "run_module", "fork", "posix_spawn", "fork_exec"}
_DUNDER_OK = {"__main__", "__builtin__", "__builtins__", "__newobj__", "__newobj_ex__",
              "__randomstate_ctor", "__generator_ctor", "__bit_generator_ctor"}

# Libraries whose classes a benign pickle routinely instantiates; a class from
# one of them that is only instantiated is a *low* review finding, elsewhere *medium*.
WELL_KNOWN = frozenset({
    "torch", "sklearn", "numpy", "scipy", "transformers", "pandas", "xgboost",
    "lightgbm", "catboost", "joblib", "tokenizers", "collections", "datetime",
    "decimal", "fractions", "enum", "re", "timm", "torchvision", "safetensors",
    "accelerate", "peft", "diffusers", "sentence_transformers", "statsmodels",
    "lightning", "pytorch_lightning", "lightning_fabric", "omegaconf", "argparse",
})

EXPLANATIONS = {
    "os": "operating-system interface (shell commands, files, processes)",
    "posix": "low-level OS interface behind os (system, exec*, fork)",
    "nt": "low-level Windows OS interface behind os",
    "subprocess": "starts processes",
    "_posixsubprocess": "low-level process spawning (fork_exec)",
    "runpy": "runs Python code or modules",
    "pty": "spawns a process on a pseudo-terminal",
    "code": "interactive Python interpreter (runs source)",
    "codeop": "compiles Python source",
    "timeit": "compiles and runs Python source strings",
    "pdb": "debugger that runs Python statements",
    "bdb": "debugger framework that runs code",
    "importlib": "imports arbitrary modules",
    "pickle": "a nested unpickler (loads another payload)",
    "_pickle": "a nested unpickler (loads another payload)",
    "marshal": "loads code objects",
    "ctypes": "calls native functions",
    "socket": "opens network connections",
    "operator": "attribute/method access chains (attrgetter/methodcaller) reach arbitrary callables",
    "builtins": "Python builtin that executes code or reaches arbitrary attributes",
    "torch": "torch function that deserialises, compiles or runs code",
    "numpy": "numpy function that loads pickles/files or runs code",
}


def _module_matches(module: str, names: frozenset[str] | set[str]) -> str | None:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        cand = ".".join(parts[:i])
        if cand in names:
            return cand
    return None


def normalize_module(module: str) -> str:
    if module in BUILTIN_MODULES:
        return "builtins"
    if module == "copy_reg":
        return "copyreg"
    return module


def is_critical(module: str, name: str) -> str | None:
    """A reason string if ``module.name`` is a dangerous callable, else None."""
    module = normalize_module(module)
    full = f"{module}.{name}" if name else module
    top = _module_matches(module, CRITICAL_MODULES)
    if top and full not in ALLOWED:
        return EXPLANATIONS.get(top, f"module {top!r} reaches code execution, processes, files or the network")
    hit = _module_matches(full, CRITICAL_NAMES)
    if hit:
        top = module.split(".")[0]
        return f"{hit} " + EXPLANATIONS.get(top, "executes code or loads another payload")
    return None


def dotted_target(module: str, name: str) -> tuple[str, str, str] | None:
    """For a dotted attribute path (``torch._utils`` + ``os.system``), the dangerous
    target it really reaches as (module, name, reason), or None."""
    parts = [p for p in name.split(".") if p]
    if len(parts) < 2 and not (parts and module and parts[0].startswith("__") and parts[0] not in _DUNDER_OK):
        return None
    for p in parts[1:] if len(parts) > 1 else []:
        if p.startswith("__") and p.endswith("__") and p not in _DUNDER_OK:
            return (module, name, f"attribute traversal through {p!r} reaches interpreter internals (globals, builtins, code objects)")
    for i in range(len(parts) - 1):
        mod = ".".join(parts[: i + 1])
        nm = ".".join(parts[i + 1:])
        reason = is_critical(mod, nm)
        if reason and (parts[i] in CRITICAL_MODULES or parts[i] in BUILTIN_MODULES or _module_matches(mod, CRITICAL_NAMES)):
            return (mod, nm, f"re-exported through {module}: " + reason)
    for p in parts[1:]:
        if p in _BARE_DANGEROUS:
            return (module, name, f"dotted path ends in {p!r}, a code-execution primitive")
    return None


def classify(module: str, name: str) -> tuple[str, str, str, str]:
    """(tier, reason, effective_module, effective_name) for one imported global."""
    nmod = normalize_module(module)
    full = f"{nmod}.{name}"
    if full in ALLOWED:
        return ALLOW, "", module, name
    if nmod == "torch" and (name in _TORCH_VALUE_NAMES or name in STORAGE_ELEMENT_SIZES):
        return ALLOW, "", module, name
    if nmod in ("torch.storage",) and name in STORAGE_ELEMENT_SIZES:
        return ALLOW, "", module, name
    if "." in name or (name.startswith("__") and name.endswith("__") and name not in _DUNDER_OK):
        hit = dotted_target(nmod, name)
        if hit:
            return CRITICAL, hit[2], hit[0], hit[1]
    reason = is_critical(nmod, name)
    if reason:
        return CRITICAL, reason, module, name
    if nmod == "builtins":
        return UNKNOWN, "builtin outside the allowlist", module, name
    return UNKNOWN, "", module, name


# Libraries whose *classes* may be constructed by REDUCE in a benign pickle
# (scikit-learn's Tree, scipy sparse internals...): a low review finding, not high.
CONSTRUCTED_CLASSES_OK = frozenset({"sklearn", "scipy", "numpy", "pandas", "torch"})


def well_known(module: str) -> bool:
    return module.split(".")[0] in WELL_KNOWN


def constructor_ok(module: str) -> bool:
    return module.split(".")[0] in CONSTRUCTED_CLASSES_OK


def looks_like_class(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return bool(last) and last[0].isupper()
