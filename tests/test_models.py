"""Tests of skd_tune.models: every cheap registered model builds and gives (B, S) subclass logits."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from skd_tune.models import MODELS, Normalize, build_model

CHEAP = ["mlp_tiny", "mlp", "cnn_small", "cnn", "resnet18", "mobilenet_v3_small"]
SHAPES = {"digits": (1, 8, 8), "rgb32": (3, 32, 32)}
NUM_SUBCLASSES = 7
BATCH = 3


@pytest.fixture(autouse=True)
def _no_downloads(tmp_path, monkeypatch):
    # pretrained=False must never touch the network; an empty hub cache would surface any attempt.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)


def test_every_registered_model_builds_with_a_subclass_head() -> None:
    for name in MODELS:  # the expensive ones too: built, not run
        model = build_model(name, NUM_SUBCLASSES, (3, 32, 32), mean=[0.5] * 3, std=[0.25] * 3, pretrained=False)
        assert isinstance(model[0], Normalize), name
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        assert head.out_features == NUM_SUBCLASSES, name


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("name", CHEAP)
def test_build_model_output_shape(name: str, shape_name: str, tmp_path) -> None:
    shape = SHAPES[shape_name]
    c = shape[0]
    model = build_model(name, NUM_SUBCLASSES, shape, mean=[0.5] * c, std=[0.25] * c, pretrained=False)
    assert isinstance(model, nn.Sequential)
    assert isinstance(model[0], Normalize)
    x = torch.rand(BATCH, *shape)
    model.train()
    out = model(x)
    assert out.shape == (BATCH, NUM_SUBCLASSES)
    assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    assert out_eval.shape == (BATCH, NUM_SUBCLASSES)
    assert torch.isfinite(out_eval).all()
    # The first convolution (if any) reads the dataset's channel count.
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None:
        assert first_conv.in_channels == c
    assert not (tmp_path / "torch_home").exists()  # nothing was downloaded


@pytest.mark.parametrize("name", ["mlp_tiny", "mlp"])
def test_mlp_on_tabular_input(name: str) -> None:
    model = build_model(name, NUM_SUBCLASSES, (5,), mean=[0.0] * 5, std=[1.0] * 5)
    assert model[0].mean.shape == (1, 5)
    assert model(torch.rand(BATCH, 5)).shape == (BATCH, NUM_SUBCLASSES)


@pytest.mark.parametrize("name", ["cnn_small", "cnn", "resnet18"])
def test_image_model_on_tabular_shape_raises(name: str) -> None:
    with pytest.raises(ValueError, match=r"needs image inputs \(C, H, W\).*use model: mlp"):
        build_model(name, NUM_SUBCLASSES, (12,), mean=[0.0] * 12, std=[1.0] * 12)


def test_unknown_model_lists_available_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg_giant'; available: ") as info:
        build_model("vgg_giant", NUM_SUBCLASSES, (1, 8, 8), mean=[0.0], std=[1.0])
    message = str(info.value)
    assert message.endswith(", ".join(sorted(MODELS)))
    for name in MODELS:
        assert re.search(rf"\b{re.escape(name)}\b", message)


def test_normalize_image_per_channel() -> None:
    norm = Normalize([0.5, 0.25], [0.5, 2.0], image=True)
    x = torch.rand(4, 2, 3, 3)
    out = norm(x)
    torch.testing.assert_close(out[:, 0], (x[:, 0] - 0.5) / 0.5)
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.25) / 2.0)
    # A hand value: channel 0 pixel 1.0 -> (1 - 0.5) / 0.5 = 1; channel 1 pixel 0.25 -> 0.
    y = torch.zeros(1, 2, 1, 1)
    y[0, 0] = 1.0
    y[0, 1] = 0.25
    assert norm(y).flatten().tolist() == pytest.approx([1.0, 0.0])


def test_normalize_tabular_per_feature() -> None:
    norm = Normalize([1.0, 2.0, 3.0], [2.0, 4.0, 0.5], image=False)
    x = torch.tensor([[3.0, 2.0, 4.0], [1.0, 6.0, 3.5]])
    expected = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(norm(x), expected)


def test_normalize_is_saved_with_the_model() -> None:
    # mean/std are buffers: part of the state dict (so an exported model normalises), not parameters.
    model = build_model("mlp_tiny", 2, (1, 8, 8), mean=[0.3], std=[0.2])
    state = model.state_dict()
    assert torch.allclose(state["0.mean"].flatten(), torch.tensor([0.3]))
    assert torch.allclose(state["0.std"].flatten(), torch.tensor([0.2]))
    assert not any(n.startswith("0.") for n, _ in model.named_parameters())


# ---------------------------------------------------------------------------------------------------
# width: a multiplier of a model's channels or hidden units
# ---------------------------------------------------------------------------------------------------


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_models_that_take_a_width_are_the_spec_s():
    from skd_tune import names
    from skd_tune.models import takes_width

    assert [n for n in MODELS if takes_width(n)] == list(names.WIDTH_MODELS)
    assert set(names.WIDTH_MODELS) <= set(names.MODELS)


@pytest.mark.parametrize(
    "name,shape",
    [("mlp_tiny", (1, 8, 8)), ("mlp", (5,)), ("cnn_small", (1, 8, 8)), ("mobilenet_v3_small", (3, 32, 32))],
)
def test_width_scales_the_parameters(name: str, shape: tuple[int, ...]) -> None:
    c = shape[0]  # channels of an image, features of a table
    counts = []
    for width in (0.5, 1.0, 2.0):
        model = build_model(name, NUM_SUBCLASSES, shape, mean=[0.5] * c, std=[0.25] * c, width=width)
        with torch.no_grad():
            assert model.eval()(torch.rand(2, *shape)).shape == (2, NUM_SUBCLASSES)
        counts.append(_params(model))
    assert counts[0] < counts[1] < counts[2], counts
    default = build_model(name, NUM_SUBCLASSES, shape, mean=[0.5] * c, std=[0.25] * c)
    assert _params(default) == counts[1]  # width 1 is the registered model


def test_width_rounds_each_layer_and_keeps_at_least_one_unit() -> None:
    mlp = build_model("mlp", NUM_SUBCLASSES, (1, 8, 8), mean=[0.5], std=[0.25], width=1.5)
    hidden = [m for m in mlp.modules() if isinstance(m, nn.Linear)][0]
    assert hidden.out_features == 96  # round(64 * 1.5)
    # 64 inputs -> 96 hidden -> 7 outputs, with biases
    assert _params(mlp) == 64 * 96 + 96 + 96 * NUM_SUBCLASSES + NUM_SUBCLASSES
    cnn = build_model("cnn_tiny", NUM_SUBCLASSES, (1, 8, 8), mean=[0.5], std=[0.25], width=0.01)
    convs = [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    linears = [m.out_features for m in cnn.modules() if isinstance(m, nn.Linear)]
    assert convs == [1, 1, 1] and linears == [1, NUM_SUBCLASSES]
    cnn = build_model("cnn_small", NUM_SUBCLASSES, (1, 8, 8), mean=[0.5], std=[0.25], width=0.5)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)] == [8, 16, 16]
    assert [m.out_features for m in cnn.modules() if isinstance(m, nn.Linear)] == [16, NUM_SUBCLASSES]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "efficientnet_b0"])
def test_width_refused_by_a_model_without_one(name: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"model '{name}' takes no width \(width must be 1, got 0\.5\); the models that take a width: "
        r"mlp_tiny, mlp, cnn_tiny, cnn_small, cnn, mobilenet_v3_small, mobilenet_v3_large",
    ):
        build_model(name, NUM_SUBCLASSES, (3, 32, 32), mean=[0.5] * 3, std=[0.25] * 3, width=0.5)
    build_model(name, NUM_SUBCLASSES, (3, 32, 32), mean=[0.5] * 3, std=[0.25] * 3, width=1.0)  # width 1 is fine


def test_pretrained_weights_only_at_width_1() -> None:
    with pytest.raises(ValueError, match=r"'mobilenet_v3_small' has pretrained weights only at width 1, got width 2"):
        MODELS["mobilenet_v3_small"](NUM_SUBCLASSES, (3, 32, 32), True, width=2.0)


def test_width_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"model 'mlp': width must be > 0, got 0"):
        build_model("mlp", NUM_SUBCLASSES, (5,), mean=[0.0] * 5, std=[1.0] * 5, width=0.0)
