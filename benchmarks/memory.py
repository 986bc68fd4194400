"""Memory: how much resident memory does each extra concurrent trial add, with the dataset shared
through Ray's object store?

Method. A synthetic dataset of `--images` random uint8 images of 3 x `--size` x `--size` pixels
(`data.source: npz`) is searched with max_concurrent = 1, 2, 4 (`--concurrency`), each trial asking
for `cpu: 0.5` so 4 fit on 2 cores, 2 x concurrency trials per search (so the peak holds `c` trials
at once), FIFO, mlp_tiny students (the model is small on purpose: what is measured is the per-trial
cost of the process, torch and the data), a tiny teacher of 1 epoch, no method table. While each
`skd-tune run` runs (local Ray, started by the driver), every process under the driver is sampled
every 0.25 s from /proc/PID/smaps_rollup: RSS, PSS (shared pages divided among the processes that
map them, e.g. the object store's) and USS (private pages). Trial workers are the `ray::` processes
running `ImplicitFunc` (the function trainable's actor); "all workers" adds idle `ray::` workers.
Figures: the peak over the run of the summed trial workers' memory, per concurrency, and the slope
of that peak against concurrency = MB per extra concurrent trial (least squares), next to the size
of the dataset's arrays (all splits; a trial on the CPU reads them from the object store, no copy).
The floor: what a trial worker's process holds before any data, measured in a fresh Python process of
this venv (anonymous memory, which no other process can share, and RSS, after each step): the interpreter and numpy, torch, Ray Tune, this
project's trainables (pydantic, scikit-learn's metrics), then a model's first optimiser step (torch's
optimisers import torch._dynamo on first use).

Run:
    .venv/bin/python benchmarks/memory.py                 # ~2.5 min on 2 cores
    .venv/bin/python benchmarks/memory.py --images 8000   # ~4.5 min: does the slope follow the data?
Writes benchmarks/out/memory.json.
"""

from __future__ import annotations

import argparse
import threading

import _common as C
import numpy as np


