"""Infrastructure the tasks and flows may use: database engines, settings, migrations runner,
failpoints, the local Prefect server. Never imports the command line (docs/architecture.md §1)."""
