"""GPU throughput: images/s of the teacher and a student inside a trial vs a bare torch loop, packed
fractional-GPU trials (4 at 0.25 GPU) vs one trial per GPU, GPU memory per trial. The steps teacher,
student, trials and packed of benchmarks/gpu_check.py (its docstring: the method, the time plan) are
defined here; run alone, this script runs the student's (student, trials, packed; a tiny teacher).

Run (on a CUDA machine, ~4 min; "no GPU: skipped" elsewhere, `--dry-run-cpu` at toy size on the CPU):
    .venv/bin/python benchmarks/gpu_throughput.py
Writes benchmarks/out/gpu_throughput.json.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import _common as C


def median_rate(n: int, epoch_times: list[float]) -> float:
    """Images/s: `n` images per epoch over the median epoch time after the first (all if only one)."""
    return n / statistics.median(epoch_times[1:] or epoch_times)


def bare_epochs(model_name: str, data, batch_size: int, lr: float, wd: float, epochs: int, cpus: float, device) -> list:
    """The bare torch loop (module docstring); returns each epoch's seconds."""
    import torch
    import torch.nn.functional as F

    from skd_tune.models import build_model
    from skd_tune.train import set_threads

    cuda = device.type == "cuda"
    set_threads(cpus)  # as a trial: intra-op threads = its CPU share
    model = build_model(model_name, data.num_outputs, data.input_shape, data.mean, data.std).to(device)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=fmt)
    torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    x = torch.from_numpy(data.train.x.copy()).to(device)
    y = torch.from_numpy(data.targets("train").astype("int64")).to(device)
    x_val = torch.from_numpy(data.val.x.copy()).to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).to(device)
        for start in range(0, len(perm) - 1, batch_size):  # as a trial: no batch of one
            idx = perm[start : start + batch_size]
            with amp:
                out = model(x[idx].float().mul_(data.scale).contiguous(memory_format=fmt))
            loss = F.cross_entropy(out.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), amp:
            for start in range(0, len(x_val), 512):
                model(x_val[start : start + 512].float().mul_(data.scale).contiguous(memory_format=fmt)).float().cpu()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def peak_memory_mb(fn):
    """(fn(), peak memory in MB): `torch.cuda.max_memory_allocated` on a GPU, else the process's max RSS."""
    import resource

    import torch

    if not torch.cuda.is_available():
        out = fn()
        return out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    return out, torch.cuda.max_memory_allocated() / 2**20


def loops(role: str, spec, data, device) -> dict[str, Any]:
    """Step teacher/student: the bare loop and the recipe loop of one role, images/s and memory."""
    n = len(data.train)
    if role == "teacher":
        cfg = spec.teacher
        recipe = lambda: C.plain_teacher(spec, data, device)  # noqa: E731
    else:
        cfg = spec.student
        logits = __import__("numpy").random.default_rng(0).normal(size=(n, data.num_outputs)).astype("float32")
        recipe = lambda: C.plain_student(spec, data, logits, {"temperature": 4.0, "w_skd": 0.5}, device=device)  # noqa: E731
    bare, bare_mb = peak_memory_mb(
        lambda: bare_epochs(
            cfg.model, data, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.resources.cpu, device
        )
    )
    rec, rec_mb = peak_memory_mb(recipe)
    return {
        "model": cfg.model,
        "batch_size": cfg.batch_size,
        "train_images": n,
        "bare_images_per_s": median_rate(n, bare),
        "recipe_images_per_s": median_rate(n, rec),
        "bare_epoch_times_s": bare,
        "recipe_epoch_times_s": rec,
        "bare_peak_mb": bare_mb,
        "recipe_peak_mb": rec_mb,
    }


def throughput_spec(args, root: Path, gpu: float, concurrent: int, tiny_teacher: bool = False) -> dict[str, Any]:
    """The spec of the trials and packed runs (and, validated, of the loops)."""
    dev = 0 if args.dry_run_cpu else 1
    return {
        "seed": 0,
        "data": {"source": "mhist", "root": str(root), "image_size": args.size},
        "teacher": {
            "model": "mlp_tiny" if tiny_teacher else args.teacher_model,
            "epochs": 1 if tiny_teacher else args.teacher_epochs,
            "batch_size": args.teacher_batch,
            "lr": 1e-3,
            "resources": {"cpu": args.teacher_cpu, "gpu": dev},
        },
        "student": {
            "model": args.student_model,
            "epochs": args.student_epochs,
            "batch_size": args.student_batch,
            "lr": 1e-3,
            "w_kd": 0.5,
            "resources": {"cpu": args.cpu, "gpu": gpu * dev},
        },
        "search": {
            "num_samples": args.samples,
            "max_concurrent": concurrent,
            "scheduler": {"name": "fifo"},
            "space": {"temperature": {"loguniform": [1.0, 20.0]}, "w_skd": {"uniform": [0.0, 1.0]}},
        },
        "methods": {"seeds": 0},
    }


def skd_run(tmp: Path, label: str, spec: dict[str, Any], args, timeout_s: float) -> dict[str, Any]:
    """`skd-tune run` of `spec` with GPU memory sampled; its timings, student stage window and tables."""
    path = C.write_spec(tmp, f"gpu-{label}", spec)
    samplers: list = []
    try:
        run = C.timed_run(
            path,
            address=args.ray_address,
            timeout_s=timeout_s,
            on_start=lambda p: samplers.append(GpuMemorySampler(os.getpid(), not args.dry_run_cpu)),  # Ray is ours
        )
    finally:
        for s in samplers:
            s.stop()
    trials, epochs = C.read_results(path)
    t0, t1 = run["stages"]["student"]
    return {"run": run, "trials": trials, "epochs": epochs, "memory": samplers[0].peaks(t0, t1), "path": path}


