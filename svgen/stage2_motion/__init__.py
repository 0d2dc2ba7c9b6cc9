"""Stage 2: motion models trained in the latent space of a frozen StyleGAN2.

``gru/`` (StyleVideoGAN) and ``styleinv/`` (StyleInV) each hold model, data, train and a motion
wrapper; ``offset`` is the PCA offset trick; ``motion`` defines the :class:`MotionModel` protocol
the pipeline relies on and ``load_motion(path)``, which reads a ``motion.pt`` (docs/FORMATS.md).
"""
from svgen.stage2_motion.motion import MOTION_FORMAT, MotionModel, load_motion

__all__ = ["load_motion", "MotionModel", "MOTION_FORMAT"]
