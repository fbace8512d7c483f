"""``memsel submit`` and ``memsel jobs``: memsel commands as Ray jobs, through Ray's Jobs SDK.

    memsel submit [--address URL] [--follow | --no-wait] [--shared-storage] -- tune --run-dir runs/x ...
    memsel jobs list | status ID | logs ID [--follow] | stop ID [--wait]

The address is ``--address``, else ``$RAY_JOBS_ADDRESS``, else ``http://127.0.0.1:8265`` (the dashboard,
which serves the Jobs API). What is taken care of:

* **Token authentication** (Ray 2.60 turns it on). The token is read where Ray's own clients read it
  (``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``: what
  ``RAY_AUTH_MODE=token`` makes ``ray job ...`` read) and sent as the ``Authorization`` header; a
  missing or wrong token ends with one line and exit code 2.
* **Time limits.** Every request to the dashboard has a timeout (``--timeout``, 10 s): a dead or hung
  dashboard gives one line and exit code 2, never a hang.
* **What the job runs.** The entry point is ``python -m memsel.cli <command>`` with 0 CPUs
  (``entrypoint_num_cpus=0``: every core goes to the job's trials). Its runtime env ships this
  checkout: ``working_dir`` (without :data:`EXCLUDES`: virtual environments, runs, MLflow stores,
  data folders, .git, ``*.pt``) and ``py_modules`` = ``src/memsel``, so that the driver and every Ray
  worker import the submitted code, not whatever memsel the nodes have installed. A run directory
  and a tracking URI are resolved here as memsel resolves them (:func:`memsel.config.load_config`)
  and passed as absolute values: a relative one would land in the job's temporary copy of the
  project. Relative ``--config``/``--data`` paths inside the checkout are read from the shipped copy.
* **Checks before compute** (nothing is submitted when one fails, exit code 2): the memsel command
  and its config parse; an ``http(s)`` tracking URI answers (``GET /health``, else the REST API); a
  ``sqlite:`` URI is refused on a cluster of more than one node unless ``--shared-storage`` says
  the run directory is on storage shared with the user. Why: MLflow is written only by the job's
  driver (never by trials on other nodes), but the driver runs on the head node (on any node when
  the head sets ``RAY_JOB_ALLOW_DRIVER_ON_WORKER_NODES=1``), so the SQLite file and the run
  directory land on that node's disk, which is not where the user reads them unless it is shared.
  The node count comes from the dashboard's state API (``GET /api/v0/nodes``, with the token:
  ``ray.util.state`` would need a connection to the cluster's GCS).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_TIMEOUT_S = 10.0
POLL_S = 2.0
TOP_LEVEL_EXCLUDES = (".venv", "venv", "runs", "babi", ".cluster", "ray_results", "lightning_logs", ".hypothesis",
                      ".pytest_cache", "build", "dist")
"""Folders of the checkout's root that never ship."""
DATA_EXCLUDES = ("/data/**", "!/data/**/*.py")
"""A ``data/`` folder at the root ships without its data files. Not plain ``/data/``: Ray applies the same
excludes to every py_module, anchored at the module's own folder, where ``/data/`` is memsel's ``data``
package (the job then dies with ``No module named 'memsel.data'``)."""
ANYWHERE_EXCLUDES = (".git", "__pycache__", "mlruns", "mlflow.db", "*.pt", "*.egg-info")
"""Names that never ship, at any depth."""
EXCLUDES = [f"/{name}/" for name in TOP_LEVEL_EXCLUDES] + list(DATA_EXCLUDES) + list(ANYWHERE_EXCLUDES)
"""The runtime env's ``excludes`` (gitignore syntax; Ray also honours the checkout's .gitignore)."""
PATH_OPTIONS = ("--config", "--data", "--run-dir", "--out", "--checkpoint", "--memories-file", "--vocab", "--dest")
"""memsel options whose relative paths are rewritten for the job (see the module docstring)."""
NESTED = ("submit", "jobs")


class JobsError(Exception):
    """A refusal or a failed request, told in one line (exit code 2)."""


# ----------------------------------------------------------------------------- the command line

