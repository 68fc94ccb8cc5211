"""Payment providers: PayPal's v1 Payments API (``paypalrestsdk``) and its Orders v2 API
(``paypal-server-sdk``), behind one small interface, chosen by ``PAYMENT_PROVIDER``.

A provider knows nothing of accounts or the ledger: it creates a payment for a credit
pack (returning the payer's approval URL), captures an approved one, and verifies a
webhook's signature through PayPal's ``verify-webhook-signature`` call. Every call that
changes something at PayPal carries a ``PayPal-Request-Id`` derived from our payment row,
so a retried call (ours, or a client's repeated execute) is answered with the first
result instead of acting twice. Failures become domain errors: PayPal refusing the
request (4xx) is 400 ``INVALID_REQUEST``, PayPal down or answering 5xx is 503
``SERVICE_UNAVAILABLE``, a call past ``PAYPAL_TIMEOUT_SECONDS`` is 504 ``GATEWAY_TIMEOUT``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Protocol

import requests

from core.config import CreditPack, PaymentConfig
from core.errors import DomainError, InvalidRequest, ServiceUnavailable

log = logging.getLogger("metering.payments")

# The transmission headers PayPal signs a webhook with (case-insensitive on the wire).
WEBHOOK_HEADERS = {
    "auth_algo": "PAYPAL-AUTH-ALGO",
    "cert_url": "PAYPAL-CERT-URL",
    "transmission_id": "PAYPAL-TRANSMISSION-ID",
    "transmission_sig": "PAYPAL-TRANSMISSION-SIG",
    "transmission_time": "PAYPAL-TRANSMISSION-TIME",
}


class ProviderTimeout(DomainError):
    code = "GATEWAY_TIMEOUT"
    message = ("PayPal did not answer in time; retry: a payment is never captured or "
               "credited twice")


class ProviderUnavailable(ServiceUnavailable):
    message = "PayPal is unavailable; try again shortly"


class ProviderRefused(InvalidRequest):
    message = "PayPal refused the request"


@dataclasses.dataclass(frozen=True)
class Created:
    provider_id: str  # the v1 payment id (PAYID-...) or the Orders v2 order id
    approval_url: str


@dataclasses.dataclass(frozen=True)
class Captured:
    capture_id: str  # the v1 sale id or the v2 capture id
    amount: str
    currency: str
    completed: bool  # False: PayPal holds it (pending); the COMPLETED webhook credits it


class PaymentProvider(Protocol):
    name: str

    def create(self, pack: CreditPack, *, reference: str, request_id: str,
               return_url: str | None = None, cancel_url: str | None = None) -> Created: ...

    def capture(self, provider_id: str, payer_id: str, *, request_id: str) -> Captured: ...

    def verify_webhook(self, headers: dict, raw_body: bytes) -> bool: ...


def _refused(status, content) -> ProviderRefused:
    try:
        body = json.loads(content) if isinstance(content, (str, bytes)) else (content or {})
    except ValueError:
        body = {}
    name = (body.get("name") or body.get("error") or "") if isinstance(body, dict) else ""
    text = (body.get("message") or body.get("error_description") or "") \
        if isinstance(body, dict) else ""
    return ProviderRefused(f"PayPal refused the request ({status} {name}): {text}".strip(),
                           details=[{"field": "paypal", "problem": str(name or status)}])


class _Base:
    name = ""

    def __init__(self, config: PaymentConfig, public_base_url: str = ""):
        self.config = config
        base = public_base_url.rstrip("/")
        self.return_url = config.return_url or f"{base}/paypal/return"
        self.cancel_url = config.cancel_url or f"{base}/paypal/cancel"
        self._token = None
        self._token_until = 0.0
        self._lock = threading.Lock()

    def _access_token(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._token_until:
                return self._token
        answer = self._post(f"{self.config.base_url}/v1/oauth2/token",
                            data={"grant_type": "client_credentials"},
                            auth=(self.config.client_id, self.config.client_secret))
        body = answer.json()
        with self._lock:
            self._token = body["access_token"]
            self._token_until = time.monotonic() + max(0, int(body.get("expires_in", 0)) - 60)
            return self._token

    def _call(self, fn):
        """Run one PayPal call, its transport failures as our errors (timeout: 504; no
        answer: 503) and the SDK's own errors through ``_sdk_error``."""
        try:
            return fn()
        except requests.Timeout:
            raise ProviderTimeout() from None
        except requests.RequestException:
            raise ProviderUnavailable() from None
        except Exception as exc:
            mapped = self._sdk_error(exc)
            if mapped is None:
                raise
            raise mapped from None

    def _sdk_error(self, exc) -> Exception | None:
        """The public error for an SDK exception, or None to let it through."""
        return None

    def _post(self, url, **kwargs) -> requests.Response:
        answer = self._call(lambda: requests.post(url, timeout=self.config.timeout_s, **kwargs))
        if answer.status_code >= 500:
            raise ProviderUnavailable(f"PayPal answered {answer.status_code}")
        if answer.status_code >= 400:
            raise _refused(answer.status_code, answer.text)
        return answer

    def verify_webhook(self, headers: dict, raw_body: bytes) -> bool:
        """PayPal's own verdict on a webhook: ``POST /v1/notifications/verify-webhook-
        signature`` with the transmission headers and the body exactly as received."""
        if not self.config.webhook_id:
            return False
        given = {k.upper(): v for k, v in headers.items()}
        fields = {key: given.get(header) for key, header in WEBHOOK_HEADERS.items()}
        if not all(fields.values()):
            return False
        try:
            json.loads(raw_body)
        except ValueError:
            return False
        # The event goes in as received, byte for byte: re-serialising it would change
        # what PayPal signed.
        head = json.dumps({**fields, "webhook_id": self.config.webhook_id})
        payload = head[:-1] + ', "webhook_event": ' + raw_body.decode("utf-8") + "}"
        answer = self._post(f"{self.config.base_url}/v1/notifications/verify-webhook-signature",
                            data=payload.encode("utf-8"),
                            headers={"Authorization": f"Bearer {self._access_token()}",
                                     "Content-Type": "application/json"})
        return answer.json().get("verification_status") == "SUCCESS"


