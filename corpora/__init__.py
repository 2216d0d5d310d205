"""Test and benchmark corpora of harmless booby-trapped files (not part of the installed package).

``payload_corpus`` builds the static scan's labelled corpus; ``dynamic_payloads``
the dynamic probe's payloads. Tests and ``benchmarks/`` import them from the
repository checkout; the workbench itself never does.
"""
