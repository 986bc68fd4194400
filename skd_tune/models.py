"""Model registry. Every model maps inputs scaled to [0, 1] to *subclass* logits (B, S).

`MODELS[name](num_outputs, input_shape, pretrained)` builds the bare network; `build_model` wraps it
with the dataset's normalisation as its first layer, so an exported model takes [0, 1] inputs.
Small CNN/MLP models suit the digits default; torchvision models suit images such as MHIST.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MODELS", "Normalize", "build_model"]


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


def _mlp(hidden: int) -> Callable:
    def build(num_outputs: int, input_shape: tuple[int, ...], pretrained: bool) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(_features(input_shape), hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)
        )

    return build


def _cnn(widths: tuple[int, int, int], hidden: int) -> Callable:
    def build(num_outputs: int, input_shape: tuple[int, ...], pretrained: bool) -> nn.Module:
        _need_image("cnn", input_shape)
        c = input_shape[0]
        a, b, d = widths
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
            nn.Linear(d, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_outputs),
        )

    return build


def _torchvision(name: str) -> Callable:
    def build(num_outputs: int, input_shape: tuple[int, ...], pretrained: bool) -> nn.Module:
        import torchvision

        _need_image(name, input_shape)
        net = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
        _replace_head(net, num_outputs)
        if input_shape[0] != 3:
            _replace_stem(net, input_shape[0])
        return net

    return build


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


MODELS: dict[str, Callable[[int, tuple[int, ...], bool], nn.Module]] = {
    "mlp_tiny": _mlp(16),
    "mlp": _mlp(64),
    "cnn_tiny": _cnn((8, 16, 16), 16),
    "cnn_small": _cnn((16, 32, 32), 32),
    "cnn": _cnn((32, 64, 128), 128),
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "mobilenet_v3_large": _torchvision("mobilenet_v3_large"),
    "efficientnet_b0": _torchvision("efficientnet_b0"),
}


def build_model(
    name: str,
    num_outputs: int,
    input_shape: tuple[int, ...],
    mean: list[float],
    std: list[float],
    pretrained: bool = False,
) -> nn.Module:
    """Normalisation followed by the registered network with `num_outputs` (subclass) logits."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    net = MODELS[name](num_outputs, tuple(input_shape), pretrained)
    return nn.Sequential(Normalize(mean, std, image=len(input_shape) == 3), net)
