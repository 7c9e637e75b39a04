"""``tallyflow demo``: the Mistral scenario end to end on embedded defaults.

It writes a few days of realistic traffic into a local folder that stands in for the bucket
(with some bad rows and duplicates, as real producers send), then runs the real flows. The
traffic is a pure function of the day it runs, so a second run the same day finds nothing new.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tallyflow.infra.settings import tallyflow_home

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mistral"
DEMO_CATALOG = Path(__file__).resolve().parents[2] / "examples" / "demo"
MODELS = (("mistral-small", 0.6), ("mistral-medium", 0.25), ("mistral-large", 0.15))


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


def write_traffic(bucket: Path, today: date, days: int = 3) -> list[Path]:
    """One JSON Lines object per customer per day, ending with today's hours so far."""
    written: list[Path] = []
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        hours = 24 if offset else max(datetime.now(UTC).hour, 1)
        for customer in CUSTOMERS:
            lines = _day_of_traffic(customer, day, hours)
            path = bucket / day.isoformat() / f"{customer.external_subscription_id}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            content = "".join(line + "\n" for line in lines)
            if not path.exists() or path.read_text() != content:
                path.write_text(content)
            written.append(path)
    return written


def _day_of_traffic(customer: DemoCustomer, day: date, hours: int) -> list[str]:
    rnd = random.Random(f"{customer.external_subscription_id}:{day.isoformat()}:{hours}")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    lines: list[str] = []
    for hour in range(hours):
        for call in range(rnd.randint(1, customer.calls_per_hour)):
            model = rnd.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
            at = int((start + timedelta(hours=hour, seconds=rnd.randint(0, 3599))).timestamp())
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
