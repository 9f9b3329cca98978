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

/// A 32-bit free-running timer.
pub struct Clock {
    _private: (),
}

/// Writes a timer register.
fn write(addr: usize, value: u32) {
    // SAFETY: only called with the register addresses of this board's timer, which QEMU maps as
    // device memory; writing them configures the timer and touches no Rust-visible memory.
    unsafe { write_volatile(addr as *mut u32, value) }
}

/// Reads a timer register.
fn read(addr: usize) -> u32 {
    // SAFETY: as for `write`; reads of these registers have no side effect.
    unsafe { read_volatile(addr as *const u32) }
}

/// Instructions in `ticks` timer ticks, rounded to nearest: ticks / (HZ * 1024 ns).
pub fn instructions(ticks: u64) -> u64 {
    let ticks_per_1e9_insns = HZ * 1024; // ticks per instruction, times 1e9
    (ticks * 1_000_000_000 + ticks_per_1e9_insns / 2) / ticks_per_1e9_insns
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

#[cfg(any(icefold_board = "mps2", icefold_board = "mps2_an505"))]
impl Clock {
    const CTRL: usize = TIMER0;
    const VALUE: usize = TIMER0 + 0x4;
    const RELOAD: usize = TIMER0 + 0x8;

    /// Starts the timer counting down from `u32::MAX`, wrapping there.
    pub fn start() -> Clock {
        write(Self::CTRL, 0);
        write(Self::RELOAD, u32::MAX);
        write(Self::VALUE, u32::MAX);
        write(Self::CTRL, 1); // enable
        Clock { _private: () }
    }

    /// The counter now.
    pub fn now(&self) -> u32 {
        read(Self::VALUE)
    }

    /// Ticks from `earlier` to `later` (one wrap allowed).
    pub fn elapsed(earlier: u32, later: u32) -> u32 {
        earlier.wrapping_sub(later)
    }
}

// micro:bit (nRF51822): TIMER0 in 32-bit timer mode at 16 MHz (prescaler 0), an up-counter read
// through a capture task.
#[cfg(icefold_board = "microbit")]
const HZ: u64 = 16_000_000;

#[cfg(icefold_board = "microbit")]
impl Clock {
    const BASE: usize = 0x4000_8000;
    const TASKS_START: usize = Self::BASE;
    const TASKS_STOP: usize = Self::BASE + 0x004;
    const TASKS_CLEAR: usize = Self::BASE + 0x00c;
    const TASKS_CAPTURE0: usize = Self::BASE + 0x040;
    const MODE: usize = Self::BASE + 0x504;
    const BITMODE: usize = Self::BASE + 0x508;
    const PRESCALER: usize = Self::BASE + 0x510;
    const CC0: usize = Self::BASE + 0x540;

    /// Starts the timer counting up from 0 at 16 MHz, 32 bits wide.
    pub fn start() -> Clock {
        write(Self::TASKS_STOP, 1);
        write(Self::MODE, 0); // timer, not counter
        write(Self::BITMODE, 3); // 32 bit
        write(Self::PRESCALER, 0); // 16 MHz
        write(Self::TASKS_CLEAR, 1);
        write(Self::TASKS_START, 1);
        Clock { _private: () }
    }

    /// The counter now.
    pub fn now(&self) -> u32 {
        write(Self::TASKS_CAPTURE0, 1);
        read(Self::CC0)
    }

    /// Ticks from `earlier` to `later` (one wrap allowed).
    pub fn elapsed(earlier: u32, later: u32) -> u32 {
        later.wrapping_sub(earlier)
    }
}
