"""Impact assessment of a recovered trigger: a pure function, no model access.

Neural Cleanse calls :func:`assess` with what it measured and puts the
result in its details under ``"impact"``; the case export prints it.

Trigger specificity (from the mask alone):

* ``mask_l1`` - sum of the mask; ``mask_fraction`` - that as a fraction of the image.
* ``active_pixels`` - pixels holding the mask's mass: those >= 0.5 x the mask's
  maximum (robust to a faint background haze).
* ``clusters`` - 8-connected blobs of pixels >= 0.2 x the maximum; the
  heaviest blob is taken as the trigger.
* ``bbox`` - ``[row0, col0, row1, col1]`` (inclusive) of that blob's active
  pixels, ``location`` - which ninth of the image its centre falls in
  (e.g. ``bottom-right``), ``bbox_fraction`` - bbox area / image area.
* ``compactness`` - share of the mask's total mass in that blob (1.0 = the
  trigger is one tight blob; low = scattered over the image).
* ``density`` - active pixels of the blob / bbox area.

Attack-type guess: ``patch`` when the mass sits in a small compact region
(at most 3 blobs, the heaviest holding >= 40% of the mass within <= 20% of the
image: a patch often comes with one or two stray shortcut pixels), otherwise
``blended/diffuse`` (a diffuse trigger's minimal mask scatters over many blobs);
``none`` when the model is not flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ATLAS = {
    "AML.T0018": "Backdoor ML Model",
    "AML.T0020": "Poison Training Data",
}


def _location(r: float, c: float, h: int, w: int) -> str:
    rows = ("top", "middle", "bottom")
    cols = ("left", "centre", "right")
    rn = rows[min(2, int(3 * r / h))]
    cn = cols[min(2, int(3 * c / w))]
    return "centre" if (rn, cn) == ("middle", "centre") else f"{rn}-{cn}"


def trigger_specificity(mask) -> dict[str, Any]:
    """Size, location and compactness of a recovered mask (H, W)."""
    from scipy import ndimage

    m = np.asarray(mask, float)
    if m.ndim == 3:
        m = m.max(axis=0)
    h, w = m.shape
    total = float(m.sum())
    peak = float(m.max()) if m.size else 0.0
    out: dict[str, Any] = {"mask_l1": round(total, 4), "mask_fraction": round(total / (h * w), 4),
                           "image_hw": [h, w]}
    if peak <= 1e-9 or total <= 0:
        out.update(active_pixels=0, bbox=None, location=None, bbox_fraction=0.0, compactness=0.0,
                   density=0.0, clusters=0)
        return out
    act = m >= 0.5 * peak
    # blobs of the mask (8-connected, including its fainter rim); the heaviest one is "the trigger"
    labels, n = ndimage.label(m >= 0.2 * peak, structure=np.ones((3, 3)))
    mass = ndimage.sum(m, labels, index=np.arange(1, n + 1))
    main = int(np.argmax(mass)) + 1
    rows, cols = np.nonzero((labels == main) & act) if ((labels == main) & act).any() else np.nonzero(labels == main)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    box_area = (r1 - r0 + 1) * (c1 - c0 + 1)
    out.update(
        active_pixels=int(act.sum()),
        bbox=[r0, c0, r1, c1],
        location=_location((r0 + r1 + 1) / 2, (c0 + c1 + 1) / 2, h, w),
        bbox_fraction=round(box_area / (h * w), 4),
        compactness=round(float(mass[main - 1]) / total, 4),
        density=round(float(((labels == main) & act).sum()) / box_area, 4),
        clusters=int(n),
    )
    return out


def guess_attack_type(spec: dict[str, Any], flagged: bool) -> str:
    if not flagged:
        return "none"
    if (spec.get("bbox") is not None and spec["bbox_fraction"] <= 0.2 and spec["compactness"] >= 0.4
            and spec.get("clusters", 1) <= 3):
        return "patch"
    return "blended/diffuse"


def assess(mask, pattern=None, *, anomaly_index: float, suspected_target: int | None, threshold: float = 2.0,
           trigger_asr: float | None = None, clean_accuracy: float | None = None,
           candidate_class: int | None = None) -> dict[str, Any]:
    """Impact of what Neural Cleanse found; JSON-able dict.

    ``trigger_asr`` - attack success of the recovered trigger on held-out clean
    inputs; ``clean_accuracy`` - accuracy on the examiner's labelled data (None
    without labels).
    """
    flagged = suspected_target is not None and anomaly_index > threshold
    spec = trigger_specificity(mask)
    kind = guess_attack_type(spec, flagged)
    techniques = ([{"id": "AML.T0018", "name": ATLAS["AML.T0018"]},
                   {"id": "AML.T0020", "name": ATLAS["AML.T0020"]}] if flagged else [])
    if flagged:
        where = f" at the {spec['location']}" if spec.get("location") else ""
        asr = f"{100 * trigger_asr:.0f}%" if trigger_asr is not None else "unknown"
        statement = (f"A {kind} trigger{where} ({spec['active_pixels']} px) sends inputs to class "
                     f"{suspected_target} with {asr} success on held-out inputs")
        if clean_accuracy is not None:
            statement += f", while clean accuracy stays at {100 * clean_accuracy:.1f}%"
        statement += "."
    else:
        statement = "No backdoor target stands out; the smallest trigger found is ordinary for this model."
    return {
        "backdoored": bool(flagged),
        "target_class": suspected_target if flagged else None,
        "candidate_class": candidate_class,
        "clean_accuracy": None if clean_accuracy is None else round(float(clean_accuracy), 4),
        "trigger_attack_success": None if trigger_asr is None else round(float(trigger_asr), 4),
        "trigger": spec,
        "attack_type_guess": kind,
        "atlas": techniques,
        "statement": statement,
    }
