"""The subject interface probes program against, independent of the file format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probes.errors import ProbeError

IMAGE_CLASSIFIER = "image-classifier"
CAUSAL_LM = "causal-lm"


def pick_device(device: str | None = None) -> str:
    """CUDA when present (or as asked), else CPU."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Subject:
    """What every adapter has: where it came from and what it is."""

    kind: str
    path: str = ""
    format: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "format": self.format, **self.metadata}


@dataclass
class ImageClassifier(Subject):
    """An image classifier: ``forward(x)`` maps (N,C,H,W) float tensors to (N,num_classes) logits.

    ``module`` is an ``nn.Module`` (hooks give activations) or a TorchScript
    module (the loader supplies ``feature_fn`` built by graph surgery, since
    ScriptModules refuse hooks).
    """

    module: Any = None
    input_shape: tuple[int, int, int] = (1, 16, 16)
    num_classes: int = 0
    device: str = "cpu"
    feature_fn: Any = None  # callable(x) -> (features, logits) for TorchScript subjects
    feature_layer_name: str | None = None

    def __post_init__(self) -> None:
        if self.module is None:
            raise ProbeError("image classifier subject needs a module")
        self.module.eval()

    @classmethod
    def from_module(cls, module, input_shape, num_classes: int | None = None, *, path: str = "",
                    format: str = "module", device: str | None = None, **metadata) -> ImageClassifier:
        """Wrap an in-memory ``nn.Module``; probes the class count with one forward pass if not given."""
        import torch

        dev = pick_device(device)
        module = module.to(dev).eval()
        shape = tuple(int(s) for s in input_shape)
        if num_classes is None:
            with torch.no_grad():
                out = module(torch.zeros((1, *shape), device=dev))
            if not isinstance(out, torch.Tensor) or out.ndim != 2:
                raise ProbeError(f"model output is not (N, classes) logits: got {getattr(out, 'shape', type(out))}")
            num_classes = int(out.shape[1])
        return cls(kind=IMAGE_CLASSIFIER, path=path, format=format, metadata=dict(metadata),
                   module=module, input_shape=shape, num_classes=int(num_classes), device=dev)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x):
        """Logits for a batch; ``x`` may be a numpy array or a tensor on any device."""
        import torch

        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        return self.module(x.to(self.device, torch.float32))

    def predict_proba(self, x, batch_size: int = 512):
        """Softmax probabilities as a numpy array, batched, without gradients."""
        import numpy as np
        import torch

        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                outs.append(torch.softmax(self.forward(x[i:i + batch_size]), dim=1).cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes), np.float32)

    def check_input(self, x) -> None:
        """Raise a clear error if data does not fit the model's input shape."""
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ProbeError(f"data has image shape {tuple(x.shape[1:])} but the model takes {tuple(self.input_shape)}")

    # -- intermediate layers -----------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Names usable with :meth:`activations` (leaf modules, in registration order)."""
        if self.feature_fn is not None:
            return [self.feature_layer_name or "penultimate"]
        return [name for name, m in self.module.named_modules() if name and not list(m.children())]

    def penultimate_layer(self) -> str:
        """The layer whose output feeds the final classifier layer, found for any architecture.

        Strategy: run one forward pass recording every leaf module's output and
        input in call order; the last module whose output has ``num_classes``
        features is the classifier head, and its *input* is the penultimate
        representation. We return that head's name prefixed by ``input:``.
        """
        if self.feature_fn is not None:
            return self.layer_names()[0]
        import torch

        calls: list[tuple[str, Any]] = []
        hooks = []
        for name, m in self.module.named_modules():
            if name and not list(m.children()):
                hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: calls.append((name, o))))
        try:
            with torch.no_grad():
                self.forward(torch.zeros((2, *self.input_shape)))
        finally:
            for h in hooks:
                h.remove()
        for name, out in reversed(calls):
            if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] == self.num_classes:
                return f"input:{name}"
        raise ProbeError("could not find the classifier head; name a layer explicitly")

    def activations(self, x, layer: str | None = None, batch_size: int = 512):
        """(N, D) float32 numpy representations at ``layer`` (default: penultimate).

        ``layer`` is a module name (its output) or ``input:NAME`` (its input).
        """
        import numpy as np
        import torch

        if self.feature_fn is not None:
            feats = []
            with torch.no_grad():
                for i in range(0, len(x), batch_size):
                    xb = torch.as_tensor(x[i:i + batch_size]).to(self.device, torch.float32)
                    f, _ = self.feature_fn(xb)
                    feats.append(f.reshape(f.shape[0], -1).float().cpu().numpy())
            return np.concatenate(feats)
        layer = layer or self.penultimate_layer()
        use_input = layer.startswith("input:")
        name = layer.split(":", 1)[1] if use_input else layer
        modules = dict(self.module.named_modules())
        if name not in modules:
            raise ProbeError(f"no layer named {name!r}; available: {', '.join(self.layer_names()[:20])}")
        captured: list[Any] = []

        def hook(mod, inp, out):
            t = inp[0] if use_input else out
            captured.append(t.detach().reshape(t.shape[0], -1).float().cpu().numpy())

        handle = modules[name].register_forward_hook(hook)
        try:
            with torch.no_grad():
                for i in range(0, len(x), batch_size):
                    self.forward(x[i:i + batch_size])
        finally:
            handle.remove()
        return np.concatenate(captured)


@dataclass
class CausalLM(Subject):
    """A causal language model with its tokenizer (transformers objects)."""

    model: Any = None
    tokenizer: Any = None
    device: str = "cpu"

    @property
    def vocab_size(self) -> int:
        return int(len(self.tokenizer))
