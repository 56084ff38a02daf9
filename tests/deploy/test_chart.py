"""The Helm chart, rendered by the real helm (built from helm.sh/helm/v3) and read like a reviewer.

`helm lint --strict` and `helm template` with the default values, with an external-everything
values file and with controllers that watch every namespace. The rendered objects are then
checked against the code and the security promises: one image; every EKIBEN_* variable is a
field of its service's settings class (or listed below as awaited from the builder and deployer
work) and the values parse; every secret setting comes from a Secret; restricted security
contexts, probes, resources and disruption budgets; Kubernetes access for the builder and the
deployer only, with least-privilege rules; no cert-manager, no webhook, no controller-specific
ingress annotation. The chart's copies of the CRDs, rules and dashboards are the repository's.
tests/deploy/test_chart_k8s.py sends the same objects to a real API server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from services.catalog import SERVICES
from tests.deploy.tools import CHART, OBSERVABILITY, ROOT, helm_binary, render, run
from tests.unit.test_compose import resolve_env_key, section_model, settings_with

VALUES = {
    "defaults": (),
    "external": ("ci/external-values.yaml",),
    "all-namespaces": ("ci/all-namespaces-values.yaml",),
}
COMPONENTS = ("gateway", "registry", "builder", "deployer", "dashboard")
KUBE_CLIENTS = {"builder", "deployer"}
WORKLOAD_KINDS = {"Deployment", "Job"}


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(helm, *files) for name, files in VALUES.items()}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield doc, doc["spec"]["template"]["spec"]


def field_type(model: type[BaseModel], parts: list[str]) -> Any:
    head, *rest = parts
    annotation = model.model_fields[head].annotation
    if not rest:
        return annotation
    sub = section_model(annotation)
    assert sub is not None
    return field_type(sub, rest)


# --- helm itself ------------------------------------------------------------------------


@pytest.mark.parametrize("values", list(VALUES))
def test_helm_lint_strict(helm: Path, values: str) -> None:
    argv: list[str | Path] = [helm, "lint", CHART, "--strict", "--namespace", "ekiben"]
    for file in VALUES[values]:
        argv += ["--values", CHART / file]
    assert "0 chart(s) failed" in run(argv)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("imageRegistry.dockerConfigSecret=a", "imageRegistry.basicAuthSecret.name=b"),
            "dockerConfigSecret or basicAuthSecret, not both",
        ),
        (("ingress.gateway.enabled=true",), "ingress.gateway.hosts"),
        (("postgres.existingSecret=",), "POSTGRES__DSN: name the Secret"),
    ],
)
def test_contradictory_or_missing_values_are_refused(
    helm: Path, sets: tuple[str, ...], message: str
) -> None:
    argv = [str(helm), "template", "x", str(CHART)]
    for item in sets:
        argv += ["--set", item]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_defaults_render_the_whole_platform(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    kinds = {d["kind"] for d in docs}
    assert kinds == {
        "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "Job", "Role",
        "RoleBinding", "NetworkPolicy",
    }  # fmt: skip
    assert sorted(component(d) for d in by_kind(docs, "Deployment")) == sorted(COMPONENTS)
    assert sorted(component(d) for d in by_kind(docs, "Service")) == sorted(COMPONENTS)
    # Optional objects stay off unless asked: no Prometheus Operator CRDs are assumed.
    external = {d["kind"] for d in rendered["external"]}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress", "ConfigMap"} <= external
    for values, found in rendered.items():
        forbidden = {"Secret", "Certificate", "Issuer", "ClusterIssuer"} & {
            d["kind"] for d in found
        }
        forbidden |= {d["kind"] for d in found if "Webhook" in d["kind"]}
        assert not forbidden, f"{values}: {forbidden}"


# --- one image, settings, secrets ---------------------------------------------------------


@pytest.mark.parametrize("values", list(VALUES))
def test_every_container_runs_the_one_image(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    images = {c["image"] for _, spec in pod_specs(rendered[values]) for c in spec["containers"]}
    assert len(images) == 1, f"version skew between components: {images}"
    if values == "external":
        assert images == {
            (
                "registry.example.com/platform/ekiben@sha256:"
                "4b825dc642cb6eb9a060e54bf8d69288fbee4904e0d2c1b0a0b5c6d7e8f90123"
            )
        }
    commands = sorted(
        tuple(c["args"]) for _, spec in pod_specs(rendered[values]) for c in spec["containers"]
    )
    assert commands == sorted([("migrate",), *(("serve", n) for n in COMPONENTS)])


@pytest.mark.parametrize("values", list(VALUES))
def test_every_variable_is_a_settings_field_and_secrets_come_from_secrets(
    rendered: dict[str, list[dict[str, Any]]], values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for doc, spec in pod_specs(rendered[values]):
        container = spec["containers"][0]
        args = container["args"]
        names = [args[1]] if args[0] == "serve" else [n for n, e in SERVICES.items() if e.owns_data]
        literal: dict[str, dict[str, str]] = {n: {} for n in names}
        for env in container["env"]:
            key = env["name"]
            entry = next(
                (SERVICES[n] for n in names if key.startswith(SERVICES[n].env_prefix)), None
            )
            assert entry is not None, f"{doc['metadata']['name']}: {key} is read by none of {names}"
            cls = entry.settings_class()
            parts = key[len(entry.env_prefix) :].lower().split("__")
            problem = resolve_env_key(cls, parts)
            assert problem is None, f"{doc['metadata']['name']}: {key}: {problem}"
            secret = SecretStr in {
                field_type(cls, parts),
                *getattr(field_type(cls, parts), "__args__", ()),
            }
            if secret:
                assert set(env) == {"name", "valueFrom"}, f"{key}: a secret given as a value"
                assert "secretKeyRef" in env["valueFrom"], f"{key}: not from a Secret"
            if "value" in env:
                literal[entry.name][key] = env["value"]
            elif "secretKeyRef" in env.get("valueFrom", {}):
                # What the Secret would hold, so the values around it must parse with it.
                placeholder = "postgresql://u:p@db:5432/ekiben" if "DSN" in key else "nats://n:4222"
                literal[entry.name][key] = placeholder if key.endswith(("DSN", "URL")) else "x"
        for name, env in literal.items():
            settings = settings_with(SERVICES[name], env, monkeypatch)
            if args[0] == "serve":
                assert settings.http.host == "0.0.0.0"
                ports = {p["containerPort"] for p in container["ports"]}
                assert ports == {settings.http.port}, f"{name}: the container port is its setting"


def test_external_values_reach_the_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = {
        component(d): {e["name"]: e for e in spec["containers"][0]["env"]}
        for d, spec in pod_specs(rendered["external"])
    }
    assert env["registry"]["EKIBEN_REGISTRY_S3__PUBLIC_ENDPOINT_URL"]["value"] == (
        "https://objects.example.com"
    )
    ref = env["registry"]["EKIBEN_REGISTRY_S3__SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "ekiben-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    for name in ("gateway", "registry", "builder", "deployer"):
        nats = env[name][f"EKIBEN_{name.upper()}_NATS__URL"]["valueFrom"]["secretKeyRef"]
        assert nats == {"name": "ekiben-nats", "key": "url"}
        dsn = env[name][f"EKIBEN_{name.upper()}_POSTGRES__DSN"]["valueFrom"]["secretKeyRef"]
        assert dsn == {"name": "ekiben-db", "key": "EKIBEN_DSN"}
        assert env[name][f"EKIBEN_{name.upper()}_TELEMETRY__OTLP_ENDPOINT"]["value"].endswith(
            "/v1/traces"
        )
    assert env["builder"]["EKIBEN_BUILDER_REGISTRY__DOCKER_CONFIG"]["value"] == (
        "/etc/ekiben/registry/config.json"
    )
    assert json.loads(env["deployer"]["EKIBEN_DEPLOYER_KUBE__WATCH_NAMESPACES"]["value"]) == [
        "ml-team-a", "ml-team-b",
    ]  # fmt: skip
    builder = next(s for d, s in pod_specs(rendered["external"]) if component(d) == "builder")
    assert {v["name"]: v for v in builder["volumes"]}["state"]["emptyDir"] == {"sizeLimit": "8Gi"}
    mounted = {v["name"]: v for v in builder["volumes"]}["registry-auth"]["secret"]
    assert mounted == {
        "secretName": "ekiben-regcred",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    # The login line names what users outside reach: the gateway's Ingress, over TLS.
    assert env["dashboard"]["EKIBEN_DASHBOARD_PUBLIC_GATEWAY_URL"]["value"] == (
        "https://ekiben.example.com"
    )
    urls = json.loads(env["dashboard"]["EKIBEN_DASHBOARD_SERVICE_URLS"]["value"])
    services = {d["metadata"]["name"]: d for d in by_kind(rendered["external"], "Service")}
    for name, url in urls.items():
        host, port = url.removeprefix("http://").split(":")
        assert services[host]["spec"]["ports"][0]["port"] == int(port), name


# --- security, probes, resources, availability ------------------------------------------------


@pytest.mark.parametrize("values", list(VALUES))
def test_pods_are_restricted_probed_bounded_and_budgeted(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    docs = rendered[values]
    for doc, spec in pod_specs(docs):
        name = doc["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["securityContext"]["runAsUser"] == 10001  # the image's user
        tokens = spec.get("automountServiceAccountToken")
        assert tokens is (component(doc) in KUBE_CLIENTS), f"{name}: token {tokens}"
        assert not spec.get("hostNetwork")
        assert not spec.get("hostPID")
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["privileged"] is False, name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: no writable /tmp"
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, name
            assert "memory" in container["resources"]["limits"], name
            if doc["kind"] == "Deployment":
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    budgets = {component(d): d for d in by_kind(docs, "PodDisruptionBudget")}
    for deployment in by_kind(docs, "Deployment"):
        if deployment["spec"]["replicas"] > 1:
            budget = budgets[component(deployment)]["spec"]
            assert budget["selector"] == deployment["spec"]["selector"]
    job = by_kind(docs, "Job")[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


@pytest.mark.parametrize("values", list(VALUES))
def test_service_accounts_and_network_policies(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    docs = rendered[values]
    accounts = {component(d): d for d in by_kind(docs, "ServiceAccount")}
    for name, account in accounts.items():
        assert account["automountServiceAccountToken"] is (name in KUBE_CLIENTS), name
    for doc, spec in pod_specs(docs):
        if doc["kind"] == "Deployment":
            assert spec["serviceAccountName"] == accounts[component(doc)]["metadata"]["name"]
    bound = {
        s["name"]
        for d in docs
        if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for s in d["subjects"]
    }
    names = {n: a["metadata"]["name"] for n, a in accounts.items()}
    assert bound == {names["builder"], names["deployer"]}, "only the controllers get RBAC"
    policies = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    deny = next(p for n, p in policies.items() if n.endswith("default-deny"))
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    for doc, _ in pod_specs(docs):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        selected = [
            n for n, p in policies.items()
            if p["podSelector"]["matchLabels"].items() <= labels.items()
        ]  # fmt: skip
        assert len(selected) == 2, f"{doc['metadata']['name']}: policies {selected}"
    api_ports = {443, 6443}
    for name, policy in policies.items():
        ports = {p["port"] for rule in policy.get("egress", []) for p in rule["ports"]}
        talks_to_api = bool(api_ports & ports) and any(
            {p["port"] for p in rule["ports"]} == api_ports for rule in policy.get("egress", [])
        )
        assert talks_to_api is name.endswith(("builder", "deployer")), name


def test_the_dashboard_names_the_public_gateway_only_when_there_is_one(helm: Path) -> None:
    def public_url(*sets: str) -> str | None:
        docs = render(helm, sets=sets)
        spec = next(s for d, s in pod_specs(docs) if component(d) == "dashboard")
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        return env.get("EKIBEN_DASHBOARD_PUBLIC_GATEWAY_URL")

    assert public_url() is None  # the settings fall back to the in-cluster gateway URL
    ingress = ("ingress.gateway.enabled=true", "ingress.gateway.hosts[0]=api.example.org")
    assert public_url(*ingress) == "http://api.example.org"
    assert public_url(*ingress, "dashboard.publicGatewayUrl=https://ml.example.org") == (
        "https://ml.example.org"
    )


def test_ingresses_need_no_controller_annotation(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ingresses = by_kind(rendered["external"], "Ingress")
    assert {component(i) for i in ingresses} == {"gateway", "dashboard"}
    for ingress in ingresses:
        assert "annotations" not in ingress["metadata"]
        assert ingress["spec"]["ingressClassName"] == "traefik"
        hosts = {r["host"] for r in ingress["spec"]["rules"]}
        assert hosts == set(ingress["spec"]["tls"][0]["hosts"])


# --- RBAC ------------------------------------------------------------------------------------


def rules_of(docs: list[dict[str, Any]], component_name: str) -> list[dict[str, Any]]:
    return [
        rule
        for d in docs
        if d["kind"] in {"Role", "ClusterRole"} and component(d) == component_name
        for rule in d["rules"]
    ]


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
        and not r.get("resourceNames")
        for r in rules
    )  # fmt: skip


@pytest.mark.parametrize("values", list(VALUES))
def test_rbac_is_least_privilege(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    docs = rendered[values]
    watches_all = values == "all-namespaces"
    assert bool(by_kind(docs, "ClusterRole")) is watches_all, "a ClusterRole only for ['*']"
    for d in docs:
        for rule in d.get("rules", []) if d["kind"] in {"Role", "ClusterRole"} else []:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{d['metadata']['name']}: wildcard {key}"
            assert "escalate" not in rule["verbs"]
            assert "bind" not in rule["verbs"]
            assert "impersonate" not in rule["verbs"]
    builder, deployer = rules_of(docs, "builder"), rules_of(docs, "deployer")
    assert allowed(builder, "batch", "jobs", "create")
    assert allowed(builder, "resources.ekiben.dev", "bentos", "create")
    assert allowed(builder, "resources.ekiben.dev", "bentorequests/status", "update")
    for group, resource in (("apps", "deployments"), ("", "services"), ("", "pods")):
        assert not allowed(builder, group, resource, "get"), f"builder reads {resource}"
    assert not allowed(builder, "serving.ekiben.dev", "bentodeployments", "get")
    # No Secrets for the builder: its registry credentials are mounted volumes.
    assert [r for r in builder if "secrets" in r["resources"]] == []
    for group, resource in (
        ("apps", "deployments"), ("", "services"), ("autoscaling", "horizontalpodautoscalers"),
        ("networking.k8s.io", "ingresses"), ("serving.ekiben.dev", "bentodeployments/status"),
    ):  # fmt: skip
        assert allowed(deployer, group, resource, "patch"), f"deployer: {resource}"
    assert allowed(deployer, "", "pods", "watch")
    assert not allowed(deployer, "", "pods", "delete")
    assert not allowed(deployer, "resources.ekiben.dev", "bentos", "create")
    assert not allowed(deployer, "batch", "jobs", "create")
    assert not allowed(deployer, "", "secrets", "list"), "the deployer cannot enumerate Secrets"
    assert not allowed(deployer, "", "secrets", "watch")
    roles = {(d["metadata"]["namespace"], component(d)) for d in by_kind(docs, "Role")}
    if values == "external":
        for namespace in ("ml-team-a", "ml-team-b"):
            assert {(namespace, "builder"), (namespace, "deployer")} <= roles


# --- copies of the repository's files ----------------------------------------------------------


@pytest.mark.parametrize(
    ("copy", "original"),
    [
        *((p, ROOT / "deploy" / "crds" / p.name) for p in sorted((CHART / "crds").glob("*.yaml"))),
        (
            CHART / "files" / "prometheus" / "ekiben.rules.yaml",
            OBSERVABILITY / "prometheus" / "rules" / "ekiben.rules.yaml",
        ),
        *(
            (p, OBSERVABILITY / "grafana" / "dashboards" / p.name)
            for p in sorted((CHART / "files" / "grafana").glob("*.json"))
        ),
    ],
    ids=lambda p: p.name,
)
def test_the_chart_ships_the_repository_files(copy: Path, original: Path) -> None:
    assert original.exists(), f"{copy} has no original"
    assert copy.read_bytes() == original.read_bytes(), f"cp {original} {copy}"


def test_every_crd_and_dashboard_is_in_the_chart() -> None:
    crds = {p.name for p in (ROOT / "deploy" / "crds").glob("*.yaml")}
    assert crds == {p.name for p in (CHART / "crds").glob("*.yaml")}
    dashboards = {p.name for p in (OBSERVABILITY / "grafana" / "dashboards").glob("*.json")}
    assert dashboards == {p.name for p in (CHART / "files" / "grafana").glob("*.json")}


def test_the_rule_object_holds_the_rule_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    rule = by_kind(rendered["external"], "PrometheusRule")[0]
    source = yaml.safe_load(
        (OBSERVABILITY / "prometheus" / "rules" / "ekiben.rules.yaml").read_text()
    )
    assert rule["spec"]["groups"] == source["groups"]
    maps = by_kind(rendered["external"], "ConfigMap")
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((CHART / "files" / "grafana" / name).read_text())
