#!/usr/bin/env bash
# Leaderless against single-leader: a 3-node leaderless cluster (n = 3, w = 2, r = 2) next to a
# 3-node single-leader cluster in semi-sync:1 (a write on two nodes before its OK, as w = 2),
# every node fsyncing each batch (fsync = always), measured by one client: replikv bench.
#
#   bench/leaderless-compare.sh                       # workloads a, b, write-only; 3 rounds
#   N=20000 ROUNDS=1 WORKLOADS=write-only bench/leaderless-compare.sh
#
# The leaderless side gets every node as an endpoint, reads and writes spread over them
# (--endpoints n1,n2,n3 --spread-writes: any node coordinates); the single-leader side gets its
# leader (followers refuse writes). Each round runs replikv bench once against each side
# (A B A B ...): a load phase, then the workload. The script prints every run and, per
# workload, the median over rounds of the ratios leaderless/single-leader of throughput and of
# p50 and p99 latency. Everything it starts it stops, also on Ctrl-C.
#
# Settings (environment): N operations per run, WORKLOADS, ROUNDS, CONNECTIONS, RECORDS,
# VALUE_BYTES, BASE_PORT (leaderless BASE_PORT+1..+3, single-leader BASE_PORT+51..+53, with
# their HTTP and peer ports 100 and 200 above), KEEP=1 keeps every run's JSON.
set -euo pipefail

N=${N:-50000}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
RECORDS=${RECORDS:-100000}
VALUE_BYTES=${VALUE_BYTES:-100}
WORKLOADS=${WORKLOADS:-"a b write-only"}
BASE_PORT=${BASE_PORT:-17600}
cd "$(dirname "$0")/.."

for tool in redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y redis-tools python3" >&2; exit 2; }
done
cargo build --release -q -p replikv
replikv=$PWD/target/release/replikv

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir leaderless

lp=$((BASE_PORT + 1))
sp=$((BASE_PORT + 51))
$replikv cluster start --mode leaderless --n 3 --w 2 --r 2 --base-port "$BASE_PORT" --name leaderless \
  --data "$work" --detach > "$work/leaderless-cluster.txt"
track_cluster "$replikv" leaderless
$replikv cluster start --acks semi-sync:1 --base-port $((BASE_PORT + 50)) --name single \
  --data "$work" --detach > "$work/single-cluster.txt"
track_cluster "$replikv" single
wait_port "$lp"
wait_port "$sp"

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

def table(work, workloads, rounds):
    print(f"{'workload':<11} {'leaderless':>10} {'single':>8} {'ratio':>6} {'p50 ms':>13} {'ratio':>6}"
          f" {'p99 ms':>13} {'ratio':>6}   per-round throughput ratios")
    for w in workloads:
        rows = [(run(f"{work}/{w}/{r}-leaderless.json"), run(f"{work}/{w}/{r}-single.json"))
                for r in range(1, rounds + 1)]
        med = statistics.median
        tput = [a["throughput_ops_s"] / b["throughput_ops_s"] for a, b in rows]
        p50 = [a["all"]["p50_us"] / b["all"]["p50_us"] for a, b in rows]
        p99 = [a["all"]["p99_us"] / b["all"]["p99_us"] for a, b in rows]
        print(f"{w:<11} {med(a['throughput_ops_s'] for a, _ in rows):>10.0f} {med(b['throughput_ops_s'] for _, b in rows):>8.0f}"
              f" {med(tput):>6.2f} {med(a['all']['p50_us'] for a, _ in rows) / 1e3:>6.2f}/{med(b['all']['p50_us'] for _, b in rows) / 1e3:<6.2f}"
              f" {med(p50):>6.2f} {med(a['all']['p99_us'] for a, _ in rows) / 1e3:>6.2f}/{med(b['all']['p99_us'] for _, b in rows) / 1e3:<6.2f}"
              f" {med(p99):>6.2f}   " + " ".join(f"{t:.2f}" for t in tput))
    print("# latency columns: leaderless/single-leader. Ratios are leaderless over single-leader semi-sync:1.")

if sys.argv[1] == "line":
    print(line(sys.argv[2]))
else:
    table(sys.argv[2], sys.argv[3].split(), int(sys.argv[4]))
PY

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r)"
echo "# replikv bench -n $N -c $CONNECTIONS -r $RECORDS -d $VALUE_BYTES, $ROUNDS rounds, leaderless first"
echo "# leaderless: n=3 w=2 r=2, endpoints n1..n3, writes and reads spread | single-leader: semi-sync:1, the leader"
$replikv bench probe --dir "$work" --seconds 1 | sed 's/^/# probe: /'

endpoints="127.0.0.1:$lp,127.0.0.1:$((lp + 1)),127.0.0.1:$((lp + 2))"
for w in $WORKLOADS; do
  mkdir -p "$work/$w"
  for round in $(seq 1 "$ROUNDS"); do
    for side in leaderless single; do
      out="$work/$w/$round-$side.json"
      if [ "$side" = leaderless ]; then
        target=(--endpoints "$endpoints" --spread-writes)
      else
        target=(-p "$sp")
      fi
      RUST_LOG=warn $replikv bench "${target[@]}" --workload "$w" -n "$N" -c "$CONNECTIONS" \
        -r "$RECORDS" -d "$VALUE_BYTES" --json > "$out"
      printf '%-11s round %s %-10s %s\n' "$w" "$round" "$side" "$(python3 "$work/summary.py" line "$out")"
    done
  done
done

echo
python3 "$work/summary.py" table "$work" "$WORKLOADS" "$ROUNDS"
