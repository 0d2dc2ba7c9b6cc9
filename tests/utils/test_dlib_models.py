"""dlib's models are found without importing face_recognition_models and loaded once per process."""
from __future__ import annotations

import sys

import pytest

from svgen.utils import dlib_models
from svgen.utils.errors import SvgenError


def test_model_files_found_without_importing_the_package():
    sys.modules.pop("face_recognition_models", None)
    for name in dlib_models.MODEL_FILES:
        assert dlib_models.model_path(name).is_file()
    assert "face_recognition_models" not in sys.modules


def test_missing_model_file_names_it():
    with pytest.raises(SvgenError, match=r"^no_such_model\.dat: model file missing"):
        dlib_models.model_path("no_such_model.dat")


def test_models_load_once_and_are_shared():
    from svgen.preprocessing.landmarks import DlibLandmarks

    assert dlib_models.shape_predictor("shape68") is dlib_models.shape_predictor("shape68")
    assert dlib_models.shape_predictor("shape5") is not dlib_models.shape_predictor("shape68")
    assert dlib_models.frontal_face_detector() is dlib_models.frontal_face_detector()
    a, b = DlibLandmarks("hog"), DlibLandmarks("hog")
    assert a._predictor is b._predictor is dlib_models.shape_predictor("shape68")
    assert a._hog is b._hog
