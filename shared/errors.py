"""One error taxonomy for HTTP, request/reply and reconcilers.

Logic raises these; each transport maps them in one place (the HTTP exception handler,
the RPC responder, the consumer wrapper). A user sees `{"error": {"code", "message"}}`
with the status below, never a stack trace.
"""

from __future__ import annotations

from typing import Any, ClassVar


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


class Unavailable(EkibenError):
    """A dependency is down or busy: the caller may retry."""

    status = 503
    code = "unavailable"


ERRORS_BY_CODE: dict[str, type[EkibenError]] = {
    cls.code: cls
    for cls in (
        EkibenError,
        InvalidInput,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        Unavailable,
    )
}


def error_from_dict(body: dict[str, Any]) -> EkibenError:
    cls = ERRORS_BY_CODE.get(str(body.get("code")), EkibenError)
    return cls(str(body.get("message", "")), details=body.get("details"))
