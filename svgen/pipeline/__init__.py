"""What users run, composed from the stages: ``animate``/``sample``, ``edit-video`` and the demo.

Imports flow downward: the CLI calls this layer; this layer calls the stages; a stage never
orchestrates its siblings."""
