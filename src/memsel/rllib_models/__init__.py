"""RLlib (new API stack) pieces: the selector as an RLModule and a PPO learner with distillation."""

from memsel.rllib_models.learner import DistillPPOTorchLearner
from memsel.rllib_models.module import SelectorRLModule

__all__ = ["DistillPPOTorchLearner", "SelectorRLModule"]
