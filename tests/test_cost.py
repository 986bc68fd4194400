"""Tests of skd_tune.cost: what a student costs (parameters, MACs, latency, weight bytes), on real models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skd_tune.cost import measure_cost
from skd_tune.models import build_model
from skd_tune.names import COST_METRICS

CPU = torch.device("cpu")
DIGITS = (1, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _model(name: str, shape=DIGITS, width: float = 1.0) -> nn.Module:
    c = shape[0]
    return build_model(name, 10, shape, mean=[0.5] * c, std=[0.25] * c, width=width)


def test_cost_has_exactly_the_cost_metrics():
    model = _model("mlp_tiny")
    cost = measure_cost(model, DIGITS, CPU)
    assert tuple(cost) == COST_METRICS
    assert all(isinstance(v, float) for v in cost.values())
    assert cost["params"] == sum(p.numel() for p in model.parameters()) == 64 * 16 + 16 + 16 * 10 + 10
    assert cost["latency_ms_b1"] > 0 and cost["latency_ms_b64"] > 0


def test_macs_of_an_mlp_are_its_weight_matrices():
    # One input through Linear(64, 16) and Linear(16, 10): 64*16 + 16*10 multiply-accumulates (biases,
    # ReLU and the normalisation are elementwise: not counted).
    assert measure_cost(_model("mlp_tiny"), DIGITS, CPU)["macs"] == 64 * 16 + 16 * 10


@pytest.mark.parametrize(
    "name,shape,widths",
    [
        ("mlp", DIGITS, (0.5, 1.0, 2.0)),
        ("cnn_small", DIGITS, (0.5, 1.0, 2.0)),
        ("mobilenet_v3_small", (3, 32, 32), (0.25, 0.5, 0.75)),  # narrow: its latency at batch 64 is timed too
    ],
)
def test_params_and_macs_grow_with_width(name, shape, widths):
    costs = [measure_cost(_model(name, shape, width), shape, CPU) for width in widths]
    for key in ("params", "macs", "weights_bytes"):
        values = [c[key] for c in costs]
        assert 0 < values[0] < values[1] < values[2], (key, values)


def test_weights_bytes_are_about_4_bytes_per_float32_value():
    model = _model("mlp", width=4.0)  # 64 -> 256 -> 10: ~19k parameters, so the format's overhead is small
    cost = measure_cost(model, DIGITS, CPU)
    values = sum(t.numel() for t in model.state_dict().values())  # parameters + the normalisation's mean/std
    assert 4 * cost["params"] < cost["weights_bytes"] < 4 * values * 1.1


def test_mode_and_weights_are_restored():
    model = _model("cnn_small")  # BatchNorm: eval mode must not touch its running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    measure_cost(model, DIGITS, CPU)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    measure_cost(model, DIGITS, CPU)
    assert not model.training


def test_measuring_leaves_the_random_stream_alone():
    model = _model("mlp_tiny")
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    measure_cost(model, DIGITS, CPU)
    assert torch.equal(torch.rand(4), expected)  # a trial's seeded randomness is unchanged


def test_fewer_than_20_repeats_are_refused():
    with pytest.raises(ValueError, match=r"repeats must be >= 20 .*got 5"):
        measure_cost(_model("mlp_tiny"), DIGITS, CPU, repeats=5)
