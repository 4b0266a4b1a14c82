#!/usr/bin/env bash
# End-to-end demo on one machine: pushprobe probes a local web server every 2 s for about
# 20 s and remote-writes the results to a local Prometheus; then the series are printed as
# Prometheus returns them.
#
# Needs: cargo, python3, curl. Installs Debian's `prometheus` if it is missing (as root or via
# sudo). Everything runs on 127.0.0.1 on free ports in a temporary directory that is removed,
# with every process started here, on exit.
#
# Usage: scripts/demo.sh            (DEMO_SECONDS=20 by default; PUSHPROBE_BIN=PATH runs that
#                                   binary instead of building the release one)
# Exit status: 0 if Prometheus returned the probe's series, non-zero otherwise.
set -euo pipefail
# A relative PUSHPROBE_BIN is relative to where the demo was started, not to the checkout.
if [ -n "${PUSHPROBE_BIN:-}" ]; then
    PUSHPROBE_BIN="$(realpath "$PUSHPROBE_BIN")"
fi
cd "$(dirname "$0")/.."

DEMO_SECONDS="${DEMO_SECONDS:-20}"

say() { printf '\n== %s\n' "$*"; }

needed=(python3 curl)
[ -n "${PUSHPROBE_BIN:-}" ] || needed+=(cargo)
for tool in "${needed[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "demo: $tool is required but not installed" >&2
        exit 1
    fi
done

if ! command -v prometheus >/dev/null 2>&1; then
    say "Installing Debian's prometheus package"
    scripts/install-deps.sh prometheus
fi

if [ -n "${PUSHPROBE_BIN:-}" ]; then
    PUSHPROBE="$PUSHPROBE_BIN"
    # pushprobe reads PUSHPROBE_* variables as configuration keys and refuses unknown ones.
    export -n PUSHPROBE_BIN
else
    say "Building pushprobe (release)"
    cargo build --release --locked --bin pushprobe
    PUSHPROBE="${CARGO_TARGET_DIR:-$PWD/target}/release/pushprobe"
fi

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
setup_workdir demo

prom_port="$(free_port)"
say "Starting Prometheus (remote-write receiver) on 127.0.0.1:$prom_port"
printf 'global:\n  scrape_interval: 15s\n' >"$work/prometheus.yml"
prometheus \
    --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/prometheus-data" \
    --web.listen-address="127.0.0.1:$prom_port" \
    --web.enable-remote-write-receiver \
    >"$work/prometheus.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$prom_port/-/ready" prometheus

target_port="$(free_port)"
say "Starting a local web server on 127.0.0.1:$target_port"
mkdir -p "$work/www"
echo "hello from the demo target" >"$work/www/index.html"
python3 -m http.server "$target_port" --bind 127.0.0.1 --directory "$work/www" \
    >"$work/target.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$target_port/" target

cat >"$work/pushprobe.toml" <<TOML
[agent]
external_labels = { cluster = "demo" }
drain_timeout = "10s"
self_metrics_interval = "5s"

[[remote_write]]
url = "http://127.0.0.1:$prom_port/api/v1/write"
batch_send_deadline = "1s"

[[probe]]
name = "local-web"
kind = "http"
url = "http://127.0.0.1:$target_port/"
interval = "2s"
timeout = "1s"
TOML

say "Configuration"
"$PUSHPROBE" config check --config "$work/pushprobe.toml"

say "Running pushprobe for ${DEMO_SECONDS}s (log: $work/pushprobe.log)"
"$PUSHPROBE" run --config "$work/pushprobe.toml" >"$work/pushprobe.log" 2>&1 &
agent_pid="$!"
pids+=("$agent_pid")
sleep "$DEMO_SECONDS"
kill -TERM "$agent_pid"
agent_status=0
wait "$agent_pid" || agent_status=$?
echo "pushprobe exited with status $agent_status after SIGTERM"
tail -n 5 "$work/pushprobe.log"

# Prints an instant query's result one series per line: name{labels} value @ time.
show() {
    local query="$1"
    echo
    echo "# $query"
    curl -fsS --get --data-urlencode "query=$query" \
        "http://127.0.0.1:$prom_port/api/v1/query" | python3 -c '
import json, sys, time
data = json.load(sys.stdin)["data"]["result"]
if not data:
    print("  (no series)")
    sys.exit(1)
for r in data:
    m = dict(r["metric"])
    name = m.pop("__name__", "")
    labels = ",".join(f"{k}=\"{v}\"" for k, v in sorted(m.items()))
    ts, value = r["value"]
    print(f"  {name}{{{labels}}} {value}")
'
}

say "Series in Prometheus"
missing=0
show 'probe_success' || missing=1
show 'probe_http_duration_seconds' || missing=1
show 'pushprobe_probe_latency_seconds_count' || missing=1
show 'count_over_time(probe_success[5m])' || missing=1

if [ "$missing" -ne 0 ] || [ "$agent_status" -ne 0 ]; then
    echo
    echo "demo: FAILED (missing series or pushprobe exit $agent_status); pushprobe's log:" >&2
    cat "$work/pushprobe.log" >&2
    exit 1
fi
say "Demo finished: pushprobe's results arrived in Prometheus"
