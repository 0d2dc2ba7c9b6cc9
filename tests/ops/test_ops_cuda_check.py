"""The CUDA build check (``make cuda-check``) and the GPU check (``make gpu-check``), on CPU.

The real nvcc build runs in ``make cuda-check`` (CI), not here: these tests cover the pieces that
decide its verdict -- architecture parsing, toolkit discovery, refusals, warning detection, the
argument lists the wrappers pass to the bindings -- and the GPU check's CPU-side pieces.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from svgen.ops import cuda_check, plugin

REPO = Path(__file__).resolve().parents[2]

# -- canned build logs ---------------------------------------------------------------------------
NVCC_CMD = ("[1/3] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -DTORCH_EXTENSION_NAME=x "
            "-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_86,code=sm_86 "
            "-gencode=arch=compute_90,code=sm_90 -Wno-deprecated-gpu-targets --compiler-options '-fPIC' "
            "-O3 -c bias_act.cu -o bias_act.cuda.o")
CLEAN_LOG = "\n".join([
    "svgen: building CUDA plugin 'bias_act' as svgen_bias_act_0123 in /tmp/x",
    NVCC_CMD,
    "[2/3] c++ -MMD -MF bias_act.o.d -Wno-unused-result -fPIC -O3 -c bias_act.cpp -o bias_act.o",
    "[3/3] c++ bias_act.o bias_act.cuda.o -shared -L/usr/local/cuda/lib64 -lcudart -o x.so",
])
WARNINGS = [
    "bias_act.cpp:31:13: warning: unused variable 'n' [-Wunused-variable]",
    'bias_act.cu(57): warning #177-D: variable "k" was declared but never referenced',
    "nvcc warning : incompatible redefinition for option 'compiler-bindir', the last value of this option was used",
    "ptxas warning : Registers are spilled to local memory in function '_Z6kernelPf', 8 bytes spill stores",
    "/usr/bin/ld: warning: x.o: missing .note.GNU-stack section implies executable stack",
]


def test_clean_log_has_no_warnings_and_all_archs():
    assert cuda_check.compiler_warnings(CLEAN_LOG) == []
    assert cuda_check.missing_archs(CLEAN_LOG, ["8.0", "8.6", "9.0+PTX"]) == []
    assert cuda_check.missing_archs(CLEAN_LOG, ["8.0", "8.9", "10.0"]) == ["8.9", "10.0"]
    assert cuda_check.arch_code("9.0a+PTX") == "sm_90a" and cuda_check.arch_code("Hopper+PTX") is None
    assert cuda_check.missing_archs(CLEAN_LOG, ["Ampere", "8.9"]) == ["8.9"]


@pytest.mark.parametrize("line", WARNINGS)
def test_each_kind_of_compiler_warning_is_found(line):
    log = CLEAN_LOG.replace("[2/3]", line + "\n[2/3]")
    assert cuda_check.compiler_warnings(log) == [line]


# -- architectures and toolkit -------------------------------------------------------------------

def test_parse_arch_list():
    assert plugin.parse_arch_list("8.0;8.6;9.0") == ["8.0", "8.6", "9.0"]
    assert plugin.parse_arch_list(" 8.0 8.6+PTX;9.0a ") == ["8.0", "8.6+PTX", "9.0a"]
    assert plugin.parse_arch_list("Ampere;Hopper+PTX") == ["Ampere", "Hopper+PTX"]
    assert plugin.parse_arch_list("") == [] and plugin.parse_arch_list("native") == []
    for bad in ("sm_80", "8.0;86", "8.0;Amper", "8.0+ptx"):
        with pytest.raises(plugin.PluginBuildError, match="is not a CUDA architecture"):
            plugin.parse_arch_list(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a visible GPU determines the architecture")
def test_no_architecture_without_gpu_or_list_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    with pytest.raises(plugin.PluginBuildError, match="no GPU is visible and TORCH_CUDA_ARCH_LIST is unset"):
        plugin.cuda_arch_list()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    assert plugin.cuda_arch_list() == ["8.0", "9.0"]


def test_cuda_home_prefers_env_then_a_default_with_nvcc(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    assert plugin.cuda_home(tmp_path) is None                                  # no bin/nvcc there
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("#!/bin/sh\n")
    assert plugin.cuda_home(tmp_path) == tmp_path
    monkeypatch.setenv("CUDA_PATH", "/opt/cuda-path")
    assert plugin.cuda_home(tmp_path) == Path("/opt/cuda-path")
    monkeypatch.setenv("CUDA_HOME", "/opt/cuda-home")
    assert plugin.cuda_home(tmp_path) == Path("/opt/cuda-home")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a visible GPU determines the architecture")
def test_cuda_build_without_toolkit_or_architecture_fails_with_log_path(tmp_path, monkeypatch):
    """torch_build's own checks run inside the loader: the message names the reason and the log."""
    from svgen.ops import bias_act

    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    toolkit = tmp_path / "toolkit"
    for home, reason in [(tmp_path / "none", "none has no bin/nvcc"),
                         (toolkit, "no GPU is visible and TORCH_CUDA_ARCH_LIST is unset")]:
        monkeypatch.setenv("CUDA_HOME", str(home))
        (toolkit / "bin").mkdir(parents=True, exist_ok=True)
        (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\nexit 1\n")
        loader = plugin.PluginLoader(root=tmp_path / "cache")
        with pytest.raises(plugin.PluginBuildError) as err:
            loader.get("bias_act", bias_act.SOURCES, bias_act.HEADERS)
        log = loader.build_log("bias_act", bias_act.SOURCES, bias_act.HEADERS)
        assert reason in str(err.value) and str(err.value).endswith(f"(build log: {log})")
        assert reason in log.read_text().splitlines()[-1]


def test_preflight_refusals(tmp_path):
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\n")
    assert cuda_check.preflight("13.0", toolkit, "8.0;8.6;9.0") == []
    problems = cuda_check.preflight(None, None, "")
    assert len(problems) == 3
    assert "CPU build" in problems[0] and "bin/nvcc" in problems[1] and "empty" in problems[2]
    assert "is not a CUDA architecture" in cuda_check.preflight("13.0", toolkit, "sm_90")[0]


def test_cuda_check_refuses_cpu_torch_in_one_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "svgen.ops.cuda_check", "--build-dir", str(tmp_path / "b")],
                         capture_output=True, text=True, env=env, timeout=300)
    if torch.version.cuda:
        pytest.skip("this torch is a CUDA build: the refusal does not apply")
    assert out.returncode == 2
    assert out.stderr.startswith("cuda-check: cannot run: torch ") and "CPU build" in out.stderr
    assert not (tmp_path / "b").exists()


