"""RLlib (new API stack) pieces: the selector as an RLModule and PPO learners with distillation."""

from memsel.rllib_models.learner import DistillPPOTorchLearner, NaturalPPOTorchLearner, learner_class
from memsel.rllib_models.module import SelectorRLModule

__all__ = ["DistillPPOTorchLearner", "NaturalPPOTorchLearner", "SelectorRLModule", "learner_class"]
