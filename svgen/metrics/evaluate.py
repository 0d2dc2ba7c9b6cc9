"""``svgen.metrics.evaluate(spec) -> report``: FVD/FID (StyleGAN-V protocol), ACD, latent FD, loop score,
identity, landmark motion and TL-/TG-ID of a motion model and/or an animation, in one JSON report.

Every value goes into the report together with the protocol that produced it (clip counts really
used, frames, stride, seed, detector file hash, square-root method) and the versions of the
software, so numbers can be compared and reproduced. Detector files that are not on disk skip only
the metrics that need them, with a message saying which file and where it comes from. ``svgen
evaluate`` only parses its options into an :class:`EvalSpec` and calls :func:`evaluate`.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import platform
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from svgen.metrics.names import (ALL_METRICS, DEFAULT_WINDOW, OWN_INPUT_METRICS, PIXEL_METRICS,
                                 TEMPORAL_ID_METRICS)
from svgen.utils.errors import SvgenError


class EvaluateUsageError(SvgenError):
    """The spec asks for something its inputs cannot give (a usage error: ``svgen`` exits 2).
    ``param`` names the option at fault, when one is."""

    def __init__(self, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.param = param


@dataclass
class EvalSpec:
    """What to evaluate and how (field names are ``svgen evaluate``'s options; defaults are its defaults)."""

    motion: Optional[Path] = None          # motion.pt
    generator: Optional[Path] = None       # renders the motion (default: the one motion.pt records)
    latents: Optional[Path] = None         # latents.h5 of the real clips (latent_fd)
    data: Optional[Path] = None            # aligned.zip of the real clips (FVD, FID)
    metrics: str = "auto"                  # comma list of ALL_METRICS, or auto: all whose inputs are given
    num_videos: int = 2048
    out: Optional[Path] = None             # report JSON (written atomically when given)
    detector_dir: Optional[Path] = None
    plot_run: Optional[Path] = None        # run folder whose metrics.jsonl is charted
    sqrt_method: str = "sqrtm"
    real_sampling: str = "per-video"
    max_real: int = 2048
    fid_frames: int = 50000
    fid_max_real: Optional[int] = None
    acd_videos: int = 32
    acd_frames: int = 16
    window: Optional[int] = None
    loop_frames: Optional[int] = None
    latent_windows: int = 256
    batch: Optional[int] = None
    cache_dir: Optional[Path] = None
    no_cache: bool = False
    animation: Optional[Path] = None
    identity: Optional[Path] = None
    identity_frames: Optional[int] = None
    real_videos: tuple = ()
    landmark_samples: int = 4
    landmark_frames: int = 128
    landmark_window: int = 16
    landmark_plot: Optional[Path] = None
    num_runs: int = 1                      # K > 1: every metric K times (seeds seed .. seed+K-1), mean and std
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in ("metrics", "sqrt_method", "real_sampling", "device") and isinstance(v, str):
                setattr(self, f.name, Path(v))
        self.real_videos = tuple(Path(v) for v in self.real_videos)


def _stderr(msg: str) -> None:
    print(f"svgen evaluate: {msg}", file=sys.stderr)


def evaluate(spec: EvalSpec, say: Callable[[str], None] = _stderr) -> dict:
    """Compute the metrics ``spec`` asks for; returns the report (also written to ``spec.out``).

    Inputs are checked before any metric runs; ``say`` receives progress and warning lines."""
    from svgen.utils.io import ensure_parent_writable, require_file, write_json

    have = {"motion": spec.motion is not None, "latents": spec.latents is not None, "data": spec.data is not None,
            "generator": spec.generator is not None, "animation": spec.animation is not None,
            "identity": spec.identity is not None, "real_video": bool(spec.real_videos)}
    asked = spec.motion or spec.animation or spec.metrics.strip().lower() != "auto"
    chosen = resolve_metrics(spec.metrics, have) if asked else []
    if chosen and spec.out is None:
        raise EvaluateUsageError("--out report.json is required when metrics are computed")
    if not chosen and spec.plot_run is None:
        raise EvaluateUsageError("nothing to do: give --motion (with --latents/--data), --animation, or --plot")
    if spec.num_runs < 1:
        raise EvaluateUsageError(f"--num-runs must be at least 1, got {spec.num_runs}", param="--num-runs")
    if spec.animation is not None and spec.identity is None and "identity" in chosen:
        raise EvaluateUsageError("--animation needs --identity PHOTO")
    if spec.out is not None:
        ensure_parent_writable(spec.out)
    if spec.landmark_plot is not None and "landmark_motion" in chosen:
        ensure_parent_writable(spec.landmark_plot)
    for p, what in ((spec.motion, "motion checkpoint"), (spec.generator, "generator"), (spec.latents, "latent store"),
                    (spec.data, "dataset"), (spec.animation, "animation"), (spec.identity, "identity photo"),
                    *((v, "real video") for v in spec.real_videos)):
        if p is not None:
            require_file(p, what)

    report: dict = {"format": "svgen-eval", "version": 1,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "options": {f.name: _option(getattr(spec, f.name)) for f in fields(spec)},
                    "seed": spec.seed, "inputs": {}, "values": {}, "metrics": {}, "skipped": {},
                    "versions": _versions()}
    if chosen:
        _run_metrics(report, chosen, spec, say)
        if spec.num_runs > 1:
            _repeat_runs(report, chosen, spec, say)
    if spec.plot_run is not None:
        from svgen.metrics.plots import plot_run_metrics

        paths = plot_run_metrics(spec.plot_run)
        report["plots"] = [str(p) for p in paths]
        say(f"wrote {len(paths)} charts to {paths[0].parent}")
    report = _clean(report)
    if spec.out is not None:
        write_json(spec.out, report)
    return report


def _repeat_runs(report: dict, chosen: list[str], spec: EvalSpec, say: Callable[[str], None]) -> None:
    """``--num-runs K`` (LongVideoGAN's advice: FVD varies strongly between runs): the metrics again with
    seeds seed+1 .. seed+K-1; ``values`` become the means over the K runs, ``values_std`` their sample
    standard deviations (ddof 1) and ``runs`` holds every run's values. ``metrics`` keeps run 1's protocols."""
    runs = [dict(report["values"])]
    for k in range(1, spec.num_runs):
        say(f"run {k + 1}/{spec.num_runs} (seed {spec.seed + k})")
        again: dict = {"inputs": {}, "values": {}, "metrics": {}, "skipped": {}}
        _run_metrics(again, chosen, dataclasses.replace(spec, seed=spec.seed + k, num_runs=1), say)
        runs.append(again["values"])
    means, stds = {}, {}
    for name, first in runs[0].items():
        vals = [r.get(name) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            arr = np.asarray(vals, np.float64)
            means[name], stds[name] = float(arr.mean()), float(arr.std(ddof=1))
        else:
            means[name] = first
    report["values"], report["values_std"] = means, stds
    report["runs"] = [{"seed": spec.seed + k, "values": r} for k, r in enumerate(runs)]


def _option(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return [_option(x) for x in v]
    return v


def resolve_metrics(text: str, have: dict) -> list[str]:
    """``auto`` = every metric whose inputs were given; otherwise a comma list checked against them."""
    if text.strip().lower() == "auto":
        chosen = []
        if have["motion"]:
            chosen.append("loop")
            if have["latents"]:
                chosen.insert(0, "latent_fd")
            if have["data"]:
                chosen += ["fvd16", "fvd128", "fid"]
            if have["data"] or have["generator"]:
                chosen.append("acd")
        if have["animation"]:
            chosen.append("identity")
        if (have["animation"] or have["motion"]) and have["real_video"]:
            chosen.append("landmark_motion")
        return chosen
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown:
        raise EvaluateUsageError(f"unknown metric(s) {', '.join(unknown)} (choose from {', '.join(ALL_METRICS)})",
                                 param="--metrics")
    if "landmark_motion" in names and not (have["animation"] or have["motion"]):
        raise EvaluateUsageError("--metrics landmark_motion needs --animation or --motion")
    if "landmark_motion" in names and not (have["real_video"] or have["data"]):
        raise EvaluateUsageError("--metrics landmark_motion needs --real-video (or --data) as the real reference")
    need = {"motion": [m for m in names if m not in OWN_INPUT_METRICS],
            "latents": [m for m in names if m == "latent_fd"],
            "data": [m for m in names if m.startswith("fvd") or m == "fid"],
            "animation": [m for m in names if m == "identity" or m in TEMPORAL_ID_METRICS],
            "identity": [m for m in names if m == "identity"]}
    for what, metrics in need.items():
        if metrics and not have[what]:
            raise EvaluateUsageError(f"--metrics {','.join(metrics)} needs --{what}")
    return list(dict.fromkeys(names))


def _training_window(motion: Any) -> tuple[int, str]:
    for owner, label in ((motion, "motion.window"), (getattr(motion, "cfg", None), "motion.cfg.window"),
                         (getattr(motion, "config", None), "motion.config.window")):
        value = getattr(owner, "window", None) if owner is not None else None
        if isinstance(value, int) and value > 1:
            return value, label
    return DEFAULT_WINDOW, f"default {DEFAULT_WINDOW} (the motion model does not record its window)"


def _versions() -> dict:
    import scipy
    import torch

    import svgen

    out = {"svgen": svgen.__version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "scipy": scipy.__version__, "platform": platform.platform()}
    try:
        import dlib

        out["dlib"] = dlib.__version__
    except ImportError:
        pass
    return out


def _clean(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so the report is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _read_video_frames(path: Path, max_frames: Optional[int] = None) -> list[np.ndarray]:
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise SvgenError(f"cannot decode video ({str(exc).splitlines()[0] if str(exc) else exc})", path) from None
    w, h = meta["size"]
    frames = []
    try:
        for raw in gen:
            frames.append(np.frombuffer(raw, np.uint8).reshape(h, w, 3))
            if max_frames and len(frames) >= max_frames:
                break
    finally:
        gen.close()
    if not frames:
        raise SvgenError("video has no frames", path)
    return frames


def _read_photo(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SvgenError(f"cannot read image ({exc.__class__.__name__})", path) from None


def _resolve_detectors(report: dict, pixel: list[str], detector_dir: Optional[Path], dev: Any,
                       say: Callable[[str], None]) -> dict:
    """Load the detectors the chosen metrics need; a missing file skips only its metrics (with a message)."""
    from svgen.metrics.detectors import I3D, INCEPTION, DetectorMissing, load_detector

    needed = []
    if any(m.startswith("fvd") for m in pixel):
        needed.append(I3D)
    if "fid" in pixel:
        needed.append(INCEPTION)
    loaded = {}
    for spec in needed:
        try:
            loaded[spec.name] = load_detector(spec, detector_dir, device=dev)
        except DetectorMissing as exc:
            say(f"warning: {exc}")
            for m in pixel:
                if m in spec.metrics:
                    report["skipped"][m] = str(exc)
    return loaded


def _video_source(report: dict, motion_model: Any, generator: Optional[Path], dev: Any) -> Any:
    """The generator that renders the motion model's latents (checked against the motion checkpoint)."""
    from svgen.metrics.render import MotionVideoSource
    from svgen.stage1_image_gan.checkpoints import load_checked_generator
    from svgen.utils.io import file_sha256

    gen_path = generator or motion_model.generator_path
    if not gen_path:
        raise EvaluateUsageError("pixel metrics need --generator (the motion checkpoint does not record one)")
    gen_path = Path(gen_path)
    if not gen_path.is_file():
        raise SvgenError("generator recorded in the motion checkpoint does not exist (pass --generator)", gen_path)
    G = load_checked_generator(gen_path, motion_model.generator_sha256, dev, recorded_by="motion model")
    report["inputs"]["generator"] = {"path": str(gen_path), "sha256": file_sha256(gen_path),
                                     "resolution": int(getattr(G, "img_resolution", 0))}
    return MotionVideoSource(motion_model, G, device=dev)


def _run_metrics(report: dict, chosen: list[str], opt: EvalSpec, say: Callable[[str], None]) -> None:
    """Compute the chosen metrics into ``report`` (inputs, values, protocols, skipped)."""
    from svgen.utils.device import select_device
    from svgen.utils.io import file_sha256

    dev = select_device(opt.device)
    report["device"] = str(dev)
    seed = int(opt.seed)
    motion_model = None
    if opt.motion is not None and any(m != "identity" for m in chosen):
        from svgen.stage2_motion import load_motion

        motion_model = load_motion(opt.motion, device=dev)
        report["inputs"]["motion"] = {"path": str(opt.motion), "sha256": file_sha256(opt.motion),
                                      "model": motion_model.model_name}
    window, window_source = (opt.window, "--window") if opt.window else (
        _training_window(motion_model) if motion_model is not None else (DEFAULT_WINDOW, "default"))

    # -- latent metrics --------------------------------------------------------------------------
    if "latent_fd" in chosen:
        from svgen.inversion.latent_store import LatentStore
        from svgen.metrics.latent_fd import LatentFD, real_windows_from_store

        with LatentStore(opt.latents) as store:
            report["inputs"]["latents"] = {"path": str(opt.latents), "space": store.space,
                                           "generator_sha256": store.generator_sha256}
            if (store.num_ws, store.w_dim) != (motion_model.num_ws, motion_model.w_dim):
                raise SvgenError(f"latent store has {store.num_ws}x{store.w_dim} codes, the motion model "
                                 f"{motion_model.num_ws}x{motion_model.w_dim}", opt.latents)
            try:
                real = real_windows_from_store(store, window, opt.latent_windows, seed=seed, as_wplus=True)
            except ValueError as exc:
                raise SvgenError(str(exc), opt.latents) from None
            available = len(store.windows(window))
        metric = LatentFD(real)
        fake = motion_model.sample(opt.latent_windows, window, seed=seed)
        value = metric(fake)
        report["values"]["latent_fd"] = value
        report["metrics"]["latent_fd"] = {"value": value, "protocol": {
            **metric.protocol(), "num_fake_windows": int(opt.latent_windows), "fake_windows": "t=0 .. window-1",
            "real_windows_available": available, "real_windows_drawn_with_replacement":
                opt.latent_windows > available, "window_source": window_source, "seed": seed}}
    if "loop" in chosen:
        from svgen.metrics.looping import loop_score, motion_magnitude
        from svgen.metrics.render import batch_seed

        frames = opt.loop_frames or max(256, 8 * window)
        num = min(opt.num_videos, 64)
        loops, speeds = [], []
        for b, start in enumerate(range(0, num, 8)):  # bounded memory: 8 long trajectories at a time
            trajs = motion_model.sample(min(8, num - start), frames, seed=batch_seed(seed, b))
            loops += [loop_score(tr, min_lag=window) for tr in trajs]
            speeds += [motion_magnitude(tr) for tr in trajs]
        loops_arr = np.array(loops)
        stats = {"loop_score": float(np.nanmean(loops_arr)) if np.isfinite(loops_arr).any() else float("nan"),
                 "loop_score_max": float(np.nanmax(loops_arr)) if np.isfinite(loops_arr).any() else float("nan"),
                 "motion_magnitude": float(np.mean(speeds)),
                 "motion_magnitude_min": float(np.min(speeds))}
        report["values"]["loop_score"] = stats["loop_score"]
        report["values"]["motion_magnitude"] = stats["motion_magnitude"]
        report["metrics"]["loop"] = {"value": stats["loop_score"], **stats, "protocol": {
            "num_trajectories": num, "frames": frames, "min_lag": window, "window_source": window_source,
            "seed": seed, "seeding": "batches of 8, motion.sample(seed=SeedSequence([seed, b]))",
            "definition": "max over lags >= min_lag of 1 - D(lag) / max_{l<=lag} D(l), D = RMS latent "
                          "distance at a lag; motion_magnitude = mean |w[t+1]-w[t]| (flattened W+)"}}

    # -- pixel metrics ---------------------------------------------------------------------------
    pixel = [m for m in chosen if m in PIXEL_METRICS]
    detectors = _resolve_detectors(report, pixel, opt.detector_dir, dev, say)
    pixel = [m for m in pixel if m == "acd" or (m == "fid" and "inception" in detectors)
             or (m.startswith("fvd") and "i3d" in detectors)]
    if pixel:
        source = _video_source(report, motion_model, opt.generator, dev)
    fvds = [m for m in pixel if m.startswith("fvd")]
    if fvds or "fid" in pixel:
        from svgen.metrics.frechet import StatsCache
        from svgen.preprocessing.dataset import AlignedDataset

        dataset = AlignedDataset(opt.data)
        dataset_id = file_sha256(opt.data)
        report["inputs"]["data"] = {"path": str(opt.data), "sha256": dataset_id,
                                    "resolution": dataset.resolution, "clips": len(dataset.clips),
                                    "frames": len(dataset)}
        cache = None if opt.no_cache else StatsCache(opt.cache_dir)
    for m in fvds:
        from svgen.metrics.fvd import PROTOCOLS, compute_fvd

        try:
            res = compute_fvd(PROTOCOLS[m], dataset, dataset_id, source, detectors["i3d"],
                              num_fake=opt.num_videos, max_real=opt.max_real, seed=seed,
                              real_sampling=opt.real_sampling, method=opt.sqrt_method, cache=cache,
                              batch=opt.batch)
        except ValueError as exc:  # no clip long enough for this protocol
            say(f"warning: {m} skipped: {exc}")
            report["skipped"][m] = str(exc)
            continue
        if "warning" in res["protocol"]:
            say(f"warning: {m}: {res['protocol']['warning']}")
        report["values"][m] = res["value"]
        report["metrics"][m] = res
    if "fid" in pixel:
        from svgen.metrics.fid import compute_fid

        res = compute_fid(dataset, dataset_id, source, detectors["inception"], num_fake_frames=opt.fid_frames,
                          max_real=opt.fid_max_real, seed=seed, method=opt.sqrt_method, cache=cache,
                          batch=opt.batch or 64)
        report["values"]["fid"] = res["value"]
        report["metrics"]["fid"] = res
    if "acd" in pixel:
        from svgen.metrics.acd import FaceEmbedder, acd
        from svgen.metrics.render import batch_seed

        n = min(opt.num_videos, opt.acd_videos)
        frames = list(range(opt.acd_frames))

        def videos():
            for b in range(n):
                vid = source.videos(1, frames, seed=batch_seed(seed, b))[0]     # [T, 3, H, W] uint8
                yield list(vid.permute(0, 2, 3, 1).numpy())

        res = acd(videos(), FaceEmbedder())
        res["protocol"] = {"num_videos": n, "frames": opt.acd_frames, "fake_clips_start": "t=0", "seed": seed,
                           "fake_source": source.describe()}
        report["values"]["acd"] = res["value"]
        report["metrics"]["acd"] = res
    if "identity" in chosen:
        from svgen.metrics.acd import identity_distance

        frames = _read_video_frames(opt.animation)
        if opt.identity_frames and opt.identity_frames < len(frames):
            keep = np.linspace(0, len(frames) - 1, opt.identity_frames).round().astype(int)
            frames = [frames[k] for k in keep]
        res = identity_distance(frames, _read_photo(opt.identity), photo_name=str(opt.identity))
        report["inputs"]["animation"] = {"path": str(opt.animation), "sha256": file_sha256(opt.animation),
                                         "frames": len(frames)}
        report["inputs"]["identity"] = {"path": str(opt.identity), "sha256": file_sha256(opt.identity)}
        report["values"]["identity_distance"] = res["value"]
        report["values"]["animation_acd"] = res["acd"]
        report["metrics"]["identity"] = res
    if "landmark_motion" in chosen:
        _landmark_motion(report, opt, motion_model, dev, seed, say)
    if any(m in chosen for m in TEMPORAL_ID_METRICS):
        _temporal_identity(report, opt)


def _temporal_identity(report: dict, opt: EvalSpec) -> None:
    """TL-ID / TG-ID of --animation, normalised by the first --real-video (the unedited source) if given."""
    from svgen.metrics.temporal_identity import temporal_identity
    from svgen.utils.io import file_sha256

    source_path = opt.real_videos[0] if opt.real_videos else None
    frames = _read_video_frames(opt.animation, opt.identity_frames)
    source = _read_video_frames(source_path, opt.identity_frames) if source_path else None
    res = temporal_identity(frames, source)
    res["protocol"] = {"animation": str(opt.animation), "animation_sha256": file_sha256(opt.animation),
                       "source": None if source_path is None else str(source_path),
                       "source_sha256": None if source_path is None else file_sha256(source_path),
                       "max_frames": opt.identity_frames}
    report["values"]["tl_id"], report["values"]["tg_id"] = res["tl_id"], res["tg_id"]
    report["metrics"]["temporal_identity"] = res


def _landmark_motion(report: dict, opt: EvalSpec, motion_model: Any, dev: Any, seed: int,
                     say: Callable[[str], None]) -> None:
    """Landmark features of the real reference and of --animation / rendered --motion samples."""
    from svgen.metrics.landmark_motion import (LandmarkMotionConfig, compare, frames_features, load_features,
                                               plot_features, video_features)
    from svgen.metrics.render import batch_seed
    from svgen.preprocessing.landmarks import DlibLandmarks
    from svgen.utils.io import file_sha256

    cfg = LandmarkMotionConfig(window=opt.landmark_window, method=opt.sqrt_method, seed=seed)
    backend = DlibLandmarks()
    real_paths = opt.real_videos or (opt.data,)
    real = []
    for path in real_paths:
        series = load_features(path, backend, cfg)
        if sum(int(s.detected.sum()) for s in series) < cfg.window:
            raise SvgenError(f"dlib finds a face in fewer than {cfg.window} frames: not usable as the real "
                             "reference of landmark_motion", path)
        real += series
    fake = []
    if opt.animation is not None:
        fake.append(video_features(opt.animation, backend, cfg))
    if motion_model is not None:
        source = _video_source(report, motion_model, opt.generator, dev)
        frames = range(opt.landmark_frames)
        for b in range(opt.landmark_samples):
            vid = source.videos(1, frames, seed=batch_seed(seed, b))[0].permute(0, 2, 3, 1).numpy()
            fake.append(frames_features(vid, real[0].fps, f"sample {b}", backend, cfg))
    res = compare(real, fake, cfg)
    if "problem" in res:
        say(f"warning: landmark_motion: {res['problem']}")
    res["protocol"]["real_sha256"] = {str(p): file_sha256(p) for p in real_paths}
    if opt.motion is not None:
        res["protocol"]["rendered"] = {"samples": opt.landmark_samples, "frames": opt.landmark_frames,
                                       "fps": real[0].fps, "seeding": "sample b: SeedSequence([seed, b])"}
    if opt.landmark_plot is not None:
        res["plot"] = str(plot_features(real, fake, opt.landmark_plot))
    for key in ("value", "ref_real_halves", "ref_frozen", "ref_shuffled"):
        name = "landmark_fd" if key == "value" else f"landmark_fd_{key}"
        report["values"][name] = res[key]
    targets = res["targets"]
    report["values"]["landmark_mar_spread_ratio"] = targets["mar_spread_ratio"]
    report["values"]["landmark_motion_ok"] = targets["ok"]
    report["metrics"]["landmark_motion"] = res
