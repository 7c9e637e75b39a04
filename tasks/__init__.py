"""Prefect tasks and the I/O they wrap, in rooms by feature (docs/architecture.md §8);
imported only as ``tallyflow.tasks``.

``tasks/`` is linked into the package as ``tallyflow/tasks`` (docs/architecture.md §1). Imported
as a top-level ``tasks`` too (a script run from the repository root), every module would load
a second time under a second name, with its own registries and Prefect tasks: refused, with
the one line that says what to type instead.
"""

if not __name__.startswith("tallyflow."):
    raise ImportError(
        f"import tallyflow.tasks, not {__name__}: tasks/ is linked into the tallyflow package"
        " (tallyflow/tasks -> ../tasks); imported under both names, every module would load twice"
    )
