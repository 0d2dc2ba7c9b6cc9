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
- ``SVGEN_OPS_VERBOSE=1``: show the ninja/nvcc command lines while building.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import traceback
import uuid
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from svgen.utils.errors import SvgenError

ENV_MODE = "SVGEN_OPS"
ENV_BUILD_DIR = "SVGEN_OPS_BUILD_DIR"
ENV_VERBOSE = "SVGEN_OPS_VERBOSE"
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


# -- building ----------------------------------------------------------------------------------

def torch_build(module_name: str, sources: Sequence[Path], build_dir: Path, verbose: bool,
                **build_kwargs: Any) -> ModuleType:
    """Compile and import with ``torch.utils.cpp_extension.load`` (ninja) inside ``build_dir``."""
    from torch.utils import cpp_extension  # imported lazily: it is slow and only needed here

    kwargs = dict(build_kwargs)
    kwargs.setdefault("extra_cflags", ["-O3"])
    kwargs.setdefault("extra_cuda_cflags", ["-O3"])
    return cpp_extension.load(name=module_name, sources=[str(s) for s in sources],
                              build_directory=str(build_dir), verbose=verbose, **kwargs)


def _import_library(module_name: str, library: Path) -> ModuleType:
    """Import an already compiled extension library from its path."""
    spec = importlib.util.spec_from_file_location(module_name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            reason = f"building CUDA plugin '{name}' failed: {type(exc).__name__}: {exc}"
            self._failures[name] = reason
            if os.environ.get(ENV_VERBOSE):
                reason += "\n" + traceback.format_exc()
            raise PluginBuildError(reason) from exc
        self._modules[name] = module
        return module

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
            print(f"svgen: building CUDA plugin '{name}' (first use; cached in {base})...",
                  file=sys.stderr, flush=True)
            module = self.build_fn(module_name, [staging / s.name for s in sources], staging,
                                   bool(os.environ.get(ENV_VERBOSE)), **build_kwargs)
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

