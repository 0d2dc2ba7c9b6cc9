"""svgen.stage1_image_gan: StyleGAN2 in PyTorch (networks, presets, checkpoints, training).

- ``presets``: ``GeneratorConfig``, ``DiscriminatorConfig``, ``TrainPreset``, ``get_preset(name, res)``.
- ``layers`` / ``networks``: ``Generator(cfg)`` (``.mapping``, ``.synthesis``) and ``Discriminator(cfg)``.
- ``checkpoint_format``: the ``generator.pt`` dict (``make_generator_checkpoint``, validation).
- ``checkpoints``: ``save_generator``, ``build_networks``, ``load_checked_generator``,
  ``load_generator`` (svgen ``.pt``, NVIDIA ``.pkl``, rosinality ``.pt``).
- ``importers``: the restricted NVIDIA unpickler and the rosinality key mapping.
"""
