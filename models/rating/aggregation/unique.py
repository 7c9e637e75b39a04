"""Unique count as mergeable state: per value, the latest add or remove.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tallyflow.models.rating.aggregation.states import _iso
from tallyflow.models.rating.aggregation.types import AggregationType, EventPoint, _check_type


class Operation(StrEnum):
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True)
class UniqueOp:
    """The last known operation on one distinct value."""

    timestamp: datetime
    seq: int
    operation: Operation

    def key(self) -> tuple[datetime, int, str]:
        return (self.timestamp, self.seq, self.operation.value)


@dataclass(frozen=True)
class UniqueCountState:
    """unique_count_agg, stored as the last operation per distinct value.

    Lago scores each value's operations in time order: an operation equal to the previous one
    adds 0, otherwise add +1 / remove -1, starting from "removed". Those scores telescope to 1
    when the value's last operation is ``add`` and 0 otherwise, so keeping only the last
    operation (by timestamp, then seq) per value is exact, and merging is a per-value max.
    The state grows with the number of distinct values, not with the number of events.
    """

    last_ops: Mapping[str, UniqueOp] = field(default_factory=dict)
    events_count: int = 0
    unbillable_count: int = 0

    @classmethod
    def empty(cls) -> UniqueCountState:
        return cls()

    def add(self, point: EventPoint) -> UniqueCountState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> UniqueCountState:
        ops = dict(self.last_ops)
        counted, unbillable = self.events_count, self.unbillable_count
        for point in points:
            operation = _operation(point)
            if point.text is None or operation is None:
                unbillable += 1
                continue
            counted += 1
            _keep_latest(ops, point.text, UniqueOp(point.timestamp, point.seq, operation))
        return UniqueCountState(ops, counted, unbillable)

    def merge(self, other: UniqueCountState) -> UniqueCountState:
        ops = dict(self.last_ops)
        for value, op in other.last_ops.items():
            _keep_latest(ops, value, op)
        return UniqueCountState(
            ops,
            self.events_count + other.events_count,
            self.unbillable_count + other.unbillable_count,
        )

    def is_active(self, value: str) -> bool:
        op = self.last_ops.get(value)
        return op is not None and op.operation is Operation.ADD

    def result(self) -> Decimal:
        return Decimal(sum(1 for op in self.last_ops.values() if op.operation is Operation.ADD))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": AggregationType.UNIQUE_COUNT.value,
            "last_ops": {
                value: [_iso(op.timestamp), op.seq, op.operation.value]
                for value, op in sorted(self.last_ops.items())
            },
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UniqueCountState:
        _check_type(data, AggregationType.UNIQUE_COUNT)
        ops = {
            value: UniqueOp(datetime.fromisoformat(stamp), int(seq), Operation(operation))
            for value, (stamp, seq, operation) in data["last_ops"].items()
        }
        return cls(ops, int(data["events_count"]), int(data["unbillable_count"]))


def _operation(point: EventPoint) -> Operation | None:
    raw = point.properties.get("operation_type", Operation.ADD.value)
    try:
        return Operation(raw)
    except ValueError:
        return None


def _keep_latest(ops: dict[str, UniqueOp], value: str, op: UniqueOp) -> None:
    current = ops.get(value)
    if current is None or op.key() > current.key():
        ops[value] = op
