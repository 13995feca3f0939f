/*
 * edgekd int8 runtime: the kernels.
 *
 * Every kernel reproduces the arithmetic of TensorFlow Lite's reference kernels
 * (tensorflow/lite/kernels/internal/reference/...) bit for bit: the same fixed-point
 * multiplier rounding (SaturatingRoundingDoublingHighMul + RoundingDivideByPOT, i.e. the
 * default build without TFLITE_SINGLE_ROUNDING), the same offsets, the same clamping.
 * Built with -DEKD_SINGLE_ROUNDING=1 the multiplier rounds once instead (TFLITE_SINGLE_ROUNDING),
 * as TFLite's default CPU kernels (XNNPACK) do: the "tflite-cpu" flavour of the generated model.
 * All parameters that TFLite computes in Prepare() (multipliers, shifts, paddings,
 * activation ranges, broadcast strides) are computed by the code generator
 * (edgekd/convert/tflite2c.py) and arrive here as constants.
 *
 * C99, no allocation, no libc beyond <stdint.h>/<string.h>.
 */
#ifndef EKD_KERNELS_H
#define EKD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EKD_MAX_DIMS 6

/* ------------------------------------------------------------------ fixed point */

static inline int32_t ekd_srdhm(int32_t a, int32_t b) {
  /* gemmlowp SaturatingRoundingDoublingHighMul */
  const int overflow = (a == b) && (a == INT32_MIN);
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  const int32_t high = (int32_t)((ab + nudge) / ((int64_t)1 << 31));
  return overflow ? INT32_MAX : high;
}

