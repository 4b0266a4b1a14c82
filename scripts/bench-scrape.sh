#!/usr/bin/env bash
# Scrape-and-forward benchmark, in one run on the same targets:
#   1. parse + encode throughput on one core (criterion, `benches/scrape.rs`): samples/s of
#      `parse_encode_cached`, `scrape_ingest_encode` and `gzip_decode` on a node-exporter-like
#      payload;
#   2. forwarding N synthetic exporters × M series every INTERVAL for DURATION seconds with
#      pushprobe, Prometheus in agent mode and vmagent side by side, all remote-writing to one
#      local VictoriaMetrics. It reports CPU seconds (utime+stime from /proc/PID/stat) over the
#      measured window and peak RSS (VmHWM) of each forwarder, and pushprobe's ratios.
# The targets and VictoriaMetrics are not measured. Each forwarder tags its series with a
# `forwarder` external label; the run only counts if every forwarder delivered every target.
#
# Usage: scripts/bench-scrape.sh [N] [M] [DURATION]      (defaults: 50 2000 60; INTERVAL=5s)
# COMPRESSION=on makes the targets gzip their answer when asked (`Accept-Encoding: gzip`), as
# exporters do; all three forwarders ask by default, so all three then decode gzip. The
# default, COMPRESSION=off, serves every body unencoded. Compare the two for gzip's cost.
# Needs: cargo, python3, curl, and the Debian packages prometheus and victoria-metrics
# (which ships vmagent); scripts/install-deps.sh installs them.
# Exit status: 0 when all three forwarders delivered (whatever the figures), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-${N:-50}}"
M="${2:-${M:-2000}}"
DURATION="${3:-${DURATION:-60}}"
INTERVAL="${INTERVAL:-5s}"
WARMUP="${WARMUP:-15}"
COMPRESSION="${COMPRESSION:-off}"
case "$COMPRESSION" in
    on) target_args=(--gzip) ;;
    off) target_args=() ;;
    *)
        echo "bench: COMPRESSION must be on or off, not $COMPRESSION" >&2
        exit 1
        ;;
esac

for tool in cargo python3 curl prometheus victoria-metrics vmagent; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench: $tool is required; see scripts/install-deps.sh" >&2
        exit 1
    fi
done

echo "== Parse + encode on one core (criterion)"
cargo bench --bench scrape -- --warm-up-time 1 --measurement-time 5 \
    'scrape/(parse_text_cached|parse_encode_cached|scrape_ingest_encode|gzip_decode)$' 2>&1 |
    grep -E '^scrape/|thrpt' | tee "${TMPDIR:-/tmp}/pushprobe-bench-scrape-criterion.txt"

echo "== Building release binaries"
cargo build --release --locked --bin pushprobe --example scrape_target
PUSHPROBE="${CARGO_TARGET_DIR:-$PWD/target}/release/pushprobe"
TARGET_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/scrape_target"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
setup_workdir bench-scrape


# --- Unmeasured infrastructure: targets and the receiver --------------------------------------
"$TARGET_BIN" "${target_args[@]}" "$N" "$M" >"$work/target.ports" 2>"$work/target.log" &
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

vm_port="$(free_port)"
victoria-metrics \
    -storageDataPath="$work/vm-data" \
    -httpListenAddr="127.0.0.1:$vm_port" \
    -retentionPeriod=1 \
    -search.latencyOffset=0s \
    -search.disableCache \
    -search.maxUniqueTimeseries=5000000 \
    -loggerLevel=WARN \
    >"$work/victoria-metrics.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$vm_port/health" victoria-metrics
write_url="http://127.0.0.1:$vm_port/api/v1/write"

targets_yaml() {
    for p in "${ports[@]}"; do
        echo "          - 127.0.0.1:$p"
    done
}

# --- pushprobe ----------------------------------------------------------------------------------
{
    cat <<TOML
[agent]
external_labels = { forwarder = "pushprobe" }

[[remote_write]]
url = "$write_url"

[[scrape]]
job = "bench"
interval = "$INTERVAL"
targets = [
TOML
    for p in "${ports[@]}"; do
        echo "  \"127.0.0.1:$p\","
    done
    echo "]"
} >"$work/pushprobe.toml"
"$PUSHPROBE" config check --config "$work/pushprobe.toml" >/dev/null
"$PUSHPROBE" run --config "$work/pushprobe.toml" >"$work/pushprobe.log" 2>&1 &
pp_pid="$!"
pids+=("$pp_pid")

# --- Prometheus agent mode ----------------------------------------------------------------------
prom_port="$(free_port)"
{
    cat <<YAML
global:
  scrape_interval: $INTERVAL
  scrape_timeout: $INTERVAL
  external_labels:
    forwarder: prometheus-agent
scrape_configs:
  - job_name: bench
    static_configs:
      - targets:
YAML
    targets_yaml
    cat <<YAML
remote_write:
  - url: $write_url
YAML
} >"$work/prometheus.yml"
prometheus --enable-feature=agent \
    --config.file="$work/prometheus.yml" \
    --storage.agent.path="$work/prom-agent" \
    --web.listen-address="127.0.0.1:$prom_port" \
    >"$work/prometheus.log" 2>&1 &
prom_pid="$!"
pids+=("$prom_pid")

# --- vmagent --------------------------------------------------------------------------------------
vma_port="$(free_port)"
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
} >"$work/vmagent.yml"
vmagent \
    -promscrape.config="$work/vmagent.yml" \
    -remoteWrite.url="$write_url" \
    -remoteWrite.label=forwarder=vmagent \
    -remoteWrite.tmpDataPath="$work/vmagent-data" \
    -httpListenAddr="127.0.0.1:$vma_port" \
    -loggerLevel=WARN \
    >"$work/vmagent.log" 2>&1 &
