#!/usr/bin/env bash
# replikv against redis-server in matching configurations, measured by one client: replikv bench.
#
#   bench/compare.sh                                    # every pair, 3 rounds, -n 200000 per workload
#   N=20000 ROUNDS=3 PAIRS="none always" WORKLOADS=a,c bench/compare.sh
#
# Pairs (replikv | redis-server 7), each server fresh, on 127.0.0.1, data on the repo's disk:
#   none      replikv --engine log --fsync never    | redis --appendonly no --save ''
#   everysec  replikv --engine log --fsync 1000     | redis --appendonly yes --appendfsync everysec
#   always    replikv --engine log --fsync always   | redis --appendonly yes --appendfsync always
#   replicas  replikv single node, --fsync never    | redis primary + 2 replicas (--replicaof), no persistence
#             One replikv node against a replicated redis, without persistence on either side;
#             replicated replikv against replicated redis is bench/replication-compare.sh.
#
# Each round runs replikv bench once against replikv and once against redis (A B A B ...), each run
# a load phase then the workloads; the script prints every run's figures and, per pair and
# workload, the median over rounds of the ratios replikv/redis of throughput and of p99 latency
# (all operation kinds together). It first prints replikv bench probe (fsync and loopback limits)
# for the disk the data lives on. Everything it starts it stops by PID, also on Ctrl-C.
#
# Settings (environment): N ops per workload, ROUNDS, WORKLOADS (replikv bench --workload list),
# CONNECTIONS, PIPELINE, RECORDS, VALUE_BYTES, PAIRS, BASE_PORT (4 ports from it), KEEP=1 keeps
# the JSON of every run in target/bench-compare-<time>/.
# Needs redis-server 7 and redis-cli: apt-get install -y redis-server
set -euo pipefail

N=${N:-200000}
ROUNDS=${ROUNDS:-3}
WORKLOADS=${WORKLOADS:-a,b,c,f,write-only}
CONNECTIONS=${CONNECTIONS:-50}
PIPELINE=${PIPELINE:-1}
RECORDS=${RECORDS:-100000}
VALUE_BYTES=${VALUE_BYTES:-100}
PAIRS=${PAIRS:-"none everysec always replicas"}
BASE_PORT=${BASE_PORT:-16390}
cd "$(dirname "$0")/.."

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y redis-server" >&2; exit 2; }
done
for pair in $PAIRS; do
  case $pair in none | everysec | always | replicas) ;; *) echo "unknown pair $pair (none, everysec, always, replicas)" >&2; exit 2 ;; esac
done
command -v python3 >/dev/null || { echo "python3 is missing: apt-get install -y python3" >&2; exit 2; }
cargo build --release -q -p replikv
replikv=target/release/replikv

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir compare

start_replikv() { # port dir [replikv node flags...]
  local port=$1 dir=$2; shift 2
  RUST_LOG=warn $replikv node --data-dir "$dir/data" --resp-addr "127.0.0.1:$port" --http-addr 127.0.0.1:0 \
    "$@" 2>"$dir.log" &
  pids+=($!)
  wait_port "$port"
}

# What the pair compares, replikv first.
describe_pair() { # pair
  case $1 in
    none) echo "replikv --engine log --fsync never | redis-server --appendonly no --save ''" ;;
    everysec) echo "replikv --engine log --fsync 1000 | redis-server --appendonly yes --appendfsync everysec" ;;
    always) echo "replikv --engine log --fsync always | redis-server --appendonly yes --appendfsync always" ;;
    replicas) echo "replikv SINGLE NODE --fsync never | redis-server primary + 2 replicas, --appendonly no (3-node replikv: bench/replication-compare.sh)" ;;
  esac
}

# Starts the pair's two sides: replikv on BASE_PORT, redis on BASE_PORT+1 (its replicas above).
start_pair() { # pair
  local rp=$BASE_PORT dp=$((BASE_PORT + 1)) d="$work/$1"
  case $1 in
    none)
      start_replikv "$rp" "$d/replikv" --engine log --fsync never
      start_redis "$dp" "$d/redis" --appendonly no ;;
    everysec)
      start_replikv "$rp" "$d/replikv" --engine log --fsync 1000
      start_redis "$dp" "$d/redis" --appendonly yes --appendfsync everysec ;;
    always)
      start_replikv "$rp" "$d/replikv" --engine log --fsync always
      start_redis "$dp" "$d/redis" --appendonly yes --appendfsync always ;;
    replicas)
      start_replikv "$rp" "$d/replikv" --engine log --fsync never
      start_redis "$dp" "$d/redis" --appendonly no
      start_redis $((dp + 1)) "$d/replica1" --appendonly no --replicaof 127.0.0.1 "$dp"
      start_redis $((dp + 2)) "$d/replica2" --appendonly no --replicaof 127.0.0.1 "$dp"
      wait_replicas "$dp" 2 ;;
  esac
}

