#!/usr/bin/env bash
# Browser test of the dashboard (make check-browser): Debian's chromium,
# driven headless by playwright-core (from the npm registry, installed here
# into tests/browser/node_modules; no browser download), against two dwfd
# started on ephemeral ports with temporary databases: an open one that
# trains, and one that needs a token (no workers). Screenshots go to
# tests/artifacts/. Env: DWF_BUILD (build folder, default build),
# DWF_CHROMIUM (default /usr/bin/chromium).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${DWF_BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
chromium=${DWF_CHROMIUM:-/usr/bin/chromium}

die() { echo "browser test: $*" >&2; exit 1; }
[ -x "$build/dwfd" ] || die "$build/dwfd is missing (run make first)"
[ -x "$chromium" ] || die "$chromium is missing (bash scripts/deps.sh --tests installs chromium)"
command -v node >/dev/null || die "node is missing (bash scripts/deps.sh --tests installs nodejs)"

if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
    command -v npm >/dev/null || die "npm is missing: cannot install playwright-core"
    echo "browser test: installing playwright-core into tests/browser/node_modules"
    (cd "$here" && npm install --no-audit --no-fund --loglevel=error) ||
        die "npm install of playwright-core failed"
fi

tmp=$(mktemp -d /tmp/dwf-browser.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# start NAME ARGS...: runs dwfd, sets $port from its "listening" line
start() {
    local name=$1
    shift
    "$build/dwfd" --listen 127.0.0.1:0 --db "$tmp/$name.db" "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=($!)
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/^dwfd listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/$name.out" | head -1)
        [ -n "$port" ] && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/$name.err" >&2
    die "dwfd ($name) did not start"
}

start main --workers 1 --blas-threads 1
main_port=$port
start auth --workers 0 --token browser-test-token --auth-reads
auth_port=$port

mkdir -p "$root/tests/artifacts"
status=0
DWF_CHROMIUM=$chromium node "$here/dashboard.test.mjs" \
    "http://127.0.0.1:$main_port" "http://127.0.0.1:$auth_port" \
    "$root/tests/artifacts" || status=$?
if [ "$status" != 0 ]; then
    echo "--- dwfd (main) log:" >&2
    tail -n 30 "$tmp/main.err" >&2 || true
fi
exit "$status"
