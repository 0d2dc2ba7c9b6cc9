"""Latent editing: directions in W (GANSpace PCA of a generator, InterFaceGAN / GANSpace files) and
edits over time applied to W+ trajectories before rendering (``--edit FILE:INDEX:STRENGTH``)."""
