"""The pipeline: one experiment directory, stages run in order, each recorded in `state.json`.

    data -> teacher (Ray Tune) -> teacher_logits (Ray task) -> student search (Ray Tune + Optuna + ASHA)
         -> export -> methods (the no-KD / KD / SKD table: Ray Tune, one trial per method and seed)

Stages already done are skipped when the same command runs again; the Tune stages are continued
with `Tuner.restore`.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from .data import Dataset, load_dataset
from .metrics import classification_metrics, label_bits
from .processes import record_local_ray, stop_orphans
from .results import ResultsTables
from .spec import LOCATION_FIELDS, Spec, spec_hash
from .storage import Remote, checkout, download_dir, join, mirror_dir, push

__all__ = ["Experiment", "PipelineError", "SearchInterrupted", "run"]

log = logging.getLogger("skd_tune")

STAGES = ("teacher", "teacher_logits", "student", "export", "methods")


from .errors import PipelineError, SearchInterrupted

# --------------------------------------------------------------------------------------------------
# The experiment directory


@dataclass
class Experiment:
    """`<storage>/<name>/`: frozen spec, stage state, Tune experiments, cached logits, results, export.

    `root` is a local directory: the experiment itself, or, when `storage` is a URI (s3://, gs://),
    the local mirror of its files, uploaded to `remote` after every write (see storage.py). The Ray
    Tune experiments live at `tune_location(stage)`, on the storage itself.
    """

    root: Path
    remote: Remote | None = None

    @classmethod
    def open(cls, location: str) -> Experiment:
        """The experiment at a local path or a URI; for a URI, its files are pulled into the mirror first."""
        root, remote = checkout(location)
        return cls(root.resolve(), remote)

    @property
    def location(self) -> str:
        """Where the experiment lives, as the user named it: a URI, or the local directory."""
        return self.remote.uri if self.remote is not None else str(self.root)

    def tune_location(self, stage: str = "") -> str:
        """The Ray Tune experiment of `stage` (or, with "", its storage_path): a URI or a local path."""
        base = self.remote.uri if self.remote is not None else str(self.root.resolve())
        return join(base, stage) if stage else base

    def sync(self, *rels: str) -> None:
        """Upload these files or directories (relative to the experiment) to the storage, if remote."""
        if self.remote is not None:
            for rel in rels:
                push(self.root, self.remote, rel)

    def relative(self, reported_path: str) -> str:
        """A path Ray Tune reported (a checkpoint) relative to the experiment, wherever it lives."""
        if self.remote is not None:
            return (
                reported_path[len(self.remote.path) + 1 :]
                if reported_path.startswith(self.remote.path + "/")
                else reported_path
            )
        return os.path.relpath(reported_path, self.root.resolve())

    def local_dir(self, rel: str, scratch: Path) -> Path:
        """A local copy of the experiment's directory `rel` (a checkpoint): in place, or downloaded into `scratch`."""
        if self.remote is None:
            return self.root / rel
        return download_dir(self.remote, rel, scratch / Path(rel).name)

    def tables(self, param_names: list[str], metric: str, mode: str, prefix: str = "") -> ResultsTables:
        """The results tables of a stage, uploaded to the storage on every flush when it is remote."""
        on_write = None
        if self.remote is not None:
            on_write = lambda paths: self.sync(*(f"results/{p.name}" for p in paths))  # noqa: E731
        return ResultsTables(self.results_dir, param_names, metric, mode, prefix=prefix, on_write=on_write)

    def has_tune_experiment(self, stage: str) -> bool:
        if self.remote is None:
            return (self.root / stage).exists()
        import pyarrow.fs as pafs

        return self.remote.fs.get_file_info(self.remote.child(stage)).type != pafs.FileType.NotFound

    def delete_tune_experiment(self, stage: str) -> None:
        if self.remote is None:
            shutil.rmtree(self.root / stage, ignore_errors=True)
        elif self.has_tune_experiment(stage):
            self.remote.fs.delete_dir(self.remote.child(stage))

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def logits_dir(self) -> Path:
        return self.root / "teacher_logits"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    def read_state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {"stages": {}}
        try:
            return json.loads(self.state_file.read_text())
        except json.JSONDecodeError as e:
            raise PipelineError(
                f"{self.state_file}: not valid JSON ({e}); the file was damaged. Delete it to re-run the stages "
                "(finished Ray Tune experiments in the directory are resumed, not recomputed)"
            ) from None

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)
        self.sync("state.json")

    def stage_done(self, stage: str) -> dict[str, Any] | None:
        return self.read_state()["stages"].get(stage)

    def mark_done(self, stage: str, **info: Any) -> None:
        state = self.read_state()
        state["stages"][stage] = {"done_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self.write_state(state)

    def prepare(self, spec: Spec) -> bool:
        """Create the directory with a frozen copy of the spec, or check that it matches. True if resuming."""
        frozen = spec.model_dump(mode="json")
        digest = spec_hash(spec)
        if self.spec_file.exists():
            old = yaml.safe_load(self.spec_file.read_text()) or {}
            old_hash = self.read_state().get("spec_hash")
            try:  # re-validated, so fields added to skd-tune since (with their defaults) do not count as a change
                old = Spec.model_validate(old).model_dump(mode="json")
                old_hash = spec_hash(Spec.model_validate(old))
            except ValueError:
                pass  # a frozen spec this version cannot read: compare the stored hash, report the raw diff
            nothing_computed = not self.read_state()["stages"] and not any(
                self.has_tune_experiment(d) for d in ("teacher", "student")
            )
            if old_hash != digest and not nothing_computed:
                diffs = _diff(
                    {k: v for k, v in old.items() if k not in LOCATION_FIELDS},
                    {k: v for k, v in frozen.items() if k not in LOCATION_FIELDS},
                )
                raise PipelineError(
                    f"{self.root} was started from a different spec; fields that differ: {'; '.join(diffs) or '(unknown)'}. "
                    f"Either restore the old spec (a copy is in {self.spec_file}) to resume this experiment, or give "
                    "the spec a new `name:` to start a new experiment"
                )
            if old_hash == digest:
                return True
        elif self.root.is_dir() and any(self.root.iterdir()):
            raise PipelineError(
                f"{self.root} exists and is not an skd-tune experiment (it has no spec.yaml); nothing was written to it. "
                "Give the spec another `name:` or `storage:`, or empty that directory"
            )
        elif self.root.exists() and not self.root.is_dir():
            raise PipelineError(
                f"{self.root} is a file, not an experiment directory; give the spec another `name:` or `storage:`"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.spec_file.write_text(yaml.safe_dump(frozen, sort_keys=False))
        self.sync("spec.yaml")
        self.write_state({"spec_hash": digest, "stages": {}})
        return False


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


# --------------------------------------------------------------------------------------------------
# Ray Tune callbacks (results tables and the progress line)


# Keys Ray adds to every result that say nothing about the training (kept out of epochs.parquet).
_RAY_BOOKKEEPING = {
    "checkpoint_dir_name",
    "should_checkpoint",
    "done",
    "training_iteration",
    "date",
    "time_this_iter_s",
    "time_since_restore",
    "iterations_since_restore",
    "config",
    "experiment_tag",
    "trial_id",
}


def _short_error(error: BaseException | str | None) -> str:
    """The last line of a (remote) traceback: what a user needs in a one-paragraph message."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _trial_dirname(trial) -> str:
    return f"{trial.trainable_name}_{trial.trial_id}"


class StageCallback(tune.Callback):
    """Feeds the Parquet tables, prints one progress line whenever the picture changes, and turns
    SIGINT/SIGTERM into Tune's graceful stop while remembering that the run was interrupted.

    It keeps no paths of its own: the results directory is found from the trials' storage path, so a
    moved experiment directory keeps working after `Tuner.restore` (which unpickles this object).
    """

    def __init__(self, stage: str, param_names: list[str], metric: str, mode: str, total: int, max_epochs: int):
        self.config = dict(
            stage=stage, param_names=list(param_names), metric=metric, mode=mode, total=total, max_epochs=max_epochs
        )
        self.stage, self.param_names, self.metric, self.mode = stage, list(param_names), metric, mode
        self.total, self.max_epochs = total, max_epochs
        self.tables: ResultsTables | None = None
        self._last_line = ""
        self._best_part = ""
        self._last_print = 0.0
        self._changed = True

    def __getstate__(self):  # pickled into tuner.pkl: only the configuration, nothing of this process
        return self.config

    def __setstate__(self, state):
        self.__init__(**state)

    # -- signals ---------------------------------------------------------------------------------
    def setup(self, **info):
        # Tune has installed its SIGINT handler (save state, stop the loop, keep running trials
        # resumable). Chain ours in front of it, and route SIGTERM the same way.
        tune_handler = signal.getsignal(signal.SIGINT)
        flag = interrupt_flag()

        def on_signal(signum, frame):
            if flag.is_set() and signum == signal.SIGTERM:
                raise KeyboardInterrupt  # a second SIGTERM: stop now
            flag.set()
            if callable(tune_handler):
                tune_handler(signal.SIGINT, frame)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)

    # -- tables ----------------------------------------------------------------------------------
    def _tables(self, trial) -> ResultsTables:
        if self.tables is None:
            # The experiment's storage path (not the local staging copy Ray syncs from).
            # On a remote storage, the tables are kept in the experiment's local mirror and uploaded on
            # every flush.
            fs, exp_path = trial.storage.storage_filesystem, Path(trial.storage.experiment_fs_path).parent.as_posix()
            prefix = "" if self.stage == "student" else f"{self.stage}_"
            if fs.type_name == "local":
                self.tables = ResultsTables(
                    Path(exp_path) / "results", self.param_names, self.metric, self.mode, prefix=prefix
                )
            else:
                exp = Experiment(mirror_dir(exp_path), Remote(fs, exp_path, exp_path))
                self.tables = exp.tables(self.param_names, self.metric, self.mode, prefix=prefix)
        return self.tables

    def _set(self, trial, **kw) -> None:
        self._tables(trial).set_trial(trial.trial_id, params=trial.config, max_epochs=self.max_epochs, **kw)
        self._changed = True

    def on_trial_start(self, iteration, trials, trial, **info):
        self._set(trial, status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tables = self._tables(trial)
        tables.add_epoch(trial.trial_id, trial.config, {k: v for k, v in result.items() if k not in _RAY_BOOKKEEPING})
        tables.flush()
        self._changed = True

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._set(trial, status="TERMINATED")
        self.tables.flush(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = None
        if trial.error_file and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()[-4000:]
        self._set(trial, status="ERROR", error=error or "error")
        self.tables.flush(force=True)

    # -- progress --------------------------------------------------------------------------------
    def on_step_end(self, iteration, trials, **info):
        # Runs between every two results of the trials, which wait for the driver: keep it cheap. A line
        # is printed whenever the counts change; the best trial (a pass over the tables) is looked up at
        # most once a second.
        if not self._changed:
            return
        self._changed = False
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        line = (
            f"[{self.stage}] trials {counts.get('TERMINATED', 0)}/{self.total} done, {counts.get('RUNNING', 0)} running, "
            f"{max(self.total - len(trials), 0) + counts.get('PENDING', 0)} pending, {counts.get('ERROR', 0)} errored"
        )
        now = time.monotonic()
        if now - self._last_print >= 1.0 and self.tables is not None:
            self._last_print = now
            best = self.tables.best_trial()
            if best is not None:
                params = ", ".join(f"{p}={_fmt(best.get(p))}" for p in self.param_names)
                self._best_part = (
                    f" | best {self.metric} {best[f'best_{self.metric}']:.4f} "
                    f"({best['trial_id']}{': ' + params if params else ''})"
                )
        line += self._best_part
        if line != self._last_line:
            print(line, flush=True)
            self._last_line = line

    def on_experiment_end(self, trials, **info):
        self._last_print = 0.0
        self._changed = True
        self.on_step_end(0, trials)
        if self.tables is not None:
            self.tables.flush(force=True)


@functools.lru_cache(maxsize=1)
def tune_storages() -> dict[str, tuple[Any, str]]:
    """Ray Tune experiment name -> (pyarrow filesystem, path) where this driver runs it (set by `_tune_stage`)."""
    return {}


def keep_in_place(trial) -> None:
    """Give a trial the storage of the experiment as it is now, if it carries an older one.

    Ray Tune restores a search algorithm with the `Experiment` of the run that started it, storage path
    included: after the experiment directory moved, every trial it creates afterwards would write (and
    fail to checkpoint: "Unable to set up cluster storage") under the old path. Restored trials are
    relocated by Ray itself; this does the same for the new ones before they start.
    """
    here = tune_storages().get(trial.storage.experiment_dir_name)
    if here is None or trial.storage.storage_fs_path == here[1]:
        return
    moved = copy.copy(trial.storage)
    moved.storage_filesystem, moved.storage_fs_path = here
    trial.set_storage(moved)


class _KeepInPlace:
    """Scheduler mixin: `keep_in_place` for every trial added (before it starts)."""

    def on_trial_add(self, tune_controller, trial):
        keep_in_place(trial)
        super().on_trial_add(tune_controller, trial)


class InPlaceFIFO(_KeepInPlace, FIFOScheduler):
    """Ray's FIFO scheduler with `keep_in_place`."""


class InPlaceASHA(_KeepInPlace, ASHAScheduler):
    """Ray's ASHA scheduler with `keep_in_place`."""


@functools.lru_cache(maxsize=1)
def interrupt_flag() -> threading.Event:
    """Set when this driver got SIGINT/SIGTERM during a Tune stage (created on first use)."""
    return threading.Event()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------------------------
# Stages


def init_ray(address: str | None = None, verbose: bool = False) -> bool:
    """Start local Ray (or join `address`), quiet unless `verbose`. True if this call started local Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Our Parquet tables are the record of every trial: skip Tune's CSV/JSON/TensorBoard loggers.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Snapshot Tune's experiment state at every step (its default: at most every 10 s). A trial that
    # finished after the last snapshot is trained again after a SIGKILL; with this, the window is one
    # step of the driver loop. Cheap at the scale of a search (one JSON file per step).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    import ray

    if not verbose:
        for name in ("ray", "ray.tune", "ray.train", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
        )
    except (ConnectionError, RuntimeError) as e:
        where = address or os.environ.get("RAY_ADDRESS")
        if where is None:
            raise
        text, cause = "", e
        while cause is not None:
            text, cause = text + f" {cause}", cause.__cause__ or cause.__context__
        if "InvalidAuthToken" in text:
            raise PipelineError(
                f"the Ray cluster at {where} uses token authentication and refused this driver: set "
                "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token; "
                "`ray get-auth-token` on the head prints it)"
            ) from None
        raise PipelineError(
            f"cannot join the Ray cluster at {where} ({_short_error(e)}); check the address "
            "that `ray start --head` printed and that the head runs"
        ) from None
    return address is None and not os.environ.get("RAY_ADDRESS")


def _preflight_models(spec: Spec, data: Dataset) -> None:
    """Build teacher and student and run two samples through each on the CPU, before any Ray work,
    so a model that cannot take the data fails here with its spec field named, not inside a trial."""
    import torch

    from .models import build_model

    x = torch.as_tensor(np.array(data.train.x[:2]), dtype=torch.float32) * data.scale
    for role in ("teacher", "student"):
        model_name = getattr(spec, role).model
        try:
            model = build_model(model_name, data.num_outputs, data.input_shape, data.mean, data.std, False).eval()
            with torch.no_grad():
                out = model(x)
        except (ValueError, RuntimeError) as e:
            raise PipelineError(
                f"{role}.model {model_name!r} cannot take the {data.name} inputs of shape {data.input_shape}: "
                f"{_short_error(e)}. Choose another {role}.model in the spec"
            ) from None
        if tuple(out.shape) != (2, data.num_outputs):
            raise PipelineError(
                f"{role}.model {model_name!r} gives outputs of shape {tuple(out.shape)[1:]}, expected ({data.num_outputs},)"
            )


def _write_data_summary(exp: Experiment, spec: Spec, data: Dataset, bits: float) -> None:
    """results/data.json: splits, classes, subclasses with their counts, and the label bits H(S|C)."""
    counts = {
        name: np.bincount(data.split(name).subclass, minlength=data.num_subclasses).tolist()
        for name in ("train", "val", "test")
    }
    summary = {
        "source": data.name,
        "subclasses": spec.data.subclass_scheme,
        "class_names": data.class_names,
        "subclass_names": data.subclass_names,
        "subclass_to_class": data.subclass_to_class.tolist(),
        "positive_class": data.class_names[data.positive_class],
        "split_sizes": {name: len(data.split(name)) for name in ("train", "val", "test")},
        "subclass_counts": counts,
        "label_bits_train": bits,
        "outputs": {
            "invented": data.invented,
            "outputs_per_group": data.outputs_per_group,
            "names": data.output_names,
            "output_to_class": data.output_to_class.tolist(),
        },
        "difficulty": "annotator agreement" if data.train.difficulty is not None else "teacher loss (for a curriculum)",
        "teacher_logits": "clean inputs, cached once (no augmentation)",
    }
    exp.results_dir.mkdir(parents=True, exist_ok=True)
    tmp = exp.results_dir / ".data.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, exp.results_dir / "data.json")
    exp.sync("results/data.json")


def _check_curriculum(spec: Spec, data: Dataset) -> None:
    if spec.teacher.curriculum.pacing != "none" and data.train.difficulty is None:
        raise PipelineError(
            f"teacher.curriculum.pacing is {spec.teacher.curriculum.pacing!r} but the {data.name} data grade no "
            "sample's difficulty (no annotator agreement); set teacher.curriculum.pacing: none (the student's "
            "curriculum can use the teacher's loss instead)"
        )


def _unplaceable(spec: Spec) -> list[str]:
    """The roles whose trial fits on no alive node (a trial runs on one node: its CPUs and GPUs together)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    out = []
    for role in ("teacher", "student"):
        res = getattr(spec, role).resources
        if not any(n.get("CPU", 0) >= res.cpu and n.get("GPU", 0) >= res.gpu for n in nodes):
            out.append(role)
    return out


def _check_resources(spec: Spec, wait_s: float = 0.0, printer: Callable[[str], None] = print) -> None:
    """Refuse a spec whose teacher or student trial no node of the cluster can hold (Tune would wait
    forever). On a joined cluster, wait up to `wait_s` for such a node first: workers may still be
    starting, or an autoscaler adding them."""
    import ray

    deadline = time.monotonic() + wait_s
    missing = _unplaceable(spec)
    if missing and wait_s > 0:
        asks = ", ".join(
            f"{r}: cpu={getattr(spec, r).resources.cpu:g}, gpu={getattr(spec, r).resources.gpu:g}" for r in missing
        )
        printer(f"waiting up to {wait_s:.0f} s for a Ray node that can hold a trial ({asks})")
        while missing and time.monotonic() < deadline:
            time.sleep(min(5.0, max(deadline - time.monotonic(), 0.0)))
            missing = _unplaceable(spec)
    if not missing:
        return
    role = missing[0]
    res = getattr(spec, role).resources
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    largest = ", ".join(sorted({f"cpu={n.get('CPU', 0):g}, gpu={n.get('GPU', 0):g}" for n in nodes})) or "none"
    waited = f" (waited {wait_s:.0f} s)" if wait_s > 0 else ""
    raise PipelineError(
        f"{role}.resources asks for cpu={res.cpu:g}, gpu={res.gpu:g} on one node, but no node of the Ray cluster has "
        f"that{waited}; its nodes have: {largest}. The trial could never start. Lower {role}.resources in the spec, "
        f"or run on a cluster with such a node (--address; on a cluster whose workers are still starting, give them "
        f"longer with --node-wait SECONDS)"
    )


def _interrupted_or_failed(stage: str, grid, expected: int, resume_cmd: str) -> None:
    finished = grid.num_terminated + grid.num_errors
    if interrupt_flag().is_set() or finished < expected:
        raise SearchInterrupted(
            f"{stage} stage interrupted with {finished}/{expected} trials finished; everything so far is saved. "
            f"Resume with: {resume_cmd}"
        )


def _tune_stage(name: str, exp: Experiment, trainable, make_tuner: Callable):
    """Restore the stage's Tune experiment if one was started, else create it.

    Ray writes `tuner.pkl` when a Tuner is built, not atomically: a driver killed at that moment leaves
    a file that cannot be restored. So the stage is recorded as started in state.json only once its
    Tuner exists, before `fit`; a directory without that record holds no trial and is started afresh.
    """
    path = exp.tune_location(name)
    if exp.remote is not None:
        tune_storages()[name] = (exp.remote.fs, exp.remote.path)
    else:
        import pyarrow.fs as pafs

        tune_storages()[name] = (pafs.LocalFileSystem(), exp.tune_location())
    started = exp.read_state().get("started", {}).get(name)
    if started and tune.Tuner.can_restore(path):
        try:
            return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        except (EOFError, OSError, ValueError, RuntimeError) as e:
            raise PipelineError(
                f"the Ray Tune experiment {path} cannot be restored ({_short_error(e)}). Move that directory aside "
                f"and run again to redo the {name} stage, or give the spec a new `name:`"
            ) from None
    exp.delete_tune_experiment(name)  # a Tuner whose construction was cut short: no trial ever ran
    tuner = make_tuner()
    state = exp.read_state()
    state.setdefault("started", {})[name] = time.strftime("%Y-%m-%dT%H:%M:%S")
    exp.write_state(state)
    return tuner


# The 3 latest checkpoints of each trial, with no score attribute: the experiment snapshot that Tune
# restores from is forced at least every 3 checkpoints, so the checkpoint it names always still exists
# (with num_to_keep=1 and a score, a SIGKILL could leave it naming a deleted one). Each checkpoint
# carries the best epoch's weights, so the latest one is all export needs.
_CHECKPOINTS = tune.CheckpointConfig(num_to_keep=3)


def _run_config(exp: Experiment, name: str, max_failures: int, callback: StageCallback) -> tune.RunConfig:
    """What every stage's Tuner shares: its place in the experiment, quiet output, the checkpoints kept,
    retries of trials whose worker died, and the callback that feeds the results tables."""
    return tune.RunConfig(
        name=name,
        storage_path=exp.tune_location(),
        verbose=0,
        checkpoint_config=_CHECKPOINTS,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        callbacks=[callback],
    )


def run_teacher(spec: Spec, exp: Experiment, data: Dataset, resume_cmd: str) -> dict[str, Any]:
    """The teacher stage: one trial, or a small Optuna search over `search.teacher.space` (e.g. the
    auxiliary loss's beta and t_aux) whose best trial by `search.metric` becomes the teacher."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from .trainables import teacher_trainable

    metric, mode = spec.search.metric, spec.search.mode
    ts = spec.search.teacher
    res = spec.teacher.resources
    trainable = tune.with_resources(
        tune.with_parameters(teacher_trainable, spec=spec, data=data), {"cpu": res.cpu, "gpu": res.gpu}
    )
    param_names = list(ts.space)

    def make():
        searcher = None
        if ts.space:
            searcher = ConcurrencyLimiter(
                OptunaSearch(sampler=make_sampler(spec.search.sampler, spec.seed)),
                max_concurrent=spec.search.max_concurrent,
            )
        return tune.Tuner(
            trainable,
            param_space=_tune_domains(ts.space),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                num_samples=ts.num_samples,
                search_alg=searcher,
                scheduler=InPlaceFIFO(),
                max_concurrent_trials=spec.search.max_concurrent,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=_run_config(
                exp,
                "teacher",
                spec.search.max_failures,
                StageCallback("teacher", param_names, metric, mode, ts.num_samples, spec.teacher.epochs),
            ),
        )

    grid = _tune_stage("teacher", exp, trainable, make).fit()
    _interrupted_or_failed("teacher", grid, ts.num_samples, resume_cmd)
    if grid.num_terminated == 0:
        raise PipelineError(
            f"the teacher trial failed: {_short_error(grid.errors[0])}. Its full log is under {exp.tune_location('teacher')}; "
            "fix the cause and run the same command again to resume"
        )
    # The teacher is the best trial of the results table (ties: the first by trial id), the same row that
    # the table, status and report show; Ray's own pick may differ on ties.
    tables = exp.tables(param_names, metric, mode, prefix="teacher_")
    row = tables.best_trial() or {}
    tables.close()
    by_id = {(r.metrics or {}).get("trial_id"): r for r in grid if r.checkpoint is not None and not r.error}
    best = by_id.get(row.get("trial_id")) or grid.get_best_result(metric, mode, scope="all")
    checkpoint = best.checkpoint  # the latest: it carries the best epoch's weights
    info = {
        "checkpoint": exp.relative(checkpoint.path),
        "params": {p: _plain(v) for p, v in best.config.items() if p in ts.space},
        "metrics": {k.removeprefix("best_"): v for k, v in row.items() if k.startswith("best_val_")}
        | {"epoch": int(row["best_epoch"]) if row.get("best_epoch") is not None else None},
    }
    exp.mark_done("teacher", **info)
    return info


def run_teacher_logits(
    spec: Spec, exp: Experiment, data: Dataset, teacher_info: dict, in_driver: bool = False
) -> dict[str, np.ndarray]:
    """The frozen teacher's logits of every split, computed once and cached in teacher_logits/.

    As a Ray task with the teacher's resources (on a GPU node where the teacher asks for one), or, with
    `in_driver` (local Ray and a CPU-only teacher), in this process: the same computation without
    starting a worker process that imports torch, ~5 s of a small search."""
    from .trainables import remote_teacher_logits, teacher_logits_task

    checkpoint = join(exp.tune_location(), teacher_info["checkpoint"])
    if in_driver:
        import torch

        logits = teacher_logits_task(spec, data, checkpoint, device=torch.device("cpu"))
    else:
        logits = remote_teacher_logits(spec, data, checkpoint)
    exp.logits_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in logits.items():
        tmp = exp.logits_dir / f".{name}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, arr.astype(np.float32))
        os.replace(tmp, exp.logits_dir / f"{name}.npy")
    exp.sync("teacher_logits")
    test = _class_metrics(logits["test"], data, "test")
    info: dict[str, Any] = {}
    if data.outputs_per_group > 1:
        info["subclasses"] = _write_subclass_diagnostics(exp, data, logits)
    exp.mark_done("teacher_logits", shapes={k: list(v.shape) for k, v in logits.items()}, test_metrics=test, **info)
    return logits


def _write_subclass_diagnostics(exp: Experiment, data: Dataset, logits: dict[str, np.ndarray]) -> dict[str, Any]:
    """results/subclasses.json: how the teacher's invented subclasses (several outputs per group) use
    their capacity on the training split, and how well they match the known subclasses on the test
    split (adjusted mutual information; the known ones are the source's own, e.g. the ten digits)."""
    import torch

    from .metrics import subclass_ami, subclass_usage

    probs = torch.softmax(torch.from_numpy(np.array(logits["train"], dtype=np.float32)), 1).numpy()
    usage = subclass_usage(probs, data.classes("train"), data.output_to_class)
    for row in usage["per_class"]:
        row["class"] = data.class_names[row["class"]]
    out = {
        "scheme": "invented" if data.invented else "known, split",
        "outputs_per_group": data.outputs_per_group,
        "output_names": data.output_names,
        "per_class": usage["per_class"],
        "dead_share": usage["dead_share"],
        "ami_test": subclass_ami(logits["test"], data.test.subclass),
        "ami_against": "known subclasses of the source (" + ", ".join(data.subclass_names) + ")",
    }
    tmp = exp.results_dir / ".subclasses.json.tmp"
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, exp.results_dir / "subclasses.json")
    exp.sync("results/subclasses.json")
    return {k: out[k] for k in ("dead_share", "ami_test")} | {
        "entropy_bits": [r["entropy_bits"] for r in out["per_class"]]
    }


def load_teacher_logits(exp: Experiment) -> dict[str, np.ndarray]:
    return {name: np.load(exp.logits_dir / f"{name}.npy", allow_pickle=False) for name in ("train", "val", "test")}


def _class_metrics(sub_logits: np.ndarray, data: Dataset, split: str) -> dict[str, float]:
    import torch

    from .losses import class_logits, class_membership

    cls = class_logits(torch.tensor(sub_logits), class_membership(torch.tensor(data.output_to_class)))
    return classification_metrics(data.classes(split), torch.softmax(cls, 1).numpy(), data.positive_class)


def _tune_domains(distributions: dict) -> dict[str, Any]:
    """Ray Tune domains for a spec's search space (name -> `Distribution`)."""
    space = {}
    for key, dist in distributions.items():
        kind = dist.kind
        if kind == "uniform":
            space[key] = tune.uniform(*dist.uniform)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*dist.loguniform)
        elif kind == "int":
            space[key] = tune.randint(dist.int[0], dist.int[1] + 1)  # inclusive high
        else:
            space[key] = tune.choice(list(dist.choice))
    return space


def make_sampler(name: str, seed: int):
    """The seeded Optuna sampler the spec names (`search.sampler`, validated against SAMPLERS)."""
    import optuna

    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def run_student_search(spec: Spec, exp: Experiment, data: Dataset, logits: dict[str, np.ndarray], resume_cmd: str):
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from .trainables import student_trainable

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = spec.search
    res = spec.student.resources
    trainable = tune.with_resources(
        tune.with_parameters(student_trainable, spec=spec, data=data, teacher_logits=logits["train"]),
        {"cpu": res.cpu, "gpu": res.gpu},
    )
    param_names = list(s.space)

    def make():
        searcher = None
        if s.space:
            searcher = ConcurrencyLimiter(
                OptunaSearch(sampler=make_sampler(s.sampler, spec.seed)), max_concurrent=s.max_concurrent
            )
        if s.scheduler.name == "asha":
            scheduler = InPlaceASHA(
                time_attr="training_iteration",
                max_t=spec.student.epochs,
                grace_period=min(s.scheduler.grace_period, spec.student.epochs),
                reduction_factor=s.scheduler.reduction_factor,
            )
        else:
            scheduler = InPlaceFIFO()
        return tune.Tuner(
            trainable,
            param_space=_tune_domains(s.space),
            tune_config=tune.TuneConfig(
                metric=s.metric,
                mode=s.mode,
                num_samples=s.num_samples,
                search_alg=searcher,
                scheduler=scheduler,
                max_concurrent_trials=s.max_concurrent,
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=_run_config(
                exp,
                "student",
                s.max_failures,
                StageCallback("student", param_names, s.metric, s.mode, s.num_samples, spec.student.epochs),
            ),
        )

    grid = _tune_stage("student", exp, trainable, make).fit()
    tables = exp.tables(param_names, s.metric, s.mode)  # replays the journal: every epoch reported
    try:
        _interrupted_or_failed("student", grid, s.num_samples, resume_cmd)
    finally:
        tables.flush(force=True)
    # The search finished: take each trial's final status, best checkpoint and error from Ray, which
    # knows them best (a trial restored as finished reports no new events to the callback).
    known = set()
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_", 2)[-1]
        known.add(trial_id)
        ckpt = result.checkpoint  # the latest: it carries the trial's best epoch's weights
        tables.set_trial(
            trial_id,
            params=result.config,
            status="ERROR" if result.error else "TERMINATED",
            checkpoint_path=exp.relative(ckpt.path) if ckpt is not None else None,
            error=str(result.error)[-4000:] if result.error else None,
            max_epochs=spec.student.epochs,
        )
    # A trial started by a driver that was SIGKILLed before Ray Tune snapshotted it does not exist for
    # the restored search (which filled its place with a new trial): drop what the journal had of it.
    lost = [t for t in tables.trial_ids() if t not in known]
    for trial_id in lost:
        tables.drop_trial(trial_id)
    if lost:
        print(
            f"[student] dropped {len(lost)} trial(s) started just before a kill that Ray Tune had not recorded: "
            f"{', '.join(lost)}",
            flush=True,
        )
    tables.flush(force=True)
    if grid.num_terminated == 0:
        raise PipelineError(
            f"every student trial failed; the first error: {_short_error(grid.errors[0] if grid.errors else None)}. "
            f"Each trial's error text is in {exp.results_dir / 'trials.parquet'} (column `error`)"
        )
    exp.mark_done("student", trials=s.num_samples, errored=grid.num_errors)
    return tables


def run_export(spec: Spec, exp: Experiment, data: Dataset, tables: ResultsTables) -> dict[str, Any]:
    from .export import evaluate_exported, export_student, load_student

    best = tables.best_trial()
    if best is None or not isinstance(best.get("checkpoint_path"), str):
        raise PipelineError(f"no student trial with a checkpoint to export; see {exp.results_dir / 'trials.parquet'}")
    params = {p: best[p] for p in spec.search.space}
    with tempfile.TemporaryDirectory() as scratch:
        export_student(
            exp.export_dir,
            spec,
            data,
            exp.local_dir(best["checkpoint_path"], Path(scratch)),
            params,
            {
                "trial_id": best["trial_id"],
                **{k: best[k] for k in best if k.startswith("best_val_") or k == "best_epoch"},
            },
        )
    model, meta = load_student(exp.export_dir)  # check the round trip: what a user will load
    test = evaluate_exported(model, meta, data.test.x, data.classes("test"))
    meta_path = exp.export_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["test"] = test
    tmp = meta_path.with_name(".meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)
    exp.sync("export")
    exp.mark_done("export", trial_id=best["trial_id"], test_metrics=test, path="export")
    return {"trial_id": best["trial_id"], "params": params, "val": best.get(f"best_{spec.search.metric}"), "test": test}


def run_methods(
    spec: Spec, exp: Experiment, data: Dataset, logits: dict[str, np.ndarray], search: ResultsTables, resume_cmd: str
):
    """The method table: the best search configuration as no-KD, KD and SKD (methods.py), each retrained
    with `methods.seeds` seeds as Ray Tune trials (experiment `final/`) and scored on the test split.

    Writes results/methods.parquet (one row per method and seed) and results/methods_summary.parquet.
    """
    import pandas as pd

    from .methods import METHODS, method_params, method_table
    from .results import write_table_atomic
    from .trainables import method_trainable

    best = search.best_trial()
    if best is None:
        raise PipelineError(
            f"no finished student trial to build the method table from; see {exp.results_dir / 'trials.parquet'}"
        )
    params = {p: _plain(best[p]) for p in spec.search.space}
    chosen = spec.student_for(params)
    configs = method_params(params, chosen.w_kd, chosen.w_skd)
    seeds = [spec.seed + k for k in range(spec.methods.seeds)]
    metric, mode = spec.search.metric, spec.search.mode
    res = spec.student.resources
    trainable = tune.with_resources(
        tune.with_parameters(
            method_trainable, spec=spec, data=data, teacher_logits=logits["train"], method_params=configs
        ),
        {"cpu": res.cpu, "gpu": res.gpu},
    )
    total = len(METHODS) * len(seeds)

    def make():
        return tune.Tuner(
            trainable,
            param_space={"method": tune.grid_search(list(METHODS)), "seed": tune.grid_search(seeds)},
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                num_samples=1,
                max_concurrent_trials=spec.search.max_concurrent,
                scheduler=InPlaceFIFO(),
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=_run_config(
                exp,
                "final",
                spec.search.max_failures,
                StageCallback("methods", ["method", "seed"], metric, mode, total, spec.student.epochs),
            ),
        )

    grid = _tune_stage("final", exp, trainable, make).fit()
    tables = exp.tables(["method", "seed"], metric, mode, prefix="methods_")
    try:
        _interrupted_or_failed("methods", grid, total, resume_cmd)
    finally:
        tables.flush(force=True)
    per_trial = tables.trials_frame().set_index("trial_id")
    rows = []
    for result in grid:
        cfg, last = result.config, result.metrics or {}
        trial_id = last.get("trial_id") or Path(result.path).name.split("_", 2)[-1]
        student = spec.student_for(configs[cfg["method"]])
        row: dict[str, Any] = {
            "method": cfg["method"],
            "seed": int(cfg["seed"]),
            "trial_id": trial_id,
            "status": "ERROR" if result.error else "TERMINATED",
        }
        row |= {p: configs[cfg["method"]].get(p) for p in spec.search.space}
        row |= {
            "temperature": student.temperature,
            "w_ce": student.w_ce,
            "w_kd": student.w_kd,
            "w_skd": student.w_skd,
            "lr": student.lr,
            "best_epoch": last.get("best_epoch"),
        }
        if trial_id in per_trial.index:
            mine = per_trial.loc[trial_id]
            row |= {c.removeprefix("best_"): mine[c] for c in per_trial.columns if c.startswith("best_val_")}
        row |= {k: float(v) for k, v in last.items() if k.startswith("test_")}
        row["error"] = _short_error(result.error) if result.error else None
        rows.append(row)
    order = {m: i for i, m in enumerate(METHODS)}
    runs = pd.DataFrame(rows).sort_values(["method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c)
    runs = runs.reset_index(drop=True)
    write_table_atomic(runs, exp.results_dir / "methods.parquet")
    teacher_test = (exp.stage_done("teacher_logits") or {}).get("test_metrics")
    table = method_table(runs, teacher_test)
    write_table_atomic(table, exp.results_dir / "methods_summary.parquet")
    exp.sync("results/methods.parquet", "results/methods_summary.parquet")
    if grid.num_terminated == 0:
        raise PipelineError(
            f"every method-table run failed; the first error: {_short_error(grid.errors[0] if grid.errors else None)}. "
            f"Each run's error text is in {exp.results_dir / 'methods.parquet'} (column `error`)"
        )
    exp.mark_done(
        "methods",
        seeds=seeds,
        from_trial=best["trial_id"],
        params=configs,
        errored=grid.num_errors,
        table=table.to_dict("records"),
    )
    return table


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    experiment: Path
    resumed: bool
    label_bits: float
    teacher: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    methods: Any = None  # the method table (pandas), when methods.seeds > 0
    seconds: float = 0.0


def run(
    spec: Spec,
    *,
    address: str | None = None,
    verbose: bool = False,
    printer: Callable[[str], None] = print,
    resume_cmd: str = "skd-tune run SPEC",
    node_wait_s: float | None = None,
) -> RunSummary:
    """Run (or resume) every stage of the experiment the spec describes.

    `node_wait_s`: on a joined cluster, how long to wait for a node that can hold a trial (default 300 s;
    local Ray has all its nodes at once, so it does not wait)."""
    t0 = time.perf_counter()
    data = load_dataset(spec.data, spec.seed)
    _preflight_models(spec, data)
    _check_curriculum(spec, data)
    exp = Experiment.open(spec.experiment_location)
    resumed = exp.prepare(spec)
    where = exp.location + (f" (local mirror {exp.root})" if exp.remote is not None else "")
    printer(f"experiment {where} ({'resuming' if resumed else 'new'})")
    bits = label_bits(data.train.subclass, data.subclass_to_class)
    if data.invented:
        printer(
            f"data {data.name}: train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, {data.num_classes} classes; "
            f"the teacher invents {data.outputs_per_group} subclasses per class ({data.num_outputs} outputs; the known "
            f"{data.num_subclasses} subclasses, H(S|C) = {bits:.4f} bits, serve only to score them)"
        )
    else:
        printer(
            f"data {data.name}: train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, "
            f"{data.num_classes} classes, {data.num_subclasses} subclasses, H(S|C) = {bits:.4f} bits per training sample"
            + (f"; {data.outputs_per_group} teacher outputs per subclass" if data.outputs_per_group > 1 else "")
        )
    _write_data_summary(exp, spec, data, bits)
    stopped = stop_orphans(exp.root)
    if stopped:
        printer(
            f"stopped {stopped} local Ray process(es) left behind by an earlier driver of this experiment that was killed"
        )
    local = address is None and not os.environ.get("RAY_ADDRESS")
    ray_up = False

    def need_ray() -> None:
        """Start (or join) Ray the first time a stage needs it: a finished experiment runs again without."""
        nonlocal ray_up
        if ray_up:
            return
        if init_ray(address, verbose):
            record_local_ray(exp.root)
        _check_resources(spec, 0.0 if local else (300.0 if node_wait_s is None else node_wait_s), printer)
        ray_up = True

    teacher = exp.stage_done("teacher")
    if not teacher:
        need_ray()
        teacher = run_teacher(spec, exp, data, resume_cmd)
    printer(f"[teacher] done: {spec.search.metric} {teacher['metrics'].get(spec.search.metric, float('nan')):.4f}")
    if exp.stage_done("teacher_logits"):
        logits = load_teacher_logits(exp)
    else:
        in_driver = local and spec.teacher.resources.gpu == 0
        if not in_driver:
            need_ray()
        logits = run_teacher_logits(spec, exp, data, teacher, in_driver=in_driver)
    teacher_test = exp.stage_done("teacher_logits")["test_metrics"]
    printer(f"[teacher] logits cached in {exp.logits_dir} (clean inputs); teacher test f1 {teacher_test['f1']:.4f}")
    diag = exp.stage_done("teacher_logits").get("subclasses")
    if diag:
        ents = ", ".join(f"{e:.2f}" for e in diag["entropy_bits"])
        printer(
            f"[teacher] {data.outputs_per_group} outputs per {'class' if data.invented else 'subclass'}: entropy of their use "
            f"per class {ents} bits (max {np.log2(data.outputs_per_group):.2f}), dead {diag['dead_share']:.0%}, "
            f"AMI with the known subclasses on test {diag['ami_test']:.3f}"
        )

    if exp.stage_done("student"):
        tables = exp.tables(list(spec.search.space), spec.search.metric, spec.search.mode)
    else:
        need_ray()
        tables = run_student_search(spec, exp, data, logits, resume_cmd)
    best = run_export(spec, exp, data, tables)
    printer(
        f"[export] best student {best['trial_id']} ({spec.search.metric} {best['val']:.4f}) exported to {exp.export_dir}; "
        f"loaded back: test f1 {best['test']['f1']:.4f}, accuracy {best['test']['accuracy']:.4f}, auc {best['test']['auc']:.4f}"
    )
    table = None
    if spec.methods.seeds > 0:
        import pandas as pd

        from .methods import format_method_table

        if exp.stage_done("methods"):
            table = pd.read_parquet(exp.results_dir / "methods_summary.parquet")
        else:
            printer(
                f"[methods] retraining the best configuration as no-KD, KD and SKD with {spec.methods.seeds} seed(s) each"
            )
            need_ray()
            table = run_methods(spec, exp, data, logits, tables, resume_cmd)
        printer(f"[methods] test metrics, mean ± std over seeds:\n{format_method_table(table)}")
    return RunSummary(
        exp.root,
        resumed,
        bits,
        {"val": teacher["metrics"], "test": teacher_test},
        best,
        table,
        time.perf_counter() - t0,
    )
