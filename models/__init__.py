"""The pure domain; imported only as ``tallyflow.models``.

``models/`` is linked into the package as ``tallyflow/models`` (docs/architecture.md §1). Imported
as a top-level ``models`` too (a script run from the repository root), every module would load
a second time under a second name, with its own registries and Prefect tasks: refused, with
the one line that says what to type instead.
"""

if not __name__.startswith("tallyflow."):
    raise ImportError(
        f"import tallyflow.models, not {__name__}: models/ is linked into the tallyflow package"
        " (tallyflow/models -> ../models); imported under both names, every module would load twice"
    )
