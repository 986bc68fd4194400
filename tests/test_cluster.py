"""`skd-tune run --address` on a real 2-node Ray cluster, both nodes on this machine.

The module fixture starts a head node and a worker node with `ray start` (1 CPU each, so two
concurrent `cpu: 1` trials must use both nodes), the search joins them with `--address HEAD_IP:PORT`,
and the teardown stops every process of the two nodes, always.

How the test tells the two nodes apart: both nodes have the machine's IP and hostname, so the
`node_ip`/`hostname` columns of epochs.parquet cannot. Each node is started with its own
`--temp-dir` (allowed per node), and every Ray worker process writes its log as
`<its node's temp dir>/session_*/logs/python-core-worker-<worker id>_<pid>.log`. So the `pid`
column of epochs.parquet (the pid of the trial's worker process, filled in by Ray Tune) names
exactly one node's log directory. This record outlives the workers (Tune kills the trial actors
when the search ends). As an independent, live cross-check, a sampler thread watches /proc during
the run and records the parent of every worker process: workers are children of their node's
raylet, whose pid the test knows. A driver that had started its own local Ray instead of joining
the cluster would put its workers' logs under /tmp/ray and their parent would be another raylet,
so the trial pids would match neither node.

Teardown: `ray stop --force` stops every Ray process on the machine by process name, including
those of other test runs sharing it, so it is not used. Each `ray start` runs in a new session
(`start_new_session=True`); every process it leaves (GCS, raylet, agents, workers) stays in that
session, and the teardown signals exactly those processes by pid (SIGTERM, then SIGKILL).

Token authentication: the head enables it (RAY_AUTH_MODE=token) with a token made for this test
and passed as RAY_AUTH_TOKEN to the head, the worker node, `ray status` and the driver; nothing
reads or writes ~/.ray/auth_token. An explicit `--address HOST:PORT` never turns token auth on by
itself (only `auto` does), so the driver needs RAY_AUTH_MODE=token too;
test_explicit_address_needs_token_mode checks that it is refused without it. The driver's
environment is set with monkeypatch, per test, so nothing leaks into other tests.

The last two tests check the files in cluster/ (syntax, Ray's cluster-config schema, consistency
with constraints.txt and the Dockerfile); they start nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import TINY_SPEC, deep_update, run_cli

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
NODES = ("head", "worker")
MEMORY = 2 * 1024**3  # per node: by default each node would claim all of the machine's memory
OBJECT_STORE = 300 * 1024**2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process, None if it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # state, ppid, pgrp, session, ...
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[3])


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


class LocalCluster:
    """A head and a worker node started with `ray start` on this machine, each with its own temp dir."""

    def __init__(self, root: Path, token: str):
        self.root = root
        self.token = token
        self.ip: str | None = None
        self.port = 0
        self.sessions: dict[str, int] = {}  # node -> session id (= pid of its `ray start`)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0")
        return env

    def temp_dir(self, node: str) -> Path:
        return self.root / node[0]  # short: Ray's socket paths must stay under 107 characters

    def _ray_start(self, node: str, args: list[str]) -> str:
        self.temp_dir(node).mkdir(parents=True, exist_ok=True)
        cmd = [
            RAY,
            "start",
            *args,
            "--num-cpus=1",
            "--num-gpus=0",
            f"--memory={MEMORY}",
            f"--object-store-memory={OBJECT_STORE}",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir(node)}",
            f"--dashboard-agent-listen-port={_free_port()}",
        ]
        proc = subprocess.Popen(
            cmd, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.sessions[node] = proc.pid  # recorded before anything can fail: the teardown needs it
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{out[-3000:]}")
        return out

    def start(self) -> None:
        self.port = _free_port()
        out = self._ray_start(
            "head", ["--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={_free_port()}"]
        )
        m = re.search(r"Local node IP: (\S+)", out)
        assert m, out
        self.ip = m.group(1)  # the machine's own address: Ray does not bind the GCS to 127.0.0.1
        self._ray_start("worker", [f"--address={self.address}"])
        self.wait_for_nodes(2)

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            r = subprocess.run(
                [RAY, "status", f"--address={self.address}"], env=self.env(), capture_output=True, text=True, timeout=60
            )
            out = r.stdout + r.stderr
            active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
            if len(re.findall(r"\bnode_[0-9a-f]+", active)) >= n:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not show {n} active nodes in {timeout:.0f} s:\n{out[-3000:]}")

    def processes(self) -> list[int]:
        """Live processes of this cluster: those in the sessions of its `ray start` commands. The kernel
        does not reuse a pid that is still some process's session id; the session leader itself (the
        `ray start`, long gone) is left out, so a later process given that pid is never matched."""
        sids = set(self.sessions.values())
        return [pid for pid in _all_pids() if pid not in sids and (st := _stat(pid)) is not None and st[1] in sids]

    def raylets(self) -> dict[int, str]:
        """raylet pid -> node name."""
        out = {}
        for node, sid in self.sessions.items():
            for pid in _all_pids():
                st = _stat(pid)
                if st is not None and st[1] == sid:
                    try:
                        comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    except OSError:
                        continue
                    if comm == "raylet":
                        out[pid] = node
        return out

    def node_of_worker_pid(self) -> dict[int, str]:
        """pid -> node, for every Ray worker process that ever ran on either node (from its log file name)."""
        out: dict[int, str] = {}
        for node in NODES:
            for log in self.temp_dir(node).glob("session_*/logs/python-core-worker-*_*.log"):
                out[int(log.stem.rsplit("_", 1)[1])] = node
        return out

    def driver_pids(self) -> list[int]:
        """pids of the drivers that connected to the cluster (their core-driver logs, in the node they attached to)."""
        return [
            int(log.stem.rsplit("_", 1)[1])
            for node in NODES
            for log in self.temp_dir(node).glob("session_*/logs/python-core-driver-*_*.log")
        ]

    def stop(self, grace_s: float = 3.0) -> list[int]:
        """SIGTERM every process of the cluster, SIGKILL what is left after `grace_s`; the pids still alive."""
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            alive = self.processes()
            for pid in alive:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while alive and time.monotonic() < deadline:
                time.sleep(0.2)
                alive = self.processes()
            if not alive:
                return []
        return self.processes()


class ParentSampler:
    """Watches /proc while the search runs: pid -> node for every child of either raylet."""

    def __init__(self, raylets: dict[int, str], period: float = 0.25):
        self.raylets = raylets
        self.period = period
        self.seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in _all_pids():
                st = _stat(pid)
                if st is not None and st[0] in self.raylets:
                    self.seen.setdefault(pid, self.raylets[st[0]])
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def cluster():
    if not sys.platform.startswith("linux"):
        pytest.skip("the local 2-node cluster is told apart and stopped through /proc (Linux only)")
    # Short path under /tmp: the sockets Ray creates in a node's temp dir must stay under 107 characters.
    root = Path(tempfile.mkdtemp(prefix="skdc-", dir="/tmp"))
    c = LocalCluster(root, token=secrets.token_hex(32))
    try:
        c.start()
        yield c
    finally:
        left = c.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes of the test cluster still alive after SIGKILL: {left}"


@pytest.fixture
def cluster_env(cluster, monkeypatch):
    """The driver's environment for this cluster (undone after the test)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    return cluster


