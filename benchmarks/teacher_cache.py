"""Cached teacher logits: does a student trial cost the same whatever the size of its teacher?

Method. Two `skd-tune run`s on the digits data that differ only in `teacher.model`: a ResNet-50
(23.5 M parameters; torchvision's, its stem adapted to 1 channel, which takes 8x8 inputs) and a tiny
one (mlp_tiny, 1.2 k parameters). Teachers train for `--teacher-epochs` (1: their quality does not
change a student's cost) on 1 CPU (2 threads on 2 busy cores were 4x slower). Students are identical (cnn_small, FIFO, one trial at a time with 1 CPU,
no method table, the same seeded Optuna proposals). The figure is the median of the students'
`epoch_time_s` (one training epoch plus validation, measured inside the trial) from each run's
epochs.parquet; ratio = large / tiny. For scale, the script also times what the ResNet-50 would add
to each student epoch if its logits were not cached: one inference pass over the training split
(1 thread, this process), i.e. the ratio an uncached teacher would give.

Target (issue 8): ratio <= 1.05.

The pair runs `--repeats` times, alternating (large, tiny, large, tiny), and the medians pool all
runs: one run's median moves by about 5% from run to run here, as much as the target allows.

Run:
    .venv/bin/python benchmarks/teacher_cache.py               # ~4.5 min on 2 cores
    .venv/bin/python benchmarks/teacher_cache.py --repeats 1   # ~2.5 min, noisier
Writes benchmarks/out/teacher_cache.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as C


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--large", default="resnet50", help="the large teacher (default: resnet50)")
    p.add_argument("--tiny", default="mlp_tiny", help="the tiny teacher (default: mlp_tiny)")
    p.add_argument("--student", default="cnn_small", help="student model (default: cnn_small)")
    p.add_argument("--epochs", type=int, default=8, help="student epochs per trial (default: 8)")
    p.add_argument("--samples", type=int, default=4, help="student trials per run (default: 4)")
    p.add_argument("--teacher-epochs", type=int, default=1)
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="run the pair this many times, alternating (default: 2; one run's median moves by ~5%%)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary experiment directories")
    args = p.parse_args()

    base = {
        "seed": 0,
        "data": {"source": "digits"},
        "teacher": {"epochs": args.teacher_epochs, "batch_size": 64, "lr": 3e-3, "resources": {"cpu": 1, "gpu": 0}},
        "student": {
            "model": args.student,
            "epochs": args.epochs,
            "batch_size": 64,
            "lr": 3e-3,
            "w_kd": 0.5,
            "w_skd": 1.0,
            "resources": {"cpu": 1, "gpu": 0},
        },
        "search": {
            "num_samples": args.samples,
            "max_concurrent": 1,
            "scheduler": {"name": "fifo"},
            "space": {
                "temperature": {"loguniform": [1.0, 20.0]},
                "w_skd": {"uniform": [0.0, 1.0]},
                "lr": {"loguniform": [1e-3, 3e-2]},
            },
        },
        "methods": {"seeds": 0},
    }
    tmp = C.tempdir("tcache")
    per_run, epoch_times = [], {args.large: [], args.tiny: []}
    print(
        f"student {args.student}: {args.samples} trials x {args.epochs} epochs each, 1 at a time; load average {C.loadavg()}"
    )
    try:
        for r in range(args.repeats):
            for teacher in (args.large, args.tiny):
                name = f"tcache-{teacher}-{r}"
                spec_path = C.write_spec(tmp, name, {**base, "teacher": {**base["teacher"], "model": teacher}})
                load = C.loadavg()
                run = C.timed_run(spec_path)
                trials, epochs = C.read_results(spec_path)
                times = epochs["epoch_time_s"].astype(float).tolist()
                epoch_times[teacher] += times
                per_trial = epochs.groupby("trial_id")["epoch_time_s"].sum()
                row = {
                    "teacher": teacher,
                    "repeat": r,
                    "student_epochs": len(times),
                    "median_epoch_s": statistics.median(times),
                    "min_epoch_s": min(times),
                    "median_trial_s": float(per_trial.median()),
                    "teacher_stage_s": C.stage_seconds(run, "teacher") + C.stage_seconds(run, "teacher_logits"),
                    "student_stage_s": C.stage_seconds(run),
                    "loadavg_1m": f"{load[0]}->{C.loadavg()[0]}",
                }
                per_run.append(row)
                C.print_table([row])
        uncached = _uncached_cost(args.large)
    finally:
        C.cleanup(tmp, args.keep)

    med = {t: statistics.median(v) for t, v in epoch_times.items()}
    ratio = med[args.large] / med[args.tiny]
    low = {t: min(v) for t, v in epoch_times.items()}
    print()
    print("Student epoch time (training + validation, inside the trial) with a large vs a tiny teacher:")
    C.print_table(per_run)
    print()
    summary = {
        "median_epoch_s_large": med[args.large],
        "median_epoch_s_tiny": med[args.tiny],
        "ratio_large_over_tiny": ratio,
        "ratio_of_min_epoch": low[args.large] / low[args.tiny],
        "uncached_teacher_forward_s_per_epoch": uncached["seconds"],
        "uncached_ratio_estimate": (med[args.tiny] + uncached["seconds"]) / med[args.tiny],
        "teacher_params": uncached["params"],
    }
    C.print_table([summary])
    ok = ratio <= 1.05
    print(
        f"target ratio <= 1.05: {'met' if ok else 'NOT met'} ({ratio:.3f}); without the cache each student epoch would "
        f"also run the {args.large} over the training split: +{uncached['seconds']:.2f} s, "
        f"about {summary['uncached_ratio_estimate']:.1f}x"
    )
    C.write_json(
        __file__,
        {
            "question": "student trial time with a large vs a tiny teacher (cached logits)",
            "context": C.context(),
            "args": vars(args),
            "runs": per_run,
            "summary": summary,
            "targets": {"ratio <= 1.05": ok},
        },
    )
    return 0


def _uncached_cost(model_name: str) -> dict:
    """Seconds of one inference pass of the teacher over the digits training split (1 thread)."""
    import torch

    from skd_tune.data import load_dataset
    from skd_tune.models import build_model
    from skd_tune.recipes import device_split
    from skd_tune.spec import validate_spec
    from skd_tune.train import predict_logits, set_threads

    spec = validate_spec({"name": "x"})
    data = load_dataset(spec.data, spec.seed)
    set_threads(1)
    model = build_model(model_name, data.num_outputs, data.input_shape, data.mean, data.std)
    train = device_split(data, "train", torch.device("cpu"))  # as a trial holds it
    predict_logits(model, train, batch_size=64)  # warm-up
    t0 = time.perf_counter()
    predict_logits(model, train, batch_size=64)
    return {"seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    raise SystemExit(main())
