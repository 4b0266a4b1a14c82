#!/usr/bin/env bash
# Measures catching up after an outage: fills a disk queue with a backlog (1 million samples
# by default, as `examples/fill_queue.rs` appends them: the probe path's cost per sample), then
# starts a local VictoriaMetrics and `pushprobe run` on that queue, and reports the time until
# the backlog is acknowledged, the agent's peak RSS (VmHWM) while draining, how many samples
# the receiver stored, and the bytes the agent put on the wire per stored sample (counted by a
# relay between the two, scripts/count_proxy.py). Everything runs on 127.0.0.1; the script
# stops what it started.
#
# Usage: scripts/bench-backlog.sh      (SAMPLES=1000000 SERIES=100 MAX_SHARDS=4 by default;
#                                       PUSHPROBE_BIN / FILL_QUEUE_BIN to skip the build)
# VM=PATH picks the receiver: VictoriaMetrics 1.145 from scripts/install-tools.sh when present
# (the agent then sends zstd after the handshake), else Debian's victoria-metrics (snappy).
# Needs: victoria-metrics, curl, python3.
# Targets: append < 2 us/sample; 1M samples drained in < 10 s with RSS < 64 MiB.
set -euo pipefail

SAMPLES=${SAMPLES:-1000000}
SERIES=${SERIES:-100}
MAX_SHARDS=${MAX_SHARDS:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="${PUSHPROBE_TOOLS:-$HOME/.cache/pushprobe/tools}/bin"
if [[ -z "${VM:-}" ]]; then
  VM=/usr/bin/victoria-metrics
  [[ -x "$TOOLS/victoria-metrics-1.145.0" ]] && VM="$TOOLS/victoria-metrics-1.145.0"
fi

if [[ -z "${PUSHPROBE_BIN:-}" || -z "${FILL_QUEUE_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release --quiet --bin pushprobe --example fill_queue)
  PUSHPROBE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/pushprobe
  FILL_QUEUE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/fill_queue
fi

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
settle_binaries "$PUSHPROBE_BIN" "$FILL_QUEUE_BIN"
setup_workdir bench-backlog

echo "== filling the queue: $SAMPLES samples over $SERIES series"
"$FILL_QUEUE_BIN" "$work/data/queue" vm "$SAMPLES" "$SERIES"
du -sh "$work/data/queue" | sed 's/^/queue on disk: /'

VM_PORT=$(free_port)
"$VM" -storageDataPath="$work/vm" -httpListenAddr="127.0.0.1:$VM_PORT" \
  -retentionPeriod=1 -search.latencyOffset=0s -search.disableCache -loggerLevel=WARN \
  >"$work/vm.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$VM_PORT/health" vm
RELAY_PORT=$(free_port)
python3 "$ROOT/scripts/count_proxy.py" "$RELAY_PORT" "$VM_PORT" "$work/sent.bytes" >"$work/relay.log" 2>&1 &
relay=$!
pids+=("$relay")

LISTEN_PORT=$(free_port)
cat >"$work/pushprobe.toml" <<TOML
[agent]
data_dir = "$work/data"
listen = "127.0.0.1:$LISTEN_PORT"
self_metrics_interval = "1s"
drain_timeout = "60s"

[[remote_write]]
name = "vm"
url = "http://127.0.0.1:$RELAY_PORT/api/v1/write"
max_shards = $MAX_SHARDS
batch_send_deadline = "1s"
TOML

pending() {
  curl -fsS "http://127.0.0.1:$LISTEN_PORT/metrics" 2>/dev/null |
    awk '/^pushprobe_remote_write_pending_samples\{.*endpoint="vm"/ { print $2 }'
}

echo "== draining to VictoriaMetrics with up to $MAX_SHARDS shards"
start=$(date +%s.%N)
# PUSHPROBE_* variables override configuration keys: keep this script's own out.
env -u PUSHPROBE_BIN "$PUSHPROBE_BIN" run --config "$work/pushprobe.toml" --log-level warn \
  >"$work/pushprobe.log" 2>&1 &
agent=$!
pids+=("$agent")
peak_kib=0
done_at=""
for _ in $(seq 1 6000); do
  if ! kill -0 "$agent" 2>/dev/null; then
    break
  fi
  hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent/status" 2>/dev/null || echo 0)
  ((hwm > peak_kib)) && peak_kib=$hwm
  p=$(pending || true)
  # Only self-metrics are appended while draining: a few hundred samples at most.
  if [[ -n "$p" ]] && awk -v p="$p" 'BEGIN { exit !(p < 500) }'; then
    done_at=$(date +%s.%N)
    break
  fi
  sleep 0.05
done
if [[ -z "$done_at" ]]; then
  echo "backlog not drained (agent exited, or 300 s passed); agent log:" >&2
  tail -n 30 "$work/pushprobe.log" >&2
  exit 1
fi
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent/status")
((hwm > peak_kib)) && peak_kib=$hwm

# Stop the agent before its relay: with the relay gone first, its final flush waits out
# drain_timeout (60 s) against a closed port.
kill -TERM "$agent" 2>/dev/null || true
wait "$agent" 2>/dev/null || true
kill -TERM "$relay" 2>/dev/null || true
wait "$relay" 2>/dev/null || true
sent=$(cat "$work/sent.bytes")
curl -fsS "http://127.0.0.1:$VM_PORT/internal/force_flush" >/dev/null || true
stored=$(curl -fsS "http://127.0.0.1:$VM_PORT/api/v1/query" \
  --data-urlencode 'query=sum(count_over_time(bench_probe_duration_seconds[1d]))' |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')

python3 - "$start" "$done_at" "$peak_kib" "$SAMPLES" "$stored" "$sent" "$(basename "$VM")" <<'PY'
import sys
start, done, peak, samples, stored, sent, vm = sys.argv[1:]
secs = float(done) - float(start)
print(f"drained {int(samples)} samples in {secs:.2f} s ({int(samples) / secs:,.0f} samples/s, "
      f"process start included); peak RSS (VmHWM) {int(peak) / 1024:.1f} MiB; "
      f"receiver stored {stored} samples")
stored_n = float(stored)
print(f"on the wire: {int(sent):,} bytes, {int(sent) / stored_n if stored_n else float('nan'):.2f} "
      f"bytes per stored sample (self-metrics included), receiver {vm or 'victoria-metrics'}")
PY