def _spec(tmp_path: Path) -> Path:
    spec = deep_update(
        TINY_SPEC,
        {
            "name": "cluster",
            "storage": str(
                tmp_path / "shared"
            ),  # an absolute path every node reaches (one disk here; NFS/EFS on a real cluster)
            "student": {"epochs": 20},  # ~0.1-0.2 s each: long enough that trials on the two nodes overlap
            "search": {"num_samples": 4, "max_concurrent": 2, "scheduler": {"name": "fifo"}},
        },
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_search_runs_trials_on_both_nodes(cluster_env, tmp_path):
    cluster = cluster_env
    spec = _spec(tmp_path)
    drivers_before = set(cluster.driver_pids())
    with ParentSampler(cluster.raylets()) as sampler:
        r = run_cli("run", str(spec), "--address", cluster.address, cwd=tmp_path, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]

    exp = tmp_path / "shared" / "cluster"
    assert (exp / "export" / "model.pt").is_file(), out[-2000:]
    # The driver joined the cluster: it did not start local Ray (it records that only when it does) ...
    assert not (exp / ".driver.json").exists(), "the driver started its own local Ray"
    # ... and it registered with the cluster as a driver (its core log is written in a node's log dir).
    assert set(cluster.driver_pids()) - drivers_before, "no driver connected to the test cluster"

    epochs = pd.read_parquet(exp / "results" / "epochs.parquet")
    teacher = pd.read_parquet(exp / "results" / "teacher_epochs.parquet")
    assert {"pid", "node_ip", "hostname"} <= set(epochs.columns)
    assert epochs["trial_id"].nunique() == 4
    assert len(epochs) == 4 * 20  # FIFO: every trial runs every epoch
    assert epochs["node_ip"].nunique() == 1 == epochs["hostname"].nunique()  # why node_ip cannot tell them apart

    node_of = cluster.node_of_worker_pid()
    pids = set(epochs["pid"].astype(int)) | set(teacher["pid"].astype(int))
    unknown = sorted(p for p in pids if p not in node_of)
    assert not unknown, f"trial pids {unknown} ran on neither node of the test cluster (workers: {node_of})"
    # The live record agrees wherever it saw the process (it sees most: trials last seconds).
    seen = {p: sampler.seen[p] for p in pids if p in sampler.seen}
    assert seen, f"the /proc sampler saw no trial process (children of the raylets: {sampler.seen})"
    assert all(node_of[p] == n for p, n in seen.items()), (seen, node_of)

    epochs["node"] = epochs["pid"].astype(int).map(node_of)
    per_node = epochs.groupby("node")["trial_id"].nunique().to_dict()
    assert set(per_node) == set(NODES), f"student trials per node: {per_node}"
    # (Whether two trials on different nodes overlapped in time is the scheduler's choice, not a property
    # of skd-tune: trials of a second or two may legitimately run one after the other. Not asserted.)

    # Fetching results (cluster/README.md): spec.yaml, state.json, results/ and export/ are all that status,
    # report and export read; the Tune directories with every trial's checkpoints stay on the cluster.
    # In-process here: a subprocess costs ~10 s each on a loaded machine.
    from skd_tune.report import build_report
    from skd_tune.serve import export_artifacts
    from skd_tune.status import experiment_status, format_status

    fetched = tmp_path / "fetched" / "cluster"
    fetched.mkdir(parents=True)
    for name in ("spec.yaml", "state.json"):
        shutil.copy2(exp / name, fetched / name)
    for name in ("results", "export"):
        shutil.copytree(exp / name, fetched / name)
    status = format_status(experiment_status(str(fetched)))
    assert "student trials: 4/4 terminated" in status, status
    assert build_report(str(fetched)).html.is_file()
    export_artifacts(str(fetched / "export"), str(tmp_path / "artefacts"), ["state_dict"])
    assert (tmp_path / "artefacts" / "model.pt").is_file()


def test_trial_that_fits_no_single_node_is_refused_after_the_wait(cluster_env, tmp_path):
    """2 CPUs in all, 1 per node: a student asking for 2 CPUs could never be placed. After --node-wait
    (workers may still be joining) the run stops with exit 2 and one paragraph naming the field."""
    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["student"]["resources"] = {"cpu": 2}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("run", str(path), "--address", cluster_env.address, "--node-wait", "2", cwd=tmp_path, timeout=180)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "waiting up to 2 s for a Ray node that can hold a trial (student: cpu=2, gpu=0)" in r.stdout
    assert (
        "error: student.resources asks for cpu=2, gpu=0 on one node, but no node of the Ray cluster has that"
        in r.stderr
    )
    assert "its nodes have: cpu=1, gpu=0" in r.stderr and "Traceback" not in r.stderr


def test_explicit_address_needs_token_mode(cluster):
    """`ray.init(address="HOST:PORT")`, which `skd-tune run --address HOST:PORT` calls, does not switch
    token auth on by itself (only `auto` does): without RAY_AUTH_MODE=token the head refuses the driver
    even though the right token is in the environment (documented in cluster/README.md)."""
    env = {k: v for k, v in cluster.env().items() if k != "RAY_AUTH_MODE"}
    env["RAY_gcs_server_port_wait_time_s"] = "1"  # ray.init retries a refused connection for ~20 s by default
    r = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={cluster.address!r})"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert "InvalidAuthToken" in r.stderr, r.stderr[-3000:]
    ok = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={cluster.address!r}); print(len(ray.nodes()))"],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and ok.stdout.split()[-1] == "2", ok.stdout + ok.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# The cluster files (no cloud or Kubernetes here: syntax, schema and consistency with the project only)

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"


