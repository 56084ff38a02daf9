#!/usr/bin/env bash
# Build the tools the chart and observability tests run: helm and a minimal OpenTelemetry
# Collector, from their Go modules (no package registry here ships either binary), and fetch
# the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule) from its module.
#
#   helm      helm.sh/helm/v3/cmd/helm, `go install`ed as released (its go.mod has no replace).
#   otelcol   a collector with only the components deploy/observability/otel-collector.yaml
#             uses (otlp receiver, memory_limiter and batch processors, otlp, otlphttp and
#             debug exporters), built from go.opentelemetry.io/collector modules by a generated
#             main package, as the collector's own builder (ocb) does; its `validate` command
#             checks the configuration and the test runs it for real.
#   CRDs      example/prometheus-operator-crd/*.yaml of github.com/prometheus-operator/
#             prometheus-operator, taken from the module cache (nothing of it is compiled).
#
# Output: ${EKIBEN_CACHE_DIR:-$HOME/.cache/ekiben}/tools/<name>-<version>/. A run that finds
# everything there exits at once; nothing is written inside the repository. On two cores a
# cold build takes about 3 minutes for helm and 4 for the collector (Go's build cache helps
# the second: they share client-go-free gRPC/protobuf packages).
#
# Usage: bash tests/deploy/build-tools.sh [helm] [otelcol] [operator-crds]   (default: all)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$script_dir/versions.env"
export PATH="/usr/local/go/bin:$PATH"
export CGO_ENABLED=0
cache="${EKIBEN_CACHE_DIR:-$HOME/.cache/ekiben}/tools"

start=$SECONDS
log() { printf '[tools +%4ds] %s\n' "$((SECONDS - start))" "$*"; }
need_go() { command -v go >/dev/null || { echo "go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }; }

build_helm() {
    local out="$cache/helm-$HELM_VERSION"
    if [[ -x "$out/helm" ]]; then log "cached: $out/helm"; return; fi
    need_go
    log "building helm $HELM_VERSION with $(go version | cut -d' ' -f3)"
    mkdir -p "$out"
    # The version stamp and the Kubernetes version `helm template` assumes by default, as
    # helm's Makefile sets them (the client-go minor it was built with).
    local kube_minor
    kube_minor="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
        | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' \
        | xargs sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p')"
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    if [[ -n "$kube_minor" ]]; then
        for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
            ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
        done
    fi
    GOBIN="$out" go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    "$out/helm" version --short
    log "  done"
}

build_otelcol() {
    local out="$cache/otelcol-$OTELCOL_VERSION"
    if [[ -x "$out/otelcol" ]]; then log "cached: $out/otelcol"; return; fi
    need_go
    log "building otelcol (collector $OTELCOL_VERSION, pdata $OTELCOL_STABLE_VERSION)"
    local src="$cache/src-otelcol-$OTELCOL_VERSION"
    mkdir -p "$src" "$out"
    cat >"$src/main.go" <<'GO'
// A minimal OpenTelemetry Collector: the components Ekiben's configuration uses.
package main

import (
	"log"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/processor/memorylimiterprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
	var err error
	f := otelcol.Factories{}
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return f, err
	}
	if f.Processors, err = otelcol.MakeFactoryMap[processor.Factory](
		batchprocessor.NewFactory(), memorylimiterprocessor.NewFactory()); err != nil {
		return f, err
	}
	if f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](
		debugexporter.NewFactory(), otlpexporter.NewFactory(), otlphttpexporter.NewFactory()); err != nil {
		return f, err
	}
	if f.Extensions, err = otelcol.MakeFactoryMap[extension.Factory](); err != nil {
		return f, err
	}
	if f.Connectors, err = otelcol.MakeFactoryMap[connector.Factory](); err != nil {
		return f, err
	}
	f.Telemetry = otelconftelemetry.NewFactory()
	return f, nil
}

func main() {
	info := component.BuildInfo{Command: "otelcol", Description: "Ekiben's minimal collector", Version: "ekiben"}  // the module versions: go version -m otelcol
	settings := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(), fileprovider.NewFactory(), yamlprovider.NewFactory(),
				},
			},
		},
	}
	if err := otelcol.NewCommand(settings).Execute(); err != nil {
		log.Fatal(err)
	}
}
GO
    local go_version
    go_version="$(go env GOVERSION | sed 's/^go\([0-9]*\.[0-9]*\).*/\1/')"
    cat >"$src/go.mod" <<GOMOD
module ekiben.local/otelcol

go $go_version
GOMOD
    (
        cd "$src"
        v="$OTELCOL_VERSION" s="$OTELCOL_STABLE_VERSION"
        go get \
            "go.opentelemetry.io/collector/otelcol@$v" \
            "go.opentelemetry.io/collector/component@$s" \
            "go.opentelemetry.io/collector/confmap@$s" \
            "go.opentelemetry.io/collector/confmap/provider/envprovider@$s" \
            "go.opentelemetry.io/collector/confmap/provider/fileprovider@$s" \
            "go.opentelemetry.io/collector/confmap/provider/yamlprovider@$s" \
            "go.opentelemetry.io/collector/connector@$v" \
            "go.opentelemetry.io/collector/exporter@$s" \
            "go.opentelemetry.io/collector/exporter/debugexporter@$v" \
            "go.opentelemetry.io/collector/exporter/otlpexporter@$v" \
            "go.opentelemetry.io/collector/exporter/otlphttpexporter@$v" \
            "go.opentelemetry.io/collector/extension@$s" \
            "go.opentelemetry.io/collector/processor@$s" \
            "go.opentelemetry.io/collector/processor/batchprocessor@$v" \
            "go.opentelemetry.io/collector/processor/memorylimiterprocessor@$v" \
            "go.opentelemetry.io/collector/receiver@$s" \
            "go.opentelemetry.io/collector/receiver/otlpreceiver@$v" \
            "go.opentelemetry.io/collector/service@$v" 2>&1 | tail -n 5
        go mod tidy 2>&1 | tail -n 5
        go build -trimpath -ldflags="-s -w" -o "$out/otelcol" .
    )
    "$out/otelcol" --version
    log "  done"
}

fetch_operator_crds() {
    local out="$cache/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
    if [[ -f "$out/.complete" ]]; then log "cached: $out"; return; fi
    need_go
    log "fetching the Prometheus Operator CRDs ($PROMETHEUS_OPERATOR_VERSION)"
    local dir
    dir="$(cd "$(mktemp -d)" && go mod download -json \
        "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    mkdir -p "$out"
    for kind in servicemonitors podmonitors prometheusrules; do
        cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$out/"
    done
    chmod u+w "$out"/*.yaml
    touch "$out/.complete"
    log "  done: $out"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(helm otelcol operator-crds)
for target in "${targets[@]}"; do
    case "$target" in
        helm) build_helm ;;
        otelcol) build_otelcol ;;
        operator-crds) fetch_operator_crds ;;
        *) echo "unknown target $target (helm, otelcol, operator-crds)" >&2; exit 2 ;;
    esac
done
