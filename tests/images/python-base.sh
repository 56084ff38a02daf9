#!/usr/bin/env bash
# Build the Python 3.11 base image bentos are built FROM, without Docker Hub.
#
# A bento's generated Dockerfile starts `FROM python:3.11-slim`. Nothing here can reach Docker
# Hub, so this builds an equivalent from Debian bookworm with debootstrap (see
# /work/shared/docs/bento-image-build.md, step 2): python3 3.11 with venv and pip,
# ca-certificates, the host's CA bundle added as a local CA (it survives the Dockerfile's own
# `apt-get install ca-certificates`), no PEP 668 marker (the Dockerfile runs a system
# `pip install uv`), ENV SSL_CERT_FILE for uv, a `python` symlink, and no apt caches.
#
# Output: an OCI archive under ${EKIBEN_CACHE_DIR:-$HOME/.cache/ekiben}/images/, named after a
# key of everything that goes into it (this script, the host CA bundle, the architecture), so it
# is built once per machine (about a minute) and found at once afterwards. The archive's path is
# the last line on stdout; progress goes to stderr. Push it wherever FROM python:3.11-slim
# should resolve, e.g.
#   skopeo copy --dest-tls-verify=false oci-archive:"$(bash tests/images/python-base.sh)" \
#       docker://127.0.0.1:5000/library/python:3.11-slim
#
# Needs root (debootstrap chroots and creates device nodes), debootstrap and podman.
# EKIBEN_DEBIAN_MIRROR overrides the Debian mirror (default http://deb.debian.org/debian).
set -euo pipefail

script="$(readlink -f "${BASH_SOURCE[0]}")"
cache="${EKIBEN_CACHE_DIR:-$HOME/.cache/ekiben}/images"
mirror="${EKIBEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
packages=python3,python3-venv,python3-pip,ca-certificates
host_ca=/etc/ssl/certs/ca-certificates.crt

start=$SECONDS
log() { printf '[python-base +%3ds] %s\n' "$((SECONDS - start))" "$*" >&2; }

[[ -r "$host_ca" ]] || { echo "no host CA bundle at $host_ca" >&2; exit 1; }
arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
key="$( { sha256sum "$script" "$host_ca" | cut -d' ' -f1; echo "$suite $packages $arch"; } \
    | sha256sum | cut -c1-16)"
archive="$cache/python-3.11-$suite-$arch-$key.oci.tar"

if [[ -s "$archive" ]]; then
    log "cached: $archive"
    echo "$archive"
    exit 0
fi
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install $tool)" >&2; exit 1; }
done
[[ "$(id -u)" == 0 ]] || { echo "debootstrap needs root" >&2; exit 1; }

mkdir -p "$cache"
# One build at a time per cache: a second caller waits, then finds the archive.
exec 9>"$cache/.python-base.lock"
flock 9
if [[ -s "$archive" ]]; then
    log "cached (built by another run): $archive"
    echo "$archive"
    exit 0
fi

work="$(mktemp -d "$cache/.build-XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

log "debootstrap $suite ($packages) from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

log "fix-ups: sources, CA bundle, PEP 668 marker, python symlink, apt caches"
security="${mirror%/debian}/debian-security"
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES
# The whole host bundle as a *local* CA: update-ca-certificates keeps local CAs each time it
# regenerates the bundle, which the Dockerfile's apt-get of ca-certificates does.
cp "$host_ca" "$rootfs/usr/local/share/ca-certificates/host-ca-bundle.crt"
chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf python3 "$rootfs/usr/bin/python"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/apt/* "$rootfs"/var/log/*.log
"$rootfs/usr/bin/python3" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "the rootfs's python3 is not 3.11" >&2; exit 1; }

log "import as an image (throw-away store) and save as an OCI archive"
# A private store and configuration: nothing touches the machine's own container storage.
printf '[engine]\nruntime = "runc"\n' >"$work/containers.conf"
podman_() {
    CONTAINERS_CONF="$work/containers.conf" podman --root "$work/store" --runroot "$work/run" \
        --storage-driver vfs "$@"
}
tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf - . | podman_ import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "localhost/ekiben/python-base:$key" >/dev/null
podman_ save --quiet --format oci-archive -o "$work/image.oci.tar" "localhost/ekiben/python-base:$key" \
    >/dev/null
mv "$work/image.oci.tar" "$archive"
# Older keys are stale inputs (another script version, another CA bundle).
find "$cache" -maxdepth 1 -name "python-3.11-$suite-$arch-*.oci.tar" ! -path "$archive" -delete
log "built $archive ($(du -h "$archive" | cut -f1)) in $((SECONDS - start))s"
echo "$archive"
