#!/usr/bin/env bash
# Long simulator soak (quality-bars.md R1): SEEDS seeds spread evenly over
# every fault profile x replica count x conflict rate x thrifty on/off x
# (all replicas back after the heal | f replicas dead for good), each slice
# with its own seed range, STEPS fault-phase steps per seed.
#
#   scripts/soak.sh [SEEDS=100000] [STEPS=2000]
#
# Exits non-zero on the first slice with a violation; the simulator prints
# the replay command of every violating seed.
set -euo pipefail
cd "$(dirname "$0")/.."

seeds_total=${1:-100000}
steps=${2:-2000}
profiles=(default duel split crashy)
replicas=(3 5 7)
rates=(0.1 1.0)
thrifty=("" "--thrifty")
dead=(none f)
slices=$(( ${#profiles[@]} * ${#replicas[@]} * ${#rates[@]} * ${#thrifty[@]} * ${#dead[@]} ))
per=$(( (seeds_total + slices - 1) / slices ))

cargo build -p synod-sim --release --quiet
# Run a private copy, so a rebuild during the soak cannot change the binary.
bin=$(mktemp -d)/synod-sim
cp target/release/synod-sim "$bin"
first=1000000
start=$(date +%s)
done_seeds=0
for p in "${profiles[@]}"; do
  for r in "${replicas[@]}"; do
    for c in "${rates[@]}"; do
      for t in "${thrifty[@]}"; do
        for d in "${dead[@]}"; do
          k=0
          [ "$d" = f ] && k=$(( (r - 1) / 2 ))
          echo "== profile=$p replicas=$r conflict-rate=$c ${t:-non-thrifty} dead-at-heal=$k seeds $first..$((first + per))"
          # shellcheck disable=SC2086
          "$bin" --seeds "$per" --first-seed "$first" --steps "$steps" \
            --profile "$p" --replicas "$r" --conflict-rate "$c" --dead-at-heal "$k" $t | tail -n 4
          first=$((first + per))
          done_seeds=$((done_seeds + per))
        done
      done
    done
  done
done
echo "soak: $done_seeds seeds x $steps fault-phase steps, 0 violations, $(( $(date +%s) - start ))s"
