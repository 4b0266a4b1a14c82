#!/usr/bin/env bash
# Side-by-side resource benchmark, in one run on the same targets:
#   - pushprobe probing N local targets every second, remote-writing to VictoriaMetrics;
#   - the usual stack for that job: prometheus-blackbox-exporter (one module of the same kind)
#     scraped every second by Prometheus in agent mode, remote-writing to the same
#     VictoriaMetrics.
# KIND picks the probe (default http):
#   http  N paths on a local HTTP server (blackbox module http_2xx);
#   tcp   a TCP connect to N local listening ports (tcp_connect);
#   icmp  an echo request to N loopback addresses 127.0.0.1 ... 127.0.0.N (icmp; needs root or
#         CAP_NET_RAW for both probers, N <= 254).
# It reports CPU seconds (utime+stime from /proc/PID/stat) and peak RSS (VmHWM) of pushprobe
# against blackbox exporter + Prometheus summed, their ratios, and pushprobe's idle RSS
# (one probe, after settling). The HTTP target and VictoriaMetrics are not measured.
#
# Usage: [KIND=http|tcp|icmp] scripts/bench-probes.sh [N] [SECONDS]     (defaults: http 200 60)
# PEERS=current (the default) runs the current peers that scripts/install-tools.sh installs:
# blackbox exporter 0.28, Prometheus 3.5 agent and VictoriaMetrics 1.145; PEERS=stable runs
# Debian stable's (blackbox exporter 0.23, Prometheus 2.42, VictoriaMetrics 1.79).
# PREBUILT=1 skips the release build and measures the binaries already in the target dir.
# Needs: cargo, python3, curl, and those peers (scripts/install-deps.sh, scripts/install-tools.sh).
# Exit status: 0 when both sides delivered probe results (whatever the figures), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-${N:-200}}"
KIND="${KIND:-http}"
# The targets each kind is held to (issue figures): HTTP CPU and peak RSS, TCP and ICMP CPU.
case "$KIND" in
    http) CPU_TARGET=0.10 RSS_TARGET=0.12 MODULE=http_2xx ;;
    tcp) CPU_TARGET=0.20 RSS_TARGET= MODULE=tcp_connect ;;
    icmp)
        CPU_TARGET=0.20 RSS_TARGET= MODULE=icmp
        if [ "$N" -gt 254 ]; then
            echo "bench: KIND=icmp probes 127.0.0.1 ... 127.0.0.N, so N must be <= 254" >&2
            exit 1
        fi
        ;;
    *)
        echo "bench: KIND must be http, tcp or icmp, not $KIND" >&2
        exit 1
        ;;
esac
# Not SECONDS: bash uses that name for its own elapsed-time counter.
DURATION="${2:-60}"
WARMUP=10
IDLE_SETTLE=15

TOOLS="${PUSHPROBE_TOOLS:-$HOME/.cache/pushprobe/tools}/bin"
case "${PEERS:-current}" in
    current)
        PROMETHEUS="$TOOLS/prometheus-3.5.3"
        AGENT_FLAG=--agent
        VICTORIA="$TOOLS/victoria-metrics-1.145.0"
        BLACKBOX="$TOOLS/prometheus-blackbox-exporter-0.28.0"
        ;;
    stable)
        PROMETHEUS="$(command -v prometheus || echo /usr/bin/prometheus)"
        AGENT_FLAG=--enable-feature=agent
        VICTORIA="$(command -v victoria-metrics || echo /usr/bin/victoria-metrics)"
        BLACKBOX="$(command -v prometheus-blackbox-exporter || echo /usr/bin/prometheus-blackbox-exporter)"
        ;;
    *)
        echo "bench: PEERS must be current or stable, not $PEERS" >&2
        exit 1
        ;;
esac
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_commands cargo python3 curl
require_executables "$PROMETHEUS" "$VICTORIA" "$BLACKBOX"
echo "== Peers: $("$BLACKBOX" --version 2>&1 | head -n1); $("$PROMETHEUS" --version 2>&1 | head -n1)"

if [ -n "${PREBUILT:-}" ]; then
    echo "== Using the release binaries already built (PREBUILT is set)"
else
    echo "== Building release binaries"
    cargo build --release --locked --bin pushprobe --example bench_target
fi
PUSHPROBE="${CARGO_TARGET_DIR:-$PWD/target}/release/pushprobe"
TARGET_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/bench_target"
settle_binaries "$PUSHPROBE" "$TARGET_BIN"

setup_workdir bench

# --- Unmeasured infrastructure: the targets and the receiver -------------------------------
# HTTP targets are distinct paths on 4 ports; TCP targets need a listening port each.
case "$KIND" in
    http) target_ports=4 ;;
    tcp) target_ports="$N" ;;
    icmp) target_ports=1 ;;
