"""What a student costs to run, measured once per trial (pure torch, no Ray): `measure_cost`.

The numbers (keys of `names.COST_METRICS`) put a trial's F1 against its size and speed (issue 16's
Pareto front): they describe the model as built, independent of how well it trained.
"""

from __future__ import annotations

import io
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .names import COST_METRICS

__all__ = ["LATENCY_BATCHES", "MIN_REPEATS", "WARMUP", "measure_cost"]

LATENCY_BATCHES = (1, 64)  # the batch sizes of latency_ms_b1 and latency_ms_b64
MIN_REPEATS = 20  # timed forward passes per batch size, at least
WARMUP = 3  # untimed forward passes before the timed ones (allocations, lazy init, cuDNN autotuning)


def measure_cost(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device, repeats: int = 20
) -> dict[str, float]:
    """The cost of `model` (already on `device`) for inputs of `input_shape` (one sample, no batch
    dimension), as floats keyed by exactly `names.COST_METRICS`:

    - `params`: sum(p.numel() for p in model.parameters()), trainable or not (buffers such as BatchNorm's
      running statistics and the normalisation's mean/std are not parameters).
    - `macs`: multiply-accumulates of one forward pass of ONE input = the FLOPs that
      `torch.utils.flop_counter.FlopCounterMode` counts, / 2. It counts matrix products and convolutions
      (Linear, Conv, their batched forms), not elementwise work (activations, normalisation, BatchNorm in
      eval mode, pooling, additions), which is small beside them for these models.
    - `latency_ms_b1`, `latency_ms_b64`: the median wall time in milliseconds of `repeats` forward passes
      at batch 1 and at batch 64, each after `WARMUP` untimed passes, in eval mode under `torch.no_grad()`,
      in float32 (no AMP), on `device` with the torch threads the caller set (`train.set_threads`: a
      trial's CPU share); on CUDA, `torch.cuda.synchronize()` before and after each timed pass. The median
      ignores the odd pass slowed by another process; the inputs are constant (0.5), so no random number
      generator is drawn from and the trial's seeded randomness is unchanged.
    - `weights_bytes`: the size of `torch.save(model.state_dict())` in memory: parameters and buffers
      at their stored precision (about 4 bytes per float32 value) plus the file format's overhead.

    The model's train/eval mode is restored afterwards; its weights are not changed."""
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be >= {MIN_REPEATS} (a median of fewer timings is noise), got {repeats}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            one = torch.full((1, *input_shape), 0.5, device=device)
            with FlopCounterMode(display=False) as counter:
                model(one)
            macs = counter.get_total_flops() / 2
            latency = {
                b: _median_ms(model, torch.full((b, *input_shape), 0.5, device=device), repeats)
                for b in LATENCY_BATCHES
            }
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
    finally:
        model.train(was_training)
    cost = {
        "params": float(sum(p.numel() for p in model.parameters())),
        "macs": float(macs),
        "latency_ms_b1": latency[1],
        "latency_ms_b64": latency[64],
        "weights_bytes": float(buffer.getbuffer().nbytes),
    }
    return {name: cost[name] for name in COST_METRICS}  # the registry's order


def _median_ms(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of `repeats` forward passes of `x` after `WARMUP` untimed ones (no_grad, eval)."""
    cuda = x.device.type == "cuda"
    for _ in range(WARMUP):
        model(x)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        model(x)
        if cuda:
            torch.cuda.synchronize(x.device)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
