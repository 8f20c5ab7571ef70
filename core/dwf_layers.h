/*
 * dwf_layers.h - the layer kernels: dense, conv2d (im2col + sgemm),
 * maxpool2d, relu. Forward and backward of each sit side by side in
 * dwf_layers.c. Pure functions on caller-owned buffers: nothing is
 * allocated or freed here. Layout is row-major, activations b x C x H x W,
 * weights as in PyTorch (dense out x in, conv out_c x in_c x k x k).
 */
#ifndef DWF_LAYERS_H
#define DWF_LAYERS_H

#include <stdint.h>

/* y (b x out) = x (b x in) W^T + bias. bias may be NULL. */
void dwf_dense_forward(const float *x, const float *w, const float *bias,
                       int b, int in, int out, float *y);
/* dW (out x in) = dy^T x; dbias = column sums of dy (may be NULL);
 * dx (b x in) = dy W (skipped when dx is NULL). dW and dbias are
 * overwritten. */
/* sums[j] = sum over the b rows of dy (b x out) of dy[i][j]: the bias
 * gradient of a dense layer, added in row order. */
void dwf_col_sums(const float *dy, int b, int out, float *sums);

void dwf_dense_backward(const float *x, const float *w, const float *dy,
                        int b, int in, int out, float *dw, float *dbias,
                        float *dx);

typedef struct dwf_conv_shape {
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int k, stride, pad;
} dwf_conv_shape;

/* col ((in_c k k) x (out_h out_w)) from one image (in_c x in_h x in_w). */
void dwf_im2col(const dwf_conv_shape *s, const float *img, float *col);
/* Accumulates col back into img (which the caller zeroes first). */
void dwf_col2im(const dwf_conv_shape *s, const float *col, float *img);

/* y (b x out_c x out_h x out_w) = conv(x, w) + bias; col is scratch of
 * in_c k k out_h out_w floats. */
void dwf_conv2d_forward(const dwf_conv_shape *s, const float *x,
                        const float *w, const float *bias, int b, float *col,
                        float *y);
/* dW, dbias overwritten; dx (may be NULL) overwritten. col and dcol are
 * scratch of the same size as in forward. */
void dwf_conv2d_backward(const dwf_conv_shape *s, const float *x,
                         const float *w, const float *dy, int b, float *col,
                         float *dcol, float *dw, float *dbias, float *dx);

/* Max pooling with square window k and stride; argmax records the input
 * offset of each output's maximum for the backward pass. */
void dwf_maxpool_forward(int c, int h, int w, int k, int stride, int out_h,
                         int out_w, const float *x, int b, float *y,
                         int32_t *argmax);
/* dx (b x c x h x w) overwritten with dy routed to the argmax positions. */
void dwf_maxpool_backward(int c, int h, int w, int out_h, int out_w,
                          const float *dy, const int32_t *argmax, int b,
                          float *dx);

/* y = max(x, 0) (in place allowed). */
void dwf_relu_forward(const float *x, int64_t n, float *y);
/* dx = dy where y > 0, else 0 (in place on dy allowed). */
void dwf_relu_backward(const float *y, const float *dy, int64_t n, float *dx);

#endif
