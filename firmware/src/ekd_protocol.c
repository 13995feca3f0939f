/*
 * The serial protocol: EEMBC / MLPerf Tiny compatible, so existing harnesses drive the board.
 *
 * Commands are ASCII terminated by '%'; every command is answered by lines and a final
 * "m-ready". Boot prints "m-timestamp-mode-performance", "m-init-done", "m-ready".
 *
 *   name%             m-name-dut-[edgekd]
 *   profile%          m-profile-[...] m-model-[<model id>]
 *   timestamp%        m-lap-us-<t>
 *   db load N%        m-[Expecting N bytes]          (N must be the model's input size)
 *   db <hex>%         (<= 31 bytes a line) ... m-load-done after N bytes
 *   db print%         m-buffer-... the loaded bytes in hex
 *   infer N W%        m-warmup-start-W m-warmup-done m-infer-start-N m-lap-us-<t0> m-lap-us-<t1>
 *                     m-infer-done m-results-[v0,...]
 *   results%          m-results-[v0,...] (raw integer outputs, all outputs back to back)
 *   help%             the command list
 * Extensions (announced by edgekd-caps%):
 *   edgekd-caps%      m-edgekd-caps-[laps,mem,dbc,io,clock]
 *   edgekd-laps on|off%  per-inference tick laps after m-infer-done: m-edgekd-laps-[t,...]
 *   edgekd-mem%       m-edgekd-mem-[arena=..,weights=..,ram=..,stack_size=..,stack_used=..]
 *   edgekd-io%        m-edgekd-io-[in=<bytes>,out=<bytes>,inputs=..,outputs=..]
 *   edgekd-clock%     m-edgekd-clock-[hz=<tick rate>]
 *   edgekd-dbc N CRC% m-edgekd-dbc-ready, then N raw bytes; m-load-done when their CRC-32
 *                     (IEEE, hex) matches, else e-[...]
 * Errors are e-[...].
 */
#include <string.h>

#include "ekd_board.h"
#include "ekd_model.h"

#define EKD_CMD_MAX 80      /* EE_CMD_SIZE of the EEMBC reference */
#define EKD_MAX_LAPS 64
#define EKD_DBC_TIMEOUT_MS 500  /* per byte; 87 us a byte at 115200 baud */
#define EKD_FW_VERSION "edgekd-fw 0.1"

static char g_cmd[EKD_CMD_MAX + 1];
static int32_t g_cmd_len;
static int32_t g_cmd_overflow;
static int32_t g_load_size;     /* bytes expected by the current db load, 0 when none */
static int32_t g_load_pos;
static int32_t g_input_ready;   /* a complete input has been loaded */
static int32_t g_results_ready;
static int32_t g_laps_on;
static uint32_t g_laps[EKD_MAX_LAPS];

/* ------------------------------------------------------------------ output */

static void put(const char *s) {
  while (*s) ekd_board_putc(*s++);
}

static void put_u64(uint64_t v) {
  char buf[21];
  int i = 20;
  buf[i] = 0;
  do {
    buf[--i] = (char)('0' + (v % 10));
    v /= 10;
  } while (v && i > 0);
  put(buf + i);
}

static void put_i32(int32_t v) {
  if (v < 0) {
    ekd_board_putc('-');
    put_u64((uint64_t)(-(int64_t)v));
  } else {
    put_u64((uint64_t)v);
  }
}

static void put_hex(uint32_t v, int digits) {
  static const char hex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) ekd_board_putc(hex[(v >> (4 * i)) & 0xf]);
}

static void line(const char *s) {
  put(s);
  put("\r\n");
}

static void error(const char *msg) {
  put("e-[");
  put(msg);
  put("]\r\n");
}

/* ------------------------------------------------------------------ helpers */

static int32_t total_input_bytes(void) {
  int32_t n = 0;
  for (int32_t i = 0; i < ekd_model_num_inputs; ++i) n += ekd_model_inputs[i].bytes;
  return n;
}

