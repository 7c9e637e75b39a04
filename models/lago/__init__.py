"""Lago's JSON shapes and formats, in one place (docs/architecture.md §11).

- ``times``: the timestamp forms (``iso`` is Lago's; the others are frozen on purpose);
- ``money``: money as Lago's fields and as people read it;
- ``resources``: Lago's resources as Tallyflow writes them (wallet transactions, wallets,
  customer usage, invoice fees, credit notes, webhook endpoints and deliveries, usage
  alerts);
- ``summaries``: what flows and tasks return (Prefect results, run history, artifacts);
- ``results``: what single tasks and commands return besides (catalog apply, exports,
  archive, lifecycle, event status, replay, thresholds and alerts, events sent out,
  balance, projected and past usage);
- ``conformance``: ``mismatches``, which tests use to hold real outputs to these shapes.

Pure: no I/O, importable from every layer. Submodules are imported by name (the rating code
imports ``times``; ``money`` imports the rating code).
"""
