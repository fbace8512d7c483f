"""Where tensors live: the ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) resolved once.

``auto`` picks the first GPU when torch sees one and the CPU otherwise; naming a GPU that is not there
is refused before any compute. Lightning (``trainer_kwargs``), RLlib (``num_gpus_per_learner``) and
evaluation (``torch_device``) all read the setting through these functions.
"""

from __future__ import annotations

import torch

from memsel.config import DEVICE_PATTERN


def torch_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device ``name`` means here (a torch.device passes through); a GPU that torch cannot see
    is refused with a ValueError."""
    if isinstance(name, torch.device):
        return name
    if not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        index = device.index or 0
        if index >= count:
            raise ValueError(f"device: {name!r} asked for, but torch sees {count} GPU(s) on this machine")
    return device


def trainer_kwargs(name: str = "auto") -> dict:
    """Lightning Trainer ``accelerator`` and ``devices`` for ``name``."""
    device = torch_device(name)
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


def gpus_per_learner(name: str = "auto") -> int:
    """RLlib's ``num_gpus_per_learner``: 1 when ``name`` resolves to a GPU, else 0."""
    return int(torch_device(name).type == "cuda")
