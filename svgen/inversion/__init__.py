"""svgen.inversion: frames -> StyleGAN latents.

- ``backbone``: the IR-SE backbone (50-layer layout and a narrow ``tiny`` variant);
- ``encoders``: pSp's GradualStyleEncoder into W+ and an encoder into W, ``load_encoder``;
- ``losses``: pixel L2, MS-SSIM, latent L2; LPIPS / ArcFace identity from user weight files;
- ``train``: ``svgen train-encoder`` against a frozen generator;
- ``project``: optimisation-based refinement with a temporal smoothness term;
- ``api``: ``invert_images`` (photos, driving videos) and ``invert_dataset`` (``svgen invert``);
- ``latent_store``: the resumable HDF5 store ``latents.h5``; ``reconstruct``: ``svgen reconstruct``.
"""
