#!/usr/bin/env bash
# Stalls: how long the thread that steps the replica is held by segment seals and compaction,
# and what that does to a writer's tail latency. Two replikv binaries (A and B, e.g. before and
# after a change), each as a 3-node sync cluster, fsync always, taking enough 1000-byte writes
# to seal a 64 MiB engine segment and start a compaction on every node; rounds alternate A B A B.
#
#   BIN_A=/path/old/replikv BIN_B=target/release/replikv bench/stalls.sh
#   ROUNDS=2 N=50000 bench/stalls.sh          # B only, when BIN_A is unset
#
# Per run it prints replikv bench's line for the write phase (ops/s, p50, p95, p99, p99.9, max)
# and, per node, from /metrics: how many batch write-outs and maintenance slices held the
# stepper longer than 5 ms and 20 ms (replikv_write_out_duration_seconds,
# replikv_maintain_duration_seconds; a binary without them prints "-"), and compactions.
# Settings (environment): BIN_A, BIN_B (default: this tree's release build), ROUNDS (3), N
# (100000 writes), RECORDS (70000 loaded first), VALUE_BYTES (1000), BASE_PORT (17960).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
N=${N:-100000}
RECORDS=${RECORDS:-70000}
VALUE_BYTES=${VALUE_BYTES:-1000}
BASE_PORT=${BASE_PORT:-17960}
if [ -z "${BIN_B:-}" ]; then
  cargo build --release -q -p replikv
  BIN_B=target/release/replikv
fi
sides="B"
[ -n "${BIN_A:-}" ] && sides="A B"

bench_workdir stalls

# Counts of a histogram's observations above `le` seconds: total minus the bucket at le.
over() { # metrics-file name le
  local total at
  total=$(grep -E "^$2_count" "$1" | awk '{print $2}')
  at=$(grep -E "^$2_bucket\{le=\"$3\"\}" "$1" | awk '{print $2}')
  if [ -z "$total" ] || [ -z "$at" ]; then echo "-"; else echo $((total - at)); fi
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r)"
echo "# A=${BIN_A:-none} B=$BIN_B; replikv bench --workload write-only -n $N -c 50 -r $RECORDS -d $VALUE_BYTES; $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  for side in $sides; do
    bin=$BIN_B
    [ "$side" = A ] && bin=$BIN_A
    name="st$side$round"
    "$bin" cluster start --nodes 3 --acks sync --base-port "$BASE_PORT" --name "$name" --data "$work" --detach >/dev/null
    track_cluster "$bin" "$name"
    line=$(RUST_LOG=warn "$bin" bench -p $((BASE_PORT + 1)) --workload write-only -n "$N" -c 50 -r "$RECORDS" \
      -d "$VALUE_BYTES" | grep -A1 "p99 ms" | tail -1)
    echo "round $round $side $line"
    for node in 1 2 3; do
      m="$work/$name-n$node.metrics"
      curl -s "http://127.0.0.1:$((BASE_PORT + 100 + node))/metrics" > "$m" || true
      w5=$(over "$m" replikv_write_out_duration_seconds 0.00512)
      w20=$(over "$m" replikv_write_out_duration_seconds 0.02048)
      m5=$(over "$m" replikv_maintain_duration_seconds 0.00512)
      m20=$(over "$m" replikv_maintain_duration_seconds 0.02048)
      c=$(grep -E "^replikv_compactions " "$m" | awk '{print $2}')
      echo "    n$node: write-outs over 5 ms $w5, over 20 ms $w20; maintenance slices over 5 ms $m5, over 20 ms $m20; compactions ${c:--}"
    done
    stop_all
  done
done