vma_pid="$!"
pids+=("$vma_pid")

wait_http "http://127.0.0.1:$prom_port/-/ready" prometheus
wait_http "http://127.0.0.1:$vma_port/health" vmagent

echo "== Running: N=$N targets x M=$M series every $INTERVAL for ${DURATION}s (warm-up ${WARMUP}s, compression $COMPRESSION)"
sleep "$WARMUP"
measure_window "$DURATION" "$pp_pid" "$prom_pid" "$vma_pid"

curl -fsS -o /dev/null "http://127.0.0.1:$vm_port/internal/force_flush" || true
sleep 2
query() {
    curl -fsS --get --data-urlencode "query=$1" "http://127.0.0.1:$vm_port/api/v1/query"
}
up="$(query 'count by (forwarder) (up{job="bench"} == 1)')"
series="$(query 'count by (forwarder) ({__name__=~"bench_family_.*",job="bench"})')"
samples="$(query "sum by (forwarder) (count_over_time({__name__=~\"bench_family_.*\",job=\"bench\"}[${DURATION}s]))")"

kill -TERM "$pp_pid" "$prom_pid" "$vma_pid" 2>/dev/null || true
wait "$pp_pid" "$prom_pid" "$vma_pid" 2>/dev/null || true

python3 - "$N" "$M" "$INTERVAL" "$DURATION" \
    "${cpu0[$pp_pid]}" "${cpu1[$pp_pid]}" "${hwm[$pp_pid]}" "${rss[$pp_pid]}" \
    "${cpu0[$prom_pid]}" "${cpu1[$prom_pid]}" "${hwm[$prom_pid]}" "${rss[$prom_pid]}" \
    "${cpu0[$vma_pid]}" "${cpu1[$vma_pid]}" "${hwm[$vma_pid]}" "${rss[$vma_pid]}" \
    "$up" "$series" "$samples" <<'PY'
import json
import sys

a = sys.argv[1:]
n, m, interval, duration = int(a[0]), int(a[1]), a[2], int(a[3])
def proc(i):
    c0, c1, hwm, rss = float(a[i]), float(a[i + 1]), int(a[i + 2]), int(a[i + 3])
    return {"cpu": c1 - c0, "hwm": hwm / 1024, "rss": rss / 1024}
pp, pr, vm = proc(4), proc(8), proc(12)

def by_forwarder(text):
    return {r["metric"].get("forwarder", "?"): float(r["value"][1])
            for r in json.loads(text)["data"]["result"]}
up, series, samples = by_forwarder(a[16]), by_forwarder(a[17]), by_forwarder(a[18])

print()
print(f"N={n} targets x M={m} series every {interval}, {duration}s measured window")
print(f"{'forwarder':<20}{'CPU s':>8}{'peak RSS MiB':>14}{'RSS MiB':>10}{'targets up':>12}"
      f"{'series':>10}{'samples':>12}")
for name, key, p in [("pushprobe", "pushprobe", pp), ("prometheus --agent", "prometheus-agent", pr),
                     ("vmagent", "vmagent", vm)]:
    print(f"{name:<20}{p['cpu']:>8.2f}{p['hwm']:>14.1f}{p['rss']:>10.1f}"
          f"{up.get(key, 0):>12.0f}{series.get(key, 0):>10.0f}{samples.get(key, 0):>12.0f}")
def ratio(x, y):
    return x / y if y else float("nan")
print()
for other, p in [("vmagent", vm), ("prometheus agent", pr)]:
    c, h = ratio(pp["cpu"], p["cpu"]), ratio(pp["hwm"], p["hwm"])
    target = other == "vmagent"
    print(f"pushprobe / {other:<17} CPU {c:.3f}{'  (target <= 0.5) ' + ('OK' if c <= 0.5 else 'MISSED') if target else ''}")
    print(f"pushprobe / {other:<17} peak RSS {h:.3f}{'  (target <= 0.5) ' + ('OK' if h <= 0.5 else 'MISSED') if target else ''}")
ok = all(up.get(k, 0) == n and series.get(k, 0) == n * m
         for k in ["pushprobe", "prometheus-agent", "vmagent"])
print()
print("all forwarders delivered every target and series" if ok else
      "NOT every forwarder delivered every target and series: the figures are not comparable")
sys.exit(0 if ok else 1)
PY
