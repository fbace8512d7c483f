"""The selector network as an RLlib RLModule (new API stack) with a value head for PPO."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec
from memsel.network import Selector, read_selector_file


def load_pretrained_selector(selector: Selector, path: str | bytes) -> None:
    """Copy a pretrained selector file (or its contents) into ``selector``; refuses mismatching shapes or keys."""
    blob = read_selector_file(path)
    if blob["spec"] != selector.export()["spec"]:
        where = "the pretrained selector" if isinstance(path, bytes) else path
        raise ValueError(f"{where}: pretrained for data shapes {blob['spec']}, but this module was built "
                         f"for {selector.export()['spec']}")
    selector.load_state_dict(blob["state_dict"], strict=True)


def orthogonal_init(module: nn.Module, out_gain: float) -> None:
    """Orthogonal init of every Linear layer: gain sqrt(2) for hidden layers, ``out_gain`` for layers
    with one output (scores, values); biases zero. Embeddings keep their init."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=out_gain if layer.out_features == 1 else 2 ** 0.5)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class SelectorRLModule(TorchRLModule, ValueFunctionAPI):
    """Policy = the selector's masked logits over memory slots; value = a small head on its read.

    model_config: ``selector`` (SelectorConfig fields), ``spec`` (DataSpec fields) and optionally
    ``pretrained`` (a selector file's contents; ``pretrained_path``, a file, in older checkpoints) and
    ``orthogonal_init``. The pretrained selector is loaded inside ``setup()``, so every copy of the module
    (learner and every env runner) starts from it: no weight-sync race after build. It travels as bytes so
    that a module rebuilt from a checkpoint on any machine finds it.
    """

    @override(TorchRLModule)
    def setup(self):
        mc = self.model_config
        self.selector = Selector(SelectorConfig(**mc["selector"]), DataSpec(**mc["spec"]))
        if self.action_space.n > self.selector.spec.max_memories:
            raise ValueError(f"action space has {self.action_space.n} slots, selector expects "
                             f"{self.selector.spec.max_memories}")
        f, h = self.selector.feature_dim, self.selector.config.hidden_dim
        self.value_head = nn.Sequential(nn.Linear(f, h), nn.Tanh(), nn.Linear(h, 1))
        if mc.get("orthogonal_init"):
            # CleanRL's recipe: orthogonal weights, zero biases; a small gain on the policy's score
            # outputs (near-uniform first policy), gain 1 on the value output. A pretrained file
            # loaded below replaces the selector's part; the value head keeps this init.
            orthogonal_init(self.selector, out_gain=0.01)
            orthogonal_init(self.value_head, out_gain=1.0)
        pretrained = mc.get("pretrained") or mc.get("pretrained_path")
        if pretrained:
            load_pretrained_selector(self.selector, pretrained)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.selector(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        logits, features = self.selector(batch[Columns.OBS], return_features=True)
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: features}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            _, embeddings = self.selector(batch[Columns.OBS], return_features=True)
        # Detached: the value loss must not pull the pretrained attention away from what it selects.
        return self.value_head(embeddings.detach()).squeeze(-1)
