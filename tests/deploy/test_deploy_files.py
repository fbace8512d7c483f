"""The deployment files check out offline: deploy/Dockerfile and .dockerignore, the Ray cluster
launcher config (deploy/cluster-launcher/aws.yaml) and the KubeRay manifests (deploy/kuberay/).

No network, Docker or Kubernetes. The launcher config is validated against the schema of the
installed ray; the KubeRay manifests against the CRDs of KubeRay v1.7.0 in ../shared/kuberay
(``MEMSEL_KUBERAY_CRDS`` overrides it), and those tests skip when the CRDs are not there. The other
checks need no schema: pins agree with pyproject.toml and the Makefile, the RayJob cleans up after
itself, no secret is written down, the dashboard is not exposed, the image does not run as root.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
LAUNCHER = DEPLOY / "cluster-launcher" / "aws.yaml"
KUBERAY = DEPLOY / "kuberay"
KUBERAY_VERSION = "v1.7.0"
CRDS = Path(os.environ.get("MEMSEL_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay"))
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
# The Secrets the manifests read (name -> key); deploy/README.md says how to create each one.
SECRETS = {"memsel-ray-auth": "auth_token", "memsel-mlflow": "token"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|CREDENTIAL", re.IGNORECASE)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 2 MB of YAML


def _load_all(path: Path) -> list:
    return [d for d in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_LOADER) if d is not None]


@functools.lru_cache(maxsize=None)
def _kuberay_docs() -> tuple:
    return tuple(d for p in sorted(KUBERAY.glob("*.yaml")) for d in _load_all(p))


def _of_kind(kind: str) -> list[dict]:
    docs = [d for d in _kuberay_docs() if d.get("kind") == kind]
    assert docs, f"no {kind} in {KUBERAY}"
    return docs


def _rayjob() -> dict:
    (job,) = _of_kind("RayJob")
    return job


def _cluster_specs() -> list[dict]:
    """The RayCluster spec of raycluster.yaml and the one the RayJob brings."""
    return [d["spec"] for d in _of_kind("RayCluster")] + [_rayjob()["spec"]["rayClusterSpec"]]


def _pyproject_pin(name: str) -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    (pin,) = re.findall(rf'"{re.escape(name)}(?:\[[^\]]*\])?==([^"]+)"', text)
    return pin


def _project_version() -> str:
    (version,) = re.findall(r'(?m)^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return version


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
                                             if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def _docker_args() -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in _dockerfile() if op == "ARG" and "=" in arg)


def _containers(node) -> list[dict]:
    """Every container and init container anywhere in a manifest."""
    if isinstance(node, list):
        return [c for item in node for c in _containers(item)]
    if not isinstance(node, dict):
        return []
    found = [c for key in ("containers", "initContainers") for c in node.get(key, []) if isinstance(c, dict)]
    return found + [c for value in node.values() for c in _containers(value)]


def _values_of(node, key: str) -> list:
    """Every value stored under ``key`` anywhere in ``node``."""
    if isinstance(node, list):
        return [v for item in node for v in _values_of(item, key)]
    if not isinstance(node, dict):
        return []
    return ([node[key]] if key in node else []) + [v for value in node.values() for v in _values_of(value, key)]


# --------------------------------------------------------------------------- schemas

def test_every_yaml_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {p.name for p in files} >= {"aws.yaml", "raycluster.yaml", "rayjob.yaml"}
    for path in files:
        assert _load_all(path), f"{path}: no document"


def test_launcher_config_validates_against_rays_schema():
    import jsonschema

    config = yaml.safe_load(LAUNCHER.read_text(encoding="utf-8"))
    ray_dir = Path(importlib.util.find_spec("ray").origin).parent
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(config, schema)
    # What `ray up` checks before it calls AWS: the config merged with Ray's AWS defaults, validated
    # again (head_node_type among the node types, docker settings, worker counts).
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def _crd_schema(kind: str) -> dict:
    """``spec.versions[name=v1].schema.openAPIV3Schema`` of KubeRay's CRD for ``kind``, or skip."""
    name = CRD_FILES[kind]
    found = [p for p in (CRDS / KUBERAY_VERSION / name, CRDS / name) if p.is_file()]
    if not found:
        pytest.skip(f"KubeRay {KUBERAY_VERSION} CRD {name} not found in {CRDS} or {CRDS / KUBERAY_VERSION} "
                    "(set MEMSEL_KUBERAY_CRDS to the folder that holds it)")
    return _v1_schema(found[0])


