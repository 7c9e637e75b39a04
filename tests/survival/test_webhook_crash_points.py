"""kill -9 between a change and its webhook's delivery, restart: delivered, counted once.

The child process makes a change that enqueues a webhook (a wallet top-up writing its ledger
rows, hence ``wallet_transaction.created``, in one transaction) and starts delivering, then
dies by SIGKILL at a named point:

- ``webhooks.before_post``: claimed, never sent. The claim's lease keeps it from a second
  deliverer until it ends; after it, the restart sends it once.
- ``webhooks.after_post``: sent and received, not recorded. The restart sends it again with
  the same ``X-Lago-Unique-Key``, and the receiver (which verifies the signature itself and
  counts by that key) counts one event.

Either way the change itself is there exactly once (its transaction committed before any
delivery), and the receiver ends with every logical event once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.webhooks import add_endpoint, deliver_pending, list_webhooks, signing_key
from tests.tasks.invoicing.test_invoicing import catalog
from tests.tasks.webhooks.receiver import receiving

ROOT = Path(__file__).resolve().parents[2]
_CHILD = """
import sys
from decimal import Decimal
from tallyflow.infra.resources import billing_engine
from tallyflow.tasks.wallets import top_up
from tallyflow.tasks.webhooks import deliver_pending
engine = billing_engine()
top_up(engine, "acme", Decimal(5), Decimal(2), key="crash-trial")
print("committed", flush=True)
deliver_pending(engine, timeout=5)
"""


def _ledger_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("select count(*) from wallet_transactions")).scalar_one())


@pytest.mark.parametrize(("point", "received_before_restart"), [
    ("webhooks.before_post", 0),
    ("webhooks.after_post", 1),
])
def test_killed_between_change_and_delivery_delivers_once_after_restart(
    engine: Engine, tmp_path: Path, point: str, received_before_restart: int
) -> None:
    catalog(engine, tmp_path)
    with receiving() as receiver:
        add_endpoint(engine, {"webhook_url": receiver.url,
                              "event_types": ["wallet_transaction.created"]})
        receiver.key = signing_key(engine).hmac_key
        before = _ledger_rows(engine)
        env = {**os.environ, "TALLYFLOW_FAILPOINTS": f"{point}=1"}
        child = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                               text=True, timeout=120, check=False, cwd=ROOT)
        assert child.returncode == -signal.SIGKILL, (
            f"{point} was not reached: exit {child.returncode}\n{child.stderr[-3000:]}")
        assert "committed" in child.stdout
        written = len(list_webhooks(engine))
        assert _ledger_rows(engine) - before == written >= 1  # one per ledger row written
        assert len(receiver.events) == received_before_restart
        # the restart: at once, the killed run's claim (its whole batch) is still leased, so
        # nothing is sent twice meanwhile; after the lease, all of it goes
        assert deliver_pending(engine, timeout=5).claimed == 0
        later = datetime.now(UTC) + timedelta(minutes=5)  # after the lease
        deliver_pending(engine, timeout=5, clock=lambda: later)
    assert receiver.bad_signatures == 0
    assert len(receiver.events) == written  # each logical event once
    assert {w["status"] for w in list_webhooks(engine)} == {"succeeded"}
    assert {b["webhook_type"] for b in receiver.events.values()} == {
        "wallet_transaction.created"}
