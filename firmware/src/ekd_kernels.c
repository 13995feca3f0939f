/*
 * edgekd int8 runtime: kernel implementations. See ekd_kernels.h for the contract.
 * Loop orders follow TFLite's reference kernels; where the order cannot change a result
 * (integer sums, elementwise ops) the loops are written for the smallest code.
 */
#include "ekd_kernels.h"

#include <string.h>

/* ------------------------------------------------------------------ convolution */

void ekd_conv2d_s8(const ekd_conv_params_t *p, const int8_t *in, int8_t *out) {
  const int32_t groups = p->in_c / p->filter_in_c;
  const int32_t filters_per_group = p->out_c / groups;
  for (int32_t b = 0; b < p->batches; ++b) {
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
      const int32_t in_y0 = oy * p->stride_h - p->pad_h;
      for (int32_t ox = 0; ox < p->out_w; ++ox) {
        const int32_t in_x0 = ox * p->stride_w - p->pad_w;
        for (int32_t oc = 0; oc < p->out_c; ++oc) {
          const int32_t group = oc / filters_per_group;
          int32_t acc = 0;
          for (int32_t fy = 0; fy < p->k_h; ++fy) {
            const int32_t iy = in_y0 + p->dil_h * fy;
            if (iy < 0 || iy >= p->in_h) continue;
            for (int32_t fx = 0; fx < p->k_w; ++fx) {
              const int32_t ix = in_x0 + p->dil_w * fx;
              if (ix < 0 || ix >= p->in_w) continue;
              const int8_t *ip = in + (((b * p->in_h + iy) * p->in_w + ix) * p->in_c) + group * p->filter_in_c;
              const int8_t *fp = p->filter + ((oc * p->k_h + fy) * p->k_w + fx) * p->filter_in_c;
              for (int32_t ic = 0; ic < p->filter_in_c; ++ic) {
                acc += (int32_t)fp[ic] * ((int32_t)ip[ic] + p->input_offset);
              }
            }
          }
          if (p->bias) acc += p->bias[oc];
          acc = p->fscale ? ekd_requant_f32(acc, p->fscale[oc], p->output_offset, p->act_min, p->act_max)
                          : ekd_mbqm(acc, p->mult[oc], p->shift[oc]) + p->output_offset;
          out[((b * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] = (int8_t)ekd_clamp(acc, p->act_min, p->act_max);
        }
      }
    }
  }
}

void ekd_depthwise_conv2d_s8(const ekd_dwconv_params_t *p, const int8_t *in, int8_t *out) {
  for (int32_t b = 0; b < p->batches; ++b) {
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
      const int32_t in_y0 = oy * p->stride_h - p->pad_h;
      for (int32_t ox = 0; ox < p->out_w; ++ox) {
        const int32_t in_x0 = ox * p->stride_w - p->pad_w;
        for (int32_t ic = 0; ic < p->in_c; ++ic) {
          for (int32_t m = 0; m < p->depth_multiplier; ++m) {
            const int32_t oc = m + ic * p->depth_multiplier;
            int32_t acc = 0;
            for (int32_t fy = 0; fy < p->k_h; ++fy) {
              const int32_t iy = in_y0 + p->dil_h * fy;
              if (iy < 0 || iy >= p->in_h) continue;
              for (int32_t fx = 0; fx < p->k_w; ++fx) {
                const int32_t ix = in_x0 + p->dil_w * fx;
                if (ix < 0 || ix >= p->in_w) continue;
                const int32_t iv = in[((b * p->in_h + iy) * p->in_w + ix) * p->in_c + ic];
                const int32_t fv = p->filter[(fy * p->k_w + fx) * p->out_c + oc];
                acc += fv * (iv + p->input_offset);
              }
            }
            if (p->bias) acc += p->bias[oc];
            acc = p->fscale ? ekd_requant_f32(acc, p->fscale[oc], p->output_offset, p->act_min, p->act_max)
                            : ekd_mbqm(acc, p->mult[oc], p->shift[oc]) + p->output_offset;
            out[((b * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] = (int8_t)ekd_clamp(acc, p->act_min, p->act_max);
          }
        }
      }
    }
  }
}

static int32_t ekd_round_to_i32(double x) {
  /* static_cast<int32_t>(std::round(x)), without libm; saturates where C++ would be undefined */
  if (x >= 2147483647.0) return INT32_MAX;
  if (x <= -2147483648.0) return INT32_MIN;
  int64_t t = (int64_t)x;
  const double frac = x - (double)t; /* exact for |x| < 2^52 */
  if (frac >= 0.5) ++t;
  else if (frac <= -0.5) --t;
  return (int32_t)t;
}

void ekd_fully_connected_s8(const ekd_fc_params_t *p, const int8_t *in, int8_t *out) {
  for (int32_t b = 0; b < p->batches; ++b) {
    const int8_t *ip = in + b * p->accum_depth;
    for (int32_t oc = 0; oc < p->out_depth; ++oc) {
      const int8_t *fp = p->filter + oc * p->accum_depth;
      int32_t acc = 0;
      for (int32_t d = 0; d < p->accum_depth; ++d) {
        acc += ((int32_t)fp[d] + p->filter_offset) * ((int32_t)ip[d] + p->input_offset);
      }
      if (p->bias) acc += p->bias[oc];
      const int32_t ch = p->per_channel ? oc : 0;
      if (p->fscale) {
        acc = ekd_requant_f32(acc, p->fscale[ch], p->output_offset, p->act_min, p->act_max);
      } else if (p->scale) {
        acc = ekd_round_to_i32((double)acc * p->scale[ch]) + p->output_offset;
      } else {
        acc = ekd_mbqm(acc, p->mult[ch], p->shift[ch]) + p->output_offset;
      }
      out[b * p->out_depth + oc] = (int8_t)ekd_clamp(acc, p->act_min, p->act_max);
    }
  }
}

/* ------------------------------------------------------------------ pooling */

static void ekd_pool_s8(const ekd_pool_params_t *p, const int8_t *in, int8_t *out, int is_max) {
  for (int32_t b = 0; b < p->batches; ++b) {
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
      const int32_t in_y0 = oy * p->stride_h - p->pad_h;
      const int32_t fy0 = in_y0 < 0 ? -in_y0 : 0;
      const int32_t fy1 = (p->in_h - in_y0) < p->k_h ? (p->in_h - in_y0) : p->k_h;
      for (int32_t ox = 0; ox < p->out_w; ++ox) {
        const int32_t in_x0 = ox * p->stride_w - p->pad_w;
        const int32_t fx0 = in_x0 < 0 ? -in_x0 : 0;
        const int32_t fx1 = (p->in_w - in_x0) < p->k_w ? (p->in_w - in_x0) : p->k_w;
        for (int32_t c = 0; c < p->channels; ++c) {
          int32_t acc = is_max ? -128 : 0;
          int32_t count = 0;
          for (int32_t fy = fy0; fy < fy1; ++fy) {
            for (int32_t fx = fx0; fx < fx1; ++fx) {
              const int32_t v = in[((b * p->in_h + in_y0 + fy) * p->in_w + in_x0 + fx) * p->channels + c];
              if (is_max) {
                if (v > acc) acc = v;
              } else {
                acc += v;
              }
              ++count;
            }
          }
          if (!is_max) {
            if (count == 0) count = 1; /* the reference fails here; never reached with valid padding */
            acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
          }
          out[((b * p->out_h + oy) * p->out_w + ox) * p->channels + c] = (int8_t)ekd_clamp(acc, p->act_min, p->act_max);
        }
      }
    }
  }
}

void ekd_avg_pool_s8(const ekd_pool_params_t *p, const int8_t *in, int8_t *out) { ekd_pool_s8(p, in, out, 0); }
void ekd_max_pool_s8(const ekd_pool_params_t *p, const int8_t *in, int8_t *out) { ekd_pool_s8(p, in, out, 1); }

/* ------------------------------------------------------------------ broadcasting */

/* Walk every output element in row-major order; calls back with the two input offsets. */
#define EKD_BCAST_LOOP(bc, ...)                                                    \
  do {                                                                             \
    int32_t idx_[EKD_MAX_DIMS] = {0};                                              \
    int32_t o1_ = 0, o2_ = 0, n_ = 1;                                              \
    for (int32_t d_ = 0; d_ < (bc)->rank; ++d_) n_ *= (bc)->dims[d_];              \
    for (int32_t i_ = 0; i_ < n_; ++i_) {                                          \
      const int32_t off1 = o1_, off2 = o2_, oi = i_;                               \
      __VA_ARGS__;                                                                 \
      for (int32_t d_ = (bc)->rank - 1; d_ >= 0; --d_) {                           \
        o1_ += (bc)->stride1[d_];                                                  \
        o2_ += (bc)->stride2[d_];                                                  \
        if (++idx_[d_] < (bc)->dims[d_]) break;                                    \
        o1_ -= (bc)->stride1[d_] * (bc)->dims[d_];                                 \
        o2_ -= (bc)->stride2[d_] * (bc)->dims[d_];                                 \
        idx_[d_] = 0;                                                              \
      }                                                                            \
    }                                                                              \
  } while (0)

static void ekd_addsub_s8(const ekd_addsub_params_t *p, const int8_t *a, const int8_t *x, int8_t *out, int sub) {
  if (p->xnn_shift) {
    EKD_BCAST_LOOP(&p->b, {
      const int32_t acc = p->xnn_bias + (int32_t)a[off1] * p->xnn_a_mult + (int32_t)x[off2] * p->xnn_b_mult;
      out[oi] = (int8_t)ekd_clamp((acc >> p->xnn_shift) + p->out_offset, p->act_min, p->act_max);
    });
    return;
  }
  EKD_BCAST_LOOP(&p->b, {
    const int32_t v1 = (int32_t)((uint32_t)(p->in1_offset + a[off1]) << p->left_shift);
    const int32_t v2 = (int32_t)((uint32_t)(p->in2_offset + x[off2]) << p->left_shift);
    const int32_t s1 = ekd_mbqm(v1, p->in1_mult, p->in1_shift);
    const int32_t s2 = ekd_mbqm(v2, p->in2_mult, p->in2_shift);
    const int32_t raw = sub ? s1 - s2 : s1 + s2;
    const int32_t res = ekd_mbqm(raw, p->out_mult, p->out_shift) + p->out_offset;
    out[oi] = (int8_t)ekd_clamp(res, p->act_min, p->act_max);
  });
}

void ekd_add_s8(const ekd_addsub_params_t *p, const int8_t *a, const int8_t *b, int8_t *out) { ekd_addsub_s8(p, a, b, out, 0); }
void ekd_sub_s8(const ekd_addsub_params_t *p, const int8_t *a, const int8_t *b, int8_t *out) { ekd_addsub_s8(p, a, b, out, 1); }

void ekd_mul_s8(const ekd_mul_params_t *p, const int8_t *a, const int8_t *x, int8_t *out) {
  EKD_BCAST_LOOP(&p->b, {
    const int32_t v1 = p->in1_offset + a[off1];
    const int32_t v2 = p->in2_offset + x[off2];
    const int32_t res = p->fscale != 0.0f ? ekd_requant_f32(v1 * v2, p->fscale, p->out_offset, p->act_min, p->act_max)
                                          : p->out_offset + ekd_mbqm(v1 * v2, p->out_mult, p->out_shift);
    out[oi] = (int8_t)ekd_clamp(res, p->act_min, p->act_max);
  });
}

void ekd_batch_matmul_s8(const ekd_bmm_params_t *p, const int8_t *lhs, const int8_t *rhs, int8_t *out) {
  const int32_t per_batch = p->rows * p->cols;
  EKD_BCAST_LOOP(&p->batch, {
    const int8_t *l = lhs + off1;
    const int8_t *r = rhs + off2;
    int8_t *o = out + oi * per_batch;
    for (int32_t i = 0; i < p->rows; ++i) {
      for (int32_t j = 0; j < p->cols; ++j) {
        int32_t acc = 0;
        for (int32_t k = 0; k < p->depth; ++k) {
          acc += ((int32_t)l[i * p->l_row_stride + k * p->l_depth_stride] + p->lhs_offset) *
                 ((int32_t)r[k * p->r_depth_stride + j * p->r_col_stride] + p->rhs_offset);
        }
        acc = ekd_mbqm(acc, p->mult, p->shift) + p->out_offset;
        o[i * p->cols + j] = (int8_t)ekd_clamp(acc, p->act_min, p->act_max);
      }
    }
  });
}

void ekd_lut_s8(int32_t n, const int8_t *table, const int8_t *in, int8_t *out) {
  for (int32_t i = 0; i < n; ++i) out[i] = table[(uint8_t)in[i]];
}

void ekd_minmax_s8(const ekd_bcast_t *b, int is_max, const int8_t *a, const int8_t *x, int8_t *out) {
  EKD_BCAST_LOOP(b, {
    const int8_t v1 = a[off1], v2 = x[off2];
    out[oi] = is_max ? (v1 > v2 ? v1 : v2) : (v1 < v2 ? v1 : v2);
  });
}

void ekd_arith_f32(const ekd_arith_f32_params_t *p, const float *a, const float *x, float *out) {
  EKD_BCAST_LOOP(&p->b, {
    const float v1 = a[off1], v2 = x[off2];
    float r;
    switch (p->op) {
      case EKD_ADD: r = v1 + v2; break;
      case EKD_SUB: r = v1 - v2; break;
      case EKD_MUL: r = v1 * v2; break;
      case EKD_MIN: r = v1 < v2 ? v1 : v2; break;
      default: r = v1 > v2 ? v1 : v2; break;
    }
    r = r < p->act_min ? p->act_min : r;
    r = r > p->act_max ? p->act_max : r;
    out[oi] = r;
  });
}

static inline uint8_t ekd_cmp_i32(int32_t op, int32_t a, int32_t b) {
  switch (op) {
    case EKD_GE: return a >= b;
    case EKD_GT: return a > b;
    case EKD_LE: return a <= b;
    case EKD_LT: return a < b;
    case EKD_EQ: return a == b;
    default: return a != b;
  }
}

static inline uint8_t ekd_cmp_f32(int32_t op, float a, float b) {
  switch (op) {
    case EKD_GE: return a >= b;
    case EKD_GT: return a > b;
    case EKD_LE: return a <= b;
    case EKD_LT: return a < b;
    case EKD_EQ: return a == b;
    default: return a != b;
  }
}

void ekd_compare_s8(const ekd_cmp_params_t *p, const int8_t *a, const int8_t *x, uint8_t *out) {
  EKD_BCAST_LOOP(&p->b, {
    const int32_t v1 = (int32_t)((uint32_t)(p->in1_offset + a[off1]) << p->left_shift);
    const int32_t v2 = (int32_t)((uint32_t)(p->in2_offset + x[off2]) << p->left_shift);
    const int32_t s1 = ekd_mbqm(v1, p->in1_mult, p->in1_shift);
    const int32_t s2 = ekd_mbqm(v2, p->in2_mult, p->in2_shift);
    out[oi] = ekd_cmp_i32(p->op, s1, s2);
  });
}

void ekd_compare_f32(const ekd_cmp_params_t *p, const float *a, const float *x, uint8_t *out) {
  EKD_BCAST_LOOP(&p->b, { out[oi] = ekd_cmp_f32(p->op, a[off1], x[off2]); });
}

void ekd_compare_i32(const ekd_cmp_params_t *p, const int32_t *a, const int32_t *x, uint8_t *out) {
  EKD_BCAST_LOOP(&p->b, { out[oi] = ekd_cmp_i32(p->op, a[off1], x[off2]); });
}

/* ------------------------------------------------------------------ quantization and casts */

static inline float ekd_roundf(float x) {
  /* std::round: half away from zero, without libm */
  if (!(x > -8388608.0f && x < 8388608.0f)) return x; /* already integral, inf or nan */
  const float t = (float)(int32_t)x;                   /* truncation toward zero */
  const float frac = x - t;                            /* exact */
  if (frac >= 0.5f) return t + 1.0f;
  if (frac <= -0.5f) return t - 1.0f;
  return t;
}

void ekd_quantize_f32_s8(int32_t n, float scale, int32_t zero_point, const float *in, int8_t *out) {
  for (int32_t i = 0; i < n; ++i) {
    const float q = ekd_roundf(in[i] / scale);
    /* static_cast<int32_t> of an out-of-range float is undefined in C++; clamp first. */
    int32_t v = q >= 2147483520.0f ? INT32_MAX : (q <= -2147483648.0f ? INT32_MIN : (int32_t)q);
    v = (v > INT32_MAX - 256 || v < INT32_MIN + 256) ? v : v + zero_point;
    out[i] = (int8_t)ekd_clamp(v, -128, 127);
  }
}

void ekd_requantize_s8(int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t out_zp,
                       int32_t act_min, int32_t act_max, const int8_t *in, int8_t *out) {
  for (int32_t i = 0; i < n; ++i) {
    const int32_t v = ekd_mbqm((int32_t)in[i] - in_zp, mult, shift) + out_zp;
    out[i] = (int8_t)ekd_clamp(v, act_min, act_max);
  }
}

void ekd_dequantize_s8_f32(int32_t n, float scale, int32_t zero_point, const int8_t *in, float *out) {
  /* The reference computes (double)scale * (v - zp) and rounds to float; the exact product of a
   * float and a 9-bit integer fits a double, so one float multiply gives the same result. */
  for (int32_t i = 0; i < n; ++i) out[i] = scale * (float)((int32_t)in[i] - zero_point);
}

static float ekd_load_as_float(int32_t type, const void *p, int32_t i) {
  switch (type) {
    case EKD_F32: return ((const float *)p)[i];
    case EKD_I8: return (float)((const int8_t *)p)[i];
    case EKD_BOOL:
    case EKD_U8: return (float)((const uint8_t *)p)[i];
    case EKD_I16: return (float)((const int16_t *)p)[i];
    default: return (float)((const int32_t *)p)[i];
  }
}

static int32_t ekd_load_as_int(int32_t type, const void *p, int32_t i) {
  switch (type) {
    case EKD_F32: { const float f = ((const float *)p)[i]; return (int32_t)f; }
    case EKD_I8: return ((const int8_t *)p)[i];
    case EKD_BOOL:
    case EKD_U8: return ((const uint8_t *)p)[i];
    case EKD_I16: return ((const int16_t *)p)[i];
    default: return ((const int32_t *)p)[i];
  }
}

void ekd_cast(int32_t n, int32_t from, int32_t to, const void *in, void *out) {
  /* static_cast semantics, like TFLite's CAST: to bool is "!= 0", float to int truncates. */
  for (int32_t i = 0; i < n; ++i) {
    switch (to) {
      case EKD_F32: ((float *)out)[i] = ekd_load_as_float(from, in, i); break;
      case EKD_BOOL:
        ((uint8_t *)out)[i] = from == EKD_F32 ? (ekd_load_as_float(from, in, i) != 0.0f) : (ekd_load_as_int(from, in, i) != 0);
        break;
      case EKD_I8: ((int8_t *)out)[i] = (int8_t)ekd_load_as_int(from, in, i); break;
      case EKD_U8: ((uint8_t *)out)[i] = (uint8_t)ekd_load_as_int(from, in, i); break;
      case EKD_I16: ((int16_t *)out)[i] = (int16_t)ekd_load_as_int(from, in, i); break;
      default: ((int32_t *)out)[i] = ekd_load_as_int(from, in, i); break;
    }
  }
}

/* ------------------------------------------------------------------ data movement */

void ekd_copy_nd(const ekd_copy_params_t *p, const void *in, void *out) {
  const uint8_t *src = (const uint8_t *)in;
  uint8_t *dst = (uint8_t *)out;
  const int32_t es = p->elem_size;
  int32_t idx[EKD_MAX_DIMS] = {0};
  int32_t n = 1;
  for (int32_t d = 0; d < p->rank; ++d) n *= p->dims[d];
  int32_t io = p->in_base, oo = p->out_base;
  const int32_t last = p->rank - 1;
  /* innermost run: contiguous on both sides is a memcpy */
  const int32_t run = (p->rank > 0 && p->in_strides[last] == 1 && p->out_strides[last] == 1) ? p->dims[last] : 1;
  const int32_t top = run > 1 ? last - 1 : last;
  for (int32_t i = 0; i < n; i += run) {
    if (run > 1) {
      memcpy(dst + (size_t)oo * es, src + (size_t)io * es, (size_t)run * es);
    } else {
      memcpy(dst + (size_t)oo * es, src + (size_t)io * es, (size_t)es);
    }
    for (int32_t d = top; d >= 0; --d) {
      io += p->in_strides[d];
      oo += p->out_strides[d];
      if (++idx[d] < p->dims[d]) break;
      io -= p->in_strides[d] * p->dims[d];
      oo -= p->out_strides[d] * p->dims[d];
      idx[d] = 0;
    }
  }
}

void ekd_pad(int32_t out_count, int32_t elem_size, const void *value, const ekd_copy_params_t *copy,
             const void *in, void *out) {
  uint8_t *dst = (uint8_t *)out;
  for (int32_t i = 0; i < out_count; ++i) memcpy(dst + (size_t)i * elem_size, value, (size_t)elem_size);
  ekd_copy_nd(copy, in, out);
}

void ekd_gather_table(int32_t n, int32_t elem_size, const int32_t *index, const void *in, void *out) {
  const uint8_t *src = (const uint8_t *)in;
  uint8_t *dst = (uint8_t *)out;
  for (int32_t i = 0; i < n; ++i) memcpy(dst + (size_t)i * elem_size, src + (size_t)index[i] * elem_size, (size_t)elem_size);
}

/* ------------------------------------------------------------------ reductions */

void ekd_mean_s8(const ekd_mean_params_t *p, const int8_t *in, int8_t *out) {
  int32_t kidx[EKD_MAX_DIMS] = {0};
  int32_t n_out = 1, n_red = 1;
  for (int32_t d = 0; d < p->kept_rank; ++d) n_out *= p->kept_dims[d];
  for (int32_t d = 0; d < p->red_rank; ++d) n_red *= p->red_dims[d];
  int32_t base = 0;
  for (int32_t o = 0; o < n_out; ++o) {
    int32_t ridx[EKD_MAX_DIMS] = {0};
    int32_t off = base;
    int32_t sum = 0;
    for (int32_t r = 0; r < n_red; ++r) {
      sum = (int32_t)((uint32_t)sum + (uint32_t)(int32_t)in[off]); /* WrappingAdd */
      for (int32_t d = p->red_rank - 1; d >= 0; --d) {
        off += p->red_strides[d];
        if (++ridx[d] < p->red_dims[d]) break;
        off -= p->red_strides[d] * p->red_dims[d];
        ridx[d] = 0;
      }
    }
    const int32_t shifted = (int32_t)((int64_t)sum - (int64_t)p->in_zp * (int64_t)p->num_reduced);
    const int32_t v = ekd_mbqm(shifted, p->mult, p->shift) + p->out_zp;
    out[o] = (int8_t)ekd_clamp(v, -128, 127);
    for (int32_t d = p->kept_rank - 1; d >= 0; --d) {
      base += p->kept_strides[d];
      if (++kidx[d] < p->kept_dims[d]) break;
      base -= p->kept_strides[d] * p->kept_dims[d];
      kidx[d] = 0;
    }
  }
}
