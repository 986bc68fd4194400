"""Honest pruning: does telling Optuna that ASHA's early-stopped trials were PRUNED (skd-tune's
`StudySearch`) find better students than Ray's default, which tells Optuna they COMPLETED with the
value of the epoch they were stopped at?

Method. The digits demo (search_spaces/digits.yaml: mlp_tiny student, 20 epochs, TPE, ASHA with grace
period 5 and reduction factor 3, 2 trials at a time) without the method table (`methods.seeds: 0`),
the teacher trained for `--teacher-epochs`. For each seed in `--seeds` (the spec's `seed`: the data
split, the sampler and the trainings) and each mode, one `skd-tune run SPEC` in a fresh process:
  honest:  skd-tune as it is (`StudySearch(honest_pruning=True)`);
  ray:     the same run with `make_searcher(..., honest_pruning=False)` patched into the child (Ray's
           OptunaSearch behaviour: a stopped trial is COMPLETE with its truncated value).
Both modes of a seed share the data split, the sampler's seed and the first proposals (TPE's random
start-up trials, 10 by default): they differ only in what TPE learns from the stopped trials, so the
comparison is paired by seed. With `--samples` near 10, TPE barely starts; 24 or more show its effect.
Figures per run (from results/trials.parquet): `best_val_f1`, the best validation F1 of any trial
(what the export picks); `best_full_val_f1`, the best among the trials that ran every epoch;
`stopped` and `full`, the trials ASHA stopped early and those it let finish; `mean_full_val_f1`, the
mean best val F1 of the finished ones (how good the configurations TPE let through were); the student
stage's wall time. The summary gives each mode's mean over seeds and the paired difference honest -
ray (mean and sample std over seeds). Validation F1 on digits' 270 validation images moves in steps
of ~0.004, so differences of that size are noise.

Run:
    .venv/bin/python benchmarks/pruning.py                      # 3 seeds x 2 modes, 24 trials each, ~5 min on 2 cores
    .venv/bin/python benchmarks/pruning.py --seeds 0 --samples 12   # a quick look, ~1 min
Writes benchmarks/out/pruning.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import yaml

MODES = ("honest", "ray")


def _child(spec: str, mode: str, timings: str) -> int:
    """`skd-tune run SPEC` with the student search's pruning in `mode`; the stage times to `timings`."""
    import functools

    sys.path.insert(0, str(C.REPO))
    from skd_tune import cli
    from skd_tune.tune import search, stage

    stage.make_searcher = functools.partial(search.make_searcher, honest_pruning=mode == "honest")
    t0 = time.time()
    rc = cli.main(["run", spec])
    ran = (C.experiment_of(Path(spec)).done("student") or {}).get("ran")
    Path(timings).write_text(json.dumps({"cli_main": [t0, time.time()], "student": ran}))
    return rc


def _run(directory: Path, base: dict, seed: int, mode: str, samples: int, teacher_epochs: int) -> dict:
    spec = {k: v for k, v in base.items() if k not in ("name", "storage")}
    spec["seed"] = seed
    spec["teacher"] = {**spec["teacher"], "epochs": teacher_epochs}
    spec["search"] = {**spec["search"], "num_samples": samples}
    spec["methods"] = {"seeds": 0}
    path = C.write_spec(directory, f"{mode}-s{seed}", spec)
    timings = path.with_suffix(".timings.json")
    env = {**os.environ, "RAY_TMPDIR": str(directory / "ray"), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [C.PYTHON, __file__, "--child", str(path), mode, str(timings)]
    proc = subprocess.run(cmd, cwd=C.REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{path.name}: skd-tune run failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    trials, _ = C.read_results(path)
    full = trials[trials["epochs"] >= trials["max_epochs"]]
    t0, t1 = json.loads(timings.read_text())["student"]
    return {
        "seed": seed,
        "mode": mode,
        "best_val_f1": float(trials["best_val_f1"].max()),
        "best_full_val_f1": float(full["best_val_f1"].max()) if len(full) else float("nan"),
        "mean_full_val_f1": float(full["best_val_f1"].mean()) if len(full) else float("nan"),
        "stopped": int(len(trials) - len(full)),
        "full": int(len(full)),
        "student_s": round(t1 - t0, 1),
    }


def _summary(rows: list[dict]) -> list[dict]:
    keys = ("best_val_f1", "best_full_val_f1", "mean_full_val_f1", "stopped", "student_s")
    out = []
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        out.append({"mode": mode, "seeds": len(mine), **{k: statistics.fmean(r[k] for r in mine) for k in keys}})
    by = {(r["seed"], r["mode"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    for k in keys[:3]:
        diffs = [by[(s, "honest")][k] - by[(s, "ray")][k] for s in seeds]
        std = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        out.append({"mode": f"honest - ray: {k}", "seeds": len(diffs), k: statistics.fmean(diffs), "std": std})
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated spec seeds (default: 0,1,2)")
    p.add_argument("--samples", type=int, default=24, help="student trials per search (default: 24)")
    p.add_argument("--teacher-epochs", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the temporary experiment directories")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base = yaml.safe_load((C.REPO / "search_spaces/digits.yaml").read_text())
    tmp = C.tempdir("pruning")
    rows = []
    t0 = time.perf_counter()
    try:
        for seed in seeds:
            for mode in MODES:
                rows.append(_run(tmp, base, seed, mode, args.samples, args.teacher_epochs))
                C.print_table([rows[-1]])
    finally:
        C.cleanup(tmp, args.keep)
    print()
    C.print_table(rows)
    print()
    summary = _summary(rows)
    C.print_table(
        summary, ["mode", "seeds", "best_val_f1", "best_full_val_f1", "mean_full_val_f1", "stopped", "student_s", "std"]
    )
    C.write_json(
        __file__,
        {"args": vars(args), "runs": rows, "summary": summary, "total_s": time.perf_counter() - t0, **C.context()},
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child(*sys.argv[2:5]))
    sys.exit(main())
