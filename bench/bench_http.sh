#!/usr/bin/env bash
# HTTP benchmark of dwfd (not a timed test): wrk against GET /v1/jobs/{id}
# and GET /v1/jobs while one training job runs, and that job's training
# speed (samples/s from its epoch metrics) without and with the HTTP load,
# measured in the same run.
#
#   bash bench/bench_http.sh                   # scenario "default", build/dwfd
#   SCENARIOS="default serve0" DURATION=8 bash bench/bench_http.sh
#   LOADS="id-paced list-paced" bash bench/bench_http.sh
#
# Scenarios (wrk runs on the same cores as dwfd; on a real deployment the
# clients are elsewhere):
#   default   dwfd defaults: --serve-cores 1 on a machine with 2 or more
#             cores, so the job trains on the other cores (1 thread here)
#   serve0    dwfd --serve-cores 0: the job trains with every core (2
#             batch slices here) and shares them with HTTP and wrk
#   custom    dwfd $DWFD_ARGS, wrk prefixed by $WRK_PREFIX (e.g. "nice -n 19")
# The training job asks for train.threads 8, so it trains with its whole
# budget (dwfd caps it at its worker's share of the training cores).
#
# Loads ($LOADS, in order):
#   id-paced, list-paced  GET /v1/jobs/{id}, GET /v1/jobs?limit=20 paced:
#                         RATE_CONNS connections that each wait PACE_MS ms
#                         between requests (at most RATE_CONNS * 1000 /
#                         PACE_MS req/s: the load of many polling clients
#                         rather than of one greedy one)
#   id, list, summary, healthz
#                         the same routes (summary = ?view=summary, healthz
#                         = GET /healthz) flat out: CONNS connections, no wait
# Training alone is measured for ALONE s (default 4) before each
# load and after the last; each load's training speed is compared with the
# mean of the windows just before and after it, so that a drift of the
# machine's speed (other work on a shared machine) is not taken for the
# load's effect. Every line also gives the CPU (in % of one core) used by
# dwfd (training included), by wrk and by other processes in that window:
# "other" well above 0 means the shared machine was busy and the line is
# not to be trusted. A run with the defaults takes about 70 s.
# Prints one line per phase; the numbers go into bench/README.md.
set -eu
cd "$(dirname "$0")/.."
B=${DWF_BUILD:-build}
DURATION=${DURATION:-6}
ALONE=${ALONE:-4}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
SCENARIOS=${SCENARIOS:-default}
LOADS=${LOADS:-id-paced list-paced id list summary healthz}
RATE_CONNS=${RATE_CONNS:-64}
PACE_MS=${PACE_MS:-4}
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
# mean samples/s of the epochs in (lo, hi] of job $1 (integer; 0 = none)
sps() {
    jget "/v1/jobs/$1/metrics" | py '
import json, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
v = [m["samples_per_sec"] for m in json.load(sys.stdin)["metrics"] if lo < m["epoch"] <= hi]
print("%d %d" % (round(sum(v) / len(v)) if v else 0, len(v)))' "$2" "$3"
}
# CPU clock ticks: "elapsed-per-core busy-all dwfd" (from /proc)
ncpu=$(nproc)
snap() {
    local t b d
    read -r t b < <(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $2+$3+$4+$7+$8+$9}' /proc/stat)
    d=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    echo "$((t / ncpu)) $b $d"
}
# percent of one core used between snapshots $1 and $2 (strings of snap)
# by dwfd and by everything else (wrk included): "dwfd other"
cpu_use() {
    local t0 b0 d0 t1 b1 d1
    read -r t0 b0 d0 <<< "$1"
    read -r t1 b1 d1 <<< "$2"
    local dt=$((t1 - t0 > 0 ? t1 - t0 : 1))
    echo "$(( (d1 - d0) * 100 / dt )) $(( (b1 - b0 - d1 + d0) * 100 / dt ))"
}

# training alone for ALONE s: appends "samples/s other-CPU%" to $tmp/alone
alone() {
    local e0 e1 s n c0 c1 dw other
    e0=$(epochs_done "$tid")
    c0=$(snap)
    sleep "$ALONE"
    c1=$(snap)
    e1=$(epochs_done "$tid")
    read -r s n <<< "$(sps "$tid" "$((e0 + 1))" "$e1")"
    read -r dw other <<< "$(cpu_use "$c0" "$c1")"
    echo "$s $other" >> "$tmp/alone"
}