static int32_t total_output_bytes(void) {
  int32_t n = 0;
  for (int32_t i = 0; i < ekd_model_num_outputs; ++i) n += ekd_model_outputs[i].bytes;
  return n;
}

/* The arena byte that holds byte `pos` of the concatenated inputs. */
static uint8_t *input_byte(int32_t pos) {
  for (int32_t i = 0; i < ekd_model_num_inputs; ++i) {
    if (pos < ekd_model_inputs[i].bytes) return ekd_model_arena() + ekd_model_inputs[i].offset + pos;
    pos -= ekd_model_inputs[i].bytes;
  }
  return 0;
}

static int parse_u32(const char *s, uint32_t *out) {
  uint64_t v = 0;
  if (!s || !*s) return 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return 0;
    v = v * 10 + (uint64_t)(*s - '0');
    if (v > 0xffffffffu) return 0;
  }
  *out = (uint32_t)v;
  return 1;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static uint32_t crc32_update(uint32_t crc, uint8_t b) {
  crc ^= b;
  for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  return crc;
}

static uint64_t ticks_to_us(uint64_t t) {
  return t * 1000000u / ekd_board_tick_hz();
}

static void lap_us(void) {
  put("m-lap-us-");
  put_u64(ticks_to_us(ekd_board_ticks()));
  put("\r\n");
}

/* ------------------------------------------------------------------ commands */

static void cmd_results(void) {
  if (!g_results_ready) {
    error("results: no inference has run on the loaded input");
    return;
  }
  put("m-results-[");
  int first = 1;
  for (int32_t i = 0; i < ekd_model_num_outputs; ++i) {
    const ekd_io_t *o = &ekd_model_outputs[i];
    const uint8_t *p = ekd_model_arena() + o->offset;
    int32_t elem = (o->dtype == 3) ? 4 : (o->dtype == 5 ? 2 : 1);
    for (int32_t k = 0; k < o->bytes / elem; ++k) {
      if (!first) ekd_board_putc(',');
      first = 0;
      switch (o->dtype) {
        case 1: put_i32(((const int8_t *)p)[k]); break;          /* int8 */
        case 3: put_i32(((const int32_t *)p)[k]); break;         /* int32 */
        case 5: put_i32(((const int16_t *)p)[k]); break;         /* int16 */
        default: put_i32(p[k]); break;                           /* bool, uint8 */
      }
    }
  }
  line("]");
}

static void cmd_db(char *arg, char *rest) {
  if (!arg) {
    error("Command 'db' requires a subcommand");
    return;
  }
  if (strcmp(arg, "load") == 0) {
    uint32_t n;
    if (!parse_u32(rest, &n) || n == 0) {
      error("Command 'db load' requires the # of bytes (> 0)");
      return;
    }
    if ((int32_t)n != total_input_bytes()) {
      put("e-[db load ");
      put_u64(n);
      put(": the model input is ");
      put_i32(total_input_bytes());
      line(" bytes]");
      return;
    }
    g_load_size = (int32_t)n;
    g_load_pos = 0;
    g_input_ready = 0;
    g_results_ready = 0;
    put("m-[Expecting ");
    put_u64(n);
    line(" bytes]");
    return;
  }
  if (strcmp(arg, "print") == 0) {
    int32_t n = g_input_ready ? total_input_bytes() : g_load_pos;
    for (int32_t i = 0; i < n; i += 16) {
      put("m-buffer-");
      for (int32_t k = i; k < i + 16 && k < n; ++k) {
        if (k > i) ekd_board_putc(',');
        put_hex(*input_byte(k), 2);
      }
      put("\r\n");
    }
    return;
  }
  /* hex payload */
  if (g_load_size == 0) {
    error("db: no 'db load N' in progress");
    return;
  }
  int32_t len = (int32_t)strlen(arg);
  if (len & 1) {
    error("Insufficent number of hex digits");
    return;
  }
  for (int32_t i = 0; i < len; i += 2) {
    int hi = hex_value(arg[i]), lo = hex_value(arg[i + 1]);
    if (hi < 0 || lo < 0) {
      put("e-[Invalid hex digit '");
      ekd_board_putc(arg[i]);
      ekd_board_putc(arg[i + 1]);
      line("']");
      return;
    }
    *input_byte(g_load_pos++) = (uint8_t)(hi * 16 + lo);
    if (g_load_pos == g_load_size) {
      g_load_size = 0;
      g_input_ready = 1;
      line("m-load-done");
      return; /* the reference disregards the remaining digits */
    }
  }
}

