#!/usr/bin/env bash
# Runs libFuzzer targets: each over its committed corpus
# (tests/fuzz/corpus/NAME, read only: seeds and inputs that once failed)
# and then fuzzing for FUZZ_SECONDS with a scratch corpus. A failing input
# is kept as $FUZZ_B/crash-NAME-* and the run fails.
# FUZZ_SEED: libFuzzer's -seed (0: random).
# usage: FUZZ_B=build-fuzz FUZZ_SECONDS=10 FUZZ_SEED=1 bash tests/fuzz/run.sh BIN...
set -eu
cd "$(dirname "$0")/../.."
B=${FUZZ_B:-build-fuzz}
S=${FUZZ_SECONDS:-10}
SEED=${FUZZ_SEED:-0}
fail=0
for bin in "$@"; do
    name=$(basename "$bin")
    name=${name#fuzz_}
    seeds=tests/fuzz/corpus/$name
    work=$(mktemp -d)
    log=$B/fuzz-$name.log
    echo "== fuzz $name: corpus $(ls "$seeds" 2>/dev/null | wc -l) files, ${S}s"
    # -use_value_profile: comparisons with magic numbers and counts
    if ! "$bin" -seed="$SEED" -max_total_time="$S" -timeout=20 -rss_limit_mb=3072 -max_len=65536 \
        -use_value_profile=1 -print_final_stats=1 -artifact_prefix="$B/crash-$name-" \
        "$work" "$seeds" >"$log" 2>&1; then
        echo "fuzz $name FAILED: see $log and $B/crash-$name-*" >&2
        grep -E 'ERROR|invariant|runtime error|SUMMARY' "$log" | head -20 >&2 || true
        fail=1
    else
        grep -E 'stat::number_of_executed_units|cov: ' "$log" | tail -2 | sed 's/^/   /'
    fi
    rm -rf "$work"
done
exit $fail