@functools.lru_cache(maxsize=None)
def _v1_schema(path: Path) -> dict:
    (crd,) = _load_all(path)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _strict(schema):
    """The schema with unknown fields refused, as kubectl's default strict field validation does: an
    object schema that lists properties gets additionalProperties: false (unless it preserves unknown
    fields). The x-kubernetes-* keys stay, as annotations jsonschema does not interpret; int-or-string
    fields already carry an anyOf of integer and string."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _errors(kind: str, doc: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft4Validator(_strict(_crd_schema(kind)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def _cel_paths(schema: dict, path: tuple = ()):
    """Paths of the schema nodes that carry CEL rules (x-kubernetes-validations), which jsonschema
    cannot evaluate; '[]' stands for every item of a list, '*' for every value of a map."""
    if "x-kubernetes-validations" in schema:
        yield path
    for name, sub in schema.get("properties", {}).items():
        yield from _cel_paths(sub, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from _cel_paths(schema["items"], (*path, "[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _cel_paths(schema["additionalProperties"], (*path, "*"))


def _is_set(node, path: tuple) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head == "[]":
        return isinstance(node, list) and any(_is_set(item, rest) for item in node)
    if head == "*":
        return isinstance(node, dict) and any(_is_set(item, rest) for item in node.values())
    return isinstance(node, dict) and head in node and _is_set(node[head], rest)


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_kuberay_manifests_validate_against_the_crds(kind):
    schema = _crd_schema(kind)
    for doc in _of_kind(kind):
        assert doc["apiVersion"] == "ray.io/v1"
        errors = _errors(kind, doc)
        assert not errors, f"{kind} {doc['metadata']['name']}:\n" + "\n".join(errors)
        # The CRD's CEL rules are not run here: they must concern fields the manifest leaves unset.
        unchecked = [".".join(p) for p in _cel_paths(schema) if _is_set(doc, p)]
        assert not unchecked, f"{kind}: fields with CEL rules that this test cannot check: {unchecked}"


def test_crd_validation_refuses_a_misspelt_field_and_a_wrong_type():
    job = copy.deepcopy(_rayjob())
    job["spec"]["shutdownAfterJobFinish"] = True  # misspelt: the API server would refuse it
    job["spec"]["activeDeadlineSeconds"] = "3600"
    errors = _errors("RayJob", job)
    assert any("shutdownAfterJobFinish" in e for e in errors), errors
    assert any(e.startswith("spec.activeDeadlineSeconds") for e in errors), errors


# --------------------------------------------------------------------------- pins

def test_ray_and_torch_versions_agree_with_the_pins():
    ray, torch = _pyproject_pin("ray"), _pyproject_pin("torch")
    assert re.search(rf"(?m)^TORCH\s*:=\s*torch=={re.escape(torch)}\s*$", (REPO / "Makefile").read_text())
    args = _docker_args()
    assert (args["RAY_VERSION"], args["TORCH_VERSION"]) == (ray, torch)
    constraints = (REPO / "constraints.txt").read_text(encoding="utf-8").split()
    assert f"ray=={ray}" in constraints
    assert [c for c in constraints if c.startswith("torch==")][0].split("+")[0] == f"torch=={torch}"
    assert [spec["rayVersion"] for spec in _cluster_specs()] == [ray] * len(_cluster_specs())


def test_every_node_runs_the_same_image_tagged_with_memsel_and_ray_versions():
    launcher = yaml.safe_load(LAUNCHER.read_text(encoding="utf-8"))["docker"]
    images = {launcher[k] for k in ("image", "head_image", "worker_image") if k in launcher}
    images |= {c["image"] for doc in _kuberay_docs() for c in _containers(doc)}
    assert len(images) == 1, images
    (image,) = images
    assert image.rsplit(":", 1)[1] == f"{_project_version()}-ray{_pyproject_pin('ray')}", image


# --------------------------------------------------------------------------- the RayJob

def test_rayjob_brings_its_own_cluster_and_cleans_up():
    spec = _rayjob()["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["rayClusterSpec"]["headGroupSpec"] and spec["rayClusterSpec"]["workerGroupSpecs"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, os, shlex, sys\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


def _run_entrypoint(tmp_path: Path, head_env: dict[str, str]) -> list[list[str]]:
    """The RayJob's entrypoint through the two shells it meets: KubeRay pastes it into the submitter
    pod's ``bash -ce`` command line after ``ray job submit ... --``; ``ray job submit`` sends its
    arguments shlex-joined, and the head runs that string with ``/bin/sh`` (Popen shell=True).
    Returns the argv of every ``memsel`` call."""
    bin_dir, log = tmp_path / "bin", tmp_path / "memsel-calls.jsonl"
    bin_dir.mkdir()
    _stub(bin_dir, "ray", "args = sys.argv[1:]\nprint(shlex.join(args[args.index('--') + 1:]))")
    _stub(bin_dir, "memsel",
          "with open(os.environ['MEMSEL_CALLS'], 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')")
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    line = f"ray job submit --address http://head-svc:8265 --no-wait -- {_rayjob()['spec']['entrypoint']} ;"
    sent = subprocess.run([shutil.which("bash"), "-ce", "--", line], env={"PATH": path},  # no MLflow vars there
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(sent, shell=True, check=True, env={"PATH": path, "MEMSEL_CALLS": str(log), **head_env})
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_rayjob_entrypoint_pretrains_then_sweeps_with_the_heads_settings(tmp_path):
    from memsel import cli

    env = {"MLFLOW_TRACKING_URI": "http://mlflow.test:5000", "MEMSEL_STORAGE_PATH": "s3://bucket/sweeps"}
    calls = _run_entrypoint(tmp_path, env)
    assert [c[0] for c in calls] == ["pretrain", "tune"], calls
    assert "--json" in calls[1]
    # memsel's own parser and config loading accept both calls, with the ConfigMap's config file.
    (config_map,) = [d for d in _of_kind("ConfigMap") if d["metadata"]["name"] == "memsel-tiny-config"]
    (tmp_path / "tiny.yaml").write_text(config_map["data"]["tiny.yaml"], encoding="utf-8")
    configs = [cli._config(cli.build_parser().parse_args(
        [str(tmp_path / "tiny.yaml") if a == "/etc/memsel/tiny.yaml" else a for a in call])) for call in calls]
    assert [c.resolved_tracking_uri for c in configs] == [env["MLFLOW_TRACKING_URI"]] * 2
    assert {str(c.run_path) for c in configs} == {"/work/runs/tiny-k8s"}
    assert configs[1].tune.storage_path == env["MEMSEL_STORAGE_PATH"]
    assert configs[1].ray_address == "auto"


# --------------------------------------------------------------------------- secrets and exposure

_KEYED_SECRET = re.compile(r"(?i)(token|secret|passw\w*|api_?key|access_?key|credential)\w*[\"']?\s*[:=]\s*[\"']?"
                           r"([A-Za-z0-9+/_=.-]{20,})")
_ANYWHERE = [re.compile(p) for p in (r"\b[0-9a-fA-F]{32,}\b", r"AKIA[0-9A-Z]{16}", r"-----BEGIN [A-Z ]*PRIVATE KEY")]


def _secret_like(text: str) -> list[str]:
    """Values next to a token/secret/password key that look random (letters and digits, 20+
    characters), long hex strings, AWS key ids and private keys."""
    keyed = [m.group(0) for m in _KEYED_SECRET.finditer(text)
             if re.search(r"\d", m.group(2)) and re.search(r"[A-Za-z]", m.group(2))]
    return keyed + [m.group(0) for pattern in _ANYWHERE for m in pattern.finditer(text)]


def test_no_file_holds_a_secret():
    assert _secret_like("RAY_AUTH_TOKEN=8f14e45fceea167a5a36dedd4bea2543")
    assert _secret_like('password: "c2VjcmV0LXZhbHVlLTEyMzQ1Ng"')
    assert not _secret_like("secretKeyRef: {name: memsel-ray-auth, key: auth_token}")
    files = [*DEPLOY.rglob("*"), REPO / ".dockerignore"]
    found = {str(p.relative_to(REPO)): hits for p in files if p.is_file()
             for hits in [_secret_like(p.read_text(encoding="utf-8"))] if hits}
    assert not found, found


def test_secret_env_vars_come_from_secret_refs_and_auth_is_on():
    containers = [c for doc in _kuberay_docs() for c in _containers(doc)]
    assert len(containers) == 4  # head and workers of the RayCluster and of the RayJob's cluster
    for c in containers:
        env = {e["name"]: e for e in c.get("env", [])}
        for name, var in env.items():
            if SECRET_NAME.search(name):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                assert "value" not in var and ref, f"{c['name']}: {name} must come from a secretKeyRef"
                assert SECRETS.get(ref["name"]) == ref["key"], f"{name}: {ref} is not a Secret deploy/README.md names"
        assert env["RAY_AUTH_MODE"].get("value") == "token", c["name"]
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "memsel-ray-auth", "key": "auth_token"}
    for spec in _cluster_specs():
        assert spec["authOptions"] == {"mode": "token", "secretName": "memsel-ray-auth"}
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert all(name in readme for name in SECRETS)


def test_config_map_references_resolve():
    maps = {d["metadata"]["name"]: d["data"] for d in _of_kind("ConfigMap")}
    refs = [(r["name"], r["key"]) for doc in _kuberay_docs() for r in _values_of(doc, "configMapKeyRef")]
    assert refs and all(key in maps.get(name, {}) for name, key in refs), refs
    volumes = [v["name"] for doc in _kuberay_docs() for v in _values_of(doc, "configMap") if "name" in v]
    assert volumes and set(volumes) <= set(maps)


def test_launcher_keeps_auth_on_and_the_token_out():
    config = yaml.safe_load(LAUNCHER.read_text(encoding="utf-8"))
    options = " ".join(config["docker"].get("run_options", []) + config["docker"].get("head_run_options", [])
                       + config["docker"].get("worker_run_options", []))
    passed = re.findall(r"(?:--env|-e)[ =]([A-Za-z_]\w*)", options)
    assert "RAY_AUTH_MODE=token" in options and "MLFLOW_TRACKING_URI" in passed
    assert not [n for n in passed if SECRET_NAME.search(n)], "the Ray token comes from file_mounts, not the config"
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all("RAY_AUTH_MODE=token ray start" in cmd for cmd in config[key]), key


def test_dashboard_is_not_exposed():
    for spec in _cluster_specs():
        head = spec["headGroupSpec"]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP"
        assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
        assert not head.get("enableIngress", False)
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in _kuberay_docs() if d["kind"] == "Service")
    assert not [d["kind"] for d in _kuberay_docs() if d["kind"] in ("Ingress", "Route", "Gateway", "HTTPRoute")]
    config = yaml.safe_load(LAUNCHER.read_text(encoding="utf-8"))
    (head_start,) = config["head_start_ray_commands"]
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    commands = [c for key, value in config.items() if key.endswith("_commands") for c in value]
    assert not [c for c in commands if re.search(r"\bray stop\b", c)], "ray stop ends every Ray on the machine"


# --------------------------------------------------------------------------- the image

def test_dockerfile_pins_its_base_installs_in_order_and_runs_as_a_user():
    steps = _dockerfile()
    for op, arg in steps:
        if op == "FROM":
            image = [a for a in arg.split() if not a.startswith("--")][0]
            name, _, tag = image.split("@")[0].rpartition(":")
            assert name and "/" not in tag and tag != "latest", f"FROM {image}: pin a tag"
    runs = [arg for op, arg in steps if op == "RUN"]
    torch_at = [i for i, r in enumerate(runs) if "download.pytorch.org/whl/cpu" in r and "torch==" in r]
    memsel_at = [i for i, r in enumerate(runs) if "pip install -c constraints.txt ." in r]
    assert torch_at and memsel_at and torch_at[0] < memsel_at[0], "torch (CPU index) first, then memsel"
    users = [arg.strip() for op, arg in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    last_user = max(i for i, (op, _) in enumerate(steps) if op == "USER")
    assert any(op == "RUN" and "memsel --help" in arg for op, arg in steps[last_user:]), "smoke check as the user"
    assert not [arg for op, arg in steps if op in ("ENV", "ARG") and SECRET_NAME.search(arg)]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def test_dockerignore_leaves_out_local_state_but_not_what_the_image_copies():
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [ln.strip().strip("/") for ln in lines if ln.strip() and not ln.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "this test reads no exceptions"
    for local in (".venv", "runs", "mlflow.db", "mlruns", ".git", "babi", "data"):
        assert _dockerignored(local, patterns), local
    copied = [src.rstrip("/") for op, arg in _dockerfile() if op == "COPY"
              for src in [a for a in arg.split() if not a.startswith("--")][:-1]]
    assert set(copied) >= {"pyproject.toml", "constraints.txt", "src", "configs"}
    for path in [*copied, "src/memsel/data/__init__.py", "configs/quickstart.yaml"]:
        assert not _dockerignored(path, patterns), path