static void cmd_dbc(char *len_s, char *crc_s) {
  uint32_t n, want = 0;
  if (!parse_u32(len_s, &n) || !crc_s || strlen(crc_s) > 8) {
    error("edgekd-dbc requires <bytes> <crc32 hex>");
    return;
  }
  for (const char *c = crc_s; *c; ++c) {
    int v = hex_value(*c);
    if (v < 0) {
      error("edgekd-dbc: the CRC must be hex");
      return;
    }
    want = want * 16 + (uint32_t)v;
  }
  if ((int32_t)n != total_input_bytes()) {
    put("e-[edgekd-dbc ");
    put_u64(n);
    put(": the model input is ");
    put_i32(total_input_bytes());
    line(" bytes]");
    return;
  }
  g_input_ready = 0;
  g_results_ready = 0;
  g_load_size = 0;
  line("m-edgekd-dbc-ready");
  uint32_t crc = 0xffffffffu;
  for (uint32_t i = 0; i < n; ++i) {
    int c = ekd_board_getc(EKD_DBC_TIMEOUT_MS);
    if (c < 0) {
      put("e-[edgekd-dbc timed out after ");
      put_u64(i);
      put(" of ");
      put_u64(n);
      line(" bytes]");
      return;
    }
    *input_byte((int32_t)i) = (uint8_t)c;
    crc = crc32_update(crc, (uint8_t)c);
  }
  crc ^= 0xffffffffu;
  if (crc != want) {
    put("e-[edgekd-dbc crc mismatch: received ");
    put_hex(crc, 8);
    put(", expected ");
    put_hex(want, 8);
    line("]");
    return;
  }
  g_input_ready = 1;
  line("m-load-done");
}

static void cmd_infer(char *n_s, char *w_s) {
  uint32_t n = 1, w = 10; /* the EEMBC defaults */
  if ((n_s && !parse_u32(n_s, &n)) || (w_s && !parse_u32(w_s, &w)) || n == 0) {
    error("infer N W: N >= 1 and W >= 0 must be integers");
    return;
  }
  if (!g_input_ready) {
    error("infer: no input loaded (db load N, then db <hex> lines)");
    return;
  }
  put("m-warmup-start-");
  put_u64(w);
  put("\r\n");
  for (uint32_t i = 0; i < w; ++i) ekd_model_invoke();
  line("m-warmup-done");
  put("m-infer-start-");
  put_u64(n);
  put("\r\n");
  uint32_t recorded = 0;
  lap_us();
  uint64_t prev = ekd_board_ticks();
  for (uint32_t i = 0; i < n; ++i) {
    ekd_model_invoke();
    if (g_laps_on) {
      uint64_t now = ekd_board_ticks();
      if (recorded < EKD_MAX_LAPS) g_laps[recorded++] = (uint32_t)(now - prev);
      prev = now;
    }
  }
  lap_us();
  line("m-infer-done");
  g_results_ready = 1;
  if (g_laps_on) {
    put("m-edgekd-laps-[");
    for (uint32_t i = 0; i < recorded; ++i) {
      if (i) ekd_board_putc(',');
      put_u64(g_laps[i]);
    }
    line("]");
  }
  cmd_results();
}

