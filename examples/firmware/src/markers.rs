//! Marker functions for outside measuring tools: the firmware calls them around each inference
//! and each layer. A QEMU plugin (`icefold mcu`'s cycle counter), a debugger or a trace probe
//! finds them by name in the ELF's symbol table and counts what runs between them.
//!
//! Each is `#[no_mangle]` (a stable name), `#[inline(never)]` (a real call at each site) and has
//! a body no other marker has (one to four `nop`s), so the linker can never fold two of them into
//! one address.

use core::arch::asm;

/// Called right before each inference.
#[no_mangle]
#[inline(never)]
pub extern "C" fn icefold_inference_start() {
    // SAFETY: `nop` reads and writes no memory, register or flag.
    unsafe { asm!("nop", options(nomem, nostack, preserves_flags)) }
}

/// Called right after each inference.
#[no_mangle]
#[inline(never)]
pub extern "C" fn icefold_inference_end() {
    // SAFETY: as above.
    unsafe { asm!("nop", "nop", options(nomem, nostack, preserves_flags)) }
}

/// Called at the start of each layer of a measured inference (from the firmware's observer).
#[no_mangle]
#[inline(never)]
pub extern "C" fn icefold_layer_start() {
    // SAFETY: as above.
    unsafe { asm!("nop", "nop", "nop", options(nomem, nostack, preserves_flags)) }
}

/// Called at the end of each layer of a measured inference (from the firmware's observer).
#[no_mangle]
#[inline(never)]
pub extern "C" fn icefold_layer_end() {
    // SAFETY: as above.
    unsafe { asm!("nop", "nop", "nop", "nop", options(nomem, nostack, preserves_flags)) }
}
