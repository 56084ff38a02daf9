"""Which Kubernetes Events are a deployment's, and how they read (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.deployer.adapters.kube_events import deployment_events, event_item, related
from services.deployer.spec import config_from_spec, spec_from_config
from shared.contracts import deployer as dep

OWNED = {
    ("BentoDeployment", "iris"),
    ("Deployment", "iris-iris"),
    ("Pod", "iris-iris-7d9c5-abcde"),
    ("Service", "iris-iris"),
}


def event(kind: str, name: str, reason: str = "Seen", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}.1", "creationTimestamp": "2026-12-02T06:00:00Z"},
        "involvedObject": {"kind": kind, "name": name},
        "reason": reason,
        "message": f"{reason} on {name}",
        **extra,
    }


def test_an_event_belongs_to_the_deployment_when_its_object_does() -> None:
    assert related("BentoDeployment", "iris", OWNED)
    assert related("Pod", "iris-iris-7d9c5-abcde", OWNED)
    # A ReplicaSet between the Deployment and its Pods: <deployment>-<hash>.
    assert related("ReplicaSet", "iris-iris-7d9c5", OWNED)
    assert not related("ReplicaSet", "iris-other-7d9c5", OWNED)
    assert not related("BentoDeployment", "iris2", OWNED)
    assert not related("Deployment", "iris", OWNED)  # same name, another kind
    assert not related("ReplicaSet", "nodash", OWNED)


def test_events_read_as_kubectl_describe_shows_them_latest_first() -> None:
    raw = [
        event("Pod", "iris-iris-7d9c5-abcde", "Pulled", type="Normal", count=3,
              firstTimestamp="2026-12-02T06:00:00Z", lastTimestamp="2026-12-02T06:05:00Z",
              source={"component": "kubelet"}),
        # events.k8s.io through the core API: a series counts, eventTime, the controller.
        event("BentoDeployment", "iris", "Ready", type="Normal",
              eventTime="2026-12-02T06:01:00.000000Z",
              series={"count": 4, "lastObservedTime": "2026-12-02T06:09:00.000000Z"},
              reportingComponent="ekiben-deployer"),
        event("ReplicaSet", "iris-iris-7d9c5", "FailedCreate", type="Warning"),
        event("Pod", "someone-else", "Killing"),
    ]  # fmt: skip
    items = deployment_events(raw, OWNED, limit=10)
    assert [e.reason for e in items] == ["Ready", "Pulled", "FailedCreate"]
    ready, pulled, failed = items
    assert (ready.count, ready.source, ready.object_kind) == (
        4,
        "ekiben-deployer",
        "BentoDeployment",
    )
    assert ready.last_seen is not None
    assert ready.last_seen.minute == 9
    assert (pulled.count, pulled.source, pulled.message) == (
        3,
        "kubelet",
        "Pulled on iris-iris-7d9c5-abcde",
    )
    assert (failed.type, failed.count) == ("Warning", 1)  # no count: seen once
    assert failed.last_seen == failed.first_seen  # only its creation time
    assert [e.reason for e in deployment_events(raw, OWNED, limit=1)] == ["Ready"]
    assert event_item({}).type == "Normal"


def test_the_ingress_config_becomes_the_spec_and_reads_back() -> None:
    target = dep.BentoTarget(name="iris", version="v1", services=["Iris"], entry_service="Iris")
    default = spec_from_config("acme", target, dep.DeploymentConfig(), {})
    assert default["ingress"] == {"enabled": True}  # as before there was a choice
    config = dep.DeploymentConfig(
        ingress=dep.IngressConfig(host="iris.example.com", tls_secret_name="iris-tls")
    )
    spec = spec_from_config("acme", target, config, {})
    assert spec["ingress"] == {
        "enabled": True,
        "host": "iris.example.com",
        "tls": {"secretName": "iris-tls"},
    }
    assert config_from_spec(spec).ingress == config.ingress
    off = spec_from_config("acme", target, dep.DeploymentConfig(
        ingress=dep.IngressConfig(enabled=False)), {})  # fmt: skip
    assert off["ingress"] == {"enabled": False}
    # A GitOps spec without `ingress` has none (the CRD's default).
    assert config_from_spec({"bento": "x"}).ingress == dep.IngressConfig(enabled=False)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": "Not A Host"}, "not a valid ingress host"),
        ({"host": "a" * 254}, "not a valid ingress host"),
        ({"tls_secret_name": "Bad_Name"}, "not a valid TLS secret name"),
        ({"enabled": False, "tls_secret_name": "t"}, "TLS secret needs the ingress"),
    ],
)
def test_a_bad_ingress_is_refused_with_the_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        dep.IngressConfig.model_validate(fields)
    assert dep.IngressConfig(host="*.apps.example.com").host == "*.apps.example.com"
