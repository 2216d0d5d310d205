"""MITRE ATLAS techniques the workbench's evidence maps to."""

from __future__ import annotations

TECHNIQUES = {
    "AML.T0010": "ML Supply Chain Compromise",
    "AML.T0018": "Backdoor ML Model",
    "AML.T0020": "Poison Training Data",
    "AML.T0043": "Craft Adversarial Data",
}

# Which techniques a flagged result of each probe is evidence of.
PROBE_TECHNIQUES = {
    "static": ["AML.T0010"],
    "dynamic": ["AML.T0010"],
    "neural-cleanse": ["AML.T0018", "AML.T0043"],
    "strip": ["AML.T0018", "AML.T0043"],
    "spectral": ["AML.T0020", "AML.T0018"],
    "activation-clustering": ["AML.T0020", "AML.T0018"],
    "kl": ["AML.T0018", "AML.T0020"],
    "fingerprint": ["AML.T0018"],
}

FLAGGED = {"suspicious", "backdoored", "malicious"}


def techniques_for(probe: str, verdict: str | None) -> list[str]:
    """ATLAS technique IDs a run's verdict is evidence of (none for clean/inconclusive)."""
    return list(PROBE_TECHNIQUES.get(probe, [])) if verdict in FLAGGED else []


def label(technique_id: str) -> str:
    return f"{technique_id} {TECHNIQUES.get(technique_id, '')}".strip()
