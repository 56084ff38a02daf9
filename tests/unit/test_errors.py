"""The error taxonomy's one retry rule."""

from __future__ import annotations

import pytest

from shared.errors import (
    Conflict,
    EkibenError,
    InvalidInput,
    NotFound,
    PermanentError,
    TemporaryError,
    Unavailable,
    error_from_dict,
    is_permanent,
    retry_delay,
)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (PermanentError("bento gone", reason="BentoNotFound"), True),
        (InvalidInput("bad"), True),
        (NotFound("missing"), True),
        (Conflict("taken"), True),
        (TemporaryError("building", delay=5), False),
        (Unavailable("db down"), False),
        (EkibenError("bug"), False),
        (RuntimeError("anything else"), False),
    ],
)
def test_what_retrying_cannot_fix_is_permanent(error: BaseException, permanent: bool) -> None:
    assert is_permanent(error) is permanent


def test_a_temporary_error_may_name_its_delay() -> None:
    assert retry_delay(TemporaryError("not yet", delay=2.5)) == 2.5
    assert retry_delay(TemporaryError("not yet")) is None
    assert retry_delay(Unavailable("down")) is None


def test_errors_cross_the_wire_as_the_same_kind() -> None:
    error = PermanentError("no such bento", reason="BentoNotFound")
    again = error_from_dict(error.to_dict())
    assert type(again) is PermanentError
    assert again.message == "no such bento"
    assert type(error_from_dict({"code": "nonsense", "message": "x"})) is EkibenError
