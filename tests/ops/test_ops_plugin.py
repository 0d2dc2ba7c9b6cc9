"""The plugin loader and the ref/CUDA dispatch, exercised without a GPU."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch

from svgen.ops import bias_act, conv2d_resample, modulated_conv, plugin, upfirdn2d
from svgen.utils.errors import SvgenError

FP = {"torch": "2.13.0", "cuda": "12.8", "arch": "sm_90", "python": "3.11", "arch_list": ""}

HELLO_C = textwrap.dedent("""
    #include <Python.h>
    #define CAT_(a, b) a##b
    #define CAT(a, b) CAT_(a, b)
    static PyObject* answer(PyObject* self, PyObject* args) { return PyLong_FromLong(ANSWER); }
    static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
    static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, STR(MODNAME), NULL, -1, methods};
    PyMODINIT_FUNC CAT(PyInit_, MODNAME)(void) { return PyModule_Create(&def); }
""")


def _gcc_build(module_name, sources, build_dir, verbose, **kwargs):
    """A real (non-torch) extension build: compile the C file and import the library."""
    library = Path(build_dir) / f"{module_name}.so"
    answer = open(sources[0]).read().split("// ANSWER=")[1].split()[0]
    subprocess.run(["gcc", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    f"-DMODNAME={module_name}", f"-DANSWER={answer}", "-DSTR(x)=STR_(x)",
                    "-DSTR_(x)=#x", str(sources[0]), "-o", str(library)],
                   check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location(module_name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_hello(folder: Path, answer: int) -> Path:
    src = folder / "hello.c"
    src.write_text(f"// ANSWER={answer}\n" + HELLO_C)
    return src


# -- cache key ---------------------------------------------------------------------------------

def test_cache_key_tracks_sources_headers_options_and_toolchain(tmp_path):
    src = tmp_path / "op.cu"
    hdr = tmp_path / "op.h"
    src.write_text("__global__ void k() {}\n")
    hdr.write_text("#pragma once\n")
    key = plugin.cache_key([src], [hdr], {}, FP)
    assert key == plugin.cache_key([src], [hdr], {}, dict(FP))                 # deterministic
    src.write_text("__global__ void k() { }\n")
    assert plugin.cache_key([src], [hdr], {}, FP) != key                       # source edit
    key = plugin.cache_key([src], [hdr], {}, FP)
    hdr.write_text("#pragma once\n#define X 1\n")
    assert plugin.cache_key([src], [hdr], {}, FP) != key                       # header edit
    key = plugin.cache_key([src], [hdr], {}, FP)
    for field, value in [("torch", "2.14.0"), ("cuda", "13.0"), ("arch", "sm_80")]:
        assert plugin.cache_key([src], [hdr], {}, {**FP, field: value}) != key
    assert plugin.cache_key([src], [hdr], {"extra_cuda_cflags": ["-G"]}, FP) != key


def test_real_sources_exist_and_are_packaged():
    for path in bias_act.SOURCES + bias_act.HEADERS + upfirdn2d.SOURCES + upfirdn2d.HEADERS:
        assert path.is_file(), path
    assert "PYBIND11_MODULE" in (plugin.CSRC / "bias_act.cpp").read_text()
    assert "__global__" in (plugin.CSRC / "upfirdn2d.cu").read_text()


# -- build, cache, atomic move, failure memory --------------------------------------------------

@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_build_is_cached_moved_into_place_and_reused(tmp_path):
    src = _write_hello(tmp_path, 42)
    root = tmp_path / "cache"
    loader = plugin.PluginLoader(root=root, build_fn=_gcc_build, fingerprint_fn=lambda: FP)
    module = loader.get("hello", [src])
    assert module.answer() == 42 and loader.builds == 1
    assert loader.get("hello", [src]) is module and loader.builds == 1        # in-process cache
    folder, _ = loader.cache_dir("hello", [src])
    assert folder.is_dir() and folder.name.endswith("-sm_90")
    assert sorted(p.name for p in (root / "hello").iterdir()) == [folder.name, folder.name + ".log"]
    assert loader.build_log("hello", [src]) == folder.with_name(folder.name + ".log")  # no staging

    def must_not_build(*args, **kwargs):
        raise AssertionError("a cached plugin was rebuilt")

    # A new process (new loader) imports the cached library without building.
    fresh = plugin.PluginLoader(root=root, build_fn=must_not_build, fingerprint_fn=lambda: FP)
    assert fresh.get("hello", [src]).answer() == 42 and fresh.builds == 0

    # Editing the source gives a new cache folder and a rebuild.
    _write_hello(tmp_path, 43)
    edited = plugin.PluginLoader(root=root, build_fn=_gcc_build, fingerprint_fn=lambda: FP)
    assert edited.get("hello", [src]).answer() == 43 and edited.builds == 1
    assert len([p for p in (root / "hello").iterdir() if p.is_dir()]) == 2


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_stale_cache_folder_without_library_is_replaced(tmp_path):
    src = _write_hello(tmp_path, 7)
    loader = plugin.PluginLoader(root=tmp_path / "cache", build_fn=_gcc_build,
                                 fingerprint_fn=lambda: FP)
    folder, _ = loader.cache_dir("hello", [src])
    folder.mkdir(parents=True)
    (folder / "leftover.txt").write_text("half a build")
    assert loader.get("hello", [src]).answer() == 7
    assert not (folder / "leftover.txt").exists()
    assert [p.name for p in folder.parent.iterdir() if p.is_dir()] == [folder.name]


def test_failed_build_is_remembered_and_warned_once(tmp_path, recwarn):
    calls = []

    def failing_build(module_name, sources, build_dir, verbose, **kwargs):
        calls.append(module_name)
        raise RuntimeError("nvcc fatal: unsupported gpu architecture 'compute_999'")

    src = tmp_path / "op.cu"
    src.write_text("// nothing\n")
    loader = plugin.PluginLoader(root=tmp_path / "cache", build_fn=failing_build,
                                 fingerprint_fn=lambda: FP)
    for _ in range(5):
        assert loader.try_get("op", [src]) is None
    assert len(calls) == 1 and loader.builds == 1
    warned = [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert len(warned) == 1
    assert "unsupported gpu architecture" in str(warned[0].message)
    assert "reference implementation" in str(warned[0].message)
    with pytest.raises(plugin.PluginBuildError, match="compute_999"):
        loader.get("op", [src])                                               # forced: raises
    assert len(calls) == 1
    log = loader.build_log("op", [src])
    assert [p.name for p in (tmp_path / "cache" / "op").iterdir()] == [log.name]  # staging removed
    assert f"(build log: {log})" in loader.failure("op")
    assert "compute_999" in log.read_text()


def test_real_torch_build_failure_reports_compiler_error(tmp_path, recwarn):
    """The real cpp_extension/ninja path on a source that does not compile."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("needs a C++ compiler")
    src = tmp_path / "broken.cpp"
    src.write_text("#error deliberately broken source\n")
    loader = plugin.PluginLoader(root=tmp_path / "cache")
    assert loader.try_get("broken", [src]) is None
    assert loader.try_get("broken", [src]) is None
    assert loader.builds == 1
    assert "deliberately broken source" in loader.failure("broken")
    assert len([w for w in recwarn if issubclass(w.category, RuntimeWarning)]) == 1


