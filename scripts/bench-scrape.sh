#!/usr/bin/env bash
# Scrape-and-forward benchmark: every sender in one run, on the same targets.
#   1. parse + encode throughput on one core (criterion, `benches/scrape.rs`): samples/s of
#      `parse_encode_cached`, `scrape_ingest_encode` and `gzip_decode` on a node-exporter-like
#      payload;
#   2. the relay workload: N synthetic exporters x M series plus a node exporter, scraped every
#      INTERVAL by each sender below at once, for DURATION seconds measured (after WARMUP):
#        into VictoriaMetrics 1.145:  pushprobe (compression "auto": zstd after the handshake),
#                                     vmagent 1.145 (zstd), Prometheus 3.5 agent (1.0), and with
#                                     STABLE=on (the default) vmagent 1.79 and Prometheus 2.42
#                                     agent from Debian stable;
#        into Prometheus 3.5:         pushprobe sending 1.0, pushprobe sending 2.0, and the
#                                     Prometheus 3.5 agent sending 2.0.
#      Each sender reaches its receiver through its own counting relay (scripts/count_proxy.py),
#      which counts the bytes it puts on the wire (HTTP headers and bodies). The report gives,
#      per sender: CPU seconds (utime+stime from /proc/PID/stat) over the measured window and
#      per minute, peak RSS (VmHWM), bytes sent, samples the receiver stored, and bytes per
#      stored sample over the whole run (senders are stopped gracefully first, so what they
#      sent has landed); then pushprobe's ratios against the targets.
# The targets and the receivers are not measured. Each sender tags its series with a
# `forwarder` external label; the figures only count if every sender delivered every target
# and series, and no pushprobe dropped samples from a full memory queue.
# At the end of the window the synthetic exporters stop, and the senders run on for
# SETTLE seconds before they are stopped: every sender then ends the exporters' series with
# one staleness marker each (Prometheus and vmagent do on a failed scrape, pushprobe too), so
# the bytes of every sender carry the same markers. (Stopped while the targets answer, only
# pushprobe would send them, as it marks its scraped series stale when it stops.) The markers
# are bytes on the wire but not stored samples.
#
# Usage: scripts/bench-scrape.sh [N] [M] [DURATION]   (defaults: 20 2500 60; INTERVAL=5s)
# CRITERION=off skips part 1 (its bench build is a second fat-LTO build).
# RW_EXTRA_TOML adds TOML lines to every pushprobe [[remote_write]] table, to compare
# settings (e.g. 'max_samples_per_send = 10000', vmagent's default rows per block).
# KEEP_WORKDIR=1 keeps the scratch directory (logs, configs, receiver data) for a post-mortem.
# COMPRESSION=on makes the targets gzip their answer when asked (`Accept-Encoding: gzip`).
# Needs: cargo, python3, curl; Debian's prometheus, victoria-metrics and
# prometheus-node-exporter (scripts/install-deps.sh), and the current peers that
# scripts/install-tools.sh puts in ~/.cache/pushprobe/tools.
# Exit status: 0 when every sender delivered (whatever the figures), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-${N:-20}}"
M="${2:-${M:-2500}}"
DURATION="${3:-${DURATION:-60}}"
INTERVAL="${INTERVAL:-5s}"
WARMUP="${WARMUP:-15}"
SETTLE="${SETTLE:-15}"
COMPRESSION="${COMPRESSION:-off}"
STABLE="${STABLE:-on}"
RW_EXTRA_TOML="${RW_EXTRA_TOML:-}"
CRITERION="${CRITERION:-on}"
case "$COMPRESSION" in
    on) target_args=(--gzip) ;;
    off) target_args=() ;;
    *)
        echo "bench: COMPRESSION must be on or off, not $COMPRESSION" >&2
        exit 1
        ;;
esac

TOOLS="${PUSHPROBE_TOOLS:-$HOME/.cache/pushprobe/tools}/bin"
PROM3="$TOOLS/prometheus-3.5.3"
VM145="$TOOLS/victoria-metrics-1.145.0"
VMAGENT145="$TOOLS/vmagent-1.145.0"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_commands cargo python3 curl prometheus-node-exporter
require_executables "$PROM3" "$VM145" "$VMAGENT145"
if [ "$STABLE" = on ]; then
    for tool in prometheus vmagent; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "bench: $tool (Debian stable) is required with STABLE=on; see scripts/install-deps.sh" >&2
            exit 1
        fi
    done
