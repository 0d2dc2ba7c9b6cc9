"""Compile, import and call svgen's CUDA plugins on a machine without a GPU (``make cuda-check``).

Run by CI with the CUDA build of torch (``.venv-cuda``) so that a kernel that stops compiling
fails CI, although no GPU ever runs there:

1. both plugins are built through the project's :class:`~svgen.ops.plugin.PluginLoader`, in a fresh
   folder, for every architecture of ``TORCH_CUDA_ARCH_LIST`` (default ``8.0;8.6;9.0``); a compiler
   error, a compiler warning or an architecture missing from the nvcc command lines fails;
2. each library is imported, then imported again from the cache by a second process, as a later
   run would;
3. every binding is called through the Python wrappers' own CUDA code paths, with CPU tensors:
   each call's arguments must match the binding's C++ declaration, and the binding must refuse
   with its "x must be a CUDA tensor" check (the first thing a real call on a GPU passes).

Exit status 0 when all of this holds; otherwise one line per problem and 1 (2 when the check
cannot start: CPU torch, no toolkit, no architecture).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from svgen.ops import bias_act, plugin, upfirdn2d

DEFAULT_ARCHS = "8.0;8.6;9.0"
PLUGINS: Dict[str, ModuleType] = {"bias_act": bias_act, "upfirdn2d": upfirdn2d}
REFUSAL = "x must be a CUDA tensor"

# gcc/ld "warning:", nvcc/cudafe "warning #177-D:", "nvcc warning :", "ptxas warning :"
_WARNING_RE = re.compile(r"\bwarning\b(\s*#\d+(-D)?)?\s*:", re.IGNORECASE)
_NINJA_STEP_RE = re.compile(r"^\[\d+/\d+\]\s")


# -- reading logs and sources ------------------------------------------------------------------

def compiler_warnings(log_text: str) -> List[str]:
    """The warning lines of a build log (ninja's echoed command lines are not warnings)."""
    return [ln.strip() for ln in log_text.splitlines()
            if _WARNING_RE.search(ln) and not _NINJA_STEP_RE.match(ln)]


def arch_code(arch: str) -> Optional[str]:
    """``sm_XY`` code nvcc builds for a numeric arch list entry (``8.6`` -> ``sm_86``, ``9.0a+PTX`` ->
    ``sm_90a``); None for a named one (``Ampere``), which torch expands itself."""
    number = arch.split("+")[0]
    if "." not in number:
        return None
    major, minor = number.split(".")
    return f"sm_{major}{minor}"


def missing_archs(log_text: str, archs: Sequence[str]) -> List[str]:
    """Numeric entries of ``archs`` for which no nvcc command line of the log has ``code=sm_XY``."""
    return [a for a in archs
            if arch_code(a) is not None and not re.search(rf"code={arch_code(a)}\b", log_text)]


@dataclass(frozen=True)
class Binding:
    """One pybind11 function of a plugin: its name and its C++ parameters (type, name)."""
    plugin: str
    name: str
    params: Tuple[Tuple[str, str], ...]


_TENSOR_TYPES = {"torch::Tensor", "at::Tensor", "const torch::Tensor&", "const at::Tensor&"}
_INT_TYPES = {"int64_t", "int", "long"}
_FLOAT_TYPES = {"double", "float"}


def read_bindings(cpp: Path, plugin_name: str) -> Dict[str, Binding]:
    """The functions a plugin's ``.cpp`` exports with ``m.def("name", &func, ...)``, by name."""
    text = cpp.read_text()
    bindings = {}
    for py_name, func in re.findall(r'm\.def\(\s*"(\w+)"\s*,\s*&(\w+)', text):
        match = re.search(rf"\b{func}\s*\(([^)]*)\)\s*\{{", text)
        if match is None:
            raise ValueError(f"{cpp}: no definition of {func} (bound as {py_name})")
        params = []
        for part in match.group(1).split(","):
            tokens = part.strip().rsplit(None, 1)
            if len(tokens) != 2:
                raise ValueError(f"{cpp}: cannot read parameter {part.strip()!r} of {func}")
            params.append((" ".join(tokens[0].split()), tokens[1].lstrip("&*")))
        bindings[py_name] = Binding(plugin_name, py_name, tuple(params))
    if not bindings:
        raise ValueError(f"{cpp}: no m.def(...) binding found")
    return bindings


def argument_problem(binding: Binding, args: Sequence[Any]) -> Optional[str]:
    """Why ``args`` do not fit the binding's C++ parameters (as pybind11 converts them), or None."""
    if len(args) != len(binding.params):
        return (f"{binding.name} takes {len(binding.params)} arguments "
                f"({', '.join(n for _, n in binding.params)}), the wrapper passes {len(args)}")
    for (ctype, name), value in zip(binding.params, args):
        if ctype in _TENSOR_TYPES:
            ok = isinstance(value, torch.Tensor)
        elif ctype in _INT_TYPES:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif ctype in _FLOAT_TYPES:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif ctype == "bool":
            ok = isinstance(value, bool)
        else:
            return f"{binding.name}: parameter {name} has a C++ type this check does not know: {ctype}"
        if not ok:
            return f"{binding.name}: parameter {name} is {ctype}, the wrapper passes {type(value).__name__}"
    return None


# -- calling the bindings through the wrappers -------------------------------------------------

class BindingArgumentError(TypeError):
    """A wrapper called a binding with arguments that do not fit its C++ declaration."""


class ArgumentsRecorded(Exception):
    """Raised by a :class:`CheckedPlugin` without a compiled module once a call is recorded."""


class CheckedPlugin:
    """Stands in a wrapper's ``plugin`` slot: each binding call is checked against the C++
    declaration and recorded, then passed on to the compiled ``module`` (when there is one; without
    it the call stops after recording, which is how the argument lists are tested on CPU).
    """

    def __init__(self, bindings: Dict[str, Binding], module: Optional[ModuleType] = None):
        self._bindings = bindings
        self._module = module
        self.calls: List[Tuple[str, Tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name not in self._bindings:
            raise AttributeError(f"the plugin has no binding {name!r}")
        binding = self._bindings[name]

        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            problem = argument_problem(binding, args)
            if problem is not None:
                raise BindingArgumentError(problem)
            if self._module is None:
                raise ArgumentsRecorded(name)
            return getattr(self._module, name)(*args)

        return call


@dataclass(frozen=True)
class WrapperCall:
    """One CUDA code path of a wrapper, run with a given plugin on small CPU tensors."""
    plugin: str
    label: str
    run: Callable[[Any, torch.dtype], Any]


def _bias_act_fwd(p: Any, dtype: torch.dtype, act: str, with_bias: bool) -> Any:
    x = torch.randn(2, 3, 4, 4, dtype=dtype)
    spec, alpha, gain, clamp = bias_act._resolve(act, None, None, 256.0)
    b = torch.randn(3, dtype=dtype) if with_bias else None
    return bias_act._bias_act_cuda(p, x, b, 1, spec, alpha, gain, clamp)


def _bias_act_grad(p: Any, dtype: torch.dtype, order: int) -> Any:
    x = torch.randn(2, 3, 4, 4, dtype=dtype)
    spec, alpha, gain, clamp = bias_act._resolve("swish", None, None, None)
    cfg = bias_act._cuda_cfg(p, 1, spec, alpha, gain, clamp)
    b, dy = torch.randn(3, dtype=dtype), torch.randn_like(x)
    if order == 1:
        return bias_act._BiasActCudaGrad.apply(dy, x, b, cfg)
    return bias_act._kernel(cfg, x, b, dy, grad=2)


def _upfirdn2d(p: Any, dtype: torch.dtype, taps: List[int], up: int, down: int,
               pad: Tuple[int, int, int, int]) -> Any:
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    f = upfirdn2d.setup_filter(taps)
    return upfirdn2d._upfirdn2d_cuda(p, x, f, (up, up), (down, down), pad, False, float(up * up))


def _upfirdn2d_adjoint(p: Any, dtype: torch.dtype) -> Any:
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    cfg = upfirdn2d._Cfg(p, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)
    back = upfirdn2d._adjoint_cfg(cfg, (8, 8), (16, 16), (4, 4))
    return upfirdn2d._UpFirDn2dCuda.apply(torch.randn(2, 3, 16, 16, dtype=dtype), f, back)


def wrapper_calls() -> List[WrapperCall]:
    """Every way the wrappers call a binding: forward, first and second derivative of bias_act;
    2-D and separable upfirdn2d, up and down, and the adjoint its backward pass runs."""
    return [
        WrapperCall("bias_act", "forward lrelu+bias+clamp", lambda p, d: _bias_act_fwd(p, d, "lrelu", True)),
        WrapperCall("bias_act", "forward linear, no bias", lambda p, d: _bias_act_fwd(p, d, "linear", False)),
        WrapperCall("bias_act", "first derivative", lambda p, d: _bias_act_grad(p, d, 1)),
        WrapperCall("bias_act", "second derivative", lambda p, d: _bias_act_grad(p, d, 2)),
        WrapperCall("upfirdn2d", "2-D filter, up 2", lambda p, d: _upfirdn2d(p, d, [1, 3, 3, 1], 2, 1, (2, 1, 2, 1))),
        WrapperCall("upfirdn2d", "separable filter, down 2",
                    lambda p, d: _upfirdn2d(p, d, [1, 2, 3, 4, 4, 3, 2, 1], 1, 2, (3, 3, 3, 3))),
        WrapperCall("upfirdn2d", "adjoint (backward)", _upfirdn2d_adjoint),
    ]


def plugin_bindings() -> Dict[str, Dict[str, Binding]]:
    """The bindings of every plugin, read from its ``.cpp`` source."""
    return {name: read_bindings(next(s for s in op.SOURCES if s.suffix == ".cpp"), name)
            for name, op in PLUGINS.items()}


def call_through_wrappers(modules: Dict[str, Optional[ModuleType]],
                          dtypes: Sequence[torch.dtype] = (torch.float32, torch.float16)
                          ) -> Tuple[List[str], List[Tuple[str, str, Tuple[Any, ...]]]]:
    """Run every :func:`wrapper_calls` path with CPU tensors against ``modules`` (a compiled plugin
    per name, or None to only check and record the arguments).

    Returns (problems, calls as (plugin, binding, args)). With a compiled plugin each path must
    end in the binding's refusal of CPU tensors; without one, in :class:`ArgumentsRecorded`.
    """
    bindings = plugin_bindings()
    problems: List[str] = []
    calls: List[Tuple[str, str, Tuple[Any, ...]]] = []
    for dtype in dtypes:
        for case in wrapper_calls():
            module = modules.get(case.plugin)
            checked = CheckedPlugin(bindings[case.plugin], module)
            where = f"{case.plugin} {case.label} ({str(dtype).replace('torch.', '')})"
            try:
                case.run(checked, dtype)
                problems.append(f"{where}: the binding accepted CPU tensors")
            except BindingArgumentError as exc:
                problems.append(f"{where}: {exc}")
            except ArgumentsRecorded:
                pass
            except (RuntimeError, TypeError) as exc:
                binding = checked.calls[-1][0] if checked.calls else case.plugin
                if module is None or f"{binding}: {REFUSAL}" not in str(exc):
                    first = (str(exc).strip().splitlines() or [""])[0]
                    problems.append(f"{where}: expected the refusal '{binding}: {REFUSAL}', got "
                                    f"{type(exc).__name__}: {first}")
            if len(checked.calls) != 1:
                problems.append(f"{where}: {len(checked.calls)} binding calls, expected 1")
            calls.extend((case.plugin, name, args) for name, args in checked.calls)
    called = {(p, n) for p, n, _ in calls}
    for name, table in bindings.items():
        problems.extend(f"{name}.{b}: no wrapper path calls this binding"
                        for b in table if (name, b) not in called)
    return problems, calls


# -- the check ---------------------------------------------------------------------------------

def preflight(torch_cuda: Optional[str], home: Optional[Path], arch_text: str) -> List[str]:
    """Reasons the check cannot run at all: CPU torch, no toolkit, no valid architecture list."""
    problems = []
    if not torch_cuda:
        problems.append(f"torch {torch.__version__} is a CPU build: run the check with the CUDA build "
                        "(make cuda-check installs it into .venv-cuda)")
    if home is None or not (home / "bin" / "nvcc").is_file():
        problems.append(f"no CUDA toolkit: {'CUDA_HOME is unset and /usr/local/cuda' if home is None else home}"
                        " has no bin/nvcc (set CUDA_HOME)")
    try:
        if not plugin.parse_arch_list(arch_text):
            problems.append(f"{plugin.ENV_ARCH_LIST} is empty: without a GPU the architectures must be named")
    except plugin.PluginBuildError as exc:
        problems.append(str(exc))
    return problems


@dataclass
class BuildResult:
    """What building one plugin gave: its module, log, seconds, and the problems found."""
    name: str
    module: Optional[ModuleType] = None
    log: Optional[Path] = None
    seconds: float = 0.0
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def build_plugin(loader: plugin.PluginLoader, name: str, archs: Sequence[str]) -> BuildResult:
    """Build one plugin with ``loader``; compiler errors, warnings and missing archs are problems."""
    op = PLUGINS[name]
    result = BuildResult(name, log=loader.build_log(name, op.SOURCES, op.HEADERS))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result.module = loader.get(name, op.SOURCES, op.HEADERS)
        except plugin.PluginBuildError as exc:
            result.problems.append(str(exc))
    result.seconds = time.perf_counter() - start
    result.notes = [f"{w.category.__name__}: {w.message}" for w in caught]
    text = result.log.read_text(errors="replace") if result.log.is_file() else ""
    result.problems += [f"{name}: compiler warning: {w}" for w in compiler_warnings(text)]
    if result.module is not None:
        result.problems += [f"{name}: no code built for {a} (no code={arch_code(a)} in the log)"
                            for a in missing_archs(text, archs)]
    return result


_CACHED_IMPORT = """
import sys
from svgen.ops import plugin
from svgen.ops.cuda_check import PLUGINS
def refuse(*args, **kwargs):
    raise RuntimeError("the cached plugin was not found: a rebuild was attempted")
loader = plugin.PluginLoader(root=sys.argv[1], build_fn=refuse)
for name, op in PLUGINS.items():
    assert callable(getattr(loader.get(name, op.SOURCES, op.HEADERS), name)), name
"""


def import_from_cache(root: Path) -> Optional[str]:
    """Import every plugin from ``root`` in a fresh process without building; the error or None."""
    out = subprocess.run([sys.executable, "-c", _CACHED_IMPORT, str(root)], capture_output=True,
                         text=True, timeout=300)
    if out.returncode == 0:
        return None
    lines = out.stderr.strip().splitlines()
    return f"importing the cached plugins in a new process failed: {lines[-1] if lines else out.returncode}"


def run_check(archs: Sequence[str], root: Path, report: Callable[[str], None]) -> List[str]:
    """Build, import and call both plugins under ``root``; the problems found (empty: passed)."""
    loader = plugin.PluginLoader(root=root)
    problems: List[str] = []
    modules: Dict[str, Optional[ModuleType]] = {}
    for name in PLUGINS:
        result = build_plugin(loader, name, archs)
        status = "built" if result.module is not None else "FAILED"
        report(f"{name}: {status} in {result.seconds:.0f} s for {';'.join(archs)} (log {result.log})")
        for note in result.notes:
            report(f"{name}: note: {note}")
        problems += result.problems
        modules[name] = result.module
    if any(m is None for m in modules.values()):
        return problems
    cached = import_from_cache(root)
    if cached is not None:
        problems.append(cached)
    else:
        report("both plugins import from the cache in a new process without a rebuild")
    call_problems, calls = call_through_wrappers(modules)
    problems += call_problems
    if not call_problems:
        report(f"{len(calls)} binding calls through the wrappers' CUDA paths: arguments match the C++ "
               f"declarations and each refused CPU tensors with '{REFUSAL}'")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``python -m svgen.ops.cuda_check [--arch-list 8.0;8.6;9.0] [--keep DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m svgen.ops.cuda_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch-list", default=os.environ.get(plugin.ENV_ARCH_LIST) or DEFAULT_ARCHS,
                        help=f"architectures to build for (default ${plugin.ENV_ARCH_LIST} or {DEFAULT_ARCHS})")
    parser.add_argument("--build-dir", default=None,
                        help="build here and keep the result (default: a temporary folder, removed "
                             "when the check passes)")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def report(line: str) -> None:
        print(f"cuda-check: {line}", flush=True)

    setup = preflight(torch.version.cuda, plugin.cuda_home(), args.arch_list)
    if setup:
        for line in setup:
            print(f"cuda-check: cannot run: {line}", file=sys.stderr)
        return 2
    archs = plugin.parse_arch_list(args.arch_list)
    os.environ[plugin.ENV_ARCH_LIST] = ";".join(archs)  # what the loader and torch build for
    report(f"torch {torch.__version__} (CUDA {torch.version.cuda}), toolkit {plugin.cuda_home()}")
    root = Path(args.build_dir) if args.build_dir else Path(tempfile.mkdtemp(prefix="svgen-cuda-check-"))
    problems = run_check(archs, root, report)
    if args.build_dir is None and not problems:
        shutil.rmtree(root, ignore_errors=True)
    elif problems:
        report(f"builds and logs kept in {root}")
    for line in problems:
        print(f"cuda-check: FAIL: {line}", file=sys.stderr)
    report(f"{'passed' if not problems else f'{len(problems)} problem(s)'} in "
           f"{time.perf_counter() - start:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
