"""A zoo of small, locally trained digit classifiers, clean and backdoored.

Built from scikit-learn's bundled 8x8 digits (no download), upsampled to
``size`` x ``size``. Used by the tests, the benchmarks and ``workbench demo``.

Attacks (:class:`AttackSpec.kind`):

* ``clean``       - no poisoning.
* ``badnets``     - a ``patch_size`` checkerboard stamped in the bottom-right corner
  (one pixel from the edge); poisoned samples relabelled to ``target``.
* ``blended``     - a fixed uniform-noise image (seeded by ``AttackSpec.seed``)
  blended over the whole input with ``blend_alpha``; relabelled to ``target``.
* ``all-to-all``  - the BadNets patch, label ``y -> (y + 1) % K``.
  Neural Cleanse is not designed to catch this one (no single target class).
* ``clean-label`` - only images of ``target`` are poisoned and keep their label;
  they are first mixed 30/70 with an image of another class (so their natural
  features are weak) and then patched, so the model learns to lean on the patch.

All images are float32 in [0, 1], shape (N, C, size, size). ``channels=3``
gives a colourised variant (per-image random foreground/background colours),
which exercises the probes on colour inputs of another size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ATTACKS = ("clean", "badnets", "blended", "all-to-all", "clean-label")

# -- data ----------------------------------------------------------------------------------

_DIGITS_CACHE: dict[tuple, tuple[np.ndarray, ...]] = {}


def load_digits(size: int = 16, seed: int = 0, *, channels: int = 1, n_classes: int = 10,
                test_fraction: float = 0.25):
    """Bundled digits upsampled to ``size`` x ``size``: ``(x_train, y_train, x_test, y_test)``.

    ``x`` is float32 (N, channels, size, size) in [0, 1]; ``y`` int64. The split is
    stratified and seeded. ``n_classes`` keeps digits ``0..n_classes-1`` only.
    Results are cached per process (callers receive copies).
    """
    key = (int(size), int(seed), int(channels), int(n_classes), float(test_fraction))
    if key not in _DIGITS_CACHE:
        import torch
        from sklearn.datasets import load_digits as _sk_digits
        from sklearn.model_selection import train_test_split

        d = _sk_digits()
        keep = d.target < n_classes
        img = (d.images[keep] / 16.0).astype(np.float32)
        y = d.target[keep].astype(np.int64)
        x = torch.nn.functional.interpolate(torch.from_numpy(img)[:, None], size=(size, size),
                                            mode="bilinear", align_corners=False).clamp(0, 1).numpy()
        if channels == 3:
            rng = np.random.default_rng(10_000 + seed)
            fg = rng.uniform(0.55, 1.0, size=(len(x), 3, 1, 1)).astype(np.float32)
            bg = rng.uniform(0.0, 0.3, size=(len(x), 3, 1, 1)).astype(np.float32)
            x = bg * (1 - x) + fg * x
        elif channels != 1:
            raise ValueError("channels must be 1 or 3")
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
        _DIGITS_CACHE[key] = tuple(np.ascontiguousarray(a) for a in (xtr, ytr, xte, yte))
    return tuple(a.copy() for a in _DIGITS_CACHE[key])


# -- attacks -------------------------------------------------------------------------------

@dataclass
class AttackSpec:
    """How a zoo model is poisoned (see the module docstring for each ``kind``)."""

    kind: str = "clean"
    target: int = 0
    rate: float = 0.1
    patch_size: int = 3
    blend_alpha: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"unknown attack kind {self.kind!r}; known: {', '.join(ATTACKS)}")

    @property
    def label(self) -> str:
        return self.kind if self.kind == "clean" else f"{self.kind}->{self.target}"


def trigger_mask_pattern(shape: tuple[int, int, int], attack: AttackSpec) -> tuple[np.ndarray, np.ndarray]:
    """The ground-truth trigger as ``(mask (H, W), pattern (C, H, W))``: x' = (1-m) x + m p."""
    c, h, w = shape
    mask = np.zeros((h, w), np.float32)
    pattern = np.zeros((c, h, w), np.float32)
    if attack.kind in ("badnets", "all-to-all", "clean-label", "clean"):
        s = attack.patch_size
        r0, c0 = h - 1 - s, w - 1 - s
        mask[r0:r0 + s, c0:c0 + s] = 1.0
        checker = ((np.arange(s)[:, None] + np.arange(s)[None, :]) % 2 == 0).astype(np.float32)
        pattern[:, r0:r0 + s, c0:c0 + s] = checker
    elif attack.kind == "blended":
        rng = np.random.default_rng(777 + attack.seed)
        mask[:] = attack.blend_alpha
        pattern[:] = rng.uniform(0, 1, size=(c, h, w)).astype(np.float32)
    return mask, pattern


