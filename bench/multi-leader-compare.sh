#!/usr/bin/env bash
# Multi-leader against single-leader (issue 16 point 9): local writes on a 4-node multi-leader
# cluster (two datacenters of two nodes, acks = async inside each) next to a 4-node
# single-leader cluster in async mode, measured by one client (replikv bench, write-only),
# and the lag between the two datacenters' leaders under that load.
#
#   bench/multi-leader-compare.sh                 # 3 rounds, -n 50000 -c 50
#   N=20000 ROUNDS=1 bench/multi-leader-compare.sh
#
# The multi-leader side is written through dc1's leader (n1), the single-leader side through
# its leader: both acknowledge once the leader holds a write durably. While the multi-leader
# run goes, the script samples n1's INFO replication every 100 ms for dc2's lag (records of
# dc1's log dc2 has not applied, and milliseconds since the oldest of them was durable), and
# prints the largest seen and how long after the run dc2 took to catch up. Rounds alternate
# (A B A B ...); the script prints every run and the medians, and stops everything it started,
# also on Ctrl-C.
#
# Settings (environment): N operations per run, ROUNDS, CONNECTIONS, RECORDS, VALUE_BYTES,
# BASE_PORT (multi-leader BASE_PORT+1..+4, single-leader BASE_PORT+51..+54, their HTTP and peer
# ports 100 and 200 above), KEEP=1 keeps every run's JSON.
set -euo pipefail

N=${N:-50000}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
RECORDS=${RECORDS:-10000}
VALUE_BYTES=${VALUE_BYTES:-100}
BASE_PORT=${BASE_PORT:-17700}
cd "$(dirname "$0")/.."

for tool in redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y redis-tools python3" >&2; exit 2; }
done
cargo build --release -q -p replikv
replikv=$PWD/target/release/replikv

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir multi-leader

mp=$((BASE_PORT + 1))
sp=$((BASE_PORT + 51))
$replikv cluster start --mode multi-leader --datacenters 2 --nodes 4 --acks async --base-port "$BASE_PORT" \
  --name multi --data "$work" --detach > "$work/multi-cluster.txt"
track_cluster "$replikv" multi
$replikv cluster start --nodes 4 --acks async --base-port $((BASE_PORT + 50)) --name single \
  --data "$work" --detach > "$work/single-cluster.txt"
track_cluster "$replikv" single
wait_port "$mp"
wait_port "$sp"

# Samples n1's view of dc2 every 100 ms until the file named by $1 exists: "ms records lag_ms".
sample_lag() { # stop-file out-file
  while [ ! -e "$1" ]; do
    line=$(redis-cli -p "$mp" info replication 2>/dev/null | tr -d '\r' | grep '^datacenter0:' || true)
    records=$(sed -n 's/.*lag_records=\([0-9]*\).*/\1/p' <<<"$line")
    lag_ms=$(sed -n 's/.*lag_ms=\([0-9]*\).*/\1/p' <<<"$line")
    echo "$(date +%s%3N) ${records:-0} ${lag_ms:-0}" >> "$2"
    sleep 0.1
  done
}

cat > "$work/summary.py" <<'PY'
import json, statistics, sys
from pathlib import Path

def run(path):
    report = json.loads(Path(path).read_text())
    return [p for p in report["phases"] if p["name"] != "load"][0]

def line(path):
    p = run(path)
    errors = f", {p['errors_total']} errors" if p["errors_total"] else ""
    return (f"{p['throughput_ops_s']:.0f} ops/s p50 {p['all']['p50_us'] / 1e3:.2f} ms"
            f" p99 {p['all']['p99_us'] / 1e3:.2f} ms{errors}")

def lag(path, end_ms):
    rows = [list(map(int, l.split())) for l in Path(path).read_text().split("\n") if l.strip()]
    during = [r for r in rows if r[0] <= end_ms] or rows
    after = [r for r in rows if r[0] > end_ms]
    caught = next((r[0] - end_ms for r in after if r[1] == 0), None)
    caught = f"{caught} ms" if caught is not None else "not within the sampling"
    return max(r[1] for r in during), max(r[2] for r in during), caught

def table(work, rounds):
    rows = [(run(f"{work}/{r}-multi.json"), run(f"{work}/{r}-single.json")) for r in range(1, rounds + 1)]
    med = statistics.median
    tput = [a["throughput_ops_s"] / b["throughput_ops_s"] for a, b in rows]
    p99 = [a["all"]["p99_us"] / b["all"]["p99_us"] for a, b in rows]
    print(f"write-only through one leader: multi-leader {med(a['throughput_ops_s'] for a, _ in rows):.0f} ops/s,"
          f" single-leader {med(b['throughput_ops_s'] for _, b in rows):.0f} ops/s,"
          f" ratio {med(tput):.2f} (per round {' '.join(f'{t:.2f}' for t in tput)})")
    print(f"p99: multi-leader {med(a['all']['p99_us'] for a, _ in rows) / 1e3:.2f} ms,"
          f" single-leader {med(b['all']['p99_us'] for _, b in rows) / 1e3:.2f} ms, ratio {med(p99):.2f}")
    for r in range(1, rounds + 1):
        end = int(Path(f"{work}/{r}-multi.end").read_text())
        records, ms, caught = lag(f"{work}/{r}-lag.txt", end)
        print(f"round {r}: dc2's lag behind dc1 during the run at most {records} records, {ms} ms; back to 0 {caught} after")

if sys.argv[1] == "line":
    print(line(sys.argv[2]))
else:
    table(sys.argv[2], int(sys.argv[3]))
PY

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r)"
echo "# replikv bench --workload write-only -n $N -c $CONNECTIONS -r $RECORDS -d $VALUE_BYTES, $ROUNDS rounds, multi-leader first"
echo "# multi-leader: 2 datacenters x 2 nodes, acks async, written through n1 | single-leader: 4 nodes, acks async"
$replikv bench probe --dir "$work" --seconds 1 | sed 's/^/# probe: /'

for round in $(seq 1 "$ROUNDS"); do
  for side in multi single; do
    out="$work/$round-$side.json"
    if [ "$side" = multi ]; then
      sample_lag "$work/$round.stop" "$work/$round-lag.txt" &
      sampler=$!
      RUST_LOG=warn $replikv bench -p "$mp" --workload write-only -n "$N" -c "$CONNECTIONS" \
        -r "$RECORDS" -d "$VALUE_BYTES" --json > "$out"
      date +%s%3N > "$work/$round-multi.end"
      sleep 3
      touch "$work/$round.stop"
      wait "$sampler"
    else
      RUST_LOG=warn $replikv bench -p "$sp" --workload write-only -n "$N" -c "$CONNECTIONS" \
        -r "$RECORDS" -d "$VALUE_BYTES" --json > "$out"
    fi
    printf 'round %s %-6s %s\n' "$round" "$side" "$(python3 "$work/summary.py" line "$out")"
  done
done

echo
python3 "$work/summary.py" table "$work" "$ROUNDS"
