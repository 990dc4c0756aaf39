#!/usr/bin/env bash
# Replicated writes over HTTP: a 3-node replikv cluster against a 3-member etcd cluster (Debian's
# etcd-server), both on 127.0.0.1, driven by one load tool for both sides: wrk, with a Lua script
# this script writes, sending writes of random keys to each side's leader.
#
#   bench/etcd-compare.sh                             # PAIRS=sync, 16 and 256 connections, 3 rounds of 10 s
#   REPLIKV=target/release/replikv DURATION=3 ROUNDS=1 bench/etcd-compare.sh   # no build, one short round
#   PAIRS="sync semi-sync async" CONNECTIONS="1 16 256" bench/etcd-compare.sh
#
# The write, on each side (keys bench:000000000 .. bench:<RECORDS-1>, uniform; VALUE_BYTES-byte
# values that begin with the run's tag):
#   replikv  PUT /api/v1/kv/<key> to the leader's HTTP port, the value as the raw body; 200 {"ok":true}
#   etcd     POST /v3/kv/put to the leader's client port (the gRPC JSON gateway), body
#            {"key":"<base64>","value":"<base64>"}; 200 {"header":{..."revision"...}}
# What an acknowledgement means (every node fsyncs before it acknowledges; replikv fsync = always,
# the default of cluster start; etcd fsyncs its WAL for every batch of raft entries, its default):
#   etcd       a majority (2 of 3 members) has the entry in its fsynced WAL
#   sync       (acks = sync) every follower has the write durable, and the leader: 3 of 3
#   semi-sync  (acks = semi-sync:1) the leader and one follower: 2 of 3, etcd's own promise
#   async      (acks = async) the leader alone
# The etcd side is the same in every pair; each pair starts both clusters afresh.
#
# Each (pair, connections) runs ROUNDS rounds, each round wrk once against each side (replikv
# first: A B A B ...), for DURATION each. A run fails, and is left out of the table, when wrk
# saw a socket error or timeout, any answer not 2xx or without its success marker, or when the
# writes did not land: after the run the leader's log (replikv last_lsn, etcd revision) must
# have grown by at least the OK answers, and a key each wrk thread wrote early must read back
# with this run's value from every node. The script prints every run, then per (pair,
# connections) the medians over the clean rounds as a markdown table: throughput, the ratio
# replikv/etcd (median of the per-round ratios), p50 and p99 ms. Any failed run makes it exit 1
# and keeps the work directory. Everything it starts it stops, also on Ctrl-C.
#
# Settings (environment): DURATION per run (wrk -d: 10s, 10, 1m), ROUNDS, CONNECTIONS (a list,
# wrk -c), THREADS (wrk -t, at most the connections), RECORDS, VALUE_BYTES, PAIRS, TARGET (the
# throughput ratio the table checks, 3), WRK_TIMEOUT (a request slower than it is an error),
# SEED, BASE_PORT (replikv BASE_PORT+1..+3 RESP, +101..+103 HTTP, +201..+203 peers; etcd
# clients BASE_PORT+11..+13, peers +21..+23), CLUSTER_FLAGS (more flags for replikv cluster
# start), REPLIKV (a replikv binary to use instead of building target/release/replikv), KEEP=1
# keeps target/bench-etcd-<time>/ (wrk outputs, logs, data).
# Installs etcd-server, wrk and curl with apt-get when they are missing (Debian, as root).
#
# CAVEATS
# - replikv's HTTP front end serves at most HTTP_REQUESTS_MAX = 256 requests at once (a
#   constant in crates/server/src/http.rs, no setting) and answers one more with 503: above 256
#   connections the replikv runs fail. http_connections_max (default 1024) bounds connections.
# - wrk, the six server processes and this machine's other work share the same cores.
# - Each side acknowledges from a fsynced log and syncs its store less often: etcd's bbolt backend
#   commits every 100 ms or 10,000 writes (its defaults), a replikv node fsyncs its engine's files
#   at a segment seal (the replication log is its write-ahead log).
# - etcd's HTTP path is its gRPC gateway, which turns each JSON request into a gRPC call to the
#   same process: etcd's own clients (gRPC) pay less per request than this measures.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-"16 256"}
THREADS=${THREADS:-2}
RECORDS=${RECORDS:-100000}
VALUE_BYTES=${VALUE_BYTES:-100}
PAIRS=${PAIRS:-sync}
TARGET=${TARGET:-3}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
SEED=${SEED:-1}
BASE_PORT=${BASE_PORT:-17800}
CLUSTER_FLAGS=${CLUSTER_FLAGS:-}
cd "$(dirname "$0")/.."