def _pinned_ray() -> str:
    text = (CLUSTER.parent / "constraints.txt").read_text()
    return re.search(r"^ray==(\S+)$", text, re.M).group(1)


def test_cluster_launcher_config_passes_rays_schema():
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # the checks `ray up` runs first
    assert config["docker"]["image"].startswith(f"rayproject/ray:{_pinned_ray()}-py311")
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] >= 1  # skd-tune refuses to start while no node has a GPU
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert any("-c constraints.txt -e ." in c for c in config["setup_commands"])


def _polyp_resources() -> dict[str, dict[str, float]]:
    from skd_tune.spec import load_spec

    spec = load_spec(CLUSTER.parent / "search_spaces" / "polyp.yaml")
    return {role: getattr(spec, role).resources.model_dump() for role in ("teacher", "student")}


def test_kuberay_manifests_fit_the_polyp_spec_and_each_other():
    """Relations the manifests must keep, not their literal values: the Ray version pinned here, a GPU
    worker that can hold the polyp spec's teacher and students (Ray's logical resources agreeing with the
    container's limits), one shared volume on every pod, and a job that runs a spec of this repository."""
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim"} <= set(by_kind)
    cluster, job = by_kind["RayCluster"]["spec"], by_kind["RayJob"]["spec"]
    assert cluster["rayVersion"] == _pinned_ray()
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    (gpu,) = cluster["workerGroupSpecs"]
    worker = gpu["template"]["spec"]["containers"][0]
    ray_gpus, ray_cpus = float(gpu["rayStartParams"]["num-gpus"]), float(gpu["rayStartParams"]["num-cpus"])
    assert ray_gpus == worker["resources"]["limits"]["nvidia.com/gpu"]  # Ray schedules the GPUs the pod has
    assert gpu["minReplicas"] >= 1  # skd-tune refuses to start while no node can hold a trial
    for role, res in _polyp_resources().items():
        assert res["gpu"] <= ray_gpus and res["cpu"] <= ray_cpus, (role, res)
    workdir = re.search(r"^WORKDIR (\S+)$", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    volumes = set()
    for container in (head, worker):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes |= {mounts[f"{workdir}/runs"], mounts[f"{workdir}/data"]}
    assert len(volumes) == 1  # runs/ and data/: one shared volume on the head and every worker
    assert "ReadWriteMany" in by_kind["PersistentVolumeClaim"]["spec"]["accessModes"]
    assert job["clusterSelector"] == {"ray.io/cluster": by_kind["RayCluster"]["metadata"]["name"]}
    entry = re.fullmatch(rf"cd {re.escape(workdir)} && skd-tune run (\S+) --address auto", job["entrypoint"])
    assert entry and (CLUSTER.parent / entry.group(1)).is_file(), job["entrypoint"]
