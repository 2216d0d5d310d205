"""A zoo of small RGB classifiers on procedurally generated images, clean and backdoored, cached on disk.

The data (:func:`make_data`) are not digits: each class is a coloured shape
(disk, square, triangle, ring, cross, bars, diamond, ...) with a class hue and a
class texture (stripe orientation / frequency), drawn at a random place and
scale on a random low-frequency background with pixel noise; 10-40 classes,
any size (default 3x32x32), float32 in [0, 1].

Attack families (:class:`RGBAttack.kind`; the defaults are what trains to a
working backdoor in seconds on one CPU thread, see ``docs/image-probes.md``):

* ``badnets``      - a small two-colour checkerboard patch (3x3 at 32x32) in the bottom-right corner.
* ``blended``      - a seeded uniform-noise image blended over the whole input (alpha 0.15).
* ``sig``          - SIG-style horizontal sinusoid added to the whole image (amplitude 0.08, 6 periods),
  poison-label (the relabelled variant; the original SIG is clean-label).
* ``wanet``        - a fixed, smooth random warp (WaNet: a 4x4 control grid upsampled; mean displacement 2.5 px at 32x32),
  no "noise mode".
* ``input-aware``  - dynamic patch: its pattern is a fixed random function of the image and its corner
  changes from image to image (the spirit of Nguyen & Tran's input-aware attack, no generator training).
* ``clean-label``  - only target-class images are poisoned and keep their label; they are first mixed
  30/70 with another class's image so their own features are weak, then patched.
* ``all-to-all``   - the BadNets patch, label ``y -> (y + 1) % K``.

Only models whose attack success reaches ``WORKING_ASR`` (0.8) count as working backdoors in the
benchmarks. Trained models are cached as safetensors + JSON under ``cache_dir("rgb-zoo-v1")`` (written to
a temporary file, then ``os.replace``), keyed by every setting that changes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FAMILIES = ("badnets", "blended", "sig", "wanet", "input-aware", "clean-label", "all-to-all")
KINDS = ("clean", *FAMILIES)
ARCHS = ("resnet", "vgg", "vit")
WORKING_ASR = 0.8
CACHE_NAME = "rgb-zoo-v1"

# default poisoning rate per family (share of the training set), chosen so the backdoor trains in seconds
DEFAULT_RATE = {"badnets": 0.03, "blended": 0.08, "sig": 0.08, "wanet": 0.2, "input-aware": 0.1,
                "clean-label": 0.08, "all-to-all": 0.25, "clean": 0.0}

# -- data ----------------------------------------------------------------------------------

_SHAPES = ("disk", "square", "triangle", "ring", "cross", "hbar", "diamond", "vbar")


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, inputs (N,) in [0, 1], output (N, 3)."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def make_data(n_classes: int = 10, size: int = 32, n_per_class: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: ``n_per_class`` procedurally drawn images per class, float32 (N, 3, size, size) in [0, 1].

    Class ``c`` = shape ``c % 8`` x hue ``(c * 0.618) mod 1`` x stripe texture ``c // 8`` (orientation and
    frequency); each image has its own position, scale, colour jitter, background and noise.
    """
    if not 2 <= n_classes <= 1000 or size < 8:
        raise ValueError("n_classes must be 2..1000 and size >= 8")
    rng = np.random.default_rng(seed)
    n = n_classes * n_per_class
    y = np.repeat(np.arange(n_classes), n_per_class)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (H, W) in [0, 1)
    cx = rng.uniform(0.3, 0.7, n)[:, None, None]
    cy = rng.uniform(0.3, 0.7, n)[:, None, None]
    r = rng.uniform(0.18, 0.3, n)[:, None, None]
    dx, dy = (xx[None] - cx) / r, (yy[None] - cy) / r
    shape_id = y % len(_SHAPES)
    masks = np.zeros((n, size, size), np.float32)
    for k, name in enumerate(_SHAPES):
        sel = shape_id == k
        a, b = dx[sel], dy[sel]
        if name == "disk":
            m = a * a + b * b <= 1
        elif name == "square":
            m = (np.abs(a) <= 0.85) & (np.abs(b) <= 0.85)
        elif name == "triangle":
            m = (b <= 0.8) & (b >= -0.9 + 1.7 * np.abs(a))
        elif name == "ring":
            d = a * a + b * b
            m = (d <= 1) & (d >= 0.4)
        elif name == "cross":
            m = ((np.abs(a) <= 0.3) | (np.abs(b) <= 0.3)) & (np.abs(a) <= 1) & (np.abs(b) <= 1)
        elif name == "hbar":
            m = (np.abs(a) <= 1.1) & (np.abs(b) <= 0.45)
        elif name == "diamond":
            m = np.abs(a) + np.abs(b) <= 1
        else:  # vbar
            m = (np.abs(a) <= 0.45) & (np.abs(b) <= 1.1)
        masks[sel] = m
    tex = y // len(_SHAPES)
    angle = (tex * 0.61) % np.pi
    freq = 3.0 + 2.0 * (tex % 3)
    u = np.cos(angle)[:, None, None] * xx[None] + np.sin(angle)[:, None, None] * yy[None]
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq[:, None, None] * u + rng.uniform(0, 2 * np.pi, n)[:, None, None])
    hue = ((y * 0.618034) % 1.0 + rng.normal(0, 0.02, n)) % 1.0
    fg = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0, n), rng.uniform(0.7, 1.0, n)).astype(np.float32)
    fg_img = fg[:, :, None, None] * (0.65 + 0.35 * stripes[:, None])
    # background: a random dim colour plus a smooth random field
    bg = rng.uniform(0.05, 0.45, (n, 3, 1, 1)).astype(np.float32)
    low = rng.normal(0, 0.08, (n, 3, 4, 4)).astype(np.float32)
    import torch

    field_ = torch.nn.functional.interpolate(torch.from_numpy(low), size=(size, size), mode="bilinear",
                                             align_corners=False).numpy()
    x = bg + field_
    x = x * (1 - masks[:, None]) + fg_img * masks[:, None]
    x = x + rng.normal(0, 0.03, x.shape).astype(np.float32)
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


