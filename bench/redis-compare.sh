#!/usr/bin/env bash
# Throughput of replikv against redis-server, both durable on every write, same client, same run.
#
#   bench/redis-compare.sh            # 1,000,000 requests per test, -P 16 and -P 1
#   N=200000 ROUNDS=3 bench/redis-compare.sh
#
# replikv runs with fsync = always (one fsync per batch, before any reply); redis-server 7 with
# appendonly yes and appendfsync always (one fsync per event-loop iteration, before replies).
# Both listen on 127.0.0.1, keep their data in a temporary directory on the same disk, and are
# driven by redis-benchmark -t set,get,incr,mset -r 100000 -c 50. Rounds alternate
# (replikv, redis, replikv, redis, ...) so that drift in the machine's load hits both; the
# script prints each round and the median ratio replikv/redis per command.
# Needs redis-server and redis-benchmark: apt-get install -y redis-server redis-tools
set -euo pipefail

N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
PIPELINES=${PIPELINES:-"16 1"}
REPLIKV_PORT=${REPLIKV_PORT:-16380}
REDIS_PORT=${REDIS_PORT:-16379}
cd "$(dirname "$0")/.."

for tool in redis-server redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y redis-server redis-tools" >&2; exit 2; }
done
cargo build --release -q -p replikv
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

mkdir -p "$work/redis" "$work/replikv"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work/redis" --appendonly yes --appendfsync always \
  --save '' --daemonize no --logfile "$work/redis.log" &
pids+=($!)
RUST_LOG=warn target/release/replikv node --data-dir "$work/replikv" --resp-addr "127.0.0.1:$REPLIKV_PORT" \
  --http-addr 127.0.0.1:0 --fsync always 2>"$work/replikv.log" &
pids+=($!)
wait_port "$REDIS_PORT"; wait_port "$REPLIKV_PORT"

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(uname -r); $(redis-server --version | cut -d' ' -f1-3)"
echo "# redis-benchmark -t set,get,incr,mset -n $N -r 100000 -c 50 -P <p> -q --csv, $ROUNDS rounds"
results="$work/results.csv"
for p in $PIPELINES; do
  for round in $(seq 1 "$ROUNDS"); do
    for target in replikv redis; do
      port=$REPLIKV_PORT; [ "$target" = redis ] && port=$REDIS_PORT
      redis-benchmark -p "$port" -t set,get,incr,mset -n "$N" -r 100000 -c 50 -P "$p" -q --csv \
        | tr -d '"' | awk -F, -v t="$target" -v p="$p" -v r="$round" 'NR>1 {print p","r","t","$1","$2}' >> "$results"
    done
  done
done

python3 - "$results" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
by = {}
for p, r, target, test, rps in rows:
    by.setdefault((int(p), test), {}).setdefault(target, []).append(float(rps))
print(f"{'pipeline':>8} {'command':>12} {'replikv rps':>12} {'redis rps':>12} {'ratio':>6}   per-round ratios")
for (p, test), t in sorted(by.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
    ratios = [a / b for a, b in zip(t["replikv"], t["redis"])]
    print(f"{p:>8} {test:>12} {statistics.median(t['replikv']):>12.0f} {statistics.median(t['redis']):>12.0f}"
          f" {statistics.median(ratios):>6.2f}   " + " ".join(f"{x:.2f}" for x in ratios))
PY
