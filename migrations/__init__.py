"""Alembic migrations for the Tallyflow schema (run through ``tallyflow.infra.migrate``)."""