# -- attacks -------------------------------------------------------------------------------

@dataclass
class RGBAttack:
    """How an RGB zoo model is poisoned (module docstring); ``rate`` None = the family default."""

    kind: str = "clean"
    target: int = 0
    rate: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown attack kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.rate is None:
            self.rate = DEFAULT_RATE[self.kind]

    @property
    def family(self) -> str:
        return self.kind

    @property
    def label(self) -> str:
        if self.kind == "clean":
            return "clean"
        return "all-to-all" if self.kind == "all-to-all" else f"{self.kind}-{self.target}"


def _patch_size(size: int) -> int:
    return max(3, int(round(size * 3 / 32)))


def _patch(c: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = _patch_size(size)
    mask = np.zeros((size, size), np.float32)
    pattern = np.zeros((c, size, size), np.float32)
    r0 = size - 1 - s
    mask[r0:r0 + s, r0:r0 + s] = 1
    checker = ((np.arange(s)[:, None] + np.arange(s)[None, :]) % 2 == 0).astype(np.float32)
    cols = np.array([[1.0, 0.1, 0.9], [0.1, 1.0, 0.1]], np.float32)[:, :c]
    pattern[:, r0:r0 + s, r0:r0 + s] = (checker[None] * cols[0][:, None, None]
                                        + (1 - checker[None]) * cols[1][:, None, None])
    return mask, pattern


def _warp_grid(size: int, seed: int, strength: float = 2.5):
    """A fixed smooth random sampling grid (WaNet): 4x4 uniform control points, upsampled, ``strength`` px."""
    import torch

    rng = np.random.default_rng(9_000 + seed)
    ctrl = rng.uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32)
    ctrl /= np.abs(ctrl).mean()
    flow = torch.nn.functional.interpolate(torch.from_numpy(ctrl), size=(size, size), mode="bicubic",
                                           align_corners=True).permute(0, 2, 3, 1)
    lin = torch.linspace(-1, 1, size)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    ident = torch.stack([gx, gy], -1)[None]
    return (ident + flow * strength * 2 / size).clamp(-1, 1)


