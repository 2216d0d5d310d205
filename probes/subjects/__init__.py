"""Subject adapters: a suspect model, loaded safely, behind the small interface probes use.

* :class:`ImageClassifier` – ``input_shape`` (C,H,W), ``num_classes``, ``forward``,
  ``layer_names()``, ``activations(x, layer)`` (works for nn.Modules through hooks
  and for TorchScript through graph surgery).
* :class:`CausalLM` – ``model``, ``tokenizer``, ``device``.

:func:`probes.subjects.loader.load_subject` turns a path into one of these.
"""

from probes.subjects.base import CausalLM, ImageClassifier, Subject, pick_device

__all__ = ["Subject", "ImageClassifier", "CausalLM", "pick_device"]