static inline int32_t ekd_rdbpot(int32_t x, int exponent) {
  /* gemmlowp RoundingDivideByPOT (round half away from zero) */
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

#ifndef EKD_SINGLE_ROUNDING
#define EKD_SINGLE_ROUNDING 0
#endif

static inline int32_t ekd_mbqm(int32_t x, int32_t multiplier, int shift) {
#if EKD_SINGLE_ROUNDING
  /* tflite::MultiplyByQuantizedMultiplier as built with TFLITE_SINGLE_ROUNDING: the 64-bit
   * product rounded once (half up). Models generated with reference "tflite-cpu"
   * need this build (-DEKD_SINGLE_ROUNDING=1). */
  const int total = 31 - shift;
  const int64_t round = (int64_t)1 << (total - 1);
  return (int32_t)(((int64_t)x * (int64_t)multiplier + round) >> total);
#else
  /* tflite::MultiplyByQuantizedMultiplier, default build (double rounding): the reference kernels */
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const int32_t shifted = (int32_t)((uint32_t)x << left); /* wraps like the reference on overflow */
  return ekd_rdbpot(ekd_srdhm(shifted, multiplier), right);
#endif
}

static inline int32_t ekd_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

static inline int32_t ekd_requant_f32(int32_t acc, float scale, int32_t zero_point, int32_t lo, int32_t hi) {
  /* XNNPACK's fp32 requantization (TFLite's default CPU kernels for convolutions and fully
   * connected layers): float(acc) * scale in float32, clamped to the output range, rounded half
   * to even; 1.5 * 2^23 added and taken away rounds so for |v| < 2^22, without libm. Needs
   * float32 arithmetic without excess precision or contraction (-ffp-contract=off). */
  float v = (float)acc * scale;
  const float vlo = (float)(lo - zero_point), vhi = (float)(hi - zero_point);
  v = v < vlo ? vlo : (v > vhi ? vhi : v);
  v = (v + 12582912.0f) - 12582912.0f;
  return (int32_t)v + zero_point;
}

/* ------------------------------------------------------------------ broadcasting walk */

/* An elementwise op over up to EKD_MAX_DIMS dimensions; a stride of 0 broadcasts. */
typedef struct {
  int32_t rank;
  int32_t dims[EKD_MAX_DIMS];
  int32_t stride1[EKD_MAX_DIMS];
  int32_t stride2[EKD_MAX_DIMS];
} ekd_bcast_t;

/* ------------------------------------------------------------------ convolution */

typedef struct {
  int32_t batches;
  int32_t in_h, in_w, in_c;
  int32_t out_h, out_w, out_c;
  int32_t k_h, k_w, filter_in_c; /* filter_in_c < in_c means grouped convolution */
  int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
  int32_t input_offset, output_offset;
  int32_t act_min, act_max;
  const int8_t *filter;   /* [out_c][k_h][k_w][filter_in_c] */
  const int32_t *bias;    /* [out_c] or NULL */
  const int32_t *mult;    /* [out_c] */
  const int8_t *shift;    /* [out_c] */
  const float *fscale;    /* [out_c]: when set, rescale with ekd_requant_f32 instead of mult/shift */
} ekd_conv_params_t;

void ekd_conv2d_s8(const ekd_conv_params_t *p, const int8_t *in, int8_t *out);

typedef struct {
  int32_t batches;
  int32_t in_h, in_w, in_c;
  int32_t out_h, out_w, out_c;
  int32_t k_h, k_w, depth_multiplier;
  int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
  int32_t input_offset, output_offset;
  int32_t act_min, act_max;
  const int8_t *filter;   /* [1][k_h][k_w][out_c] */
  const int32_t *bias;
  const int32_t *mult;
  const int8_t *shift;
  const float *fscale;    /* [out_c]: when set, rescale with ekd_requant_f32 instead of mult/shift */
} ekd_dwconv_params_t;

void ekd_depthwise_conv2d_s8(const ekd_dwconv_params_t *p, const int8_t *in, int8_t *out);

typedef struct {
  int32_t batches, accum_depth, out_depth;
  int32_t input_offset, filter_offset, output_offset;
  int32_t act_min, act_max;
  int32_t per_channel; /* mult/shift (or scale) hold out_depth entries, else one */
  const int8_t *filter; /* [out_depth][accum_depth] */
  const int32_t *bias;
  const int32_t *mult;
  const int8_t *shift;
  /* When set, rescale as TFLite's reference FULLY_CONNECTED does: round(double(acc) * scale)
   * (TFLite's optimized kernels and TFLite Micro use mult/shift instead). */
  const double *scale;
  const float *fscale;  /* when set, rescale with ekd_requant_f32 (XNNPACK) */
} ekd_fc_params_t;

void ekd_fully_connected_s8(const ekd_fc_params_t *p, const int8_t *in, int8_t *out);

/* out[b][i][j] = sum_k (L[b][i][k] + lhs_offset) * (R[b][k][j] + rhs_offset), rescaled; the batch
 * walk broadcasts (stride 0) and the row/col/depth strides express adj_x/adj_y. */
typedef struct {
  ekd_bcast_t batch; /* dims: output batch dims; stride1: lhs batch strides; stride2: rhs */
  int32_t rows, cols, depth;
  int32_t l_row_stride, l_depth_stride, r_depth_stride, r_col_stride;
  int32_t lhs_offset, rhs_offset, out_offset, mult, shift, act_min, act_max;
} ekd_bmm_params_t;

void ekd_batch_matmul_s8(const ekd_bmm_params_t *p, const int8_t *lhs, const int8_t *rhs, int8_t *out);

/* Any int8 -> int8 elementwise function as a 256-entry table, indexed by (uint8_t)x. */
void ekd_lut_s8(int32_t n, const int8_t *table, const int8_t *in, int8_t *out);

/* ------------------------------------------------------------------ pooling */

typedef struct {
  int32_t batches, in_h, in_w, channels, out_h, out_w;
  int32_t k_h, k_w, stride_h, stride_w, pad_h, pad_w;
  int32_t act_min, act_max;
} ekd_pool_params_t;

void ekd_avg_pool_s8(const ekd_pool_params_t *p, const int8_t *in, int8_t *out);
void ekd_max_pool_s8(const ekd_pool_params_t *p, const int8_t *in, int8_t *out);

/* ------------------------------------------------------------------ broadcasting */

typedef enum { EKD_ADD = 0, EKD_SUB = 1, EKD_MUL = 2, EKD_MIN = 3, EKD_MAX = 4 } ekd_arith_t;
typedef enum { EKD_GE = 0, EKD_GT = 1, EKD_LE = 2, EKD_LT = 3, EKD_EQ = 4, EKD_NE = 5 } ekd_cmp_t;

typedef struct {
  ekd_bcast_t b;
  int32_t left_shift;
  int32_t in1_offset, in1_mult, in1_shift;
  int32_t in2_offset, in2_mult, in2_shift;
  int32_t out_offset, out_mult, out_shift;
  int32_t act_min, act_max;
  /* XNNPACK's add (TFLite's default CPU kernels): when xnn_shift is set, out = (xnn_bias +
   * a * xnn_a_mult + b * xnn_b_mult) >> xnn_shift + out_offset, a subtraction's b multiplier
   * negative; the other multipliers are unused */
  int32_t xnn_shift, xnn_a_mult, xnn_b_mult, xnn_bias;
} ekd_addsub_params_t;

void ekd_add_s8(const ekd_addsub_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void ekd_sub_s8(const ekd_addsub_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);

typedef struct {
  ekd_bcast_t b;
  int32_t in1_offset, in2_offset, out_offset, out_mult, out_shift;
  int32_t act_min, act_max;
  float fscale; /* when non-zero, rescale with ekd_requant_f32 (XNNPACK) instead of out_mult/out_shift */
} ekd_mul_params_t;

void ekd_mul_s8(const ekd_mul_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);

/* min/max on raw int8 values (TFLite requires equal quantization for them) */
void ekd_minmax_s8(const ekd_bcast_t *b, int is_max, const int8_t *a, const int8_t *x, int8_t *out);

typedef struct {
  ekd_bcast_t b;
  int32_t op; /* ekd_arith_t: ADD, SUB, MUL, MIN, MAX */
  float act_min, act_max;
} ekd_arith_f32_params_t;

void ekd_arith_f32(const ekd_arith_f32_params_t *p, const float *a, const float *b, float *out);

typedef struct {
  ekd_bcast_t b;
  int32_t op; /* ekd_cmp_t */
  int32_t left_shift;
  int32_t in1_offset, in1_mult, in1_shift;
  int32_t in2_offset, in2_mult, in2_shift;
} ekd_cmp_params_t;

void ekd_compare_s8(const ekd_cmp_params_t *p, const int8_t *a, const int8_t *b, uint8_t *out);
void ekd_compare_f32(const ekd_cmp_params_t *p, const float *a, const float *b, uint8_t *out);
void ekd_compare_i32(const ekd_cmp_params_t *p, const int32_t *a, const int32_t *b, uint8_t *out);

/* ------------------------------------------------------------------ quantization and casts */

typedef enum { EKD_F32 = 0, EKD_I8 = 1, EKD_BOOL = 2, EKD_I32 = 3, EKD_U8 = 4, EKD_I16 = 5 } ekd_dtype_t;

void ekd_quantize_f32_s8(int32_t n, float scale, int32_t zero_point, const float *in, int8_t *out);
void ekd_requantize_s8(int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t out_zp,
                       int32_t act_min, int32_t act_max, const int8_t *in, int8_t *out);
void ekd_dequantize_s8_f32(int32_t n, float scale, int32_t zero_point, const int8_t *in, float *out);
void ekd_cast(int32_t n, int32_t from, int32_t to, const void *in, void *out);

/* ------------------------------------------------------------------ data movement */

/* out[sum(i_d * out_stride_d) + out_base] = in[sum(i_d * in_stride_d) + in_base] for every index i
 * of dims: transpose, (strided) slice, split, unpack, concatenation, pack. Strides in elements. */
typedef struct {
  int32_t rank, elem_size;
  int32_t dims[EKD_MAX_DIMS];
  int32_t in_strides[EKD_MAX_DIMS];
  int32_t out_strides[EKD_MAX_DIMS];
  int32_t in_base, out_base;
} ekd_copy_params_t;

void ekd_copy_nd(const ekd_copy_params_t *p, const void *in, void *out);

/* Constant padding: the output is filled with `value` (elem_size bytes), then the input is
 * copied into it through `copy`. */
void ekd_pad(int32_t out_count, int32_t elem_size, const void *value, const ekd_copy_params_t *copy,
             const void *in, void *out);

/* Gather with arbitrary constant positions: out[i] = in[index[i]]. */
void ekd_gather_table(int32_t n, int32_t elem_size, const int32_t *index, const void *in, void *out);

/* ------------------------------------------------------------------ reductions */

typedef struct {
  int32_t kept_rank, red_rank;
  int32_t kept_dims[EKD_MAX_DIMS], kept_strides[EKD_MAX_DIMS];
  int32_t red_dims[EKD_MAX_DIMS], red_strides[EKD_MAX_DIMS];
  int32_t num_reduced; /* elements summed per output */
  int32_t in_zp, out_zp, mult, shift;
} ekd_mean_params_t;

void ekd_mean_s8(const ekd_mean_params_t *p, const int8_t *in, int8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* EKD_KERNELS_H */
