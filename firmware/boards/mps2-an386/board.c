/*
 * Board support: Arm MPS2 with the AN386 (Cortex-M4F) image, as emulated by
 * `qemu-system-arm -M mps2-an386` (and as on the FPGA board).
 *
 * - startup: vector table at 0x0, .data copy, .bss clear, stack painting, FPU enable
 * - UART0: CMSDK APB UART at 0x40004000, RX interrupt (IRQ 0) into a ring buffer; when the
 *   ring is full the RX interrupt is masked, so the byte stays in the UART and QEMU holds
 *   the rest back (no loss at any host speed)
 * - timing: SysTick on the 25 MHz system clock with a 64-bit overflow count. Under QEMU the
 *   clock is virtual; with -icount it advances with the instruction count.
 */
#include <stdint.h>
#include <string.h>

#include "ekd_board.h"

#define SYSCLK_HZ 25000000u
#define UART_BAUD 115200u
#define RX_RING 256u

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART0_BASE 0x40004000u
#define UART_DATA REG(UART0_BASE + 0x00)
#define UART_STATE REG(UART0_BASE + 0x04)
#define UART_CTRL REG(UART0_BASE + 0x08)
#define UART_INTCLR REG(UART0_BASE + 0x0C)
#define UART_BAUDDIV REG(UART0_BASE + 0x10)
#define STATE_TXFULL 1u
#define STATE_RXFULL 2u
#define CTRL_TXEN 1u
#define CTRL_RXEN 2u
#define CTRL_RXIRQ 8u

#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER0 REG(0xE000E100u)
#define SCB_CPACR REG(0xE000ED88u)
#define SCB_ICSR REG(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define UART0_RX_IRQ 0

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack, _sram;
int main(void);

static volatile uint8_t g_rx[RX_RING];
static volatile uint32_t g_rx_head, g_rx_tail; /* head: written by the ISR; tail: by getc */
static volatile uint32_t g_systick_wraps;
static volatile uint32_t g_rx_held; /* a byte waits in the UART for room in the ring */

/* ------------------------------------------------------------------ startup */

#define STACK_PAINT 0xA5A5A5A5u

void Reset_Handler(void) {
  /* FPU first: the code is built with -mfloat-abi=hard */
  SCB_CPACR |= (0xFu << 20);
  __asm volatile("dsb\n isb" ::: "memory");
  uint32_t *src = &_sidata, *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss; ++dst) *dst = 0;
  /* paint the stack below the current frame, for the high-water mark */
  uint32_t *sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (dst = &_sstack; dst < sp - 16; ++dst) *dst = STACK_PAINT;
  main();
  for (;;) {
  }
}

static void put_str(const char *s);

static void fault(const char *what) {
  /* tell the host, then reboot: it sees e-[...] followed by m-init-done */
  put_str("e-[fault ");
  put_str(what);
  put_str(": rebooting]\r\n");
  ekd_board_reset();
}

void NMI_Handler(void) { fault("NMI"); }
void HardFault_Handler(void) { fault("HardFault"); }
void MemManage_Handler(void) { fault("MemManage"); }
void BusFault_Handler(void) { fault("BusFault"); }
void UsageFault_Handler(void) { fault("UsageFault"); }
void Default_Handler(void) { fault("unexpected interrupt"); }

void SysTick_Handler(void) { g_systick_wraps++; }

/* Move received bytes from the UART into the ring while there is room. A byte that finds the
 * ring full stays in the UART (RXFULL), so QEMU holds the rest back; the UART raises its RX
 * interrupt only when a byte arrives, so getc() drains such a held byte itself. */
static void uart_drain(void) {
  while (UART_STATE & STATE_RXFULL) {
    uint32_t next = (g_rx_head + 1u) % RX_RING;
    if (next == g_rx_tail) return;
    g_rx[g_rx_head] = (uint8_t)UART_DATA;
    g_rx_head = next;
  }
}

void UART0_RX_Handler(void) {
  UART_INTCLR = 2u; /* RX interrupt */
  uart_drain();
  if (UART_STATE & STATE_RXFULL) g_rx_held = 1; /* the ring is full: getc() drains it later */
}

