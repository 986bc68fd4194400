"""Experiments on shared storage: a local S3-compatible server (moto's, started by the tests) holds
every file of the experiment; the local mirror is only a cache."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket

import pandas as pd
import pytest
import yaml

from skd_tune.experiment.storage import checkout, is_uri, join, mirror_dir, open_remote, pull, push

from .conftest import TINY_SPEC, Barrier, deep_update, run_cli, start_cli

BUCKET = "skd-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port, the AWS environment pointing at it, a bucket, and a cache dir."""
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "SKD_TUNE_CACHE": str(tmp_path_factory.mktemp("cache")),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        import boto3

        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket=BUCKET)
        yield client
    server.stop()


def _keys(client, prefix: str) -> set[str]:
    out, token = set(), None
    while True:
        kw = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kw)
        out |= {o["Key"] for o in page.get("Contents", [])}
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def test_uri_helpers():
    assert is_uri("s3://b/p") and is_uri("gs://b/p") and not is_uri("runs") and not is_uri("/abs/runs")
    assert not is_uri("file:///tmp/x")
    assert join("s3://b/runs/", "tiny") == "s3://b/runs/tiny"
    assert (
        join("s3://b/runs?endpoint_override=h:9", "tiny", "student") == "s3://b/runs/tiny/student?endpoint_override=h:9"
    )
    assert mirror_dir("b/runs/tiny").name == "tiny" and mirror_dir("b/runs/tiny") != mirror_dir("c/runs/tiny")


def test_push_and_pull_keep_the_longer_journal(s3, tmp_path):
    remote = open_remote(f"s3://{BUCKET}/unit/exp")
    local = tmp_path / "a"
    (local / "results").mkdir(parents=True)
    (local / "state.json").write_text('{"stages": {}}')
    (local / "results" / "journal.jsonl").write_text("1\n2\n")
    push(local, remote, "state.json")
    push(local, remote, "results")
    assert _keys(s3, "unit/exp/") == {"unit/exp/state.json", "unit/exp/results/journal.jsonl"}
    other = tmp_path / "b"  # another machine: everything comes down
    assert pull(remote, other) == 2 and (other / "results" / "journal.jsonl").read_text() == "1\n2\n"
    # this machine's journal went further than its last upload (a killed driver): it is kept
    (local / "results" / "journal.jsonl").write_text("1\n2\n3\n")
    pull(remote, local)
    assert (local / "results" / "journal.jsonl").read_text() == "1\n2\n3\n"
    root, rem = checkout(f"s3://{BUCKET}/unit/exp")
    assert rem is not None and (root / "state.json").exists()


def test_unreadable_storage_is_a_clear_error(s3, write_spec, tmp_path):
    path = write_spec({"storage": "nosuchscheme://x/y"})
    proc = run_cli("run", str(path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "storage 'nosuchscheme://x/y" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_search_on_s3_interrupted_resumed_then_read_from_another_head(s3, tmp_path):
    """A search whose storage is S3: SIGINT during the student search, the local mirror deleted (the head
    node is gone), the same command again on a "fresh head" finishes from what is on S3, every sample
    exactly once. Then, from yet another head with no mirror: report, status, resume (nothing retrained)
    and export read everything from the bucket."""
    spec = deep_update(
        TINY_SPEC,
        {
            "name": "s3run",
            "storage": f"s3://{BUCKET}/runs",
            "student": {"epochs": 4, "batch_size": 32},
            "search": {"num_samples": 3, "scheduler": {"name": "fifo"}},
            "methods": {"seeds": 1},
        },
    )
    spec_path = tmp_path / "s3run.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    barrier = Barrier(tmp_path / "barrier", "student", 2)
    log = tmp_path / "first.log"
    proc = start_cli("run", str(spec_path), cwd=tmp_path, log=log, env=barrier.env)
    barrier.wait(proc, n=2, log=log)  # two student trials at epoch 2: the search is under way
    # A second driver on the same experiment (another head, a resubmitted job) is refused: the first one
    # holds its lease on the bucket.
    second = run_cli("run", str(spec_path), cwd=tmp_path, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    assert re.search(
        rf"s3://{BUCKET}/runs/s3run is being run by another skd-tune driver \(host .*, pid {proc.pid}", second.stderr
    )
    assert "Traceback" not in second.stderr
    proc.send_signal(signal.SIGINT)
    barrier.release()
    assert proc.wait(timeout=120) == 130, log.read_text()
    assert ".lease.json" not in {k.rsplit("/", 1)[-1] for k in _keys(s3, "runs/s3run/")}  # released on exit
    assert f"experiment s3://{BUCKET}/runs/s3run (local mirror" in log.read_text()
    shutil.rmtree(os.environ["SKD_TUNE_CACHE"])

    again = run_cli("run", str(spec_path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(resuming)" in again.stdout
    assert not (tmp_path / "runs").exists()  # nothing written to a local `runs/`
    trials = pd.read_parquet(f"s3://{BUCKET}/runs/s3run/results/trials.parquet")
    assert len(trials) == 3 and trials["trial_id"].is_unique and (trials["status"] == "TERMINATED").all()
    epochs = pd.read_parquet(f"s3://{BUCKET}/runs/s3run/results/epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert all(sorted(g) == list(range(1, 5)) for g in epochs.groupby("trial_id")["epoch"].apply(list))
    keys = _keys(s3, "runs/s3run/")
    for key in (
        "spec.yaml",
        "state.json",
        "teacher_logits/train.npy",
        "results/trials.parquet",
        "results/epochs.parquet",
        "results/journal.jsonl",
        "results/methods.parquet",
        "results/data.json",
        "export/model.pt",
        "export/meta.json",
    ):
        assert f"runs/s3run/{key}" in keys, key
    assert any(k.startswith("runs/s3run/student/student_trainable_") and "/checkpoint_" in k for k in keys)
    assert any(k.startswith("runs/s3run/teacher/") for k in keys) and any(
        k.startswith("runs/s3run/final/") for k in keys
    )

    # Another head node: no local mirror. report, status, resume and export read everything from S3.
    shutil.rmtree(os.environ["SKD_TUNE_CACHE"])
    uri = f"s3://{BUCKET}/runs/s3run"
    report = run_cli("report", uri, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "SKD" in report.stdout and f"uploaded to {uri}/report" in report.stdout
    assert "runs/s3run/report/index.html" in _keys(s3, "runs/s3run/report/")
    status = run_cli("status", uri, cwd=tmp_path)
    assert status.returncode == 0 and "3/3 terminated" in status.stdout and "methods done" in status.stdout
    shutil.rmtree(os.environ["SKD_TUNE_CACHE"])
    done = run_cli("run", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(resuming)" in done.stdout and "[student] trials" not in done.stdout  # nothing retrained
    out = tmp_path / "best"
    export = run_cli("export", uri, "--out", str(out), "--formats", "state_dict", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (out / "model.pt").exists()
