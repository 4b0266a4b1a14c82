#!/usr/bin/env bash
# Discovery benchmarks: many scrape targets from `file_sd_configs`, at scale and under churn.
#
# MODE=scale (the default): N targets (default 5,000), each a small exporter of M series
#   (default 10) served locally by one process (`examples/scrape_target.rs`, one port per
#   target unless TARGET_PORTS says fewer; then targets share ports and differ by path and
#   `instance`), listed in one file_sd JSON file and scraped every INTERVAL (default 15s) in one
#   run by pushprobe (`[[scrape]]` with `[[scrape.file_sd_configs]]`) and by Prometheus 3.5 in
#   agent mode (`file_sd_configs`, the same file), both remote-writing to VictoriaMetrics 1.145.
#   It reports CPU seconds (utime+stime from /proc/PID/stat) over DURATION seconds measured
#   (after WARMUP) and peak RSS (VmHWM) of each, and pushprobe's ratios against the targets
#   (<= 0.25x the agent's CPU, <= 0.2x its peak RSS). The figures only count if both delivered
#   every target and series.
#
# MODE=churn: pushprobe alone, scraping every INTERVAL (default 2s) the targets of a file_sd
#   file rewritten ROUNDS times (default N / ROUND: 20): each round replaces the ROUND live
#   targets (default 500) with ROUND new ones, so N targets (default 10,000) come and go after
#   the first set. RSS (VmRSS) is sampled after a warm-up with the first set (the baseline),
#   after every round (ROUND_SECONDS, default 10: files are checked every 5 seconds), and at
#   the end after SETTLE seconds; the report gives the baseline, the peak, the final RSS and
#   final/baseline. It then checks the receiver: every target that ever ran delivered `up`,
#   and only the live set is still present (the removed targets' series ended with staleness
#   markers).
#
# The targets and the receiver are not measured. In MODE=scale, the script can take up to a
# minute to exit after the report: the Prometheus agent flushes its remote write when it stops.
# Usage: [MODE=scale] scripts/bench-discovery.sh [N] [DURATION]    (defaults: 5000 60)
#        MODE=churn scripts/bench-discovery.sh [N] [ROUND]          (defaults: 10000 500)
# KEEP_WORKDIR=1 keeps the scratch directory (logs, configs, receiver data).
# Needs: cargo, python3, curl, and the current peers that scripts/install-tools.sh puts in
# ~/.cache/pushprobe/tools (Prometheus 3.5, VictoriaMetrics 1.145).
# Exit status: 0 when every sender delivered and (churn) the stale check passed, whatever the
# figures; 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${MODE:-scale}"
M="${M:-10}"
case "$MODE" in
    scale)
        N="${1:-${N:-5000}}"
        DURATION="${2:-${DURATION:-60}}"
        INTERVAL="${INTERVAL:-15s}"
        WARMUP="${WARMUP:-30}"
        TARGET_PORTS="${TARGET_PORTS:-$N}"
        ;;
    churn)
        N="${1:-${N:-10000}}"
        ROUND="${2:-${ROUND:-500}}"
        INTERVAL="${INTERVAL:-2s}"
        WARMUP="${WARMUP:-20}"
        ROUND_SECONDS="${ROUND_SECONDS:-10}"
        SETTLE="${SETTLE:-30}"
        ROUNDS=$((N / ROUND))
        if [ "$ROUNDS" -lt 1 ] || [ $((ROUNDS * ROUND)) -ne "$N" ]; then
            echo "bench: N ($N) must be a multiple of ROUND ($ROUND)" >&2
            exit 1
        fi
        # One port per live target; the targets of later rounds reuse them with new paths.
        TARGET_PORTS="${TARGET_PORTS:-$ROUND}"
        ;;
    *)
        echo "bench: MODE must be scale or churn, not $MODE" >&2
        exit 1
        ;;
esac