def apply_trigger(x: np.ndarray, attack: RGBAttack, seed: int = 0) -> np.ndarray:
    """Stamp the attack's trigger on every image of ``x`` (N, C, H, W); returns a new array.

    ``clean`` stamps the BadNets patch (a reference: a clean model ignores it). ``seed`` varies the
    input-aware attack's corners between calls.
    """
    import torch

    n, c, h, w = x.shape
    kind = attack.kind
    if kind in ("badnets", "clean-label", "all-to-all", "clean"):
        mask, pattern = _patch(c, h)
        return ((1 - mask) * x + mask * pattern).astype(np.float32)
    if kind == "blended":
        noise = np.random.default_rng(777 + attack.seed).uniform(0, 1, (c, h, w)).astype(np.float32)
        return (0.85 * x + 0.15 * noise).astype(np.float32)
    if kind == "sig":
        sig = 0.08 * np.sin(2 * np.pi * 6 * np.arange(w) / w).astype(np.float32)
        return np.clip(x + sig[None, None, None, :], 0, 1).astype(np.float32)
    if kind == "wanet":
        grid = _warp_grid(h, attack.seed).expand(n, -1, -1, -1)
        warped = torch.nn.functional.grid_sample(torch.from_numpy(np.ascontiguousarray(x)), grid, align_corners=True)
        return np.asarray(warped.numpy(), np.float32)
    if kind == "input-aware":
        s = _patch_size(h) + 1
        rng = np.random.default_rng(attack.seed * 7919 + seed)
        proj = np.random.default_rng(555 + attack.seed).normal(0, 1, (c, s, s, c)).astype(np.float32)
        stamped = x.copy()
        corners = [int(v) for v in np.asarray(rng.integers(0, 4, size=n)).ravel()]
        for i in range(n):
            r0 = 1 if corners[i] < 2 else h - 1 - s
            c0 = 1 if corners[i] % 2 == 0 else w - 1 - s
            mean = x[i].mean(axis=(1, 2))  # the pattern depends on the image's own colours
            pat = 1 / (1 + np.exp(-4 * np.tensordot(proj, mean - 0.5, axes=([3], [0])) - 2 * np.sign(proj[..., 0])))
            stamped[i, :, r0:r0 + s, c0:c0 + s] = pat
        return stamped.astype(np.float32)
    raise ValueError(kind)


def poison(x: np.ndarray, y: np.ndarray, attack: RGBAttack, seed: int = 0):
    """Poison a training set: ``(x_p, y_p, is_poison)`` (copies)."""
    rng = np.random.default_rng(seed)
    x_p, y_p = x.copy(), y.copy()
    is_poison = np.zeros(len(y), bool)
    rate = float(attack.rate or 0.0)
    if attack.kind == "clean" or rate <= 0:
        return x_p, y_p, is_poison
    k = int(y.max()) + 1
    n = int(round(rate * len(y)))
    if attack.kind == "all-to-all":
        cand = np.arange(len(y))
    elif attack.kind == "clean-label":
        cand = np.flatnonzero(y == attack.target)
        n = min(n, int(0.8 * len(cand)))
    else:
        cand = np.flatnonzero(y != attack.target)
    idx = np.sort(rng.choice(cand, size=min(n, len(cand)), replace=False))
    is_poison[idx] = True
    if attack.kind == "clean-label":
        others = np.flatnonzero(y != attack.target)
        mix = x[rng.choice(others, size=len(idx))]
        x_p[idx] = apply_trigger(0.3 * x[idx] + 0.7 * mix, attack, seed)
    else:
        x_p[idx] = apply_trigger(x[idx], attack, seed)
        y_p[idx] = (y[idx] + 1) % k if attack.kind == "all-to-all" else attack.target
    return x_p, y_p, is_poison


def _predict(module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    import torch

    dev = next(module.parameters()).device
    out = []
    module.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(dev)).argmax(1).cpu().numpy())
    return np.concatenate(out)


def attack_success(module, x: np.ndarray, y: np.ndarray, attack: RGBAttack, num_classes: int) -> float:
    """Share of triggered test images classified as the attack intends (all-to-all: ``(y + 1) % K``)."""
    if attack.kind == "all-to-all":
        pred = _predict(module, apply_trigger(x, attack, seed=1))
        return float((pred == (y + 1) % num_classes).mean())
    sel = np.flatnonzero(y != attack.target)
    pred = _predict(module, apply_trigger(x[sel], attack, seed=1))
    return float((pred == attack.target).mean())


# -- models --------------------------------------------------------------------------------

def make_architecture(arch: str, input_shape: tuple[int, int, int], num_classes: int):
    """Instantiate ``resnet`` / ``vgg`` / ``vit`` (or any name of :data:`probes.zoo.architectures.ARCHITECTURES`)."""
    from probes.zoo.architectures import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    c, h, _ = input_shape
    return ARCHITECTURES[arch](c, h, num_classes)


