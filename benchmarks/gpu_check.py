"""GPU check (issue 18, part 3): one script, one GPU (H100/H200), under 8 minutes, one JSON.

On a synthetic MHIST (`skd_tune.data.synth`, 3,152 images at 224 px, MHIST's size and split):
  (a) teacher images/s inside a trial vs a bare torch loop   target trial / bare >= 0.9
  (b) student images/s inside a trial vs a bare torch loop   target trial / bare >= 0.9
  (c) 4 student trials at 0.25 GPU vs 1 trial per GPU, aggregate images/s   target >= 1.5x
  (d) GPU memory per trial                                   (report)
  (e) wall time of a 16-trial, 10-epoch polyp search         (report)

Time plan on one H100/H200 with 16 cores (default sizes, each a flag; estimates, never run yet):
  data     synthetic MHIST, 3152 images at 224 px, 16 processes; Ray started    ~30 s
  teacher  resnet50, batch 32, 3 epochs: bare loop, then recipe loop            ~30 s
  student  resnet18, batch 64, 6 epochs: bare loop, then recipe loop            ~20 s
  trials   `skd-tune run`: teacher trial (3 epochs, 1 GPU), then 8 student
           trials one at a time (6 epochs, 1 GPU each)                          ~120 s
  packed   the same 8 students, 0.25 GPU each, 4 at once (tiny teacher)         ~60 s
  search   search_spaces/polyp.yaml, 16 trials of 10 epochs, teacher 2 epochs   ~120 s
  total                                                                         ~6.5 min
`--budget-s` (default 450) bounds it: a step is not started past the budget, and the runs of
`skd-tune run` are killed at it (+60 s). The JSON is rewritten after every step, so a killed check
still leaves what it measured.

Method.
- bare loop: in this process, the model of the registry (`skd_tune.models.build_model`: normalisation
  + torchvision network, no pretrained weights), on the GPU in channels_last with cuDNN autotuning,
  AdamW, bf16 autocast, cross-entropy; the training split as one uint8 tensor on the GPU, shuffled
  batches indexed there and scaled to [0, 1]; each epoch one training pass and one forward pass over
  the validation split in batches of 512, as a trial's epoch. It leaves out what a trial adds: the
  distillation loss (KD/SKD on cached logits: elementwise, cheap), the metrics (F1, AUC on the CPU),
  the checkpoint and report to Tune.
- recipe loop: `skd_tune.recipes.build_{teacher,student}_run` in this process, no Ray
  (_common.plain_teacher / plain_student): what a trial trains; trial vs recipe is Ray's cost, recipe
  vs bare is skd-tune's loop.
- trial: `skd-tune run SPEC --address` (a child process) with 1 GPU per trial, one at a time, FIFO,
  no augmentation, no method table, the loops' spec; images/s read from each epoch's `epoch_time_s`
  in the results tables (the teacher's and the students'). Every run joins one local Ray that this
  script starts (`ray.init`) and stops, so no figure includes Ray's start-up.
  Images/s of a loop or trial = training images / epoch time (training + validation pass), median
  over the epochs after the first (cuDNN autotuning, allocator warm-up); the per-epoch checkpoint and
  report of a trial fall outside `epoch_time_s`.
- packing: the same student search at `gpu: 1/--packed` per trial, --packed at once, vs the trials'
  run; aggregate images/s = training images x epochs x trials / wall time of the student stage (from
  the experiment's state), so it includes each trial's start (process, CUDA context, data) and its
  checkpoints. Without MPS, processes sharing a GPU are time-sliced: packing gains only where one
  trial leaves the GPU idle (kernel launches, CPU work, start-up).
- memory: peak `torch.cuda.max_memory_allocated` of the recipe loop (what a trial's tensors take), and,
  sampled every 0.5 s through NVML while the packed trials run, each trial process's GPU memory (what
  nvidia-smi shows per process: tensors + allocator cache + CUDA context) and the device's use above
  its use before the run, divided by the trials at once (an upper bound: Ray's idle workers that ran a
  CUDA task keep their context). Dry run: max RSS of this process, USS of the trial workers.
- search: search_spaces/polyp.yaml as it is (TPE, ASHA grace 3 / factor 3, augmentation, curricula,
  0.25 GPU and 2 CPUs per trial) but 16 trials of 10 epochs, the teacher trained for 2 epochs and no
  method table; its wall time (`skd-tune run`, process start to exit: data, teacher, logits, search,
  export; Ray already running) and its student stage's (the search itself).

Without a GPU (and without --dry-run-cpu) it prints "no GPU: skipped", writes that to the JSON and
exits 0. `--dry-run-cpu` runs every step on the CPU at toy size to check the script (CI: tests/
test_benchmarks_gpu_check.py); its figures mean nothing: 96 images at 32 px, cnn_small teacher and
cnn_tiny students, 2 trials of 2 epochs at 0.5 CPU instead of 0.25 GPU, a search of 1 trial of 3
epochs, and its three `skd-tune run`s at once on a Ray of 4 CPUs (each trial's worker process costs
~5 CPU-seconds of imports: most of the dry run's ~85 CPU-seconds).

Run (GPU machine, from the repository root, ~6.5 min):  bash benchmarks/gpu_check.sh
Dry run (~50-75 s on 2 cores):                           bash benchmarks/gpu_check.sh --dry-run-cpu
Writes benchmarks/out/gpu_check.json (`--out` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common as C
import yaml
from gpu_throughput import loops, skd_run, step_packed, step_trials, throughput_spec

QUESTION = "GPU: teacher/student images/s in a trial vs a bare loop; packed 0.25-GPU trials; memory; polyp search"
STEPS = ("teacher", "student", "trials", "packed", "search")
LOOPS = ("teacher", "student")  # steps in this process; the others are `skd-tune run`s
TARGETS = {"teacher_trial_over_bare": 0.9, "student_trial_over_bare": 0.9, "packed_over_one_per_gpu": 1.5}
DRY = {
    "n": 96,
    "size": 32,
    "teacher_model": "cnn_small",
    "student_model": "cnn_tiny",
    "teacher_epochs": 2,
    "student_epochs": 2,
    "samples": 2,
    "cpu": 0.5,
    "teacher_cpu": 1,
}
DRY_SEARCH = {"search_samples": 1, "search_epochs": 3, "search_teacher_epochs": 1}


def parse(argv: list[str] | None, defaults: dict[str, Any] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    a = p.add_argument
    a("--n", type=int, default=3152, help="synthetic MHIST images (default: 3152, MHIST's size)")
    a("--size", type=int, default=224, help="image side in pixels (default: 224)")
    a("--teacher-model", default="resnet50")
    a("--teacher-batch", type=int, default=32)
    a("--teacher-epochs", type=int, default=3, help="epochs of the teacher's loops and trial (default: 3)")
    a("--teacher-cpu", type=float, default=4, help="CPUs of the teacher's trial (default: 4)")
    a("--student-model", default="resnet18")
    a("--student-batch", type=int, default=64)
    a("--student-epochs", type=int, default=6, help="epochs of the student's loops and trials (default: 6)")
    a("--samples", type=int, default=8, help="student trials of the trials and packed runs (default: 8)")
    a("--packed", type=int, default=4, help="trials sharing the GPU in the packed run (default: 4)")
    a("--cpu", type=float, default=2, help="CPUs per student trial (default: 2)")
    a("--search-samples", type=int, default=16)
    a("--search-epochs", type=int, default=10)
    a("--search-teacher-epochs", type=int, default=2)
    a("--steps", default=",".join(STEPS), help=f"which steps, comma-separated (default: all of {','.join(STEPS)})")
    a("--budget-s", type=float, default=450, help="start no step past this many seconds (default: 450)")
    a("--out", type=Path, default=None, help="the JSON (default: benchmarks/out/<script>.json)")
    a("--dry-run-cpu", action="store_true", help="every step on the CPU at toy size, to check the script")
    a("--keep", action="store_true", help="keep the temporary directory")
    if defaults:
        p.set_defaults(**defaults)
    args = p.parse_args(argv)
    if args.dry_run_cpu:  # toy sizes unless given explicitly
        given = {k.lstrip("-").split("=")[0].replace("-", "_") for k in (argv or []) if k.startswith("--")}
        for k, v in {**DRY, **DRY_SEARCH}.items():
            if k not in given:
                setattr(args, k, v)
    args.steps, args.ray_address = [s for s in args.steps.split(",") if s], None
    unknown = set(args.steps) - set(STEPS)
    if unknown:
        p.error(f"--steps: unknown {sorted(unknown)}; known: {', '.join(STEPS)}")
    return args


def search_spec(args, root: Path) -> dict[str, Any]:
    """search_spaces/polyp.yaml with the sizes of the check (module docstring)."""
    raw = yaml.safe_load((C.REPO / "search_spaces" / "polyp.yaml").read_text())
    for key in ("name", "storage"):
        raw.pop(key, None)
    raw["data"].update(root=str(root), image_size=args.size)
    raw["teacher"]["epochs"] = args.search_teacher_epochs
    raw["student"]["epochs"] = args.search_epochs
    raw["search"]["num_samples"] = args.search_samples
    raw["methods"] = {"seeds": 0}
    if args.dry_run_cpu:  # the toy models and CPUs of the dry run
        raw["teacher"].update(model=args.teacher_model, resources={"cpu": args.teacher_cpu, "gpu": 0})
        raw["student"].update(model=args.student_model, resources={"cpu": args.cpu, "gpu": 0})
    return raw


def step_search(tmp, args, root, timeout_s) -> dict[str, Any]:
    r = skd_run(tmp, "search", search_spec(args, root), args, timeout_s)
    trials, epochs = r["trials"], r["epochs"]
    ran = epochs.groupby("trial_id")["epoch"].max()
    return {
        "trials": int(len(trials)),
        "epochs": args.search_epochs,
        "trial_epochs_run": int(len(epochs)),
        "trials_run_to_the_end": int((ran >= args.search_epochs).sum()),
        "best_val_f1": float(epochs["val_f1"].max()),
        "wall_s": r["run"]["wall_s"],
        "stages_s": {k: v[1] - v[0] for k, v in r["run"]["stages"].items()},
        "memory": r["memory"],
    }


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The figures of the issue, None where a step did not run."""

    def get(*keys):
        v = res
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    def ratio(a, b):
        return a / b if a is not None and b else None

    packed_mem = get("packed", "memory") or {}
    trial_peaks = (packed_mem.get("process_peaks_mb") or {}).get("trial") or []
    above = (packed_mem.get("device_peak_mb") or 0) - (packed_mem.get("baseline_mb") or 0)
    return {
        "teacher_bare_images_per_s": get("teacher", "bare_images_per_s"),
        "teacher_trial_images_per_s": get("trials", "teacher_trial_images_per_s"),
        "teacher_trial_over_bare": ratio(
            get("trials", "teacher_trial_images_per_s"), get("teacher", "bare_images_per_s")
        ),
        "student_bare_images_per_s": get("student", "bare_images_per_s"),
        "student_trial_images_per_s": get("trials", "one_per_gpu", "per_trial_images_per_s"),
        "student_trial_over_bare": ratio(
            get("trials", "one_per_gpu", "per_trial_images_per_s"), get("student", "bare_images_per_s")
        ),
        "packed_over_one_per_gpu": ratio(
            get("packed", "aggregate_images_per_s"), get("trials", "one_per_gpu", "aggregate_images_per_s")
        ),
        "student_max_allocated_mb": get("student", "recipe_peak_mb"),
        "teacher_max_allocated_mb": get("teacher", "recipe_peak_mb"),
        "trial_process_peak_mb": max(trial_peaks) if trial_peaks else None,
        "device_mb_per_packed_trial": above / res["packed"]["concurrent"] if "packed" in res and above > 0 else None,
        "search_wall_s": get("search", "wall_s"),
        "search_student_stage_s": get("search", "stages_s", "student"),
    }


