"""The first behavioural screen: per-class accuracy and confusion of a classifier on the examiner's clean data.

Consistent misclassification of one input type is the first thing an examiner
looks at; it costs one batched forward pass over ``--data``, so every scan with
data stores it (as the subject's ``triage.json`` artifact) for the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_INPUTS = 5000
ARTIFACT = "triage.json"


@dataclass
class Triage:
    """Per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""

    classes: list[int]
    confusion: list[list[int]]
    per_class: list[dict[str, Any]]
    accuracy: float
    n: int
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "confusion": self.confusion, "per_class": self.per_class,
                "accuracy": round(self.accuracy, 4), "n": self.n, "data": self.data}


def triage(subject: Any, data: Any) -> Triage:
    """Predict ``data`` (LabelledData) with a loaded classifier and tabulate it by true class."""
    x, y = data.x[:MAX_INPUTS], data.y[:MAX_INPUTS]
    pred = np.asarray(subject.predict_proba(x)).argmax(1)
    k = int(max(int(y.max()) + 1, int(pred.max()) + 1, getattr(subject, "num_classes", 0) or 0))
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (y, pred), 1)
    rows = []
    for c in range(k):
        n = int(conf[c].sum())
        if n == 0:
            continue
        wrong = conf[c].copy()
        wrong[c] = 0
        top = int(wrong.argmax())
        rows.append({"class": c, "n": n, "accuracy": round(float(conf[c, c]) / n, 4),
                     "most_confused_with": top if wrong[top] else None,
                     "confused_fraction": round(float(wrong[top]) / n, 4)})
    return Triage(list(range(k)), conf.tolist(), rows, float((pred == y).mean()), int(len(y)), data.describe())


def record_triage(store: Any, subject_id: int, subject: Any, data: Any) -> Triage | None:
    """Compute and store the triage of a classifier subject (None when the subject is not a classifier)."""
    if not hasattr(subject, "predict_proba") or getattr(subject, "kind", "") != "image-classifier":
        return None
    t = triage(subject, data)
    store.add_subject_artifact(subject_id, ARTIFACT, json.dumps(t.to_dict(), sort_keys=True).encode())
    return t
