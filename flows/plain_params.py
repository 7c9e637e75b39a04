"""``flow``: Prefect's flow decorator, with run parameters put in JSON form without FastAPI.

Prefect writes a flow run's parameters to the API in JSON form with FastAPI's
``jsonable_encoder``, and importing FastAPI for it cost every CLI ingest a noticeable share of
its CPU, mostly its OpenAPI models (docs/scaling.md §6). For the parameter values Tallyflow's
flows take from code -- pydantic models and plain str/int/float/bool/None -- that encoder's
result is known exactly: a model's ``model_dump(mode="json", by_alias=True)`` with every dict
key starting with ``_sa`` left out (its SQLAlchemy guard), a plain value as it is. Those are
encoded here; any other value (a datetime, a future, a state, a dataclass, ...) goes to
Prefect's own ``serialize_parameters`` unchanged, so the stored parameters are the same
either way (tests/flows/test_plain_params.py compares the two).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Flow
from prefect.client.schemas.objects import State
from pydantic import BaseModel

P = ParamSpec("P")
R = TypeVar("R")

_PLAIN = (str, int, float, bool, type(None))


class _NotPlain(Exception):
    """A parameter value this module does not encode itself."""


class PlainParamsFlow(Flow[P, R]):
    """A Prefect ``Flow`` in every way but where its parameters' JSON form comes from."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, object]:
        if self.ismethod or self.isclassmethod:
            return super().serialize_parameters(parameters)
        try:
            return {key: _encoded(value) for key, value in parameters.items()}
        except Exception:  # _NotPlain, or a model that cannot be dumped: Prefect decides
            return super().serialize_parameters(parameters)


def _encoded(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, BaseModel) and not isinstance(value, State):  # Prefect's placeholder
        return _without_sa_keys(value.model_dump(mode="json", by_alias=True))
    raise _NotPlain


def _without_sa_keys(value: Any) -> Any:
    """``jsonable_encoder`` on a model's JSON-mode dump: dicts without ``_sa*`` keys."""
    if isinstance(value, dict):
        return {key: _without_sa_keys(item) for key, item in value.items()
                if not (isinstance(key, str) and key.startswith("_sa"))}
    if isinstance(value, list):
        return [_without_sa_keys(item) for item in value]
    return value


def flow(**options: Any) -> Callable[[Callable[P, R]], PlainParamsFlow[P, R]]:
    """``@prefect.flow(**options)`` making a ``PlainParamsFlow`` (named ``flow`` so Prefect's
    reading of a flow's decorator from its source still finds it)."""

    def decorate(fn: Callable[P, R]) -> PlainParamsFlow[P, R]:
        return PlainParamsFlow(fn=fn, **options)

    return decorate
