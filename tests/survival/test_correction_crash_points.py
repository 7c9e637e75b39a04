"""kill -9 inside a money correction, restart: it happens exactly once (issue 27, item 8).

The child process issues a refund credit note (or voids an invoice) on a wallet-paid invoice
and dies by SIGKILL at a named point between the correction and its wallet ledger rows:

- ``credit_notes.before_wallet_correction``: the note and its items are written, the refund
  to the wallet is not. Nothing of it commits; the retry with the same idempotency key issues
  the note and its ledger correction once.
- ``invoice_voids.after_void``: the invoice is marked voided, its prepaid credits not yet
  given back. Nothing commits; the rerun voids it and gives the credits back once.

Either way the wallets' balances agree with their ledger at every step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.corrections import issue_credit_note, list_credit_notes, void_invoice
from tallyflow.tasks.invoicing import find_invoice
from tests.tasks.corrections.test_credit_notes import AT, _fee, _finalized, _issue
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

ROOT = Path(__file__).resolve().parents[2]
WALLET = "acme/prepaid_credits"
_REFUND = """
import sys
from datetime import datetime
from decimal import Decimal
from tallyflow.infra.resources import billing_engine
from tallyflow.models.credit_notes import Request
from tallyflow.tasks.corrections import Issue, issue_credit_note
number, fee, at = sys.argv[1:4]
issue_credit_note(billing_engine(), Issue(number, Request(((fee, Decimal(1000)),),
                  refund_amount_cents=1200), idempotency_key="crash-trial"),
                  at=datetime.fromisoformat(at))
"""
_VOID = """
import sys
from datetime import datetime
from tallyflow.infra.resources import billing_engine
from tallyflow.tasks.corrections import void_invoice
void_invoice(billing_engine(), sys.argv[1], datetime.fromisoformat(sys.argv[3]))
"""


def _killed_at(point: str, script: str, *args: str) -> None:
    env = {**os.environ, "TALLYFLOW_FAILPOINTS": f"{point}=1"}
    child = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                           text=True, timeout=120, check=False, cwd=ROOT)
    assert child.returncode == -signal.SIGKILL, (
        f"{point} was not reached: exit {child.returncode}\n{child.stderr[-3000:]}")


def _ledger(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("select count(*) from wallet_transactions")).scalar_one())


@pytest.mark.parametrize("point", ["credit_notes.before_wallet_correction",
                                   "invoice_voids.after_void"])
def test_killed_inside_a_correction_converges_once(engine: Engine, tmp_path: Path,
                                                  point: str) -> None:
    invoice = _finalized(engine, tmp_path)
    fee = _fee(invoice, "subscription", 3100)
    before, rows = balances(engine)[WALLET]["cents"], _ledger(engine)
    refund = point.startswith("credit_notes")
    _killed_at(point, _REFUND if refund else _VOID, invoice["number"], fee, AT.isoformat())
    # nothing of the killed correction is there, and the wallet is as it was
    assert list_credit_notes(engine) == []
    assert (find_invoice(engine, invoice["number"]) or {})["status"] == "finalized"
    assert (balances(engine)[WALLET]["cents"], _ledger(engine)) == (before, rows)
    assert_balances_match_ledger(engine)
    if refund:  # the client's retry, same key: one note, one wallet correction
        retry = _issue(invoice, [(fee, 1000)], refund_amount_cents=1200, key="crash-trial")
        for _ in range(2):
            note = issue_credit_note(engine, retry, at=AT)
        assert len(list_credit_notes(engine)) == 1 and note["wallet_refund_amount_cents"] == 1200
        assert balances(engine)[WALLET]["cents"] == before + 1200
    else:  # the operator's rerun: voided once, the 4680 cents the wallet paid back once
        done = void_invoice(engine, invoice["number"], AT)
        assert done.restored_cents == 4680
        assert balances(engine)[WALLET]["cents"] == before + 4680
    assert _ledger(engine) > rows
    assert_balances_match_ledger(engine)