fi

if [ "$CRITERION" = on ]; then
    echo "== Parse + encode on one core (criterion)"
    cargo bench --bench scrape -- --warm-up-time 1 --measurement-time 5 \
        'scrape/(parse_text_cached|parse_encode_cached|scrape_ingest_encode|gzip_decode)$' 2>&1 |
        grep -E '^scrape/|thrpt' | tee "${TMPDIR:-/tmp}/pushprobe-bench-scrape-criterion.txt"
fi

echo "== Building release binaries"
cargo build --release --locked --bin pushprobe --example scrape_target
PUSHPROBE="${CARGO_TARGET_DIR:-$PWD/target}/release/pushprobe"
TARGET_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/scrape_target"
settle_binaries "$PUSHPROBE" "$TARGET_BIN"

setup_workdir bench-scrape

# --- Unmeasured infrastructure: targets, receivers, counting relays ----------------------------
"$TARGET_BIN" "${target_args[@]}" "$N" "$M" >"$work/target.ports" 2>"$work/target.log" &
target_pid="$!"
pids+=("$!")
for _ in $(seq 1 100); do
    [ "$(wc -l <"$work/target.ports")" -ge "$N" ] && break
    sleep 0.1
done
mapfile -t ports <"$work/target.ports"
if [ "${#ports[@]}" -lt "$N" ]; then
    echo "bench: target server did not start" >&2
    exit 1
fi
start_node_exporter

start_victoria_metrics "$VM145"

prom_rx_port="$(free_port)"
"$PROM3" \
    --config.file=/dev/null \
    --storage.tsdb.path="$work/prom-rx" \
    --web.listen-address="127.0.0.1:$prom_rx_port" \
    --web.enable-remote-write-receiver \
    --enable-feature=promql-delayed-name-removal \
    >"$work/prometheus-receiver.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$prom_rx_port/-/ready" prometheus-receiver

# relay NAME RECEIVER_PORT: starts a counting relay to the receiver and sets relay_port to its
# port. Not called in a command substitution: that subshell would lose the relay's PID, and the
# relay would then neither be stopped (so its final count is written) nor cleaned up on exit.
relay() {
    relay_port="$(free_port)"
    python3 scripts/count_proxy.py "$relay_port" "$2" "$work/$1.bytes" >"$work/$1-relay.log" 2>&1 &
    relay_pids+=("$!")
    pids+=("$!")
    for _ in $(seq 1 100); do
        [ -s "$work/$1.bytes" ] && break
        sleep 0.05
    done
}
relay_pids=()

targets_yaml() {
    for p in "${ports[@]}"; do
        echo "          - 127.0.0.1:$p"
    done
}

# Senders, in the order of the report: NAME, receiver, protocol.
senders=()
declare -A sender_pid sender_rx sender_proto pushprobe_web

# --- pushprobe --------------------------------------------------------------------------------
# pushprobe_sender NAME RECEIVER_PORT RECEIVER WRITE_PATH PROTO_LABEL EXTRA_TOML
pushprobe_sender() {
    local name="$1" rx_port="$2" rx="$3" path="$4" proto="$5" extra="$6" port web_port
    relay "$name" "$rx_port"
    port="$relay_port"
    web_port="$(free_port)"
    {
        cat <<TOML
[agent]
external_labels = { forwarder = "$name" }
listen = "127.0.0.1:$web_port"

[[remote_write]]
url = "http://127.0.0.1:$port$path"
$extra
$RW_EXTRA_TOML

[[scrape]]
job = "bench"
interval = "$INTERVAL"
targets = [
TOML
        for p in "${ports[@]}"; do
            echo "  \"127.0.0.1:$p\","
        done
        cat <<TOML
]

[[scrape]]
job = "node"
interval = "$INTERVAL"
targets = ["127.0.0.1:$node_port"]
TOML
    } >"$work/$name.toml"
    # PUSHPROBE_* variables override configuration keys: keep this script's own out.
    env -u PUSHPROBE_TOOLS "$PUSHPROBE" config check --config "$work/$name.toml" >/dev/null
    env -u PUSHPROBE_TOOLS "$PUSHPROBE" run --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
    pids+=("$!")
    senders+=("$name")
    sender_pid[$name]="$!"
    sender_rx[$name]="$rx"
    sender_proto[$name]="$proto"
    pushprobe_web[$name]="$web_port"
    wait_http "http://127.0.0.1:$web_port/-/healthy" "$name"
}

