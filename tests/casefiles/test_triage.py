"""The triage screen: per-class accuracy and confusion of a classifier on clean data, stored and reported."""

from __future__ import annotations

import numpy as np

from casefiles import CaseStore
from casefiles.export import render_markdown
from probes.data import LabelledData
from workbench.triage import record_triage, triage


class _Classifier:
    """A classifier that reads the class off the input's mean brightness, and calls every class-2 input a 0."""

    kind = "image-classifier"
    num_classes = 3

    def predict_proba(self, x):
        cls = np.clip(np.round(x.reshape(len(x), -1).mean(1) * 10).astype(int), 0, 2)
        cls[cls == 2] = 0
        return np.eye(3)[cls]


def _data() -> LabelledData:
    y = np.repeat(np.arange(3), 20)
    x = np.broadcast_to((y / 10.0)[:, None, None, None], (60, 1, 4, 4)).astype(np.float32).copy()
    return LabelledData(x, y, None, source="clean.npz", sha256="e" * 64)


def test_triage_tabulates_by_true_class():
    t = triage(_Classifier(), _data())
    assert t.confusion == [[20, 0, 0], [0, 20, 0], [20, 0, 0]]
    assert [r["accuracy"] for r in t.per_class] == [1.0, 1.0, 0.0]
    assert t.per_class[2]["most_confused_with"] == 0 and t.per_class[2]["confused_fraction"] == 1.0
    assert abs(t.accuracy - 2 / 3) < 1e-9


def test_triage_is_stored_and_the_report_names_the_misclassified_class(tmp_path):
    with CaseStore(tmp_path / "c.db", actor="e@lab") as s:
        cid = s.new_case("t")
        sid = s.add_subject(cid, path="/m.pt", sha256="a" * 64, size=1, format="torchscript",
                            kind="image-classifier", files=[])
        record_triage(s, sid, _Classifier(), _data())
        text = render_markdown(s.case_bundle(cid))
        assert any(a["action"] == "artifact.added" for a in s.audit_rows(cid)) and s.verify(cid).ok
    assert "Triage on the clean data (60 inputs, clean.npz): accuracy 66.7%." in text
    assert "Class 2 is consistently misclassified (as 0)" in text
    assert "| 2 | 20 | 0 | 0 |" in text  # the confusion row of class 2: all predicted 0
