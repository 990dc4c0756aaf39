#!/usr/bin/env bash
# Replicated writes: a 3-node replikv cluster against redis-server as a primary with two replicas,
# every node fsyncing each write (replikv fsync = always; redis appendonly yes, appendfsync always),
# measured by one client: replikv bench.
#
#   bench/replication-compare.sh                      # every pair, 3 rounds, -n 100000 writes
#   N=20000 ROUNDS=1 PAIRS=sync bench/replication-compare.sh
#
# Pairs (replikv cluster | redis primary + 2 replicas, the client's WAIT), all on 127.0.0.1:
#   sync       acks = sync        | WAIT 2 4000 after each write (both replicas have it)
#   semi-sync  acks = semi-sync:1 | WAIT 1 4000 after each write (one replica has it)
# (The issue asks for WAIT N 0; replikv bench refuses a WAIT that may block forever, so 4000 ms (below its 5 s request timeout), which
# a run that reaches it reports as a WAIT_SHORT error.)
#   async      acks = async       | no WAIT
# What "has it" means differs, and the comparison says so: a replikv follower acknowledges a record
# once it is durable on its disk; a redis replica's WAIT acknowledgement (REPLCONF ACK) says it
# received and applied the write, not that it fsynced it.
#
# Each round runs replikv bench once against each side (A B A B ...): a load phase, then the
# write-only workload. The script prints every run and, per pair, the median over rounds of the
# ratios replikv/redis of throughput and of p50 and p99 latency. Everything it starts it stops,
# also on Ctrl-C.
#
# Settings (environment): N operations per run, PIPELINE (requests in flight per connection, as
# redis-benchmark -P; with a WAIT, each write is followed by its WAIT in the pipeline), WORKLOAD (write-only; c for reads only, which on
# replikv's leader wait for a heartbeat round: its read index), ROUNDS, CONNECTIONS, RECORDS, VALUE_BYTES, PAIRS,
# BASE_PORT (replikv uses BASE_PORT+1..+3 and +101..+103, +201..+203; redis BASE_PORT+10..+12),
# CLUSTER_FLAGS (more flags for replikv cluster start, e.g. --read-lease: leader reads under a lease),
# KEEP=1 keeps every run's JSON in target/bench-replication-<time>/.
# Needs redis-server 7 and redis-cli: apt-get install -y redis-server
set -euo pipefail

N=${N:-100000}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
PIPELINE=${PIPELINE:-1}
RECORDS=${RECORDS:-100000}
VALUE_BYTES=${VALUE_BYTES:-100}
PAIRS=${PAIRS:-"sync semi-sync async"}
WORKLOAD=${WORKLOAD:-write-only}
CLUSTER_FLAGS=${CLUSTER_FLAGS:-}
BASE_PORT=${BASE_PORT:-17400}
cd "$(dirname "$0")/.."

for tool in redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y redis-server python3" >&2; exit 2; }
done
for pair in $PAIRS; do
  case $pair in sync | semi-sync | async) ;; *) echo "unknown pair $pair (sync, semi-sync, async)" >&2; exit 2 ;; esac
done
cargo build --release -q -p replikv
replikv=$PWD/target/release/replikv

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir replication

acks_of() { case $1 in sync) echo sync ;; semi-sync) echo semi-sync:1 ;; async) echo async ;; esac; }
wait_of() { case $1 in sync) echo "--wait 2,4000" ;; semi-sync) echo "--wait 1,4000" ;; async) echo "" ;; esac; }

