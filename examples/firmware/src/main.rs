//! Profiling firmware: runs an icefold model on every embedded input sample and reports the
//! outputs, the instructions each layer executed and the peak stack over semihosting.
//!
//! Built and run by `icefold mcu` (see docs/MCU.md), which generates `src/generated/` (the model
//! module written by `icefold convert --emit-rust`, and the input samples) and parses the report.
//!
//! # Report (one record per line, on the host's stdout)
//! ```text
//! ICEFOLD-FW 1
//! MODEL layers=<L> arena=<bytes> samples=<S> output_bytes=<B>
//! OUT <sample> <output bytes as lowercase hex, little-endian>
//! LAYER <sample> <layer> <instructions>
//! RUN <sample> <instructions of the whole run_f32 call>
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
use icefold::format::Layer;
use icefold::{Aligned, Model, Observer};
use panic_semihosting as _;

mod board;

#[path = "generated/inputs.rs"]
mod inputs;
#[path = "generated/model.rs"]
mod model;

const OUTPUT_BYTES: usize = model::OUTPUT_LEN * core::mem::size_of::<f32>();

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
    static mut OUTPUTS: [[f32; model::OUTPUT_LEN]; inputs::SAMPLE_COUNT] =
        [[0.0; model::OUTPUT_LEN]; inputs::SAMPLE_COUNT];
    static mut LAYER_TICKS: [[u64; model::LAYER_COUNT]; inputs::SAMPLE_COUNT] =
        [[0; model::LAYER_COUNT]; inputs::SAMPLE_COUNT];
    static mut RUN_TICKS: [u64; inputs::SAMPLE_COUNT] = [0; inputs::SAMPLE_COUNT];

    let model = match Model::new_checked(&model::BLOB.0) {
        Ok(m) => m,
        Err(e) => fail(format_args!("load: {e}")),
    };
    let Ok(samples) = bytemuck::try_cast_slice::<u8, f32>(&inputs::INPUTS.0) else {
        fail(format_args!("inputs: not a whole number of aligned f32"))
    };
    let clock = board::Clock::start();

    // Nothing is printed until every run is done: printing uses more stack than inference, and
    // the stack peak is meant to show what inference needs.
    for (s, x) in samples.chunks_exact(inputs::SAMPLE_LEN).enumerate() {
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
        let start = clock.now();
        let result = model.run_f32_observed(&mut ARENA.0, x, out, &mut timer);
        *run_ticks = clock.now() - start;
        if let Err(e) = result {
            fail(format_args!("sample {s}: {e}"));
        }
    }
    let stack = stack_peak_bytes();

    hprintln!("ICEFOLD-FW 1");
    hprintln!(
        "MODEL layers={} arena={} samples={} output_bytes={}",
        model::LAYER_COUNT,
        model::ARENA_BYTES,
        inputs::SAMPLE_COUNT,
        OUTPUT_BYTES
    );
    for (s, out) in OUTPUTS.iter().enumerate() {
        print_hex_line(s, bytemuck::cast_slice(out));
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
fn stack_peak_bytes() -> usize {
    extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut addr = core::ptr::addr_of!(_stack_end) as usize;
    while addr < top {
        // SAFETY: every word between the linker symbols `_stack_end` and `_stack_start` is RAM
        // reserved for the stack; a volatile read of an aligned word there has no side effect.
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        addr += 4;
    }
    top - addr
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
