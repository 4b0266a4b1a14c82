#!/usr/bin/env bash
# The project's full check, the same locally and in CI: formatting, lints, all tests (unit,
# integration against real receivers, doc tests), and the alerting-rule tests when present.
#
# Integration tests need the Debian packages prometheus, victoria-metrics,
# prometheus-pushgateway, prometheus-node-exporter and tinyproxy, and what
# scripts/install-tools.sh installs (Prometheus 3.5, VictoriaMetrics 1.145, oauth2-mock-server,
# botocore); without them they are skipped locally, and fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test (unit, integration, examples, benches in test mode)"
cargo test --locked --all-targets --no-fail-fast

# The shipped build: optimised, and on Linux linked with its hot-text layout (build.rs), which
# only a release build applies.
echo "== cargo build --release"
cargo build --locked --release --bin pushprobe
release_bin="${CARGO_TARGET_DIR:-$PWD/target}/release/pushprobe"
if [ "$(uname -s)" = Linux ] && [ "${HOT_TEXT_LAYOUT:-}" != off ] &&
    ! grep -q ' \.text\.hot ' <<<"$(readelf -SW "$release_bin")"; then
    echo "test: the release binary has no .text.hot section: build.rs did not apply" \
        "scripts/hot-text.ld (see its warning; HOT_TEXT_LAYOUT=off builds without it)" >&2
    exit 1
fi

# The README's first command, on the release binary: its configuration must pass the checks
# the code makes, and its series must arrive.
echo "== scripts/demo.sh (release build)"
if command -v prometheus >/dev/null 2>&1; then
    PUSHPROBE_BIN="$release_bin" DEMO_SECONDS=10 scripts/demo.sh
elif [ -n "${CI:-}" ]; then
    echo "test: Debian's prometheus is missing, and the demo needs it (scripts/install-deps.sh)" >&2
    exit 1
else
    echo "skipped: Debian's prometheus is not installed (scripts/install-deps.sh)"
fi

echo "== cargo test --doc"
cargo test --locked --doc

echo "== cargo doc (module docs and their links)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib

if [ -f ops/alerts_test.yml ]; then
    # Also run by tests/ops_rules.rs; here too so a failure shows promtool's own report.
    echo "== promtool check rules"
    promtool check rules ops/alerts.yml
    echo "== promtool test rules"
    promtool test rules ops/alerts_test.yml
fi

echo "== all checks passed"
