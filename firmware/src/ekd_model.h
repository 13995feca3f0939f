/*
 * The interface every generated model (model.c, from edgekd/convert/tflite2c.py) implements.
 * The protocol and the host build only see this; they never know the model's ops.
 */
#ifndef EKD_MODEL_H
#define EKD_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const char *name;
  int32_t dtype;      /* ekd_dtype_t */
  int32_t offset;     /* byte offset in the arena */
  int32_t bytes;
  int32_t rank;
  int32_t dims[6];
  float scale;        /* quantization (0 when not quantized) */
  int32_t zero_point;
} ekd_io_t;

extern const char ekd_model_id[];
extern const int32_t ekd_model_num_inputs;
extern const int32_t ekd_model_num_outputs;
extern const ekd_io_t ekd_model_inputs[];
extern const ekd_io_t ekd_model_outputs[];
extern const uint32_t ekd_model_arena_bytes;
extern const uint32_t ekd_model_weight_bytes;

uint8_t *ekd_model_arena(void);
void ekd_model_invoke(void);

#ifdef __cplusplus
}
#endif

#endif /* EKD_MODEL_H */
