"""Both motion models satisfy the MotionModel protocol the pipeline relies on, and train-motion
refuses options that do not apply to the chosen model instead of ignoring them."""
from __future__ import annotations

from pathlib import Path

import pytest

from clitools import run_cli

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_motion"


@pytest.mark.parametrize("name, cls", [("gru.pt", "GRUMotion"), ("styleinv.pt", "StyleInVMotion")])
def test_loaded_models_are_motion_models(name, cls):
    from svgen.stage2_motion import MotionModel, load_motion

    m = load_motion(GOLDEN / name)
    assert isinstance(m, MotionModel) and type(m).__name__ == cls
    assert (m.num_ws, m.w_dim, m.train_fps) == (8, 128, 25.0) and m.model_name == name[:-3]
    assert (m.pca is None) == (name == "styleinv.pt")


@pytest.mark.parametrize("model, option", [("styleinv", ["--stride", "4"]), ("styleinv", ["--lambda-gap", "0"]),
                                           ("styleinv", ["--n-critic", "2"]), ("gru", ["--disc", "latent"]),
                                           ("gru", ["--data", "aligned.zip"])])
def test_train_motion_refuses_options_of_the_other_model(model, option, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train-motion", "--latents", tmp_path / "latents.h5", "--model", model,
                           "--out", tmp_path / "run", *option)
    other = "gru" if model == "styleinv" else "styleinv"
    assert code == 2 and f"{option[0]} does not apply to --model {model} (only to --model {other})" in err, err
    assert not (tmp_path / "run").exists()
