"""Growth: does a search's cost per trial stay flat as the search grows?

Method. Searches of `--sizes` trials (default 20, 100, 300, 1000) of the digits data with `mlp_tiny`
students of `--epochs` epochs (default 2: the trials are short, so what the driver does per result
dominates), FIFO (every trial runs every epoch), `--concurrent` trials at a time (default 2), TPE over
two parameters, a 1-epoch teacher, no method table; each size is one `skd-tune run` in a fresh process
(benchmarks/_common.py: timed_run). For each size:
  - the student stage's wall time, and wall seconds per result (an epoch's report is a result);
  - the driver's CPU seconds during the stage (sampled from /proc), per result: the driver works between
    the trials' reports (Ray Tune's controller, its experiment snapshot, Optuna, our results tables and
    progress display), so a cost that grows with the search shows here first;
  - the throughput over the search: each trial's finish time is its last epoch's `epoch_end` (from the
    epochs table); trials per second over a window of `--window` trials, at the start (the first
    window after the first 10 trials) and around 90% of the search (the window centred on trial 0.9 N);
    `slowdown_at_90pct` = start rate / rate at 90%;
  - the bytes of Ray Tune's experiment snapshot (`experiment_state-*.json`) and of our tables at the end.

Target (issue 18): at trial 900 of a 1,000-trial search, at most 1.5x slower than at its start.

Run:
    .venv/bin/python benchmarks/growth.py                      # 20, 100, 300, 1000 trials: ~10 min on 2 cores
    .venv/bin/python benchmarks/growth.py --sizes 20,300       # quicker
`--env TUNE_GLOBAL_CHECKPOINT_S=0` (repeatable) runs the searches with a knob changed. Writes
benchmarks/out/growth.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common as C


def _spec(n: int, epochs: int, concurrent: int) -> dict:
    tiny = {"model": "mlp_tiny", "batch_size": 64, "lr": 3.0e-3, "resources": {"cpu": 1, "gpu": 0}}
    return {
        "seed": 0,
        "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.15},
        "teacher": {**tiny, "epochs": 1},
        "student": {**tiny, "epochs": epochs},
        "search": {
            "metric": "val_f1",
            "mode": "max",
            "num_samples": n,
            "max_concurrent": concurrent,
            "sampler": "tpe",
            "scheduler": {"name": "fifo"},
            "space": {"temperature": {"loguniform": [1.0, 20.0]}, "w_skd": {"uniform": [0.0, 1.0]}},
        },
        "methods": {"seeds": 0},
    }


def _rate(finish: list[float], centre: int, window: int) -> float:
    """Trials per second over the `window` trials (by finish time) centred on index `centre`."""
    lo = max(0, min(centre - window // 2, len(finish) - window))
    hi = min(len(finish) - 1, lo + window)
    return (hi - lo) / (finish[hi] - finish[lo]) if hi > lo and finish[hi] > finish[lo] else float("nan")


def _bytes(directory: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in directory.glob(pattern))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="20,100,300,1000", help="comma-separated search sizes (trials)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial (default 2)")
    p.add_argument("--concurrent", type=int, default=2, help="trials at a time (default 2)")
    p.add_argument(
        "--window",
        type=int,
        default=50,
        help="trials per throughput window (default 50; at most a third of the search)",
    )
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the runs")
    p.add_argument("--keep", action="store_true", help="keep the temporary experiment directories")
    args = p.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    sizes = [int(s) for s in args.sizes.split(",")]

    tmp = C.tempdir("growth")
    rows = []
    print(f"mlp_tiny students of {args.epochs} epochs, FIFO, {args.concurrent} at a time; load {C.loadavg()}")
    try:
        for n in sizes:
            spec_path = C.write_spec(tmp, f"growth-n{n}", _spec(n, args.epochs, args.concurrent))
            load_before, samplers = C.loadavg(), []
            try:
                run = C.timed_run(
                    spec_path,
                    env=env,
                    timeout_s=3600,
                    on_start=lambda proc, samplers=samplers: samplers.append(C.CpuSampler(proc.pid, every_s=0.5)),
                )
            finally:
                for s in samplers:
                    s.stop()
            stage_s = C.stage_seconds(run)
            cpu = samplers[0].cpu_between(*run["stages"]["student"])
            trials, epochs = C.read_results(spec_path)
            results = len(epochs)
            finish = sorted(epochs.groupby("trial_id")["epoch_end"].max().tolist())
            window = min(args.window, max(2, len(finish) // 3))
            start = _rate(finish, min(10, len(finish) // 10) + window // 2, window)
            at_90 = _rate(finish, int(0.9 * len(finish)), window)
            exp_dir = C.experiment_of(spec_path).root
            row = {
                "trials": n,
                "results": results,
                "stage_s": stage_s,
                "wall_ms_per_result": 1000 * stage_s / results,
                "driver_cpu_s": cpu["driver"],
                "driver_cpu_ms_per_result": 1000 * cpu["driver"] / results,
                "worker_cpu_s": cpu["trial_workers"],
                "trials_per_s_start": start,
                "trials_per_s_at_90pct": at_90,
                "slowdown_at_90pct": start / at_90,
                "snapshot_bytes": _bytes(exp_dir / "student", "experiment_state-*.json"),
                "tables_bytes": _bytes(exp_dir / "results", "*.parquet"),
                "trials_done": int((trials["status"] == "TERMINATED").sum()),
                "loadavg_1m": f"{load_before[0]}->{C.loadavg()[0]}",
            }
            rows.append(row)
            C.print_table([row])
            print()
    finally:
        C.cleanup(tmp, args.keep)

    print("Cost per result and throughput as the search grows:")
    C.print_table(
        rows,
        [
            "trials",
            "stage_s",
            "wall_ms_per_result",
            "driver_cpu_ms_per_result",
            "trials_per_s_start",
            "trials_per_s_at_90pct",
            "slowdown_at_90pct",
            "snapshot_bytes",
            "loadavg_1m",
        ],
    )
    largest = rows[-1]
    targets = {
        f"slowdown at 90% of {largest['trials']} trials <= 1.5x": largest["slowdown_at_90pct"] <= 1.5,
    }
    for k, ok in targets.items():
        print(f"target {k}: {'met' if ok else 'NOT met'}")
    C.write_json(
        __file__,
        {
            "question": "cost per trial as a search grows (driver CPU and wall per result, throughput at 90%)",
            "context": C.context(),
            "args": vars(args),
            "rows": rows,
            "targets": targets,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