def add_jobs_commands(sub: argparse._SubParsersAction) -> None:
    """``memsel submit`` and ``memsel jobs list | status | logs | stop``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=None, help="the cluster's dashboard / Jobs API (default: "
                                                        f"$RAY_JOBS_ADDRESS, else {DEFAULT_ADDRESS})")
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds each request to the dashboard may take (default {DEFAULT_TIMEOUT_S:g})")
    p = sub.add_parser("submit", parents=[common], help="run a memsel command on a Ray cluster as a Ray job",
                       description="Submit `memsel <command> ...` (after --) as a Ray job: the project ships with "
                                   "it, its MLflow store is checked first. Without --no-wait, waits for its end "
                                   "(exit 0: SUCCEEDED, 1: FAILED or STOPPED).")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    how.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
    p.add_argument("--shared-storage", action="store_true",
                   help="the run directory is on storage that the driver's node and you share: allows a sqlite: "
                        "tracking URI on a cluster of several nodes")
    p.add_argument("memsel_args", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the memsel command and its options, e.g. -- tune --run-dir runs/x --set tune.num_samples=8")
    jobs = sub.add_parser("jobs", help="list, inspect, follow or stop Ray jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jsub.add_parser("list", parents=[common], help="every job of the cluster, oldest first")
    for name, text in (("status", "a job's status, message, start and end"), ("logs", "a job's logs"),
                       ("stop", "stop a job (its driver gets SIGTERM)")):
        jp = jsub.add_parser(name, parents=[common], help=text)
        jp.add_argument("job_id", metavar="ID", help="the submission id (raysubmit_...)")
    jsub.choices["logs"].add_argument("--follow", action="store_true", help="stream until the job ends")
    jsub.choices["stop"].add_argument("--wait", action="store_true", help="wait until the job has ended")


def run_jobs_command(args: argparse.Namespace) -> int:
    """Run ``memsel submit`` or ``memsel jobs ...``; a :class:`JobsError` becomes one line and exit code 2."""
    try:
        if args.command == "submit":
            return submit(args)
        action = {"list": list_jobs, "status": job_status, "logs": job_logs, "stop": stop_job}[args.jobs_command]
        return action(args)
    except JobsError as e:
        print(f"memsel: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        job = getattr(args, "job_id", None) or "ID"
        print(f"memsel: stopped following; the job keeps running (memsel jobs stop {job})", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------- connecting

def jobs_address(given: str | None) -> str:
    """``given``, else ``$RAY_JOBS_ADDRESS``, else :data:`DEFAULT_ADDRESS`; ``http://`` when it has no scheme."""
    address = (given or os.environ.get("RAY_JOBS_ADDRESS") or DEFAULT_ADDRESS).rstrip("/")
    return address if "://" in address else f"http://{address}"


def auth_token() -> tuple[str | None, str]:
    """The Ray token and where it came from, looked up as Ray's clients do: ``$RAY_AUTH_TOKEN``, the
    file ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``. (None, "no token in <places looked>") when
    there is none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    from memsel.local_cluster import token_file

    path = token_file()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    return (token, str(path)) if token else (None, f"no token in $RAY_AUTH_TOKEN nor {path}")


def _auth_message(error: Exception, address: str, source: str) -> str:
    text = str(getattr(error, "message", error))
    if source.startswith("no token") or "Missing" in text:
        return (f"the Ray cluster at {address} wants a token and none was sent ({source}); copy the head's "
                "~/.ray/auth_token to this machine or export RAY_AUTH_TOKEN")
    return (f"the Ray cluster at {address} refused the token from {source} (not this cluster's token); use "
            "the head's ~/.ray/auth_token or RAY_AUTH_TOKEN")


def connect(address: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
    """A ``JobSubmissionClient`` for ``address`` (:func:`jobs_address`) that sends the token and
    gives every request ``timeout`` seconds; :class:`JobsError` when the dashboard does not answer
    or refuses the token. Its :meth:`call` runs an SDK method with the same error handling."""
    address = jobs_address(address)
    token, source = auth_token()
    client_class = _client_class()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _guarded(lambda: client_class(address, headers=headers, request_timeout=timeout, token_source=source),
                    address, source, timeout)


def _client_class():
    from ray.job_submission import JobSubmissionClient

    class TimedClient(JobSubmissionClient):
        """Ray's client, every request with a timeout (the SDK's have none)."""

        def __init__(self, address: str, request_timeout: float, token_source: str, **kwargs):
            self.request_timeout, self.token_source = request_timeout, token_source
            super().__init__(address, **kwargs)

        def _do_request(self, method, endpoint, **kwargs):
            # Every SDK call goes through here, and its other keyword arguments reach requests.request;
            # the public methods take no timeout (a hung dashboard would hang them forever).
            kwargs.setdefault("timeout", self.request_timeout)
            return super()._do_request(method, endpoint, **kwargs)

        def call(self, method: str, *args, **kwargs):
            """``self.<method>(*args, **kwargs)``, with failures turned into a :class:`JobsError`."""
            return _guarded(lambda: getattr(self, method)(*args, **kwargs), self._address, self.token_source,
                            self.request_timeout)

        def get_json(self, endpoint: str) -> dict:
            """GET a JSON endpoint of the dashboard (with the token, the timeout, the error handling)."""
            def get() -> dict:
                """The endpoint's JSON (RuntimeError on a status other than 200)."""
                r = self._do_request("GET", endpoint)
                if r.status_code != 200:
                    raise RuntimeError(f"GET {endpoint}: status {r.status_code}: {r.text[:200]}")
                return r.json()

            return _guarded(get, self._address, self.token_source, self.request_timeout)

    return TimedClient


