#!/usr/bin/env bash
# Measures what a short-lived job pays for pushprobe: wall time from process start until the
# receiver has answered the write, for `pushprobe once` with one HTTP probe against a local
# target, side by side with the same job written in Python (prometheus_client + requests).
#
# Both push the same probe result to the same local Pushgateway; pushprobe is additionally
# measured against a local Prometheus remote-write receiver. Everything runs on 127.0.0.1.
#
# Usage: scripts/bench-once.sh            (RUNS=20 by default; PUSHPROBE_BIN to skip the build)
# Needs: prometheus-pushgateway, prometheus, python3 (venv + pip reach PyPI); hyperfine if
# installed (apt-get install -y hyperfine), else a date +%s%N loop.
set -euo pipefail

RUNS=${RUNS:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PUSHGATEWAY=${PUSHGATEWAY:-/usr/bin/prometheus-pushgateway}
PROMETHEUS=${PROMETHEUS:-/usr/bin/prometheus}

# pushprobe reads PUSHPROBE_* variables as configuration keys and refuses unknown ones: the
# binary's path stays this script's own.
export -n PUSHPROBE_BIN
if [[ -z "${PUSHPROBE_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
  PUSHPROBE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/pushprobe
fi

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
settle_binaries "$PUSHPROBE_BIN"
setup_workdir bench-once

# --- local services -------------------------------------------------------------------
TARGET_PORT=$(free_port)
mkdir -p "$work/www" && echo ok > "$work/www/health"
python3 -m http.server "$TARGET_PORT" --bind 127.0.0.1 --directory "$work/www" \
  >/dev/null 2>&1 &
pids+=("$!")

PG_PORT=$(free_port)
"$PUSHGATEWAY" --web.listen-address="127.0.0.1:$PG_PORT" \
  --persistence.file="$work/pg.db" >/dev/null 2>&1 &
pids+=("$!")

PROM_PORT=$(free_port)
printf 'global:\n  scrape_interval: 1h\n' > "$work/prometheus.yml"
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --web.enable-remote-write-receiver \
  >/dev/null 2>&1 &
pids+=("$!")

wait_http "http://127.0.0.1:$TARGET_PORT/health" target
wait_http "http://127.0.0.1:$PG_PORT/-/ready" pushgateway
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" prometheus

# --- the Python job ---------------------------------------------------------------------
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check prometheus_client requests
cat > "$work/job.py" <<EOF
import time
import requests
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

registry = CollectorRegistry()
success = Gauge("probe_success", "Whether the probe succeeded.", ["probe"], registry=registry)
duration = Gauge("probe_duration_seconds", "Probe duration.", ["probe"], registry=registry)
status = Gauge("probe_http_status_code", "HTTP status code.", ["probe"], registry=registry)
start = time.perf_counter()
try:
    r = requests.get("http://127.0.0.1:$TARGET_PORT/health", timeout=10)
    ok, code = 200 <= r.status_code < 300, r.status_code
except requests.RequestException:
    ok, code = False, 0
duration.labels("api").set(time.perf_counter() - start)
success.labels("api").set(1 if ok else 0)
status.labels("api").set(code)
push_to_gateway("127.0.0.1:$PG_PORT", job="bench-python", registry=registry)
EOF

# --- the pushprobe job -------------------------------------------------------------------
probe="[[probe]]
name = \"api\"
kind = \"http\"
url = \"http://127.0.0.1:$TARGET_PORT/health\"
timeout = \"10s\""
cat > "$work/pg.toml" <<EOF
[[pushgateway]]
url = "http://127.0.0.1:$PG_PORT"
job = "bench-pushprobe"
$probe
EOF
cat > "$work/rw.toml" <<EOF
[agent]
drain_timeout = "5s"
[[remote_write]]
url = "http://127.0.0.1:$PROM_PORT/api/v1/write"
batch_send_deadline = "1ms"
$probe
EOF

# Every variant must succeed once before it is timed: a job that fails fast is no benchmark.
check_ok() { # name command...
  local name=$1; shift
  if "$@" >/dev/null 2>"$work/err"; then return 0; fi
  local rc=$?
  echo "bench-once: $name failed (exit $rc): $(tail -n 3 "$work/err")" >&2
  return 1
}

# Median wall time in milliseconds of a command, over RUNS runs.
median_ms() { # command (one string, run by sh)
  if command -v hyperfine >/dev/null; then
    hyperfine --style none --warmup 3 --runs "$RUNS" -N \
      --export-json "$work/h.json" "$1" >/dev/null 2>&1 ||
      hyperfine --style none --warmup 3 --runs "$RUNS" \
        --export-json "$work/h.json" "$1" >/dev/null
    python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$work/h.json"
  else
    : > "$work/times"
    for _ in $(seq 1 "$RUNS"); do
      local t0 t1
      t0=$(date +%s%N); sh -c "$1" >/dev/null 2>&1; t1=$(date +%s%N)
      echo $(( (t1 - t0) / 1000 )) >> "$work/times"
    done
    sort -n "$work/times" | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f\n", m/1000}'
  fi
}

# The probe's own time: what `check` reports as its latency (median of a few runs).
probe_ms=$(for _ in 1 2 3 4 5; do
  "$PUSHPROBE_BIN" -c "$work/pg.toml" check --output json 2>/dev/null || true
done | python3 -c '
import json, sys
docs, buf = [], ""
for line in sys.stdin:
    buf += line
    if line.startswith("}"):
        docs.append(json.loads(buf)); buf = ""
lat = sorted(d["probes"][0]["latency_ms"] for d in docs)
print("%.1f" % lat[len(lat) // 2])')

declare -A result
run_variant() { # key name command
  if check_ok "$2" sh -c "$3"; then
    result[$1]=$(median_ms "$3")
  else
    result[$1]=n/a
  fi
}
run_variant pp_pg "pushprobe once -> Pushgateway" "$PUSHPROBE_BIN -c $work/pg.toml once"
run_variant py_pg "python -> Pushgateway" "$work/venv/bin/python $work/job.py"
run_variant pp_rw "pushprobe once -> Prometheus remote write" "$PUSHPROBE_BIN -c $work/rw.toml once"

printf '\nbench-once: median wall time over %s runs (process start to write answered)\n' "$RUNS"
printf '  %-44s %8s ms\n' "probe's own time (check latency)" "$probe_ms"
printf '  %-44s %8s ms\n' "pushprobe once -> Pushgateway" "${result[pp_pg]}"
printf '  %-44s %8s ms\n' "python prometheus_client -> Pushgateway" "${result[py_pg]}"
printf '  %-44s %8s ms\n' "pushprobe once -> Prometheus remote write" "${result[pp_rw]}"
if [[ ${result[pp_pg]} != n/a && ${result[py_pg]} != n/a ]]; then
  python3 - "${result[pp_pg]}" "${result[py_pg]}" "$probe_ms" <<'EOF'
import sys
pp, py, probe = map(float, sys.argv[1:])
print(f"  python / pushprobe: {py / pp:.1f}x; pushprobe overhead beyond the probe: "
      f"{pp - probe:.1f} ms (target < 20 ms)")
EOF
fi