def start_ray(tmp: Path, cpus: int | None) -> str:
    """One local Ray (started here, stopped at the end) that every `skd-tune run` of the check joins
    with `--address`: the runs skip Ray's start-up (seconds each). `cpus`: the CPUs Ray offers (None:
    this machine's; a dry run offers 4 on any machine, for its three runs at once)."""
    import logging

    import ray

    os.environ["RAY_TMPDIR"] = str(tmp / "ray")  # short: socket paths; removed with tmp
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")  # no idle workers for this driver's job
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    return ray.get_runtime_context().gcs_address


def report(args, payload: dict[str, Any], script: str) -> Path:
    path = args.out or C.OUT / f"{Path(script).stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=C._plain))
    return path


def main(argv: list[str] | None = None, script: str = __file__, defaults: dict[str, Any] | None = None) -> int:
    args = parse(argv, defaults)
    # skd_tune from this checkout, also where it is not installed (a GPU machine's own python), for the
    # children and Ray's workers too
    sys.path.insert(0, str(C.REPO))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(C.REPO), os.environ.get("PYTHONPATH")]))
    if args.dry_run_cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trials too: a dry run on a GPU machine stays on the CPU
    import torch

    base = {"question": QUESTION, "dry_run_cpu": args.dry_run_cpu, "args": vars(args), "targets": TARGETS}
    if not torch.cuda.is_available() and not args.dry_run_cpu:
        print("no GPU: skipped")
        print(f"wrote {report(args, {**base, 'skipped': 'no GPU', 'context': C.context()}, script)}")
        return 0
    from skd_tune.data import load_dataset
    from skd_tune.data.synth import write_synthetic_mhist
    from skd_tune.spec import validate_spec

    device = torch.device("cpu" if args.dry_run_cpu else "cuda")
    base["device"] = "cpu" if args.dry_run_cpu else torch.cuda.get_device_name(0)
    t_start, tmp = time.perf_counter(), C.tempdir("gpucheck")
    res: dict[str, Any] = {}
    elapsed: dict[str, float] = {}
    errors: dict[str, str] = {}
    lock = threading.Lock()

    def save(complete: bool) -> Path:
        with lock:
            payload = {**base, "context": C.context(), "complete": complete, "elapsed_s": elapsed, "errors": errors}
            return report(args, {**payload, "results": res, "summary": summary(res)}, script)

    def step(name: str) -> None:
        left = args.budget_s - (time.perf_counter() - t_start)
        if left <= 0:
            errors[name] = f"not started: past the budget of {args.budget_s:.0f} s"
            return
        t0 = time.perf_counter()
        print(f"[{t0 - t_start:5.0f} s] {name} ...", flush=True)
        root = tmp / "mhist"
        try:
            if name in LOOPS:
                out = loops(name, spec, data, device)
            elif name == "search":
                out = step_search(tmp, args, root, left + 60)
            else:
                out = (step_trials if name == "trials" else step_packed)(tmp, args, root, len(data.train), left + 60)
            with lock:
                res[name] = out
        except Exception as e:  # noqa: BLE001 -- one failed step must not lose the others' figures
            errors[name] = f"{type(e).__name__}: {e}"[-3000:]
            print(f"{name} failed: {errors[name]}", flush=True)
        if name in LOOPS and device.type == "cuda":
            torch.cuda.empty_cache()
        elapsed[name] = time.perf_counter() - t0
        save(False)

    try:
        t0 = time.perf_counter()
        write_synthetic_mhist(tmp / "mhist", n=args.n, seed=0, size=args.size)
        spec = validate_spec({"name": "loops", **throughput_spec(args, tmp / "mhist", 1, 1)})
        data = load_dataset(spec.data, spec.seed)
        elapsed["data"] = time.perf_counter() - t0
        print(f"synthetic MHIST: {args.n} images at {args.size} px in {elapsed['data']:.0f} s", flush=True)
        runs = [s for s in args.steps if s not in LOOPS]
        if runs:
            t0 = time.perf_counter()
            args.ray_address = start_ray(tmp, cpus=4 if args.dry_run_cpu else None)
            elapsed["ray_start"] = time.perf_counter() - t0
        for name in [s for s in args.steps if s in LOOPS]:
            step(name)
        if args.dry_run_cpu:  # the runs at once: the dry run checks the script, its figures mean nothing
            with ThreadPoolExecutor(len(runs) or 1) as pool:
                list(pool.map(step, runs))
        else:  # one at a time: they would time-share the GPU
            for name in runs:
                step(name)
        elapsed["total"] = time.perf_counter() - t_start
        path = save(complete=not errors)
    finally:
        if args.ray_address:
            __import__("ray").shutdown()
        C.cleanup(tmp, args.keep)
    print_tables(args, res, summary(res))
    print(f"wrote {path}; {elapsed['total']:.0f} s; load average {C.loadavg()}")
    return 1 if errors else 0


def print_tables(args, res: dict[str, Any], figures: dict[str, Any]) -> None:
    note = "  [DRY RUN ON CPU: figures mean nothing]" if args.dry_run_cpu else ""
    print(f"\nimages/s, {args.size} px{note}")
    rows = []
    for role in ("teacher", "student"):
        loop = res.get(role, {})
        trial = figures[f"{role}_trial_images_per_s"]
        rows.append({"role": role, "model": loop.get("model"), "batch": loop.get("batch_size")})
        rows[-1].update(bare=loop.get("bare_images_per_s"), recipe=loop.get("recipe_images_per_s"), trial=trial)
    C.print_table(rows)
    print()
    C.print_table(
        [{"figure": k, "value": v, "target": TARGETS.get(k), "met": None if k not in TARGETS or v is None else v >= TARGETS[k]}
         for k, v in figures.items()]
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
