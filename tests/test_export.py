#!/usr/bin/python3
"""test_export.py - the model exports checked by independent readers.

Drives the real `dwf` binary ($DWF_BUILD/dwf): trains two tiny models (an
MLP and a small CNN, a few seconds each) with a penalty and threshold that
zero some weights, exports every format, and reads each one back with
numpy / scipy only: safetensors parsed by hand (struct + json +
np.frombuffer), npz with np.load, json with json.load, and .dwfm with a
reader written from the byte layout documented in core/dwf_sparse.c (CRC
included). Every layer is rebuilt as a scipy.sparse.csr_matrix, all formats
must agree array for array, the non-zero counts must equal the model's
metrics, and a forward pass in numpy on the first 1000 Fashion-MNIST test
images (normalized as the exported architecture says) must give exactly
the classes `dwf predict` prints (and its probabilities to 1e-4).
"""
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import scipy.sparse as sp

BUILD = os.environ.get("DWF_BUILD", "build")
DWF = os.path.join(BUILD, "dwf")
FMNIST = "/usr/share/datasets/fashion-mnist"
N_TEST = 1000
FORMATS = ["dwfm", "safetensors", "safetensors-dense", "npz", "json"]

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def run(*args):
    r = subprocess.run([DWF] + list(args), capture_output=True, text=True,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    if r.returncode != 0:
        raise RuntimeError("dwf %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                       r.stderr.strip()))
    return r.stdout


def read_idx_images(path, n):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 0x803, "bad IDX magic"
    n = min(n, count)
    return np.frombuffer(data, np.uint8, n * rows * cols, 16).reshape(n, 1, rows, cols)


# ---- readers ------------------------------------------------------------

def read_dwfm(path):
    """The .dwfm layout of core/dwf_sparse.c, read independently."""
    with open(path, "rb") as f:
        b = f.read()
    assert b[:4] == b"DWFM", "dwfm: magic"
    (crc,) = struct.unpack_from("<I", b, len(b) - 4)
    assert crc == zlib.crc32(b[:-4]) & 0xffffffff, "dwfm: CRC"
    pos = [4]

    def take(fmt):
        v = struct.unpack_from("<" + fmt, b, pos[0])
        pos[0] += struct.calcsize("<" + fmt)
        return v

    def arr(dtype, n):
        a = np.frombuffer(b, dtype, n, pos[0])
        pos[0] += a.nbytes
        return a

    def string():
        (n,) = take("I")
        if n == 0xffffffff:
            return None
        s = b[pos[0]:pos[0] + n].decode()
        pos[0] += n
        return s

    (version,) = take("I")
    assert version == 1
    in_c, in_h, in_w, n_classes, depth, fbias, n_layers = take("7i")
    layers = [take("13i") for _ in range(n_layers)]
    norm_kind, mean, std = take("Iff")
    (eps,) = take("f")
    spec = string()
    (n_kv,) = take("I")
    kv = {}
    for _ in range(n_kv):
        k = string()
        (kv[k],) = take("d")
    (n_weight,) = take("I")
    out = {}
    for _ in range(n_weight):
        idx, rows, cols, nnz = take("IIIQ")
        indptr = arr("<i8", rows + 1)
        indices = arr("<i4", nnz)
        values = arr("<f4", nnz)
        (nb,) = take("I")
        bias = arr("<f4", nb) if nb else None
        out[idx] = (rows, cols, values, indices, indptr, bias)
    assert pos[0] == len(b) - 4, "dwfm: bytes left before the CRC"
    return {"layers": layers, "norm": (mean, std), "kv": kv, "spec": spec,
            "weights": out, "shape": (in_c, in_h, in_w), "n_classes": n_classes}


def read_safetensors(path):
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack_from("<Q", b, 0)
    check((8 + n) % 8 == 0, "safetensors: header not padded to 8 bytes")
    hdr = json.loads(b[8:8 + n].decode("utf-8"))
    meta = hdr.pop("__metadata__")
    check(all(isinstance(v, str) for v in meta.values()),
          "safetensors: metadata values must be strings")
    data = b[8 + n:]
    dt = {"F32": "<f4", "I32": "<i4", "I64": "<i8"}
    tensors, spans = {}, []
    for name, t in hdr.items():
        s, e = t["data_offsets"]
        spans.append((s, e))
        a = np.frombuffer(data[s:e], dt[t["dtype"]])
        check((8 + n + s) % np.dtype(dt[t["dtype"]]).itemsize == 0,
              "safetensors: %s misaligned" % name)
        tensors[name] = a.reshape(t["shape"])
    spans.sort()
    pos = 0
    for s, e in spans:
        check(s == pos, "safetensors: hole or overlap at %d" % s)
        pos = e
    check(pos == len(data), "safetensors: data block not fully indexed")
    return tensors, meta


def same(a, b):
    """Deep equality with floats equal to 9 significant digits."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and abs(a - b) <= 1e-8 * max(abs(a), abs(b)))
    return a == b


def csr(values, indices, indptr, shape):
    m = sp.csr_matrix((values, indices, indptr), shape=tuple(int(v) for v in shape))
    check(m.has_sorted_indices, "CSR column indices not sorted")
    check(m.nnz == len(values), "CSR nnz")
    return m


def layers_from(fmt, path):
    """-> (arch dict, metrics dict, {name: (csr, bias, kernel_shape)})."""
    out = {}
    if fmt == "safetensors":
        t, meta = read_safetensors(path)
        check(meta["format"] == "dwf-sparse-csr", "safetensors: format")
        arch, metrics = json.loads(meta["architecture"]), json.loads(meta["metrics"])
        json.loads(meta["spec"])
        for l in arch["layers"]:
            if "name" not in l:
                continue
            n = l["name"]
            if l["type"] == "conv2d":
                check(json.loads(meta[n + ".weight.kernel_shape"]) == l["weight_shape"],
                      "safetensors: kernel shape metadata")
            out[n] = (csr(t[n + ".weight.values"], t[n + ".weight.indices"],
                          t[n + ".weight.indptr"], t[n + ".weight.shape"]),
                      t.get(n + ".bias"))
    elif fmt == "safetensors-dense":
        t, meta = read_safetensors(path)
        arch, metrics = json.loads(meta["architecture"]), json.loads(meta["metrics"])
        for l in arch["layers"]:
            if "name" not in l:
                continue
            w = t[l["name"] + ".weight"]
            check(list(w.shape) == l["weight_shape"], "dense: weight shape")
            out[l["name"]] = (sp.csr_matrix(w.reshape(w.shape[0], -1)),
                              t.get(l["name"] + ".bias"))
    elif fmt == "npz":
        z = np.load(path, allow_pickle=False)
        arch = json.loads(z["__architecture__"].tobytes().decode())
        metrics = json.loads(z["__metrics__"].tobytes().decode())
        json.loads(z["__spec__"].tobytes().decode())
        for l in arch["layers"]:
            if "name" not in l:
                continue
            n = l["name"]
            out[n] = (csr(z[n + ".weight.data"], z[n + ".weight.indices"],
                          z[n + ".weight.indptr"], z[n + ".weight.shape"]),
                      z[n + ".bias"] if n + ".bias" in z.files else None)
    elif fmt == "json":
        with open(path) as f:
            j = json.load(f)
        check(j["format"] == "dwf-sparse-csr", "json: format")
        arch, metrics = j["architecture"], j["metrics"]
        for l in j["layers"]:
            out[l["name"]] = (csr(np.array(l["values"], np.float32),
                                  np.array(l["indices"], np.int32),
                                  np.array(l["indptr"], np.int64), l["shape"]),
                              None if l["bias"] is None else np.array(l["bias"], np.float32))
    elif fmt == "dwfm":
        d = read_dwfm(path)
        arch, metrics = None, d["kv"]
        names = []
        counts = {0: 0, 1: 0}
        for i, l in enumerate(d["layers"]):
            if l[0] in (0, 1):
                names.append((i, ("dense", "conv")[l[0]] + str(counts[l[0]])))
                counts[l[0]] += 1
        for i, n in names:
            rows, cols, values, indices, indptr, bias = d["weights"][i]
            out[n] = (csr(values, indices, indptr, (rows, cols)), bias)
    return arch, metrics, out


# ---- numpy inference ------------------------------------------------------

def forward(arch, layers, raw):
    norm = arch["normalization"]
    x = ((raw.astype(np.float64) - norm["mean"]) / norm["std"]).astype(np.float32)
    x = x.astype(np.float64)
    b = x.shape[0]
    for l in arch["layers"]:
        t = l["type"]
        if t == "dense":
            w, bias = layers[l["name"]]
            x = x.reshape(b, -1)
            x = np.asarray((w.astype(np.float64) @ x.T).T)
            if bias is not None:
                x = x + bias.astype(np.float64)
        elif t == "conv2d":
            w, bias = layers[l["name"]]
            k, s, p = l["kernel"], l["stride"], l["padding"]
            xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
            win = win[:, :, ::s, ::s]                      # b c H W k k
            _, c, H, W = win.shape[:4]
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(b * H * W, c * k * k)
            y = np.asarray((w.astype(np.float64) @ cols.T).T)  # (b H W) x out
            x = y.reshape(b, H, W, -1).transpose(0, 3, 1, 2)
            if bias is not None:
                x = x + bias.astype(np.float64)[None, :, None, None]
        elif t == "maxpool2d":
            k, s = l["kernel"], l["stride"]
            win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
            x = win[:, :, ::s, ::s].max(axis=(4, 5))
        elif t == "relu":
            x = np.maximum(x, 0.0)
        elif t == "flatten":
            x = x.reshape(b, -1)
        else:
            raise ValueError("unknown layer " + t)
    return x.reshape(b, -1)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---- the test -------------------------------------------------------------

def check_model(tmp, name, spec):
    spec_path = os.path.join(tmp, name + ".json")
    model = os.path.join(tmp, name + ".dwfm")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    run("train", spec_path, "-o", model, "--quiet")
    pred_out = run("predict", model, "--test-subset", str(N_TEST), "--probs").split("\n")
    rows = [r.split() for r in pred_out if r.strip()]
    check(len(rows) == N_TEST, "%s: dwf predict printed %d lines" % (name, len(rows)))
    classes = np.array([int(r[0]) for r in rows])
    probs = np.array([[float(v) for v in r[1:]] for r in rows])
    plain = [int(v) for v in run("predict", model, "--test-subset", str(N_TEST)).split()]
    check(plain == classes.tolist(), "%s: predict with and without --probs" % name)

    raw = read_idx_images(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"), N_TEST)
    results = {}
    for fmt in FORMATS:
        out = os.path.join(tmp, "%s.%s" % (name, fmt))
        run("export", model, "--format", fmt, "-o", out)
        results[fmt] = layers_from(fmt, out)
    arch = results["json"][0]
    metrics = results["json"][1]
    # the json export writes reals with 9 significant digits (exact for
    # float32 values); the metadata of the other formats has all 17
    for fmt in ("safetensors", "safetensors-dense", "npz"):
        check(same(results[fmt][0], arch), "%s: %s architecture differs from json" % (name, fmt))
        check(same(results[fmt][1], metrics), "%s: %s metrics differ from json" % (name, fmt))
        check(results[fmt][1] == results["safetensors"][1], "%s: %s metrics" % (name, fmt))
    kv = results["dwfm"][1]
    check(sorted(kv) == sorted(metrics), "%s: metric names" % name)
    for k, v in results["safetensors"][1].items():
        check((v is None and np.isnan(kv[k])) or v == kv[k],
              "%s: metric %s: safetensors %r dwfm %r" % (name, k, v, kv.get(k)))

    ref = results["safetensors"][2]
    nnz = sum(m.nnz for m, _ in ref.values())
    total = sum(m.shape[0] * m.shape[1] for m, _ in ref.values())
    bias_nz = sum(int(np.count_nonzero(b)) for _, b in ref.values() if b is not None)
    bias_n = sum(len(b) for _, b in ref.values() if b is not None)
    check(0 < nnz < total, "%s: want some but not all weights zero (nnz %d of %d)"
          % (name, nnz, total))
    check(nnz == metrics["nonzero"], "%s: nnz %d, metrics say %r" % (name, nnz, metrics["nonzero"]))
    check(total == metrics["weights"], "%s: weights %d vs %r" % (name, total, metrics["weights"]))
    check(nnz + bias_nz == metrics["params_nonzero"], "%s: params_nonzero" % name)
    check(total + bias_n == metrics["params"], "%s: params" % name)
    for l in arch["layers"]:
        if "name" in l:
            check(ref[l["name"]][0].nnz == l["nnz"], "%s: %s nnz in architecture" % (name, l["name"]))

    for fmt, (_, _, layers) in results.items():
        check(sorted(layers) == sorted(ref), "%s/%s: layer names %s" % (name, fmt, sorted(layers)))
        for n, (m, b) in layers.items():
            r, rb = ref[n]
            check(m.shape == r.shape, "%s/%s/%s: shape" % (name, fmt, n))
            if fmt == "safetensors-dense":
                check((m != r).nnz == 0, "%s/%s/%s: dense values differ" % (name, fmt, n))
            else:
                check(np.array_equal(m.indptr, r.indptr) and np.array_equal(m.indices, r.indices)
                      and np.array_equal(m.data, r.data), "%s/%s/%s: CSR differs" % (name, fmt, n))
            check((b is None) == (rb is None) and (b is None or np.array_equal(b, rb)),
                  "%s/%s/%s: bias differs" % (name, fmt, n))
        logits = forward(arch, layers, raw)
        pred = logits.argmax(axis=1)
        p = softmax(logits)
        diff = np.nonzero(pred != classes)[0]
        # float32 (dwf) and float64 (numpy) may only disagree on exact near-ties
        for i in diff:
            top = np.sort(p[i])[-2:]
            check(top[1] - top[0] < 1e-5, "%s/%s: sample %d: numpy says %d, dwf %d (p %s)"
                  % (name, fmt, i, pred[i], classes[i], p[i]))
        check(len(diff) <= 2, "%s/%s: %d predictions differ" % (name, fmt, len(diff)))
        check(np.abs(p - probs).max() < 1e-4, "%s/%s: probabilities differ by %g"
              % (name, fmt, np.abs(p - probs).max()))
    print("%s: %d of %d weights non-zero, %d predictions checked in %d formats"
          % (name, nnz, total, len(classes), len(results)))


def main():
    if not os.path.exists(DWF):
        print("no %s: build first" % DWF)
        return 1
    common = {"seed": 3, "checkpoint_every": 0,
              "data": {"train_subset": 2000, "test_subset": N_TEST},
              "prune": {"eps": 0.005}}
    mlp = dict(common, name="tiny-mlp",
               model={"arch": "mlp", "hidden": [64], "depth": 2},
               train={"epochs": 10, "lambda": 0.05, "lr": 0.2})
    cnn = dict(common, name="tiny-cnn",
               model={"arch": "custom", "depth": 1, "layers": [
                   {"type": "conv2d", "filters": 4, "kernel": 5, "stride": 2, "padding": 1},
                   {"type": "relu"},
                   {"type": "maxpool2d", "kernel": 2},
                   {"type": "conv2d", "filters": 6, "kernel": 3},
                   {"type": "relu"},
                   {"type": "flatten"},
                   {"type": "dense", "units": 16},
                   {"type": "relu"},
                   {"type": "dense"}]},
               # DWF needs long runs to zero conv weights: prune by magnitude
               method="magnitude", prune={"target_cr": 4, "finetune_epochs": 1},
               train={"epochs": 2, "lambda": 0.0, "lr": 0.1})
    with tempfile.TemporaryDirectory(prefix="dwf-export-") as tmp:
        check_model(tmp, "mlp", mlp)
        check_model(tmp, "cnn", cnn)
        # an unknown format is refused
        r = subprocess.run([DWF, "export", os.path.join(tmp, "mlp.dwfm"), "--format", "xls",
                            "-o", os.path.join(tmp, "x")], capture_output=True)
        check(r.returncode != 0, "unknown export format accepted")
        # a corrupted model file is refused with a message naming it
        bad = os.path.join(tmp, "bad.dwfm")
        with open(os.path.join(tmp, "mlp.dwfm"), "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 1
        with open(bad, "wb") as f:
            f.write(data)
        r = subprocess.run([DWF, "info", bad], capture_output=True, text=True)
        check(r.returncode != 0 and "bad.dwfm" in r.stderr and "CRC" in r.stderr,
              "corrupted model: %r" % r.stderr)
    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("test_export: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
