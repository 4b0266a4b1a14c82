# Helpers shared by pushprobe's scripts: checks for the commands and peers a script needs, a
# scratch directory, processes stopped on exit, free loopback ports, readiness polling, and
# starting a node exporter or VictoriaMetrics. Source it, then call `setup_workdir NAME`.
#
# After `setup_workdir`, `$work` is a temporary directory removed on exit (kept with
# KEEP_WORKDIR=1), and every PID appended to the `pids` array is stopped (newest first) on
# exit, Ctrl-C or SIGTERM.

setup_workdir() {
    work="$(mktemp -d -t "pushprobe-$1.XXXXXX")"
    pids=()
    trap cleanup_workdir EXIT
    trap 'exit 130' INT TERM
}

cleanup_workdir() {
    local i pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
        echo "$(basename "$0"): kept $work" >&2
    else
        rm -rf "$work"
    fi
}

# require_commands CMD...: exits with a message if a command is not on the PATH.
require_commands() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "$(basename "$0"): $tool is required; see scripts/install-deps.sh" >&2
            exit 1
        fi
    done
}

# require_executables PATH...: exits with a message if a peer's binary is missing.
require_executables() {
    local tool
    for tool in "$@"; do
        if [ ! -x "$tool" ]; then
            echo "$(basename "$0"): $tool is missing; see scripts/install-deps.sh and scripts/install-tools.sh" >&2
            exit 1
        fi
    done
}

# Prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL NAME: polls URL until it answers 2xx (60 s at most); on failure prints the
# tail of $work/NAME.log and exits.
wait_http() {
    local url="$1" name="$2"
    for _ in $(seq 1 600); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): $name did not come up at $url; its log:" >&2
    tail -n 50 "$work/$name.log" >&2 || true
    exit 1
}

# start_node_exporter: starts prometheus-node-exporter on a free port with its log in
# $work/node-exporter.log, waits until it answers, and sets node_port.
start_node_exporter() {
    node_port="$(free_port)"
    prometheus-node-exporter --web.listen-address="127.0.0.1:$node_port" >"$work/node-exporter.log" 2>&1 &
    pids+=("$!")
    wait_http "http://127.0.0.1:$node_port/metrics" node-exporter
}

# start_victoria_metrics BINARY: starts a VictoriaMetrics single node on a free port with its
# data in $work/vm-data and its log in $work/victoria-metrics.log, waits until it is healthy,
# and sets vm_port. Queries see every sample at once (no latency offset, no cache), so a
# benchmark can count what arrived right after its window.
start_victoria_metrics() {
    vm_port="$(free_port)"
    "$1" \
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
}

# CPU seconds (utime + stime) a process has used so far.
cpu_seconds() {
    # utime and stime are fields 14 and 15 of the line; the command name before them is in
    # parentheses and may hold spaces, so count after it (fields 12 and 13).
    sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / hz }'
}

# settle_binaries FILE...: writes freshly built binaries back to disk before they are measured.
# Until written back, a file's pages sit dirty in the page cache, and a process that maps it
# then has more of it mapped: pushprobe's peak RSS on the relay workload was 17.8-17.9 MiB in
# the first run after a copy and 16.2-16.6 MiB once the file was synced. An installed binary
# has long been written back; every sender is measured that way.
settle_binaries() {
    sync "$@"
}

# status_kib PID FIELD: a /proc/PID/status memory field (VmHWM, VmRSS) in KiB.
status_kib() {
    awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"
}

# measure_window SECONDS PID...: runs the processes for SECONDS and fills the associative
# arrays cpu0/cpu1 (CPU seconds at start and end), hwm and rss (KiB) for each PID; exits with
# the processes' logs if one of them died meanwhile, since the comparison would be meaningless.
measure_window() {
    local seconds="$1" p
    shift
    declare -gA cpu0 cpu1 hwm rss
    for p in "$@"; do
        cpu0[$p]="$(cpu_seconds "$p")"
    done
    sleep "$seconds"
    for p in "$@"; do
        if [ ! -d "/proc/$p" ]; then
            echo "$(basename "$0"): process $p exited during the run; logs in $work" >&2
            tail -n 30 "$work"/*.log >&2
            exit 1
        fi
        cpu1[$p]="$(cpu_seconds "$p")"
        hwm[$p]="$(status_kib "$p" VmHWM)"
        rss[$p]="$(status_kib "$p" VmRSS)"
    done
}
