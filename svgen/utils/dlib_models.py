"""dlib's face models, located on disk and loaded once per process.

The model files ship in the PyPI package ``face-recognition-models``. They are found through the
package's import spec, which does not run its ``__init__`` (that needs ``pkg_resources``, absent
from current setuptools). Loading the 68-point predictor and the HOG detector costs seconds, so
each model is built at most once per process (``functools.lru_cache``) and shared by the
preprocessing tracker, photo alignment, ``animate``'s driving video and the ACD metric. The
returned dlib objects are only read (run, never trained), which is why they can be shared.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from svgen.utils.errors import SvgenError

MODEL_PACKAGE = "face-recognition-models"

# short name -> file name inside face_recognition_models/models
MODEL_FILES: dict[str, str] = {
    "shape68": "shape_predictor_68_face_landmarks.dat",
    "shape5": "shape_predictor_5_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
}


def model_path(name: str) -> Path:
    """Path of a dlib model file: a short name of :data:`MODEL_FILES` or a file name."""
    filename = MODEL_FILES.get(name, name)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SvgenError(f"the PyPI package {MODEL_PACKAGE} is not installed (pip install {MODEL_PACKAGE}); "
                         "it ships dlib's models", filename)
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / "models" / filename
        if candidate.is_file():
            return candidate
    raise SvgenError(f"model file missing from the {MODEL_PACKAGE} package (reinstall it)", filename)


def _load(factory: str, name: str) -> Any:
    import dlib

    path = model_path(name)
    try:
        return getattr(dlib, factory)(str(path))
    except RuntimeError as exc:  # truncated or foreign file
        raise SvgenError(f"cannot load this dlib model ({' '.join(str(exc).split())})", path) from None


@functools.lru_cache(maxsize=None)
def shape_predictor(name: str = "shape68") -> Any:
    """dlib's landmark predictor (``shape68`` or ``shape5``), loaded once per process."""
    return _load("shape_predictor", name)


@functools.lru_cache(maxsize=None)
def cnn_face_detector() -> Any:
    """dlib's CNN (mmod) face detector, loaded once per process."""
    return _load("cnn_face_detection_model_v1", "mmod")


@functools.lru_cache(maxsize=None)
def face_recognizer() -> Any:
    """dlib's face-recognition ResNet (128-d embeddings), loaded once per process."""
    return _load("face_recognition_model_v1", "resnet")


@functools.lru_cache(maxsize=None)
def frontal_face_detector() -> Any:
    """dlib's HOG frontal face detector, built once per process."""
    import dlib

    return dlib.get_frontal_face_detector()


__all__ = ["MODEL_PACKAGE", "MODEL_FILES", "model_path", "shape_predictor", "cnn_face_detector",
           "face_recognizer", "frontal_face_detector"]