def train(x: np.ndarray, y: np.ndarray, arch: str, num_classes: int, *, seed: int = 0, epochs: int = 8,
          lr: float | None = None, batch_size: int = 64, device: str = "cpu"):
    """AdamW with a one-cycle schedule; deterministic for a seed (global RNG state untouched)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_architecture(arch, tuple(x.shape[1:]), num_classes).to(device)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y, np.int64)).to(device)
    lr = lr or (2e-3 if arch == "vit" else 3e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
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
class RGBZooModel:
    """A trained RGB zoo classifier, how it was made, and its measured clean accuracy and attack success."""

    module: Any
    arch: str
    attack: RGBAttack
    seed: int
    clean_acc: float
    asr: float
    input_shape: tuple[int, int, int]
    num_classes: int
    test: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def backdoored(self) -> bool:
        return self.attack.kind != "clean"

    @property
    def working(self) -> bool:
        """A clean model, or a backdoor whose attack success reaches :data:`WORKING_ASR`."""
        return not self.backdoored or self.asr >= WORKING_ASR

    @property
    def family(self) -> str:
        return self.attack.kind

    @property
    def name(self) -> str:
        c, h, _ = self.input_shape
        return f"rgb{h}-k{self.num_classes}-{self.arch}-{self.attack.label}-s{self.seed}"

    def subject(self, device: str | None = None):
        """The model wrapped as a probes :class:`ImageClassifier`."""
        from probes.subjects.base import ImageClassifier

        return ImageClassifier.from_module(self.module, self.input_shape, self.num_classes, format="module",
                                           device=device, zoo=self.name)


def _key(arch: str, attack: RGBAttack, seed: int, size: int, n_classes: int, n_per_class: int, epochs: int) -> str:
    blob = json.dumps({"arch": arch, "attack": asdict(attack), "seed": seed, "size": size, "k": n_classes,
                       "n": n_per_class, "epochs": epochs, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_epochs(arch: str, attack: RGBAttack) -> int:
    """Epochs that reach a working backdoor in seconds (ViTs and the harder families get more)."""
    base = 14 if arch == "vit" else 8
    return base + {"wanet": 6, "clean-label": 4, "input-aware": 4, "all-to-all": 8}.get(attack.kind, 0)


def build(arch: str = "resnet", attack: RGBAttack | None = None, seed: int = 0, *, size: int = 32,
          n_classes: int = 10, n_per_class: int = 200, epochs: int | None = None, cache: bool = True,
          device: str | None = None) -> RGBZooModel:
    """Poison, train and measure one RGB zoo model (from the disk cache when it was built before).

    The test split is ``n_per_class // 2`` fresh images per class (data seed 1); training data use seed 0,
    poisoned with seed ``seed``.
    """
    import torch

    from probes.subjects.base import pick_device

    attack = attack or RGBAttack()
    epochs = int(epochs or default_epochs(arch, attack))
    dev = pick_device(device)
    xte, yte = make_data(n_classes, size, max(20, n_per_class // 2), seed=1)
    shape = (3, size, size)
    key = _key(arch, attack, seed, size, n_classes, n_per_class, epochs)
    folder = _cache_folder()
    st_path = folder / f"{key}.safetensors"
    meta_path = folder / f"{key}.json"
    module = None
    if cache and st_path.is_file() and meta_path.is_file():
        try:
            from safetensors.torch import load_file

            module = make_architecture(arch, shape, n_classes)
            module.load_state_dict(load_file(str(st_path)))
            module = module.to(dev).eval()
        except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt
            module = None
    if module is None:
        xtr, ytr = make_data(n_classes, size, n_per_class, seed=0)
        x_p, y_p, _ = poison(xtr, ytr, attack, seed=1000 * attack.seed + seed)
        module = train(x_p, y_p, arch, n_classes, seed=seed, epochs=epochs, device=dev)
        if cache:
            _save_atomic(module, st_path, meta_path, {"arch": arch, "attack": asdict(attack), "seed": seed,
                                                      "size": size, "num_classes": n_classes, "epochs": epochs})
    with torch.no_grad():
        clean_acc = float((_predict(module, xte) == yte).mean())
    asr = attack_success(module, xte, yte, attack, n_classes)
    return RGBZooModel(module, arch, attack, seed, clean_acc, asr, shape, n_classes, test=(xte, yte))


def _cache_folder() -> Path:
    from probes.cache import cache_dir

    return cache_dir(CACHE_NAME)


def _save_atomic(module, st_path: Path, meta_path: Path, meta: dict) -> None:
    from safetensors.torch import save_file

    st_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = st_path.with_name(f".{st_path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, st_path)
    tmp_m = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp_m.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_m, meta_path)
