#!/usr/bin/env bash
# Installs the tansu Kafka-compatible broker that the integration tests run
# against (shared/design/kafka.md §4), and prints the binary's path as the
# last line of stdout.
#
#   scripts/install-tansu.sh            # -> .../synod-tools/tansu-0.6.0-libsql-debug/bin/tansu
#
# - Idempotent: if the binary is already in the cache with the right version
#   and storage engine, nothing is built. A fresh build is long: 12.5 min of
#   CPU time (measured: 13.4 min wall on 2 cores while the machine was
#   otherwise idle but for short test runs); CI and developers pay it once
#   per cache.
# - A debug build (`--debug`) with the one storage engine the tests use:
#   the default release build with `dynostore,libsql` took 30 min of CPU
#   (38.7 min wall on 2 shared cores). The tests send a few thousand records;
#   an unoptimised broker is fast enough for them (the Kafka tests took the
#   same time with either binary).
# - Cache root: $TANSU_TOOLS_DIR, default ~/.cache/synod-tools; tansu goes to
#   <root>/tansu-<version>-libsql-debug/bin/tansu. `synod_kafka::testkit::tansu_binary()`
#   looks there too when $TANSU_BIN is not set, so keep the two in step.
# - Features: tansu's default features store nothing (`null` storage);
#   `libsql` gives `sqlite://FILE` (persistent, what the tests use;
#   `dynostore` would add `memory://`, which the tests do not need).
# - `--locked` builds with the Cargo.lock tansu published, so every machine
#   builds the same dependency versions; should that ever stop resolving or
#   building, the script says so loudly and retries without it.
# - Runs under a lock (flock, when available) so that concurrent callers wait
#   for one build instead of building twice.
#
# Everything except the final path goes to stderr, so callers can use
# `tansu=$(scripts/install-tansu.sh | tail -n1)`.
set -euo pipefail

readonly version=0.6.0
readonly features=libsql
tools=${TANSU_TOOLS_DIR:-$HOME/.cache/synod-tools}
root=$tools/tansu-$version-libsql-debug
bin=$root/bin/tansu

# The binary is usable iff it reports our version and lists both storage
# engine in its help text ("Storage engines: libsql").
installed() {
    [ -x "$bin" ] || return 1
    local v help
    v=$("$bin" --version 2>/dev/null) || return 1
    [ "$v" = "tansu $version" ] || return 1
    help=$("$bin" --help 2>/dev/null) || return 1
    grep -q '^Storage engines:.*libsql' <<<"$help"
}

if installed; then
    echo "tansu $version already installed at $bin" >&2
    echo "$bin"
    exit 0
fi

mkdir -p "$tools"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$tools/tansu-$version.lock"
    echo "waiting for the install lock $tools/tansu-$version.lock" >&2
    flock 9
    # Another caller may have finished the build while we waited.
    if installed; then
        echo "tansu $version installed at $bin (by a concurrent caller)" >&2
        echo "$bin"
        exit 0
    fi
fi

# A build directory of our own: a CARGO_TARGET_DIR inherited from the caller
# (say the workspace's) would make this build wait on, and block, the
# workspace's cargo lock, which defeats building both at once in test.sh.
# Kept across a failed attempt so the retry reuses what was compiled.
export CARGO_TARGET_DIR=$tools/tansu-$version-build

start=$(date +%s)
echo "installing tansu $version (features $features) into $root; this takes ~13 min on 2 cores (12.5 min of CPU)" >&2
if ! cargo install tansu --version "$version" --features "$features" --debug --locked \
        --root "$root" --force 1>&2; then
    echo "!!! cargo install tansu --locked failed; retrying WITHOUT --locked (dependency versions now float)" >&2
    cargo install tansu --version "$version" --features "$features" --debug \
        --root "$root" --force 1>&2
fi
rm -rf "$CARGO_TARGET_DIR"

if ! installed; then
    echo "tansu was built, but $bin does not report version $version with the libsql storage engine" >&2
    exit 1
fi
echo "installed tansu $version at $bin in $(( $(date +%s) - start )) s" >&2
echo "$bin"
