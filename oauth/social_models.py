"""Tables for identities linked by social login."""

ALL_MODELS: list = []
