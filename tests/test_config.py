"""Typed configuration (memsel.config): defaults, YAML, --set, and refusals that name the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from memsel.config import (Config, ConfigError, DataConfig, EnvConfig, ManagerConfig, PPOSettings, PretrainConfig,
                           SelectorConfig, TuneSettings, from_dict, load_config, parse_set)

REPO = Path(__file__).resolve().parents[1]


def test_defaults_validate():
    cfg = Config().validate()
    assert cfg.name == "quickstart" and cfg.seed == 0
    assert load_config().to_dict() == Config().to_dict()


def test_run_path_and_tracking_uri(tmp_path):
    cfg = load_config(run_dir=str(tmp_path / "r"))
    assert cfg.run_path == (tmp_path / "r").resolve()
    assert cfg.resolved_tracking_uri == f"sqlite:///{(tmp_path / 'r').resolve() / 'mlflow.db'}"
    named = load_config(name="exp7")
    assert named.run_path == Path("runs/exp7").resolve()


def test_yaml_file_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mine", "seed": 3,
        "data": {"train_stories": 7, "val_fraction": 0.25},
        "ppo": {"lr": 0.001, "use_pretrained": False},
        "pretrain": {"lr": 1},  # an int is a fine float
    }), encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.name, cfg.seed) == ("mine", 3)
    assert cfg.data.train_stories == 7 and cfg.data.val_fraction == 0.25
    assert cfg.data.test_stories == DataConfig().test_stories  # untouched fields keep defaults
    assert cfg.ppo.lr == 0.001 and cfg.ppo.use_pretrained is False
    assert cfg.pretrain.lr == 1.0 and isinstance(cfg.pretrain.lr, float)


def test_precedence_defaults_file_set_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nppo:\n  lr: 0.001\n", encoding="utf-8")
    cfg = load_config(path, ["ppo.lr=0.002", "seed=4"], seed=9, name=None)
    assert cfg.ppo.lr == 0.002  # --set beats the file
    assert cfg.seed == 9  # explicit flags beat --set
    assert cfg.name == "quickstart"  # None flags do not override


def test_empty_yaml_file_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert load_config(path).to_dict() == Config().to_dict()


@pytest.mark.parametrize("item, expected", [
    ("seed=5", {"seed": 5}),
    ("ppo.lr=1e-4", {"ppo": {"lr": "1e-4"}}),  # YAML 1.1 reads this as a string; load_config converts it
    ("ppo.lr=3.5E-2", {"ppo": {"lr": 0.035}}),
    ("ppo.lr=0.001", {"ppo": {"lr": 0.001}}),
    ("ppo.use_pretrained=false", {"ppo": {"use_pretrained": False}}),
    ("pretrain.use_labels=true", {"pretrain": {"use_labels": True}}),
    ("name=exp1", {"name": "exp1"}),
    ("data.path=null", {"data": {"path": None}}),
    ("tune.search_space.lr.choice=[0.1, 0.2]", {"tune": {"search_space": {"lr": {"choice": [0.1, 0.2]}}}}),
    ("name=a=b", {"name": "a=b"}),
])
def test_parse_set(item, expected):
    assert parse_set(item) == expected


def test_parse_set_types_land_in_the_config():
    cfg = load_config(sets=["ppo.lr=1e-4", "ppo.iterations=3", "ppo.use_pretrained=false",
                            "data.val_fraction=0.2", "selector.recency=no", "experiment=exp"])
    assert cfg.ppo.lr == pytest.approx(1e-4) and isinstance(cfg.ppo.lr, float)
    assert cfg.ppo.iterations == 3 and isinstance(cfg.ppo.iterations, int)
    assert cfg.ppo.use_pretrained is False
    assert cfg.data.val_fraction == 0.2
    assert cfg.selector.recency is False
    assert cfg.experiment == "exp"


@pytest.mark.parametrize("item", ["ppo.lr", "=3"])
def test_parse_set_refuses_malformed_items(item):
    with pytest.raises(ConfigError, match="--set"):
        parse_set(item)


@pytest.mark.parametrize("sets, dotted", [
    (["ppo.lrr=1"], "ppo.lrr"),
    (["data.nope=1"], "data.nope"),
    (["colour=red"], "colour"),
])
def test_unknown_field_names_the_dotted_path(sets, dotted):
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    assert f"'{dotted}'" in str(info.value)
    assert "unknown field" in str(info.value)


def test_unknown_field_in_a_yaml_file_names_file_and_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pretrain:\n  max_epoch: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "'pretrain.max_epoch'" in str(info.value)
    assert str(path) in str(info.value)
    assert "max_epochs" in str(info.value)  # the known fields are listed


@pytest.mark.parametrize("sets, field, expected", [
    (["pretrain.max_epochs=ten"], "pretrain.max_epochs", "an integer"),
    (["pretrain.max_epochs=2.5"], "pretrain.max_epochs", "an integer"),
    (["ppo.use_pretrained=3"], "ppo.use_pretrained", "true/false"),
    (["seed=true"], "seed", "an integer"),  # a bool is not an int
    (["ppo.lr=fast"], "ppo.lr", "a number"),
    (["name=[1, 2]"], "name", "a string"),
    (["data.path=3"], "data.path", "a string or null"),
])
def test_wrong_type_names_field_and_expected_type(sets, field, expected):
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    msg = str(info.value)
    assert f"'{field}'" in msg
    assert f"expected {expected}" in msg


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="'ppo' must be a mapping"):
        load_config(sets=["ppo=3"])


@pytest.mark.parametrize("sets, field", [
    (["ppo.lr=-1"], "ppo.lr"),
    (["ppo.lr=0"], "ppo.lr"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["data.val_fraction=1.0"], "data.val_fraction"),
    (["selector.kind=xyz"], "selector.kind"),
    (["data.task=21"], "data.task"),
    (["data.num_places=1"], "data.num_places"),
    (["ppo.gamma=1.5"], "ppo.gamma"),
    (["ppo.minibatch_size=1024"], "ppo.minibatch_size"),
    (["pretrain.recency_weight=2"], "pretrain.recency_weight"),
    (["tune.reduction_factor=1"], "tune.reduction_factor"),
    (["seed=-1"], "seed"),
    (["name=a/b"], "name"),
])
def test_out_of_range_names_the_field(sets, field):
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    assert f"field '{field}'" in str(info.value)


def test_search_space_unknown_ppo_field_is_refused():
    with pytest.raises(ConfigError) as info:
        load_config(sets=["tune.search_space={learning_rate: {choice: [0.1]}}"])
    assert "tune.search_space.ppo.learning_rate" in str(info.value)


def test_search_space_unknown_kind_is_refused():
    with pytest.raises(ConfigError) as info:
        load_config(sets=["tune.search_space={lr: {normal: [0.1, 0.2]}}"])
    assert "tune.search_space.ppo.lr" in str(info.value)
    assert "loguniform" in str(info.value)


@pytest.mark.parametrize("space", [
    "{lr: {loguniform: [0.01, 0.001]}}",  # low >= high
    "{lr: {loguniform: [0, 0.001]}}",  # log of 0
    "{lr: {choice: []}}",
    "{lr: {uniform: [0.1]}}",
    "{lr: [0.1, 0.2]}",
])
def test_search_space_bad_arguments_are_refused(space):
    with pytest.raises(ConfigError, match="tune.search_space.ppo.lr"):
        load_config(sets=[f"tune.search_space={space}"])


def test_search_space_bounds_must_be_numbers():
    """YAML reads 1e-4 (no dot) as a string: such bounds become numbers; words are refused, no crash."""
    cfg = load_config(sets=["tune.search_space.lr.loguniform=[1e-4, 2e-3]"])
    assert cfg.tune.search_space["ppo.lr"]["loguniform"] == [pytest.approx(1e-4), pytest.approx(2e-3)]
    nested = load_config(sets=["tune.search_space.ppo.lr.loguniform=[1e-4, 2e-3]"])
    assert nested.tune.search_space == cfg.tune.search_space
    with pytest.raises(ConfigError, match="tune.search_space.ppo.lr"):
        load_config(sets=["tune.search_space.lr.uniform=[a, b]"])


def test_search_space_valid_spaces():
    cfg = load_config(sets=["tune.search_space={lr: {loguniform: [1.0e-5, 1.0e-3]}, "
                            "minibatch_size: {grid: [64, 128]}, num_epochs: {randint: [1, 5]}}"])
    assert set(cfg.tune.search_space) == {"ppo.lr", "ppo.minibatch_size", "ppo.num_epochs"}


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ppo: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_from_dict_roundtrip():
    cfg = load_config(sets=["seed=4", "ppo.lr=1e-4", "data.path=/x/qa1_train.txt", "ppo.lambda_=0.9"])
    again = from_dict(cfg.to_dict())
    assert again == cfg
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_from_dict_refuses_bad_values():
    d = Config().to_dict()
    d["ppo"]["lr"] = -1.0
    with pytest.raises(ConfigError, match="ppo.lr"):
        from_dict(d)


def test_flat_keys():
    flat = Config().flat()
    assert flat["ppo.lr"] == PPOSettings().lr
    assert flat["data.path"] is None
    assert isinstance(flat["tune.search_space"], str)  # logged as JSON, not expanded
    assert not any(k.startswith("tune.search_space.") for k in flat)
    sections = (DataConfig, EnvConfig, SelectorConfig, PretrainConfig, PPOSettings, TuneSettings, ManagerConfig)
    top = [f for f in dataclasses.fields(Config)
           if f.name not in ("data", "env", "selector", "pretrain", "ppo", "tune", "manager")]
    assert len(top) == 8 and isinstance(flat["plugins"], str)  # name ... device, plugins (a list, as JSON)
    assert len(flat) == sum(len(dataclasses.fields(c)) for c in sections) + len(top)


def test_quickstart_yaml_loads():
    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    assert cfg.name == "quickstart"
    assert cfg.data.train_stories == 200
    assert cfg.ppo.iterations == 20
    assert cfg.tune.search_space["ppo.lr"] == {"loguniform": [1e-5, 1e-3]}


# --------------------------------------------------------------------------- env and generator sections


def test_env_defaults_keep_the_single_hop_all_memories_environment():
    env = Config().env
    assert (env.memory_budget, env.budget_strategy, env.reward_mode, env.hops, env.reward_timing) == \
        (0, "all", "supporting", 1, "per_hop")


@pytest.mark.parametrize("sets, field, allowed", [
    (["env.budget_strategy=truncate", "env.memory_budget=0"], "env.memory_budget", ">= 1"),
    (["env.budget_strategy=sample", "env.memory_budget=-3"], "env.memory_budget", ">= 1"),
    (["env.memory_budget=-1"], "env.memory_budget", "0 with budget_strategy 'all'"),
    (["env.memory_budget=16"], "env.memory_budget", "'truncate' or 'sample'"),  # a K that 'all' would ignore
    (["env.budget_strategy=newest"], "env.budget_strategy", "['all', 'truncate', 'sample', 'managed']"),
    (["env.reward_mode=bleu"], "env.reward_mode", "['supporting', 'answer']"),
    (["env.reward_timing=sometimes"], "env.reward_timing", "['per_hop', 'final']"),
    (["env.sample_weighting=zipf"], "env.sample_weighting", "['uniform', 'recency']"),
    (["env.hops=-1"], "env.hops", ">= 0"),
    (["env.reader=oracle"], "env.reader", "package.module:factory"),
    (["data.task=6"], "data.task", "[1, 2, 3, 4, 5]"),  # only tasks 1-5 can be generated
    (["data.task=4", "data.statements_per_question=6"], "data.num_places", "more than data.statements_per_question"),
    (["data.task=5", "data.num_actors=1"], "data.num_actors", ">= 2 with task 5"),
    (["data.distractor_density=1.0"], "data.distractor_density", "[0, 1)"),
    (["data.num_objects=0"], "data.num_objects", ">= 1"),
])
def test_env_and_generator_values_are_refused_naming_field_and_allowed_values(sets, field, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    msg = str(info.value)
    assert f"field '{field}'" in msg
    assert allowed in msg


def test_real_data_may_name_any_task_and_budgets_validate():
    cfg = load_config(sets=["data.path=/some/folder", "data.task=20", "env.budget_strategy=sample",
                            "env.memory_budget=64", "env.sample_weighting=recency", "env.hops=0",
                            "env.reward_timing=final", "env.reward_mode=answer", "env.reader=my.pkg:make_reader"])
    assert cfg.data.task == 20 and cfg.env.memory_budget == 64 and cfg.env.reader == "my.pkg:make_reader"


def test_run_layout_names_every_path_under_the_run_directory(tmp_path):
    cfg = load_config(run_dir=str(tmp_path / "r"))
    lay = cfg.layout
    assert lay.root == tmp_path / "r"
    assert lay.reader == tmp_path / "r" / "pretrain" / "reader.pt"
    assert lay.selector("pretrain") == lay.pretrained_selector
    assert lay.selector("tune") == tmp_path / "r" / "tune" / "selector.pt"
    assert lay.vocab.parent == lay.data and lay.outcome("ppo").name == "outcome.json"
    assert cfg.resolved_tracking_uri == f"sqlite:///{lay.mlflow_db}"
    assert not (tmp_path / "r").exists()  # naming paths creates nothing


# --------------------------------------------------------------------------- composed config files


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def _differences(a: dict, b: dict, prefix: str = "") -> dict:
    out = {}
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict) and key != "search_space":
            out.update(_differences(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out


def test_an_experiment_is_its_base_plus_what_it_changes():
    experiments = REPO / "configs" / "experiments"
    base, stick = load_config(experiments / "weak_recency.yaml"), load_config(experiments / "weak_stick.yaml")
    assert _differences(base.to_dict(), stick.to_dict()) == {
        "name": ("weak_recency", "weak_stick"), "selector.attention": ("softmax", "stick_breaking")}


def test_base_chains_apply_base_first_and_later_sets_win(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("name: root\nppo: {lr: 1.0e-4, iterations: 7}\nenv: {hops: 2}\n")
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\nname: mid\nppo: {lr: 2.0e-4}\n")
    (tmp_path / "leaf.yaml").write_text("base: sub/mid.yaml\nname: leaf\nenv: {hops: 3}\n")
    cfg = load_config(tmp_path / "leaf.yaml", sets=["ppo.iterations=9"])
    assert (cfg.name, cfg.ppo.lr, cfg.env.hops, cfg.ppo.iterations) == ("leaf", 2e-4, 3, 9)


def test_a_cycle_of_bases_is_refused_naming_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle .*a\.yaml.*b\.yaml"):
        load_config(tmp_path / "a.yaml")


def test_a_missing_or_bad_base_is_refused_naming_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml.*does not exist"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("base: [x]\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: field 'base'"):
        load_config(tmp_path / "b.yaml")


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nppo:\n  lr: 1.0e-4\n  iterations: 3\n  lr: 2.0e-4\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: line 5: key 'lr' given twice \(first on line 3\)"):
        load_config(path)


def test_a_file_whose_top_level_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_config(path)
