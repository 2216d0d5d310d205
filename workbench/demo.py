"""``workbench demo``: build demo subjects locally and fill a demo case with finished runs.

Everything is trained here from bundled data (scikit-learn's digits, a generated
instruction corpus), so the demo works on an air-gapped machine. Models are
cached under the workbench cache dir; the case file is the examiner's to browse,
annotate and export.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEMO_VERSION = "1"
CLASSIFIER_SEED = 0  # the demo classifiers (seed 0: a clear backdoor for a first look)
Say = Callable[[str], None]


@dataclass
class DemoSubject:
    path: Path
    title: str
    data: Path | None = None
    audit: Path | None = None
    probes: list[str] | None = None


def _build_classifiers(dest: Path, say: Say) -> list[DemoSubject]:
    """A BadNets-backdoored and a clean digits CNN, their clean test set and the poisoned training set."""
    from probes.data import save_npz
    from probes.zoo.digits import AttackSpec, build_model, save_model
    from workbench.threads import apply_threads

    apply_threads()
    out = []
    for label, attack in (("backdoored", AttackSpec(kind="badnets", target=0, rate=0.1)),
                          ("clean", AttackSpec(kind="clean"))):
        marker = dest / f"classifier-{label}-s{CLASSIFIER_SEED}.json"
        if not marker.exists():
            say(f"training the {label} digits classifier …")
            zm = build_model("cnn", attack, seed=CLASSIFIER_SEED)
            path = save_model(zm, dest, "torchscript")
            xte, yte = zm.test
            save_npz(dest / "digits-clean-test.npz", xte, yte)
            x, y, is_p = zm.train
            save_npz(dest / f"digits-train-{label}.npz", x, y, is_p)
            marker.write_text(path.name)
            say(f"  clean accuracy {zm.clean_acc:.3f}, attack success {zm.asr:.3f}")
        path = dest / marker.read_text().strip()
        out.append(DemoSubject(path, f"digits CNN ({label})", data=dest / "digits-clean-test.npz",
                               audit=dest / f"digits-train-{label}.npz"))
    return out


def _build_language_models(dest: Path, say: Say) -> list[DemoSubject]:
    """A tiny causal LM with a one-word trigger and a clean one (the live hunt is left to the examiner)."""
    from probes.zoo import tiny_lm

    out = []
    for label, kind in (("backdoored", "trigger1"), ("clean", "clean")):
        folder = dest / f"tiny-lm-{label}"
        if not (folder / "tiny_lm.json").exists():
            say(f"training the {label} tiny language model (a few minutes on two cores; cached afterwards) …")

        def progress(step: int, total: int, message: str) -> None:
            if step % max(1, total // 10) == 0 or step == total:
                say(f"  step {step}/{total}, {message}")

        tiny_lm.build_subject(folder, kind, preset="demo", seed=0, progress=progress)
        out.append(DemoSubject(folder, f"tiny LM ({label})", probes=["static"]))
    return out


# A pickle whose load would call os.getpid() (harmless), written opcode by opcode:
# PROTO 2, GLOBAL 'os getpid', EMPTY_TUPLE, REDUCE, STOP. Nothing here ever loads it.
_BOOBY_TRAPPED_PICKLE = b"\x80\x02cos\ngetpid\n)R."


def _build_booby_trapped(dest: Path) -> list[DemoSubject]:
    path = dest / "vendor-preprocessor.pkl"
    path.write_bytes(_BOOBY_TRAPPED_PICKLE)
    return [DemoSubject(path, "vendor preprocessor (pickle)", probes=["static"])]


def build_demo_case(db: Path, *, say: Say = lambda m: None, cancel: threading.Event | None = None,
                    rebuild: bool = False) -> int:
    """Build (or reuse) the demo models and a demo case in ``db``; return the case id."""
    from casefiles import CaseStore
    from workbench.paths import cache_dir
    from workbench.scan import ScanOptions, prepare, run_scan

    models = cache_dir() / f"demo-v{DEMO_VERSION}"
    models.mkdir(parents=True, exist_ok=True)
    with CaseStore(db) as store:
        if not rebuild:
            for c in store.list_cases():
                if c["title"].startswith("Demo:") and c["runs"]:
                    say(f"reusing demo case {c['id']} in {db}")
                    return int(c["id"])
        subjects = (_build_classifiers(models, say) + _build_language_models(models, say)
                    + _build_booby_trapped(models))
        case_id = store.new_case("Demo: vendor models under review",
                                 "Built by `workbench demo`: two digit classifiers (one carries a BadNets backdoor), "
                                 "two tiny language models (one answers with the attacker's text when a trigger "
                                 "word appears) and a preprocessor pickle that runs code when loaded. Find which, "
                                 "and the triggers.")
        for s in subjects:
            say(f"scanning {s.title} …")
            prepared = prepare(s.path, ScanOptions(probes=s.probes, data=str(s.data) if s.data else None,
                                                   audit=str(s.audit) if s.audit else None))
            report = run_scan(prepared, store=store, case_id=case_id, cancel=cancel)
            say(f"  {report.verdict['verdict']}: {report.verdict['evidence']}")
        store.save_note(case_id, "## Demo case\n\nStart with the case tree on the left: open a subject to see its "
                                 "scores, trigger norms and recovered mask. On a language model, start a trigger "
                                 "hunt and watch the ranking fill in.\n")
    return case_id