def _guarded(fn, address: str, source: str, timeout: float):
    from ray.exceptions import AuthenticationError

    try:
        return fn()
    except AuthenticationError as e:
        raise JobsError(_auth_message(e, address, source)) from None
    except OSError as e:  # requests' ConnectionError and Timeout are OSErrors, as is Ray's ConnectionError
        timed_out = "timed out" in str(e).lower() or "timeout" in type(e).__name__.lower()
        kind = f"no answer within {timeout:g} s" if timed_out else "connection refused"
        raise JobsError(f"the Ray dashboard at {address} does not answer ({kind}); is the "
                        "cluster up (cluster/up.sh) and is that its dashboard address (--address, "
                        "$RAY_JOBS_ADDRESS)?") from None
    except RuntimeError as e:  # the SDK's "Request failed with status code 404: Job ... does not exist."
        raise JobsError(f"{address}: {_one_line(str(e))}") from None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _one_line(text: str) -> str:
    """An SDK error in one line: a server-side traceback becomes its first line's start and its last line."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and "Traceback" in lines[0]:
        return f"{lines[0].split('Traceback')[0].strip()} {lines[-1]}"
    return lines[0] if lines else ""


def _logs(client, job_id: str) -> str | None:
    """The job's logs, or None when the dashboard cannot give them (its driver's node has died)."""
    try:
        return client.call("get_job_logs", job_id)
    except JobsError:
        return None


# ----------------------------------------------------------------------------- submit

def project_root() -> Path:
    """The checkout that ships with a job: the folder above ``src/memsel``, holding pyproject.toml."""
    import memsel

    root = Path(memsel.__file__).resolve().parents[2]
    if not ((root / "pyproject.toml").is_file() and (root / "src" / "memsel").is_dir()):
        raise JobsError(f"memsel at {Path(memsel.__file__).parent} is not in a checkout (no src/memsel and "
                        "pyproject.toml above it); `memsel submit` ships a checkout to the cluster")
    return root


def runtime_env(root: Path) -> dict:
    """The job's runtime env: ``root`` as working_dir (without :data:`EXCLUDES`), ``src/memsel`` as a
    py_module (first on every worker's path), unbuffered output."""
    return {"working_dir": str(root), "py_modules": [str(root / "src" / "memsel")], "excludes": list(EXCLUDES),
            "env_vars": {"PYTHONUNBUFFERED": "1"}}


def is_shipped(rel: Path) -> bool:
    """Whether a path relative to the checkout's root ships with a job (see :data:`EXCLUDES`)."""
    import fnmatch

    parts = rel.parts
    if not parts or parts[0] in TOP_LEVEL_EXCLUDES or parts[0] == "..":
        return False
    if parts[0] == "data" and (len(parts) > 2 or rel.suffix != ".py"):
        return False
    return not any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in ANYWHERE_EXCLUDES)


