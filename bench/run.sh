#!/usr/bin/env bash
# `make bench`: every benchmark in one run, so that ratios compare figures
# measured side by side on the same machine. Writes bench/results.json and
# prints a summary. See bench/README.md for what each figure means.
set -eu
cd "$(dirname "$0")/.."
B=${DWF_BUILD:-build}
out=bench/results.json
EPOCHS=${BENCH_EPOCHS:-2}
echo "== training throughput: dwf (LeNet-300-100, batch 128, 2 threads: batch slices in parallel, 1 BLAS thread each)"
dwf_json=$("$B/bench/bench_train" "$EPOCHS" 2)
echo "$dwf_json"
echo "== training throughput: PyTorch peer (torch.set_num_threads(2), OPENBLAS_NUM_THREADS=1)"
torch_json=$(OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_train.py "$EPOCHS" 2)
echo "$torch_json"
echo "== peak memory of a Fashion-MNIST run (dwf train, LeNet-300-100, D = 3, 1 epoch)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo '{"name": "bench-memory", "train": {"epochs": 1}}' > "$tmp/spec.json"
peak_kb=$(/usr/bin/python3 - "$B/dwf" "$tmp/spec.json" <<'PY'
import resource, subprocess, sys
subprocess.run([sys.argv[1], "train", sys.argv[2], "--quiet"], check=True,
               stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)
echo "peak RSS ${peak_kb} kB"
sparse_json="null"
if [ -x "$B/bench/bench_sparse" ]; then
    echo "== sparse inference (LeNet-300-100, CSR vs dense cblas)"
    sparse_out=$("$B/bench/bench_sparse")
    echo "$sparse_out"
    sparse_json=$(printf '%s\n' "$sparse_out" | grep '^{' | tail -n 1)
fi
/usr/bin/python3 - "$dwf_json" "$torch_json" "$peak_kb" "$sparse_json" "$out" <<'PY'
import json, sys
dwf, torch, peak, sparse = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
d, t = dwf["depths"], torch["samples_per_sec"]
rows = []
for k in ("1", "2", "3", "4"):
    rows.append({"depth": int(k), "dwf_samples_per_sec": d[k]["samples_per_sec"],
                 "torch_samples_per_sec": round(t[k]), "ratio_vs_torch": d[k]["samples_per_sec"] / t[k],
                 "ratio_vs_d1": d[k]["samples_per_sec"] / d["1"]["samples_per_sec"],
                 "of_sgemm": d[k]["of_sgemm"]})
res = {"train": dwf, "torch": torch, "rows": rows, "peak_rss_mb": peak / 1024.0, "sparse": sparse}
json.dump(res, open(sys.argv[5], "w"), indent=1)
print("\n depth | dwf samples/s | torch samples/s | dwf/torch | D/1  | of sgemm")
for r in rows:
    print(" %5d | %13.0f | %15.0f | %9.2f | %.2f | %.2f" % (r["depth"], r["dwf_samples_per_sec"],
          r["torch_samples_per_sec"], r["ratio_vs_torch"], r["ratio_vs_d1"], r["of_sgemm"]))
print(" sgemm ceiling %.1f GFLOP/s on the training shapes; peak RSS %.1f MB" % (dwf["sgemm_gflops"], peak / 1024.0))
print(" targets: dwf/torch >= 1.5 at D=1 and >= 2 at D=3; D4/D1 >= 0.90; peak < 150 MB")
PY
# -- threshold curve cost (issue 6; bench/bench_thresh.c): curve seconds /
# training-epoch seconds for LeNet-300-100 D = 3 trained 3 and 20 epochs;
# adds "thresh" (one entry per run) to bench/results.json.
if [ -x "$B/bench/bench_thresh" ] && [ -z "${BENCH_NO_THRESH:-}" ]; then
    thresh_json="["
    for ep in ${BENCH_THRESH_EPOCHS:-3 20}; do
        echo "== threshold curve cost (LeNet-300-100 D=3, $ep epochs, 2 threads)"
        t_out=$("$B/bench/bench_thresh" "$ep" 2 3)
        echo "$t_out"
        [ "$thresh_json" = "[" ] || thresh_json="$thresh_json,"
        thresh_json="$thresh_json$(printf '%s\n' "$t_out" | grep '^{' | tail -n 1)"
    done
    # a conv net (LeNet-5: curves evaluate every distinct model from
    # scratch), as a job computes it: `dwf train` of one epoch, 2 threads
    echo "== threshold curve cost (LeNet-5 D=3, 1 epoch, 2 threads, dwf train)"
    l5_out=$("$B/dwf" train bench/lenet5_curve.json -o "$B/bench/lenet5_curve.dwfm" 2>&1 | grep -E '^epoch|^threshold curve')
    echo "$l5_out"
    # the issue's configuration as a job computes its curve once, at the
    # end (first use of its memory included): LeNet-300-100, D = 3,
    # lambda 3e-3, 20 epochs, 10% validation, 2 threads, `dwf train`
    echo "== threshold curve cost (LeNet-300-100 D=3, 20 epochs, validation, 2 threads, dwf train)"
    cj_out=$("$B/dwf" train bench/curve_job.json -o "$B/bench/curve_job.dwfm" 2>&1 | grep -E '^epoch +20/|^threshold curve')
    echo "$cj_out"
    # the main job (`make run`'s spec: no validation split, test set only)
    # as `dwf train` runs it on one thread, like dwfd's default on 2 cores
    echo "== threshold curve cost (the main job, examples/main.json, 20 epochs, 1 thread, dwf train)"
    mj_out=$("$B/dwf" train examples/main.json --threads 1 -o "$B/bench/main_curve.dwfm" 2>&1 | grep -E '^epoch +20/|^threshold curve')
    echo "$mj_out"
    /usr/bin/python3 - "$thresh_json]" "$out" "$l5_out" "$mj_out" "$cj_out" <<'PY'
import json, re, sys
res = json.load(open(sys.argv[2]))
res["thresh"] = json.loads(sys.argv[1])
def job_curve(text, train_samples, key, label):
    """The curve a `dwf train` job printed against its training epoch
    (train_samples / samples/s) and its whole last epoch."""
    ep = re.search(r"(\d+) samples/s\s+([\d.]+)s", text)
    cu = re.search(r"threshold curve \(([\d.]+)s, ([\d.]+)% of the last epoch", text)
    if not (ep and cu):
        return
    curve, train_s = float(cu.group(1)), train_samples / float(ep.group(1))
    res[key] = {"curve_seconds": curve, "train_epoch_seconds": train_s,
                "ratio": curve / train_s, "job_epoch_ratio": float(cu.group(2)) / 100.0}
    print(" %s curve %.3f s: %.3f of a training epoch (%.3f s), %.3f of the job's epoch"
          % (label, curve, curve / train_s, train_s, float(cu.group(2)) / 100.0))
    return ep
job_curve(sys.argv[5], 54000, "thresh_job", "LeNet-300-100 job")
job_curve(sys.argv[4], 60000, "thresh_main", "main job")
ep = job_curve(sys.argv[3], 54000, "thresh_lenet5", "LeNet-5")
if ep:  # a one-epoch run: its cumulative time is the job's epoch
    res["thresh_lenet5"]["job_epoch_seconds"] = float(ep.group(2))
json.dump(res, open(sys.argv[2], "w"), indent=1)
PY
fi
if [ -f bench/bench_http.sh ] && [ -z "${BENCH_NO_HTTP:-}" ]; then
    echo "== HTTP (wrk) while one job trains"
    DWF_BUILD=$B bash bench/bench_http.sh
fi
