"""The metrics ``svgen evaluate`` knows, by the inputs they need (no heavy imports: the CLI's help uses them)."""
from __future__ import annotations

PIXEL_METRICS = ("fvd16", "fvd128", "fvd128_sub8", "fid", "acd")
LATENT_METRICS = ("latent_fd", "loop")
TEMPORAL_ID_METRICS = ("tl_id", "tg_id")  # STIT's temporal identity of --animation (vs the first --real-video)
ALL_METRICS = PIXEL_METRICS + LATENT_METRICS + ("identity", "landmark_motion") + TEMPORAL_ID_METRICS
OWN_INPUT_METRICS = ("identity", "landmark_motion") + TEMPORAL_ID_METRICS  # work on --animation without --motion
DEFAULT_WINDOW = 25  # StyleVideoGAN's training window, used when the motion model does not say
