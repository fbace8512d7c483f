"""Components register themselves (memsel.registry): adding a selector family, a memory-budget strategy,
a dataset, an answer reader or a Tune scheduler is one module; each toy one here is registered in the
test and used through the normal config path, nothing else edited."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from memsel.config import Config, ConfigError, from_dict, load_config
from memsel.data.budget import STRATEGIES, Budget, BudgetStrategy, apply_budget
from memsel.data.encode import DataSpec
from memsel.data.sample import DATASETS, DatasetSplits, Sample
from memsel.env import READERS, MemorySelectionEnv, make_env_config
from memsel.families import FeedForwardSelector
from memsel.registry import Registry, UnknownNameError
from memsel.selector_configs import FAMILIES, SelectorConfig
from memsel.tune_configs import SCHEDULERS

REPO = Path(__file__).resolve().parents[1]
SPEC = DataSpec(vocab_size=20, max_memories=6, max_sentence_len=4)


@pytest.fixture
def registered():
    """Register toy components for one test and remove them afterwards."""
    added: list[tuple[Registry, str]] = []

    def add(registry: Registry, name: str, component, config_cls=None):
        registry.register(name, config_cls)(component)
        added.append((registry, name))
        return component
    yield add
    for registry, name in added:
        registry.unregister(name)


def test_registry_lookup_names_and_errors():
    reg = Registry("widget")

    @reg.register("a")
    def a():
        return "a"

    reg.register_reference("b", "memsel.data.budget:Truncate")
    assert reg.names() == ("a", "b") and "a" in reg and reg.get("a") is a
    assert reg.get("b").__name__ == "Truncate"  # a reference resolves on first use
    with pytest.raises(UnknownNameError, match=r"unknown widget 'c': expected one of \['a', 'b'\]"):
        reg.get("c")
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a")(lambda: None)


# ----------------------------------------------------------------------------- selector families

@dataclass
class ToyConfig(SelectorConfig):
    """A toy family: ``ff``'s scores times ``scale``."""

    kind: str = "toy"
    scale: float = 1.0

    def validate_family(self, p: str) -> None:
        if self.scale <= 0:
            raise ConfigError(f"field '{p}.scale': expected a number > 0, got {self.scale}")


class ToySelector(FeedForwardSelector):
    def __init__(self, cfg: ToyConfig):
        super().__init__(cfg)
        self.scale = cfg.scale

    def score(self, hop, x, u, ages, mask, order=None):
        return self.scale * super().score(hop, x, u, ages, mask, order)


def _obs(n_rows: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])[:n_rows]
    return {"memories": torch.randint(1, 20, (n_rows, 6, 4), generator=g) * mask[..., None],
            "query": torch.randint(1, 20, (n_rows, 4), generator=g), "mask": mask,
            "ages": (mask.sum(1, keepdim=True) - 1 - torch.arange(6)).clamp(min=0) * mask}


def test_a_selector_family_is_one_registration(registered, tmp_path):
    from memsel.network import Selector

    registered(FAMILIES, "toy", ToySelector, ToyConfig)
    cfg = load_config(sets=["selector.kind=toy", "selector.scale=2", "selector.embed_dim=8"])
    assert isinstance(cfg.selector, ToyConfig) and cfg.selector.scale == 2.0
    net = Selector(cfg.selector, SPEC).eval()
    assert isinstance(net.family, ToySelector) and net(_obs()).shape == (2, 6)
    again = Selector.load(net.save(tmp_path / "toy.pt"))
    assert isinstance(again.config, ToyConfig) and torch.equal(again(_obs()), net(_obs()))
    with pytest.raises(ConfigError, match="selector.scale"):
        load_config(sets=["selector.kind=toy", "selector.scale=0"])
    with pytest.raises(ConfigError, match=r"'selector.kind'.*'toy'"):  # the message lists it with the others
        load_config(sets=["selector.kind=nope"])


def test_family_settings_belong_to_their_family():
    with pytest.raises(ConfigError) as info:
        load_config(sets=["selector.num_heads=8"])  # kind ff has no heads
    message = str(info.value)
    assert "'selector.num_heads'" in message and "selector.kind 'ff'" in message and "embed_dim" in message
    mha = load_config(sets=["selector.kind=mha", "selector.num_heads=8"])
    assert mha.selector.num_heads == 8
    assert SelectorConfig(kind="mha", num_heads=2).num_heads == 2  # constructing by kind gives the family's class