class PayPalV1(_Base):
    """The v1 Payments flow on ``paypalrestsdk`` (deprecated upstream; see docs/PAYMENTS.md):
    ``POST /v1/payments/payment`` gives the ``approval_url``; PayPal redirects the payer
    back with ``paymentId`` and ``PayerID``; ``POST .../{paymentId}/execute`` captures."""

    name = "paypal-v1"

    def __init__(self, config: PaymentConfig, public_base_url: str = ""):
        super().__init__(config, public_base_url)
        import paypalrestsdk
        from paypalrestsdk.resource import Resource

        timeout = config.timeout_s

        class TimedApi(paypalrestsdk.Api):
            # paypalrestsdk passes no timeout to requests; a hung PayPal must not hang us.
            def http_call(self, url, method, **kwargs):
                kwargs.setdefault("timeout", timeout)
                return super().http_call(url, method, **kwargs)

        self.sdk, self.resource = paypalrestsdk, Resource
        self.api = TimedApi(mode=config.mode, client_id=config.client_id,
                            client_secret=config.client_secret, endpoint=config.base_url)

    def _sdk_error(self, exc):
        from paypalrestsdk import exceptions as errors

        if isinstance(exc, errors.ServerError):
            return ProviderUnavailable(f"PayPal answered {exc.response.status_code}")
        if isinstance(exc, errors.ConnectionError):  # paypalrestsdk's name for a 4xx
            return _refused(getattr(exc.response, "status_code", "error"), exc.content)
        return None

    def create(self, pack, *, reference, request_id, return_url=None, cancel_url=None):
        payment = self.sdk.Payment({
            "intent": "sale",
            "payer": {"payment_method": "paypal"},
            "redirect_urls": {"return_url": return_url or self.return_url,
                              "cancel_url": cancel_url or self.cancel_url},
            "transactions": [{
                "amount": {"total": pack.amount, "currency": pack.currency},
                "description": f"{pack.credits} credits",
                "custom": reference, "invoice_number": reference,
            }],
        }, api=self.api)
        payment.request_id = request_id
        if not self._call(payment.create):
            raise _refused(400, payment.error)
        links = [link for link in (payment.links or []) if link.rel == "approval_url"]
        if not payment.id or not links:
            raise ProviderUnavailable("PayPal's answer had no approval_url")
        return Created(payment.id, links[0].href)

    def capture(self, provider_id, payer_id, *, request_id):
        payment = self.sdk.Payment({"id": provider_id}, api=self.api)
        attributes = self.resource({"payer_id": payer_id}, api=self.api)
        attributes.request_id = request_id
        if not self._call(lambda: payment.execute(attributes)):
            raise _refused(400, payment.error)
        try:
            transaction = payment.transactions[0]
            sale = transaction.related_resources[0].sale
            return Captured(sale.id, transaction.amount.total, transaction.amount.currency,
                            completed=sale.state == "completed")
        except (TypeError, IndexError, AttributeError):
            raise ProviderUnavailable("PayPal's execute answer had no sale") from None