def _job_path(value: str, option: str, root: Path) -> str:
    """A relative path given to ``option`` as the job must see it: the shipped copy's for a
    ``--config``/``--data`` inside the checkout, else the absolute path on this machine."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return value
    absolute = path.resolve()
    if option in ("--config", "--data") and absolute.exists() and absolute.is_relative_to(root):
        rel = absolute.relative_to(root)
        if is_shipped(rel):
            return str(rel)
    return str(absolute)


def job_argv(argv: list[str], root: Path, run_dir: Path | None, tracking_uri: str | None) -> list[str]:
    """``argv`` (a memsel command) as the job runs it: relative paths rewritten (:func:`_job_path`);
    ``run_dir`` and ``tracking_uri`` (resolved here, for a stage command) given explicitly, in place
    of the command's own ``--run-dir``/``--tracking-uri``."""
    replaced = ("--run-dir", "--tracking-uri") if run_dir is not None else ()
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        option, eq, value = token.partition("=")
        if option in replaced:  # given again below, resolved
            i += 1 if eq else 2
            continue
        if option in PATH_OPTIONS and eq:
            out.append(f"{option}={_job_path(value, option, root)}")
        elif token in PATH_OPTIONS and i + 1 < len(argv):
            out += [token, _job_path(argv[i + 1], token, root)]
            i += 1
        else:
            out.append(token)
        i += 1
    if run_dir is not None:
        out += ["--run-dir", str(run_dir)]
    if tracking_uri is not None:
        out += ["--tracking-uri", tracking_uri]
    return out


def resolve_command(argv: list[str]):
    """The memsel command ``argv`` parsed, and its config when it is a stage command (None otherwise):
    refused (JobsError) when it does not parse or its config is invalid."""
    from memsel import preflight
    from memsel.cli import _config, build_parser
    from memsel.config import ConfigError

    if not argv:
        raise JobsError("no memsel command to submit; e.g. memsel submit --follow -- tune --run-dir runs/x")
    if argv[0] in NESTED:
        raise JobsError(f"`memsel {argv[0]}` runs where you are, not as a job")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        raise JobsError(f"the command to submit does not parse: memsel {shlex.join(argv)}") from None
    if args.command not in preflight.STAGES:
        return args, None
    try:
        return args, _config(args)
    except (ConfigError, OSError, ValueError) as e:
        raise JobsError(str(e)) from None


