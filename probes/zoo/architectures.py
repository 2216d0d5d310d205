"""Small image-classifier architectures for the locally built test zoo.

Every class takes no required constructor arguments; the defaults match the
zoo's standard configuration (1x16x16 grey digits, 10 classes), so an examiner
can load a saved state_dict with ``--arch probes/zoo/architectures.py:SmallCNN``.
``RGBSmallCNN`` defaults to the colour variant (3x24x24, 5 classes) used to
check that the probes assume nothing about the input shape.

Each instance carries ``input_shape`` (C, H, W) and ``num_classes``.
This file imports only torch, so it can be handed to the loader as an
architecture file on its own.
"""

from __future__ import annotations

import torch
from torch import nn


class _Base(nn.Module):
    input_shape: tuple[int, int, int] = (1, 16, 16)
    num_classes: int = 10

    def _set_shape(self, in_channels: int, size: int, num_classes: int) -> None:
        self.input_shape = (int(in_channels), int(size), int(size))
        self.num_classes = int(num_classes)


class SmallCNN(_Base):
    """Two conv blocks and a linear head (about 25k parameters at the defaults)."""

    def __init__(self, in_channels: int = 1, size: int = 16, num_classes: int = 10, width: int = 16):
        super().__init__()
        self._set_shape(in_channels, size, num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(4)  # any input size maps to 4x4
        self.fc = nn.Linear(2 * width * 16, 64)
        self.relu = nn.ReLU()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.relu(self.fc(x)))


class WideCNN(SmallCNN):
    """The same layout with twice the channels."""

    def __init__(self, in_channels: int = 1, size: int = 16, num_classes: int = 10):
        super().__init__(in_channels, size, num_classes, width=32)


class MLP(_Base):
    """A fully connected network on the flattened image (no convolution at all)."""

    def __init__(self, in_channels: int = 1, size: int = 16, num_classes: int = 10, hidden: int = 128):
        super().__init__()
        self._set_shape(in_channels, size, num_classes)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * size * size, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden // 2), nn.ReLU(),
        )
        self.head = nn.Linear(hidden // 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


class RGBSmallCNN(SmallCNN):
    """SmallCNN on colourised 3x24x24 digits with 5 classes."""

    def __init__(self, in_channels: int = 3, size: int = 24, num_classes: int = 5):
        super().__init__(in_channels, size, num_classes)


ARCHITECTURES: dict[str, type[_Base]] = {"cnn": SmallCNN, "wide-cnn": WideCNN, "mlp": MLP}
"""Zoo architecture names -> classes (``RGBSmallCNN`` is ``cnn`` at 3x24x24/5 classes)."""
