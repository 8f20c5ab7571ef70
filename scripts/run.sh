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
id=$(printf '%s' "$job" | sed -n 's/^{"id": *\([0-9]*\).*/\1/p; s/.*"id": *\([0-9]*\).*/\1/p' | head -n1)
echo "submitted job $id: http://$addr/#/jobs/$id"
curl -fsSN "http://$addr/v1/jobs/$id/events" | while IFS= read -r line; do
    case "$line" in
    data:*) printf '%s\n' "${line#data: }" | /usr/bin/python3 -c '
import json, sys
m = json.loads(sys.stdin.read())
if "epoch" in m and "test_acc" in m:
    print("epoch %3d  loss %.4f  test %.4f  sparse %.4f  CR %.1f" % (
        m["epoch"], m["train_loss"], m["test_acc"], m["sparse_test_acc"], m["cr"]))
elif "state" in m:
    print("state", m["state"])
' 2>/dev/null || true ;;
    esac
done
curl -fsS -o var/main-model.safetensors "http://$addr/v1/jobs/$id/model?format=safetensors" &&
    echo "sparse model saved to var/main-model.safetensors"
curl -fsS "http://$addr/v1/jobs/$id" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
m = j.get("metrics") or {}
print("job %s %s: sparse test accuracy %.4f at CR %.1f" % (j["id"], j["state"],
      m.get("sparse_test_acc") or 0, m.get("cr") or 0))'
echo "dwfd keeps serving http://$addr/ - Ctrl-C to stop"
wait $pid