# --- Prometheus in agent mode ------------------------------------------------------------------
# prometheus_sender NAME BINARY AGENT_FLAG RECEIVER_PORT RECEIVER WRITE_PATH PROTO_LABEL EXTRA_YAML
prometheus_sender() {
    local name="$1" bin="$2" agent_flag="$3" rx_port="$4" rx="$5" path="$6" proto="$7" extra="$8"
    local port web_port
    relay "$name" "$rx_port"
    port="$relay_port"
    web_port="$(free_port)"
    {
        cat <<YAML
global:
  scrape_interval: $INTERVAL
  scrape_timeout: $INTERVAL
  external_labels:
    forwarder: $name
scrape_configs:
  - job_name: bench
    static_configs:
      - targets:
YAML
        targets_yaml
        cat <<YAML
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:$node_port"]
remote_write:
  - url: http://127.0.0.1:$port$path
$extra
YAML
    } >"$work/$name.yml"
    "$bin" "$agent_flag" \
        --config.file="$work/$name.yml" \
        --storage.agent.path="$work/$name-data" \
        --web.listen-address="127.0.0.1:$web_port" \
        >"$work/$name.log" 2>&1 &
    pids+=("$!")
    senders+=("$name")
    sender_pid[$name]="$!"
    sender_rx[$name]="$rx"
    sender_proto[$name]="$proto"
    wait_http "http://127.0.0.1:$web_port/-/ready" "$name"
}

# --- vmagent --------------------------------------------------------------------------------------
# vmagent_sender NAME BINARY RECEIVER_PORT RECEIVER PROTO_LABEL
vmagent_sender() {
    local name="$1" bin="$2" rx_port="$3" rx="$4" proto="$5" port web_port
    relay "$name" "$rx_port"
    port="$relay_port"
    web_port="$(free_port)"
    {
        cat <<YAML
global:
  scrape_interval: $INTERVAL
  scrape_timeout: $INTERVAL
scrape_configs:
  - job_name: bench
    static_configs:
      - targets:
YAML
        targets_yaml
        cat <<YAML
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:$node_port"]
YAML
    } >"$work/$name.yml"
    "$bin" \
        -promscrape.config="$work/$name.yml" \
        -remoteWrite.url="http://127.0.0.1:$port/api/v1/write" \
        -remoteWrite.label=forwarder="$name" \
        -remoteWrite.tmpDataPath="$work/$name-data" \
        -httpListenAddr="127.0.0.1:$web_port" \
        -loggerLevel=WARN \
        >"$work/$name.log" 2>&1 &
    pids+=("$!")
    senders+=("$name")
    sender_pid[$name]="$!"
    sender_rx[$name]="$rx"
    sender_proto[$name]="$proto"
    wait_http "http://127.0.0.1:$web_port/health" "$name"
}

v2_msg="io.prometheus.write.v2.Request"
pushprobe_sender pushprobe "$vm_port" vm-1.145 /api/v1/write "1.0 auto" ''
vmagent_sender vmagent-1.145 "$VMAGENT145" "$vm_port" vm-1.145 "1.0 zstd"
prometheus_sender prom-3.5-agent "$PROM3" --agent "$vm_port" vm-1.145 /api/v1/write "1.0 snappy" ''
if [ "$STABLE" = on ]; then
    vmagent_sender vmagent-1.79 vmagent "$vm_port" vm-1.145 "1.0 snappy"
    prometheus_sender prom-2.42-agent prometheus --enable-feature=agent "$vm_port" vm-1.145 /api/v1/write "1.0 snappy" ''
