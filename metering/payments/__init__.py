"""Buying credits: the payment providers (PayPal v1 Payments and Orders v2), the payment
rows, and the exactly-once rule that turns a capture into one ``purchase`` ledger row
(docs/PAYMENTS.md)."""
