//! Profiling firmware: runs an icefold model on every embedded input sample and reports the
//! outputs, the instructions each layer executed and the peak stack over semihosting.
//!
//! f32 models run with `run_f32_observed` on f32 samples. int8 models run with
//! `run_i8_observed` on samples the host already quantized (with the runtime's own
//! `icefold::engine::quantize`), and report the raw int8 output bytes: that is the integer path
//! a product calls, and the bytes the host compares for identity.
//!
//! Built and run by `icefold mcu` (see docs/MCU.md), which generates `src/generated/` (the model
//! module written by `icefold convert --emit-rust`, and the input samples) and parses the report.
//!
//! # Report (one record per line, on the host's stdout)
//! ```text
//! ICEFOLD-FW 1
//! MODEL layers=<L> arena=<bytes> samples=<S> output_bytes=<B> elements=<f32|i8>
//! OUT <sample> <output bytes as lowercase hex, little-endian f32 or raw i8>
//! LAYER <sample> <layer> <instructions>
//! RUN <sample> <instructions of the whole run_f32_observed / run_i8_observed call>
//! STACK <peak stack bytes>
//! DONE
//! ```
//! A failure prints `ERR <message>` (or a panic/fault message) and exits with status 1.
//!
//! Instructions are counted with a hardware timer under QEMU's `-icount shift=10`, where every
//! instruction advances virtual time by exactly 1024 ns (see `board`). Counts include the few
//! instructions of the timer reads around each layer.
#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hio, hprintln};
use icefold::format::{DType, Layer};
use icefold::{Aligned, Model, Observer};
use panic_semihosting as _;

mod board;

#[path = "generated/inputs.rs"]
mod inputs;
#[path = "generated/model.rs"]
mod model;

/// The model runs on int8 boundaries (`run_i8`); otherwise on f32 (`run_f32`). The host embeds
/// inputs of the matching element type and refuses models whose input and output types differ.
const INT8: bool = matches!(model::INPUT_DTYPE, DType::I8);

/// Bytes of one output element: 1 for int8, 4 for f32.
const OUTPUT_ELEMENT_BYTES: usize = if INT8 { 1 } else { core::mem::size_of::<f32>() };

const OUTPUT_BYTES: usize = model::OUTPUT_LEN * OUTPUT_ELEMENT_BYTES;

/// Times each layer through the runtime's observer hooks.
struct LayerClock<'a> {
    clock: &'a board::Clock,
    layer_start: u64,
    per_layer: &'a mut [u64],
}

impl Observer for LayerClock<'_> {
    fn layer_start(&mut self, _index: u16, _layer: &Layer) {
        self.layer_start = self.clock.now();
    }

    fn layer_end(&mut self, index: u16, _layer: &Layer, _output: &[u8]) {
        let end = self.clock.now();
        if let Some(slot) = self.per_layer.get_mut(usize::from(index)) {
            *slot = end - self.layer_start;
        }
    }
}