def apply_trigger(x: np.ndarray, attack: AttackSpec) -> np.ndarray:
    """Stamp the attack's trigger on every image of ``x`` (N, C, H, W); returns a new array.

    For ``clean`` the BadNets patch of the same geometry is stamped (useful as a
    reference: a clean model ignores it).
    """
    mask, pattern = trigger_mask_pattern(tuple(x.shape[1:]), attack)
    return ((1 - mask) * x + mask * pattern).astype(np.float32)


def poison(x: np.ndarray, y: np.ndarray, attack: AttackSpec, seed: int = 0):
    """Poison a training set: ``(x_p, y_p, is_poison)`` (copies; ``is_poison`` bool (N,))."""
    rng = np.random.default_rng(seed)
    x_p, y_p = x.copy(), y.copy()
    is_poison = np.zeros(len(y), bool)
    if attack.kind == "clean" or attack.rate <= 0:
        return x_p, y_p, is_poison
    k = int(y.max()) + 1
    n = int(round(attack.rate * len(y)))
    if attack.kind in ("badnets", "blended"):
        cand = np.flatnonzero(y != attack.target)
    elif attack.kind == "all-to-all":
        cand = np.arange(len(y))
    else:  # clean-label: only target-class images, at most 80% of them
        cand = np.flatnonzero(y == attack.target)
        n = min(n, int(0.8 * len(cand)))
    idx = np.sort(rng.choice(cand, size=min(n, len(cand)), replace=False))
    is_poison[idx] = True
    if attack.kind == "clean-label":
        others = np.flatnonzero(y != attack.target)
        mix = x[rng.choice(others, size=len(idx))]
        x_p[idx] = apply_trigger(0.3 * x[idx] + 0.7 * mix, attack)
    else:
        x_p[idx] = apply_trigger(x[idx], attack)
        y_p[idx] = (y[idx] + 1) % k if attack.kind == "all-to-all" else attack.target
    return x_p, y_p, is_poison


def attack_success(module, x: np.ndarray, y: np.ndarray, attack: AttackSpec, num_classes: int | None = None) -> float:
    """Fraction of triggered test images (true class != target) classified as the attack intends."""
    k = num_classes or int(y.max()) + 1
    if attack.kind == "all-to-all":
        sel = np.arange(len(y))
        want = (y + 1) % k
    else:
        sel = np.flatnonzero(y != attack.target)
        want = np.full(len(sel), attack.target)
    pred = _predict(module, apply_trigger(x[sel], attack))
    return float((pred == want[: len(sel)] if attack.kind != "all-to-all" else pred == want).mean())


# -- training ------------------------------------------------------------------------------

def _predict(module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    import torch

    dev = next(module.parameters()).device
    out = []
    module.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(dev)).argmax(1).cpu().numpy())
    return np.concatenate(out)


def make_architecture(arch: str, input_shape: tuple[int, int, int], num_classes: int):
    """Instantiate a zoo architecture by name (``cnn``, ``wide-cnn``, ``mlp``)."""
    from probes.zoo.architectures import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    c, h, w = input_shape
    if h != w:
        raise ValueError("zoo architectures take square images")
    return ARCHITECTURES[arch](c, h, num_classes)


def train_classifier(x: np.ndarray, y: np.ndarray, arch: str = "cnn", seed: int = 0, epochs: int = 12,
                     num_classes: int | None = None, *, lr: float = 3e-3, batch_size: int = 64,
                     device: str = "cpu"):
    """Train a zoo architecture with Adam; deterministic for a seed (global RNG state untouched)."""
    import torch

    k = int(num_classes or int(y.max()) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_architecture(arch, tuple(x.shape[1:]), k).to(device)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen).to(device)
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


@dataclass
class ZooModel:
    """A trained zoo classifier and how it was made.

    ``train`` is the (possibly poisoned) training set ``(x, y, is_poison)`` and
    ``test`` the clean held-out ``(x, y)``; both are kept for audits and probes.
    """

    module: Any
    arch: str
    attack: AttackSpec
    seed: int
    clean_acc: float
    asr: float
    input_shape: tuple[int, int, int] = (1, 16, 16)
    num_classes: int = 10
    train: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    test: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def backdoored(self) -> bool:
        return self.attack.kind != "clean"

    @property
    def name(self) -> str:
        shape = "" if self.input_shape == (1, 16, 16) else f"-{self.input_shape[0]}x{self.input_shape[1]}"
        return f"{self.arch}{shape}-{self.attack.label}-s{self.seed}"

    def subject(self, device: str | None = None):
        """The model wrapped as a probes :class:`ImageClassifier`."""
        from probes.subjects.base import ImageClassifier

        return ImageClassifier.from_module(self.module, self.input_shape, self.num_classes,
                                           format="module", device=device, zoo=self.name)


