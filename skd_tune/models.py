"""Model registry. Every model maps inputs scaled to [0, 1] to *subclass* logits (B, S).

`MODELS[name](num_outputs, input_shape, pretrained, width=1.0)` builds the bare network; `build_model`
wraps it with the dataset's normalisation as its first layer, so an exported model takes [0, 1] inputs.
Small CNN/MLP models suit the digits default; torchvision models suit images such as MHIST.

`width` multiplies a model's channels or hidden units (`student.width`): the MLPs and CNNs scale every
hidden layer and channel count to max(1, round(n * width)); MobileNetV3 passes it as torchvision's
`width_mult` (which rounds channels to multiples of 8). The models in `names.WIDTH_MODELS` take one;
the others (ResNets, EfficientNet) refuse width != 1, and pretrained weights exist only at width 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .names import WIDTH_MODELS

__all__ = ["MODELS", "Normalize", "build_model", "capture_embeddings", "last_linear", "takes_width"]


class Normalize(nn.Module):
    """(x - mean) / std per channel (images, (B, C, H, W)) or per feature (tables, (B, F))."""

    def __init__(self, mean: list[float], std: list[float], image: bool):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _features(input_shape: tuple[int, ...]) -> int:
    n = 1
    for d in input_shape:
        n *= d
    return n


def _scaled(n: int, width: float) -> int:
    """`n` channels or units at `width`: round(n * width), at least 1."""
    return max(1, round(n * width))


def _takes_width(build: Callable, takes: bool) -> Callable:
    build.takes_width = takes
    return build


def _mlp(hidden: int) -> Callable:
    def build(num_outputs: int, input_shape: tuple[int, ...], pretrained: bool, width: float = 1.0) -> nn.Module:
        h = _scaled(hidden, width)
        return nn.Sequential(nn.Flatten(), nn.Linear(_features(input_shape), h), nn.ReLU(), nn.Linear(h, num_outputs))

    return _takes_width(build, True)


def _cnn(widths: tuple[int, int, int], hidden: int) -> Callable:
    def build(num_outputs: int, input_shape: tuple[int, ...], pretrained: bool, width: float = 1.0) -> nn.Module:
        _need_image("cnn", input_shape)
        c = input_shape[0]
        a, b, d = (_scaled(w, width) for w in widths)
        hidden_units = _scaled(hidden, width)
        return nn.Sequential(
            nn.Conv2d(c, a, 3, padding=1),
            nn.BatchNorm2d(a),
            nn.ReLU(),
            nn.Conv2d(a, b, 3, padding=1),
            nn.BatchNorm2d(b),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(b, d, 3, padding=1),
            nn.BatchNorm2d(d),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(d, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, num_outputs),
        )

    return _takes_width(build, True)


def _torchvision(name: str, width_keyword: str | None = None) -> Callable:
    """A torchvision model; `width_keyword` names its builder's width argument (None: it has none)."""

    def build(num_outputs: int, input_shape: tuple[int, ...], pretrained: bool, width: float = 1.0) -> nn.Module:
        import torchvision

        _need_image(name, input_shape)
        kwargs = {}
        if width != 1:
            if width_keyword is None:
                raise ValueError(_no_width(name, width))
            if pretrained:
                raise ValueError(
                    f"model {name!r} has pretrained weights only at width 1, got width {width:g}; "
                    "set pretrained: false to train it from scratch at this width, or width: 1"
                )
            kwargs[width_keyword] = float(width)
        net = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
        _replace_head(net, num_outputs)
        if input_shape[0] != 3:
            _replace_stem(net, input_shape[0])
        return net

    return _takes_width(build, width_keyword is not None)


def _no_width(name: str, width: float) -> str:
    return (
        f"model {name!r} takes no width (width must be 1, got {width:g}); "
        f"the models that take a width: {', '.join(WIDTH_MODELS)}"
    )


def _need_image(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs image inputs (C, H, W) but this dataset gives shape {input_shape}; "
            "use model: mlp for tabular data"
        )


def _replace_head(net: nn.Module, num_outputs: int) -> None:
    if hasattr(net, "fc"):  # ResNets
        net.fc = nn.Linear(net.fc.in_features, num_outputs)
    else:  # MobileNetV3, EfficientNet: classifier ends with a Linear
        last = net.classifier[-1]
        net.classifier[-1] = nn.Linear(last.in_features, num_outputs)


def _replace_stem(net: nn.Module, channels: int) -> None:
    for parent in net.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    child_name,
                    nn.Conv2d(
                        channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        bias=child.bias is not None,
                    ),
                )
                return


# name -> build(num_outputs, input_shape, pretrained, width=1.0); `build.takes_width` says whether width may be != 1
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp_tiny": _mlp(16),
    "mlp": _mlp(64),
    "cnn_tiny": _cnn((8, 16, 16), 16),
    "cnn_small": _cnn((16, 32, 32), 32),
    "cnn": _cnn((32, 64, 128), 128),
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small", "width_mult"),
    "mobilenet_v3_large": _torchvision("mobilenet_v3_large", "width_mult"),
    "efficientnet_b0": _torchvision("efficientnet_b0"),
}


def build_model(
    name: str,
    num_outputs: int,
    input_shape: tuple[int, ...],
    mean: list[float],
    std: list[float],
    pretrained: bool = False,
    width: float = 1.0,
) -> nn.Module:
    """Normalisation followed by the registered network with `num_outputs` (subclass) logits, its
    channels or hidden units multiplied by `width` (> 0; only the models that `takes_width`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    if not width > 0:
        raise ValueError(f"model {name!r}: width must be > 0, got {width:g}")
    if width != 1 and not takes_width(name):
        raise ValueError(_no_width(name, width))
    net = MODELS[name](num_outputs, tuple(input_shape), pretrained, width=float(width))
    return nn.Sequential(Normalize(mean, std, image=len(input_shape) == 3), net)


def takes_width(name: str) -> bool:
    """Whether the registered model `name` accepts width != 1 (`names.WIDTH_MODELS` lists these)."""
    return bool(getattr(MODELS[name], "takes_width", False))


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last `nn.Linear` (its head): every registry model ends with one, and its input is the
    model's penultimate embedding."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head, so no penultimate embedding")
    return heads[-1]


@contextmanager
def capture_embeddings(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While open, every forward pass of `model` appends its penultimate embedding (B, D), the input of
    `last_linear(model)`, as float32, to the list it yields."""
    captured: list[torch.Tensor] = []
    handle = last_linear(model).register_forward_hook(lambda m, inputs, out: captured.append(inputs[0].float()))
    try:
        yield captured
    finally:
        handle.remove()