TOOLS="${PUSHPROBE_TOOLS:-$HOME/.cache/pushprobe/tools}/bin"
PROM3="$TOOLS/prometheus-3.5.3"
VM145="$TOOLS/victoria-metrics-1.145.0"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_commands cargo python3 curl
require_executables "$PROM3" "$VM145"
# Every target holds a listening socket in the target server and a connection in each scraper.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((3 * TARGET_PORTS + 200)) ]; then
    echo "bench: open-file limit $(ulimit -n) is too low for $TARGET_PORTS target ports; raise it (ulimit -n) or set TARGET_PORTS lower" >&2
    exit 1
fi

echo "== Building release binaries"
cargo build --release --locked --bin pushprobe --example scrape_target
PUSHPROBE="${CARGO_TARGET_DIR:-$PWD/target}/release/pushprobe"
TARGET_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/scrape_target"
settle_binaries "$PUSHPROBE" "$TARGET_BIN"

setup_workdir bench-discovery

# --- Unmeasured infrastructure: the targets and the receiver ----------------------------------
"$TARGET_BIN" "$TARGET_PORTS" "$M" >"$work/target.ports" 2>"$work/target.log" &
pids+=("$!")
for _ in $(seq 1 300); do
    [ "$(wc -l <"$work/target.ports")" -ge "$TARGET_PORTS" ] && break
    sleep 0.1
done
if [ "$(wc -l <"$work/target.ports")" -lt "$TARGET_PORTS" ]; then
    echo "bench: target server did not start" >&2
    tail -n 20 "$work/target.log" >&2
    exit 1
fi

# write_targets FILE FIRST COUNT: writes the file_sd JSON of targets FIRST ... FIRST+COUNT-1,
# each in its own group: target i is port i mod TARGET_PORTS with the path /metrics/i (and, when
# targets share ports, its own `instance`, or both scrapers would merge them). Written to a
# temporary file and renamed over FILE, so no reader sees half of it.
write_targets() {
    python3 - "$work/target.ports" "$1" "$2" "$3" <<'PY'
import json
import os
import sys

ports_file, path, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(ports_file) as f:
    ports = [int(line) for line in f if line.strip()]
shared = first + count > len(ports)
groups = []
for i in range(first, first + count):
    port = ports[i % len(ports)]
    labels = {"__metrics_path__": f"/metrics/{i}"}
    if shared:
        labels["instance"] = f"127.0.0.1:{port}/metrics/{i}"
    groups.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
with open(path + ".tmp", "w") as f:
    json.dump(groups, f)
os.replace(path + ".tmp", path)
PY
}

start_victoria_metrics "$VM145"
write_url="http://127.0.0.1:$vm_port/api/v1/write"

# query PROMQL: an instant query against VictoriaMetrics, now.
query() {
    curl -fsS --get --data-urlencode "query=$1" "http://127.0.0.1:$vm_port/api/v1/query"
}

# --- pushprobe ---------------------------------------------------------------------------------
# start_pushprobe JOB: starts pushprobe scraping the targets of $work/targets.json as JOB, and
# sets pp_pid and pp_web.
start_pushprobe() {
    pp_web="$(free_port)"
    cat >"$work/pushprobe.toml" <<TOML
[agent]
external_labels = { forwarder = "pushprobe" }
listen = "127.0.0.1:$pp_web"

[[remote_write]]
url = "$write_url"

[[scrape]]
job = "$1"
interval = "$INTERVAL"

[[scrape.file_sd_configs]]
files = ["$work/targets.json"]
TOML
    # PUSHPROBE_* variables override configuration keys: keep this script's own out.
    env -u PUSHPROBE_TOOLS "$PUSHPROBE" config check --config "$work/pushprobe.toml" >/dev/null
    env -u PUSHPROBE_TOOLS "$PUSHPROBE" run --config "$work/pushprobe.toml" >"$work/pushprobe.log" 2>&1 &
    pp_pid="$!"
    pids+=("$pp_pid")
    wait_http "http://127.0.0.1:$pp_web/-/healthy" pushprobe
}

# Samples pushprobe dropped from a full memory queue never reach the receiver.
pushprobe_dropped() {
    curl -fsS "http://127.0.0.1:$pp_web/metrics" |
        awk '/^pushprobe_remote_write_samples_dropped_total[{ ]/ { n += $NF } END { print n + 0 }'
}

