#!/usr/bin/env bash
# The replication log's cost: two replikv builds, or two log formats, on the same write-only
# workload, measured by one client: replikv bench. For each run: throughput,
# latency, and the log's bytes per record (the leader's replikv_log_bytes and
# replikv_log_last_lsn before and after the run).
#
#   A=path/to/old/replikv B=target/release/replikv bench/log-formats.sh
#   N=50000 ROUNDS=3 ACKS=async A=... B=... bench/log-formats.sh
#   FORMAT_A=logical FORMAT_B=statement bench/log-formats.sh   # one build, two log formats
#
# Each round starts a fresh 3-node cluster of A, runs the bench, stops it, then the same with B
# (A B A B ...). RECORDS is small by default, so that nearly every write overwrites a value:
# the case where a logical log with old values logs each value twice. The bench client is B's
# `replikv bench` for both sides. Everything it starts it stops, also on Ctrl-C.
#
# Settings (environment): A and B (replikv binaries; B defaults to this checkout's release
# build; A defaults to B when a format is given), FORMAT_A and FORMAT_B (--log-format of each
# side's cluster: logical, statement, mixed or physical), LABEL_A and LABEL_B, N writes per run, ROUNDS, ACKS (sync, semi-sync:1, async),
# CONNECTIONS, PIPELINE, RECORDS, VALUE_BYTES, BASE_PORT, KEEP=1 keeps every run's JSON.
set -euo pipefail

N=${N:-100000}
ROUNDS=${ROUNDS:-3}
ACKS=${ACKS:-sync}
CONNECTIONS=${CONNECTIONS:-50}
PIPELINE=${PIPELINE:-1}
RECORDS=${RECORDS:-1000}
VALUE_BYTES=${VALUE_BYTES:-100}
BASE_PORT=${BASE_PORT:-17600}
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 2; }
cargo build --release -q -p replikv
B=${B:-$PWD/target/release/replikv}
FORMAT_A=${FORMAT_A:-}
FORMAT_B=${FORMAT_B:-}
if [ -n "$FORMAT_A$FORMAT_B" ]; then A=${A:-$B}; fi
A=${A:?"A: the replikv binary to compare with (e.g. a build of an earlier commit), or FORMAT_A and FORMAT_B"}
LABEL_A=${LABEL_A:-${FORMAT_A:-A}}
LABEL_B=${LABEL_B:-${FORMAT_B:-B}}
client=$B

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir log-formats

metric() { # http port, name
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

cat > "$work/summary.py" <<'PY'
import json, statistics, sys
from pathlib import Path

def run(path):
    report = json.loads(Path(path).read_text())
    return [p for p in report["phases"] if p["name"] != "load"][0]

def line(path, per_record):
    p = run(path)
    errors = f", {p['errors_total']} errors" if p["errors_total"] else ""
    return (f"{p['throughput_ops_s']:.0f} ops/s p50 {p['all']['p50_us'] / 1e3:.2f} ms"
            f" p99 {p['all']['p99_us'] / 1e3:.2f} ms, log {per_record:.0f} bytes/record{errors}")

def table(work, rounds, a, b):
    med = statistics.median
    rows = []
    for r in range(1, rounds + 1):
        ra, rb = run(f"{work}/{r}-a.json"), run(f"{work}/{r}-b.json")
        ba, bb = (float(Path(f"{work}/{r}-{s}.bytes").read_text()) for s in "ab")
        rows.append((ra, rb, ba, bb))
    tput = [rb["throughput_ops_s"] / ra["throughput_ops_s"] for ra, rb, _, _ in rows]
    print(f"{'':<22} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'log bytes/record':>17}")
    for name, i, j in ((a, 0, 2), (b, 1, 3)):
        print(f"{name:<22} {med(r[i]['throughput_ops_s'] for r in rows):>8.0f}"
              f" {med(r[i]['all']['p50_us'] for r in rows) / 1e3:>7.2f} {med(r[i]['all']['p99_us'] for r in rows) / 1e3:>7.2f}"
              f" {med(r[j] for r in rows):>17.0f}")
    print(f"throughput {b} / {a}: median {med(tput):.2f}, per round " + " ".join(f"{t:.2f}" for t in tput))
    print(f"log bytes per record {b} / {a}: {med(r[3] for r in rows) / med(r[2] for r in rows):.2f}")

if sys.argv[1] == "line":
    print(line(sys.argv[2], float(sys.argv[3])))
else:
    table(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
PY

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r)"
echo "# A = $LABEL_A ($A), B = $LABEL_B ($B)"
echo "# 3 nodes, acks = $ACKS; replikv bench --workload write-only -n $N -c $CONNECTIONS -P $PIPELINE -r $RECORDS -d $VALUE_BYTES, $ROUNDS rounds, A first"

for round in $(seq 1 "$ROUNDS"); do
  for side in a b; do
    if [ "$side" = a ]; then bin=$A; label=$LABEL_A; format=$FORMAT_A; else bin=$B; label=$LABEL_B; format=$FORMAT_B; fi
    name="lf$side$round"
    $bin cluster start --nodes 3 --acks "$ACKS" --base-port "$BASE_PORT" --name "$name" --data "$work" --detach \
      ${format:+--log-format "$format"} \
      > "$work/$round-$side-cluster.txt"
    track_cluster "$bin" "$name"
    wait_port $((BASE_PORT + 1))
    http=$((BASE_PORT + 101))
    bytes0=$(metric $http replikv_log_bytes); lsn0=$(metric $http replikv_log_last_lsn)
    RUST_LOG=warn $client bench -p $((BASE_PORT + 1)) --workload write-only -n "$N" -c "$CONNECTIONS" -P "$PIPELINE" \
      -r "$RECORDS" -d "$VALUE_BYTES" --json > "$work/$round-$side.json"
    sleep 0.5 # the status (and its metrics) is published after the last batch
    bytes1=$(metric $http replikv_log_bytes); lsn1=$(metric $http replikv_log_last_lsn)
    python3 -c "print(($bytes1 - $bytes0) / max(1, $lsn1 - $lsn0))" > "$work/$round-$side.bytes"
    printf 'round %s %-22s %s\n' "$round" "$label" "$(python3 "$work/summary.py" line "$work/$round-$side.json" "$(cat "$work/$round-$side.bytes")")"
    stop_all
  done
done

echo
python3 "$work/summary.py" table "$work" "$ROUNDS" "$LABEL_A" "$LABEL_B"
