"""The device setting (memsel.devices): resolved once, refused before compute when it cannot be met."""

from __future__ import annotations

import pytest
import torch

from memsel.config import ConfigError, load_config
from memsel.devices import gpus_per_learner, torch_device, trainer_kwargs


def test_auto_is_the_cpu_without_a_gpu_and_the_first_gpu_with_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert torch_device("auto").type == expected
    assert gpus_per_learner("auto") == int(expected == "cuda")


def test_cpu_settings_for_every_consumer():
    assert torch_device("cpu") == torch.device("cpu")
    assert trainer_kwargs("cpu") == {"accelerator": "cpu", "devices": 1}
    assert gpus_per_learner("cpu") == 0


def test_a_gpu_that_is_not_there_is_refused_by_name():
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=missing):
        torch_device(missing)


def test_the_config_refuses_an_unknown_device_naming_the_field():
    with pytest.raises(ConfigError, match="'device'.*auto, cpu, cuda or cuda:N"):
        load_config(sets=["device=tpu"])
    assert load_config(sets=["device=cuda:1"]).device == "cuda:1"