class MemorySampler(threading.Thread):
    def __init__(self, root_pid: int, every_s: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.every_s = root_pid, every_s
        self.samples: list[dict] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            snap = {
                "trial": {"rss": 0.0, "pss": 0.0, "uss": 0.0, "n": 0},
                "all": {"rss": 0.0, "pss": 0.0, "uss": 0.0, "n": 0},
                "per_trial_worker": [],
            }
            for pid in C.descendants([self.root]):
                cmd = C.cmdline(pid)
                if not cmd.startswith("ray::"):
                    continue
                mem = C.memory_mb(pid)
                if mem is None:
                    continue
                kinds = ["all"] + (["trial"] if "ImplicitFunc" in cmd else [])
                for k in kinds:
                    for m in ("rss", "pss", "uss"):
                        snap[k][m] += mem[m]
                    snap[k]["n"] += 1
                if "ImplicitFunc" in cmd:
                    snap["per_trial_worker"].append(mem)
            self.samples.append(snap)
            self.done.wait(self.every_s)


FLOOR_STEPS = """
import json, os, sys
def uss():
    kb = {}
    for line in open(f"/proc/{os.getpid()}/smaps_rollup"):
        p = line.split()
        if len(p) >= 2 and p[1].isdigit():
            kb[p[0].rstrip(":")] = int(p[1])
    return kb["Anonymous"] / 1024, kb["Rss"] / 1024
out = []
import numpy; out.append(["python + numpy", uss()])
import torch; out.append(["+ torch", uss()])
from ray import tune; out.append(["+ ray.tune", uss()])
import skd_tune.tune.trainables; out.append(["+ skd_tune trainables (pydantic, sklearn.metrics)", uss()])
m = torch.nn.Linear(64, 10); opt = torch.optim.Adam(m.parameters())
m(torch.randn(8, 64)).sum().backward(); opt.step(); out.append(["+ first optimiser step (torch._dynamo)", uss()])
print(json.dumps(out))
"""


def floor() -> list[dict]:
    """Anonymous memory (heap and other private pages no other process can share, unlike the libraries'
    file pages) and RSS after each step of what a trial worker loads (FLOOR_STEPS), in a fresh process."""
    import json
    import subprocess

    done = subprocess.run([C.PYTHON, "-c", FLOOR_STEPS], cwd=C.REPO, capture_output=True, text=True, check=True)
    steps, rows, before = json.loads(done.stdout.strip().splitlines()[-1]), [], 0.0
    for name, (anon, rss) in steps:
        rows.append({"step": name, "anon_mb": anon, "added_anon_mb": anon - before, "rss_mb": rss})
        before = anon
    return rows


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0]) if len(xs) >= 2 else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--concurrency", default="1,2,4", help="comma-separated max_concurrent values (default: 1,2,4)")
    p.add_argument("--cpu", type=float, default=0.5, help="CPUs per trial (default: 0.5, so 4 fit on 2 cores)")
    p.add_argument("--images", type=int, default=3000, help="images in the synthetic dataset (default: 3000)")
    p.add_argument("--size", type=int, default=48, help="image side in pixels (default: 48)")
    p.add_argument("--epochs", type=int, default=6, help="student epochs per trial (default: 6)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    tmp = C.tempdir("memory")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.images, 3, args.size, args.size), dtype=np.uint8)
    subclass = rng.integers(0, 4, size=args.images)
    np.savez(tmp / "data.npz", x=x, subclass=subclass, subclass_to_class=np.array([0, 0, 1, 1]))
    dataset_mb = x.nbytes / 2**20
    spec = {
        "seed": 0,
        "data": {"source": "npz", "root": str(tmp / "data.npz")},
        "teacher": {"model": "mlp_tiny", "epochs": 1, "resources": {"cpu": 1, "gpu": 0}},
        "student": {
            "model": "mlp_tiny",
            "epochs": args.epochs,
            "batch_size": 64,
            "w_kd": 0.5,
            "resources": {"cpu": args.cpu, "gpu": 0},
        },
        "search": {
            "scheduler": {"name": "fifo"},
            "space": {"temperature": {"loguniform": [1.0, 20.0]}, "w_skd": {"uniform": [0.0, 1.0]}},
        },
        "methods": {"seeds": 0},
    }
    from skd_tune.data import load_dataset
    from skd_tune.spec import validate_spec

    data = load_dataset(validate_spec({"name": "m", **spec}).data, 0)
    train_val_mb = (data.train.x.nbytes + data.val.x.nbytes) / 2**20
    del data
    rows = []
    print(f"dataset {x.shape} uint8 = {dataset_mb:.1f} MB; load average {C.loadavg()}")
    try:
        for c in levels:
            name = f"memory-c{c}"
            spec_path = C.write_spec(
                tmp, name, {**spec, "search": {**spec["search"], "num_samples": 2 * c, "max_concurrent": c}}
            )
            samplers = []

            def on_start(proc, samplers=samplers):
                s = MemorySampler(proc.pid)
                s.start()
                samplers.append(s)

            load = C.loadavg()
            try:
                run = C.timed_run(spec_path, on_start=on_start)
            finally:
                for s in samplers:
                    s.done.set()
                    s.join()
            samples = samplers[0].samples
            # only the student stage: samples with the most trial workers seen
            peak_n = max(s["trial"]["n"] for s in samples)
            during = [s for s in samples if s["trial"]["n"] == peak_n]
            per_worker = [w for s in during for w in s["per_trial_worker"]]
            row = {
                "concurrency": c,
                "trial_workers": peak_n,
                **{f"trials_{m}_mb": max(s["trial"][m] for s in during) for m in ("rss", "pss", "uss")},
                **{f"all_workers_{m}_mb": max(s["all"][m] for s in samples) for m in ("rss", "pss", "uss")},
                "max_worker_rss_mb": max(w["rss"] for w in per_worker),
                "max_worker_uss_mb": max(w["uss"] for w in per_worker),
                "student_stage_s": C.stage_seconds(run),
                "samples": len(samples),
                "loadavg_1m": f"{load[0]}->{C.loadavg()[0]}",
            }
            rows.append(row)
            C.print_table([row])
    finally:
        C.cleanup(tmp, args.keep)

    print()
    print("Peak memory of the trial workers (sum over the processes) by concurrency:")
    C.print_table(
        rows,
        [
            "concurrency",
            "trial_workers",
            "trials_rss_mb",
            "trials_pss_mb",
            "trials_uss_mb",
            "max_worker_rss_mb",
            "max_worker_uss_mb",
            "all_workers_pss_mb",
            "loadavg_1m",
        ],
    )
    xs = [r["trial_workers"] for r in rows]
    per_trial = {m: slope(xs, [r[f"trials_{m}_mb"] for r in rows]) for m in ("rss", "pss", "uss")}
    summary = {"mb_per_extra_trial_" + m: v for m, v in per_trial.items()}
    summary.update(dataset_mb=dataset_mb, train_val_mb=train_val_mb)
    print()
    C.print_table([summary])
    print(
        f"each extra concurrent trial adds {per_trial['pss']:.0f} MB PSS ({per_trial['uss']:.0f} MB private, "
        f"{per_trial['rss']:.0f} MB RSS); the dataset's arrays are {dataset_mb:.1f} MB "
        f"({train_val_mb:.1f} MB of train + val, read by the trials on the CPU from the object store, not copied)"
    )
    print()
    print("The floor: private memory of a fresh process loading what a trial worker loads, step by step:")
    floor_rows = floor()
    C.print_table(floor_rows)
    summary["floor_anon_mb"] = floor_rows[-1]["anon_mb"]
    print(
        f"a trial worker's process holds {summary['floor_anon_mb']:.0f} MB of anonymous memory of its own before "
        f"any data or model; each extra concurrent trial added {per_trial['uss']:.0f} MB private here"
    )
    C.write_json(
        __file__,
        {
            "question": "resident memory per extra concurrent trial",
            "context": C.context(),
            "args": vars(args),
            "rows": rows,
            "summary": summary,
            "floor": floor_rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