def check_mlflow_server(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI answers: ``GET <uri>/health``, else the REST API's experiment search."""
    import requests

    base = uri.rstrip("/")
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        try:
            if requests.get(base + path, timeout=timeout).status_code == 200:
                return
        except requests.RequestException:
            pass
    raise JobsError(f"MLflow server {uri} does not answer; start it (cluster/up.sh starts one) or give --tracking-uri")


def alive_nodes(client) -> int:
    """How many nodes of the cluster are alive (the dashboard's state API, ``/api/v0/nodes``)."""
    data = client.get_json("/api/v0/nodes?limit=10000&detail=false")
    nodes = data["data"]["result"]["result"]
    return sum(1 for n in nodes if n.get("state") == "ALIVE")


def check_tracking(uri: str, run_dir: Path, nodes, shared_storage: bool) -> None:
    """Refuse (JobsError) a tracking URI the job could not use or the user could not read: an http(s)
    server that does not answer; a ``sqlite:`` file on a cluster of ``nodes()`` > 1 nodes unless
    ``shared_storage``. Other schemes (a database server) are passed on unchecked."""
    if uri.startswith(("http://", "https://")):
        check_mlflow_server(uri)
        return
    if not uri.startswith("sqlite:") or shared_storage:
        return
    n = nodes()
    if n > 1:
        raise JobsError(
            f"tracking URI {uri} is a SQLite file and this cluster has {n} nodes: MLflow is written by the job's "
            "driver only (never by trials on other nodes), but the driver runs on the head node (any node when the "
            "head sets RAY_JOB_ALLOW_DRIVER_ON_WORKER_NODES=1), so that file and the run directory land on its disk, "
            f"not necessarily where you read them; give --tracking-uri of an MLflow server (cluster/up.sh starts "
            f"one), or --shared-storage when {run_dir} is on storage that node and you share")


class _QuietPackaging:
    """Drops Ray's client-side packaging chatter (INFO lines, and a warning on every submission that
    .git is no longer shipped, which :data:`EXCLUDES` wants anyway); other warnings pass."""

    def filter(self, record) -> bool:
        """Whether ``record`` is shown."""
        return record.levelno >= 30 and "is now ignored by default" not in record.getMessage()


def _quiet_ray_packaging() -> None:
    import logging

    for name in ("ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir",
                 "ray._private.runtime_env.py_modules", "ray.dashboard.modules.dashboard_sdk"):
        logging.getLogger(name).addFilter(_QuietPackaging())


def submit(args: argparse.Namespace) -> int:
    """``memsel submit``: check, submit, print where things are, then wait or follow (exit 0/1)."""
    argv = list(args.memsel_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    command, cfg = resolve_command(argv)
    root = project_root()
    run_dir = cfg.run_path if cfg is not None else None
    uri = cfg.resolved_tracking_uri if cfg is not None else None
    client = connect(args.address, args.timeout)
    if cfg is not None:
        check_tracking(uri, run_dir, lambda: alive_nodes(client), args.shared_storage)
    entrypoint = shlex.join(["python", "-m", "memsel.cli", *job_argv(argv, root, run_dir, uri)])
    _quiet_ray_packaging()
    job_id = client.call("submit_job", entrypoint=entrypoint, runtime_env=runtime_env(root), entrypoint_num_cpus=0,
                         metadata={"memsel_command": command.command, "mlflow": uri or "", "run_dir": str(run_dir or "")})
    _print_submitted(client._address, job_id, command.command, run_dir, uri, cfg)
    if args.no_wait:
        return 0
    return follow(client, job_id, stream=args.follow)


def _print_submitted(address: str, job_id: str, command: str, run_dir, uri, cfg) -> None:
    print(f"job:        {job_id}  (memsel {command})")
    print(f"dashboard:  {address}/#/jobs/{job_id}")
    if uri:
        print(f"MLflow:     {uri}  (experiment '{cfg.experiment}')")
        print(f"run dir:    {run_dir}")
    print(f"logs:       memsel jobs logs {job_id} --follow   stop: memsel jobs stop {job_id}", flush=True)


# ----------------------------------------------------------------------------- following and reporting

def follow(client, job_id: str, stream: bool, poll: float = POLL_S) -> int:
    """Wait until the job ends, streaming its logs when ``stream`` (else one line per status change);
    then report its end (:func:`report_end`): 0 when it SUCCEEDED, 1 otherwise."""
    printed, last = 0, None
    while True:
        status = client.call("get_job_status", job_id)
        logs = _logs(client, job_id) if stream else None
        if logs is not None:
            sys.stdout.write(logs[printed:])
            sys.stdout.flush()
            printed = len(logs)
        elif status != last:
            print(f"{_now()} job {job_id}: {status.value}", flush=True)
            last = status
        if status.is_terminal():
            return report_end(client, job_id, logs_shown=stream)
        time.sleep(poll)


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def job_error(info, logs: str) -> str:
    """The one line that says why a job failed: memsel's own last ``memsel: ...`` line from its logs;
    else, when the entry point failed, the last line of its logs and its exit code; else the first
    line of the job's status message (a runtime env that could not be set up, a dead supervisor)."""
    said = [ln.strip() for ln in logs.splitlines() if ln.startswith("memsel: ")]
    if said:
        return said[-1]
    message = _first_line(info.message or "")
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
    if message.startswith("Job entrypoint command failed") and lines:
        return f"{lines[-1]} (exit code {getattr(info, 'driver_exit_code', None)})"
    return message or f"exit code {getattr(info, 'driver_exit_code', None)}"


def driver_node_died(info) -> str | None:
    """Why the job's driver died with its node, in one line (Ray's own words), or None when it did not.

    Ray 2.60 says it so (observed: SIGKILL to the driver's node): status FAILED, error_type
    ``JOB_SUPERVISOR_ACTOR_DIED``, a message whose lines include "The actor died because its node has
    died. Node Id: ..." and "the actor's node was terminated unexpectedly: <why>"."""
    message = info.message or ""
    lines = [ln.strip() for ln in message.splitlines() if re.search(r"\bnode\b.*\b(died|dead|terminated)", ln, re.I)]
    if lines:
        return "; ".join(lines)
    if "SUPERVISOR_ACTOR_DIED" in str(getattr(info, "error_type", "") or ""):
        return _first_line(message) or "the job's supervisor died"
    return None


def report_end(client, job_id: str, logs_shown: bool) -> int:
    """One line on how the job ended (stderr when it did not succeed; the last 20 lines of its logs
    first, unless they were streamed); 0 when it SUCCEEDED, else 1."""
    info = client.call("get_job_info", job_id)
    took = _duration(info)
    if info.status.value == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED{took}", flush=True)
        return 0
    logs = _logs(client, job_id) or ""
    if not logs_shown and logs.strip():
        print("\n".join(logs.rstrip().splitlines()[-20:]), file=sys.stderr)
    died = driver_node_died(info)
    why = f"its driver died with its node: {died}" if died else job_error(info, logs)
    print(f"memsel: job {job_id} {info.status.value}{took}: {why}", file=sys.stderr)
    return 1


def _duration(info) -> str:
    if info.start_time and info.end_time:
        return f" after {(info.end_time - info.start_time) / 1000:.0f} s"
    return ""


def _time(ms) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _command_of(entrypoint: str) -> str:
    return entrypoint.replace("python -m memsel.cli ", "memsel ", 1)


# ----------------------------------------------------------------------------- memsel jobs ...

def list_jobs(args: argparse.Namespace) -> int:
    """``memsel jobs list``: id, status, start, end and command of every job, oldest first."""
    client = connect(args.address, args.timeout)
    jobs = sorted(client.call("list_jobs"), key=lambda j: j.start_time or 0)
    if not jobs:
        print(f"no jobs on {client._address}")
        return 0
    print(f"{'job':<30} {'status':<10} {'start':<19} {'end':<19} command")
    for job in jobs:
        command = _command_of(job.entrypoint)
        print(f"{job.submission_id or job.job_id:<30} {job.status.value:<10} {_time(job.start_time):<19} "
              f"{_time(job.end_time):<19} {command[:100]}")
    return 0


def job_status(args: argparse.Namespace) -> int:
    """``memsel jobs status ID``: status, message, start and end; says so when the driver's node died."""
    client = connect(args.address, args.timeout)
    info = client.call("get_job_info", args.job_id)
    print(f"job:      {args.job_id}\nstatus:   {info.status.value}")
    died = driver_node_died(info) if info.status.value == "FAILED" else None
    if died:
        print("cause:    the job's driver died with its node; the job did not finish: submit it again "
              "(`memsel tune --resume` continues a sweep)")
        print(f"node:     {died}")
    elif info.message:
        print(f"message:  {_first_line(info.message)}")
    print(f"start:    {_time(info.start_time)}\nend:      {_time(info.end_time)}")
    print(f"command:  {_command_of(info.entrypoint)}")
    for key, label in (("mlflow", "MLflow"), ("run_dir", "run dir")):
        if (info.metadata or {}).get(key):
            print(f"{label + ':':<9} {info.metadata[key]}")
    return 0


def job_logs(args: argparse.Namespace) -> int:
    """``memsel jobs logs ID [--follow]``: the job's logs; following, exit 0 when it SUCCEEDED, else 1."""
    client = connect(args.address, args.timeout)
    if args.follow:
        return follow(client, args.job_id, stream=True)
    sys.stdout.write(client.call("get_job_logs", args.job_id))
    return 0


def stop_job(args: argparse.Namespace, wait_s: float = 120) -> int:
    """``memsel jobs stop ID [--wait]``: ask Ray to stop the job (its driver gets SIGTERM, then SIGKILL)."""
    client = connect(args.address, args.timeout)
    stopping = client.call("stop_job", args.job_id)
    status = client.call("get_job_status", args.job_id)
    print(f"job {args.job_id}: {'stop requested' if stopping else 'already ended'} ({status.value})", flush=True)
    deadline = time.monotonic() + wait_s
    while args.wait and not status.is_terminal():
        if time.monotonic() > deadline:
            raise JobsError(f"job {args.job_id} still {status.value} {wait_s:.0f} s after the stop request")
        time.sleep(1)
        status = client.call("get_job_status", args.job_id)
    if args.wait:
        print(f"job {args.job_id}: {status.value}")
    return 0
