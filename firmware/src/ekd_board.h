/*
 * What a board provides to the runtime and the protocol (firmware/boards/<board>/board.c).
 */
#ifndef EKD_BOARD_H
#define EKD_BOARD_H

#include <stdint.h>

void ekd_board_init(void);
const char *ekd_board_name(void);
void ekd_board_putc(char c);
/* Next received byte, or -1 when none arrived within timeout_ms (0 waits forever). Idles the
 * core (WFI) while waiting. */
int ekd_board_getc(uint32_t timeout_ms);
/* Free-running 64-bit tick counter and its frequency (SysTick at the core clock). */
uint64_t ekd_board_ticks(void);
uint32_t ekd_board_tick_hz(void);
/* Stack reserved by the linker script and the most of it ever used (stack painting). */
uint32_t ekd_board_stack_size(void);
uint32_t ekd_board_stack_used(void);
/* Static RAM of the image: .data + .bss (the arena included) + the stack reservation. */
uint32_t ekd_board_ram_bytes(void);
void ekd_board_reset(void);

#endif /* EKD_BOARD_H */
