"""The one loader for svgen's CUDA plugins, and the choice between CUDA and reference paths.

A plugin is built with ``torch.utils.cpp_extension.load`` (ninja) the first time a CUDA tensor
needs it -- never at import time. The sources and headers are copied into a private temporary
folder, built there, and the folder is then renamed into place under a name derived from a hash
of the source bytes, the torch and CUDA versions, the GPU architecture and the build options.
A later process (or a later run) finds that folder and imports the compiled library directly,
without a compiler. A failed build is remembered for the rest of the process: it is reported once
with the reason and never retried on every call.

Environment:
- ``SVGEN_OPS=ref|cuda|auto`` (default ``auto``): ``ref`` forces the pure-PyTorch path everywhere;
  ``cuda`` makes a CUDA tensor use the plugin and raises if it cannot be built; ``auto`` uses the
  plugin when it builds and falls back (with one warning) otherwise. CPU tensors always take the
  reference path.
- ``SVGEN_OPS_BUILD_DIR``: where builds are cached (default ``$TORCH_EXTENSIONS_DIR/svgen`` or
  ``~/.cache/svgen/torch_extensions``).
- ``SVGEN_OPS_VERBOSE=1``: print the build log (ninja/nvcc command lines and output) after a build.
- ``CUDA_HOME`` (or ``CUDA_PATH``): the CUDA toolkit; unset, ``/usr/local/cuda`` is used when its
  ``bin/nvcc`` exists (torch would guess from ``nvcc`` on ``PATH``, which can be a wrapper script
  elsewhere, and then miss the headers).
- ``TORCH_CUDA_ARCH_LIST`` (e.g. ``8.0;8.6;9.0``): the architectures to compile for; unset, those of
  the visible GPUs. Without either the build stops with a clear error.

Every build writes its compiler output to a log beside the cache folder (``<folder>.log``); every
failure message names it.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import shutil
import sys
import traceback
import uuid
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from svgen.utils.errors import SvgenError

ENV_MODE = "SVGEN_OPS"
ENV_BUILD_DIR = "SVGEN_OPS_BUILD_DIR"
ENV_VERBOSE = "SVGEN_OPS_VERBOSE"
ENV_ARCH_LIST = "TORCH_CUDA_ARCH_LIST"
DEFAULT_CUDA_HOME = Path("/usr/local/cuda")
MODES = ("ref", "cuda", "auto")
CSRC = Path(__file__).resolve().parent / "csrc"

PathLike = Union[str, os.PathLike]
# build_fn(module_name, sources_in_build_dir, build_dir, verbose, **build_kwargs) -> module
BuildFn = Callable[..., ModuleType]


class PluginBuildError(RuntimeError):
    """A CUDA plugin could not be built or loaded; the message says why."""


# -- path selection ----------------------------------------------------------------------------

def ops_mode() -> str:
    """The value of ``SVGEN_OPS`` (``auto`` when unset); an unknown value is an error."""
    mode = os.environ.get(ENV_MODE, "").strip().lower() or "auto"
    if mode not in MODES:
        raise SvgenError(f"{ENV_MODE} must be one of ref, cuda, auto (got {mode!r})")
    return mode


def choose_impl(device: Union[torch.device, str], impl: Optional[str] = None) -> str:
    """Which path an op on ``device`` takes: ``"ref"``, ``"cuda"`` (required) or ``"auto"``.

    ``SVGEN_OPS=ref`` or ``impl="ref"`` give ``"ref"``; a non-CUDA device always gives ``"ref"``;
    otherwise an explicit ``impl="cuda"`` or ``SVGEN_OPS=cuda`` require the plugin, and ``auto``
    means "plugin if it builds".
    """
    if impl not in (None, "ref", "cuda", "auto"):
        raise ValueError(f"impl must be None, 'ref', 'cuda' or 'auto', got {impl!r}")
    mode = ops_mode()
    if mode == "ref" or impl == "ref":
        return "ref"
    if torch.device(device).type != "cuda":
        return "ref"
    if impl == "cuda" or (impl in (None, "auto") and mode == "cuda"):
        return "cuda"
    return "auto"


# -- cache key ---------------------------------------------------------------------------------

def gpu_arch(device: Optional[torch.device] = None) -> str:
    """``sm_XY`` of the current (or given) CUDA device, ``nogpu`` without one."""
    if not torch.cuda.is_available():
        return "nogpu"
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def toolchain_fingerprint() -> Dict[str, str]:
    """Everything outside the sources that makes a compiled plugin incompatible."""
    return {
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "arch": gpu_arch(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST", ""),
    }


def cache_key(sources: Sequence[PathLike], headers: Sequence[PathLike] = (),
              build_kwargs: Optional[Dict[str, Any]] = None,
              fingerprint: Optional[Dict[str, str]] = None) -> str:
    """sha256 over the file names and bytes of sources and headers, build options and toolchain."""
    h = hashlib.sha256()
    for path in list(sources) + list(headers):
        path = Path(path)
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    h.update(repr(sorted((build_kwargs or {}).items())).encode())
    fp = toolchain_fingerprint() if fingerprint is None else fingerprint
    h.update(repr(sorted(fp.items())).encode())
    return h.hexdigest()


def default_build_root() -> Path:
    """``$SVGEN_OPS_BUILD_DIR``, else ``$TORCH_EXTENSIONS_DIR/svgen``, else ``~/.cache/svgen/torch_extensions``."""
    if os.environ.get(ENV_BUILD_DIR):
        return Path(os.environ[ENV_BUILD_DIR])
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "svgen"
    return Path.home() / ".cache" / "svgen" / "torch_extensions"


# -- toolkit and architectures -----------------------------------------------------------------

def cuda_home(default: PathLike = DEFAULT_CUDA_HOME) -> Optional[Path]:
    """The CUDA toolkit to build with: ``$CUDA_HOME`` or ``$CUDA_PATH`` when set, else ``default``
    when ``default/bin/nvcc`` exists, else None (torch then guesses from ``nvcc`` on ``PATH``)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var])
    default = Path(default)
    return default if (default / "bin" / "nvcc").is_file() else None


