#!/usr/bin/env bash
# Build the real Kubernetes control plane Ekiben's tests run against.
#
# kube-apiserver, kube-controller-manager and kube-scheduler come from k8s.io/kubernetes,
# etcd from go.etcd.io/etcd/server/v3 and kwok (simulated nodes) from sigs.k8s.io/kwok, all
# compiled from source with the Go toolchain through the Go module proxy: no registry here ships
# these binaries. k8s.io/kubernetes is not meant to be a dependency: its go.mod points every
# k8s.io staging module at ./staging/src/..., so a wrapper module outside the repo requires it and
# replaces each staging module by its published v0.<minor>.<patch> twin (the list is read from the
# release's own go.mod, not hard-coded).
#
# Output: ${EKIBEN_CACHE_DIR:-$HOME/.cache/ekiben}/k8s/<key>/bin, where <key> names all three
# versions from tests/k8s/versions.env. A run whose binaries are all present exits at once.
# Nothing is written inside the repository.
#
# Usage: bash tests/k8s/build.sh        (EKIBEN_K8S_NO_EXTRAS=1: only kube-apiserver and etcd)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$script_dir/versions.env"
K8S_VERSION="${EKIBEN_K8S_VERSION:-$K8S_VERSION}"
ETCD_VERSION="${EKIBEN_ETCD_VERSION:-$ETCD_VERSION}"
KWOK_VERSION="${EKIBEN_KWOK_VERSION:-$KWOK_VERSION}"

export PATH="/usr/local/go/bin:$PATH"
# Static binaries; GOPROXY, GOMODCACHE and GOCACHE stay as `go env` has them (outside the repo).
export CGO_ENABLED=0

cache_root="${EKIBEN_CACHE_DIR:-$HOME/.cache/ekiben}/k8s"
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
bin="$cache_root/$key/bin"

start=$SECONDS
log() { printf '[k8s-build +%4ds] %s\n' "$((SECONDS - start))" "$*"; }

wanted=(kube-apiserver etcd)
if [[ "${EKIBEN_K8S_NO_EXTRAS:-0}" != 1 ]]; then
    wanted+=(kube-controller-manager kube-scheduler kwok)
fi
missing=()
for b in "${wanted[@]}"; do
    [[ -x "$bin/$b" ]] || missing+=("$b")
done
if [[ " ${wanted[*]} " == *" kwok "* && ! -f "$bin/kwok-stages.yaml" && " ${missing[*]} " != *" kwok "* ]]; then
    missing+=(kwok)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
    log "cached: $bin (${wanted[*]})"
    exit 0
fi
command -v go >/dev/null || { echo "go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
log "building ${missing[*]} with $(go version | cut -d' ' -f3) into $bin"
mkdir -p "$bin"
has() { [[ " ${missing[*]} " == *" $1 "* ]]; }

# Version stamping, as the Kubernetes Makefile does; without it the binaries report v0.0.0.
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

k8s_cmds=()
has kube-apiserver && k8s_cmds+=(k8s.io/kubernetes/cmd/kube-apiserver)
has kube-controller-manager && k8s_cmds+=(k8s.io/kubernetes/cmd/kube-controller-manager)
has kube-scheduler && k8s_cmds+=(k8s.io/kubernetes/cmd/kube-scheduler)

if [[ ${#k8s_cmds[@]} -gt 0 ]]; then
    src="$cache_root/src-kubernetes-$K8S_VERSION"
    mkdir -p "$src"
    if [[ ! -f "$src/.resolved" ]]; then
        log "resolving k8s.io/kubernetes@$K8S_VERSION in wrapper module $src"
        k8s_gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
            | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
        [[ -f "$k8s_gomod" ]] || { echo "could not download k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
        staging_version="v0.${K8S_VERSION#v1.}"
        {
            echo "module ekiben.local/k8s-build"
            echo
            echo "go $(sed -n 's/^go //p' "$k8s_gomod")"
            echo
            echo "require k8s.io/kubernetes $K8S_VERSION"
            echo
            echo "replace ("
        } >"$src/go.mod"
        # Every staging module the release replaces with ./staging/src/<module>.
        staging_mods="$(sed -n 's|^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*|\1|p' "$k8s_gomod")"
        required="$(sed -n '/^require (/,/^)/p' "$k8s_gomod")"
        for mod in $staging_mods; do
            if go list -m "$mod@$staging_version" >/dev/null 2>&1; then
                echo "	$mod => $mod $staging_version" >>"$src/go.mod"
            elif grep -q "^[[:space:]]*$mod v" <<<"$required"; then
                echo "staging module $mod@$staging_version is required but not served" >&2
                exit 1
            else
                # e.g. sample-controller: in the replace block, never required, not published.
                log "  skip $mod (not published at $staging_version, not required)"
            fi
        done
        echo ")" >>"$src/go.mod"
        log "  $(grep -c ' => ' "$src/go.mod") staging modules pinned to $staging_version"
        (cd "$src" && go get "${k8s_cmds[@]}") 2>&1 | sed 's/^/    /' | tail -n 20
        touch "$src/.resolved"
    fi
    log "compiling ${k8s_cmds[*]##*/} (slow on a cold Go cache: ~10-20 min on 2 cores)"
    (cd "$src" && go build -mod=mod -trimpath -ldflags="$k8s_ldflags" -o "$bin/" "${k8s_cmds[@]}")
    log "  done"
fi

if has etcd; then
    src="$cache_root/src-etcd-$ETCD_VERSION"
    mkdir -p "$src"
    if [[ ! -f "$src/.resolved" ]]; then
        log "resolving go.etcd.io/etcd/server/v3@$ETCD_VERSION in wrapper module $src"
        etcd_gomod="$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
            | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
        {
            echo "module ekiben.local/etcd-build"
            echo
            echo "go $(sed -n 's/^go //p' "$etcd_gomod")"
            echo
            echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
            echo
            echo "replace ("
            # etcd's server module points its sibling modules at ../<dir>; pin them to the
            # same release instead.
            sed -n 's|^[[:space:]]*\(go\.etcd\.io/etcd/[^[:space:]]*\) => \.\./.*|\1|p' "$etcd_gomod" \
                | while read -r mod; do echo "	$mod => $mod $ETCD_VERSION"; done
            echo ")"
        } >"$src/go.mod"
        (cd "$src" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION") 2>&1 | sed 's/^/    /' | tail -n 20
        touch "$src/.resolved"
    fi
    log "compiling etcd $ETCD_VERSION"
    (cd "$src" && go build -mod=mod -trimpath -ldflags="-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
    log "  done"
fi

if has kwok; then
    # kwok's go.mod has no replace directives, so `go install module@version` works as is.
    log "compiling kwok $KWOK_VERSION"
    GOBIN="$bin" go install -trimpath \
        -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
        "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    # kwok only acts through Stage objects. These are the ones kwokctl configures by default
    # (nodes become Ready and keep a lease; pods become Ready, complete and go away on delete),
    # taken from the same release and written next to the binary.
    kwok_dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    stages="$bin/kwok-stages.yaml.tmp"
    : >"$stages"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        { echo "---"; cat "$kwok_dir/kustomize/stage/$f"; } >>"$stages"
    done
    mv "$stages" "$bin/kwok-stages.yaml"
    log "  done"
fi

for b in "${wanted[@]}"; do
    [[ -x "$bin/$b" ]] || { echo "missing after build: $bin/$b" >&2; exit 1; }
done
log "ready: $bin ($(du -sh "$bin" | cut -f1)); total $((SECONDS - start))s"