# Seconds a cluster has to come up and elect its leader, and a follower to show a write.
UP_WAIT_S=20
READ_BACK_WAIT_S=5

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "# installing ${missing[*]}" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "could not install ${missing[*]}: apt-get install -y ${missing[*]}" >&2; exit 2
  fi
fi
command -v python3 >/dev/null || { echo "python3 is missing: apt-get install -y python3" >&2; exit 2; }

for pair in $PAIRS; do
  case $pair in sync | semi-sync | async) ;; *) echo "unknown pair $pair (sync, semi-sync, async)" >&2; exit 2 ;; esac
done
for c in $CONNECTIONS; do
  [[ $c =~ ^[1-9][0-9]*$ ]] || { echo "CONNECTIONS: $c is not a positive number" >&2; exit 2; }
done
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || { echo "THREADS: $THREADS is not a positive number" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS: $ROUNDS is not a positive number" >&2; exit 2; }
if ! [[ $RECORDS =~ ^[1-9][0-9]*$ && $RECORDS -le 1000000000 ]]; then
  echo "RECORDS: $RECORDS is not 1 to 1000000000 (9-digit keys)" >&2; exit 2
fi
if ! [[ $VALUE_BYTES =~ ^[0-9]+$ && $VALUE_BYTES -ge 16 ]]; then
  echo "VALUE_BYTES: $VALUE_BYTES is under 16 (a value begins with its run's tag)" >&2; exit 2
fi
[[ $SEED =~ ^[0-9]+$ ]] || { echo "SEED: $SEED is not a number" >&2; exit 2; }

if [ -n "${REPLIKV:-}" ]; then
  replikv=$(realpath "$REPLIKV")
else
  cargo build --release -q -p replikv
  replikv=$PWD/target/release/replikv
fi
[ -x "$replikv" ] || { echo "no replikv binary at $replikv" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir etcd

rk_http() { echo $((BASE_PORT + 100 + $1)); } # node 1..3
etcd_client() { echo $((BASE_PORT + 10 + $1)); }
etcd_peer() { echo $((BASE_PORT + 20 + $1)); }

ports_free() {
  local i p
  for i in 1 2 3; do
    for p in $((BASE_PORT + i)) "$(rk_http "$i")" $((BASE_PORT + 200 + i)) "$(etcd_client "$i")" "$(etcd_peer "$i")"; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "port $p is in use: choose another BASE_PORT" >&2; exit 2
      fi
    done
  done
}

# json EXPR: evaluates a Python expression over the JSON document on stdin, bound to d.
json() { python3 -c "import base64, json, sys; d = json.load(sys.stdin); print($1)"; }

acks_of() { case $1 in sync) echo sync ;; semi-sync) echo semi-sync:1 ;; async) echo async ;; esac; }

start_replikv() { # pair
  local name="b${1//-/}"
  # shellcheck disable=SC2086 # CLUSTER_FLAGS is a list of flags
  $replikv cluster start --nodes 3 --acks "$(acks_of "$1")" --base-port "$BASE_PORT" --name "$name" \
    --data "$work" --detach $CLUSTER_FLAGS > "$work/$1/replikv-cluster.txt"
  track_cluster "$replikv" "$name"
}