# -- the argument lists the wrappers pass ----------------------------------------------------------

def test_bindings_read_from_the_sources():
    bindings = cuda_check.plugin_bindings()
    assert [(t, n) for t, n in bindings["bias_act"]["bias_act"].params] == [
        ("torch::Tensor", "x"), ("torch::Tensor", "b"), ("torch::Tensor", "dy"), ("int64_t", "act"),
        ("int64_t", "grad"), ("double", "alpha"), ("double", "gain"), ("double", "clamp"), ("int64_t", "dim")]
    assert [n for _, n in bindings["upfirdn2d"]["upfirdn2d"].params] == [
        "x", "f", "upx", "upy", "downx", "downy", "padx0", "padx1", "pady0", "pady1", "gain"]


def test_wrapper_argument_lists_match_the_cpp_declarations():
    """Every wrapper CUDA path, run with CPU tensors, calls its binding once with arguments that
    pybind11 would accept for the C++ declaration; every binding is reached."""
    problems, calls = cuda_check.call_through_wrappers({"bias_act": None, "upfirdn2d": None})
    assert problems == []
    assert len(calls) == 2 * len(cuda_check.wrapper_calls())
    grads = sorted({args[4] for plugin_name, _, args in calls if plugin_name == "bias_act"})
    assert grads == [0, 1, 2]                                                # f, f', f''


