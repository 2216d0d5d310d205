"""Layering and start-up guarantees (harlequin-style): the core never imports the UI, and
light entry points never import torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package,forbidden", [
    ("probes", {"textual", "casefiles", "workbench", "sqlite_utils", "sqlite3", "typer", "corpora"}),
    ("casefiles", {"textual", "probes", "workbench", "torch", "transformers", "typer", "corpora"}),
    ("workbench", {"corpora"}),
])
def test_core_packages_respect_the_layering(package, forbidden):
    offenders = {}
    for path in (ROOT / package).rglob("*.py"):
        bad = _imports(path) & forbidden
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders


def test_vocabulary_needs_only_the_standard_library():
    """Both core packages import it, so it may import neither them nor anything outside the standard library."""
    offenders = {}
    for path in (ROOT / "vocabulary").rglob("*.py"):
        bad = {m for m in _imports(path) if m != "vocabulary" and m not in sys.stdlib_module_names}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders


def test_test_corpora_are_not_installed():
    """The harmless-payload corpora serve the tests and benchmarks; the installed package leaves them out."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pat.startswith("corpora") for pat in include)
    assert not list((ROOT / "probes").rglob("*payload*.py"))


def test_probes_never_print():
    offenders = []
    for path in (ROOT / "probes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize("code", [
    "import casefiles, casefiles.export",
    "import workbench.cli",
    "import probes, probes.registry, probes.formats, probes.context, vocabulary.layered",
])
def test_light_entry_points_do_not_import_torch(code):
    check = code + "\nimport sys\nbad = [m for m in ('torch', 'transformers', 'textual') if m in sys.modules]\nprint(','.join(bad))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{code!r} imported {out.stdout.strip()}"


def test_help_does_not_import_torch():
    code = ("import sys\nsys.argv=['workbench','--help']\nimport workbench.cli as c\n"
            "try:\n    c.main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', [m for m in ('torch','transformers','textual') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
