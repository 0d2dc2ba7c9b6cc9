"""svgen.metrics: one metrics package for every stage and the training loops.

- ``frechet``: Fréchet distance (sqrtm | svd, recorded), streaming Gaussian statistics, real-stats cache
- ``latent_fd``: Fréchet distance between windows of latent trajectories (cheap, logged at snapshots)
- ``looping``: loop score and motion magnitude of a latent trajectory
- ``fvd`` / ``fid``: StyleGAN-V protocols with the published TorchScript detectors (``detectors``)
- ``acd``: identity consistency with dlib's face-recognition ResNet
- ``landmark_motion``: face motion from dlib's 68 landmarks (mouth/eye opening, head yaw/pitch):
  spreads, rhythms, blinks, a Fréchet distance of feature windows with real/frozen/shuffled references
- ``render``: generated videos (motion model -> frozen generator) for the pixel metrics
- ``plots``: PNG charts of a run's ``metrics.jsonl``
- ``swd``: sliced Wasserstein distance (stage 1)

Submodules are imported on demand so ``import svgen.metrics`` stays cheap.
"""
