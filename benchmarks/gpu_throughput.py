"""GPU throughput: student images per second inside a trial vs a bare torch loop, and packed
fractional-GPU trials (0.25 GPU each) vs one trial per GPU.

Method (on a CUDA machine). A synthetic MHIST of `--n` images at 224 px (`skd_tune.data.synth`),
ResNet-18 students, batch `--batch-size`, `--epochs` epochs, bf16 autocast and channels_last as
a trial uses them, no augmentation, FIFO (every trial runs every epoch), a tiny teacher
(mlp_tiny, 1 epoch: its logits are cached, so its size does not matter), no method table.
  bare:    `skd_tune.recipes.build_student_run` (what a trial trains) in this process on the GPU, with
           the same data, model, loss and batch (benchmarks/_common.py: plain_student), no Ray;
  trial:   `skd-tune run` with `gpu: 1` per trial, one trial at a time (`--samples` trials);
  packed:  the same search with `gpu: 0.25` per trial and 4 at a time.
Images/s of one training = training images / `epoch_time_s` (an epoch's training pass plus its
validation pass, measured the same way on both sides), median over the epochs after the first
(cuDNN autotuning); `epoch_time_s` leaves out the trial's per-epoch checkpoint and report, which
the aggregate figure includes. Aggregate images/s of a search = training images x epochs x trials / wall time of
the student stage (benchmarks/_common.py reads the `student` stage's wall time from the experiment's state).
Figures: trial / bare (target from issue 8: close to 1), packed / one-per-GPU aggregate.

Without a GPU the script prints "no GPU: skipped", writes that to the JSON and exits 0.
`--dry-run-cpu` runs every step on the CPU at toy size (32 px, 0.5 CPU instead of 0.25 GPU) to
check the script itself; its figures mean nothing.

Run (on a CUDA machine, ~5 min):
    .venv/bin/python benchmarks/gpu_throughput.py
Writes benchmarks/out/gpu_throughput.json.
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
    p.add_argument("--n", type=int, default=800, help="synthetic MHIST images (default: 800)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224)")
    p.add_argument("--model", default="resnet18", help="student model (default: resnet18)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="student epochs per trial (default: 4)")
    p.add_argument("--samples", type=int, default=4, help="trials per search (default: 4)")
    p.add_argument("--cpu", type=float, default=2, help="CPUs per trial (default: 2)")
    p.add_argument("--dry-run-cpu", action="store_true", help="check the script on the CPU at toy size")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()

    import torch

    dry = args.dry_run_cpu
    if not torch.cuda.is_available() and not dry:
        print("no GPU: skipped")
        C.write_json(
            __file__,
            {
                "question": "student images/s in a trial vs a bare loop; packed fractional-GPU trials",
                "skipped": "no GPU",
                "context": C.context(),
            },
        )
        return 0
    if dry:
        args.n, args.size, args.epochs, args.samples, args.cpu = min(args.n, 120), 32, 2, 2, 0.5
    gpu_one, gpu_packed, cpu_packed = (0, 0, 0.5) if dry else (1, 0.25, args.cpu)
    device = "cpu" if dry else "cuda"

    from skd_tune.data import load_dataset
    from skd_tune.data.synth import write_synthetic_mhist
    from skd_tune.spec import validate_spec

    tmp = C.tempdir("gpu")
    results: dict = {}
    try:
        t0 = time.perf_counter()
        write_synthetic_mhist(tmp / "mhist", n=args.n, seed=0, size=args.size)
        print(f"synthetic MHIST: {args.n} images at {args.size} px in {time.perf_counter() - t0:.0f} s")
        spec = {
            "seed": 0,
            "data": {"source": "mhist", "root": str(tmp / "mhist"), "image_size": args.size},
            "teacher": {
                "model": "mlp_tiny",
                "epochs": 1,
                "resources": {"cpu": args.cpu if not dry else 1, "gpu": gpu_one},
            },
            "student": {
                "model": args.model,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": 1e-3,
                "w_kd": 0.5,
                "resources": {"cpu": args.cpu if not dry else 1, "gpu": gpu_one},
            },
            "search": {
                "num_samples": args.samples,
                "max_concurrent": 1,
                "scheduler": {"name": "fifo"},
                "space": {"temperature": {"loguniform": [1.0, 20.0]}, "w_skd": {"uniform": [0.0, 1.0]}},
            },
            "methods": {"seeds": 0},
        }
        # bare loop, same data and model
        s = validate_spec({"name": "bare", **spec})
        data = load_dataset(s.data, s.seed)
        n_train = len(data.train)
        import numpy as np

        logits = np.random.default_rng(0).normal(size=(n_train, data.num_outputs)).astype(np.float32)
        times = C.plain_student(s, data, logits, {"temperature": 4.0, "w_skd": 0.5}, device=torch.device(device))
        bare = n_train / statistics.median(times[1:] or times)
        results["bare"] = {"images_per_s": bare, "epoch_times_s": times}
        del data

        runs = {}
        for label, gpu, cpu, conc in (
            ("one_per_gpu", gpu_one, spec["student"]["resources"]["cpu"], 1),
            ("packed", gpu_packed, cpu_packed, 4),
        ):
            spec_l = {
                **spec,
                "student": {**spec["student"], "resources": {"cpu": cpu, "gpu": gpu}},
                "search": {**spec["search"], "max_concurrent": conc},
            }
            path = C.write_spec(tmp, f"gpu-{label}", spec_l)
            run = C.timed_run(path)
            trials, epochs = C.read_results(path)
            later = epochs[epochs["epoch"] > 1] if (epochs["epoch"] > 1).any() else epochs
            stage = C.stage_seconds(run)
            runs[label] = {
                "gpu_per_trial": gpu,
                "concurrent": conc,
                "trials": int((trials["status"] == "TERMINATED").sum()),
                "per_trial_images_per_s": n_train / float(later["epoch_time_s"].median()),
                "aggregate_images_per_s": n_train * args.epochs * args.samples / stage,
                "student_stage_s": stage,
            }
        results.update(runs)
    finally:
        C.cleanup(tmp, args.keep)

    rows = [
        {
            "setting": "bare loop (no Ray)",
            "images_per_s": results["bare"]["images_per_s"],
            "aggregate_images_per_s": None,
        },
        {
            "setting": "trial, 1 GPU each",
            "images_per_s": runs["one_per_gpu"]["per_trial_images_per_s"],
            "aggregate_images_per_s": runs["one_per_gpu"]["aggregate_images_per_s"],
        },
        {
            "setting": "trials, 0.25 GPU each, 4 at once",
            "images_per_s": runs["packed"]["per_trial_images_per_s"],
            "aggregate_images_per_s": runs["packed"]["aggregate_images_per_s"],
        },
    ]
    print(
        f"{args.model}, {args.size} px, batch {args.batch_size}, {n_train} training images; load average {C.loadavg()}"
        + ("  [DRY RUN ON CPU: figures mean nothing]" if dry else "")
    )
    C.print_table(rows)
    summary = {
        "trial_over_bare": runs["one_per_gpu"]["per_trial_images_per_s"] / results["bare"]["images_per_s"],
        "packed_over_one_per_gpu_aggregate": runs["packed"]["aggregate_images_per_s"]
        / runs["one_per_gpu"]["aggregate_images_per_s"],
    }
    C.print_table([summary])
    C.write_json(
        __file__,
        {
            "question": "student images/s in a trial vs a bare loop; packed fractional-GPU trials",
            "dry_run_cpu": dry,
            "device": torch.cuda.get_device_name(0) if not dry else "cpu",
            "context": C.context(),
            "args": vars(args),
            "results": results,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