def test_argument_mismatches_are_found():
    binding = cuda_check.plugin_bindings()["upfirdn2d"]["upfirdn2d"]
    x, f = torch.zeros(1, 1, 4, 4), torch.ones(1, 1)
    good = [x, f, 1, 1, 1, 1, 0, 0, 0, 0, 1.0]
    assert cuda_check.argument_problem(binding, good) is None
    assert "takes 11 arguments" in cuda_check.argument_problem(binding, good[:-1])
    assert "parameter padx0 is int64_t, the wrapper passes float" in cuda_check.argument_problem(
        binding, good[:6] + [0.0] + good[7:])
    assert "parameter f is torch::Tensor" in cuda_check.argument_problem(binding, [x, [1.0]] + good[2:])
    assert "parameter upx is int64_t, the wrapper passes bool" in cuda_check.argument_problem(
        binding, [x, f, True] + good[3:])


def test_a_wrapper_that_passes_the_wrong_arguments_is_reported(monkeypatch):
    from svgen.ops import bias_act

    def swapped(cfg, x, b, dy, grad):                                        # alpha and act swapped
        dy = x.new_empty([0]) if dy is None else dy
        return cfg.plugin.bias_act(x, b, dy, cfg.alpha, grad, cfg.act_id, cfg.gain, cfg.clamp, cfg.dim)

    monkeypatch.setattr(bias_act, "_kernel", swapped)
    problems, _ = cuda_check.call_through_wrappers({"bias_act": None, "upfirdn2d": None}, [torch.float32])
    assert problems and all("parameter act is int64_t, the wrapper passes float" in p for p in problems)


# -- the GPU check's CPU-side pieces ---------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py as a module (registered while in use: it defines dataclasses)."""
    spec = importlib.util.spec_from_file_location("svgen_gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_gpu_check_refuses_without_gpu_and_writes_nothing(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "g.json")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no CUDA device visible" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_gpu_check_parity_machinery(gpu_check):
    g = gpu_check
    a = torch.tensor([1.0, -2.0, 4.0])
    assert g.relative_error(a, a) == 0
    assert g.relative_error(a + torch.tensor([0.0, 0.0, 0.01]), a) == pytest.approx(0.01 / 4, rel=1e-4)
    with pytest.raises(ValueError, match="shapes differ"):
        g.relative_error(a, a[:2])
    y_grads = g.forward_backward(lambda x, b: x * 3, [a, a])                 # b unused: no gradient
    assert len(y_grads) == 2 and torch.equal(y_grads[1].abs() > 0, torch.ones(3, dtype=torch.bool))
    # On CPU both paths are the reference: every case runs forward and backward, with no error.
    table = g.parity(torch.device("cpu"), torch.float32)
    assert {"bias_act_swish", "upsample2d", "conv2d_resample_down", "modulated_conv_fused_up"} <= set(table)
    assert all(v == {"fwd": 0.0, "bwd": 0.0, "ok": True} for v in table.values())


def test_gpu_check_summaries(gpu_check):
    g = gpu_check
    assert g.pytest_counts("....\n3 passed, 1 failed, 400 deselected in 12.0s\n") == {
        "passed": 3, "failed": 1, "skipped": 0, "errors": 0, "deselected": 400}
    assert g.pytest_counts("no tests ran in 0.1s")["passed"] == 0
    fig = {"gpu": "H100", "gpu_tests": {"passed": 5, "failed": 0, "skipped": 1, "seconds": 40.0},
           "parity": {"float16": {"upsample2d": {"fwd": 1e-3, "bwd": 2e-2, "ok": False},
                                  "bias_act_relu": {"fwd": 0.0, "bwd": 0.0, "ok": True}}},
           "generator_256": {"batch": 8, "cuda_ms": 40.0, "ref_ms": 60.0, "speedup": 1.5},
           "train_step_paper256": {"error": "exit 1: out of memory"}}
    rows = g.readme_rows(fig)
    assert len(rows) == 3 and all(r.startswith("| ") and r.endswith(" |") for r in rows)
    assert "worst upsample2d" in rows[1] and "outside: upsample2d" in rows[1]
    assert "1.50x (target >= 2x not met)" in rows[2]
    json.dumps(fig)
