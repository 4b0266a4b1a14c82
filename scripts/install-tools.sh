#!/usr/bin/env bash
# Installs the test and benchmark parts that Debian stable does not carry, beside the system's
# own packages and without replacing them:
#
#   - the current peers from Debian's testing suite (Prometheus 3.5 LTS, VictoriaMetrics and
#     vmagent 1.145, blackbox exporter 0.28): remote-write 2.0, native histograms and zstd only
#     exist there. They are fetched with a private apt state (the system's lists and caches are
#     untouched) and unpacked with dpkg-deb -x, so stable's prometheus 2.42 and victoria-metrics
#     1.79 stay installed for the fallback tests;
#   - oauth2-mock-server from npm, a third-party OAuth2 token server;
#   - a Python virtualenv with botocore (an independent AWS SigV4 implementation), LiteLLM's
#     proxy and fakeai (a real AI relay and a fake upstream), and grpcio-health-checking.
#
# Everything lands in one tools directory, $PUSHPROBE_TOOLS (default ~/.cache/pushprobe/tools),
# with a symlink per program in $PUSHPROBE_TOOLS/bin, named with its pinned version
# (prometheus-3.5.3, vmagent-1.145.0, ...). Tests and benchmark scripts look there.
#
# Usage: scripts/install-tools.sh
# Needs: apt-get and dpkg-deb (Debian), node + npm, python3 with venv.
set -euo pipefail

TOOLS=${PUSHPROBE_TOOLS:-$HOME/.cache/pushprobe/tools}
SUITE=forky

# Pinned upstream versions. When the testing suite moves on, the download below fails with a
# message naming the version it has now: update the pin here (and the versions the tests name).
PIN_prometheus=3.5.3
PIN_victoria_metrics=1.145.0
PIN_prometheus_blackbox_exporter=0.28.0
PIN_oauth2_mock_server=9.3.0
PIN_botocore=1.44.5
PIN_litellm=1.108.7
PIN_fakeai=0.3.2
PIN_grpcio_health_checking=1.85.1

mkdir -p "$TOOLS/bin"

say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

# --- Current peers from Debian testing -------------------------------------------------------
apt_state="$TOOLS/apt-$SUITE"
mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial" "$apt_state/debs"
# The mirror the system already uses, with the testing suite instead of stable.
mirror=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*debian\)\/*$/\1/p' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
cat >"$apt_state/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main
EOF
APT_OPTS=(
    -o "Dir::Etc::sourcelist=$apt_state/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt_state/lists"
    -o "Dir::Cache=$apt_state/cache"
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Sandbox::User=root"
)

# peer PACKAGE PIN PROGRAM...: downloads PACKAGE at upstream version PIN from the testing
# suite, unpacks it under $TOOLS/PACKAGE-PIN and links each PROGRAM as bin/PROGRAM-PIN.
peer() {
    local pkg=$1 pin=$2
    shift 2
    local root="$TOOLS/$pkg-$pin"
    local missing=0 prog
    for prog in "$@"; do
        [ -x "$TOOLS/bin/$prog-$pin" ] || missing=1
    done
    if [ "$missing" = 0 ]; then
        say "$pkg $pin already installed"
        return
    fi
    local versions version
    versions=$(apt-cache "${APT_OPTS[@]}" madison "$pkg" | awk -F'|' '{gsub(/ /,"",$2); print $2}')
    # Debian versions look like [epoch:]UPSTREAM[+dsN]-REVISION.
    version=$(printf '%s\n' "$versions" | grep -E "^([0-9]+:)?${pin//./\\.}([+~-]|$)" | head -n1 || true)
    if [ -z "$version" ]; then
        say "Debian $SUITE no longer carries $pkg $pin (it has: ${versions//$'\n'/ })."
        say "Update PIN_${pkg//-/_} in $0 and the version the tests expect."
        exit 1
    fi
    (cd "$apt_state/debs" && apt-get "${APT_OPTS[@]}" -q download "$pkg=$version")
    rm -rf "$root"
    mkdir -p "$root"
    dpkg-deb -x "$apt_state/debs/${pkg}_${version#*:}_"*.deb "$root"
    for prog in "$@"; do
        if [ ! -x "$root/usr/bin/$prog" ]; then
            say "$pkg $version has no usr/bin/$prog"
            exit 1
        fi
        ln -sfn "$root/usr/bin/$prog" "$TOOLS/bin/$prog-$pin"
    done
    say "installed $pkg $version into $root"
}

for attempt in 1 2 3; do
    if apt-get "${APT_OPTS[@]}" -q update >"$apt_state/update.log" 2>&1; then
        break
    fi
    if [ "$attempt" = 3 ]; then
        cat "$apt_state/update.log" >&2
        say "apt-get update for the $SUITE suite failed"
        exit 1
    fi
    sleep 5
done
peer prometheus "$PIN_prometheus" prometheus
peer victoria-metrics "$PIN_victoria_metrics" victoria-metrics vmagent
peer prometheus-blackbox-exporter "$PIN_prometheus_blackbox_exporter" prometheus-blackbox-exporter
rm -f "$apt_state/debs/"*.deb

# --- oauth2-mock-server from npm -------------------------------------------------------------
if [ ! -x "$TOOLS/bin/oauth2-mock-server" ]; then
    mkdir -p "$TOOLS/npm"
    npm install --prefix "$TOOLS/npm" --no-audit --no-fund --silent \
        "oauth2-mock-server@$PIN_oauth2_mock_server"
    ln -sfn "$TOOLS/npm/node_modules/.bin/oauth2-mock-server" "$TOOLS/bin/oauth2-mock-server"
    say "installed oauth2-mock-server $PIN_oauth2_mock_server"
fi

# --- Python virtualenv -----------------------------------------------------------------------
venv="$TOOLS/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import botocore" 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check "botocore==$PIN_botocore"
    say "installed botocore $PIN_botocore"
fi
# The AI relay and its fake upstream (LiteLLM's proxy in front of fakeai; fakeai needs pillow
# without declaring it), and the standard gRPC health servicer for the gRPC probe's tests.
if ! "$venv/bin/python" -c "import litellm.proxy.proxy_server, fakeai, PIL, grpc_health.v1" 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check \
        "litellm[proxy]==$PIN_litellm" "fakeai==$PIN_fakeai" pillow \
        "grpcio-health-checking==$PIN_grpcio_health_checking"
    say "installed litellm $PIN_litellm, fakeai $PIN_fakeai, grpcio-health-checking $PIN_grpcio_health_checking"
fi
# A wrapper, not a symlink: Python finds its virtualenv from the path it was started by, and
# through a link in bin/ it would start as the bare system interpreter.
rm -f "$TOOLS/bin/python-tools"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$venv/bin/python" >"$TOOLS/bin/python-tools"
chmod +x "$TOOLS/bin/python-tools"
ln -sfn "$venv/bin/litellm" "$TOOLS/bin/litellm"
ln -sfn "$venv/bin/fakeai" "$TOOLS/bin/fakeai"

say "tools are in $TOOLS/bin"
