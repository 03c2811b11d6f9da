#!/usr/bin/env bash
# Provides the Lambda Python base images under the names SAM and the worker's Dockerfile use:
#   public.ecr.aws/lambda/python:3.13-x86_64  (SAM builds zip functions' containers FROM this)
#   public.ecr.aws/lambda/python:3.13         (functions/worker/Dockerfile's default BASE_IMAGE)
# Pulled when the registry answers within a few seconds; otherwise built offline: Debian trixie
# (Python 3.13) by debootstrap from the mirror in apt's sources list, `docker import`, then
# scripts/docker/lambda-python/Dockerfile adds the Lambda runtime contract. Nothing is rebuilt when
# both tags exist (FORCE=1 rebuilds). Needs a running engine: scripts/docker/engine.sh start.
#
# Env: PYTHON_VERSION (3.13), SUITE (trixie), DEBIAN_MIRROR (default: apt's), OFFLINE=1 (skip the pull),
#      HOST_CA_BUNDLE (CAs to trust in the image besides Debian's; default: the host's bundle, '' for none)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PYTHON_VERSION=${PYTHON_VERSION:-3.13}
SUITE=${SUITE:-trixie}
REPO=public.ecr.aws/lambda/python
ARCH_TAG="$REPO:$PYTHON_VERSION-x86_64"
PLAIN_TAG="$REPO:$PYTHON_VERSION"
ROOTFS_IMAGE="siprems/debian-$SUITE-python:latest"
WORK="$ROOT/.state/base-image"

log() { echo "base-image: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

docker info >/dev/null 2>&1 || { log "no Docker engine answers; run: eval \"\$(scripts/docker/engine.sh start)\""; exit 1; }

if [[ -z "${FORCE:-}" ]] && have_image "$ARCH_TAG" && have_image "$PLAIN_TAG"; then
    log "present: $ARCH_TAG and $PLAIN_TAG ($(docker image inspect -f '{{.Config.Labels}}' "$ARCH_TAG" | grep -o 'siprems.base=[a-z]*' || echo pulled))"
    exit 0
fi

started_at=$SECONDS

registry_answers() {
    # The registry's API root answers 401 quickly when reachable; no DNS or no route fails at once.
    local code
    code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' https://public.ecr.aws/v2/ 2>/dev/null) || return 1
    [[ $code =~ ^(200|401)$ ]]
}

if [[ -z "${OFFLINE:-}" ]] && registry_answers; then
    log "registry reachable: pulling $ARCH_TAG"
    docker pull --platform linux/amd64 "$ARCH_TAG"
    docker tag "$ARCH_TAG" "$PLAIN_TAG"
    log "pulled in $(( SECONDS - started_at )) s"
    exit 0
fi

log "registry unreachable (or OFFLINE=1): building offline from Debian $SUITE"

debian_mirror() {
    # The first Debian archive URI apt itself uses (one-line or deb822 sources), minus security/updates.
    grep -rhoE '^(deb|URIs:)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+' | grep -E '/debian/?$' | head -1 || true
}

if [[ "${FORCE:-}" || ! $(docker images -q "$ROOTFS_IMAGE") ]]; then
    MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
    [[ -n "$MIRROR" ]] || { log "no Debian mirror found in apt's sources; set DEBIAN_MIRROR"; exit 1; }
    if ! command -v debootstrap >/dev/null; then
        [[ $(id -u) == 0 ]] || { log "debootstrap is missing and installing it needs root"; exit 1; }
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    fi
    rm -rf "$WORK/rootfs"
    mkdir -p "$WORK"
    t=$SECONDS
    log "debootstrap --variant=minbase $SUITE from $MIRROR"
    # python3-pip: users' Dockerfiles `pip install` their requirements; ca-certificates: for PyPI over TLS.
    debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
        "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { log "debootstrap failed; last lines of .state/base-image/debootstrap.log:"; tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    rm -rf "$WORK/rootfs"/var/cache/apt/archives/*.deb "$WORK/rootfs"/var/lib/apt/lists/*
    log "debootstrap took $(( SECONDS - t )) s"
    t=$SECONDS
    tar -C "$WORK/rootfs" -c . | docker import - "$ROOTFS_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
    log "docker import took $(( SECONDS - t )) s"
fi

# Build context: this project's runtime files plus the Runtime Interface Emulator that aws-sam-cli
# bundles (the public image ships it as /usr/local/bin/aws-lambda-rie for plain `docker run`).
CONTEXT="$WORK/context"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT"
cp scripts/docker/lambda-python/{Dockerfile,bootstrap,lambda-entrypoint.sh,add-ca-certificates.py} "$CONTEXT/"
# The host's CA bundle: containers then reach PyPI wherever the host does (also behind a TLS proxy).
HOST_CA_BUNDLE=${HOST_CA_BUNDLE-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
if [[ -n "$HOST_CA_BUNDLE" && -r "$HOST_CA_BUNDLE" ]]; then cp "$HOST_CA_BUNDLE" "$CONTEXT/extra-ca-certificates.crt"
else : >"$CONTEXT/extra-ca-certificates.crt"; fi
RIE=$(ls .venv-sam/lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64 2>/dev/null | head -1)
[[ -n "$RIE" ]] || { log "aws-lambda-rie not found in .venv-sam (aws-sam-cli); run scripts/bootstrap.sh"; exit 1; }
cp "$RIE" "$CONTEXT/aws-lambda-rie"
t=$SECONDS
docker build -q --build-arg "ROOTFS_IMAGE=$ROOTFS_IMAGE" --label siprems.base=offline \
    -t "$ARCH_TAG" -t "$PLAIN_TAG" "$CONTEXT" >/dev/null
rm -rf "$CONTEXT"
log "runtime layer built in $(( SECONDS - t )) s"
log "built $ARCH_TAG and $PLAIN_TAG offline in $(( SECONDS - started_at )) s"
