"""Tables for password bearer tokens and account settings."""

ALL_MODELS: list = []
