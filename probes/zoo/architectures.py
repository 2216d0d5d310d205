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


class _BasicBlock(nn.Module):
    """A ResNet basic block: two 3x3 conv + BatchNorm, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.short(x))


class TinyResNet(_Base):
    """A BatchNorm ResNet (stem + one basic block per stage, ``widths``), global average pool, linear head.

    Defaults: 3x32x32, 10 classes, widths (16, 32, 64): about 80k parameters. ``blocks=(2, 2, 2, 2)``
    with ``widths=(64, 128, 256, 512)`` and ``stem_stride=1`` is the ResNet-18 layout (11M parameters).
    """

    def __init__(self, in_channels: int = 3, size: int = 32, num_classes: int = 10,
                 widths: tuple[int, ...] = (16, 32, 64), blocks: tuple[int, ...] | None = None, stem_stride: int = 2):
        super().__init__()
        self._set_shape(in_channels, size, num_classes)
        blocks = blocks or tuple(1 for _ in widths)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(_BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.layers(self.stem(x))).flatten(1))


class ResNet18(TinyResNet):
    """The CIFAR ResNet-18 layout (BasicBlocks 2-2-2-2, widths 64-512, 3x3 stem stride 1): 11.2M parameters."""

    def __init__(self, in_channels: int = 3, size: int = 32, num_classes: int = 10):
        super().__init__(in_channels, size, num_classes, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2),
                         stem_stride=1)


class TinyVGG(_Base):
    """VGG-style: three conv-BN-ReLU-maxpool stages and a two-layer head (about 120k parameters at 3x32x32)."""

    def __init__(self, in_channels: int = 3, size: int = 32, num_classes: int = 10, width: int = 16):
        super().__init__()
        self._set_shape(in_channels, size, num_classes)
        chans = [in_channels, width, 2 * width, 4 * width]
        feats: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            feats += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*feats)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(4 * width * 4, 128)
        self.relu = nn.ReLU()
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.fc(self.pool(self.features(x)).flatten(1))))


class _Block(nn.Module):
    """A pre-norm transformer encoder block (multi-head self-attention + MLP)."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(_Base):
    """ViT-style: patch embedding (``patch`` x ``patch``), class token, learned positions, ``depth`` blocks.

    Defaults: 3x32x32, patch 4 (64 tokens), dim 64, 2 blocks, 4 heads: about 75k parameters.
    """

    def __init__(self, in_channels: int = 3, size: int = 32, num_classes: int = 10, patch: int = 4, dim: int = 64,
                 depth: int = 2, heads: int = 4):
        super().__init__()
        self._set_shape(in_channels, size, num_classes)
        patch = max(1, min(patch, size))
        n_tok = (size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n_tok + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[_Block(dim, heads, 2 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


ARCHITECTURES: dict[str, type[_Base]] = {"cnn": SmallCNN, "wide-cnn": WideCNN, "mlp": MLP, "resnet": TinyResNet,
                                         "vgg": TinyVGG, "vit": TinyViT, "resnet18": ResNet18}
"""Zoo architecture names -> classes (``RGBSmallCNN`` is ``cnn`` at 3x24x24/5 classes)."""
