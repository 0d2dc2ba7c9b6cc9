"""Shared utilities: errors, atomic I/O, configs, run directories, logging, seeding, devices."""
from svgen.utils.config import config_from_dict, config_to_dict
from svgen.utils.device import select_device
from svgen.utils.errors import SvgenError
from svgen.utils.io import atomic_path, atomic_write, file_sha256, torch_save_atomic, write_json
from svgen.utils.logging import JsonlLogger
from svgen.utils.rundir import RunDir, load_checkpoint
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "SvgenError", "atomic_path", "atomic_write", "file_sha256", "torch_save_atomic", "write_json",
    "config_from_dict", "config_to_dict", "select_device", "JsonlLogger", "RunDir",
    "load_checkpoint", "get_rng_state", "seed_everything", "set_rng_state",
]
