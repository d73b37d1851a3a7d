"""A local stand-in for Stripe: an HTTP server on 127.0.0.1 and self-signed webhook events.

Nothing here talks to the internet. The server records every request the ``stripe`` library
sends so tests can assert exactly what would have gone to Stripe.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

WEBHOOK_SECRET = "whsec_test_secret_for_mjgate"
_ids = itertools.count(1)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeStripe:
    """Answers ``POST /v1/checkout/sessions``, ``POST /v1/billing_portal/sessions`` and
    ``GET /v1/prices/<id>`` like Stripe does (the fields we read)."""

    requests: list[RecordedRequest] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status and a Stripe error
    #: Prices ``GET /v1/prices/<id>`` knows: id -> (unit amount, currency, interval).
    prices: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                form = dict(parse_qsl(body, keep_blank_values=True))
                fake.requests.append(
                    RecordedRequest(
                        method="POST",
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        form=form,
                    )
                )
                if fake.fail_with is not None:
                    self._send(
                        fake.fail_with,
                        {"error": {"type": "api_error", "message": "Something went wrong."}},
                    )
                    return
                if self.path == "/v1/billing_portal/sessions":
                    portal_id = f"bps_test_{next(_ids):06d}"
                    self._send(
                        200,
                        {
                            "id": portal_id,
                            "object": "billing_portal.session",
                            "customer": form.get("customer"),
                            "return_url": form.get("return_url"),
                            "url": f"https://billing.stripe.test/p/session/{portal_id}",
                        },
                    )
                    return
                if self.path == "/v1/checkout/sessions":
                    session_id = f"cs_test_{next(_ids):06d}"
                    self._send(
                        200,
                        {
                            "id": session_id,
                            "object": "checkout.session",
                            "mode": form.get("mode"),
                            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                            "client_reference_id": form.get("client_reference_id"),
                            "payment_status": "unpaid",
                            "status": "open",
                        },
                    )
                    return
                self._send(404, {"error": {"type": "invalid_request_error", "message": "?"}})

            def do_GET(self) -> None:
                fake.requests.append(
                    RecordedRequest(
                        method="GET",
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        form={},
                    )
                )
                price_id = self.path.split("?", 1)[0].removeprefix("/v1/prices/")
                if self.path.startswith("/v1/prices/") and price_id in fake.prices:
                    amount, currency, interval = fake.prices[price_id]
                    self._send(
                        200,
                        {
                            "id": price_id,
                            "object": "price",
                            "unit_amount": amount,
                            "currency": currency,
                            "recurring": {"interval": interval},
                        },
                    )
                    return
                self._send(404, {"error": {"type": "invalid_request_error", "message": "?"}})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", "req_fake")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header: ``t=<ts>,v1=HMAC-SHA256(secret, "<ts>.<payload>")``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(
    event_type: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_test_{next(_ids):06d}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()) if created is None else created,
            "livemode": False,
            "api_version": "2024-06-20",
            "data": {"object": obj},
        }
    ).encode()


def checkout_session(
    session_id: str,
    *,
    organization_id: int,
    package_id: int | None = None,
    tokens: int | None = None,
    payment_status: str = "paid",
    payment_intent: str = "pi_test_1",
    mode: str = "payment",
    **extra: Any,
) -> dict[str, Any]:
    metadata = {"organization_id": str(organization_id)}
    if package_id is not None:
        metadata["package_id"] = str(package_id)
    if tokens is not None:
        metadata["tokens"] = str(tokens)
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": mode,
        "client_reference_id": str(organization_id),
        "payment_status": payment_status,
        "status": "complete",
        "payment_intent": payment_intent if mode == "payment" else None,
        "customer": "cus_test_1",
        "amount_total": 1400,
        "currency": "cny",
        "metadata": metadata,
        **extra,
    }


def subscription(
    subscription_id: str,
    *,
    price_id: str,
    status: str = "active",
    organization_id: int | None = None,
    customer: str = "cus_test_1",
) -> dict[str, Any]:
    return {
        "id": subscription_id,
        "object": "subscription",
        "status": status,
        "customer": customer,
        "metadata": {"organization_id": str(organization_id)} if organization_id else {},
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price_id}}]},
    }


def charge(
    charge_id: str, *, payment_intent: str, amount: int, amount_refunded: int
) -> dict[str, Any]:
    return {
        "id": charge_id,
        "object": "charge",
        "payment_intent": payment_intent,
        "amount": amount,
        "amount_refunded": amount_refunded,
        "currency": "cny",
        "refunded": amount_refunded >= amount,
    }


def dispute_balance_transaction(
    txn_id: str, *, dispute_id: str, charge_id: str, amount: int, currency: str = "cny"
) -> dict[str, Any]:
    """A dispute's balance transaction as Stripe lists it on the dispute: the withdrawal is
    negative (with the dispute fee), a reinstatement positive. ``amount`` is in the account's
    settlement currency, which need not be the charge's."""
    now = int(time.time())
    withdrawal = amount < 0
    fee = 1500 if withdrawal else 0
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "created": now,
        "currency": currency,
        "description": (
            f"Chargeback withdrawal for {charge_id}"
            if withdrawal
            else f"Chargeback reversal for {charge_id}"
        ),
        "exchange_rate": None,
        "fee": fee,
        "fee_details": (
            [
                {
                    "amount": fee,
                    "application": None,
                    "currency": currency,
                    "description": "Dispute fee",
                    "type": "stripe_fee",
                }
            ]
            if fee
            else []
        ),
        "net": amount - fee,
        "reporting_category": "dispute" if withdrawal else "dispute_reversal",
        "source": dispute_id,
        "status": "pending" if withdrawal else "available",
        "type": "adjustment",
    }


def dispute(
    dispute_id: str,
    *,
    charge: str,
    payment_intent: str | None,
    amount: int,
    currency: str = "cny",
    status: str = "needs_response",
    reason: str = "fraudulent",
    withdrawn: int | None = None,
    reinstated: int | None = None,
    settlement_currency: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A ``dispute`` object (``dp_…``) as ``charge.dispute.*`` events carry it.

    ``withdrawn``/``reinstated``: the amounts of its withdrawal and reinstatement balance
    transactions (positive numbers, in ``settlement_currency``, the charge's by default), listed
    as Stripe lists them once the funds moved; None leaves them out."""
    created = int(time.time()) if created is None else created
    settlement = settlement_currency or currency
    suffix = dispute_id.removeprefix("dp_")
    transactions = []
    if withdrawn is not None:
        transactions.append(
            dispute_balance_transaction(
                f"txn_w{suffix}",
                dispute_id=dispute_id,
                charge_id=charge,
                amount=-withdrawn,
                currency=settlement,
            )
        )
    if reinstated is not None:
        transactions.append(
            dispute_balance_transaction(
                f"txn_r{suffix}",
                dispute_id=dispute_id,
                charge_id=charge,
                amount=reinstated,
                currency=settlement,
            )
        )
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": transactions,
        "charge": charge,
        "created": created,
        "currency": currency,
        "evidence": {
            "access_activity_log": None,
            "billing_address": None,
            "customer_email_address": None,
            "customer_name": None,
            "product_description": None,
            "uncategorized_text": None,
        },
        "evidence_details": {
            "due_by": created + 7 * 24 * 3600,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "payment_method_details": {
            "card": {"brand": "visa", "network_reason_code": "10.4"},
            "type": "card",
        },
        "reason": reason,
        "status": status,
    }