start_pair() { # pair
  local name="b$1"
  name=${name//-/}
  $replikv cluster start --nodes 3 --acks "$(acks_of "$1")" --base-port "$BASE_PORT" --name "$name" \
    --data "$work" --detach $CLUSTER_FLAGS > "$work/$1-cluster.txt"
  track_cluster "$replikv" "$name"
  wait_port $((BASE_PORT + 1))
  local rp=$((BASE_PORT + 10)) d="$work/$1"
  local always=(--appendonly yes --appendfsync always)
  start_redis "$rp" "$d/redis" "${always[@]}"
  start_redis $((rp + 1)) "$d/replica1" "${always[@]}" --replicaof 127.0.0.1 "$rp"
  start_redis $((rp + 2)) "$d/replica2" "${always[@]}" --replicaof 127.0.0.1 "$rp"
  wait_replicas "$rp" 2
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

def table(work, pairs, rounds):
    print(f"{'pair':<10} {'replikv ops/s':>13} {'redis ops/s':>12} {'ratio':>6} {'p50 ms':>14} {'ratio':>6}"
          f" {'p99 ms':>14} {'ratio':>6}   per-round throughput ratios")
    for pair in pairs:
        rows = [(run(f"{work}/{pair}/{r}-replikv.json"), run(f"{work}/{pair}/{r}-redis.json"))
                for r in range(1, rounds + 1)]
        med = statistics.median
        tput = [a["throughput_ops_s"] / b["throughput_ops_s"] for a, b in rows]
        p50 = [a["all"]["p50_us"] / b["all"]["p50_us"] for a, b in rows]
        p99 = [a["all"]["p99_us"] / b["all"]["p99_us"] for a, b in rows]
        print(f"{pair:<10} {med(a['throughput_ops_s'] for a, _ in rows):>13.0f} {med(b['throughput_ops_s'] for _, b in rows):>12.0f}"
              f" {med(tput):>6.2f} {med(a['all']['p50_us'] for a, _ in rows) / 1e3:>6.2f}/{med(b['all']['p50_us'] for _, b in rows) / 1e3:<7.2f}"
              f" {med(p50):>6.2f} {med(a['all']['p99_us'] for a, _ in rows) / 1e3:>6.2f}/{med(b['all']['p99_us'] for _, b in rows) / 1e3:<7.2f}"
              f" {med(p99):>6.2f}   " + " ".join(f"{t:.2f}" for t in tput))
    print("# latency columns: replikv/redis. Ratios are replikv over redis: above 1 is faster for throughput, slower for latency.")

if sys.argv[1] == "line":
    print(line(sys.argv[2]))
else:
    table(sys.argv[2], sys.argv[3].split(), int(sys.argv[4]))
PY

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r), $(redis-server --version | cut -d' ' -f1-3)"
echo "# replikv bench --workload $WORKLOAD -n $N -c $CONNECTIONS -P $PIPELINE -r $RECORDS -d $VALUE_BYTES, $ROUNDS rounds, replikv first"
$replikv bench probe --dir "$work" --seconds 1 | sed 's/^/# probe: /'

for pair in $PAIRS; do
  echo "# pair $pair: replikv 3 nodes acks = $(acks_of "$pair") | redis primary + 2 replicas, client $(wait_of "$pair" | sed 's/--wait /WAIT /; s/,/ /' | grep . || echo 'no WAIT')"
  mkdir -p "$work/$pair"
  start_pair "$pair"
  for round in $(seq 1 "$ROUNDS"); do
    for side in replikv redis; do
      if [ "$side" = replikv ]; then port=$((BASE_PORT + 1)); wait=""; else port=$((BASE_PORT + 10)); wait=$(wait_of "$pair"); fi
      out="$work/$pair/$round-$side.json"
      # shellcheck disable=SC2086 # $wait is empty or two words
      RUST_LOG=warn $replikv bench -p "$port" --workload "$WORKLOAD" -n "$N" -c "$CONNECTIONS" -P "$PIPELINE" \
        -r "$RECORDS" -d "$VALUE_BYTES" $wait --json > "$out"
      printf '%-10s round %s %-8s %s\n' "$pair" "$round" "$side" "$(python3 "$work/summary.py" line "$out")"
    done
  done
  stop_all
done

echo
python3 "$work/summary.py" table "$work" "$PAIRS" "$ROUNDS"
