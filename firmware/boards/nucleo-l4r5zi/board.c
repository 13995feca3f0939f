/*
 * Board support: ST NUCLEO-L4R5ZI (STM32L4R5ZI, Cortex-M4F).
 *
 * - clock: HSI16 -> PLL (M=1, N=15, R=2) = 120 MHz SYSCLK, voltage range 1 boost mode,
 *   5 flash wait states, with the AHB /2 step the reference manual asks for above 80 MHz
 * - UART: LPUART1 on PG7 (TX) / PG8 (RX), AF8 - the ST-LINK virtual COM port - at 115200 baud,
 *   RX interrupt into a ring buffer; port G needs VDDIO2 (PWR_CR2.IOSV)
 * - timing: SysTick at the core clock (ticks are CPU cycles), 64-bit overflow count
 *
 * Register addresses are from RM0432 (STM32L4+ reference manual); no vendor headers needed.
 * Status: compiled and linked by the test suite; not yet run on hardware in this repository.
 */
#include <stdint.h>

#include "ekd_board.h"

#ifndef F_CPU
#define F_CPU 120000000u
#endif
#define UART_BAUD 115200u
#define RX_RING 512u

#define REG(addr) (*(volatile uint32_t *)(addr))
/* RCC */
#define RCC_BASE 0x40021000u
#define RCC_CR REG(RCC_BASE + 0x00)
#define RCC_CFGR REG(RCC_BASE + 0x08)
#define RCC_PLLCFGR REG(RCC_BASE + 0x0C)
#define RCC_AHB2ENR REG(RCC_BASE + 0x4C)
#define RCC_APB1ENR1 REG(RCC_BASE + 0x58)
#define RCC_APB1ENR2 REG(RCC_BASE + 0x5C)
#define RCC_CCIPR REG(RCC_BASE + 0x88)
/* PWR */
#define PWR_BASE 0x40007000u
#define PWR_CR1 REG(PWR_BASE + 0x00)
#define PWR_CR2 REG(PWR_BASE + 0x04)
#define PWR_SR2 REG(PWR_BASE + 0x14)
#define PWR_CR5 REG(PWR_BASE + 0x80)
/* FLASH */
#define FLASH_ACR REG(0x40022000u)
/* GPIOG */
#define GPIOG_BASE 0x48001800u
#define GPIOG_MODER REG(GPIOG_BASE + 0x00)
#define GPIOG_OSPEEDR REG(GPIOG_BASE + 0x08)
#define GPIOG_AFRL REG(GPIOG_BASE + 0x20)
#define GPIOG_AFRH REG(GPIOG_BASE + 0x24)
/* LPUART1 */
#define LPUART_BASE 0x40008000u
#define LPUART_CR1 REG(LPUART_BASE + 0x00)
#define LPUART_BRR REG(LPUART_BASE + 0x0C)
#define LPUART_ISR REG(LPUART_BASE + 0x1C)
#define LPUART_ICR REG(LPUART_BASE + 0x20)
#define LPUART_RDR REG(LPUART_BASE + 0x24)
#define LPUART_TDR REG(LPUART_BASE + 0x28)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)
#define ISR_ORE (1u << 3)
#define CR1_UE 1u
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_RXNEIE (1u << 5)
/* core */
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER2 REG(0xE000E108u)
#define SCB_CPACR REG(0xE000ED88u)
#define SCB_ICSR REG(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define LPUART1_IRQ 70

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack, _sram;
int main(void);

static volatile uint8_t g_rx[RX_RING];
static volatile uint32_t g_rx_head, g_rx_tail;
static volatile uint32_t g_systick_wraps;

#define STACK_PAINT 0xA5A5A5A5u

void Reset_Handler(void) {
  SCB_CPACR |= (0xFu << 20);
  __asm volatile("dsb\n isb" ::: "memory");
  uint32_t *src = &_sidata, *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss; ++dst) *dst = 0;
  uint32_t *sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (dst = &_sstack; dst < sp - 16; ++dst) *dst = STACK_PAINT;
  main();
  for (;;) {
  }
}

static void put_str(const char *s);