start_etcd() { # dir token
  local dir=$1 token=$2 members="" i
  for i in 1 2 3; do members+="${members:+,}e$i=http://127.0.0.1:$(etcd_peer "$i")"; done
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$dir/e$i" \
      --listen-client-urls "http://127.0.0.1:$(etcd_client "$i")" \
      --advertise-client-urls "http://127.0.0.1:$(etcd_client "$i")" \
      --listen-peer-urls "http://127.0.0.1:$(etcd_peer "$i")" \
      --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer "$i")" \
      --initial-cluster "$members" --initial-cluster-state new --initial-cluster-token "$token" \
      --logger zap --log-outputs stderr 2> "$dir/e$i.log" &
    pids+=($!)
  done
}

# The leader's HTTP port (replikv) or client port (etcd), once there is one; the cluster's
# logs are kept when none appears in time.
replikv_leader() {
  local i p
  for _ in $(seq 1 $((UP_WAIT_S * 10))); do
    for i in 1 2 3; do
      p=$(rk_http "$i")
      if [ "$(curl -sf -m 1 "http://127.0.0.1:$p/api/v1/status" | json 'd["role"]' 2>/dev/null)" = leader ]; then
        echo "$p"; return 0
      fi
    done
    sleep 0.1
  done
  echo "replikv elected no leader in ${UP_WAIT_S} s; logs in $work" >&2; KEEP=1; exit 1
}

etcd_leader() {
  local i p
  for _ in $(seq 1 $((UP_WAIT_S * 10))); do
    for i in 1 2 3; do
      p=$(etcd_client "$i")
      if [ "$(curl -sf -m 1 -X POST -d '{}' "http://127.0.0.1:$p/v3/maintenance/status" \
        | json 'd.get("leader", "0") != "0" and d["header"]["member_id"] == d["leader"]' 2>/dev/null)" = True ]; then
        echo "$p"; return 0
      fi
    done
    sleep 0.1
  done
  echo "etcd elected no leader in ${UP_WAIT_S} s; logs in $work" >&2; KEEP=1; exit 1
}

# How many writes the leader's log holds: replikv's last LSN, etcd's revision (one per put).
log_count() { # side port
  if [ "$1" = replikv ]; then
    curl -sf -m 5 "http://127.0.0.1:$2/api/v1/status" | json 'd["replication"]["last_lsn"]'
  else
    curl -sf -m 5 -X POST -d '{}' "http://127.0.0.1:$2/v3/maintenance/status" | json 'd["header"]["revision"]'
  fi
}

# The value node PORT holds for key bench:DIGITS (empty when none).
read_value() { # side port digits
  if [ "$1" = replikv ]; then
    curl -sf -m 5 "http://127.0.0.1:$2/api/v1/kv/bench:$3" || true
  else
    local key64
    key64=$(printf 'bench:%s' "$3" | base64 -w0)
    curl -sf -m 5 -X POST -d "{\"key\":\"$key64\"}" "http://127.0.0.1:$2/v3/kv/range" \
      | json 'base64.b64decode((d.get("kvs") or [{}])[0].get("value", "")).decode(errors="replace")' || true
  fi
}

# Prints why the writes of a run did not land, nothing when they did.
landing_problems() { # side leader_port before after wrk_output tag
  local side=$1 leader=$2 before=$3 after=$4 out=$5 tag=$6 ok digits i p value
  ok=$(python3 "$work/summary.py" field "$out" ok)
  if [ -z "$before" ] || [ -z "$after" ]; then
    echo "could not read the leader's log position"
  elif [ $((after - before)) -lt "$ok" ]; then
    echo "the leader's log grew by $((after - before)) for $ok OK answers"
  fi
  for digits in $(python3 "$work/summary.py" field "$out" keys); do
    for i in 1 2 3; do
      if [ "$side" = replikv ]; then p=$(rk_http "$i"); else p=$(etcd_client "$i"); fi
      for _ in $(seq 1 $((READ_BACK_WAIT_S * 10))); do
        value=$(read_value "$side" "$p" "$digits")
        [[ $value == "$tag-"* ]] && break
        sleep 0.1
      done
      [[ $value == "$tag-"* ]] || echo "bench:$digits on port $p reads '${value:0:40}', not this run's $tag"
    done
  done
  if [ "$side" = replikv ] && [ "$(replikv_leader)" != "$leader" ]; then echo "the leader changed"; fi
  if [ "$side" = etcd ] && [ "$(etcd_leader)" != "$leader" ]; then echo "the leader changed"; fi
}

# wrk's script. Arguments after --: side, records, value bytes, tag, seed. Each thread draws its
# keys from its own seeded generator (the same sequence on both sides of a round), and the
# requests are built from parts made once: only the key changes. For etcd a key's base64 is the
# prefix's (6 bytes) then three 3-digit groups' (a table of 1000), so no request encodes.
cat > "$work/put.lua" <<'LUA'
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    local chunk = {}
    for j = 1, 4 do chunk[j] = alphabet:sub(q[j] + 1, q[j] + 1) end
    if not b then chunk[3], chunk[4] = "=", "=" elseif not c then chunk[4] = "=" end
    out[#out + 1] = table.concat(chunk)
  end
  return table.concat(out)
end

function init(args)
  side, records = args[1], tonumber(args[2])
  local value_bytes, tag, seed = tonumber(args[3]), args[4], tonumber(args[5])
  math.randomseed(seed * 1000 + id)
  local value = tag .. "-" .. string.rep("v", value_bytes - #tag - 1)
  local host = "Host: " .. wrk.host .. ":" .. wrk.port .. "\r\n"
  if side == "replikv" then
    head = "PUT /api/v1/kv/bench:"
    tail = " HTTP/1.1\r\n" .. host .. "Content-Length: " .. #value .. "\r\n\r\n" .. value
    marker = '"ok":true'
  else
    groups = {}
    for g = 0, 999 do groups[g] = base64(string.format("%03d", g)) end
    local body_head = '{"key":"' .. base64("bench:")
    local body_tail = '","value":"' .. base64(value) .. '"}'
    head = "POST /v3/kv/put HTTP/1.1\r\n" .. host .. "Content-Type: application/json\r\n"
      .. "Content-Length: " .. (#body_head + 12 + #body_tail) .. "\r\n\r\n" .. body_head
    tail = body_tail
    marker = '"revision"'
  end
  drawn, checked_key, responses, non2xx, no_marker, first_error = 0, "-", 0, 0, 0, ""
end

-- The key checked after the run is a thread's second: wrk calls the first thread's request()
-- once to inspect it and sends nothing.
function request()
  local n = math.random(0, records - 1)
  drawn = drawn + 1
  if drawn == 2 then checked_key = string.format("%09d", n) end
  if side == "replikv" then return head .. string.format("%09d", n) .. tail end
  return head .. groups[math.floor(n / 1000000)] .. groups[math.floor(n / 1000) % 1000] .. groups[n % 1000] .. tail
end

function response(status, headers, body)
  responses = responses + 1
  local bad = status < 200 or status > 299
  if bad then non2xx = non2xx + 1 elseif not body:find(marker, 1, true) then no_marker = no_marker + 1; bad = true end
  if bad and first_error == "" then first_error = status .. " " .. body:sub(1, 200):gsub("%s+", " ") end
end

function done(summary, latency, requests)
  local r, n, m, keys, err = 0, 0, 0, {}, ""
  for _, t in ipairs(threads) do
    r, n, m = r + t:get("responses"), n + t:get("non2xx"), m + t:get("no_marker")
    keys[#keys + 1] = t:get("checked_key")
    if err == "" then err = t:get("first_error") end
  end
  io.write(string.format("lua: responses %d non2xx %d no_marker %d keys %s\n", r, n, m, table.concat(keys, ",")))
  io.write("lua: first_error " .. err .. "\n")
end
LUA

cat > "$work/summary.py" <<'PY'
import re, statistics, sys
from pathlib import Path

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}

def parse(path):
    """wrk --latency's output and the Lua script's lines, as a dict (None where missing)."""
    text = Path(path).read_text(errors="replace")
    def num(pattern, cast=int):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else None
    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        return float(m.group(1)) * UNIT_MS[m.group(2)] if m else None
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    lua = re.search(r"^lua: responses (\d+) non2xx (\d+) no_marker (\d+) keys (\S*)$", text, re.M)
    return {
        "rps": num(r"^Requests/sec:\s+([\d.]+)", float),
        "requests": num(r"^\s+(\d+) requests in "),
        "p50": pct(50), "p99": pct(99),
        "socket": dict(zip(["connect", "read", "write", "timeout"], map(int, sock.groups()))) if sock else {},
        "non2xx": num(r"^\s+Non-2xx or 3xx responses: (\d+)") or 0,
        "lua": [int(g) for g in lua.groups()[:3]] if lua else None,
        "keys": [k for k in lua.group(4).split(",") if k != "-"] if lua else [],
        "first_error": (re.search(r"^lua: first_error (.*)$", text, re.M) or [None, ""])[1],
    }

def problems(r):
    out = []
    if r["rps"] is None or r["p50"] is None or r["p99"] is None or r["requests"] is None or r["lua"] is None:
        out.append("wrk's output could not be read")
        return out
    socket = {k: v for k, v in r["socket"].items() if v}
    if socket:
        out.append("socket errors " + ", ".join(f"{k} {v}" for k, v in socket.items()))
    responses, non2xx, no_marker = r["lua"]
    if r["non2xx"] or non2xx or no_marker:
        out.append(f"{max(r['non2xx'], non2xx)} answers not 2xx, {no_marker} without the success marker;"
                   f" first: {r['first_error']}")
    if r["requests"] == 0 or r["rps"] <= 0:
        out.append("no request completed")
    return out

def line(path):
    r = parse(path)
    if r["rps"] is None or r["p50"] is None or r["p99"] is None:
        return "no figures"
    grew = re.search(r"^check: the leader's log grew by (\d+)$", Path(path).read_text(errors="replace"), re.M)
    return (f"{r['rps']:>8.0f} writes/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms"
            f"  ({r['requests']} answers, leader's log +{grew[1] if grew else '?'})")

def field(path, name):
    r = parse(path)
    if name == "ok":
        return r["lua"][0] - r["lua"][1] - r["lua"][2] if r["lua"] else 0
    return " ".join(r["keys"])

def table(work, pairs, connections, rounds, target):
    med = statistics.median
    print("| pair | connections | replikv writes/s | etcd writes/s | ratio | p50 ms (replikv/etcd) | p99 ms (replikv/etcd) | per-round throughput ratios | clean rounds | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
    failed = False
    for pair in pairs:
        for c in connections:
            rows = []
            for r in range(1, rounds + 1):
                a, b = (f"{work}/{pair}/c{c}/{r}-{side}.txt" for side in ("replikv", "etcd"))
                if not Path(a + ".failed").exists() and not Path(b + ".failed").exists():
                    rows.append((parse(a), parse(b)))
            if not rows:
                print(f"| {pair} | {c} | - | - | - | - | - | - | 0/{rounds} | failed |")
                failed = True
                continue
            tput = [a["rps"] / b["rps"] for a, b in rows]
            ratio = med(tput)
            print(f"| {pair} | {c} | {med(a['rps'] for a, _ in rows):.0f} | {med(b['rps'] for _, b in rows):.0f}"
                  f" | {ratio:.2f} | {med(a['p50'] for a, _ in rows):.2f}/{med(b['p50'] for _, b in rows):.2f}"
                  f" | {med(a['p99'] for a, _ in rows):.2f}/{med(b['p99'] for _, b in rows):.2f}"
                  f" | {' '.join(f'{t:.2f}' for t in tput)} | {len(rows)}/{rounds}"
                  f" | {'met' if ratio >= target else 'missed'} ({target:g}x) |")
    print("# ratio: median of the per-round ratios replikv/etcd (above 1: replikv wrote more); latencies are medians over rounds.")

cmd = sys.argv[1]
if cmd == "line":
    print(line(sys.argv[2]))
elif cmd == "problems":
    print("\n".join(problems(parse(sys.argv[2]))))
elif cmd == "field":
    print(field(sys.argv[2], sys.argv[3]))
else:
    table(sys.argv[2], sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5]), float(sys.argv[6]))
PY

ports_free
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r), etcd $(etcd --version | sed -n 's/^etcd Version: //p'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "# wrk -t $THREADS -d $DURATION --latency --timeout $WRK_TIMEOUT, connections $CONNECTIONS; PUT of $VALUE_BYTES-byte values, uniform over $RECORDS keys; $ROUNDS rounds, replikv first"
$replikv bench probe --dir "$work" --seconds 1 | sed 's/^/# probe: /'

failed=0
run=0
for pair in $PAIRS; do
  mkdir -p "$work/$pair/etcd"
  start_replikv "$pair"
  start_etcd "$work/$pair/etcd" "bench-$pair"
  rk=$(replikv_leader) || { KEEP=1; exit 1; }
  et=$(etcd_leader) || { KEEP=1; exit 1; }
  echo "# pair $pair: replikv 3 nodes, acks = $(acks_of "$pair"), leader HTTP port $rk | etcd 3 members, leader client port $et"
  for c in $CONNECTIONS; do
    mkdir -p "$work/$pair/c$c"
    threads=$((c < THREADS ? c : THREADS))
    for round in $(seq 1 "$ROUNDS"); do
      for side in replikv etcd; do
        run=$((run + 1))
        tag=$(printf 'run%04d' "$run")
        if [ "$side" = replikv ]; then port=$rk; else port=$et; fi
        out="$work/$pair/c$c/$round-$side.txt"
        before=$(log_count "$side" "$port" || true)
        wrk -t "$threads" -c "$c" -d "$DURATION" --timeout "$WRK_TIMEOUT" --latency -s "$work/put.lua" \
          "http://127.0.0.1:$port/" -- "$side" "$RECORDS" "$VALUE_BYTES" "$tag" $((SEED + round)) > "$out" 2>&1 \
          || echo "wrk exited with status $?" >> "$out"
        after=$(log_count "$side" "$port" || true)
        if [ -n "$before" ] && [ -n "$after" ]; then echo "check: the leader's log grew by $((after - before))" >> "$out"; fi
        {
          python3 "$work/summary.py" problems "$out"
          landing_problems "$side" "$port" "$before" "$after" "$out" "$tag"
        } | grep . > "$out.failed" || rm -f "$out.failed"
        printf '%-9s c=%-4s round %s %-8s %s\n' "$pair" "$c" "$round" "$side" "$(python3 "$work/summary.py" line "$out")"
        if [ -e "$out.failed" ]; then
          failed=$((failed + 1))
          sed 's/^/    FAILED: /' "$out.failed"
        fi
      done
    done
  done
  stop_all
done

echo
python3 "$work/summary.py" table "$work" "$PAIRS" "$CONNECTIONS" "$ROUNDS" "$TARGET"
if [ "$failed" -gt 0 ]; then
  echo "# $failed runs failed (left out of the table); wrk outputs and logs kept in $work" >&2
  KEEP=1
  exit 1
fi