# One line per run, and the table of median ratios at the end.
cat > "$work/summary.py" <<'PY'
import json, statistics, sys
from pathlib import Path

def phases(path):
    report = json.loads(Path(path).read_text())
    return {p["name"]: p for p in report["phases"] if p["name"] != "load"}

def line(path):
    parts = []
    for name, p in phases(path).items():
        errors = f", {p['errors_total']} errors" if p["errors_total"] else ""
        parts.append(f"{name.split()[-1]} {p['throughput_ops_s']:.0f} ops/s p99 {p['all']['p99_us'] / 1e3:.2f} ms{errors}")
    return "; ".join(parts)

def table(work, pairs, rounds):
    print(f"{'pair':<9} {'workload':<11} {'replikv ops/s':>13} {'redis ops/s':>12} {'ratio':>6}"
          f" {'replikv p99 ms':>15} {'redis p99 ms':>13} {'ratio':>6}   per-round throughput ratios")
    for pair in pairs:
        runs = [(phases(f"{work}/{pair}/{r}-replikv.json"), phases(f"{work}/{pair}/{r}-redis.json"))
                for r in range(1, rounds + 1)]
        for name in runs[0][0]:
            a = [x[name] for x, _ in runs]
            b = [y[name] for _, y in runs]
            tput = [x["throughput_ops_s"] / y["throughput_ops_s"] for x, y in zip(a, b)]
            p99 = [x["all"]["p99_us"] / y["all"]["p99_us"] for x, y in zip(a, b)]
            med = lambda rows, f: statistics.median(f(r) for r in rows)
            print(f"{pair:<9} {name.split()[-1]:<11} {med(a, lambda r: r['throughput_ops_s']):>13.0f}"
                  f" {med(b, lambda r: r['throughput_ops_s']):>12.0f} {statistics.median(tput):>6.2f}"
                  f" {med(a, lambda r: r['all']['p99_us']) / 1e3:>15.3f} {med(b, lambda r: r['all']['p99_us']) / 1e3:>13.3f}"
                  f" {statistics.median(p99):>6.2f}   " + " ".join(f"{t:.2f}" for t in tput))
    if "replicas" in pairs:
        print("# replicas: replikv's side is ONE node; redis's is a primary feeding two replicas (see bench/replication-compare.sh).")

if sys.argv[1] == "line":
    print(line(sys.argv[2]))
else:
    table(sys.argv[2], sys.argv[3].split(), int(sys.argv[4]))
PY

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r), $(redis-server --version | cut -d' ' -f1-3)"
echo "# replikv bench --workload $WORKLOADS -n $N -c $CONNECTIONS -P $PIPELINE -r $RECORDS -d $VALUE_BYTES, $ROUNDS rounds, replikv first in each"
$replikv bench probe --dir "$work" --seconds 1 | sed 's/^/# probe: /'

for pair in $PAIRS; do
  echo "# pair $pair: $(describe_pair "$pair")"
  mkdir -p "$work/$pair"
  start_pair "$pair"
  for round in $(seq 1 "$ROUNDS"); do
    for side in replikv redis; do
      port=$BASE_PORT; [ "$side" = redis ] && port=$((BASE_PORT + 1))
      out="$work/$pair/$round-$side.json"
      RUST_LOG=warn $replikv bench -p "$port" --workload "$WORKLOADS" -n "$N" -c "$CONNECTIONS" -P "$PIPELINE" \
        -r "$RECORDS" -d "$VALUE_BYTES" --json > "$out"
      printf '%-9s round %s %-8s %s\n' "$pair" "$round" "$side" "$(python3 "$work/summary.py" line "$out")"
    done
  done
  stop_all
done

echo
python3 "$work/summary.py" table "$work" "$PAIRS" "$ROUNDS"