esac
"$TARGET_BIN" "$target_ports" >"$work/target.ports" 2>"$work/target.log" &
pids+=("$!")
for _ in $(seq 1 100); do
    [ "$(wc -l <"$work/target.ports")" -ge "$target_ports" ] && break
    sleep 0.1
done
mapfile -t ports <"$work/target.ports"
if [ "${#ports[@]}" -lt "$target_ports" ]; then
    echo "bench: target server did not start" >&2
    exit 1
fi
# Each target is its own series on both sides: a distinct path (http), port (tcp) or loopback
# address (icmp; Linux answers echo requests for all of 127.0.0.0/8 on lo).
targets=()
for ((i = 0; i < N; i++)); do
    case "$KIND" in
        http) targets+=("http://127.0.0.1:${ports[i % target_ports]}/t/$i") ;;
        tcp) targets+=("127.0.0.1:${ports[i]}") ;;
        icmp) targets+=("127.0.0.$((i + 1))") ;;
    esac
done

# One [[probe]] table of the benchmarked kind: probe_table NAME TARGET.
probe_table() {
    case "$KIND" in
        http) printf '\n[[probe]]\nname = "%s"\nkind = "http"\nurl = "%s"\n' "$1" "$2" ;;
        *) printf '\n[[probe]]\nname = "%s"\nkind = "%s"\ntarget = "%s"\n' "$1" "$KIND" "$2" ;;
    esac
    printf 'interval = "1s"\ntimeout = "1s"\n'
}

start_victoria_metrics "$VICTORIA"
write_url="http://127.0.0.1:$vm_port/api/v1/write"

# --- pushprobe --------------------------------------------------------------------------------
{
    cat <<TOML
[agent]
external_labels = { prober = "pushprobe" }

[[remote_write]]
url = "$write_url"
TOML
    for ((i = 0; i < N; i++)); do
        probe_table "t$i" "${targets[i]}"
    done
} >"$work/pushprobe.toml"
"$PUSHPROBE" config check --config "$work/pushprobe.toml" >/dev/null
"$PUSHPROBE" run --config "$work/pushprobe.toml" >"$work/pushprobe.log" 2>&1 &
pp_pid="$!"
pids+=("$pp_pid")

# --- blackbox exporter + Prometheus agent -----------------------------------------------------
bb_port="$(free_port)"
cat >"$work/blackbox.yml" <<'YAML'
modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
  tcp_connect:
    prober: tcp
    timeout: 1s
    tcp:
      preferred_ip_protocol: ip4
  icmp:
    prober: icmp
    timeout: 1s
    icmp:
      preferred_ip_protocol: ip4
YAML
"$BLACKBOX" \
    --config.file="$work/blackbox.yml" \
    --web.listen-address="127.0.0.1:$bb_port" \
    >"$work/blackbox.log" 2>&1 &
bb_pid="$!"
pids+=("$bb_pid")
wait_http "http://127.0.0.1:$bb_port/metrics" blackbox

prom_port="$(free_port)"
{
    cat <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  external_labels:
    prober: blackbox
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [$MODULE]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:$bb_port
    static_configs:
      - targets:
YAML
    for t in "${targets[@]}"; do
        echo "          - $t"
    done
    cat <<YAML
remote_write:
  - url: $write_url
YAML
} >"$work/prometheus.yml"
"$PROMETHEUS" \
    "$AGENT_FLAG" \
    --config.file="$work/prometheus.yml" \
    --storage.agent.path="$work/prom-agent" \
    --web.listen-address="127.0.0.1:$prom_port" \
    >"$work/prometheus.log" 2>&1 &
prom_pid="$!"
pids+=("$prom_pid")
wait_http "http://127.0.0.1:$prom_port/-/ready" prometheus

echo "== Running: KIND=$KIND, N=$N targets every 1s for ${DURATION}s (warm-up ${WARMUP}s not in the window)"
sleep "$WARMUP"
measure_window "$DURATION" "$pp_pid" "$bb_pid" "$prom_pid"

# Both sides must actually have probed successfully, or the comparison means nothing.
curl -fsS -o /dev/null "http://127.0.0.1:$vm_port/internal/force_flush" || true
sleep 2
results="$(curl -fsS --get \
    --data-urlencode "query=sum by (prober) (count_over_time(probe_success[${DURATION}s]))" \
    "http://127.0.0.1:$vm_port/api/v1/query")"
ok_now="$(curl -fsS --get \
    --data-urlencode "query=sum by (prober) (probe_success)" \
    "http://127.0.0.1:$vm_port/api/v1/query")"

kill -TERM "$pp_pid" "$bb_pid" "$prom_pid" 2>/dev/null || true
wait "$pp_pid" "$bb_pid" "$prom_pid" 2>/dev/null || true

