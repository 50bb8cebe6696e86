#!/usr/bin/env bash
# The project's one test command (README.md "Test"); CI runs exactly this.
#
# 1. the doc-tests, which nextest does not run;
# 2. every unit, integration and simulator test of the workspace, through
#    cargo-nextest (each test in its own process; a failure does not stop the
#    others, so one run reports every failing test). It runs last so that its
#    summary is the run's closing line.
#
# The Kafka integration tests need a real Kafka-compatible broker, tansu
# (shared/design/kafka.md §4). It is installed here, by
# scripts/install-tansu.sh, never by hand: a cached install is reused, a
# fresh one is a long cargo build (12.5 min of CPU, ~13 min on 2 cores). That
# build runs in the background while the workspace compiles (doc-tests, then
# `nextest --no-run`), because both are long and partly serial (big crates,
# links), so together they take less wall time than one after the other.
# The tests then run with TANSU_BIN=<binary> and REQUIRE_TANSU=1, which turns
# "tansu not installed" from a skip into a failure: this command never
# silently skips the broker tests. (Not SYNOD_*: the synod binary, which many
# tests spawn, reads every SYNOD_* variable as config and rejects unknown
# ones.)
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest not found; installing it (cargo install cargo-nextest --locked)" >&2
    cargo install cargo-nextest --locked
fi

# The install's output goes to a file rather than interleaving with the
# compile's; its tail is shown if it fails.
install_log=$(mktemp -t synod-install-tansu.XXXXXX)
install_out=$(mktemp -t synod-install-tansu-path.XXXXXX)
echo "installing tansu in the background (scripts/install-tansu.sh, log: $install_log)" >&2
# In its own process group (setsid), so that the trap below can stop the whole
# build (cargo and its rustc children) if this script exits early, instead of
# leaving it to eat the cores. (`--wait`: should setsid have to fork, $! still
# exits with the install's status.)
if command -v setsid >/dev/null 2>&1; then
    setsid --wait scripts/install-tansu.sh >"$install_out" 2>"$install_log" &
else
    scripts/install-tansu.sh >"$install_out" 2>"$install_log" &
fi
install_pid=$!
stop_install() {
    if [ -n "${install_pid:-}" ] && kill -0 "$install_pid" 2>/dev/null; then
        kill -TERM -- "-$install_pid" 2>/dev/null || kill -TERM "$install_pid" 2>/dev/null || true
    fi
}
trap stop_install EXIT
trap 'exit 130' INT TERM

cargo test --workspace --doc
cargo nextest run --workspace --no-run

if ! wait "$install_pid"; then
    install_pid=
    echo "" >&2
    echo "!!! scripts/install-tansu.sh FAILED; the Kafka tests cannot run. Last lines of $install_log:" >&2
    tail -n 40 "$install_log" >&2
    exit 1
fi
install_pid=
tail -n 1 "$install_log" >&2
TANSU_BIN=$(tail -n 1 "$install_out")
rm -f "$install_out" "$install_log"
if [ ! -x "$TANSU_BIN" ]; then
    echo "!!! scripts/install-tansu.sh printed '$TANSU_BIN', which is not an executable" >&2
    exit 1
fi
export TANSU_BIN
export REQUIRE_TANSU=1

cargo nextest run --workspace --no-fail-fast
