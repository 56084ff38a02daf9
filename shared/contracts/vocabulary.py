"""The words for states that cross services: build and deployment statuses, defined once.

These values appear in events (`build.*`, `deployment.status_changed`), in the HTTP API
(what `bentoml deployment get` prints), in the `status.phase` of the custom resources
(`deploy/crds`: a unit test holds each CRD's enum to the enum here) and in the dashboard.

Deployment statuses are the ones the bentoml client knows (`bentoml/_internal/cloud/
deployment.py`), so its `--wait` loop and its output understand every one of them.
"""

from __future__ import annotations

import enum


class BuildStatus(enum.StrEnum):
    """A build of a bento's image (and the `status.phase` of a BentoRequest)."""

    PENDING = "pending"
    BUILDING = "building"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeploymentStatus(enum.StrEnum):
    """A deployment as a whole (and the `status.phase` of a BentoDeployment)."""

    UNKNOWN = "unknown"
    NON_DEPLOYED = "non-deployed"
    IMAGE_BUILDING = "image-building"
    IMAGE_BUILD_FAILED = "image-build-failed"
    IMAGE_BUILD_SUCCEEDED = "image-build-succeeded"
    DEPLOYING = "deploying"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    SCALED_TO_ZERO = "scaled-to-zero"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
