"""The skeleton's building blocks: lazy-regularised Adam, EMA schedules, gradient scrubbing, the run
folder's overwrite guard and resume policy, and the TensorBoard log (when installed)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
import torch

from svgen.stage1_image_gan.presets import get_preset
from svgen.training import (Run, from_invocation, half_life_beta, lazy_regularised_adam, legacy_default,
                            resumed_config, saved_config, scrub_gradients, update_ema, warmup_beta)
from svgen.utils.errors import SvgenError
from svgen.utils.logging import read_jsonl


def test_lazy_regularised_adam_constants() -> None:
    lin = torch.nn.Linear(2, 2)
    group = lazy_regularised_adam(lin.parameters(), lr=0.002, betas=(0.0, 0.99), reg_interval=4).param_groups[0]
    assert group["lr"] == pytest.approx(0.0016)
    assert group["betas"][1] == pytest.approx(0.99 ** 0.8) and group["betas"][0] == 0.0 and group["eps"] == 1e-8
    opt = lazy_regularised_adam(lin.parameters(), lr=0.002, betas=(0.0, 0.99), reg_interval=16)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * 16 / 17)
    plain = lazy_regularised_adam(lin.parameters(), lr=0.002, betas=(0.5, 0.99), reg_interval=0)
    assert plain.param_groups[0]["lr"] == 0.002 and plain.param_groups[0]["betas"] == (0.5, 0.99)


def test_ema_schedules() -> None:
    preset = get_preset("tiny", 32)  # ema_kimg 1.25 (batch 4 * 10 / 32), ramp-up 0.05
    beta = lambda nimg: half_life_beta(8, nimg, preset.ema_kimg, preset.ema_rampup)  # noqa: E731
    assert beta(0) == 0.0  # ramp-up: EMA = G at the start
    assert beta(1000) == pytest.approx(0.5 ** (8 / 50))
    assert beta(10 ** 7) == pytest.approx(0.5 ** (8 / 1250))
    assert half_life_beta(16, 0, 20.0, None) == pytest.approx(0.5 ** (16 / 20000))   # no ramp-up
    assert warmup_beta(0.995, 0) == pytest.approx(0.1) and warmup_beta(0.995, 10 ** 5) == 0.995


def test_update_ema_lerps_parameters_and_copies_buffers() -> None:
    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    update_ema(ema, model, 0.75)
    assert torch.allclose(ema.weight, torch.full([3], 0.75 * 1.0 + 0.25 * 2.0))
    assert torch.equal(ema.running_mean, model.running_mean)


def test_scrub_gradients() -> None:
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.5])
    scrub_gradients([p])
    assert p.grad.tolist() == [0.0, 1e5, -1e5, 1.5]


@dataclasses.dataclass
class _Cfg:
    out: str = from_invocation("")
    steps: Optional[int] = from_invocation(None, if_given=True)
    lr: float = 1e-3
    units: str = legacy_default("raw", legacy="normalised")


def test_resume_policy_takes_only_the_declared_fields() -> None:
    saved = _Cfg(out="a", steps=10, lr=5e-4, units="raw")
    got = resumed_config(saved, _Cfg(out="b", steps=None, lr=1.0))
    assert (got.out, got.steps, got.lr) == ("b", 10, 5e-4)        # length kept when not given
    assert resumed_config(saved, _Cfg(out="b", steps=20)).steps == 20
    assert saved_config(_Cfg, {"out": "a", "lr": 0.1}).units == "normalised"   # saved before the field
    assert saved_config(_Cfg, {"out": "a", "units": "raw"}).units == "raw"


def test_run_folder_guard(tmp_path) -> None:
    with pytest.raises(SvgenError, match="no checkpoint exists"):
        Run(tmp_path / "r", resume=True)
    run = Run(tmp_path / "r", resume=False)
    run.save_checkpoint({"step": 1}, snapshot_name="snap-1.pt")
    run.log_step(step=1, loss=0.5)
    run.close()
    run.dir.lock.release()
    assert (tmp_path / "r" / "checkpoints" / "snap-1.pt").is_file()
    assert read_jsonl(tmp_path / "r" / "log.jsonl")[0]["loss"] == 0.5
    with pytest.raises(SvgenError, match="already holds a training run"):
        Run(tmp_path / "r", resume=False)
    assert Run(tmp_path / "r", resume=True).load_latest()["step"] == 1


def test_tensorboard_events_beside_log_jsonl(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Run(tmp_path / "r", resume=False)
    for step in (1, 2):
        run.log_step(step=step, loss=1.0 / step, note="text is skipped")
    run.close()
    acc = EventAccumulator(str(tmp_path / "r"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 0.5)]


def test_resume_checkpoint_kind_and_restore(tmp_path) -> None:
    """The one resume loader refuses another kind or a file without training state; ``restore`` loads
    every named part and skips optional parts the checkpoint predates."""
    from svgen.training.state import load_resume_checkpoint, restore, state_dicts

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(a.parameters(), lr=0.1)
    a(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = tmp_path / "latest.pt"
    torch.save({"format": "svgen-motion", "model": "gru", "step": 3, **state_dicts({"net": a, "opt": opt})}, path)
    with pytest.raises(SvgenError, match="expected a StyleInV motion checkpoint, found format 'svgen-motion' model 'gru'"):
        load_resume_checkpoint(path, "svgen-motion", model="styleinv", what="StyleInV motion")
    with pytest.raises(SvgenError, match=r"no training state \(missing opt_D\)"):
        load_resume_checkpoint(path, "svgen-motion", required=("opt", "opt_D"), what="motion")
    ckpt = load_resume_checkpoint(path, "svgen-motion", model="gru", required=("net", "opt"))
    opt_b = torch.optim.Adam(b.parameters(), lr=0.1)
    restore(ckpt, {"net": b, "opt": opt_b, "ada": torch.nn.Linear(1, 1), "unused": None}, optional=("ada",))
    assert torch.equal(b.weight, a.weight) and torch.equal(b.bias, a.bias)
    assert torch.equal(opt_b.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(KeyError):
        restore(ckpt, {"ada": torch.nn.Linear(1, 1)})              # a required part that is missing


def test_fit_calls_log_preview_and_snapshots_at_their_step_cadences(tmp_path) -> None:
    """The shared outer loop: a resumed position continues the cadences, the last step ends with one final
    snapshot (not a periodic one too), ``log_last`` logs the last step."""
    from svgen.training.loop import fit

    pos = {"step": 3}                                       # resumed at step 3
    calls: list = []

    def step_fn() -> dict:
        pos["step"] += 1
        return {"loss": 1.0 / pos["step"]}

    run = Run(tmp_path / "r", resume=False)
    fit(run, step_fn, lambda: pos["step"], lambda: pos["step"] >= 10,
        lambda final: calls.append(("snap", pos["step"], final)),
        total=10, log_every=4, snapshot_every=3, preview_every=5,
        preview=lambda: calls.append(("preview", pos["step"])),
        log_last=True, show_progress=False, reduce_stats=lambda st: {k: 2 * v for k, v in st.items()})
    run.close()
    assert calls == [("preview", 5), ("snap", 6, False), ("snap", 9, False), ("snap", 10, True)]
    logs = read_jsonl(tmp_path / "r" / "log.jsonl")
    assert [(r["step"], r["loss"]) for r in logs] == [(4, 0.5), (8, 0.25), (10, 0.2)]    # reduced, logged steps only
    assert all(r["sec_per_step"] >= 0 for r in logs)