# --- Idle footprint: one probe, after settling ------------------------------------------------
cat >"$work/idle.toml" <<TOML
[agent]
external_labels = { prober = "pushprobe-idle" }

[[remote_write]]
url = "$write_url"
TOML
probe_table idle "${targets[0]}" >>"$work/idle.toml"
"$PUSHPROBE" run --config "$work/idle.toml" >"$work/idle.log" 2>&1 &
idle_pid="$!"
pids+=("$idle_pid")
echo "== Idle footprint: pushprobe with 1 probe, settling ${IDLE_SETTLE}s"
sleep "$IDLE_SETTLE"
idle_rss="$(status_kib "$idle_pid" VmRSS)"
idle_hwm="$(status_kib "$idle_pid" VmHWM)"
kill -TERM "$idle_pid" 2>/dev/null || true
wait "$idle_pid" 2>/dev/null || true

python3 - "$N" "$DURATION" "$KIND" "$CPU_TARGET" "$RSS_TARGET" \
    "${cpu0[$pp_pid]}" "${cpu1[$pp_pid]}" "${hwm[$pp_pid]}" "${rss[$pp_pid]}" \
    "${cpu0[$bb_pid]}" "${cpu1[$bb_pid]}" "${hwm[$bb_pid]}" "${rss[$bb_pid]}" \
    "${cpu0[$prom_pid]}" "${cpu1[$prom_pid]}" "${hwm[$prom_pid]}" "${rss[$prom_pid]}" \
    "$idle_rss" "$idle_hwm" "$results" "$ok_now" <<'PY'
import json
import sys

kind, cpu_target = sys.argv[3], float(sys.argv[4])
rss_target = float(sys.argv[5]) if sys.argv[5] else None
a = sys.argv[1:3] + sys.argv[6:]
n, duration = int(a[0]), int(a[1])
def proc(i):
    c0, c1, hwm, rss = float(a[i]), float(a[i + 1]), int(a[i + 2]), int(a[i + 3])
    return {"window": c1 - c0, "total": c1, "hwm": hwm / 1024, "rss": rss / 1024}
pp, bb, pr = proc(2), proc(6), proc(10)
pair = {k: bb[k] + pr[k] for k in pp}
idle_rss, idle_hwm = int(a[14]) / 1024, int(a[15]) / 1024

def by_prober(text):
    out = {}
    for r in json.loads(text)["data"]["result"]:
        out[r["metric"].get("prober", "?")] = float(r["value"][1])
    return out
samples, ok_now = by_prober(a[16]), by_prober(a[17])

print()
print(f"KIND={kind}, N={n} targets, 1s interval, {duration}s measured window")
print(f"{'process':<28}{'CPU s (window)':>16}{'CPU s (life)':>14}{'peak RSS MiB':>14}{'RSS MiB':>10}")
for name, p in [("pushprobe", pp), ("blackbox_exporter", bb), ("prometheus --agent", pr),
                ("blackbox + prometheus", pair)]:
    print(f"{name:<28}{p['window']:>16.2f}{p['total']:>14.2f}{p['hwm']:>14.1f}{p['rss']:>10.1f}")
def ratio(x, y):
    return x / y if y else float("nan")
cpu_ratio = ratio(pp["window"], pair["window"])
mem_ratio = ratio(pp["hwm"], pair["hwm"])
print()
print(f"CPU ratio pushprobe / pair (window): {cpu_ratio:.3f}   (target <= {cpu_target:.2f})  "
      f"{'OK' if cpu_ratio <= cpu_target else 'MISSED'}")
print(f"CPU ratio pushprobe / pair (life):   {ratio(pp['total'], pair['total']):.3f}")
if rss_target is None:
    print(f"peak RSS ratio pushprobe / pair:     {mem_ratio:.3f}")
else:
    print(f"peak RSS ratio pushprobe / pair:     {mem_ratio:.3f}   (target <= {rss_target:.2f})  "
          f"{'OK' if mem_ratio <= rss_target else 'MISSED'}")
print(f"pushprobe idle RSS (1 probe):        {idle_rss:.1f} MiB (peak {idle_hwm:.1f})  "
      f"(target <= 8 MiB)  {'OK' if idle_rss <= 8 else 'MISSED'}")
if n > 1:
    # How memory grows with the probe count: the cost of one more probe.
    print(f"pushprobe RSS per extra probe:       {(pp['hwm'] - idle_hwm) * 1024 / (n - 1):.0f} KiB")
print()
print(f"probe results stored in the window, by prober: {samples}")
print(f"targets currently up, by prober:             {ok_now}  (of {n})")
expected = n * duration * 0.5
bad = [p for p in ("pushprobe", "blackbox") if samples.get(p, 0) < expected]
if bad:
    print(f"bench: too few results from {bad} (expected at least {expected:.0f}); "
          "the comparison is not valid", file=sys.stderr)
    sys.exit(1)
PY
