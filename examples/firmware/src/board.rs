//! The QEMU board's free-running timer, used to count instructions.
//!
//! QEMU emulates no cycle counter (DWT CYCCNT reads 0). Under `-icount shift=10,align=off` every
//! executed instruction advances virtual time by exactly 2^10 ns, so a timer clocked at `HZ`
//! advances `HZ * 1024e-9` ticks per instruction and a tick count converts back to an exact
//! instruction count (the timer's ±1 tick of phase is far below one instruction's ticks).
//! Each measurement includes the few instructions of the timer reads themselves.
//!
//! Which timer depends on the board the build script picked for the target (`icefold_board`).

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

/// The board's 32-bit timer, extended to 64 bits by counting its wraps in an interrupt, so a
/// single layer may run for any number of instructions (one 32-bit period is only ~167 M
/// instructions on the MPS2 boards). The few instructions of each wrap interrupt are counted in
/// the layer they interrupt.
pub struct Clock {
    _private: (),
}

/// Timer wraps so far; written only by the timer interrupt (load/store atomics exist on ARMv6-M).
static WRAPS: AtomicU32 = AtomicU32::new(0);

/// Writes a timer register.
fn write(addr: usize, value: u32) {
    // SAFETY: only called with the register addresses of this board's timer and NVIC, which QEMU
    // maps as device memory; writing them touches no Rust-visible memory.
    unsafe { write_volatile(addr as *mut u32, value) }
}

/// Reads a timer register.
fn read(addr: usize) -> u32 {
    // SAFETY: as for `write`; reads of these registers have no side effect.
    unsafe { read_volatile(addr as *const u32) }
}

/// NVIC interrupt set-enable register 0.
const NVIC_ISER0: usize = 0xE000_E100;

impl Clock {
    /// Ticks since `start`, 64 bits wide.
    pub fn now(&self) -> u64 {
        loop {
            let before = WRAPS.load(Ordering::Acquire);
            let count = counter();
            let pending = wrap_pending();
            if WRAPS.load(Ordering::Acquire) != before {
                continue; // the interrupt ran in between: read again
            }
            // A wrap whose interrupt has not run yet shows as a pending flag with the counter
            // already past it (in the lower half again).
            let unserviced = u64::from(pending && count < 1 << 31);
            return ((u64::from(before) + unserviced) << 32) | u64::from(count);
        }
    }
}