# -- path selection ----------------------------------------------------------------------------

def test_choose_impl_and_env(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.delenv("SVGEN_OPS", raising=False)
    assert plugin.choose_impl(cpu) == "ref"
    assert plugin.choose_impl(cpu, "cuda") == "ref"                           # CPU is always ref
    assert plugin.choose_impl(cuda) == "auto"
    assert plugin.choose_impl(cuda, "cuda") == "cuda"
    assert plugin.choose_impl(cuda, "ref") == "ref"
    monkeypatch.setenv("SVGEN_OPS", "ref")
    assert plugin.choose_impl(cuda) == "ref" and plugin.choose_impl(cuda, "cuda") == "ref"
    monkeypatch.setenv("SVGEN_OPS", "cuda")
    assert plugin.choose_impl(cuda) == "cuda" and plugin.choose_impl(cpu) == "ref"
    monkeypatch.setenv("SVGEN_OPS", "AUTO")
    assert plugin.choose_impl(cuda) == "auto"
    monkeypatch.setenv("SVGEN_OPS", "fast")
    with pytest.raises(SvgenError, match="SVGEN_OPS"):
        plugin.choose_impl(cuda)


@pytest.fixture
def failing_default_loader(tmp_path, monkeypatch):
    """Replace the process-wide loader by one whose builds fail (and are counted)."""
    def failing_build(*args, **kwargs):
        raise RuntimeError("no CUDA toolkit here")

    loader = plugin.PluginLoader(root=tmp_path / "cache", build_fn=failing_build,
                                 fingerprint_fn=lambda: FP)
    monkeypatch.setattr(plugin, "_DEFAULT_LOADER", loader)
    return loader


@pytest.mark.parametrize("mode", ["auto", "cuda", "ref"])
def test_cpu_tensors_never_build(mode, failing_default_loader, monkeypatch, recwarn):
    monkeypatch.setenv("SVGEN_OPS", mode)
    x = torch.randn(2, 3, 8, 8)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    bias_act.bias_act(x, torch.zeros(3), act="lrelu", impl="cuda")
    upfirdn2d.upsample2d(x, f, impl="cuda")
    upfirdn2d.downsample2d(x, f)
    conv2d_resample.conv2d_resample(x, torch.randn(4, 3, 3, 3), f, up=2, padding=1)
    modulated_conv.modulated_conv2d(x, torch.randn(4, 3, 3, 3), torch.randn(2, 3), up=2,
                                    padding=1, resample_filter=f)
    assert failing_default_loader.builds == 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_cuda_device_dispatch_falls_back_once_or_raises(failing_default_loader, monkeypatch, recwarn):
    """On a CUDA device: auto warns once and returns None (reference path); forced cuda raises;
    SVGEN_OPS=ref never builds."""
    cuda = torch.device("cuda")
    args = ("bias_act", bias_act.SOURCES, bias_act.HEADERS)
    monkeypatch.setenv("SVGEN_OPS", "ref")
    assert plugin.plugin_for(cuda, None, *args) is None
    assert failing_default_loader.builds == 0
    monkeypatch.setenv("SVGEN_OPS", "auto")
    for _ in range(3):
        assert plugin.plugin_for(cuda, None, *args) is None
    assert failing_default_loader.builds == 1
    assert len([w for w in recwarn if issubclass(w.category, RuntimeWarning)]) == 1
    with pytest.raises(plugin.PluginBuildError, match="no CUDA toolkit"):
        plugin.plugin_for(cuda, "cuda", *args)
    monkeypatch.setenv("SVGEN_OPS", "cuda")
    with pytest.raises(plugin.PluginBuildError):
        plugin.plugin_for(cuda, None, *args)
    assert failing_default_loader.builds == 1


def test_import_never_builds(tmp_path):
    """Importing and using the ops on CPU works even when cpp_extension cannot be imported."""
    code = textwrap.dedent("""
        import sys
        sys.modules["torch.utils.cpp_extension"] = None   # any import of it now fails
        import torch
        from svgen.ops import bias_act, upfirdn2d, modulated_conv
        x = torch.randn(1, 2, 8, 8)
        y = modulated_conv.modulated_conv2d(x, torch.randn(3, 2, 3, 3), torch.randn(1, 2), up=2,
                                            padding=1, resample_filter=upfirdn2d.setup_filter([1, 3, 3, 1]))
        print(tuple(bias_act.bias_act(y, act="lrelu").shape))
    """)
    env = {**os.environ, "SVGEN_OPS_BUILD_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 3, 16, 16)"
    assert not (tmp_path / "cache").exists()


@pytest.mark.gpu
def test_real_plugins_build_and_cache(tmp_path, monkeypatch):
    """On a GPU machine: both plugins build with nvcc, land in the cache, and load from it."""
    loader = plugin.PluginLoader(root=tmp_path / "cache")
    for name, mod in (("bias_act", bias_act), ("upfirdn2d", upfirdn2d)):
        module = loader.get(name, mod.SOURCES, mod.HEADERS)
        assert hasattr(module, name)
        folder, _ = loader.cache_dir(name, mod.SOURCES, mod.HEADERS)
        assert folder.is_dir()
    fresh = plugin.PluginLoader(root=tmp_path / "cache", build_fn=lambda *a, **k: 1 / 0)
    assert hasattr(fresh.get("upfirdn2d", upfirdn2d.SOURCES, upfirdn2d.HEADERS), "upfirdn2d")
