/*
 * dwf_arch.h - network architectures as plain data.
 *
 * A dwf_arch is a value (fixed-size arrays, nothing to free) describing the
 * input shape, the layer list and the factorization depth of every weight
 * tensor. Builders make the named networks (mlp, lenet5); a custom network
 * is a layer list filled in by the caller. dwf_arch_resolve() checks the
 * list and infers every layer's shapes, failing with a message that names
 * the offending layer ("layers[3]: kernel 5 larger than input 4x4").
 */
#ifndef DWF_ARCH_H
#define DWF_ARCH_H

#include <stdint.h>

#include "dwf_err.h"

#define DWF_MAX_LAYERS 64
#define DWF_MAX_DEPTH 8

typedef enum dwf_layer_kind {
    DWF_LAYER_DENSE = 0,
    DWF_LAYER_CONV2D,
    DWF_LAYER_MAXPOOL2D,
    DWF_LAYER_RELU,
    DWF_LAYER_FLATTEN,
} dwf_layer_kind;

typedef struct dwf_layer_spec {
    dwf_layer_kind kind;
    int units;          /* dense: output features */
    int filters;        /* conv2d: output channels */
    int kernel;         /* conv2d / maxpool2d: square kernel size */
    int stride;         /* conv2d / maxpool2d: stride (0 = 1 for conv, kernel for pool) */
    int padding;        /* conv2d: zero padding on each side */
    int depth;          /* dense / conv2d: factor count D, 0 = model default */
    /* filled by dwf_arch_resolve(): */
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
} dwf_layer_spec;

typedef struct dwf_arch {
    int in_c, in_h, in_w;     /* input shape (flat input: in_c = dim, 1, 1) */
    int n_classes;            /* width of the final logits */
    int depth;                /* default factor count D (1..8) */
    int factorize_bias;       /* biases factorized (and penalized) too */
    int n_layers;
    dwf_layer_spec layers[DWF_MAX_LAYERS];
} dwf_arch;

/* Layer names used in messages, metrics and exports: "dense", "conv2d"... */
const char *dwf_layer_kind_name(dwf_layer_kind k);
/* Parses a kind name; returns -1 when unknown. */
int dwf_layer_kind_parse(const char *name);

/* True for layers that own a weight tensor (dense, conv2d). */
int dwf_layer_has_weight(dwf_layer_kind k);

/* Multi-layer perceptron: flatten, then dense(h) + relu for each hidden
 * size, then dense(n_classes). LeNet-300-100 is hidden = {300, 100}. */
int dwf_arch_mlp(dwf_arch *a, int in_c, int in_h, int in_w, const int *hidden,
                 int n_hidden, int n_classes, int depth, dwf_err *err);

/* LeNet-5: conv6 5x5 pad 2, relu, pool 2, conv16 5x5, relu, pool 2,
 * flatten, fc120, relu, fc84, relu, fc n_classes. */
int dwf_arch_lenet5(dwf_arch *a, int in_c, int in_h, int in_w, int n_classes,
                    int depth, dwf_err *err);

/* Starts an empty custom architecture; append with dwf_arch_add(). */
void dwf_arch_init(dwf_arch *a, int in_c, int in_h, int in_w, int n_classes,
                   int depth);
int dwf_arch_add(dwf_arch *a, const dwf_layer_spec *l, dwf_err *err);

/* Validates the layer list and fills in shapes. The last weight layer must
 * output n_classes features; a dense layer after spatial input flattens
 * implicitly. Depths outside 1..8 are errors. */
int dwf_arch_resolve(dwf_arch *a, dwf_err *err);

/* Effective depth of layer i (its own, or the model default). */
int dwf_arch_layer_depth(const dwf_arch *a, int i);

/* Number of weight entries of layer i (0 for parameterless layers), of
 * its bias, and the fan-in used by Kaiming initialization. */
int64_t dwf_arch_weight_count(const dwf_arch *a, int i);
int64_t dwf_arch_bias_count(const dwf_arch *a, int i);
int dwf_arch_fan_in(const dwf_arch *a, int i);

/* Forward FLOPs (multiply-adds x 2) per sample. */
double dwf_arch_flops(const dwf_arch *a);

/* Name of weight layer i in metrics and exports: "dense0", "conv1", ...
 * (the kind and its index among the layers of that kind). */
void dwf_arch_layer_name(const dwf_arch *a, int i, char *buf, int len);

/* One-line description, e.g. "784-dense300-relu-dense100-relu-dense10". */
void dwf_arch_describe(const dwf_arch *a, char *buf, int len);

#endif
