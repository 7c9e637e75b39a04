"""Lago's own per-token template ("Clone Mistral pricing"), its Python and JavaScript tabs run
unchanged against a real `tallyflow api` (tests/fixtures/lago_templates/, verbatim with its
source). Only what the template leaves to the reader changes: the key and URL of the setup
line, and the ``__PLACEHOLDER__`` codes. Then the numbers: 2,000,000 mistral-small input
tokens at $1 per package of 1M are 200 cents in current usage, and the wallet holds the
template's credits.

The JavaScript tab needs ``lago-javascript-client`` from npm (pinned by the committed
``package-lock.json``), installed once into a cache folder by ``npm ci``: ``live`` (it needs
the registry the first time, and node)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.tallyflow.api.conftest import LiveApi

TEMPLATES = Path(__file__).parents[2] / "fixtures" / "lago_templates"
PLACEHOLDERS = {
    "__BILLABLE_METRIC_CODE__": "mistral_tokens",
    "__PLAN_CODE__": "mistral_per_token",
    "__EXTERNAL_CUSTOMER_ID__": "acme_ai",
    "__EXTERNAL_SUBSCRIPTION_ID__": "sub_acme_ai",
}
PY_SETUP = "client = Client(api_key='__API_KEY__')"
JS_SETUP = "const client = Client('__API_KEY__');"
JS_CACHE = Path(
    os.environ.get("LAGO_TEMPLATES_NPM_CACHE", Path.home() / ".cache" / "tallyflow-npm")
)


def steps(code: str, setup: str, replacement: str, transaction: str) -> list[str]:
    """The template's steps (setup, metric, plan, ...), the reader's values filled in, except
    ``__BILLABLE_METRIC_ID__``: the metric's ``lago_id``, known once the metric exists."""
    assert code.count(setup) == 1, f"the template's setup line changed: {setup}"
    code = code.replace(setup, replacement)
    for placeholder, value in {**PLACEHOLDERS, "__TRANSACTION_ID__": transaction}.items():
        code = code.replace(placeholder, value)
    assert "__" not in code.replace("__BILLABLE_METRIC_ID__", ""), "a placeholder is left"
    parts = re.split(r"^(?=(?:#|//) --- )", code, flags=re.M)
    return [part for part in parts if part.strip()]


def metric_id(server: LiveApi, key: str) -> str:
    import httpx

    answer = httpx.get(
        f"{server.url}/api/v1/billable_metrics/mistral_tokens",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["billable_metric"]["lago_id"])


def check_usage(usage: dict[str, Any]) -> None:
    """2M mistral-small input tokens: two packages of 1M at $1 (Lago's package model)."""
    assert usage["amount_cents"] == 200 and usage["currency"] == "USD", usage
    [charge] = usage["charges_usage"]
    assert Decimal(str(charge["units"])) == 2_000_000, charge
    small_input = [
        f
        for f in charge["filters"]
        if f["values"] == {"model": ["mistral-small"], "type": ["input"]}
    ]
    assert [f["amount_cents"] for f in small_input] == [200], charge["filters"]


def wait_usage(fetch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The event counts once its object is loaded (about a second after the 200)."""
    import time

    deadline = time.monotonic() + 30
    while True:
        usage = fetch()
        if usage["amount_cents"] == 200 or time.monotonic() > deadline:
            return usage
        time.sleep(0.2)


def test_lagos_python_template_runs_unchanged(
    live_api: Callable[..., LiveApi], api_key: str
) -> None:
    server = live_api()
    parts = steps(
        (TEMPLATES / "mistral.py").read_text(),
        PY_SETUP,
        f"client = Client(api_key={api_key!r}, api_url={server.url + '/'!r})",
        "chatcmpl-py-1",
    )
    scope: dict[str, Any] = {}
    for index, part in enumerate(parts):
        if index == 2:  # the plan names the metric created by the step before
            part = part.replace("__BILLABLE_METRIC_ID__", metric_id(server, api_key))
        exec(compile(part, str(TEMPLATES / "mistral.py"), "exec"), scope)
    client = scope["client"]
    usage = wait_usage(lambda: client.customers.current_usage("acme_ai", "sub_acme_ai").dict())
    check_usage(usage)
    [wallet] = client.wallets.find_all({"external_customer_id": "acme_ai"})["wallets"]
    assert (wallet.name, wallet.currency, Decimal(wallet.rate_amount)) == ("AI Credits", "USD", 1)
    assert Decimal(str(wallet.credits_balance)) == 25  # granted now; paid once paid


def npm_installed() -> Path:
    """``lago-javascript-client`` as the lock file pins it, in the cache folder."""
    target = JS_CACHE / "lago-template-js"
    lock = (TEMPLATES / "js" / "package-lock.json").read_text()
    if (
        (target / "package-lock.json").exists()
        and (target / "package-lock.json").read_text() == lock
        and (target / "node_modules" / "lago-javascript-client").exists()
    ):
        return target
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(TEMPLATES / "js" / name, target / name)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=target,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def run_node(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = folder / "mistral.mjs"
    script.write_text(code)
    ran = subprocess.run(
        ["node", str(script)], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


@pytest.mark.live  # npm ci from the registry the first time, and node
def test_lagos_javascript_template_runs_unchanged(
    live_api: Callable[..., LiveApi], api_key: str
) -> None:
    folder = npm_installed()
    server = live_api()
    setup = (
        f"const client = Client({json.dumps(api_key)}, "
        f"{{ baseUrl: {json.dumps(server.url + '/api/v1')} }});"
    )
    parts = steps((TEMPLATES / "js" / "mistral.mjs").read_text(), JS_SETUP, setup, "chatcmpl-js-1")
    run_node(folder, "".join(parts[:2]))  # setup and the metric
    rest = "".join(parts[2:]).replace("__BILLABLE_METRIC_ID__", metric_id(server, api_key))
    # the template ends with the usage in `customerUsage`; the test also reads the wallet
    ran = run_node(
        folder,
        parts[0]
        + rest
        + (
            "\nconst wallets = await client.wallets.findAllWallets("
            "{ external_customer_id: 'acme_ai' });\n"
            "console.log(JSON.stringify({ wallets: wallets.data }));\n"
        ),
    )
    [wallet] = json.loads(ran.stdout.strip().splitlines()[-1])["wallets"]["wallets"]
    assert (wallet["name"], wallet["currency"]) == ("AI Credits", "USD")
    assert Decimal(str(wallet["credits_balance"])) == 25

    import httpx

    usage = wait_usage(
        lambda: httpx.get(
            f"{server.url}/api/v1/customers/acme_ai/current_usage",
            params={"external_subscription_id": "sub_acme_ai"},
            headers={"Authorization": f"Bearer {api_key}"},
        ).json()["customer_usage"]
    )
    check_usage(usage)
