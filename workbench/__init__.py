"""Trojan Workbench: the application (Typer CLI, Textual UI, and the jobs that run probes)."""

__version__ = "0.1.0"
