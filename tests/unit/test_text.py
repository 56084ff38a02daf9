"""The one rule for text from outside (`shared.text`), and where it applies."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field, ValidationError

from shared.contracts import registry as reg
from shared.text import NUL_MESSAGE, SURROGATE_MESSAGE, StorableText, unstorable_text


class Inner(StorableText):
    value: str


class Outer(StorableText):
    name: str
    inner: list[Inner] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


def test_the_first_bad_string_is_found_with_its_location_at_any_depth() -> None:
    assert unstorable_text({"a": [1, "ok", {"b": "fine"}]}) is None
    assert unstorable_text({"a": [{"b": "x\x00"}]}) == (("a", 0, "b"), NUL_MESSAGE)
    assert unstorable_text(["\ud800"]) == ((0,), SURROGATE_MESSAGE)
    where, message = unstorable_text({"m": {"k\x00": 1}}) or ((), "")
    assert where == ("m",)
    assert message.startswith("the key 'k\\x00': ")
    deep: Any = "\x00"
    for _ in range(5000):  # deeper than any recursion limit: the walk is iterative
        deep = [deep]
    assert unstorable_text(deep) is not None


def test_a_model_refuses_it_anywhere_in_its_input_located_at_the_bad_string() -> None:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"name": "n", "inner": [{"value": "ok"}, {"value": "a\x00"}]})
    (error,) = caught.value.errors()
    assert error["loc"] == ("inner", 1, "value")
    assert error["msg"] == NUL_MESSAGE
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate_json('{"name": "n", "extra": {"deep": {"x": "\\u0000"}}}')
    assert caught.value.errors()[0]["loc"] == ("extra", "deep", "x")
    assert Outer.model_validate({"name": "ünïcode ✓"}).name == "ünïcode ✓"


def test_every_registry_command_applies_the_rule() -> None:
    for command in reg.COMMANDS:
        assert issubclass(command.request, StorableText), command
    with pytest.raises(ValidationError, match="NUL"):
        reg.FinishUpload.model_validate_json(
            '{"scope": {"organization": "o"}, "kind": "bento", "repository": "r",'
            ' "version": "v", "status": "failed", "reason": "a\\u0000b"}'
        )
