"""One error taxonomy for HTTP, request/reply, event consumers and reconcilers.

Logic raises these; each transport maps them in one place (the HTTP exception handler,
the RPC responder, the consumer wrapper, the controller's worker). A user sees
`{"error": {"code", "message"}}` with the status below, never a stack trace.

Whether a failure is worth retrying is decided here, once, by `is_permanent`:

- a **permanent** failure (`PermanentError`, or any 4xx such as `InvalidInput` or
  `NotFound`) cannot be fixed by trying again with the same input. A consumer
  dead-letters the event at once; a reconciler records the reason on the object and
  waits until the object changes.
- anything else is **temporary**: a consumer naks with backoff, a reconciler requeues
  with per-key exponential backoff. `TemporaryError(delay=...)` says how long to wait
  when the code knows better than the backoff (a build that is still running, a Job
  that has not started).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeGuard


class EkibenError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(EkibenError):
    """A request that cannot be read at all: a body that is not UTF-8, or too deeply nested."""

    status = 400
    code = "bad_request"


class InvalidInput(EkibenError):
    status = 422
    code = "invalid"


class Unauthorized(EkibenError):
    status = 401
    code = "unauthorized"


class Forbidden(EkibenError):
    status = 403
    code = "forbidden"


class NotFound(EkibenError):
    status = 404
    code = "not_found"


class Conflict(EkibenError):
    status = 409
    code = "conflict"


class TooLarge(EkibenError):
    status = 413
    code = "too_large"


class TooManyRequests(EkibenError):
    """Refused for now (too many failed attempts): retry after `retry_after` seconds."""

    status = 429
    code = "too_many_requests"

    def __init__(
        self, message: str, *, retry_after: int, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, retry_after)


class Unavailable(EkibenError):
    """A dependency is down or busy: the caller may retry."""

    status = 503
    code = "unavailable"


class TemporaryError(Unavailable):
    """Not done yet, or a fault that may pass: try again, after `delay` seconds if given.

    `reason` is a CamelCase word for a Kubernetes condition or event (`ImagePullBackOff`,
    `RegistryUnreachable`); the message says what happened for a person.
    """

    def __init__(
        self,
        message: str,
        *,
        delay: float | None = None,
        reason: str = "Retrying",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.delay = delay
        self.reason = reason


class PermanentError(EkibenError):
    """Retrying with the same input cannot help: record it and wait for a change.

    `reason` is a CamelCase word for a Kubernetes condition or event (`BentoNotFound`,
    `InvalidSpec`); the message says what to fix.
    """

    status = 422
    code = "permanent"

    def __init__(
        self, message: str, *, reason: str = "Failed", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.reason = reason


def is_permanent(exc: BaseException) -> TypeGuard[EkibenError]:
    """True when retrying `exc`'s operation unchanged cannot succeed (see the module)."""
    if isinstance(exc, PermanentError):
        return True
    return isinstance(exc, EkibenError) and not isinstance(exc, TemporaryError) and exc.status < 500


def retry_delay(exc: BaseException) -> float | None:
    """The delay a `TemporaryError` asks for; None means "use the caller's backoff"."""
    return exc.delay if isinstance(exc, TemporaryError) else None


ERRORS_BY_CODE: dict[str, type[EkibenError]] = {
    cls.code: cls
    for cls in (
        EkibenError,
        BadRequest,
        InvalidInput,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        Unavailable,
        PermanentError,
    )
}


def error_from_dict(body: dict[str, Any]) -> EkibenError:
    cls = ERRORS_BY_CODE.get(str(body.get("code")), EkibenError)
    return cls(str(body.get("message", "")), details=body.get("details"))