/// Called from `DefaultHandler` for every interrupt; true if it was the timer's.
pub fn on_interrupt(irqn: i16) -> bool {
    if irqn != TIMER_IRQ {
        return false;
    }
    clear_wrap();
    WRAPS.store(WRAPS.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
    true
}

/// Instructions in `ticks` timer ticks, rounded to nearest: ticks / (HZ * 1024 ns).
pub fn instructions(ticks: u64) -> u64 {
    // u128: ticks * 1e9 overflows u64 beyond ~720 M instructions.
    let ticks_per_1e9_insns = u128::from(HZ) * 1024; // ticks per instruction, times 1e9
    let insns = (u128::from(ticks) * 1_000_000_000 + ticks_per_1e9_insns / 2) / ticks_per_1e9_insns;
    u64::try_from(insns).unwrap_or(u64::MAX)
}

// MPS2 AN385/AN386: CMSDK APB Timer0, a 32-bit down-counter on the 25 MHz system clock.
#[cfg(icefold_board = "mps2")]
const TIMER0: usize = 0x4000_0000;
#[cfg(icefold_board = "mps2")]
const HZ: u64 = 25_000_000;
// MPS2 AN505 (SSE-200): the same CMSDK timer through its secure alias (the firmware runs in the
// secure state), on the 20 MHz main clock. The rate was checked against QEMU's instruction-counting
// plugin: with 25 MHz assumed, counts came out 0.8 times the plugin's.
#[cfg(icefold_board = "mps2_an505")]
const TIMER0: usize = 0x5000_0000;
#[cfg(icefold_board = "mps2_an505")]
const HZ: u64 = 20_000_000;

#[cfg(icefold_board = "mps2")]
const TIMER_IRQ: i16 = 8;
#[cfg(icefold_board = "mps2_an505")]
const TIMER_IRQ: i16 = 3;

#[cfg(any(icefold_board = "mps2", icefold_board = "mps2_an505"))]
mod regs {
    pub const CTRL: usize = super::TIMER0;
    pub const VALUE: usize = super::TIMER0 + 0x4;
    pub const RELOAD: usize = super::TIMER0 + 0x8;
    pub const INTSTATUS: usize = super::TIMER0 + 0xc; // write 1 to clear
}

/// Counts up (the CMSDK timer counts down from `u32::MAX`).
#[cfg(any(icefold_board = "mps2", icefold_board = "mps2_an505"))]
fn counter() -> u32 {
    u32::MAX - read(regs::VALUE)
}

#[cfg(any(icefold_board = "mps2", icefold_board = "mps2_an505"))]
fn wrap_pending() -> bool {
    read(regs::INTSTATUS) & 1 != 0
}

#[cfg(any(icefold_board = "mps2", icefold_board = "mps2_an505"))]
fn clear_wrap() {
    write(regs::INTSTATUS, 1);
}

#[cfg(any(icefold_board = "mps2", icefold_board = "mps2_an505"))]
impl Clock {
    /// Starts the timer counting down from `u32::MAX`, reloading there with an interrupt.
    pub fn start() -> Clock {
        write(regs::CTRL, 0);
        write(regs::RELOAD, u32::MAX);
        write(regs::VALUE, u32::MAX);
        clear_wrap();
        write(NVIC_ISER0, 1 << TIMER_IRQ);
        write(regs::CTRL, 1 | 1 << 3); // enable, interrupt on reload
        Clock { _private: () }
    }
}

// micro:bit (nRF51822): TIMER0 in 32-bit timer mode at 16 MHz (prescaler 0), an up-counter read
// through a capture task.
#[cfg(icefold_board = "microbit")]
const HZ: u64 = 16_000_000;

#[cfg(icefold_board = "microbit")]
const TIMER_IRQ: i16 = 8;

#[cfg(icefold_board = "microbit")]
mod regs {
    const BASE: usize = 0x4000_8000;
    pub const TASKS_START: usize = BASE;
    pub const TASKS_STOP: usize = BASE + 0x004;
    pub const TASKS_CLEAR: usize = BASE + 0x00c;
    pub const TASKS_CAPTURE0: usize = BASE + 0x040;
    pub const EVENTS_COMPARE1: usize = BASE + 0x144;
    pub const INTENSET: usize = BASE + 0x304;
    pub const MODE: usize = BASE + 0x504;
    pub const BITMODE: usize = BASE + 0x508;
    pub const PRESCALER: usize = BASE + 0x510;
    pub const CC0: usize = BASE + 0x540;
    pub const CC1: usize = BASE + 0x544;
}

#[cfg(icefold_board = "microbit")]
fn counter() -> u32 {
    write(regs::TASKS_CAPTURE0, 1);
    read(regs::CC0)
}

#[cfg(icefold_board = "microbit")]
fn wrap_pending() -> bool {
    read(regs::EVENTS_COMPARE1) != 0
}

#[cfg(icefold_board = "microbit")]
fn clear_wrap() {
    write(regs::EVENTS_COMPARE1, 0);
}

#[cfg(icefold_board = "microbit")]
impl Clock {
    /// Starts the timer counting up from 0 at 16 MHz, 32 bits wide, with an interrupt at the
    /// last count before each wrap (compare channel 1).
    pub fn start() -> Clock {
        write(regs::TASKS_STOP, 1);
        write(regs::MODE, 0); // timer, not counter
        write(regs::BITMODE, 3); // 32 bit
        write(regs::PRESCALER, 0); // 16 MHz
        write(regs::CC1, u32::MAX);
        clear_wrap();
        write(regs::INTENSET, 1 << 17); // COMPARE[1]
        write(NVIC_ISER0, 1 << TIMER_IRQ);
        write(regs::TASKS_CLEAR, 1);
        write(regs::TASKS_START, 1);
        Clock { _private: () }
    }
}
