"""The registry's pure logic: what a manifest names, sizes, and the SQL fragments of listings."""

from __future__ import annotations

from typing import Any

import pytest

from services.registry import repository as repo
from services.registry.service import (
    check_manifest_size,
    manifest_models,
    manifest_services,
    object_key,
)
from shared.contracts import registry as reg
from shared.errors import TooLarge
from tests.fixtures.manifests import bento_manifest


def test_a_bento_manifest_names_its_models_in_both_places() -> None:
    manifest: dict[str, Any] = bento_manifest(models=["clf:v1", "Enc:V2"])
    manifest["services"][0]["models"].append({"tag": "other:v3"})
    manifest["models"].append({"tag": "not a tag"})
    assert manifest_models(manifest) == {("clf", "v1"), ("enc", "v2"), ("other", "v3")}
    assert manifest_models(None) == set()
    assert manifest_models({"models": "clf:v1", "services": "x"}) == set()


def test_manifest_services_and_object_keys() -> None:
    assert manifest_services(bento_manifest()) == ["Iris"]
    assert manifest_services({"services": [{"name": 3}, {"name": "A"}, "junk"]}) == ["A"]
    assert object_key(reg.Kind.MODEL, "acme", "clf", "v1") == "models/acme/clf/v1.tar"


def test_a_manifest_over_the_limit_is_too_large() -> None:
    check_manifest_size({"readme": "x" * 1000})
    with pytest.raises(TooLarge, match="manifest is"):
        check_manifest_size({"readme": "x" * (reg.MAX_MANIFEST_BYTES + 1)})


def test_search_patterns_escape_like_wildcards() -> None:
    assert repo._like_pattern("Iris_v1%") == "%iris\\_v1\\%%"
    assert repo._like_pattern("a\\b") == "%a\\\\b%"


def test_orderings_end_in_a_tie_breaker_and_follow_the_direction() -> None:
    assert repo._order(["v.size_bytes"], "v.id", True) == "v.size_bytes DESC, v.id DESC"
    assert repo._order(["a", "b"], "id", False) == "a ASC, b ASC, id ASC"


def test_filters_become_numbered_bind_parameters_never_text() -> None:
    q = repo._Query()
    first = q.param("iris'; DROP TABLE versions; --")
    q.where(f"v.repository = {first}")
    q.where(f"v.created_by = {q.param('bob')}")
    assert q.sql == "v.repository = $1 AND v.created_by = $2"
    assert q.args == ["iris'; DROP TABLE versions; --", "bob"]
    assert repo._Query().sql == "true"


def test_labels_are_stored_as_an_object_and_come_back_sorted_by_key() -> None:
    given = [reg.Label(key="team", value="a"), reg.Label(key="stage", value="dev")]
    stored = reg.labels_to_dict([*given, reg.Label(key="team", value="b")])
    assert stored == {"team": "b", "stage": "dev"}  # a repeated key keeps its last value
    assert [(label.key, label.value) for label in reg.labels_from_dict(stored)] == [
        ("stage", "dev"),
        ("team", "b"),
    ]
    assert reg.labels_from_dict(None) == []
