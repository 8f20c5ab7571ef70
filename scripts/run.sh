#!/usr/bin/env bash
# `make run`: the main job on the embedded defaults. Starts dwfd on
# 127.0.0.1:8080 with the SQLite database var/dwf.db, submits
# examples/main.json (LeNet-300-100 on Fashion-MNIST, DWF with D = 3),
# follows its epochs, downloads the sparse model into var/, and keeps the
# daemon serving the dashboard until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
addr=${DWF_LISTEN:-127.0.0.1:8080}
mkdir -p var
build/dwfd --listen "$addr" --db var/dwf.db > var/dwfd.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 50); do
    curl -fsS "http://$addr/healthz" > /dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { cat var/dwfd.log; exit 1; }
    sleep 0.1
done
echo "dwfd running at http://$addr/ (dashboard), log in var/dwfd.log"
job=$(curl -fsS -X POST -H 'Content-Type: application/json' \
    --data-binary @examples/main.json "http://$addr/v1/jobs")
id=$(printf '%s' "$job" | sed -n 's/^{"id":\([0-9]*\).*/\1/p')
echo "submitted job $id: http://$addr/#/jobs/$id"
# one line per epoch from the job's event stream (ends when the job ends)
num() { printf '%s' "$2" | sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p"; }
curl -fsSN "http://$addr/v1/jobs/$id/events" | while IFS= read -r line; do
    case "$line" in
    "event: "*) ev=${line#event: } ;;
    "data: "*)
        d=${line#data: }
        if [ "$ev" = epoch ]; then
            printf 'epoch %3s/%s  loss %.4f  test %.4f  sparse %.4f  CR %.1f\n' \
                "$(num epoch "$d")" "$(num epochs "$d")" "$(num train_loss "$d")" \
                "$(num test_acc "$d")" "$(num sparse_test_acc "$d")" "$(num cr "$d")"
        elif [ "$ev" = state ]; then
            echo "state: $(printf '%s' "$d" | sed -n 's/.*"state":"\([a-z]*\)".*/\1/p')"
        fi ;;
    esac
done
curl -fsS -o var/main-model.safetensors "http://$addr/v1/jobs/$id/model?format=safetensors" &&
    echo "sparse model saved to var/main-model.safetensors"
curl -fsS -o var/main-model.dwfm "http://$addr/v1/jobs/$id/model?format=dwfm" &&
    build/dwf info var/main-model.dwfm | head -n 3
echo "dwfd keeps serving http://$addr/ - Ctrl-C to stop"
wait $pid
