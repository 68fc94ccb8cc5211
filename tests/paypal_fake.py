"""A loopback fake of PayPal's REST API, so the real paypalrestsdk and paypal-server-sdk
clients run against it: OAuth token, v1 payments (create, execute), Orders v2 (create,
capture) and verify-webhook-signature, with PayPal-Request-Id idempotency, error answers
(``fail`` = HTTP status for the next calls) and a timeout mode (``hang``: hold the answer
until the test releases it)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIGNING_KEY = b"fake-paypal-signing-key"


def canonical(event) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


class FakePayPal:
    def __init__(self, webhook_id="WH-TEST"):
        self.webhook_id = webhook_id
        self.lock = threading.Lock()
        self.payments, self.orders, self.by_request_id = {}, {}, {}
        self.calls = []
        self.fail = None  # an HTTP status to answer every non-token call with
        self.hang = threading.Event()  # set: hold answers until released
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # --- what a test does at "PayPal" --------------------------------------------------

    def approve(self, provider_id, payer_id="PAYER1"):
        """The payer approves on PayPal's page."""
        with self.lock:
            (self.payments.get(provider_id) or self.orders[provider_id])["approved_by"] = payer_id

    def sign(self, event, *, webhook_id=None) -> dict:
        """The transmission headers PayPal would send with ``event``."""
        tid = str(uuid.uuid4())
        when = "2026-12-03T12:00:00Z"
        sig = hmac.new(SIGNING_KEY, f"{tid}|{when}|{webhook_id or self.webhook_id}|".encode()
                       + canonical(event), hashlib.sha256).hexdigest()
        return {"PAYPAL-AUTH-ALGO": "SHA256withRSA", "PAYPAL-TRANSMISSION-ID": tid,
                "PAYPAL-TRANSMISSION-TIME": when, "PAYPAL-TRANSMISSION-SIG": sig,
                "PAYPAL-CERT-URL": "https://api.paypal.com/v1/notifications/certs/CERT-1"}

    def sale_of(self, provider_id):
        return self.payments[provider_id]["sale_id"]

    def capture_of(self, provider_id):
        return self.orders[provider_id]["capture_id"]

    # --- the HTTP side -----------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("PayPal-Debug-Id", "fake")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                fake.calls.append((path, dict(self.headers)))
                if path == "/v1/oauth2/token":
                    if not (self.headers.get("Authorization") or "").startswith("Basic "):
                        return self._send(401, {"error": "invalid_client"})
                    return self._send(200, {"access_token": "A21-fake", "token_type": "Bearer",
                                            "expires_in": 32400, "app_id": "APP-1"})
                if self.headers.get("Authorization") != "Bearer A21-fake":
                    return self._send(401, {"name": "AUTHENTICATION_FAILURE"})
                if fake.hang.is_set():
                    fake.release.wait(30)
                if fake.fail:
                    return self._send(fake.fail, {"name": "INTERNAL_SERVICE_ERROR",
                                                  "message": "An internal service error"})
                rid = self.headers.get("PayPal-Request-Id")
                with fake.lock:
                    if rid and (path, rid) in fake.by_request_id:
                        return self._send(*fake.by_request_id[(path, rid)])
                    status, body = fake.route(path, json.loads(raw or b"{}"))
                    if rid and status < 500:
                        fake.by_request_id[(path, rid)] = (status, body)
                return self._send(status, body)

        return Handler

    def route(self, path, body):
        if path == "/v1/payments/payment":
            pid = "PAYID-" + uuid.uuid4().hex[:20].upper()
            tx = body["transactions"][0]
            self.payments[pid] = {"amount": tx["amount"], "state": "created",
                                  "return_url": body["redirect_urls"]["return_url"]}
            return 201, {"id": pid, "intent": "sale", "state": "created",
                         "transactions": [{"amount": tx["amount"]}], "links": [
                             {"href": f"{self.url}/v1/payments/payment/{pid}", "rel": "self",
                              "method": "GET"},
                             {"href": f"https://www.sandbox.paypal.com/cgi-bin/webscr?cmd="
                                      f"_express-checkout&token=EC-{pid[6:]}",
                              "rel": "approval_url", "method": "REDIRECT"}]}
        m = re.fullmatch(r"/v1/payments/payment/([^/]+)/execute", path)
        if m:
            p = self.payments.get(m.group(1))
            if p is None:
                return 404, {"name": "INVALID_RESOURCE_ID", "message": "no such payment"}
            if p["state"] == "approved":
                return 400, {"name": "PAYMENT_ALREADY_DONE", "message": "already executed"}
            if p.get("approved_by") != body.get("payer_id"):
                return 400, {"name": "PAYMENT_NOT_APPROVED_FOR_EXECUTION",
                             "message": "Payer has not approved payment"}
            p["state"] = "approved"
            p["sale_id"] = p.get("sale_id") or "SALE-" + uuid.uuid4().hex[:12].upper()
            return 200, {"id": m.group(1), "state": "approved", "transactions": [{
                "amount": p["amount"], "related_resources": [{"sale": {
                    "id": p["sale_id"], "state": "completed", "amount": p["amount"],
                    "parent_payment": m.group(1)}}]}]}
        if path == "/v2/checkout/orders":
            oid = uuid.uuid4().hex[:17].upper()
            self.orders[oid] = {"amount": body["purchase_units"][0]["amount"],
                                "status": "CREATED", "return_url": body.get(
                                    "application_context", {}).get("return_url")}
            return 201, {"id": oid, "status": "CREATED", "links": [
                {"href": f"{self.url}/v2/checkout/orders/{oid}", "rel": "self", "method": "GET"},
                {"href": f"https://www.sandbox.paypal.com/checkoutnow?token={oid}",
                 "rel": "approve", "method": "GET"}]}
        m = re.fullmatch(r"/v2/checkout/orders/([^/]+)/capture", path)
        if m:
            o = self.orders.get(m.group(1))
            if o is None:
                return 404, {"name": "RESOURCE_NOT_FOUND", "message": "no such order"}
            if o["status"] == "COMPLETED":
                return 422, {"name": "UNPROCESSABLE_ENTITY", "details": [
                    {"issue": "ORDER_ALREADY_CAPTURED"}], "message": "already captured"}
            if not o.get("approved_by"):
                return 422, {"name": "UNPROCESSABLE_ENTITY", "details": [
                    {"issue": "ORDER_NOT_APPROVED"}], "message": "not approved"}
            o["status"] = "COMPLETED"
            o["capture_id"] = o.get("capture_id") or uuid.uuid4().hex[:17].upper()
            return 201, {"id": m.group(1), "status": "COMPLETED", "purchase_units": [{
                "reference_id": "default", "payments": {"captures": [{
                    "id": o["capture_id"], "status": "COMPLETED", "amount": o["amount"]}]}}]}
        if path == "/v1/notifications/verify-webhook-signature":
            expected = hmac.new(SIGNING_KEY, f"{body.get('transmission_id')}|"
                                f"{body.get('transmission_time')}|{body.get('webhook_id')}|"
                                .encode() + canonical(body.get("webhook_event")),
                                hashlib.sha256).hexdigest()
            good = body.get("webhook_id") == self.webhook_id and hmac.compare_digest(
                expected, str(body.get("transmission_sig")))
            return 200, {"verification_status": "SUCCESS" if good else "FAILURE"}
        return 404, {"name": "NOT_FOUND"}


