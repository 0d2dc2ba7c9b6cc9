"""Import pretrained StyleGAN2 generators without executing pickled code.

Two foreign formats convert into the svgen checkpoint dict (``checkpoints.make_generator_checkpoint``):

* NVIDIA ``.pkl`` (stylegan2-ada-pytorch, and stylegan3's ``stylegan2`` config): a pickle of
  ``dict(G=..., D=..., G_ema=..., ...)`` whose networks are "persistent" objects, each reduced
  to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {class_name,
  module_src, state}``. Normally the loader ``exec``s ``module_src``; here a restricted unpickler
  maps that function to :class:`PersistentRecord` (plain data), allows only an explicit list of
  tensor/container rebuild functions, and refuses anything else, naming it. The module states
  (``_parameters``, ``_buffers``, ``_modules`` and attributes such as ``bias_gain``) give both the
  weights and the configuration.
* rosinality ``.pt`` (stylegan2-pytorch): ``{"g_ema": state_dict, "latent_avg": [w_dim], "d"?,
  "g"?, "args"?}``, read with ``torch.load(weights_only=True)``; keys are renamed onto ours.

Everything that changes the image is kept: ``w_avg``/``latent_avg``, the per-layer constant noise
buffers, mapping depth and lr multiplier, so ``noise_mode="const"`` reproduces the original.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from svgen.stage1_image_gan.presets import DiscriminatorConfig, GeneratorConfig, TrainPreset
from svgen.utils.errors import PathLike, SvgenError

DEFAULT_FILTER = (1, 3, 3, 1)


# -- restricted unpickling ----------------------------------------------------------------------

@dataclasses.dataclass
class PersistentRecord:
    """What an NVIDIA persistent object holds, as data: its class name, source text and state."""

    class_name: str
    module_src: str
    state: dict

    def module(self, name: str) -> Optional["PersistentRecord"]:
        sub = self.state.get("_modules", {}).get(name)
        return sub if isinstance(sub, PersistentRecord) else None

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)


class _ForbiddenGlobal(Exception):
    def __init__(self, qualname: str, hint: str = ""):
        super().__init__(qualname)
        self.qualname = qualname
        self.hint = hint


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type", "class") != "class":
        raise pickle.UnpicklingError("unexpected persistent object metadata")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError("persistent object state is not a dict")
    return PersistentRecord(str(meta.get("class_name", "?")), str(meta.get("module_src", "")), dict(state))


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): read as a plain dict."""


def _load_storage_from_bytes(data: bytes) -> Any:
    # torch pickles a storage as the bytes of a (legacy) torch.save; read them weights-only.
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage payload is not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *unused: Any) -> torch.Tensor:
    # Backward hooks and metadata (the optional trailing arguments) are dropped on purpose.
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("tensor payload is not a storage")
    return torch._utils._rebuild_tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter payload is not a tensor")
    return data.detach()


def _rebuild_from_type_v2(func: Callable, new_type: Any, args: tuple, state: Any) -> Any:
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise pickle.UnpicklingError("unsupported tensor rebuild function")
    return func(*args)


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("unsupported numpy scalar")
    return np.frombuffer(data, dtype=dtype)[0].item()


def _numpy_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("unsupported numpy array subclass")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}
_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals; persistent ids are refused."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles
            return _latin1_encode
        if module.startswith("dnnlib.tflib"):
            raise _ForbiddenGlobal(f"{module}.{name}", "a TensorFlow StyleGAN pickle; convert it to a "
                                   "PyTorch .pkl with stylegan2-ada-pytorch's legacy.py first")
        raise _ForbiddenGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a network pickle")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("unsupported _codecs.encode call")
    return text.encode("latin1")


def restricted_load(fh: Any, path: PathLike) -> Any:
    """Unpickle one object from ``fh`` with :class:`RestrictedUnpickler`; SvgenError on refusal."""
    try:
        return RestrictedUnpickler(fh).load()
    except _ForbiddenGlobal as exc:
        what = f" ({exc.hint})" if exc.hint else ""
        raise SvgenError(f"refusing to unpickle: the file references {exc.qualname}, which is not "
                         f"an allowed class or function{what}; only NVIDIA StyleGAN2 network "
                         f"pickles are read, as data", path) from None
    except Exception as exc:  # truncated, corrupt, not a pickle
        raise SvgenError(f"not a readable network pickle ({_first_line(exc)})", path) from None