# Named architectures torch.utils.cpp_extension expands itself; numeric entries are "major.minor",
# optionally with an arch-specific "a"/"f" suffix and "+PTX".
NAMED_ARCHES = ("Kepler", "Maxwell", "Pascal", "Volta", "Turing", "Ampere", "Ada", "Hopper",
                "Blackwell")
_ARCH_RE = re.compile(r"^\d{1,2}\.\d[af]?(\+PTX)?$")
_NAMED_RE = re.compile(r"^(%s)(\+Tegra)?(\+PTX)?$" % "|".join(NAMED_ARCHES))


def parse_arch_list(text: str) -> List[str]:
    """The entries of a ``TORCH_CUDA_ARCH_LIST`` value (``;`` or space separated), validated.

    ``native`` and an empty value return ``[]`` (meaning: the visible GPUs). An entry that is
    neither ``major.minor[a|f][+PTX]`` nor a named architecture (``Ampere``, ``Hopper+PTX``...) is a
    PluginBuildError naming it.
    """
    entries = [e for e in re.split(r"[;\s]+", text.strip()) if e]
    if entries == ["native"]:
        return []
    bad = [e for e in entries if not (_ARCH_RE.match(e) or _NAMED_RE.match(e))]
    if bad:
        raise PluginBuildError(f"{ENV_ARCH_LIST}={text!r}: {', '.join(map(repr, bad))} is not a CUDA "
                               "architecture (expected e.g. '8.0;8.6;9.0+PTX' or 'Ampere')")
    return entries


def cuda_arch_list() -> List[str]:
    """The architectures a build targets: ``$TORCH_CUDA_ARCH_LIST``, else those of the visible GPUs.

    Raises PluginBuildError when neither gives one (no GPU visible and the variable unset), instead
    of letting torch fail later with an IndexError.
    """
    entries = parse_arch_list(os.environ.get(ENV_ARCH_LIST, ""))
    if entries:
        return entries
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    archs = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(count)})
    if not archs:
        raise PluginBuildError(f"no CUDA architecture to build for: no GPU is visible and {ENV_ARCH_LIST} "
                               "is unset (set it, e.g. TORCH_CUDA_ARCH_LIST='8.0;8.6;9.0')")
    return archs


# -- building ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _cpp_extension_cuda_home(cpp_extension: ModuleType, home: Optional[Path]) -> Iterator[None]:
    """Make cpp_extension build with ``home`` for the duration of one build.

    cpp_extension reads ``CUDA_HOME`` once, at its import, into a module attribute that all its
    build steps use; setting the environment variable later has no effect, so the attribute is set
    and restored here.
    """
    previous = cpp_extension.CUDA_HOME
    if home is not None:
        cpp_extension.CUDA_HOME = str(home)
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = previous


