#!/usr/bin/env bash
# Installs Debian packages without letting their maintainer scripts start the services.
#
# The receivers the tests and scripts need (prometheus, victoria-metrics, ...) are started by
# the tests themselves on free loopback ports. Debian's postinst scripts would otherwise try to
# start system-wide daemons: in a container without an init that fails or hangs, and on a
# workstation it would leave daemons on the default ports. A policy-rc.d that answers 101
# ("action forbidden") makes invoke-rc.d and deb-systemd-invoke skip the start.
#
# Usage: scripts/install-deps.sh PACKAGE...   (as root, or with sudo available)
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PACKAGE..." >&2
    exit 2
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$0: need root or sudo to install: $*" >&2
        exit 1
    fi
    SUDO=(sudo)
fi

policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Temporary: keep package installs from starting services.\nexit 101\n' |
        "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then
        "${SUDO[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
# A mirror hiccup should not fail a whole CI run; three tries, then give up loudly.
for attempt in 1 2 3; do
    if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q; then
        break
    fi
    if [ "$attempt" = 3 ]; then
        echo "$0: apt-get update failed" >&2
        exit 1
    fi
    sleep 5
done
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
    apt-get install -y -q --no-install-recommends "$@" </dev/null