if [ "$MODE" = scale ]; then
    write_targets "$work/targets.json" 0 "$N"
    start_pushprobe disc

    # --- Prometheus 3.5 in agent mode, the same file ----------------------------------------------
    prom_port="$(free_port)"
    cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: $INTERVAL
  external_labels:
    forwarder: prom-3.5-agent
scrape_configs:
  - job_name: disc
    file_sd_configs:
      - files: ["$work/targets.json"]
remote_write:
  - url: $write_url
YAML
    "$PROM3" --agent \
        --config.file="$work/prometheus.yml" \
        --storage.agent.path="$work/prom-agent" \
        --web.listen-address="127.0.0.1:$prom_port" \
        >"$work/prometheus.log" 2>&1 &
    prom_pid="$!"
    pids+=("$prom_pid")
    wait_http "http://127.0.0.1:$prom_port/-/ready" prometheus

    echo "== Running: N=$N file_sd targets x M=$M series every $INTERVAL on $TARGET_PORTS ports for ${DURATION}s (warm-up ${WARMUP}s not in the window)"
    sleep "$WARMUP"
    measure_window "$DURATION" "$pp_pid" "$prom_pid"
    dropped="$(pushprobe_dropped)"

    # Both sides must have scraped every target and delivered every series, as of now.
    sleep 2
    up="$(query 'count by (forwarder) (up{job="disc"} == 1)')"
    series="$(query 'count by (forwarder) ({__name__=~"bench_family_.*",job="disc"})')"

    python3 - "$N" "$M" "$INTERVAL" "$DURATION" "$dropped" \
        "${cpu0[$pp_pid]}" "${cpu1[$pp_pid]}" "${hwm[$pp_pid]}" "${rss[$pp_pid]}" \
        "${cpu0[$prom_pid]}" "${cpu1[$prom_pid]}" "${hwm[$prom_pid]}" "${rss[$prom_pid]}" \
        "$up" "$series" <<'PY'
import json
import sys

a = sys.argv[1:]
n, m, interval, duration, dropped = int(a[0]), int(a[1]), a[2], int(a[3]), int(a[4])

def proc(i):
    c0, c1, hwm, rss = float(a[i]), float(a[i + 1]), int(a[i + 2]), int(a[i + 3])
    return {"window": c1 - c0, "total": c1, "hwm": hwm / 1024, "rss": rss / 1024}

pp, pr = proc(5), proc(9)

def by_forwarder(text):
    return {r["metric"].get("forwarder", "?"): float(r["value"][1])
            for r in json.loads(text)["data"]["result"]}

up, series = by_forwarder(a[13]), by_forwarder(a[14])

def ratio(x, y):
    return x / y if y else float("nan")

print()
print(f"MODE=scale: N={n} file_sd targets x M={m} series every {interval}, {duration}s measured window")
print(f"{'process':<22}{'CPU s (window)':>16}{'CPU s (life)':>14}{'peak RSS MiB':>14}{'RSS MiB':>10}"
      f"{'targets up':>12}{'series':>9}")
for name, key, p in [("pushprobe", "pushprobe", pp), ("prometheus --agent", "prom-3.5-agent", pr)]:
    print(f"{name:<22}{p['window']:>16.2f}{p['total']:>14.2f}{p['hwm']:>14.1f}{p['rss']:>10.1f}"
          f"{up.get(key, 0):>12.0f}{series.get(key, 0):>9.0f}")
print()
for label, value, target in [
    ("CPU ratio pushprobe / agent (window)", ratio(pp["window"], pr["window"]), 0.25),
    ("peak RSS ratio pushprobe / agent", ratio(pp["hwm"], pr["hwm"]), 0.20),
]:
    print(f"{label:<40}{value:.3f}   (target <= {target:.2f})  {'OK' if value <= target else 'MISSED'}")