fi
pushprobe_sender pushprobe-rw1 "$prom_rx_port" prom-3.5 /api/v1/write "1.0 snappy" ''
pushprobe_sender pushprobe-rw2 "$prom_rx_port" prom-3.5 /api/v1/write "2.0 snappy" "protobuf_message = \"$v2_msg\""
prometheus_sender prom-3.5-agent-rw2 "$PROM3" --agent "$prom_rx_port" prom-3.5 /api/v1/write "2.0 snappy" \
    "    protobuf_message: $v2_msg"

measured=()
for s in "${senders[@]}"; do
    measured+=("${sender_pid[$s]}")
done
echo "== Running: N=$N targets x M=$M series + a node exporter every $INTERVAL for ${DURATION}s (warm-up ${WARMUP}s, ${#senders[@]} senders, target compression $COMPRESSION)"
sleep "$WARMUP"
measure_window "$DURATION" "${measured[@]}"

# What each pushprobe chose on the wire (message, compression) and whether anything went wrong:
# the bytes per sample mean little without it.
echo "== pushprobe's own view of its endpoints"
for s in "${!pushprobe_web[@]}"; do
    curl -fsS "http://127.0.0.1:${pushprobe_web[$s]}/metrics" >"$work/$s.metrics" || true
    # Samples dropped from a full memory queue never reach the receiver: the run does not count.
    awk '/^pushprobe_remote_write_samples_dropped_total[{ ]/ { n += $NF } END { print n + 0 }' \
        "$work/$s.metrics" >"$work/$s.dropped"
    grep -E '^pushprobe_remote_write_(compression|protocol|samples_(sent|failed|dropped)_total|bytes_sent_total|partial_writes_total|invalid_answers_total|zstd_refused_requests_total|metadata_requests_total|requests_total)[{ ]' \
        "$work/$s.metrics" | grep -v ' 0$' | sed "s/^/$s: /" || true
done

# Targets and series are counted as of the end of the window: pushprobe marks its scraped series
# stale when it stops (the Prometheus agents and vmagent do not), so after the stop an instant
# query no longer sees them.
window_end="$(date +%s)"

# The exporters go away, and every sender ends their series on its next failed scrape.
echo "== Stopping the exporters; the senders run on for ${SETTLE}s"
kill -TERM "$target_pid" 2>/dev/null || true
wait "$target_pid" 2>/dev/null || true
sleep "$SETTLE"

# Graceful stop, so what each sender sent has landed before bytes and samples are compared.
for s in "${senders[@]}"; do
    kill -TERM "${sender_pid[$s]}" 2>/dev/null || true
done
for s in "${senders[@]}"; do
    wait "${sender_pid[$s]}" 2>/dev/null || true
done
sleep 1
for p in "${relay_pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
done
for p in "${relay_pids[@]}"; do
    wait "$p" 2>/dev/null || true
done

curl -fsS -o /dev/null "http://127.0.0.1:$vm_port/internal/force_flush" || true
sleep 2
# query RECEIVER TIME PROMQL
query() {
    local port
    case "$1" in
        vm-1.145) port="$vm_port" ;;
        prom-3.5) port="$prom_rx_port" ;;
    esac
    curl -fsS --get --data-urlencode "query=$3" --data-urlencode "time=$2" \
        "http://127.0.0.1:$port/api/v1/query"
}
# Prometheus evaluates count_over_time per series and drops the metric name before the sum, so
# series that differ only by name would collide; its receiver runs with
# promql-delayed-name-removal to keep them apart until the aggregation.
now="$(date +%s)"
for rx in vm-1.145 prom-3.5; do
    query "$rx" "$window_end" 'count by (forwarder) (up{job="bench"} == 1)' >"$work/$rx.up.json"
    query "$rx" "$window_end" 'count by (forwarder) ({__name__=~"bench_family_.*",job="bench"})' \
        >"$work/$rx.series.json"
    query "$rx" "$now" 'sum by (forwarder) (count_over_time({forwarder=~".+"}[1h]))' >"$work/$rx.samples.json"
done

{
    for s in "${senders[@]}"; do
        p="${sender_pid[$s]}"
        printf '%s %s %s %s %s %s %s %s\n' "$s" "${sender_rx[$s]}" "${sender_proto[$s]// /_}" \
            "${cpu0[$p]}" "${cpu1[$p]}" "${hwm[$p]}" "$(cat "$work/$s.bytes")" "${rss[$p]}"
    done
} >"$work/senders.txt"

