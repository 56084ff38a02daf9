"""One vocabulary: the status words of events, the API and the CRDs are the same enum."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.contracts.builder import bento_resource_name
from shared.contracts.vocabulary import BuildStatus, DeploymentStatus
from shared.events.types import DeploymentStatusData

CRDS = Path(__file__).parents[2] / "deploy" / "crds"


def _status_phase_enum(crd_file: str) -> list[str]:
    crd: dict[str, Any] = yaml.safe_load((CRDS / crd_file).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    enum: list[str] = schema["properties"]["status"]["properties"]["phase"]["enum"]
    return enum


@pytest.mark.parametrize(
    ("crd_file", "vocabulary"),
    [
        ("serving.ekiben.dev_bentodeployments.yaml", DeploymentStatus),
        ("resources.ekiben.dev_bentorequests.yaml", BuildStatus),
    ],
)
def test_a_crd_phase_is_the_shared_status_enum(
    crd_file: str, vocabulary: type[DeploymentStatus] | type[BuildStatus]
) -> None:
    assert _status_phase_enum(crd_file) == [status.value for status in vocabulary]


def test_the_status_event_speaks_the_same_words() -> None:
    field = DeploymentStatusData.model_fields["status"]
    assert field.annotation is DeploymentStatus


def test_bento_resource_names_are_dns_labels_and_never_collide() -> None:
    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    assert bento_resource_name("default", "iris", "v1") == "default-iris-v1"
    names = {
        bento_resource_name("default", "iris_clf", "v1"),
        bento_resource_name("default", "iris-clf", "v1"),
        bento_resource_name("default", "iris.clf", "v1"),
        bento_resource_name("default", "a" * 63, "b" * 63),
        bento_resource_name("default", "a" * 63, "b" * 62),
    }
    assert len(names) == 5
    for name in names:
        assert label.match(name), name
        assert len(name) <= 63, name
