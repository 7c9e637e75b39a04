"""Catalog writes of the Lago-compatible API (POST/PUT/DELETE)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine


def register(app: FastAPI, engine: Engine, deps: list[Any]) -> None:
    return None