def torch_build(module_name: str, sources: Sequence[Path], build_dir: Path, verbose: bool,
                **build_kwargs: Any) -> ModuleType:
    """Compile and import with ``torch.utils.cpp_extension.load`` (ninja) inside ``build_dir``.

    With ``.cu`` sources it checks first what torch would otherwise fail on obscurely: a CUDA
    toolkit with ``bin/nvcc`` (:func:`cuda_home`) and a target architecture (:func:`cuda_arch_list`).
    """
    from torch.utils import cpp_extension  # imported lazily: it is slow and only needed here

    home = cuda_home()
    if any(Path(s).suffix == ".cu" for s in sources):
        toolkit = home if home is not None else cpp_extension.CUDA_HOME
        if toolkit is None:
            raise PluginBuildError("no CUDA toolkit found: set CUDA_HOME to the folder holding bin/nvcc")
        if not (Path(toolkit) / "bin" / "nvcc").is_file():
            raise PluginBuildError(f"CUDA toolkit {toolkit} has no bin/nvcc: set CUDA_HOME to the "
                                   "folder holding bin/nvcc")
        archs = cuda_arch_list()
        print(f"svgen: CUDA_HOME={toolkit} archs={';'.join(archs)}", flush=True)
    kwargs = dict(build_kwargs)
    kwargs.setdefault("extra_cflags", ["-O3"])
    kwargs.setdefault("extra_cuda_cflags", ["-O3"])
    with _cpp_extension_cuda_home(cpp_extension, home):
        return cpp_extension.load(name=module_name, sources=[str(s) for s in sources],
                                  build_directory=str(build_dir), verbose=verbose, **kwargs)


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (so the compiler processes' output too) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def log_excerpt(log: Path, max_lines: int = 6) -> str:
    """The compiler's error lines in a build log (else its last lines), joined for a message."""
    try:
        lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    lines = [ln for ln in lines if not ln.startswith("svgen:") and not re.match(r"^\[\d+/\d+\] ", ln)]
    errors = [ln for ln in lines if re.search(r"\berror\b", ln, re.IGNORECASE)]
    return " | ".join(errors[:max_lines] if errors else lines[-max_lines:])


def _import_library(module_name: str, library: Path) -> ModuleType:
    """Import an already compiled extension library from its path."""
    spec = importlib.util.spec_from_file_location(module_name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log_beside(folder: Path) -> Path:
    return folder.with_name(folder.name + ".log")


def _find_library(folder: Path, module_name: str) -> Optional[Path]:
    for suffix in [".so", ".pyd"] + list(importlib.machinery.EXTENSION_SUFFIXES):
        candidate = folder / f"{module_name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


class PluginLoader:
    """Builds, caches and remembers plugins; one instance serves the whole process.

    ``build_fn`` and ``fingerprint_fn`` are injectable so the cache and failure logic can be
    tested without a GPU.
    """

    def __init__(self, root: Optional[PathLike] = None, build_fn: Optional[BuildFn] = None,
                 fingerprint_fn: Optional[Callable[[], Dict[str, str]]] = None):
        self._root = None if root is None else Path(root)
        self.build_fn: BuildFn = build_fn or torch_build
        self.fingerprint_fn = fingerprint_fn or toolchain_fingerprint
        self._modules: Dict[str, ModuleType] = {}
        self._failures: Dict[str, str] = {}
        self._warned: set = set()
        self.builds = 0  # number of build attempts, for tests and diagnostics

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else default_build_root()

    def failure(self, name: str) -> Optional[str]:
        """The remembered reason why ``name`` failed to build, or None."""
        return self._failures.get(name)

    def get(self, name: str, sources: Sequence[PathLike], headers: Sequence[PathLike] = (),
            **build_kwargs: Any) -> ModuleType:
        """The loaded plugin ``name``; builds it on first use. Raises PluginBuildError on failure
        (also on every later call, without retrying the build)."""
        module = self._modules.get(name)
        if module is not None:
            return module
        if name in self._failures:
            raise PluginBuildError(self._failures[name])
        try:
            module = self._load_or_build(name, sources, headers, build_kwargs)
        except Exception as exc:  # noqa: BLE001 - any build problem becomes a remembered failure
            reason = self._failure_reason(name, exc, sources, headers, build_kwargs)
            self._failures[name] = reason
            if os.environ.get(ENV_VERBOSE):
                reason += "\n" + traceback.format_exc()
            raise PluginBuildError(reason) from exc
        self._modules[name] = module
        return module

    def _failure_reason(self, name: str, exc: Exception, sources: Sequence[PathLike],
                        headers: Sequence[PathLike], build_kwargs: Dict[str, Any]) -> str:
        """One-line reason for a failed build; the failure is appended to the build log it names."""
        try:
            log = self.build_log(name, sources, headers, **build_kwargs)
        except OSError:  # unreadable sources: no cache key, so a log per plugin name
            log = self.root / name / "build.log"
        lines = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        excerpt = log_excerpt(log)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(f"svgen: build failed: {type(exc).__name__}: {exc}\n")
        except OSError:
            pass  # the message still says why; the log is a convenience
        return (f"building CUDA plugin '{name}' failed: {detail}"
                + (f" [{excerpt}]" if excerpt and excerpt not in detail else "")
                + f" (build log: {log})")

    def try_get(self, name: str, sources: Sequence[PathLike], headers: Sequence[PathLike] = (),
                **build_kwargs: Any) -> Optional[ModuleType]:
        """Like :meth:`get` but returns None on failure, warning once per plugin with the reason."""
        try:
            return self.get(name, sources, headers, **build_kwargs)
        except PluginBuildError as exc:
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(f"{exc}; falling back to the slower reference implementation "
                              f"(set {ENV_MODE}=ref to skip the CUDA plugins)", RuntimeWarning,
                              stacklevel=3)
            return None

    def cache_dir(self, name: str, sources: Sequence[PathLike], headers: Sequence[PathLike] = (),
                  **build_kwargs: Any) -> Tuple[Path, str]:
        """(folder, module name) where plugin ``name`` with these sources is (or will be) cached."""
        fingerprint = self.fingerprint_fn()
        key = cache_key(sources, headers, build_kwargs, fingerprint)
        folder = self.root / name / f"{key[:24]}-{fingerprint.get('arch', 'nogpu')}"
        return folder, f"svgen_{name}_{key[:12]}"

    def build_log(self, name: str, sources: Sequence[PathLike], headers: Sequence[PathLike] = (),
                  **build_kwargs: Any) -> Path:
        """The log of the last build of plugin ``name`` with these sources (beside its cache folder)."""
        folder, _ = self.cache_dir(name, sources, headers, **build_kwargs)
        return _log_beside(folder)

    def _load_or_build(self, name: str, sources: Sequence[PathLike], headers: Sequence[PathLike],
                       build_kwargs: Dict[str, Any]) -> ModuleType:
        sources = [Path(s) for s in sources]
        headers = [Path(h) for h in headers]
        final, module_name = self.cache_dir(name, sources, headers, **build_kwargs)
        base = final.parent
        library = _find_library(final, module_name)
        if library is not None:
            return _import_library(module_name, library)
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f"tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for path in sources + headers:
                shutil.copyfile(path, staging / path.name)
            self.builds += 1
            log = _log_beside(final)
            print(f"svgen: building CUDA plugin '{name}' (first use; cached in {base}; log {log})...",
                  file=sys.stderr, flush=True)
            log.write_text(f"svgen: building CUDA plugin '{name}' as {module_name} in {staging}\n")
            try:
                with _output_to(log):
                    module = self.build_fn(module_name, [staging / s.name for s in sources], staging,
                                           True, **build_kwargs)
            finally:
                if os.environ.get(ENV_VERBOSE):
                    sys.stderr.write(log.read_text(errors="replace"))
            try:
                os.replace(staging, final)  # atomic: the cache folder appears complete or not at all
            except OSError:
                # Another process finished first (keep its folder), or a stale folder without a
                # library is in the way (replace it).
                if _find_library(final, module_name) is None:
                    shutil.rmtree(final, ignore_errors=True)
                    try:
                        os.replace(staging, final)
                    except OSError:
                        pass  # the module is loaded either way; the next process rebuilds
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return module


_DEFAULT_LOADER = PluginLoader()


def default_loader() -> PluginLoader:
    """The process-wide loader used by the ops."""
    return _DEFAULT_LOADER


def get_plugin(name: str, sources: Sequence[PathLike], headers: Sequence[PathLike] = (),
               **build_kwargs: Any) -> ModuleType:
    """Build (once) and return the plugin ``name``; raises PluginBuildError if it cannot be built."""
    return _DEFAULT_LOADER.get(name, sources, headers, **build_kwargs)


def plugin_for(device: Union[torch.device, str], impl: Optional[str], name: str,
               sources: Sequence[PathLike], headers: Sequence[PathLike] = (),
               **build_kwargs: Any) -> Optional[ModuleType]:
    """The plugin an op on ``device`` should use, or None for the reference path.

    Never builds for CPU tensors or when the reference path is forced; raises PluginBuildError
    when CUDA is required (``impl="cuda"`` / ``SVGEN_OPS=cuda``) and the build failed.
    """
    path = choose_impl(device, impl)
    if path == "ref":
        return None
    if path == "cuda":
        return _DEFAULT_LOADER.get(name, sources, headers, **build_kwargs)
    return _DEFAULT_LOADER.try_get(name, sources, headers, **build_kwargs)