def trial_rate(n: int, epochs) -> float:
    """Images/s of the trials of a results table: `median_rate` over all their epochs after the first."""
    later = epochs[epochs["epoch"] > 1] if (epochs["epoch"] > 1).any() else epochs
    return n / float(later["epoch_time_s"].median())


def packing_figures(r: dict[str, Any], args, n: int, gpu: float, concurrent: int) -> dict[str, Any]:
    stage = C.stage_seconds(r["run"])
    return {
        "gpu_per_trial": gpu,
        "concurrent": concurrent,
        "trials": int((r["trials"]["status"] == "TERMINATED").sum()),
        "per_trial_images_per_s": trial_rate(n, r["epochs"]),
        "aggregate_images_per_s": n * args.student_epochs * args.samples / stage,
        "student_stage_s": stage,
        "wall_s": r["run"]["wall_s"],
        "memory": r["memory"],
    }


def step_trials(tmp, args, root, n, timeout_s) -> dict[str, Any]:
    r = skd_run(tmp, "trials", throughput_spec(args, root, 1, 1), args, timeout_s)
    _, teacher_epochs = C.read_results(r["path"], "teacher")
    return {
        "teacher_trial_images_per_s": trial_rate(n, teacher_epochs),
        "teacher_epoch_times_s": [float(t) for t in teacher_epochs["epoch_time_s"]],
        "teacher_stage_s": C.stage_seconds(r["run"], "teacher"),
        "one_per_gpu": packing_figures(r, args, n, 1, 1),
    }


def step_packed(tmp, args, root, n, timeout_s) -> dict[str, Any]:
    gpu = 1 / args.packed
    spec = throughput_spec(args, root, gpu, args.packed, tiny_teacher=True)
    return packing_figures(skd_run(tmp, "packed", spec, args, timeout_s), args, n, gpu, args.packed)


class GpuMemorySampler:
    """Samples every `every_s`, in a thread, the GPU memory in use through NVML (nvidia-smi's library,
    Ray's vendored copy): the device's `used` and each compute process's `usedGpuMemory` (but this one's;
    none where the driver withholds them, as in some containers), each process labelled by its cmdline:
    "trial" (`ray::` ImplicitFunc), "other", or "unseen" (outside this PID namespace). With `gpu=False`
    (a dry run) it samples the USS of the trial workers under `root_pid` instead, so the figures exist."""

    def __init__(self, root_pid: int, gpu: bool, every_s: float = 0.5):
        import threading

        self.root, self.every_s, self.nvml, self.source = root_pid, every_s, None, "proc_uss"
        if gpu:
            try:
                from ray._private.thirdparty import pynvml as nv

                nv.nvmlInit()
                self.nvml, self.source = (nv, nv.nvmlDeviceGetHandleByIndex(0)), "nvml"
            except Exception as e:  # noqa: BLE001 -- no NVML: no memory figures, the rest still runs
                self.source = f"unavailable: {e}"
        self.samples: list[tuple[float, float, dict[int, float]]] = []  # (time, device MB, {pid: MB})
        self.kind: dict[int, str] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _label(self, pid: int) -> str:
        if self.kind.get(pid, "other") == "other":  # a worker's title changes when it starts a trial
            line = C.cmdline(pid)
            self.kind[pid] = "trial" if "ImplicitFunc" in line else ("other" if line else "unseen")
        return self.kind[pid]

    def _sample(self) -> tuple[float, dict[int, float]]:
        if self.nvml is None:
            pids = [p for p in C.descendants([self.root]) if self._label(p) == "trial"]
            procs = {p: m["uss"] for p in pids if (m := C.memory_mb(p)) is not None}
            return sum(procs.values()), procs
        nv, handle = self.nvml
        listed = []
        for list_processes in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetComputeRunningProcesses_v2):
            try:
                listed = list_processes(handle)
                break
            except Exception:  # noqa: BLE001 -- an older driver (NVMLLibraryMismatchError): the older call
                continue
        procs = {p.pid: p.usedGpuMemory / 2**20 for p in listed if p.usedGpuMemory and p.pid != os.getpid()}
        for pid in procs:
            self._label(pid)
        return nv.nvmlDeviceGetMemoryInfo(handle).used / 2**20, procs

    def _run(self) -> None:
        while not self.done.is_set():
            if self.source in ("nvml", "proc_uss"):
                self.samples.append((time.time(), *self._sample()))
            self.done.wait(self.every_s)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def peaks(self, t0: float, t1: float) -> dict[str, Any]:
        """{"source", "baseline_mb" (device use at the first sample), "device_peak_mb" (inside [t0, t1]),
        "process_peaks_mb": {"trial"|"other"|"unseen": each such process's peak there, largest first}}."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1] or self.samples[-1:]
        per_pid: dict[int, float] = {}
        for _, _, procs in inside:
            for pid, mb in procs.items():
                per_pid[pid] = max(mb, per_pid.get(pid, 0.0))
        by_kind: dict[str, list[float]] = {}
        for pid, mb in sorted(per_pid.items(), key=lambda kv: -kv[1]):
            by_kind.setdefault(self.kind.get(pid, "unseen"), []).append(mb)
        return {
            "source": self.source,
            "baseline_mb": self.samples[0][1] if self.samples else None,
            "device_peak_mb": max((s[1] for s in inside), default=None),
            "process_peaks_mb": by_kind,
        }


if __name__ == "__main__":
    import gpu_check

    alone = {"steps": "student,trials,packed", "teacher_model": "mlp_tiny", "teacher_epochs": 1}
    raise SystemExit(gpu_check.main(script=__file__, defaults=alone))