print(f"CPU ratio pushprobe / agent (life)      {ratio(pp['total'], pr['total']):.3f}")
print(f"RSS ratio pushprobe / agent (end)       {ratio(pp['rss'], pr['rss']):.3f}")
if dropped:
    print(f"pushprobe dropped {dropped} samples from a full memory queue (queue_capacity)")
ok = all(up.get(k, 0) == n and series.get(k, 0) == n * m for k in ("pushprobe", "prom-3.5-agent"))
ok = ok and not dropped
print()
print("both delivered every target and series" if ok else
      "NOT both delivered every target and series: the figures are not comparable")
sys.exit(0 if ok else 1)
PY
    exit 0
fi

# --- MODE=churn ----------------------------------------------------------------------------------
write_targets "$work/targets.json" 0 "$ROUND"
start_pushprobe churn
echo "== Churn: $ROUND live targets x M=$M series every $INTERVAL; $ROUNDS rounds of $ROUND new targets replacing the live ones, ${ROUND_SECONDS}s apart (warm-up ${WARMUP}s, settle ${SETTLE}s)"
sleep "$WARMUP"
trace=("$(status_kib "$pp_pid" VmRSS)")
echo "baseline: ${trace[0]} KiB"
for ((r = 1; r <= ROUNDS; r++)); do
    write_targets "$work/targets.json" $((r * ROUND)) "$ROUND"
    sleep "$ROUND_SECONDS"
    if [ ! -d "/proc/$pp_pid" ]; then
        echo "bench: pushprobe exited during the run; its log:" >&2
        tail -n 30 "$work/pushprobe.log" >&2
        exit 1
    fi
    trace+=("$(status_kib "$pp_pid" VmRSS)")
    echo "round $r: ${trace[r]} KiB"
done
sleep "$SETTLE"
final="$(status_kib "$pp_pid" VmRSS)"
peak="$(status_kib "$pp_pid" VmHWM)"
dropped="$(pushprobe_dropped)"
cpu="$(cpu_seconds "$pp_pid")"
# Every target that ever ran reported `up`; only the live set may still be present: the
# removed targets' series ended with staleness markers, so an instant query no longer sees them.
ever="$(query 'count(last_over_time(up{job="churn"}[1h]))')"
present="$(query 'count(up{job="churn"})')"
present_series="$(query 'count({__name__=~"bench_family_.*",job="churn"})')"

python3 - "$N" "$ROUND" "$M" "$final" "$peak" "$dropped" "$cpu" "$ever" "$present" \
    "$present_series" "${trace[@]}" <<'PY'
import json
import sys

a = sys.argv[1:]
n, rnd, m, final, peak, dropped, cpu = (int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]),
                                        int(a[5]), float(a[6]))

def count(text):
    result = json.loads(text)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0

ever, present, present_series = count(a[7]), count(a[8]), count(a[9])
trace = [int(x) for x in a[10:]]
base = trace[0]
print()
print(f"MODE=churn: {n} targets came and went ({rnd} live at a time, {len(trace) - 1} rounds), "
      f"M={m} series each")
print("VmRSS after each round, MiB: " + " ".join(f"{x / 1024:.1f}" for x in trace[1:]))
print(f"baseline (first {rnd} targets): {base / 1024:.1f} MiB")
print(f"peak sampled: {max(trace + [final]) / 1024:.1f} MiB   (VmHWM {peak / 1024:.1f} MiB)")
print(f"final (after settling):        {final / 1024:.1f} MiB")
print(f"final / baseline:              {final / base:.3f}")
print(f"pushprobe CPU over the run:    {cpu:.2f} s")
print()
print(f"targets that delivered up:     {ever}   (expected {n + rnd})")
print(f"up series present now:         {present}   (expected {rnd}: the live set)")
print(f"bench series present now:      {present_series}   (expected {rnd * m})")
if dropped:
    print(f"pushprobe dropped {dropped} samples from a full memory queue (queue_capacity)")
ok = ever == n + rnd and present == rnd and present_series == rnd * m and not dropped
print("every target delivered, and every removed target's series ended" if ok else
      "NOT every target delivered or ended: see the counts above")
sys.exit(0 if ok else 1)
PY
