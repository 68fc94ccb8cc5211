"""Why a running job stops at a checkpoint. Raised by ``JobContext.progress`` and let
through untouched by the GPU pipeline runner, so they live below both."""

from __future__ import annotations


class JobCancelled(Exception):
    """Raised at a checkpoint when the caller cancelled the running composition."""


class JobExpired(Exception):
    """Raised at a checkpoint when the composition ran past its ttl."""
