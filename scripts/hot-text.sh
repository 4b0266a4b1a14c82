#!/usr/bin/env bash
# Regenerates scripts/hot-text.ld, the linker script that gathers the functions pushprobe runs into
# one section ahead of the rest of its code (docs/performance.md, "Code layout"; build.rs
# applies it to release builds on Linux).
#
# Builds pushprobe without the layout and with its symbols, runs it under callgrind
# (--dump-instr=yes: every instruction that ran) in three workloads, SECONDS each, and hands
# the profiles to scripts/hot_text.py, which writes the script:
#   relay     20 exporters (500 series each) and a node exporter scraped every 5 s, forwarded
#             to VictoriaMetrics 1.145 (remote write 1.0, zstd after the handshake): the
#             scrape benchmark's workload, smaller;
#   probes    50 HTTP probes and a TCP probe every second, remote-written to VictoriaMetrics;
#   relay-v2  the relay's exporters forwarded to Prometheus 3.5 with remote write 2.0.
# Functions every workload ran come first; each other function follows in the group of the
# first workload (in the order above) that ran it, so that code only the probes or only remote
# write 2.0 run sits apart from the relay's.
#
# Run it after a change that moves much code (a new dependency, a rework of the scrape or
# send path) or a toolchain upgrade, and commit scripts/hot-text.ld. A stale script costs memory,
# never correctness: functions it no longer names stay in `.text`.
#
# Usage: scripts/hot-text.sh [SECONDS]   (default 60)
# Needs: cargo, valgrind, nm (binutils), python3, curl, prometheus-node-exporter and the
# current peers (scripts/install-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
if [ "$SECONDS_EACH" -lt 10 ]; then
    echo "hot-text: profile each workload for 10 seconds or more, not $SECONDS_EACH" >&2
    exit 1
fi
TOOLS="${PUSHPROBE_TOOLS:-$HOME/.cache/pushprobe/tools}/bin"
PROM3="$TOOLS/prometheus-3.5.3"
VM145="$TOOLS/victoria-metrics-1.145.0"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_commands cargo valgrind nm python3 curl prometheus-node-exporter
require_executables "$PROM3" "$VM145"

# Its own target directory: the profiled build differs from the release one (no layout, symbols
# kept), and sharing a directory would rebuild each in turn.
TARGET_DIR="${HOT_TEXT_TARGET_DIR:-$PWD/target/hot-text}"
echo "== Building the profiled binary (no layout, with symbols) in $TARGET_DIR"
HOT_TEXT_LAYOUT=off CARGO_TARGET_DIR="$TARGET_DIR" CARGO_PROFILE_RELEASE_STRIP=none \
    cargo build --release --locked --bin pushprobe --example scrape_target --example bench_target
PUSHPROBE="$TARGET_DIR/release/pushprobe"

setup_workdir hot-text

# 500 series a target, not the benchmark's 2,500: the code that runs is the same, and under
# callgrind's fifty-fold slowdown larger scrapes would time out.
"$TARGET_DIR/release/examples/scrape_target" 20 500 >"$work/scrape.ports" 2>"$work/scrape.log" &
pids+=("$!")
"$TARGET_DIR/release/examples/bench_target" 4 >"$work/probe.ports" 2>"$work/probe.log" &
pids+=("$!")
for _ in $(seq 1 100); do
    if [ "$(wc -l <"$work/scrape.ports")" -ge 20 ] && [ "$(wc -l <"$work/probe.ports")" -ge 4 ]; then
        break
    fi
    sleep 0.1
done
mapfile -t scrape_ports <"$work/scrape.ports"
mapfile -t probe_ports <"$work/probe.ports"
if [ "${#scrape_ports[@]}" -lt 20 ] || [ "${#probe_ports[@]}" -lt 4 ]; then
    echo "hot-text: the target servers did not start" >&2
    exit 1
fi
start_node_exporter
start_victoria_metrics "$VM145"
prom_port="$(free_port)"
"$PROM3" --config.file=/dev/null --storage.tsdb.path="$work/prom" \
    --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver \
    >"$work/prometheus.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$prom_port/-/ready" prometheus

# scrape_tables: the relay's [[scrape]] tables.
scrape_tables() {
    printf '\n[[scrape]]\njob = "bench"\ninterval = "5s"\ntargets = [\n'
    printf '  "127.0.0.1:%s",\n' "${scrape_ports[@]}"
    printf ']\n\n[[scrape]]\njob = "node"\ninterval = "5s"\ntargets = ["127.0.0.1:%s"]\n' "$node_port"
}
# agent_table: the [agent] table every workload has: the listener that serves the agent's own
# metrics and health, which the profile polls like a monitoring system would.
listen_port="$(free_port)"
agent_table() {
    printf '[agent]\nlisten = "127.0.0.1:%s"\n' "$listen_port"
    printf 'external_labels = { prober = "hot-text" }\n\n'
}
{
    agent_table
    printf '[[remote_write]]\nurl = "http://127.0.0.1:%s/api/v1/write"\n' "$vm_port"
    scrape_tables
} >"$work/relay.toml"
{
    agent_table
    printf '[[remote_write]]\nurl = "http://127.0.0.1:%s/api/v1/write"\n' "$prom_port"
    printf 'protobuf_message = "io.prometheus.write.v2.Request"\n'
    scrape_tables
} >"$work/relay-v2.toml"
{
    agent_table
    printf '[[remote_write]]\nurl = "http://127.0.0.1:%s/api/v1/write"\n' "$vm_port"
    for i in $(seq 0 49); do
        printf '\n[[probe]]\nname = "http%s"\nkind = "http"\nurl = "http://127.0.0.1:%s/t/%s"\n' \
            "$i" "${probe_ports[i % 4]}" "$i"
        printf 'interval = "1s"\ntimeout = "1s"\n'
    done
    printf '\n[[probe]]\nname = "tcp"\nkind = "tcp"\ntarget = "127.0.0.1:%s"\n' "${probe_ports[0]}"
    printf 'interval = "1s"\ntimeout = "1s"\n'
} >"$work/probes.toml"

profiles=()
for workload in relay probes relay-v2; do
    "$PUSHPROBE" config check --config "$work/$workload.toml" >/dev/null
    echo "== Profiling $workload for ${SECONDS_EACH}s"
    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$work/$workload.callgrind" \
        "$PUSHPROBE" run --config "$work/$workload.toml" >"$work/$workload.log" 2>&1 &
    pid="$!"
    pids+=("$pid")
    for _ in $(seq 1 "$((SECONDS_EACH / 10))"); do
        sleep 10
        for path in /metrics /-/healthy /-/ready; do
            curl -fsS -o /dev/null "http://127.0.0.1:$listen_port$path" || true
        done
    done
    # A pushprobe that already exited is reported by the wait below.
    kill -TERM "$pid" 2>/dev/null || true
    # Under callgrind the drain and the profile's dump take a few seconds.
    wait "$pid" || {
        echo "hot-text: pushprobe failed in the $workload workload; its log:" >&2
        tail -n 20 "$work/$workload.log" >&2
        exit 1
    }
    profiles+=("$workload=$work/$workload.callgrind")
done
python3 scripts/hot_text.py "$PUSHPROBE" scripts/hot-text.ld "${profiles[@]}"
echo "== Wrote scripts/hot-text.ld; rebuild the release binary to apply it"
