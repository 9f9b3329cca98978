//! The smallest useful firmware: load the embedded model (`ICEFOLD_BLOB` at build time), run it
//! once, halt. No report, no formatting, `panic-halt`: its code size is the flash the runtime
//! (loader, engine, the kernels the model can reach) costs a product (issue #19). The element
//! types at the boundary come from `ICEFOLD_IO` at build time (`f32`, or `i8`/`i16` for the input
//! and output of an int8 model run with `run_i8`, e.g. `i16,i16` for the default conversion).
//! It links only the kernels the model runs: build.rs computes the set from the blob
//! (`ICEFOLD_KERNELS=all` links every kernel, as a firmware for unknown models must).

#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use icefold::{Aligned, Model};
use panic_halt as _;

static BLOB: Aligned<[u8; include_bytes!(concat!(env!("OUT_DIR"), "/model.icefold")).len()]> =
    Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.icefold")));

include!(concat!(env!("OUT_DIR"), "/io.rs"));
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Arena bytes (the largest MLPerf Tiny arena, 110,592 bytes, fits the MPS2 boards' RAM).
const ARENA_BYTES: usize = 112 * 1024;
/// Input and output elements at most (MobileNetV1's 96x96x3 input).
const IO_ELEMENTS: usize = 96 * 96 * 3;

#[entry]
fn main() -> ! {
    static mut ARENA: Aligned<[u8; ARENA_BYTES]> = Aligned([0; ARENA_BYTES]);
    static mut INPUT: [In; IO_ELEMENTS] = [ZERO_IN; IO_ELEMENTS];
    static mut OUTPUT: [Out; IO_ELEMENTS] = [ZERO_OUT; IO_ELEMENTS];
    if let Ok(model) = Model::<ModelKernels>::new_checked_with_kernels(&BLOB.0) {
        let (n_in, n_out) = (model.input().len(), model.output().len());
        if let (Some(input), Some(output)) = (INPUT.get_mut(..n_in), OUTPUT.get_mut(..n_out)) {
            // The compiler must not know the input (it would fold what it can of the run).
            let input = black_box(input);
            black_box(run(&model, &mut ARENA.0, input, output).is_ok());
        }
    }
    #[allow(clippy::empty_loop)]
    loop {}
}
