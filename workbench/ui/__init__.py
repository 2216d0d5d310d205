"""The Textual workbench: a thin, keyboard-driven view over the headless core.

Nothing here computes a result: probes run through :mod:`workbench.scan` and
:mod:`workbench.jobs` in thread workers; the case file is the source of truth.
Importing this package must not import torch (tests check it).
"""