class PayPalOrders(_Base):
    """The Orders v2 flow on ``paypal-server-sdk`` (PayPal's maintained SDK): ``POST
    /v2/checkout/orders`` gives the ``approve`` link; PayPal redirects the payer back with
    ``token`` (the order id, sent to execute as ``paymentId``) and ``PayerID``;
    ``POST /v2/checkout/orders/{id}/capture`` captures."""

    name = "paypal-orders"

    def __init__(self, config: PaymentConfig, public_base_url: str = ""):
        super().__init__(config, public_base_url)
        from paypalserversdk.configuration import Configuration, Environment
        from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
        from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

        base_url = config.base_url

        class PointedConfiguration(Configuration):
            # The SDK knows only PayPal's two hosts; PAYPAL_BASE_URL may name another
            # (a regional proxy, or the loopback fake in tests).
            def get_base_uri(self, server=None):
                return base_url

        environment = Environment.PRODUCTION if config.mode == "live" else Environment.SANDBOX
        self.client = PaypalServersdkClient(config=PointedConfiguration(
            timeout=config.timeout_s, max_retries=0, environment=environment,
            client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
                o_auth_client_id=config.client_id,
                o_auth_client_secret=config.client_secret)))

    def _sdk_error(self, exc):
        from paypalserversdk.exceptions.api_exception import ApiException

        if not isinstance(exc, ApiException):
            return None
        if exc.response_code >= 500:
            return ProviderUnavailable(f"PayPal answered {exc.response_code}")
        return _refused(exc.response_code, getattr(exc.response, "text", ""))

    def create(self, pack, *, reference, request_id, return_url=None, cancel_url=None):
        from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
        from paypalserversdk.models.checkout_payment_intent import CheckoutPaymentIntent
        from paypalserversdk.models.order_application_context import OrderApplicationContext
        from paypalserversdk.models.order_request import OrderRequest
        from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest

        body = OrderRequest(
            intent=CheckoutPaymentIntent.CAPTURE,
            purchase_units=[PurchaseUnitRequest(
                amount=AmountWithBreakdown(currency_code=pack.currency, value=pack.amount),
                custom_id=reference, invoice_id=reference,
                description=f"{pack.credits} credits")],
            application_context=OrderApplicationContext(
                return_url=return_url or self.return_url,
                cancel_url=cancel_url or self.cancel_url))
        answer = self._call(lambda: self.client.orders.create_order(
            {"body": body, "paypal_request_id": request_id, "prefer": "return=minimal"}))
        order = answer.body
        links = [link.href for link in (getattr(order, "links", None) or [])
                 if link.rel in ("approve", "payer-action")]
        if not getattr(order, "id", None) or not links:
            raise ProviderUnavailable("PayPal's answer had no approve link")
        return Created(order.id, links[0])

    def capture(self, provider_id, payer_id, *, request_id):
        answer = self._call(lambda: self.client.orders.capture_order(
            {"id": provider_id, "paypal_request_id": request_id,
             "prefer": "return=representation"}))
        try:
            capture = answer.body.purchase_units[0].payments.captures[0]
            return Captured(capture.id, capture.amount.value, capture.amount.currency_code,
                            completed=capture.status == "COMPLETED")
        except (TypeError, IndexError, AttributeError):
            raise ProviderUnavailable("PayPal's capture answer had no capture") from None


def build_provider(config: PaymentConfig, public_base_url: str = "") -> PaymentProvider | None:
    """The configured provider, or None when payments are not configured."""
    if not config.enabled:
        return None
    if config.provider == "paypal-orders":
        return PayPalOrders(config, public_base_url)
    return PayPalV1(config, public_base_url)