def sale_completed(provider_id, sale_id, total, currency="USD"):
    return {"id": "WH-" + uuid.uuid4().hex, "event_type": "PAYMENT.SALE.COMPLETED",
            "resource_type": "sale", "resource": {
                "id": sale_id, "state": "completed", "parent_payment": provider_id,
                "amount": {"total": total, "currency": currency}}}


def capture_completed(order_id, capture_id, value, currency="USD"):
    return {"id": "WH-" + uuid.uuid4().hex, "event_type": "PAYMENT.CAPTURE.COMPLETED",
            "resource_type": "capture", "resource": {
                "id": capture_id, "status": "COMPLETED",
                "amount": {"value": value, "currency_code": currency},
                "supplementary_data": {"related_ids": {"order_id": order_id}}}}


def sale_refunded(provider_id, sale_id, total, currency="USD", refund_id=None):
    return {"id": "WH-" + uuid.uuid4().hex, "event_type": "PAYMENT.SALE.REFUNDED",
            "resource_type": "refund", "resource": {
                "id": refund_id or "REF-" + uuid.uuid4().hex[:10], "state": "completed",
                "sale_id": sale_id, "parent_payment": provider_id,
                "amount": {"total": total, "currency": currency}}}


def capture_reversed(capture_id):
    return {"id": "WH-" + uuid.uuid4().hex, "event_type": "PAYMENT.CAPTURE.REVERSED",
            "resource_type": "refund", "resource": {
                "id": "REV-" + uuid.uuid4().hex[:10], "status": "COMPLETED",
                "amount": {"value": "9.99", "currency_code": "USD"},
                "links": [{"rel": "up", "href":
                           f"https://api.paypal.com/v2/payments/captures/{capture_id}"}]}}


def capture_refunded(capture_id, value, currency="USD", refund_id=None):
    return {"id": "WH-" + uuid.uuid4().hex, "event_type": "PAYMENT.CAPTURE.REFUNDED",
            "resource_type": "refund", "resource": {
                "id": refund_id or "REF-" + uuid.uuid4().hex[:10], "status": "COMPLETED",
                "amount": {"value": value, "currency_code": currency},
                "links": [{"rel": "up", "href":
                           f"https://api.paypal.com/v2/payments/captures/{capture_id}"}]}}
