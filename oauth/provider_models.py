"""OAuth2 provider tables (clients, codes, tokens)."""

ALL_MODELS: list = []