typedef void (*vector_t)(void);
__attribute__((section(".isr_vector"), used)) const vector_t g_vectors[16 + 32] = {
    (vector_t)(uintptr_t)&_estack,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0, 0, 0, 0,
    Default_Handler, /* SVC */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    [16 + UART0_RX_IRQ] = UART0_RX_Handler,
    [16 + 1] = Default_Handler,
};

/* ------------------------------------------------------------------ the board API */

void ekd_board_init(void) {
  UART_BAUDDIV = SYSCLK_HZ / UART_BAUD;
  UART_CTRL = CTRL_TXEN | CTRL_RXEN | CTRL_RXIRQ;
  NVIC_ISER0 = 1u << UART0_RX_IRQ;
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7u; /* processor clock, interrupt, enable */
}

const char *ekd_board_name(void) { return "mps2-an386"; }

void ekd_board_putc(char c) {
  while (UART_STATE & STATE_TXFULL) {
  }
  UART_DATA = (uint8_t)c;
}

static void put_str(const char *s) {
  while (*s) ekd_board_putc(*s++);
}

/* After a byte, poll the ring (plain RAM) this many times before sleeping again: waking from
 * WFI costs the emulator far more per byte than polling, and bytes come in bursts (a command, a
 * db line, an upload). The loop touches no device register, so it does not slow the emulated
 * UART down; time-outs are checked once per round (~200 us of emulated time). */
#define SPIN_POLLS 40000u

int ekd_board_getc(uint32_t timeout_ms) {
  const uint64_t limit = (uint64_t)timeout_ms * (SYSCLK_HZ / 1000u);
  uint64_t start = 0;
  int started = 0;
  for (;;) {
    for (uint32_t spin = 0; spin < SPIN_POLLS; ++spin) {
      if (g_rx_tail != g_rx_head) {
        __asm volatile("cpsid i" ::: "memory");
        uint8_t c = g_rx[g_rx_tail];
        g_rx_tail = (g_rx_tail + 1u) % RX_RING;
        if (g_rx_held) { /* a held byte raises no interrupt of its own */
          g_rx_held = 0;
          uart_drain();
        }
        __asm volatile("cpsie i" ::: "memory");
        return c;
      }
    }
    const uint64_t now = ekd_board_ticks();
    if (!started) {
      start = now;
      started = 1;
    }
    if (timeout_ms) {
      if (now - start >= limit) return -1;
      continue; /* a transfer is in progress: keep polling */
    }
    /* idle: sleep until an interrupt; WFI with interrupts masked still wakes on a pending one */
    __asm volatile("cpsid i" ::: "memory");
    if (g_rx_tail == g_rx_head) __asm volatile("wfi" ::: "memory");
    __asm volatile("cpsie i" ::: "memory");
  }
}

uint64_t ekd_board_ticks(void) {
  /* A wrap whose interrupt is still pending (e.g. read with interrupts masked) has not been
   * counted yet: add it, and re-read when the pending state changed between the two reads. */
  for (;;) {
    const uint32_t hi = g_systick_wraps;
    const uint32_t p1 = SCB_ICSR & ICSR_PENDSTSET;
    const uint32_t val = SYST_CVR & 0x00FFFFFFu;
    const uint32_t p2 = SCB_ICSR & ICSR_PENDSTSET;
    if (hi != g_systick_wraps || p1 != p2) continue;
    return ((uint64_t)(hi + (p1 ? 1u : 0u)) << 24) + (0x00FFFFFFu - val);
  }
}

uint32_t ekd_board_tick_hz(void) { return SYSCLK_HZ; }

uint32_t ekd_board_stack_size(void) { return (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_sstack); }

uint32_t ekd_board_stack_used(void) {
  const uint32_t *p = &_sstack;
  while (p < &_estack && *p == STACK_PAINT) ++p;
  return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

uint32_t ekd_board_ram_bytes(void) { return (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_sram); }

void ekd_board_reset(void) {
  __asm volatile("dsb" ::: "memory");
  SCB_AIRCR = 0x05FA0004u; /* SYSRESETREQ */
  for (;;) {
  }
}
