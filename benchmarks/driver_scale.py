"""Driver scale: what the driver's per-trial and per-flush work costs as a study grows past this machine.

Method. No Ray and no training: the two pieces of the driver's work that grow with the number of trials
n, timed directly at n = `--sizes` (default 1,000, 3,000, 10,000), for the README's on-paper estimate
of a 10,000-trial search:
  - Optuna: a study (in memory, and in a journal file as `skd-tune run` keeps it) holding n finished
    trials of the digits demo's 4-parameter space with random values, then `--asks` new trials asked
    for, sampled with the project's seeded TPE (`tune.search.SAMPLERS["tpe"]`) and told; the median
    seconds per ask + sample + tell. A search asks once per trial.
  - the results tables (`experiment.ResultsTables`): n trials of `--epochs` epochs each with the metrics
    a student reports, then one flush (both Parquet files rewritten); its seconds and the files' bytes.
    Flushes are throttled to at most every 19 times their own duration (<= 5% of the driver's time).
Ray Tune's own snapshot (`experiment_state-*.json`, every trial's state) is measured by
benchmarks/growth.py: bytes per trial there.

Run:
    .venv/bin/python benchmarks/driver_scale.py            # ~2 min on 2 cores
Writes benchmarks/out/driver_scale.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as C
import numpy as np


def _optuna_ask_tell(n: int, asks: int, journal: str | None) -> float:
    import optuna

    from skd_tune.spec import Distribution
    from skd_tune.tune.search import SAMPLERS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {
        "temperature": Distribution(loguniform=(1.0, 20.0)).to_optuna(),
        "w_skd": Distribution(uniform=(0.0, 1.0)).to_optuna(),
        "w_kd": Distribution(uniform=(0.0, 1.0)).to_optuna(),
        "lr": Distribution(loguniform=(1e-3, 3e-2)).to_optuna(),
    }
    storage = None
    if journal is not None:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    study = optuna.create_study(direction="maximize", sampler=SAMPLERS["tpe"](0), storage=storage)
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(n):
        params = {k: float(d.low + (d.high - d.low) * rng.random()) for k, d in space.items()}
        trials.append(optuna.trial.create_trial(params=params, distributions=space, value=float(rng.random())))
    study.add_trials(trials)
    times = []
    for _ in range(asks):
        t0 = time.perf_counter()
        trial = study.ask(fixed_distributions=space)
        study.tell(trial, float(rng.random()))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _tables_flush(n: int, epochs: int, directory) -> tuple[float, int]:
    from skd_tune.experiment import ResultsTables

    tables = ResultsTables(directory, ["temperature", "w_skd", "w_kd", "lr"], "val_f1", "max")
    rng = np.random.default_rng(0)
    names = ["train_loss", "train_ce", "train_skd", "val_f1", "val_accuracy", "val_precision", "val_recall"]
    names += ["val_auc", "val_loss", "epoch_time_s", "epoch_end", "params", "macs", "latency_ms_b1"]
    for t in range(n):
        params = {"temperature": 4.0, "w_skd": 0.5, "w_kd": 0.5, "lr": 1e-2}
        for e in range(1, epochs + 1):
            tables._add_epoch(f"t{t:05d}", params, {"epoch": e, **dict(zip(names, rng.random(len(names))))})
        tables._set_trial(f"t{t:05d}", status="TERMINATED")
    t0 = time.perf_counter()
    tables.flush(force=True)
    seconds = time.perf_counter() - t0
    tables.close()
    return seconds, tables.epochs_path.stat().st_size + tables.trials_path.stat().st_size


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="1000,3000,10000", help="comma-separated numbers of trials")
    p.add_argument("--asks", type=int, default=10, help="trials asked for at each size (median time)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial in the results tables")
    args = p.parse_args()
    tmp = C.tempdir("driver-scale")
    rows = []
    print(f"load average {C.loadavg()}")
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            flush_s, table_bytes = _tables_flush(n, args.epochs, tmp / f"tables-{n}")
            row = {
                "trials": n,
                "optuna_tpe_s_per_trial_memory": _optuna_ask_tell(n, args.asks, None),
                "optuna_tpe_s_per_trial_journal": _optuna_ask_tell(n, args.asks, str(tmp / f"study-{n}.log")),
                "tables_flush_s": flush_s,
                "tables_bytes": table_bytes,
                "tables_min_flush_interval_s": max(1.0, 19 * flush_s),
            }
            rows.append(row)
            C.print_table([row])
    finally:
        C.cleanup(tmp)
    print()
    print("Driver work that grows with the study:")
    C.print_table(rows)
    C.write_json(
        __file__,
        {
            "question": "driver cost per trial (Optuna) and per flush (results tables) as a study grows",
            "context": C.context(),
            "args": vars(args),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
