"""What the builder and its neighbours agree on: resource names, labels, and its commands.

A bento version of an organization is built into an image and published on a cluster as a
`Bento` (resources.ekiben.dev) of a fixed name, the same name as the `BentoRequest` that
produced it. The deployer finds the image of `bento name:version` by that name in the
deployment's namespace (`bento_resource_name`); when it is missing, it asks for a build with
`build.requested` (carrying cluster and namespace) and waits for the Bento to appear.

The builder's request/reply commands (request, get and list builds) are added below by the
builder's feature work.
"""

from __future__ import annotations

import hashlib
import re

SERVICE = "builder"

# Labels on BentoRequests, Bentos and build Jobs (values are tag parts: valid label values).
ORGANIZATION_LABEL = "ekiben.dev/organization"
BENTO_NAME_LABEL = "ekiben.dev/bento-name"
BENTO_VERSION_LABEL = "ekiben.dev/bento-version"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
MAX_NAME = 63


def bento_resource_name(organization: str, name: str, version: str) -> str:
    """The name of the BentoRequest and Bento of `organization`'s `name:version`.

    A DNS label (the CRDs allow 63 characters): lowercase, `[a-z0-9-]`, starting and ending
    with an alphanumeric. Tags that are already such labels read as `org-name-version`;
    anything that had to be changed or shortened ends in a hash of the exact input, so two
    different tags never share a name.
    """
    readable = f"{organization}-{name}-{version}"
    cleaned = _NOT_DNS.sub("-", readable.lower()).strip("-")
    if cleaned == readable and len(cleaned) <= MAX_NAME:
        return cleaned
    digest = hashlib.sha256(f"{organization}/{name}:{version}".encode()).hexdigest()[:10]
    head = cleaned[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else f"b-{digest}"