static void fault(const char *what) {
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

void LPUART1_Handler(void) {
  if (LPUART_ISR & ISR_ORE) LPUART_ICR = ISR_ORE; /* an overrun loses a byte; the CRC upload notices */
  while (LPUART_ISR & ISR_RXNE) {
    uint32_t next = (g_rx_head + 1u) % RX_RING;
    uint8_t c = (uint8_t)LPUART_RDR;
    if (next != g_rx_tail) {
      g_rx[g_rx_head] = c;
      g_rx_head = next;
    }
  }
}

typedef void (*vector_t)(void);
__attribute__((section(".isr_vector"), used)) const vector_t g_vectors[16 + 95] = {
    (vector_t)(uintptr_t)&_estack,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0, 0, 0, 0,
    Default_Handler,
    Default_Handler,
    0,
    Default_Handler,
    SysTick_Handler,
    [16 + LPUART1_IRQ] = LPUART1_Handler,
};

static void clock_init(void) {
  RCC_APB1ENR1 |= 1u << 28; /* PWREN */
  (void)RCC_APB1ENR1;
  PWR_CR5 &= ~1u;           /* R1MODE = 0: range 1 boost, needed above 80 MHz */
  FLASH_ACR = (FLASH_ACR & ~0xFu) | 5u | (1u << 8) | (1u << 9) | (1u << 10); /* 5 WS, prefetch, I/D cache */
  while ((FLASH_ACR & 0xFu) != 5u) {
  }
  RCC_CR |= 1u << 8; /* HSION */
  while (!(RCC_CR & (1u << 10))) {
  }
  RCC_CR &= ~(1u << 24); /* PLL off while configuring */
  while (RCC_CR & (1u << 25)) {
  }
  /* PLLSRC = HSI16 (2), PLLM = /1 (0), PLLN = 15, PLLR = /2 (0), PLLREN */
  RCC_PLLCFGR = 2u | (0u << 4) | (15u << 8) | (0u << 25) | (1u << 24);
  RCC_CR |= 1u << 24;
  while (!(RCC_CR & (1u << 25))) {
  }
  RCC_CFGR = (RCC_CFGR & ~(0xFu << 4)) | (0x8u << 4); /* AHB /2 during the switch */
  RCC_CFGR = (RCC_CFGR & ~3u) | 3u;                    /* SYSCLK = PLL */
  while (((RCC_CFGR >> 2) & 3u) != 3u) {
  }
  for (volatile int i = 0; i < 200; ++i) {
  } /* >= 1 us at the intermediate speed */
  RCC_CFGR &= ~(0xFu << 4);                            /* AHB /1 */
}

static void uart_init(void) {
  RCC_AHB2ENR |= 1u << 6;  /* GPIOGEN */
  RCC_APB1ENR1 |= 1u << 28;
  PWR_CR2 |= 1u << 9;      /* IOSV: VDDIO2 valid, port G usable */
  RCC_APB1ENR2 |= 1u;      /* LPUART1EN */
  RCC_CCIPR &= ~(3u << 10); /* LPUART1 clock = PCLK1 */
  GPIOG_MODER = (GPIOG_MODER & ~((3u << 14) | (3u << 16))) | (2u << 14) | (2u << 16);
  GPIOG_OSPEEDR |= (3u << 14) | (3u << 16);
  GPIOG_AFRL = (GPIOG_AFRL & ~(0xFu << 28)) | (8u << 28); /* PG7 AF8 */
  GPIOG_AFRH = (GPIOG_AFRH & ~0xFu) | 8u;                  /* PG8 AF8 */
  LPUART_CR1 = 0;
  LPUART_BRR = (uint32_t)(((uint64_t)F_CPU * 256u + UART_BAUD / 2) / UART_BAUD);
  LPUART_CR1 = CR1_TE | CR1_RE | CR1_RXNEIE | CR1_UE;
  NVIC_ISER2 = 1u << (LPUART1_IRQ - 64);
}

void ekd_board_init(void) {
  clock_init();
  uart_init();
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7u;
}

const char *ekd_board_name(void) { return "nucleo-l4r5zi"; }

void ekd_board_putc(char c) {
  while (!(LPUART_ISR & ISR_TXE)) {
  }
  LPUART_TDR = (uint8_t)c;
}

static void put_str(const char *s) {
  while (*s) ekd_board_putc(*s++);
}

int ekd_board_getc(uint32_t timeout_ms) {
  const uint64_t start = ekd_board_ticks();
  const uint64_t limit = (uint64_t)timeout_ms * (F_CPU / 1000u);
  for (;;) {
    __asm volatile("cpsid i" ::: "memory");
    if (g_rx_tail != g_rx_head) {
      uint8_t c = g_rx[g_rx_tail];
      g_rx_tail = (g_rx_tail + 1u) % RX_RING;
      __asm volatile("cpsie i" ::: "memory");
      return c;
    }
    __asm volatile("wfi\n cpsie i" ::: "memory");
    if (timeout_ms && ekd_board_ticks() - start >= limit) return -1;
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

uint32_t ekd_board_tick_hz(void) { return F_CPU; }
uint32_t ekd_board_stack_size(void) { return (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_sstack); }

uint32_t ekd_board_stack_used(void) {
  const uint32_t *p = &_sstack;
  while (p < &_estack && *p == STACK_PAINT) ++p;
  return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

uint32_t ekd_board_ram_bytes(void) { return (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_sram); }

void ekd_board_reset(void) {
  __asm volatile("dsb" ::: "memory");
  SCB_AIRCR = 0x05FA0004u;
  for (;;) {
  }
}
