"""Fixtures shared by the motion-model tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These toy-sized models run fastest on one thread (OpenMP fan-out costs more than it saves
    on tensors this small, and much more on a busy machine); the setting is restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