# torch's two wordings for a pickle global that weights-only loading refuses
_BLOCKED_GLOBAL = (re.compile(r"Unsupported global: GLOBAL ([\w.]+)"),
                   re.compile(r"unsupported GLOBAL ([\w.]+) whose module [\w.]+ is blocked"))
_NO_CODE = "svgen refuses to run code from checkpoints"


def _first_line(exc: BaseException) -> str:
    """One line on why torch could not load a file: the blocked global when torch names one, and
    never torch's advice to load with ``weights_only=False``."""
    text = str(exc).strip()
    for pattern in _BLOCKED_GLOBAL:
        m = pattern.search(text)
        if m:
            return f"it references the Python global {m.group(1)}; {_NO_CODE}"
    if "weights_only" in text:
        return f"it holds Python objects other than tensors and plain containers; {_NO_CODE}"
    return text.splitlines()[0][:200] if text else type(exc).__name__


# -- helpers shared by both importers ----------------------------------------------------------

def infer_channel_base(channels: dict[int, int]) -> tuple[int, int]:
    """(channel_base, channel_max) such that min(base // r, max) == channels[r] for every r."""
    cmax = max(channels.values())
    candidates = sorted({c * r for r, c in channels.items()} | {cmax * max(channels)})
    for base in candidates:
        if all(min(base // r, cmax) == c for r, c in channels.items()):
            return base, cmax
    raise ValueError(f"channel counts {dict(sorted(channels.items()))} do not follow "
                     f"min(channel_base // r, channel_max)")


def _load_state(module: torch.nn.Module, state: dict, what: str) -> None:
    result = module.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:4])}"
                        + (" ..." if len(result.missing_keys) > 4 else ""))
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:4])}"
                        + (" ..." if len(result.unexpected_keys) > 4 else ""))
    if problems:
        raise ValueError(f"{what}: {'; '.join(problems)}")


def _float_state(state: dict) -> dict:
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def _check_filter(buffer: Optional[torch.Tensor], expect_gain: float = 1.0) -> None:
    """The resampling filter must be the standard [1, 3, 3, 1] (the only one our presets store)."""
    from svgen.ops.upfirdn2d import setup_filter

    if buffer is None:
        return
    ref = setup_filter(list(DEFAULT_FILTER)) * expect_gain
    if tuple(buffer.shape) != tuple(ref.shape) or not torch.allclose(buffer.float(), ref, atol=1e-6):
        raise ValueError("the resampling filter is not the standard [1, 3, 3, 1]")


def _training_defaults(name: str, G: GeneratorConfig, D: DiscriminatorConfig) -> TrainPreset:
    """An imported network keeps the stylegan2 training defaults (for fine-tuning)."""
    return TrainPreset(name=name, G=G, D=D)


# -- NVIDIA .pkl ---------------------------------------------------------------------------------

