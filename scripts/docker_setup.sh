#!/usr/bin/env bash
# A real Docker engine for the docker builder and executor tests, as root, on Debian.
#
# Idempotent: installs docker.io and debootstrap only if missing, starts dockerd only if
# no engine answers, builds the base image only if its tag is missing. dockerd runs with
# the default bridge and iptables off (containers use the host's network), detached from
# this shell, its output in $REMOTECELL_DOCKERD_LOG.
#
# There is no Docker Hub here: the base image is a debootstrapped Debian with Python,
# imported as $REMOTECELL_BASE_IMAGE (the docker builder's default base).
set -euo pipefail

BASE_IMAGE="${REMOTECELL_BASE_IMAGE:-remotecell-base:bookworm}"
DOCKERD_LOG="${REMOTECELL_DOCKERD_LOG:-/var/log/remotecell-dockerd.log}"
MIRROR="${REMOTECELL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SOCKET=/var/run/docker.sock

say() { echo "docker_setup: $*"; }
started=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (it installs packages and starts dockerd)" >&2
    exit 1
fi

# -- packages ---------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The engine's own client, not whatever `docker` is first on PATH.
docker_cli() {
    if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}
engine_up() { docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# -- the engine -------------------------------------------------------------------
if engine_up; then
    say "an engine already answers on $SOCKET"
else
    say "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # Its own session, no inherited stdin/stdout/stderr: a caller reading our output
    # (CI, a pipe) must not be kept waiting by the daemon.
    setsid nohup dockerd --bridge=none --iptables=false \
        </dev/null >>"$DOCKERD_LOG" 2>&1 &
    for _ in $(seq 1 120); do
        if [ -S "$SOCKET" ] && engine_up; then
            break
        fi
        sleep 0.5
    done
    if ! engine_up; then
        say "dockerd did not come up in 60 s; the end of its log:" >&2
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
fi

# -- the base image ---------------------------------------------------------------
if docker_cli image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE is present"
else
    say "building base image $BASE_IMAGE with debootstrap"
    rootfs=$(mktemp -d /tmp/remotecell-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
        bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
        say "debootstrap failed; the end of its log:" >&2
        tail -n 30 "$rootfs.log" >&2
        exit 1
    }
    rm -f "$rootfs.log"
    # Drop the package lists and caches: a layer with them is ~100 MB bigger.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker_cli import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi

say "ready in $(($(date +%s) - started)) s"
