"""The pure webhook rules: Lago's envelope, its hmac signature (checked against an HMAC
computed here, independently), the backoff, and what an endpoint may say."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from decimal import Decimal

import pytest

from tallyflow.models.webhooks import (
    backoff,
    endpoint_errors,
    envelope,
    headers,
    normalize_event_types,
    signature,
)


def test_envelope_is_lagos() -> None:
    # lago-api spec/services/webhooks/base_service_spec.rb: payload keys
    # webhook_type, object_type, organization_id, <object_type>
    body = envelope("wallet_transaction.created", "org-1",
                    {"lago_id": "t1", "amount": Decimal("1.50"), "big": 2**70})
    parsed = json.loads(body)
    assert list(parsed) == ["webhook_type", "object_type", "organization_id",
                            "wallet_transaction"]
    assert parsed["object_type"] == "wallet_transaction"
    assert parsed["wallet_transaction"] == {"lago_id": "t1", "amount": "1.50",
                                            "big": str(2**70)}  # exact, never a float


def test_hmac_signature_verifies_with_an_independent_computation() -> None:
    # lago-api app/models/webhook.rb hmac_signature; spec/models/webhook_spec.rb
    body = envelope("invoice.created", "org", {"lago_id": "i1"})
    expected = base64.b64encode(hmac.new(b"secret", body, hashlib.sha256).digest()).decode()
    assert signature("secret", body) == expected
    sent = headers("secret", body, "uuid-1")
    assert sent["X-Lago-Signature"] == expected
    assert sent["X-Lago-Signature-Algorithm"] == "hmac"
    assert sent["X-Lago-Unique-Key"] == "uuid-1"
    assert signature("other", body) != expected


@pytest.mark.parametrize(("attempts", "seconds"), [
    (0, 0), (1, 30), (2, 60), (3, 120), (10, 15360), (11, 21600), (40, 21600),
])
def test_backoff_doubles_up_to_its_cap(attempts: int, seconds: int) -> None:
    assert backoff(attempts) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("fields", "creating", "errors"), [
    # app/models/webhook_endpoint.rb validations, spec/models/webhook_endpoint_spec.rb
    ({"webhook_url": "https://example.com/hook"}, True, {}),
    ({}, True, {"webhook_url": ["value_is_mandatory"]}),
    ({"webhook_url": "ftp://example.com"}, True, {"webhook_url": ["url_invalid"]}),
    ({"webhook_url": "not a url"}, True, {"webhook_url": ["url_invalid"]}),
    ({"webhook_url": "http://[bad/x"}, True, {"webhook_url": ["url_invalid"]}),
    ({"webhook_url": "http://:80/x"}, True, {"webhook_url": ["url_invalid"]}),
    ({"name": "x"}, False, {}),
    ({"webhook_url": "http://x", "signature_algo": "hmac"}, True, {}),
    ({"webhook_url": "http://x", "signature_algo": "jwt"}, True,
     {"signature_algo": ["unsupported_value"]}),
    ({"webhook_url": "http://x", "signature_algo": "md5"}, True,
     {"signature_algo": ["value_is_invalid"]}),
    ({"webhook_url": "http://x", "event_types": ["invoice.created", " Event.Error "]}, True, {}),
    ({"webhook_url": "http://x", "event_types": ["*"]}, True, {}),
    ({"webhook_url": "http://x", "event_types": None}, True, {}),
    ({"webhook_url": "http://x", "event_types": "invoice.created"}, True,
     {"event_types": ["must_be_array"]}),
    ({"webhook_url": "http://x", "event_types": ["customer.created"]}, True,
     {"event_types": ["invalid_types"]}),
    ({"webhook_url": "http://x", "secret": "s"}, True, {"secret": ["unknown_field"]}),
])
def test_endpoint_fields(fields: dict, creating: bool, errors: dict) -> None:
    assert endpoint_errors(fields, creating=creating) == errors


def test_event_types_normalised_as_lago() -> None:
    assert normalize_event_types([" Invoice.Created", "invoice.created", ""]) == [
        "invoice.created"]
    assert normalize_event_types(["*"]) is None
    assert normalize_event_types(None) is None
