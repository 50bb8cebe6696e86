#!/usr/bin/env bash
# The project's one test command (README.md "Test"); CI runs exactly this.
#
# 1. the doc-tests, which nextest does not run;
# 2. every unit, integration and simulator test of the workspace, through
#    cargo-nextest (each test in its own process; a failure does not stop the
#    others, so one run reports every failing test). It runs last so that its
#    summary is the run's closing line.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest not found; installing it (cargo install cargo-nextest --locked)" >&2
    cargo install cargo-nextest --locked
fi

cargo test --workspace --doc
cargo nextest run --workspace --no-fail-fast
