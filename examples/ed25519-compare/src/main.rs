//! Ed25519 verification on a Cortex-M4F under QEMU, one crate per feature (`compact`,
//! `compact-small` = ed25519-compact with `opt_size`, `salty`, `dalek`; none: the baseline for
//! flash and stack). Prints whether the valid signature verified and a tampered one was refused,
//! the instructions of each verification (the firmware example's timer under `-icount`), and the
//! peak stack. The numbers and the commands are in docs/BENCHMARKS.md (issue #21).
#![no_std]
#![no_main]
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;
#[path = "../../firmware/src/board.rs"]
mod board;
/// The key and signature of `MSG`: RFC 8032 Ed25519 with the secret seed 00 01 .. 1f, made
/// with Python's `cryptography` package.
mod vec;

static MSG: [u8; 16384] = {
    let mut m = [0u8; 16384];
    let mut i = 0;
    while i < m.len() { m[i] = ((i * 7 + 3) % 251) as u8; i += 1; }
    m
};

#[inline(never)]
fn verify(msg: &[u8], pk: &[u8; 32], sig: &[u8; 64]) -> bool {
    #[cfg(feature = "compact")]
    {
        let (Ok(pk), Ok(sig)) = (ed25519_compact::PublicKey::from_slice(pk), ed25519_compact::Signature::from_slice(sig)) else { return false };
        return pk.verify(msg, &sig).is_ok();
    }
    #[cfg(feature = "salty")]
    {
        let Ok(pk) = salty::PublicKey::try_from(pk) else { return false };
        let sig = salty::Signature::from(sig);
        return pk.verify(msg, &sig).is_ok();
    }
    #[cfg(feature = "dalek")]
    {
        let Ok(pk) = ed25519_dalek::VerifyingKey::from_bytes(pk) else { return false };
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        return pk.verify_strict(msg, &sig).is_ok();
    }
    #[allow(unreachable_code)]
    { core::hint::black_box((msg, pk, sig)); false }
}

#[entry]
fn main() -> ! {
    let clock = board::Clock::start();
    let msg = core::hint::black_box(&MSG[..]);
    let t0 = clock.now();
    let ok = verify(msg, &vec::PK, &vec::SIG);
    let t1 = clock.now();
    let mut bad = vec::SIG; bad[3] ^= 1;
    let refused = !verify(msg, &vec::PK, &bad);
    let t2 = clock.now();
    let ok64 = verify(&msg[..64], &vec::PK, &vec::SIG);
    let t3 = clock.now();
    let (stack, _) = stack_peak_bytes();
    hprintln!("ok={} refused={} ok64(expect false)={} verify16k={} tampered16k={} verify64={} stack={}", ok, refused, ok64,
        board::instructions(t1 - t0), board::instructions(t2 - t1), board::instructions(t3 - t2), stack);
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}

fn stack_peak_bytes() -> (usize, usize) {
    extern "C" { static _stack_start: u32; static _stack_end: u32; }
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let bottom = core::ptr::addr_of!(_stack_end) as usize;
    let mut addr = bottom;
    while addr < top {
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE { break; }
        addr += 4;
    }
    (top - addr, top - bottom)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if !board::on_interrupt(irqn) { debug::exit(debug::EXIT_FAILURE); }
}