def test_set_kind_after_a_yaml_with_another_family(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("selector:\n  kind: ff\n  embed_dim: 16\n", encoding="utf-8")
    cfg = load_config(path, ["selector.kind=mha", "selector.num_heads=8"])
    assert (cfg.selector.kind, cfg.selector.embed_dim, cfg.selector.num_heads) == ("mha", 16, 8)
    back = load_config(path, ["selector.kind=mha", "selector.num_heads=8", "selector.kind=conv1d"])
    assert back.selector.kind == "conv1d" and not hasattr(back.selector, "num_heads")


def test_saved_flat_selector_configs_still_load():
    old = {"kind": "ff", "embed_dim": 8, "hidden_dim": 8, "encoder": "pe", "recency": True, "relative_age": True,
           "residual": False, "num_residual_blocks": 1, "attention": "softmax", "hops": 1, "num_heads": 4,
           "self_attention_layers": 0, "self_attention": "full", "attention_chunk": 256, "conv_kernel": 3,
           "se_reduction": 4, "dropout": 0.0}
    ff = SelectorConfig.from_saved(old)
    assert type(ff).__name__ == "FFConfig" and not hasattr(ff, "num_heads") and ff.embed_dim == 8
    mha = SelectorConfig.from_saved({**old, "kind": "mha", "num_heads": 2})
    assert mha.num_heads == 2 and not hasattr(mha, "conv_kernel")


@pytest.mark.parametrize("sets", [[], ["selector.kind=mha", "selector.num_heads=2"], ["selector.kind=conv1d"],
                                  ["selector.kind=se", "env.budget_strategy=sample", "env.memory_budget=4"]])
def test_to_dict_from_dict_round_trip(sets):
    cfg = load_config(sets=sets)
    assert from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    assert from_dict(cfg.to_dict()).flat() == cfg.flat()


def test_validate_checks_and_never_changes_the_config():
    cfg = Config()
    cfg.tune.search_space = {"ppo.lr": {"loguniform": ["1e-5", "1e-3"]}}  # strings, as YAML 1.1 reads them
    before = cfg.to_dict()
    cfg.validate()
    assert cfg.to_dict() == before
    loaded = load_config(sets=["tune.search_space={lr: {loguniform: [1e-5, 1e-3]}}"])
    assert loaded.tune.search_space == {"ppo.lr": {"loguniform": [1e-5, 1e-3]}}  # converted while reading


# ----------------------------------------------------------------------------- budget strategies

class Oldest(BudgetStrategy):
    """The K oldest memories (a toy stateful strategy: it counts its calls)."""

    def __init__(self, config=None):
        super().__init__(config)
        self.calls = 0

    def select(self, mask, ages, k, rng):
        self.calls += 1
        idx = np.broadcast_to(np.arange(k), (mask.shape[0], k)).copy()
        idx[idx >= mask.sum(1, keepdims=True)] = -1
        return idx


def test_a_budget_strategy_is_one_registration(registered, tmp_path):
    from memsel.data.babi import parse_babi
    from memsel.data.encode import Vocab, encode, spec_for
    from memsel.data.generate import write_task1

    registered(STRATEGIES, "oldest", Oldest)
    cfg = load_config(sets=["env.budget_strategy=oldest", "env.memory_budget=2"])
    samples = parse_babi(write_task1(tmp_path / "t_train.txt", 3, seed=1))
    vocab = Vocab.build(samples)
    data = encode(samples, vocab, spec_for(samples, vocab=vocab))
    seen = apply_budget(data, Budget.from_config(cfg.env))
    assert seen.memories.shape[1] == 2 and np.array_equal(seen.memories, data.memories[:, :2])
    env = MemorySelectionEnv(make_env_config(cfg.env, data=data, seed=0))
    assert env.n_slots == 2 and isinstance(env.budget.rule, Oldest)
    with pytest.raises(ConfigError, match=r"env.budget_strategy.*'oldest'"):
        load_config(sets=["env.budget_strategy=newest", "env.memory_budget=2"])
    with pytest.raises(ConfigError, match=r"env.budget_options"):  # it has no settings
        load_config(sets=["env.budget_strategy=oldest", "env.memory_budget=2", "env.budget_options.x=1"])


# ----------------------------------------------------------------------------- datasets

@dataclass
class CountingConfig:
    stories: int = 2

    def validate(self, p: str = "data") -> None:
        if self.stories < 1:
            raise ConfigError(f"field '{p}.dataset_options.stories': expected an integer >= 1, got {self.stories}")


def counting(config: CountingConfig, seed: int, folder: Path) -> DatasetSplits:
    """A toy dataset: 'x is N' statements; the question asks for the last one."""
    def story(i: int, n: int) -> list[Sample]:
        memories = tuple(f"x is n{j}" for j in range(n))
        return [Sample(memories, "what is x", f"n{n - 1}", (n - 1,), i, f"counting:{i}")]
    train = [s for i in range(config.stories) for s in story(i, 3 + i % 2)]
    return DatasetSplits(train, story(0, 2), {"name": "counting", "stories": str(config.stories)})


def test_a_dataset_is_one_registration(registered, tmp_path):
    from memsel.data.prepare import prepare_data

    registered(DATASETS, "counting", counting, CountingConfig)
    cfg = load_config(sets=["data.dataset=counting", "data.dataset_options.stories=4", "data.val_fraction=0.25"],
                      run_dir=str(tmp_path / "run"))
    data = prepare_data(cfg)
    assert len(data.train) + len(data.val) == 4 and len(data.test) == 1 and data.spec.max_memories == 4
    with pytest.raises(ConfigError, match="data.dataset_options.stories"):
        load_config(sets=["data.dataset=counting", "data.dataset_options.stories=0"])
    with pytest.raises(ConfigError, match=r"'data.dataset'.*'babi', 'generated'"):
        load_config(sets=["data.dataset=wiki"])
    assert load_config().data.dataset_name == "generated"
    assert load_config(sets=["data.path=/x/qa1_train.txt"]).data.dataset_name == "babi"


# ----------------------------------------------------------------------------- readers, schedulers

class FirstTokenReader:
    """Answers with the first token of the first chosen memory."""

    def __call__(self, memories, chosen, query):
        return int(memories[chosen[0], 0])


def test_a_reader_is_one_registration(registered, tmp_path):
    from memsel.data.babi import parse_babi
    from memsel.data.encode import Vocab, encode, spec_for
    from memsel.data.generate import write_task1

    registered(READERS, "first_token", FirstTokenReader)
    cfg = load_config(sets=["env.reward_mode=answer", "env.reader=first_token"])
    samples = parse_babi(write_task1(tmp_path / "t_train.txt", 2, seed=1))
    vocab = Vocab.build(samples)
    env = MemorySelectionEnv(make_env_config(cfg.env, data=encode(samples, vocab, spec_for(samples, vocab=vocab)),
                                             seed=0))
    assert isinstance(env.reader, FirstTokenReader)
    env.reset()
    assert env.step(0)[1] in (0.0, 1.0)
    with pytest.raises(ConfigError, match=r"'env.reader'.*'contains', 'learned'"):
        load_config(sets=["env.reader=oracle"])


def test_a_scheduler_is_one_registration(registered):
    registered(SCHEDULERS, "fifo_too", lambda config, settings, max_t, mutations=None: None)
    assert load_config(sets=["tune.scheduler=fifo_too"]).tune.scheduler == "fifo_too"
    with pytest.raises(ConfigError, match=r"'tune.scheduler'.*'asha', 'pbt', 'none', 'fifo_too'"):
        load_config(sets=["tune.scheduler=hyperband"])


# ----------------------------------------------------------------------------- results must not move

@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    assert from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    assert dataclasses.asdict(cfg.selector) == cfg.to_dict()["selector"]


# ----------------------------------------------------------------------------- plug-in modules

PLUGIN = '''
from dataclasses import dataclass

from memsel.families import FeedForwardSelector
from memsel.selector_configs import FAMILIES, SelectorConfig


@dataclass
class PluggedConfig(SelectorConfig):
    kind: str = "plugged"
    width: int = 3


@FAMILIES.register("plugged", PluggedConfig)
class PluggedSelector(FeedForwardSelector):
    pass
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A family in a module of its own, on the import path; unregistered afterwards."""
    import sys

    (tmp_path / "memsel_test_plugin.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "memsel_test_plugin"
    FAMILIES.unregister("plugged")
    sys.modules.pop("memsel_test_plugin", None)


def test_a_family_in_a_module_of_its_own_is_chosen_through_plugins(plugin_module, tmp_path):
    path = tmp_path / "run.yaml"
    # The selector section comes before plugins on purpose: plug-ins are imported before anything applies.
    path.write_text(f"selector: {{kind: plugged, width: 5, embed_dim: 8}}\nplugins: [{plugin_module}]\n")
    cfg = load_config(path)
    assert type(cfg.selector).__name__ == "PluggedConfig" and cfg.selector.width == 5
    from memsel.network import Selector
    assert type(Selector(cfg.selector, SPEC).family).__name__ == "PluggedSelector"
    assert from_dict(cfg.to_dict()).selector.width == 5  # a saved config.yaml names its plug-ins


def test_a_plugin_that_does_not_import_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"--set plugins=\[no_such_memsel_plugin\]: field 'plugins': module "
                                          r"'no_such_memsel_plugin' could not be imported: ModuleNotFoundError"):
        load_config(sets=["plugins=[no_such_memsel_plugin]"])
    without = tmp_path / "a.yaml"
    without.write_text("selector: {kind: plugged}\n")
    with pytest.raises(ConfigError, match=r"'selector.kind'.*'plugged'"):
        load_config(without)


def test_ray_workers_import_the_plugins_too(plugin_module, tmp_path):
    """A local Ray started for a config with plug-ins registers them in every worker process."""
    import os
    import subprocess
    import sys

    code = f"""
import ray
from memsel.config import load_config
from memsel.pipeline import init_ray
init_ray(load_config(sets=["plugins=[{plugin_module}]", "run_dir={tmp_path / 'run'}"]))

@ray.remote(num_cpus=0)
def kind_config():
    from memsel.selector_configs import SelectorConfig
    return type(SelectorConfig(kind="plugged")).__name__

print("worker:", ray.get(kind_config.remote()))
ray.shutdown()
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "worker: PluggedConfig" in out.stdout