run_wrk() {
    local path=$1 label=$2 conns=$3 script=$4 a b out rps p99 errs s n c0 c1 dw other
    local wu ws TIMEFORMAT='%U %S'
    a=$(epochs_done "$tid")
    c0=$(snap)
    # shellcheck disable=SC2086
    { time $wrk_prefix wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency \
        ${script:+-s "$script"} "$base$path" > "$tmp/wrk.out" 2> "$tmp/wrk.err"; } 2> "$tmp/wrk.time"
    c1=$(snap)
    b=$(epochs_done "$tid")
    out=$(cat "$tmp/wrk.out")
    read -r dw other <<< "$(cpu_use "$c0" "$c1")"
    read -r wu ws < "$tmp/wrk.time"
    # wrk's share of "other": its user + system time over the run
    local wrk_pct
    wrk_pct=$(awk -v u="$wu" -v s="$ws" -v d="$DURATION" 'BEGIN {printf "%d", (u + s) * 100 / d}')
    rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(printf '%s\n' "$out" | awk '$1 == "99%" {print $2}')
    errs=$(printf '%s\n' "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')
    read -r s n <<< "$(sps "$tid" "$((a + 1))" "$b")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rps" "$p99" "$s" "$n" \
        "$dw" "$wrk_pct" "$((other - wrk_pct))" "$errs" >> "$tmp/lines"
}

scenario() {
    local name=$1 args=$2
    wrk_prefix=$3
    rm -f "$tmp/bench.db"* "$tmp/lines" "$tmp/alone"
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
    echo "== scenario $name: dwfd --workers 1 $args; wrk $wrk_prefix -t$THREADS," \
        "flat out -c$CONNS, paced -c$RATE_CONNS with ${PACE_MS} ms between requests;" \
        "${DURATION} s each"
    sed -n 's/.*dwfd: serving [^(]*(\(.*\))$/dwfd: \1/p' "$tmp/log"

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

    # The training job: LeNet-300-100 on 20000 Fashion-MNIST samples, with
    # as many batch slices as dwfd gives it.
    local long='{"name": "bench-train", "data": {"train_subset": 20000, "test_subset": 2000},
      "model": {"arch": "mlp", "hidden": [300, 100]},
      "train": {"epochs": 1000, "lambda": 0.0005, "threads": 8}}'
    tid=$(submit "$long")
    while [ "$(epochs_done "$tid")" -lt 2 ]; do sleep 0.2; done
    grep -o "job $tid started.*" "$tmp/log" | sed 's/^/dwfd: /' || true

    for load in $LOADS; do
        alone
        case $load in
        id-paced) run_wrk "/v1/jobs/$sid" "GET /v1/jobs/{id} paced" "$RATE_CONNS" "$tmp/pace.lua" ;;
        list-paced) run_wrk "/v1/jobs?limit=20" "GET /v1/jobs paced" "$RATE_CONNS" "$tmp/pace.lua" ;;
        id) run_wrk "/v1/jobs/$sid" "GET /v1/jobs/{id}" "$CONNS" "" ;;
        list) run_wrk "/v1/jobs?limit=20" "GET /v1/jobs?limit=20" "$CONNS" "" ;;
        summary) run_wrk "/v1/jobs?limit=20&view=summary" "GET /v1/jobs (summary)" "$CONNS" "" ;;
        healthz) run_wrk "/healthz" "GET /healthz" "$CONNS" "" ;;
        *) echo "bench_http: unknown load $load" >&2; exit 2 ;;
        esac
    done
    alone
    echo "training alone ($ALONE s windows before, between and after the loads):" \
        "samples/s $(awk '{printf "%s ", $1}' "$tmp/alone")"
    echo "  CPU of other processes in those windows (% of a core):" \
        "$(awk '{printf "%s ", $2}' "$tmp/alone")"
    echo "  (each load: training samples/s vs the mean of the windows around it; CPU in % of a core)"
    # each load's training speed relative to the windows around it
    local label rps p99 errs rel ref i=0 al dw wp op
    mapfile -t al < <(awk '{print $1}' "$tmp/alone")
    while IFS=$'\t' read -r label rps p99 s n dw wp op errs; do
        ref=$(( (al[i] + al[i + 1]) / 2 ))
        i=$((i + 1))
        rel=n/a
        [ "$ref" -gt 0 ] && [ "$s" -gt 0 ] &&
            rel=$(printf '%+d%%' "$(( (s * 100 + ref / 2) / ref - 100 ))")
        printf '%-24s req/s %-9s p99 %-8s training %-6s vs %-6s %-5s CPU dwfd %3s wrk %3s other %3s %s\n' \
            "$label:" "${rps%.*}" "$p99" "$s" "$ref" "$rel" "$dw" "$wp" "$op" "$errs"
    done < "$tmp/lines"
    curl -fsS -X POST "$base/v1/jobs/$tid/cancel" > /dev/null
    kill "$pid"
    wait "$pid" || true
    pid=
}

echo "function delay() return $PACE_MS end" > "$tmp/pace.lua"
echo "bench_http: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for sc in $SCENARIOS; do
    case $sc in
    default) scenario default "" "" ;;
    serve0) scenario serve0 "--serve-cores 0" "" ;;
    custom) scenario custom "${DWFD_ARGS:-}" "${WRK_PREFIX:-}" ;;
    *) echo "bench_http: unknown scenario $sc" >&2; exit 2 ;;
    esac
done