python3 - "$N" "$M" "$INTERVAL" "$DURATION" "$work" <<'PY'
import json
import sys

n, m, interval, duration, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]

def by_forwarder(path):
    with open(path) as f:
        return {r["metric"].get("forwarder", "?"): float(r["value"][1])
                for r in json.load(f)["data"]["result"]}

stats = {}
for rx in ("vm-1.145", "prom-3.5"):
    stats[rx] = {k: by_forwarder(f"{work}/{rx}.{k}.json") for k in ("up", "series", "samples")}

rows = []
with open(f"{work}/senders.txt") as f:
    for line in f:
        name, rx, proto, c0, c1, hwm, sent, rss = line.split()
        st = stats[rx]
        samples = st["samples"].get(name, 0)
        rows.append({
            "name": name, "rx": rx, "proto": proto.replace("_", " "),
            "cpu": float(c1) - float(c0), "hwm": int(hwm) / 1024, "bytes": int(sent),
            "samples": samples, "bps": int(sent) / samples if samples else float("nan"),
            "up": st["up"].get(name, 0), "series": st["series"].get(name, 0),
        })
by = {r["name"]: r for r in rows}

print()
print(f"N={n} targets x M={m} series + node exporter every {interval}; CPU over {duration}s measured; "
      "bytes and samples over the whole run")
print(f"{'sender':<20}{'receiver':<10}{'protocol':<12}{'CPU s':>7}{'CPU s/min':>10}{'peak RSS MiB':>13}"
      f"{'MB sent':>9}{'samples':>11}{'B/sample':>9}{'up':>4}")
for r in rows:
    print(f"{r['name']:<20}{r['rx']:<10}{r['proto']:<12}{r['cpu']:>7.2f}{r['cpu'] * 60 / duration:>10.2f}"
          f"{r['hwm']:>13.1f}{r['bytes'] / 1e6:>9.2f}{r['samples']:>11.0f}{r['bps']:>9.2f}{r['up']:>4.0f}")

def ratio(x, y):
    return x / y if y else float("nan")

def check(label, value, limit, op="<="):
    ok = value <= limit if op == "<=" else value < limit
    print(f"{label:<58}{value:>8.3f}  (target {op} {limit:.3f}) {'OK' if ok else 'MISSED'}")

print()
pp, va = by["pushprobe"], by["vmagent-1.145"]
check("pushprobe -> VM: bytes/sample vs vmagent 1.145's", pp["bps"], va["bps"])
check("pushprobe / vmagent 1.145 CPU", ratio(pp["cpu"], va["cpu"]), 0.25)
check("pushprobe / vmagent 1.145 peak RSS", ratio(pp["hwm"], va["hwm"]), 0.30)
r1, r2, pa2 = by["pushprobe-rw1"], by["pushprobe-rw2"], by["prom-3.5-agent-rw2"]
check("pushprobe 2.0 / pushprobe 1.0 bytes/sample (Prometheus 3.5)", ratio(r2["bps"], r1["bps"]), 0.70)
check("pushprobe 2.0 bytes/sample vs Prometheus 3.5 agent 2.0's", r2["bps"], pa2["bps"], "<")
for other in ("prom-3.5-agent", "vmagent-1.79", "prom-2.42-agent"):
    if other in by:
        o = by[other]
        print(f"pushprobe / {other:<17} CPU {ratio(pp['cpu'], o['cpu']):.3f}  peak RSS "
              f"{ratio(pp['hwm'], o['hwm']):.3f}  bytes/sample {ratio(pp['bps'], o['bps']):.3f}")

dropped = {}
for r in rows:
    try:
        with open(f"{work}/{r['name']}.dropped") as f:
            dropped[r["name"]] = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
for name, d in dropped.items():
    if d:
        print(f"{name} dropped {d} samples from a full memory queue (queue_capacity)")
ok = all(r["up"] == n and r["series"] == n * m for r in rows) and not any(dropped.values())
print()
print("every sender delivered every target and series" if ok else
      "NOT every sender delivered every target, series and sample: the figures are not comparable")
sys.exit(0 if ok else 1)
PY
