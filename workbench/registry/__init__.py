"""Registry-scale scanning: a whole model store as one resumable, content-addressed job (docs/registry.md).

``discover`` finds the subjects, ``task`` is what a worker runs on one, ``engines``
run tasks (a local process pool, or Ray), ``writer`` is the job's one writer to the
case file and its JSON-lines and SARIF outputs, and ``job`` is the driver.
"""

from workbench.registry.job import JobOptions, JobProgress, build_plan, run_job

__all__ = ["JobOptions", "JobProgress", "build_plan", "run_job"]
