"""`run(spec)`: the experiment's stages (`stages.PIPELINE`), in order, each skipped when done.

A stage that is done and intact is only shown (its recorded summary printed). When any stage remains,
the driver holds the experiment (`experiment.hold`: one driver per experiment), stops local Ray
processes a killed driver left behind, starts or joins Ray the first time a stage needs it, and runs
the remaining stages inside the run's signal handling. A finished experiment therefore runs again
without Ray, without the lock, and without writing a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import load_dataset, train_rows
from .data.summary import data_line, data_summary, partition_label_bits
from .experiment import Experiment, clear_local_ray, hold, location_of, prepare, record_local_ray, stop_orphans
from .preflight import check_curriculum, check_models, check_views
from .spec import Spec
from .stages import PIPELINE, Context, Stage

__all__ = ["RunSummary", "run"]


@dataclass
class RunSummary:
    experiment: Path
    resumed: bool
    label_bits: float
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each stage recorded
    seconds: float = 0.0


def run(
    spec: Spec,
    *,
    address: str | None = None,
    verbose: bool = False,
    printer: Callable[[str], None] = print,
    resume_cmd: str = "skd-tune run SPEC",
    node_wait_s: float | None = None,
    force: bool = False,
) -> RunSummary:
    """Run (or resume) every stage of the experiment the spec describes.

    `node_wait_s`: on a joined cluster, how long to wait for a node that can hold a trial (default 300 s;
    local Ray has all its nodes at once, so it does not wait). `force`: take over the lease of a driver
    on another host whose heartbeat expired (an experiment on a URI storage)."""
    t0 = time.perf_counter()
    data = load_dataset(spec.data, spec.seed)
    check_models(spec, data)  # before anything is written: a spec these data cannot run creates nothing
    check_curriculum(spec, data)
    check_views(spec, data)
    exp = Experiment.open(location_of(spec))
    resumed = prepare(exp, spec)
    where = exp.location + (f" (local mirror {exp.root})" if exp.remote is not None else "")
    printer(f"experiment {where} ({'resuming' if resumed else 'new'})")
    bits = partition_label_bits(data)
    printer(data_line(data, bits))
    for who, fraction in (("students", spec.data.train_fraction), ("teacher", spec.teacher.train_fraction)):
        if fraction < 1:
            n = len(train_rows(data.train.subclass, fraction, spec.seed))
            printer(
                f"the {who} train on {n} of the {len(data.train)} training samples ({fraction:g}, stratified by subclass)"
            )
    if spec.methods.seeds > 0 and spec.methods.search == "per_method":
        printer(
            f"methods: KD and no-KD get a search of their own with the same budget ({spec.search.num_samples} trials "
            "each), three times the student trials of the search alone; methods.search: shared retrains SKD's "
            "configuration instead"
        )
    local = address is None and not os.environ.get("RAY_ADDRESS")
    ctx = Context(spec, exp, data, printer, resume_cmd, lambda: None, local)
    stages = [s for s in PIPELINE if s.applies(spec)]
    state = exp.state()
    if any(state.done(s.name) is None or not s.intact(ctx, state.done(s.name)) for s in stages):
        with hold(exp, force=force, say=printer):
            try:
                _prepare_work(ctx, bits, address, verbose, node_wait_s)
                _run_stages(ctx, stages)
            finally:
                _stop_ray(exp)
        state = exp.state()
    else:
        for stage in stages:
            stage.show(ctx, state.done(stage.name))
    records = {s.name: state.done(s.name) for s in stages}
    return RunSummary(exp.root, resumed, bits, records, time.perf_counter() - t0)


def _prepare_work(ctx: Context, bits: float, address: str | None, verbose: bool, node_wait_s: float | None) -> None:
    """Before the first stage that runs: the data summary written, damaged tables rebuilt, orphans
    stopped, and `ctx.need_ray` ready to start or join Ray."""
    spec, exp = ctx.spec, ctx.exp
    summary = data_summary(spec, ctx.data, bits)
    if exp.result("data") != summary:
        exp.write_result("data", summary)
    params = {"student": list(spec.search.space), "teacher": list(spec.search.teacher.space)}
    exp.repair_tables(params | {"methods": ["method", "seed"]}, spec.search.metric, spec.search.mode, ctx.say)
    stopped = stop_orphans(exp.root)
    if stopped:
        ctx.say(
            f"stopped {stopped} local Ray process(es) left behind by an earlier driver of this experiment that was killed"
        )
    started: list[bool] = []

    def need_ray() -> None:
        """Start (or join) Ray the first time a stage needs it: a finished experiment runs again without."""
        if started:
            return
        from .tune import check_resources, init_ray

        if init_ray(address, verbose):
            record_local_ray(exp.root)
        check_resources(spec, 0.0 if ctx.local else (300.0 if node_wait_s is None else node_wait_s), ctx.say)
        started.append(True)

    ctx.need_ray = need_ray


def _stop_ray(exp: Experiment) -> None:
    """Shut down the Ray this driver started or joined, and forget its local processes (a driver that is
    killed leaves the record, and the next one stops them)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    clear_local_ray(exp.root)


def _run_stages(ctx: Context, stages: list[Stage]) -> None:
    """Each stage in order: shown when done and intact, else run (inside the run's signal handling) and
    recorded with the wall-clock time it ran (`ran`: [start, end], seconds since the epoch)."""
    from .tune import Interruption

    with Interruption() as interruption:
        ctx.interruption = interruption
        for stage in stages:
            record = ctx.exp.done(stage.name)
            if record is None or not stage.intact(ctx, record):
                if stage.needs_ray(ctx):
                    ctx.need_ray()
                started = time.time()
                record = stage.run(ctx) | {"ran": [started, time.time()]}
                ctx.exp.mark_done(stage.name, **record)
            stage.show(ctx, record)
