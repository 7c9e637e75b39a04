"""``tallyflow demo``: the Mistral scenario end to end on embedded defaults.

It writes realistic traffic into a local folder that stands in for the bucket (with some bad
rows and duplicates, as real producers send), then runs the real flows. Like a real producer it
never rewrites an object: a day that has ended is one object, the current day one object per
hour that has ended, and each hour's traffic is a pure function of the customer, the day and
the hour. So a second run finds nothing new in the same hour, and after an hour boundary only
the hours that ended since (issue 31: the demo counts nothing twice).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path

from tallyflow.infra.settings import tallyflow_home

MODELS = (("mistral-small", 0.6), ("mistral-medium", 0.25), ("mistral-large", 0.15))
# The hour of each day whose object carries the day's bad rows (duplicates, a cut line, a
# timestamp without a zone), so a day's rejects are written once whichever way it is cut.
BAD_ROWS_HOUR = 12


@contextmanager
def example_catalogs() -> Iterator[list[Path]]:
    """The Mistral template and the demo's extra customers, as shipped in the package
    (``tallyflow/examples``, package data): found the same way from a clone and a wheel."""
    root = resources.files("tallyflow").joinpath("examples")
    with resources.as_file(root) as folder:
        yield [Path(folder) / "mistral", Path(folder) / "demo"]


@dataclass(frozen=True)
class DemoCustomer:
    external_subscription_id: str
    calls_per_hour: int


CUSTOMERS = (
    DemoCustomer("sub_acme_001", 6),
    DemoCustomer("sub_globex_001", 3),
    DemoCustomer("sub_initech_001", 10),
)
SUBSCRIPTION_CUSTOMERS = {
    "sub_acme_001": "acme", "sub_globex_001": "globex", "sub_initech_001": "initech",
}


def demo_bucket() -> Path:
    path = tallyflow_home() / "demo" / "bucket"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_traffic(bucket: Path, now: datetime, days: int = 3) -> list[Path]:
    """The traffic of ``days`` days up to the last hour that ended before ``now``."""
    today = now.astimezone(UTC).date()
    written: list[Path] = []
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        written += write_day(bucket, day, 24 if offset else now.astimezone(UTC).hour)
    return written


def write_day(bucket: Path, day: date, hours: int) -> list[Path]:
    """One object for a whole day, or one per ended hour while the day runs; a day begun
    hour by hour stays so (its hours are never written again inside a day object)."""
    folder = bucket / day.isoformat()
    hourly = folder.is_dir() and any(folder.glob("hour-*.jsonl"))
    if hours == 24 and not hourly:
        return [_write(folder / "day.jsonl", [
            line for hour in range(24) for line in _hour_of_traffic(day, hour)])]
    return [_write(folder / f"hour-{hour:02d}.jsonl", _hour_of_traffic(day, hour))
            for hour in range(hours)]


def _write(path: Path, lines: list[str]) -> Path:
    content = "".join(line + "\n" for line in lines)
    if not path.exists() or path.read_text() != content:  # unchanged: the ledger sees no news
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return path


def _hour_of_traffic(day: date, hour: int) -> list[str]:
    return [line for customer in CUSTOMERS for line in _customer_hour(customer, day, hour)]


def _customer_hour(customer: DemoCustomer, day: date, hour: int) -> list[str]:
    rnd = random.Random(f"{customer.external_subscription_id}:{day.isoformat()}:{hour}")
    start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
    lines: list[str] = []
    for call in range(rnd.randint(1, customer.calls_per_hour)):
        model = rnd.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
        at = int((start + timedelta(seconds=rnd.randint(0, 3599))).timestamp())
        prompt = rnd.randint(200, 120_000)
        for direction, tokens in (("input", prompt), ("output", rnd.randint(50, 8_000))):
            lines.append(
                json.dumps(
                    {
                        "transaction_id": f"{day.isoformat()}-{hour:02d}-{call}-{direction}",
                        "external_subscription_id": customer.external_subscription_id,
                        "code": "mistral_tokens",
                        "timestamp": at,
                        "properties": {"tokens": tokens, "model": model, "type": direction},
                    }
                )
            )
    if hour != BAD_ROWS_HOUR:
        return lines
    # What real producers also send: retried requests (duplicates) and a few broken rows.
    lines.extend(rnd.sample(lines, k=min(3, len(lines))))
    lines.append('{"transaction_id": "broken", "code": "mistral_tokens", "timestamp": ')
    lines.append(
        json.dumps(
            {
                "transaction_id": f"{day.isoformat()}-nozone",
                "external_subscription_id": customer.external_subscription_id,
                "code": "mistral_tokens",
                "timestamp": f"{day.isoformat()}T12:00:00",
                "properties": {"tokens": 10, "model": "mistral-small", "type": "input"},
            }
        )
    )
    return lines
