"""Domain errors, each naming the public error code of CONTRACT section 1.

They know nothing of HTTP: ``gateway.errors`` maps ``code`` to a status in one place.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "INTERNAL_ERROR"
    message = "Internal error"

    def __init__(self, message=None, details=None, retry_after=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or []
        self.retry_after = retry_after


class InvalidRequest(DomainError):
    code = "INVALID_REQUEST"
    message = "The request is invalid"


class NotFound(DomainError):
    code = "NOT_FOUND"
    message = "Not found"


class Forbidden(DomainError):
    code = "FORBIDDEN"
    message = "You are not allowed to do this"


class Conflict(DomainError):
    code = "CONFLICT"
    message = "The resource already exists"


class InsufficientCredits(DomainError):
    code = "INSUFFICIENT_CREDITS"
    message = "You have insufficient credits to perform this action"


class IdempotencyInProgress(DomainError):
    code = "IDEMPOTENCY_IN_PROGRESS"
    message = "A request with this Idempotency-Key is still being processed"


class IdempotencyKeyReused(DomainError):
    code = "IDEMPOTENCY_KEY_REUSED"
    message = "This Idempotency-Key was used with a different request"


class RateLimited(DomainError):
    code = "RATE_LIMITED"
    message = "Rate limit exceeded"


class AuthError(DomainError):
    """A credential problem; ``code`` is one of the 401 codes."""

    code = "AUTH_FAILED"
    message = "Authentication failed"

    def __init__(self, code="AUTH_FAILED", message=None):
        super().__init__(message)
        self.code = code


class ServiceUnavailable(DomainError):
    code = "SERVICE_UNAVAILABLE"
    message = "A backend service is unavailable"


class InvalidAction(NotFound):
    code = "INVALID_ACTION"
    message = "No such action"


class MissingAction(InvalidRequest):
    code = "MISSING_ACTION"
    message = "No action named: call POST /zapier/v1/{action}"


class PayloadTooLarge(DomainError):
    code = "PAYLOAD_TOO_LARGE"
    message = "The request body is too large"


class UnsupportedMediaType(DomainError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    message = "Unsupported media type"


class RangeNotSatisfiable(DomainError):
    """A ``Range`` that starts past the end of the content; ``size`` is its length."""

    code = "RANGE_NOT_SATISFIABLE"

    def __init__(self, size: int):
        super().__init__(f"The requested range is outside the content's {size} bytes",
                         details=[{"field": "Range", "problem": f"must start below {size}"}])
        self.size = size


class PreconditionFailed(DomainError):
    """A protocol precondition the request does not meet (tus: an unsupported version)."""

    code = "PRECONDITION_FAILED"


class Gone(DomainError):
    """It existed and has expired (a resumable upload past its expiry)."""

    code = "GONE"


class Locked(DomainError):
    """Another request is changing the same thing right now (a concurrent tus PATCH)."""

    code = "LOCKED"


class ChecksumMismatch(DomainError):
    """The bytes sent do not match the checksum sent with them (tus checksum extension)."""

    code = "CHECKSUM_MISMATCH"
