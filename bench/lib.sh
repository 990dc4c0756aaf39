# Shared by the bench scripts (source it from the repository's root): a work directory under
# target/, every process started stopped by PID on exit or Ctrl-C, and waits for redis-server.
#
#   bench_workdir NAME     sets $work to a fresh target/bench-NAME-<time>-XXXX (removed on exit
#                          unless KEEP=1)
#   start_redis PORT DIR [redis-server flags...]   starts one and waits until it answers PING
#   wait_port PORT, wait_replicas PORT N
#   track_cluster BIN NAME a replikv cluster started in $work by BIN, for stop_all to stop
#   stop_all               stops every tracked cluster and every PID in $pids, after stop_extra
#                          (redefine it to stop more)

pids=()
work=""
clusters=()

bench_workdir() { # name
  mkdir -p target
  work=$(mktemp -d "$PWD/target/bench-$1-$(date -u +%Y%m%dT%H%M%S)-XXXX")
}

stop_extra() { :; }

track_cluster() { # bin name
  clusters+=("$1|$2")
}

stop_all() {
  stop_extra
  for cluster in "${clusters[@]}"; do
    "${cluster%%|*}" cluster stop --name "${cluster#*|}" --data "$work" >/dev/null 2>&1 || true
  done
  clusters=()
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

cleanup() {
  stop_all
  [ -n "$work" ] || return 0
  if [ "${KEEP:-0}" = 1 ]; then echo "# runs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port
  for _ in $(seq 1 200); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "port $1 never answered; logs in $work" >&2; KEEP=1; exit 1
}

wait_replicas() { # port count
  for _ in $(seq 1 200); do
    redis-cli -p "$1" info replication | grep -q "^connected_slaves:$2" && return 0; sleep 0.05
  done
  echo "redis on port $1 never saw $2 replicas" >&2; KEEP=1; exit 1
}

start_redis() { # port dir [redis-server flags...]
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --daemonize no \
    --logfile "$dir/redis.log" "$@" &
  pids+=($!)
  wait_port "$port"
}