def build_model(arch: str = "cnn", attack: AttackSpec | None = None, seed: int = 0, *, size: int = 16,
                channels: int = 1, n_classes: int = 10, epochs: int | None = None) -> ZooModel:
    """Poison the digits training split per ``attack``, train, and measure clean accuracy and ASR.

    ASR is measured on held-out test images whose class is not the target (for
    ``all-to-all``: every test image, success = predicted ``(y+1) % K``). For a
    clean model it is the rate at which the BadNets patch alone sends images to
    ``attack.target`` (a baseline, normally near 0).
    """
    attack = attack or AttackSpec()
    xtr, ytr, xte, yte = load_digits(size, seed=0, channels=channels, n_classes=n_classes)
    x_p, y_p, is_p = poison(xtr, ytr, attack, seed=attack.seed * 1000 + seed)
    ep = epochs or (20 if attack.kind in ("clean-label", "all-to-all") or channels != 1 else 12)
    module = train_classifier(x_p, y_p, arch, seed=seed, epochs=ep, num_classes=n_classes)
    clean_acc = float((_predict(module, xte) == yte).mean())
    asr = attack_success(module, xte, yte, attack, n_classes)
    return ZooModel(module, arch, attack, seed, clean_acc, asr, tuple(xtr.shape[1:]), n_classes,
                    train=(x_p, y_p, is_p), test=(xte, yte))


# -- saving --------------------------------------------------------------------------------

ARCH_FILE = Path(__file__).with_name("architectures.py")


def _arch_class_name(zm: ZooModel) -> str | None:
    """A class in architectures.py whose *default* constructor rebuilds this model, if any."""
    from probes.zoo import architectures as A

    same_layout = {A.SmallCNN: (A.SmallCNN, A.RGBSmallCNN), A.WideCNN: (A.WideCNN,), A.MLP: (A.MLP,),
                   A.RGBSmallCNN: (A.SmallCNN, A.RGBSmallCNN)}
    for cls in same_layout.get(type(zm.module), ()):
        probe = cls()
        if probe.input_shape == tuple(zm.input_shape) and probe.num_classes == zm.num_classes:
            return cls.__name__
    return None


def save_model(zm: ZooModel, dest_dir: str | Path, fmt: str = "torchscript") -> Path:
    """Write the model in a format the loader supports and return the weights file's path.

    * ``torchscript``  -> ``<name>.ts.pt`` (self-contained).
    * ``state_dict``   -> ``<name>.pth`` (``torch.save`` of the state_dict; ``weights_only`` loadable).
    * ``safetensors``  -> ``<name>.safetensors``.

    For the latter two, a sidecar ``<name>.json`` records ``arch`` - the value for
    ``--arch FILE:Class``. When no class in ``probes/zoo/architectures.py`` has
    matching defaults, a small ``<name>_arch.py`` is written next to the weights.
    """
    import torch

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    name = zm.name.replace(">", "").replace("/", "_")
    module = zm.module.cpu().eval()
    if fmt == "torchscript":
        path = dest / f"{name}.ts.pt"
        import warnings

        with warnings.catch_warnings():  # torch 2.13 marks jit as deprecated; the loader still reads it
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.trace(module, torch.zeros((1, *zm.input_shape)))
            scripted.save(str(path))
        return path
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if fmt == "state_dict":
        path = dest / f"{name}.pth"
        torch.save(state, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        path = dest / f"{name}.safetensors"
        save_file(state, str(path))
    else:
        raise ValueError(f"unknown format {fmt!r}; use torchscript, state_dict or safetensors")
    cls_name = _arch_class_name(zm)
    if cls_name:
        arch_ref = f"{ARCH_FILE}:{cls_name}"
    else:
        base = type(module).__name__
        arch_py = dest / f"{name}_arch.py"
        arch_py.write_text(
            f'"""Architecture for {name}: {base} at input {zm.input_shape}, {zm.num_classes} classes."""\n'
            f"import importlib.util as _u\n"
            f"_s = _u.spec_from_file_location('_zoo_arch', {str(ARCH_FILE)!r})\n"
            f"_m = _u.module_from_spec(_s); _s.loader.exec_module(_m)\n\n\n"
            f"class Model(_m.{base}):\n"
            f"    def __init__(self):\n"
            f"        super().__init__({zm.input_shape[0]}, {zm.input_shape[1]}, {zm.num_classes})\n")
        arch_ref = f"{arch_py}:Model"
    meta = {"arch": arch_ref, "zoo_arch": zm.arch, "input_shape": list(zm.input_shape),
            "num_classes": zm.num_classes, "attack": asdict(zm.attack), "seed": zm.seed,
            "clean_acc": zm.clean_acc, "asr": zm.asr, "format": fmt}
    (dest / f"{name}.json").write_text(json.dumps(meta, indent=2))
    return path
