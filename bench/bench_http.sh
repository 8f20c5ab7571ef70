#!/usr/bin/env bash
# HTTP benchmark of dwfd (not a timed test): wrk against GET /v1/jobs/{id}
# and GET /v1/jobs while one training job runs, and that job's training
# speed (samples/s from its epoch metrics) without and with the HTTP load.
#
#   bash bench/bench_http.sh                   # both scenarios, build/dwfd
#   SCENARIOS=default DURATION=10 CONNS=32 THREADS=2 bash bench/bench_http.sh
#
# Scenarios (wrk runs on the same cores as dwfd, so it competes with the
# training job for CPU; on a real deployment clients are elsewhere):
#   default   dwfd defaults (--blas-threads = cores / workers)
#   blas1     dwfd --blas-threads 1: the job trains on one core, HTTP and
#             wrk share the other
#   custom    dwfd $DWFD_ARGS, wrk prefixed by $WRK_PREFIX (e.g. "nice -n 19")
# Each runs wrk flat out (-c CONNS) and paced (RATE_CONNS connections that
# each wait 2 ms between requests, about RATE_CONNS * 400 req/s: the load
# of many clients rather than of one greedy one).
# Prints one line per phase; the numbers go into bench/README.md.
set -eu
cd "$(dirname "$0")/.."
B=${DWF_BUILD:-build}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
SCENARIOS=${SCENARIOS:-default blas1}
RATE_CONNS=${RATE_CONNS:-28}
command -v wrk > /dev/null || { echo "bench_http: wrk is not installed" >&2; exit 1; }
[ -x "$B/dwfd" ] || { echo "bench_http: build $B/dwfd first (make)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/dwf-bench-XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2> /dev/null && wait "$pid" 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

py() { /usr/bin/python3 -c "$@"; }
jget() { curl -fsS "$base$1"; }
submit() {
    curl -fsS -X POST -H 'Content-Type: application/json' --data-binary "$1" "$base/v1/jobs" |
        py 'import json,sys; print(json.load(sys.stdin)["id"])'
}
state() { jget "/v1/jobs/$1" | py 'import json,sys; print(json.load(sys.stdin)["state"])'; }
epochs_done() {
    jget "/v1/jobs/$1/metrics" | py 'import json,sys; print(len(json.load(sys.stdin)["metrics"]))'
}
# mean samples/s of the epochs in (lo, hi] of job $1
sps() {
    jget "/v1/jobs/$1/metrics" | py '
import json, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
v = [m["samples_per_sec"] for m in json.load(sys.stdin)["metrics"] if lo < m["epoch"] <= hi]
print("%.0f (%d epochs)" % (sum(v) / len(v), len(v)) if v else "n/a (no whole epoch)")' "$2" "$3"
}

scenario() {
    local name=$1 args=$2 wrk_prefix=$3
    rm -f "$tmp/bench.db"*
    # shellcheck disable=SC2086
    "$B/dwfd" --listen 127.0.0.1:0 --db "$tmp/bench.db" --workers 1 $args \
        > "$tmp/out" 2> "$tmp/log" &
    pid=$!
    base=
    for _ in $(seq 100); do
        base=$(sed -n 's/^dwfd listening on //p' "$tmp/out" 2> /dev/null)
        [ -n "$base" ] && break
        sleep 0.1
    done
    [ -n "$base" ] || { cat "$tmp/log"; exit 1; }
    echo "== scenario $name: dwfd --workers 1 $args; wrk $wrk_prefix -t$THREADS -c$CONNS -d${DURATION}s"

    # A finished job to GET (a realistic object: spec, metrics, model) and
    # a list of 21 jobs.
    local small='{"name": "bench-small", "data": {"train_subset": 2000, "test_subset": 500},
      "model": {"arch": "mlp", "hidden": [64]}, "train": {"epochs": 2}}'
    local sid s id
    sid=$(submit "$small")
    while :; do
        s=$(state "$sid")
        case "$s" in succeeded) break ;; failed|canceled) echo "small job $s" >&2; exit 1 ;; esac
        sleep 0.2
    done
    for _ in $(seq 20); do submit "$small" > /dev/null; done
    for id in $(jget "/v1/jobs?state=queued&limit=100&view=summary" |
            py 'import json,sys; print(" ".join(str(j["id"]) for j in json.load(sys.stdin)["jobs"]))'); do
        curl -sS -X POST "$base/v1/jobs/$id/cancel" > /dev/null || true
    done

    # The training job: LeNet-300-100 on 20000 Fashion-MNIST samples.
    local long='{"name": "bench-train", "data": {"train_subset": 20000, "test_subset": 2000},
      "model": {"arch": "mlp", "hidden": [300, 100]}, "train": {"epochs": 500, "lambda": 0.0005}}'
    tid=$(submit "$long")
    while [ "$(epochs_done "$tid")" -lt 1 ]; do sleep 0.2; done
    local e0 e1
    e0=$(epochs_done "$tid")
    sleep "$DURATION"
    e1=$(epochs_done "$tid")
    echo "training alone:            samples/s $(sps "$tid" "$e0" "$e1")"

    run_wrk() {
        local path=$1 label=$2 conns=${3:-$CONNS} script=${4:-} a b out rps p99 errs
        a=$(epochs_done "$tid")
        # shellcheck disable=SC2086
        out=$($wrk_prefix wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency \
            ${script:+-s "$script"} "$base$path")
        b=$(epochs_done "$tid")
        rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(printf '%s\n' "$out" | awk '$1 == "99%" {print $2}')
        errs=$(printf '%s\n' "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')
        printf '%-26s req/s %-10s p99 %-9s training samples/s %s %s\n' "$label:" "$rps" \
            "$p99" "$(sps "$tid" "$((a + 1))" "$b")" "$errs"
    }
    run_wrk "/v1/jobs/$sid" "GET /v1/jobs/{id}"
    run_wrk "/v1/jobs?limit=20" "GET /v1/jobs?limit=20"
    run_wrk "/v1/jobs?limit=20&view=summary" "GET /v1/jobs (summary)"
    run_wrk "/healthz" "GET /healthz"
    # paced load, as from many clients
    run_wrk "/v1/jobs/$sid" "GET /v1/jobs/{id} paced" "$RATE_CONNS" "$tmp/pace.lua"
    run_wrk "/v1/jobs?limit=20" "GET /v1/jobs paced" "$RATE_CONNS" "$tmp/pace.lua"
    e0=$(epochs_done "$tid")
    sleep "$DURATION"
    e1=$(epochs_done "$tid")
    echo "training alone again:      samples/s $(sps "$tid" "$((e0 + 1))" "$e1")"
    curl -fsS -X POST "$base/v1/jobs/$tid/cancel" > /dev/null
    kill "$pid"
    wait "$pid" || true
    pid=
}

echo 'function delay() return 2 end' > "$tmp/pace.lua"
echo "bench_http: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for sc in $SCENARIOS; do
    case $sc in
    default) scenario default "" "" ;;
    blas1) scenario blas1 "--blas-threads 1" "" ;;
    custom) scenario custom "${DWFD_ARGS:-}" "${WRK_PREFIX:-}" ;;
    *) echo "bench_http: unknown scenario $sc" >&2; exit 2 ;;
    esac
done
