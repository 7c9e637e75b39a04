"""kill -9 the billing of charges paid in advance between a fee and its wallet payment, then
rerun: each event's fee exists once, the wallet paid once, one invoice.

The child bills the hour with one failpoint armed (tallyflow/infra/failpoints.py) and must die
by SIGKILL there; since the fees, the invoice and the payment share one transaction, nothing of
it may be left; the rerun (twice) must leave what one uninterrupted run leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tallyflow.tasks.invoicing.advance.charges import bill_advance_charges
from tests.tasks.invoicing.test_advance_charges import DAY, events, fees, ledger
from tests.tasks.invoicing.test_invoicing import catalog, invoices
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, run_once

ROOT = Path(__file__).resolve().parents[2]
_CHILD = """
import sys
from datetime import datetime
from tallyflow.infra.resources import billing_engine
from tallyflow.tasks.invoicing.advance.charges import bill_advance_charges
bill_advance_charges(billing_engine(), datetime.fromisoformat(sys.argv[1]))
"""


@pytest.mark.parametrize(("point", "invoiceable"), [
    ("advance.fees_written", True),    # fees written, invoice and payment not yet
    ("advance.before_payment", True),  # the invoice drafted, the wallet not yet
    ("advance.before_seal", True),     # the wallet posted, the invoice not yet finalized
    ("advance.before_commit", False),  # fees kept off invoices, paid, not yet committed
])
def test_a_crash_between_a_fee_and_its_payment_bills_each_event_once(
    engine: Engine, tmp_path: Path, point: str, invoiceable: bool
) -> None:
    catalog(engine, tmp_path, charge={"pay_in_advance": True, "invoiceable": invoiceable})
    events(engine, tmp_path, ("e1", DAY, 2_000_000, "input"), ("e2", DAY, 2_000_000, "output"))
    at = DAY + timedelta(hours=1)
    run_once(engine, at)  # the hour's wallet flow opened the wallet
    env = {**os.environ, "TALLYFLOW_FAILPOINTS": f"{point}=1"}
    child = subprocess.run([sys.executable, "-c", _CHILD, at.isoformat()], env=env,
                           capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert fees(engine) == [] and ledger(engine) == [] and invoices(engine) == []
    bill_advance_charges(engine, at)
    bill_advance_charges(engine, at)
    assert fees(engine) == [("e1", 200, 220), ("e2", 600, 660)]
    key = "invoice" if invoiceable else "advance"
    assert ledger(engine) == [("invoice", key, 880)]
    assert len(invoices(engine)) == (1 if invoiceable else 0)
    assert_balances_match_ledger(engine)