def flatten_record(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a persistent module tree, as a flat state dict."""
    out: dict[str, torch.Tensor] = {}
    st = record.state
    for name, value in (st.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = _as_tensor(value, prefix + name)
    skip = set(st.get("_non_persistent_buffers_set") or ())
    for name, value in (st.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = _as_tensor(value, prefix + name)
    for name, sub in (st.get("_modules") or {}).items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord):
            raise ValueError(f"submodule {prefix + name} is not a network module")
        out.update(flatten_record(sub, f"{prefix}{name}."))
    return out


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} is not a tensor")
    return value.detach()


def _need(record: Optional[PersistentRecord], what: str) -> PersistentRecord:
    if record is None:
        raise ValueError(f"missing module {what}")
    return record


def nvidia_generator_config(G: PersistentRecord) -> GeneratorConfig:
    """Rebuild our GeneratorConfig from an NVIDIA Generator record (attributes + weight shapes)."""
    if G.class_name != "Generator":
        raise ValueError(f"G_ema is a {G.class_name}, not a Generator")
    mapping = _need(G.module("mapping"), "mapping")
    synthesis = _need(G.module("synthesis"), "synthesis")
    if synthesis.module("b4") is None:
        raise ValueError("not a StyleGAN2 synthesis network (no b4 block); StyleGAN3 (alias-free) "
                         "generators are not supported")
    z_dim, c_dim, w_dim = int(G.attr("z_dim")), int(G.attr("c_dim", 0)), int(G.attr("w_dim"))
    res, img_channels = int(G.attr("img_resolution")), int(G.attr("img_channels", 3))
    num_layers = int(mapping.attr("num_layers"))
    fc0 = _need(mapping.module("fc0"), "mapping.fc0")
    lr_mul = float(fc0.attr("bias_gain", fc0.attr("lr_multiplier", 0.01)))
    for i in range(num_layers):
        fc = _need(mapping.module(f"fc{i}"), f"mapping.fc{i}")
        if fc.state["_parameters"]["weight"].shape[0] != w_dim:
            raise ValueError("mapping layers narrower or wider than w_dim are not supported")
    if c_dim > 0:
        emb = _need(mapping.module("embed"), "mapping.embed")
        if emb.state["_parameters"]["weight"].shape[0] != w_dim:
            raise ValueError("label embeddings of a size other than w_dim are not supported")
    resolutions = [2 ** i for i in range(2, int(math.log2(res)) + 1)]
    channels, fp16_blocks, clamp, arch = {}, 0, None, "skip"
    for r in resolutions:
        block = _need(synthesis.module(f"b{r}"), f"synthesis.b{r}")
        conv1 = _need(block.module("conv1"), f"synthesis.b{r}.conv1")
        if "noise_const" not in (conv1.state.get("_buffers") or {}):
            raise ValueError("synthesis layers without noise inputs are not supported")
        channels[r] = int(conv1.state["_parameters"]["weight"].shape[0])
        fp16_blocks += bool(block.attr("use_fp16", False))
        clamp = conv1.attr("conv_clamp", clamp)
        arch = str(block.attr("architecture", arch))
        _check_filter((block.state.get("_buffers") or {}).get("resample_filter"))
    base, cmax = infer_channel_base(channels)
    beta = mapping.attr("w_avg_beta", 0.995)
    return GeneratorConfig(
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=res, img_channels=img_channels,
        mapping_layers=num_layers, mapping_lr_multiplier=lr_mul,
        w_avg_beta=float(beta) if beta is not None else 0.995, channel_base=base, channel_max=cmax,
        architecture=arch, conv_clamp=None if clamp is None else float(clamp),
        num_fp16_res=fp16_blocks, resample_filter=DEFAULT_FILTER)


def nvidia_discriminator_config(D: PersistentRecord) -> DiscriminatorConfig:
    """Rebuild our DiscriminatorConfig from an NVIDIA Discriminator record."""
    if D.class_name != "Discriminator":
        raise ValueError(f"D is a {D.class_name}, not a Discriminator")
    res = int(D.attr("img_resolution"))
    channels, fp16_blocks, clamp, arch = {}, 0, None, "resnet"
    for r in [2 ** i for i in range(int(math.log2(res)), 2, -1)]:
        block = _need(D.module(f"b{r}"), f"D.b{r}")
        conv0 = _need(block.module("conv0"), f"D.b{r}.conv0")
        channels[r] = int(conv0.state["_parameters"]["weight"].shape[0])
        fp16_blocks += bool(block.attr("use_fp16", False))
        clamp = conv0.attr("conv_clamp", clamp)
        arch = str(block.attr("architecture", arch))
        _check_filter((block.state.get("_buffers") or {}).get("resample_filter"))
    epi = _need(D.module("b4"), "D.b4")
    channels[4] = int(epi.module("conv").state["_parameters"]["weight"].shape[0])
    mbstd = epi.module("mbstd")
    base, cmax = infer_channel_base(channels)
    group = mbstd.attr("group_size", 4) if mbstd is not None else 4
    return DiscriminatorConfig(
        c_dim=int(D.attr("c_dim", 0)), img_resolution=res, img_channels=int(D.attr("img_channels", 3)),
        channel_base=base, channel_max=cmax, architecture=arch,
        mbstd_group_size=int(group) if group is not None else 0,
        mbstd_num_channels=int(mbstd.attr("num_channels", 1)) if mbstd is not None else 0,
        conv_clamp=None if clamp is None else float(clamp), num_fp16_res=fp16_blocks)


def read_nvidia_pickle(path: PathLike) -> Any:
    """Unpickle an NVIDIA network pickle as data (no code executed)."""
    with open(path, "rb") as fh:
        return restricted_load(fh, path)


def nvidia_to_checkpoint(data: Any, path: PathLike) -> dict:
    """Convert the unpickled data of an NVIDIA ``.pkl`` into an svgen generator checkpoint dict."""
    from svgen.stage1_image_gan.checkpoint_format import make_generator_checkpoint
    from svgen.stage1_image_gan.networks import Discriminator, Generator

    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentRecord):
        keys = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise SvgenError(f"not an NVIDIA network pickle (no G_ema network; found {keys})", path)
    try:
        gcfg = nvidia_generator_config(data["G_ema"])
        G_ema = Generator(gcfg)
        _load_state(G_ema, _float_state(flatten_record(data["G_ema"])), "G_ema weights")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SvgenError(f"unsupported NVIDIA generator: {exc}", path) from None
    G = Generator(gcfg)
    notes = {}
    try:
        src = data.get("G")
        if not isinstance(src, PersistentRecord):
            raise ValueError("absent")
        _load_state(G, _float_state(flatten_record(src)), "G weights")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        G.load_state_dict(G_ema.state_dict())
        notes["G"] = f"training G not imported ({exc}); G is a copy of G_ema"
    D = None
    dcfg = DiscriminatorConfig(c_dim=gcfg.c_dim, img_resolution=gcfg.img_resolution,
                               img_channels=gcfg.img_channels, channel_base=gcfg.channel_base,
                               channel_max=gcfg.channel_max, conv_clamp=gcfg.conv_clamp,
                               num_fp16_res=gcfg.num_fp16_res)
    try:
        src = data.get("D")
        if not isinstance(src, PersistentRecord):
            raise ValueError("absent")
        dcfg = nvidia_discriminator_config(src)
        D = Discriminator(dcfg)
        _load_state(D, _float_state(flatten_record(src)), "D weights")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        D = None
        notes["D"] = f"discriminator not imported ({exc})"
    preset = _training_defaults("imported-nvidia", gcfg, dcfg)
    meta = {"source": "nvidia-pkl", "source_file": Path(path).name, **notes}
    return make_generator_checkpoint(preset, G, G_ema, D, meta=meta)


# -- rosinality .pt ----------------------------------------------------------------------------

def _strip(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    return t.detach().reshape(shape).float().contiguous()


def rosinality_generator_config(g: dict) -> tuple[GeneratorConfig, dict]:
    """Config and renamed state dict (our keys, without w_avg) of a rosinality ``g_ema``."""
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in g:
        n_mlp += 1
    if n_mlp == 0 or "input.input" not in g or "conv1.conv.weight" not in g:
        raise ValueError("no rosinality generator weights (style.*, input.input, conv1.*)")
    z_dim = int(g["style.1.weight"].shape[1])
    w_dim = int(g[f"style.{n_mlp}.weight"].shape[0])
    num_rgb = 0
    while f"to_rgbs.{num_rgb}.bias" in g:
        num_rgb += 1
    res = 2 ** (num_rgb + 2)
    img_channels = int(g["to_rgb1.bias"].numel())
    s: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        s[f"mapping.fc{i}.weight"] = g[f"style.{i + 1}.weight"].float()
        s[f"mapping.fc{i}.bias"] = g[f"style.{i + 1}.bias"].float()

    def styled_conv(src: str, dst: str, r: int, noise_idx: int) -> int:
        w = g[f"{src}.conv.weight"]  # [1, O, I, k, k]
        O, I, k = w.shape[1], w.shape[2], w.shape[3]
        s[f"{dst}.weight"] = _strip(w, (O, I, k, k))
        s[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"].float()
        s[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"].float()
        s[f"{dst}.noise_strength"] = _strip(g[f"{src}.noise.weight"], ())
        s[f"{dst}.bias"] = _strip(g[f"{src}.activate.bias"], (O,))
        s[f"{dst}.noise_const"] = _strip(g[f"noises.noise_{noise_idx}"], (r, r))
        return O

    def to_rgb(src: str, dst: str) -> None:
        w = g[f"{src}.conv.weight"]  # [1, C, I, 1, 1]
        s[f"{dst}.weight"] = _strip(w, tuple(w.shape[1:]))
        s[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"].float()
        s[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"].float()
        s[f"{dst}.bias"] = _strip(g[f"{src}.bias"], (img_channels,))

    channels = {4: int(g["input.input"].shape[1])}
    s["synthesis.b4.const"] = _strip(g["input.input"], tuple(g["input.input"].shape[1:]))
    styled_conv("conv1", "synthesis.b4.conv1", 4, 0)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for k in range(num_rgb):
        r = 2 ** (k + 3)
        channels[r] = styled_conv(f"convs.{2 * k}", f"synthesis.b{r}.conv0", r, 2 * k + 1)
        styled_conv(f"convs.{2 * k + 1}", f"synthesis.b{r}.conv1", r, 2 * k + 2)
        to_rgb(f"to_rgbs.{k}", f"synthesis.b{r}.torgb")
        blur = g.get(f"convs.{2 * k}.conv.blur.kernel")
        _check_filter(blur, expect_gain=4.0)
    base, cmax = infer_channel_base(channels)
    cfg = GeneratorConfig(z_dim=z_dim, w_dim=w_dim, img_resolution=res, img_channels=img_channels,
                          mapping_layers=n_mlp, mapping_lr_multiplier=0.01, channel_base=base,
                          channel_max=cmax, architecture="skip", resample_filter=DEFAULT_FILTER)
    return cfg, s


def rosinality_discriminator_state(d: dict, res: int, img_channels: int) -> tuple[DiscriminatorConfig, dict]:
    """Config and renamed state dict of a rosinality discriminator ``d``."""
    s: dict[str, torch.Tensor] = {}
    top = f"b{res}"
    s[f"{top}.fromrgb.weight"] = d["convs.0.0.weight"].float()
    s[f"{top}.fromrgb.bias"] = d["convs.0.1.bias"].float()
    channels = {}
    resolutions = [2 ** i for i in range(int(math.log2(res)), 2, -1)]
    for j, r in enumerate(resolutions, start=1):
        p, q = f"convs.{j}", f"b{r}"
        s[f"{q}.conv0.weight"] = d[f"{p}.conv1.0.weight"].float()
        s[f"{q}.conv0.bias"] = d[f"{p}.conv1.1.bias"].float()
        s[f"{q}.conv1.weight"] = d[f"{p}.conv2.1.weight"].float()
        s[f"{q}.conv1.bias"] = d[f"{p}.conv2.2.bias"].float()
        s[f"{q}.skip.weight"] = d[f"{p}.skip.1.weight"].float()
        channels[r] = int(s[f"{q}.conv0.weight"].shape[0])
        _check_filter(d.get(f"{p}.conv2.0.kernel"))
    if f"convs.{len(resolutions) + 1}.conv1.0.weight" in d:
        raise ValueError("discriminator has more blocks than the generator resolution implies")
    s["b4.conv.weight"] = d["final_conv.0.weight"].float()
    s["b4.conv.bias"] = d["final_conv.1.bias"].float()
    s["b4.fc.weight"] = d["final_linear.0.weight"].float()
    s["b4.fc.bias"] = d["final_linear.0.bias"].float()
    s["b4.out.weight"] = d["final_linear.1.weight"].float()
    s["b4.out.bias"] = d["final_linear.1.bias"].float()
    channels[4] = int(s["b4.conv.weight"].shape[0])
    mbstd_channels = int(s["b4.conv.weight"].shape[1]) - channels[4]
    base, cmax = infer_channel_base(channels)
    cfg = DiscriminatorConfig(img_resolution=res, img_channels=img_channels, channel_base=base,
                              channel_max=cmax, architecture="resnet", mbstd_group_size=4,
                              mbstd_num_channels=mbstd_channels)
    return cfg, s


def estimate_w_avg(G: torch.nn.Module, num: int = 4096, seed: int = 0, batch: int = 512) -> torch.Tensor:
    """Mean of mapping(z) over ``num`` fixed random z (used when a file carries no W average)."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros([G.w_dim])
    with torch.no_grad():
        done = 0
        while done < num:
            n = min(batch, num - done)
            z = torch.randn([n, G.z_dim], generator=gen)
            c = torch.zeros([n, G.c_dim]) if G.c_dim else None
            total += G.mapping(z.to(G.mapping.w_avg.device), c)[:, 0].sum(0).cpu()
            done += n
    return total / num


def rosinality_to_checkpoint(obj: dict, path: PathLike) -> dict:
    """Convert a rosinality ``.pt`` dict (``g_ema``, ``latent_avg``, optional ``g``/``d``)."""
    from svgen.stage1_image_gan.checkpoint_format import make_generator_checkpoint
    from svgen.stage1_image_gan.networks import Discriminator, Generator

    args = obj.get("args")
    try:
        gcfg, g_state = rosinality_generator_config(obj["g_ema"])
        lr_mlp = getattr(args, "lr_mlp", None) if isinstance(args, argparse.Namespace) else None
        if lr_mlp is not None:
            gcfg = dataclasses.replace(gcfg, mapping_lr_multiplier=float(lr_mlp))
        G_ema = Generator(gcfg)
        w_avg = G_ema.mapping.w_avg.clone()
        g_state["mapping.w_avg"] = w_avg
        _load_state(G_ema, _with_own_buffers(G_ema, g_state), "g_ema weights")
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise SvgenError(f"unsupported rosinality generator: {exc}", path) from None
    notes: dict[str, Any] = {}
    latent_avg = obj.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor) and latent_avg.numel() == gcfg.w_dim:
        G_ema.mapping.w_avg.copy_(latent_avg.reshape(-1).float())
    else:
        G_ema.mapping.w_avg.copy_(estimate_w_avg(G_ema))
        notes["w_avg"] = "no latent_avg in the file: estimated as the mean of 4096 mapped z (seed 0)"
    G = Generator(gcfg)
    try:
        if not isinstance(obj.get("g"), dict):
            raise ValueError("absent")
        _, s = rosinality_generator_config(obj["g"])
        s["mapping.w_avg"] = G_ema.mapping.w_avg.clone()
        _load_state(G, _with_own_buffers(G, s), "g weights")
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        G.load_state_dict(G_ema.state_dict())
        notes["G"] = f"training G not imported ({exc}); G is a copy of G_ema"
    dcfg = DiscriminatorConfig(img_resolution=gcfg.img_resolution, img_channels=gcfg.img_channels,
                               channel_base=gcfg.channel_base, channel_max=gcfg.channel_max)
    D = None
    try:
        if not isinstance(obj.get("d"), dict):
            raise ValueError("absent")
        dcfg, d_state = rosinality_discriminator_state(obj["d"], gcfg.img_resolution, gcfg.img_channels)
        D = Discriminator(dcfg)
        _load_state(D, _with_own_buffers(D, d_state), "d weights")
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        D = None
        notes["D"] = f"discriminator not imported ({exc})"
    preset = _training_defaults("imported-rosinality", gcfg, dcfg)
    meta = {"source": "rosinality-pt", "source_file": Path(path).name, **notes}
    return make_generator_checkpoint(preset, G, G_ema, D, meta=meta)


def _with_own_buffers(module: torch.nn.Module, state: dict) -> dict:
    """Fill in the fixed resampling-filter buffers, which rosinality stores elsewhere."""
    out = dict(state)
    for name, buf in module.named_buffers():
        if name.endswith("resample_filter") and name not in out:
            out[name] = buf
    return out
