/*
 * dwf_export.h - a sparse model (dwf_smodel) written in the formats other
 * tools read: .dwfm (our own), safetensors (CSR parts per layer, or dense
 * tensors with PyTorch shapes), npz (a zip of .npy arrays) and JSON.
 *
 * Every writer fills *buf with a new malloc'd byte buffer of *len bytes,
 * which the caller frees with free(); on failure *buf is NULL and nothing
 * needs freeing. The model is only read. Layer names are "dense0",
 * "conv1", ... (dwf_arch_layer_name).
 *
 * Array names:
 *   safetensors:   <layer>.weight.values F32 [nnz], .indices I32 [nnz],
 *                  .indptr I64 [rows+1], .shape I64 [2] = (rows, cols);
 *                  <layer>.bias F32 [rows]; __metadata__ = {"format":
 *                  "dwf-sparse-csr", "architecture", "metrics", "spec",
 *                  "<conv layer>.weight.kernel_shape"} (all JSON text)
 *   safetensors-dense: <layer>.weight F32 (out, in) or (out, in, k, k),
 *                  <layer>.bias; __metadata__ "format": "pt" and the rest
 *   npz:           <layer>.weight.data.npy <f4, .indices.npy <i4,
 *                  .indptr.npy <i8, .shape.npy <i8 (2,), <layer>.bias.npy
 *                  <f4, __architecture__.npy and __metrics__.npy (|u1
 *                  arrays holding UTF-8 JSON text), __spec__.npy (if any)
 *   json:          {"format", "version", "architecture", "metrics", "spec",
 *                  "layers": [{"name", "type", "shape", "kernel_shape",
 *                  "nnz", "indptr", "indices", "values", "bias"}]}
 * The architecture JSON lists the layers in order with their shapes and
 * the input normalization (input = (raw - mean) / std); a dense layer after
 * a spatial input flattens it in (c, h, w) order.
 */
#ifndef DWF_EXPORT_H
#define DWF_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "dwf_err.h"
#include "dwf_sparse.h"

typedef enum dwf_export_format {
    DWF_EXPORT_DWFM = 0,
    DWF_EXPORT_SAFETENSORS,
    DWF_EXPORT_SAFETENSORS_DENSE,
    DWF_EXPORT_NPZ,
    DWF_EXPORT_JSON,
    DWF_EXPORT_COUNT
} dwf_export_format;

/* "dwfm", "safetensors", "safetensors-dense", "npz", "json" -> format;
 * -1 when unknown (or NULL). */
int dwf_export_format_parse(const char *name);
/* Name, file extension (without dot) and MIME type of a format ("" / NULL
 * for values out of range). */
const char *dwf_export_format_name(dwf_export_format f);
const char *dwf_export_extension(dwf_export_format f);
const char *dwf_export_content_type(dwf_export_format f);

/* The one entry point: model -> bytes of format f. */
int dwf_export(const dwf_smodel *s, dwf_export_format f, uint8_t **buf,
               size_t *len, dwf_err *err);
/* The same with the format given by name (DWF_EINVAL when unknown). */
int dwf_export_buffer(const dwf_smodel *s, const char *format, uint8_t **buf,
                      size_t *len, dwf_err *err);

/* The individual writers. */
int dwf_export_safetensors(const dwf_smodel *s, int dense, uint8_t **buf,
                           size_t *len, dwf_err *err);
int dwf_export_npz(const dwf_smodel *s, uint8_t **buf, size_t *len,
                   dwf_err *err);
int dwf_export_json(const dwf_smodel *s, uint8_t **buf, size_t *len,
                    dwf_err *err);

/* The architecture (with normalization and threshold) and the metrics as
 * new malloc'd JSON strings (NULL when out of memory). */
char *dwf_export_architecture_json(const dwf_smodel *s);
char *dwf_export_metrics_json(const dwf_smodel *s);

#endif