#[entry]
fn main() -> ! {
    // `#[entry]` turns these into `&'static mut` references: safe, and the buffers live in .bss
    // instead of being built on the stack (which would also distort the stack measurement).
    static mut ARENA: Aligned<[u8; model::ARENA_BYTES]> = Aligned([0; model::ARENA_BYTES]);
    // Raw output bytes per sample, aligned so they can be viewed as f32.
    static mut OUTPUTS: [Aligned<[u8; OUTPUT_BYTES]>; inputs::SAMPLE_COUNT] =
        [Aligned([0; OUTPUT_BYTES]); inputs::SAMPLE_COUNT];
    static mut LAYER_TICKS: [[u64; model::LAYER_COUNT]; inputs::SAMPLE_COUNT] =
        [[0; model::LAYER_COUNT]; inputs::SAMPLE_COUNT];
    static mut RUN_TICKS: [u64; inputs::SAMPLE_COUNT] = [0; inputs::SAMPLE_COUNT];

    let model = match Model::new_checked(&model::BLOB.0) {
        Ok(m) => m,
        Err(e) => fail(format_args!("load: {e}")),
    };
    let input_element_bytes = if INT8 { 1 } else { core::mem::size_of::<f32>() };
    let sample_bytes = inputs::SAMPLE_LEN * input_element_bytes;
    if sample_bytes == 0 || OUTPUT_BYTES == 0 {
        fail(format_args!("model with empty input or output"));
    }
    let clock = board::Clock::start();

    // Nothing is printed until every run is done: printing uses more stack than inference, and
    // the stack peak is meant to show what inference needs.
    for (s, x) in inputs::INPUTS.0.chunks_exact(sample_bytes).enumerate() {
        let (Some(out), Some(layer_ticks), Some(run_ticks)) = (
            OUTPUTS.get_mut(s),
            LAYER_TICKS.get_mut(s),
            RUN_TICKS.get_mut(s),
        ) else {
            break;
        };
        let mut timer = LayerClock {
            clock: &clock,
            layer_start: 0,
            per_layer: layer_ticks,
        };
        let out = &mut out.0[..];
        let result = if INT8 {
            let x: &[i8] = bytemuck::cast_slice(x);
            let out: &mut [i8] = bytemuck::cast_slice_mut(out);
            let start = clock.now();
            let result = model.run_i8_observed(&mut ARENA.0, x, out, &mut timer);
            *run_ticks = clock.now() - start;
            result
        } else {
            // Samples start at multiples of 4 bytes of a 16-aligned array; outputs are aligned.
            let (Ok(x), Ok(out)) = (
                bytemuck::try_cast_slice::<u8, f32>(x),
                bytemuck::try_cast_slice_mut::<u8, f32>(out),
            ) else {
                fail(format_args!("sample {s}: f32 buffers not aligned"))
            };
            let start = clock.now();
            let result = model.run_f32_observed(&mut ARENA.0, x, out, &mut timer);
            *run_ticks = clock.now() - start;
            result
        };
        if let Err(e) = result {
            fail(format_args!("sample {s}: {e}"));
        }
    }
    let (stack, stack_region) = stack_peak_bytes();
    if stack >= stack_region {
        // The stack reached the statics below it, so it may have overwritten the arena.
        fail(format_args!(
            "stack overflow: inference used all {stack_region} bytes of RAM left for the stack"
        ));
    }

    hprintln!("ICEFOLD-FW 1");
    hprintln!(
        "MODEL layers={} arena={} samples={} output_bytes={} elements={}",
        model::LAYER_COUNT,
        model::ARENA_BYTES,
        inputs::SAMPLE_COUNT,
        OUTPUT_BYTES,
        if INT8 { "i8" } else { "f32" }
    );
    for (s, out) in OUTPUTS.iter().enumerate() {
        print_hex_line(s, &out.0);
    }
    for (s, (layers, run)) in LAYER_TICKS.iter().zip(RUN_TICKS.iter()).enumerate() {
        for (i, &t) in layers.iter().enumerate() {
            hprintln!("LAYER {} {} {}", s, i, board::instructions(t));
        }
        hprintln!("RUN {} {}", s, board::instructions(*run));
    }
    hprintln!("STACK {}", stack);
    hprintln!("DONE");
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}

/// `OUT <sample> <hex>`, written in chunks (one semihosting call per chunk, not per byte).
fn print_hex_line(sample: usize, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let Ok(mut out) = hio::hstdout() else { return };
    let _ = write!(out, "OUT {sample} ");
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(buf.len() / 2) {
        for (pair, &b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        let _ = out.write_all(&buf[..chunk.len() * 2]);
    }
    let _ = out.write_all(b"\n");
}

/// Highest stack use since reset: cortex-m-rt's `paint-stack` filled the stack with
/// `STACK_PAINT_VALUE`; the lowest word that changed marks the deepest the stack went.
/// Returns the peak and the size of the stack region.
fn stack_peak_bytes() -> (usize, usize) {
    extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let bottom = core::ptr::addr_of!(_stack_end) as usize;
    let mut addr = bottom;
    while addr < top {
        // SAFETY: every word between the linker symbols `_stack_end` and `_stack_start` is RAM
        // reserved for the stack; a volatile read of an aligned word there has no side effect.
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        addr += 4;
    }
    (top - addr, top - bottom)
}

/// Reports `ERR <message>` and exits with failure.
fn fail(message: core::fmt::Arguments) -> ! {
    hprintln!("ERR {}", message);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if !board::on_interrupt(irqn) {
        fail(format_args!("unexpected interrupt {irqn}"));
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("ERR hard fault at pc={:#010x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
