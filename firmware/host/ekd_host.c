/*
 * Host build of the runtime: the generated model.c + ekd_kernels.c + this file become a shared
 * library that Python loads with ctypes (edgekd/firmware/host.py), so tests compare the exact C
 * code that runs on the board with the TFLite and TFLite Micro interpreters, without an emulator.
 */
#include <string.h>

#include "ekd_model.h"

/* Runs one inference: `in` holds every input tensor back to back (model order), `out` receives
 * every output back to back. Returns 0, or -1 when the sizes do not match the model. */
int ekd_host_run(const uint8_t *in, int32_t in_bytes, uint8_t *out, int32_t out_bytes) {
  int32_t need_in = 0, need_out = 0;
  for (int32_t i = 0; i < ekd_model_num_inputs; ++i) need_in += ekd_model_inputs[i].bytes;
  for (int32_t i = 0; i < ekd_model_num_outputs; ++i) need_out += ekd_model_outputs[i].bytes;
  if (in_bytes != need_in || out_bytes != need_out) return -1;
  uint8_t *arena = ekd_model_arena();
  for (int32_t i = 0; i < ekd_model_num_inputs; ++i) {
    memcpy(arena + ekd_model_inputs[i].offset, in, (size_t)ekd_model_inputs[i].bytes);
    in += ekd_model_inputs[i].bytes;
  }
  ekd_model_invoke();
  for (int32_t i = 0; i < ekd_model_num_outputs; ++i) {
    memcpy(out, arena + ekd_model_outputs[i].offset, (size_t)ekd_model_outputs[i].bytes);
    out += ekd_model_outputs[i].bytes;
  }
  return 0;
}

/* Runs a batch: n inputs back to back in `in`, n outputs back to back in `out`. */
int ekd_host_run_batch(int32_t n, const uint8_t *in, int32_t in_bytes, uint8_t *out, int32_t out_bytes) {
  for (int32_t k = 0; k < n; ++k) {
    if (ekd_host_run(in + (size_t)k * in_bytes, in_bytes, out + (size_t)k * out_bytes, out_bytes) != 0) return -1;
  }
  return 0;
}

uint32_t ekd_host_arena_bytes(void) { return ekd_model_arena_bytes; }
