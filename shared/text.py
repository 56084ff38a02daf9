"""One rule for text that comes from outside: it must be text PostgreSQL can store.

PostgreSQL's `text` and `jsonb` cannot hold a NUL character (U+0000) and the UTF-8 it
speaks has no lone surrogates (U+D800 to U+DFFF, which a JSON `\\ud800` escape can make).
Such a string reaching the database is a driver error, which a caller would see as a 500.
So it is refused where input enters, once per transport, not field by field:

- bodies: every request model derives from `StorableText` (the gateway's lenient bodies,
  the registry's command contract), whose one validator walks the whole input, keys and
  values at any depth (labels, manifests, names, reasons), and refuses it with the
  location of the first bad string;
- URLs: `shared.http.RejectUnstorableUrl` refuses a path or query with a NUL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Self

from pydantic import BaseModel, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

Location = tuple[str | int, ...]

NUL_MESSAGE = "NUL characters (\\u0000) are not allowed in text"
SURROGATE_MESSAGE = "text must be valid Unicode: lone surrogates (\\ud800-\\udfff) are not allowed"


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store `value`, or None when it can."""
    if "\x00" in value:
        return NUL_MESSAGE
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_MESSAGE
    return None


def _walk(value: Any) -> Iterator[tuple[Location, str, bool]]:
    """Every string in a JSON-like tree: (where, the string, whether it is a key).

    Iterative, so a deeply nested input cannot exhaust the stack here.
    """
    stack: list[tuple[Location, Any]] = [((), value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            yield where, node, False
        elif isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str):
                    yield (*where, key), key, True
                stack.append(((*where, key), item))
        elif isinstance(node, list | tuple):
            stack.extend(((*where, i), item) for i, item in enumerate(node))


def unstorable_text(value: Any) -> tuple[Location, str] | None:
    """The location and reason of the first string in `value` PostgreSQL cannot store."""
    for where, text, is_key in _walk(value):
        problem = text_problem(text)
        if problem is not None:
            if is_key:
                shown = text.encode("unicode_escape").decode("ascii")[:60]
                return where[:-1], f"the key '{shown}': {problem}"
            return where, problem
    return None


# Set while a model validates its input: the models nested in it were covered by its walk.
_CHECKED: ContextVar[bool] = ContextVar("ekiben_text_checked", default=False)


class StorableText(BaseModel):
    """A model whose input, anywhere in it, holds only text PostgreSQL can store.

    The outermost model checks everything it is given, once; a refusal is a validation
    error located at the bad string (`labels.0.value`, `manifest.metadata.x`).
    """

    @model_validator(mode="wrap")
    @classmethod
    def _storable_text(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if _CHECKED.get():
            return handler(data)
        found = unstorable_text(data) if isinstance(data, dict | list) else None
        if found is not None:
            where, problem = found
            error = PydanticCustomError("unstorable_text", problem)
            raise ValidationError.from_exception_data(
                cls.__name__, [InitErrorDetails(type=error, loc=where, input="...")]
            )
        token = _CHECKED.set(True)
        try:
            return handler(data)
        finally:
            _CHECKED.reset(token)
