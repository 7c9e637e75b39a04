"""Prefect flows; imported only as ``tallyflow.flows``.

``flows/`` is linked into the package as ``tallyflow/flows`` (docs/architecture.md §1). Imported
as a top-level ``flows`` too (a script run from the repository root), every module would load
a second time under a second name, with its own registries and Prefect tasks: refused, with
the one line that says what to type instead.
"""

if not __name__.startswith("tallyflow."):
    raise ImportError(
        f"import tallyflow.flows, not {__name__}: flows/ is linked into the tallyflow package"
        " (tallyflow/flows -> ../flows); imported under both names, every module would load twice"
    )