static void cmd_mem(void) {
  put("m-edgekd-mem-[arena=");
  put_u64(ekd_model_arena_bytes);
  put(",weights=");
  put_u64(ekd_model_weight_bytes);
  put(",ram=");
  put_u64(ekd_board_ram_bytes());
  put(",stack_size=");
  put_u64(ekd_board_stack_size());
  put(",stack_used=");
  put_u64(ekd_board_stack_used());
  line("]");
}

static void dispatch(char *cmd) {
  char *argv[5] = {0};
  int argc = 0;
  char *p = cmd;
  while (*p && argc < 5) {
    while (*p == ' ') *p++ = 0;
    if (!*p) break;
    argv[argc++] = p;
    while (*p && *p != ' ') ++p;
  }
  if (argc == 0) return; /* an empty command only gets m-ready */
  const char *c = argv[0];
  if (strcmp(c, "name") == 0) {
    line("m-name-dut-[edgekd]");
  } else if (strcmp(c, "profile") == 0) {
    put("m-profile-[" EKD_FW_VERSION " ");
    put(ekd_board_name());
    line("]");
    put("m-model-[");
    put(ekd_model_id);
    line("]");
  } else if (strcmp(c, "timestamp") == 0) {
    lap_us();
  } else if (strcmp(c, "db") == 0) {
    cmd_db(argv[1], argv[2]);
  } else if (strcmp(c, "infer") == 0) {
    cmd_infer(argv[1], argv[2]);
  } else if (strcmp(c, "results") == 0) {
    cmd_results();
  } else if (strcmp(c, "help") == 0) {
    line("m-help-[name profile timestamp db infer results help edgekd-caps]");
  } else if (strcmp(c, "edgekd-caps") == 0) {
    line("m-edgekd-caps-[laps,mem,dbc,io,clock]");
  } else if (strcmp(c, "edgekd-laps") == 0) {
    if (argv[1] && strcmp(argv[1], "on") == 0) {
      g_laps_on = 1;
    } else if (argv[1] && strcmp(argv[1], "off") == 0) {
      g_laps_on = 0;
    } else {
      error("edgekd-laps on|off");
      return;
    }
    put("m-edgekd-laps-");
    line(g_laps_on ? "on" : "off");
  } else if (strcmp(c, "edgekd-mem") == 0) {
    cmd_mem();
  } else if (strcmp(c, "edgekd-io") == 0) {
    put("m-edgekd-io-[in=");
    put_i32(total_input_bytes());
    put(",out=");
    put_i32(total_output_bytes());
    put(",inputs=");
    put_i32(ekd_model_num_inputs);
    put(",outputs=");
    put_i32(ekd_model_num_outputs);
    put(",max_laps=");
    put_i32(EKD_MAX_LAPS);
    line("]");
  } else if (strcmp(c, "edgekd-clock") == 0) {
    put("m-edgekd-clock-[hz=");
    put_u64(ekd_board_tick_hz());
    line("]");
  } else if (strcmp(c, "edgekd-dbc") == 0) {
    cmd_dbc(argv[1], argv[2]);
  } else {
    put("e-[Unknown command: ");
    put(c);
    line("]");
  }
}

static void on_char(char ch) {
  if (ch == '%') {
    g_cmd[g_cmd_len] = 0;
    if (g_cmd_overflow) {
      put("e-[Command too long: more than ");
      put_i32(EKD_CMD_MAX);
      line(" characters]");
    } else {
      dispatch(g_cmd);
    }
    line("m-ready");
    g_cmd_len = 0;
    g_cmd_overflow = 0;
  } else if (ch == '\r' || ch == '\n') {
    /* terminals send line ends; the protocol ignores them */
  } else if (g_cmd_len < EKD_CMD_MAX) {
    g_cmd[g_cmd_len++] = ch;
  } else {
    g_cmd_overflow = 1;
  }
}

int main(void) {
  ekd_board_init();
  line("m-timestamp-mode-performance");
  line("m-init-done");
  line("m-ready");
  for (;;) {
    int c = ekd_board_getc(0);
    if (c >= 0) on_char((char)c);
  }
}
