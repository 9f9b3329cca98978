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
//! # Transport
//! The default feature `text-report` prints these records as text over semihosting. The `defmt`
//! feature sends the same records as defmt frames (`OUT` split into several records of the same
//! sample, concatenated by the host), then the runtime's per-layer trace of sample 0
//! (`icefold::trace::DefmtTrace`, `TRACE ...` records) before `STACK`; the host decodes the frames
//! with the ELF's defmt table (`icefold mcu --defmt`). This is how a product logs on a real board,
//! with `defmt-rtt` in place of `defmt-semihosting`.
//!
//! Instructions are counted with a hardware timer under QEMU's `-icount shift=10`, where every
//! instruction advances virtual time by exactly 1024 ns (see `board`). Counts include the few
//! instructions of the timer reads around each layer.
//!
//! Each timed inference is bracketed by calls to `icefold_inference_start` and
//! `icefold_inference_end`, and each of its layers by `icefold_layer_start` and
//! `icefold_layer_end` (see `markers`): `icefold mcu`'s QEMU plugin counts instructions and
//! estimated Cortex-M4 cycles between them, and other tools (a debugger, a trace probe) can too.
#![no_std]
#![no_main]

#[cfg(all(feature = "text-report", feature = "defmt"))]
compile_error!(
    "features `text-report` and `defmt` share the semihosting stream: build with \
     `--no-default-features --features defmt` for defmt"
);
#[cfg(not(any(feature = "text-report", feature = "defmt")))]
compile_error!("enable one report transport: `text-report` (default) or `defmt`");

use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::debug;
use icefold::format::{DType, Layer};
use icefold::{Aligned, Model, Observer};

/// The kernels the firmware links: every kernel of the runtime, or (feature `model-kernels`)
/// only its model's, the generated `model::ModelKernels` (`icefold mcu` builds that for the
/// micro:bit, whose 256 KiB of flash the whole soft-float runtime nearly fills).
#[cfg(feature = "model-kernels")]
type Linked = model::ModelKernels;
#[cfg(not(feature = "model-kernels"))]
type Linked = icefold::engine::DefaultKernels;
/// The model as the firmware loads it.
type Runtime<'a> = Model<'a, Linked>;
#[cfg(feature = "text-report")]
use panic_semihosting as _;
// The defmt global logger: frames go out over semihosting. It takes a critical section, which
// cortex-m provides (feature `critical-section-single-core`) once the crate is linked in.
#[cfg(feature = "defmt")]
use cortex_m as _;
#[cfg(feature = "defmt")]
use defmt_semihosting as _;

/// One record of the report: a text line over semihosting. The format strings are kept valid for
/// both `core::fmt` and defmt (`{}` and `{:#x}` only).
#[cfg(feature = "text-report")]
macro_rules! record {
    ($($arg:tt)*) => { cortex_m_semihosting::hprintln!($($arg)*) };
}

/// One record of the report: a defmt frame the host decodes to the same text as `text-report`.
#[cfg(feature = "defmt")]
macro_rules! record {
    ($($arg:tt)*) => { defmt::println!($($arg)*) };
}

/// Reports `ERR <message>` and exits with failure.
macro_rules! fail {
    ($($arg:tt)*) => {{
        record!($($arg)*);
        exit_failure()
    }};
}

mod board;
mod markers;

#[path = "generated/inputs.rs"]
mod inputs;
#[path = "generated/model.rs"]
mod model;
/// `PUBLIC_KEY`: the key the firmware trusts (feature `signed`).
#[cfg(feature = "signed")]
#[path = "generated/key.rs"]
mod key;

/// The model runs on integer boundaries (`run_i8`); otherwise on f32 (`run_f32`). The host embeds
/// inputs of the matching element type.
const INT8: bool = !matches!(model::INPUT_DTYPE, DType::F32);

/// An int8 model whose first convolutions read an int16 input (`run_i8` from an `[i16]`).
const WIDE_INPUT: bool = matches!(model::INPUT_DTYPE, DType::I16);

/// An int8 model whose dense last layer writes int16 (`run_i8` into an `[i16]`).
const WIDE_OUTPUT: bool = matches!(model::OUTPUT_DTYPE, DType::I16);

/// Bytes of one output element: 1 for int8, 2 for int16, 4 for f32.
const OUTPUT_ELEMENT_BYTES: usize = model::OUTPUT_DTYPE.size();

const OUTPUT_BYTES: usize = model::OUTPUT_LEN * OUTPUT_ELEMENT_BYTES;

/// `run_i8_observed` with the raw input viewed as `I` and the raw output as `O` (`i8`, or `i16`
/// for an int16 input or output); `None` if a buffer is not aligned for its type (they are:
/// samples start at even offsets of a 16-aligned array, outputs are 16-aligned).
fn run_raw<I: icefold::RawElement, O: icefold::RawElement>(
    model: &Runtime<'_>,
    arena: &mut [u8],
    x: &[u8],
    out: &mut [u8],
    observer: &mut impl Observer,
) -> Option<Result<(), icefold::RunError>> {
    let x = bytemuck::try_cast_slice::<u8, I>(x).ok()?;
    let out = bytemuck::try_cast_slice_mut::<u8, O>(out).ok()?;
    Some(model.run_i8_observed(arena, x, out, observer))
}

/// [`run_raw`] with the element types of this model's input and output.
fn run_int(
    model: &Runtime<'_>,
    arena: &mut [u8],
    x: &[u8],
    out: &mut [u8],
    observer: &mut impl Observer,
) -> Option<Result<(), icefold::RunError>> {
    match (WIDE_INPUT, WIDE_OUTPUT) {
        (false, false) => run_raw::<i8, i8>(model, arena, x, out, observer),
        (false, true) => run_raw::<i8, i16>(model, arena, x, out, observer),
        (true, false) => run_raw::<i16, i8>(model, arena, x, out, observer),
        (true, true) => run_raw::<i16, i16>(model, arena, x, out, observer),
    }
}

/// Times each layer through the runtime's observer hooks.
struct LayerClock<'a> {
    clock: &'a board::Clock,
    layer_start: u64,
    per_layer: &'a mut [u64],
}

impl Observer for LayerClock<'_> {
    fn layer_start(&mut self, _index: u16, _layer: &Layer) {
        self.layer_start = self.clock.now();
        markers::icefold_layer_start();
    }

    fn layer_end(&mut self, index: u16, _layer: &Layer, _output: &[u8]) {
        markers::icefold_layer_end();
        let end = self.clock.now();
        if let Some(slot) = self.per_layer.get_mut(usize::from(index)) {
            *slot = end - self.layer_start;
        }
    }
}

/// Two observers in one run (the layer clock and, with `drift`, the clamp counter).
#[cfg(feature = "drift")]
struct Both<'a, A, B>(&'a mut A, &'a mut B);

#[cfg(feature = "drift")]
impl<A: Observer, B: Observer> Observer for Both<'_, A, B> {
    fn layer_start(&mut self, index: u16, layer: &Layer) {
        self.0.layer_start(index, layer);
        self.1.layer_start(index, layer);
    }

    fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
        // The counter first: the clock's end mark then includes the counting, so the profile
        // shows what drift monitoring costs.
        self.1.layer_end(index, layer, output);
        self.0.layer_end(index, layer, output);
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
    #[cfg(feature = "drift")]
    static mut CLAMPS: [icefold::observe::LayerClamps; model::LAYER_COUNT] =
        [icefold::observe::LayerClamps {
            values: 0,
            low: 0,
            high: 0,
        }; model::LAYER_COUNT];

    #[cfg(feature = "signed")]
    static mut BLOB_COPY: Aligned<[u8; model::BLOB_BYTES]> = Aligned([0; model::BLOB_BYTES]);

    // With `signed`, the model is the one `new_signed` returns: nothing runs unless the vendor's
    // key verifies the blob.
    #[cfg(feature = "signed")]
    let (loaded, signed) = signed::check(&model::BLOB.0, &mut BLOB_COPY.0);
    #[cfg(not(feature = "signed"))]
    let loaded = Runtime::new_checked_with_kernels(&model::BLOB.0);
    let model = match loaded {
        Ok(m) => m,
        Err(e) => fail!("ERR load: {}", e),
    };
    let input_element_bytes = model::INPUT_DTYPE.size();
    let sample_bytes = inputs::SAMPLE_LEN * input_element_bytes;
    if sample_bytes == 0 || OUTPUT_BYTES == 0 {
        fail!("ERR model with empty input or output");
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
        let mut clock_only = LayerClock {
            clock: &clock,
            layer_start: 0,
            per_layer: layer_ticks,
        };
        #[cfg(feature = "drift")]
        let mut counter = icefold::observe::ClampCounter::new(&mut CLAMPS[..]);
        #[cfg(feature = "drift")]
        let mut timer = Both(&mut clock_only, &mut counter);
        #[cfg(not(feature = "drift"))]
        let timer = &mut clock_only;
        #[cfg(feature = "drift")]
        let timer = &mut timer;
        let out = &mut out.0[..];
        let result = if INT8 {
            let start = clock.now();
            markers::icefold_inference_start();
            let result = run_int(&model, &mut ARENA.0, x, out, timer);
            markers::icefold_inference_end();
            *run_ticks = clock.now() - start;
            let Some(result) = result else {
                fail!("ERR sample {}: input or output buffer not aligned", s)
            };
            result
        } else {
            // Samples start at multiples of 4 bytes of a 16-aligned array; outputs are aligned.
            let (Ok(x), Ok(out)) = (
                bytemuck::try_cast_slice::<u8, f32>(x),
                bytemuck::try_cast_slice_mut::<u8, f32>(out),
            ) else {
                fail!("ERR sample {}: f32 buffers not aligned", s)
            };
            let start = clock.now();
            markers::icefold_inference_start();
            // The checked run refuses a NaN or infinite input element (bad sensor data) before
            // computing; `icefold mcu --allow-nonfinite` builds the run that lets it through.
            let result = if inputs::ALLOW_NONFINITE {
                model.run_f32_allowing_nonfinite_observed(&mut ARENA.0, x, out, timer)
            } else {
                model.run_f32_observed(&mut ARENA.0, x, out, timer)
            };
            markers::icefold_inference_end();
            *run_ticks = clock.now() - start;
            result
        };
        if let Err(e) = result {
            fail!("ERR sample {}: {}", s, e);
        }
    }
    let (stack, stack_region) = stack_peak_bytes();
    if stack >= stack_region {
        // The stack reached the statics below it, so it may have overwritten the arena.
        fail!(
            "ERR stack overflow: inference used all {} bytes of RAM left for the stack",
            stack_region
        );
    }

    record!("ICEFOLD-FW 1");
    record!(
        "MODEL layers={} arena={} samples={} output_bytes={} elements={}",
        model::LAYER_COUNT,
        model::ARENA_BYTES,
        inputs::SAMPLE_COUNT,
        OUTPUT_BYTES,
        match model::OUTPUT_DTYPE {
            DType::F32 => "f32",
            DType::I8 => "i8",
            DType::I16 => "i16",
        }
    );
    #[cfg(feature = "signed")]
    record!(
        "SIGNED verify={} checked={} stack={} tampered={} truncated={} unsigned={}",
        board::instructions(signed.verify_ticks),
        board::instructions(signed.checked_ticks),
        signed.stack,
        signed.tampered,
        signed.truncated,
        signed.unsigned
    );
    for (s, out) in OUTPUTS.iter().enumerate() {
        report_output(s, &out.0);
    }
    for (s, (layers, run)) in LAYER_TICKS.iter().zip(RUN_TICKS.iter()).enumerate() {
        for (i, &t) in layers.iter().enumerate() {
            record!("LAYER {} {} {}", s, i, board::instructions(t));
        }
        record!("RUN {} {}", s, board::instructions(*run));
    }
    #[cfg(feature = "defmt")]
    if let Some(out) = OUTPUTS.get_mut(0) {
        trace_first_sample(&model, &mut ARENA.0, &mut out.0, sample_bytes);
    }
    // What a device in the field sends home (here over semihosting or defmt; on a board over
    // defmt-rtt or a radio): per layer, how many values were clamped since the last report. The
    // host compares the fractions with the calibration data's (`icefold run --calib`).
    #[cfg(feature = "drift")]
    for (i, c) in CLAMPS.iter().enumerate() {
        if c.values > 0 {
            record!("DRIFT {} {} {} {}", i, c.values, c.low, c.high);
        }
    }
    record!("STACK {}", stack);
    record!("DONE");
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `buf` (two digits per byte) and returns the digits.
fn hex<'b>(bytes: &[u8], buf: &'b mut [u8]) -> &'b [u8] {
    let mut n = 0;
    for (pair, &b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
        n += 2;
    }
    &buf[..n]
}

/// `OUT <sample> <hex>`, written in chunks (one semihosting call per chunk, not per byte).
#[cfg(feature = "text-report")]
fn report_output(sample: usize, bytes: &[u8]) {
    use core::fmt::Write as _;
    let Ok(mut out) = cortex_m_semihosting::hio::hstdout() else {
        return;
    };
    let _ = write!(out, "OUT {sample} ");
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(buf.len() / 2) {
        let _ = out.write_all(hex(chunk, &mut buf));
    }
    let _ = out.write_all(b"\n");
}

/// `OUT <sample> <hex>` records of at most 64 bytes each; the host concatenates a sample's records.
#[cfg(feature = "defmt")]
fn report_output(sample: usize, bytes: &[u8]) {
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(buf.len() / 2) {
        // Hex digits are ASCII, so the conversion cannot fail.
        let digits = core::str::from_utf8(hex(chunk, &mut buf)).unwrap_or("");
        defmt::println!("OUT {=usize} {=str}", sample, digits);
    }
}

/// Runs sample 0 again with the runtime's per-layer trace (one `TRACE` record per layer). This
/// runs after the timed runs and the stack measurement, so the trace costs neither.
#[cfg(feature = "defmt")]
fn trace_first_sample(model: &Runtime<'_>, arena: &mut [u8], out: &mut [u8], sample_bytes: usize) {
    let Some(x) = inputs::INPUTS.0.get(..sample_bytes) else {
        return;
    };
    let mut trace = icefold::trace::DefmtTrace;
    let result = if INT8 {
        let result = run_int(model, arena, x, out, &mut trace);
        match result {
            Some(result) => result,
            None => fail!("ERR trace: input or output buffer not aligned"),
        }
    } else {
        match (
            bytemuck::try_cast_slice::<u8, f32>(x),
            bytemuck::try_cast_slice_mut::<u8, f32>(out),
        ) {
            (Ok(x), Ok(out)) => model.run_f32_observed(arena, x, out, &mut trace),
            _ => fail!("ERR trace: f32 buffers not aligned"),
        }
    };
    if let Err(e) = result {
        fail!("ERR trace: {}", e);
    }
}

/// Signed loading (feature `signed`): the cost of `Model::new_signed`, and three altered copies
/// of the blob it must refuse.
#[cfg(feature = "signed")]
mod signed {
    use icefold::{LoadError, Model};

    // `fail!` calls it unqualified.
    use crate::exit_failure;

    /// What [`check`] measured and saw.
    pub struct Check {
        /// Timer ticks of `Model::new_signed` on the embedded blob.
        pub verify_ticks: u64,
        /// Timer ticks of `Model::new_checked` on the same blob (no signature check).
        pub checked_ticks: u64,
        /// Peak stack of the verification, in bytes.
        pub stack: usize,
        /// How the blob with one weight byte changed was refused.
        pub tampered: &'static str,
        /// How the blob with its last byte cut off was refused.
        pub truncated: &'static str,
        /// How the blob without its signature (flag cleared, trailer cut) was refused.
        pub unsigned: &'static str,
    }

    fn name(result: Result<Model<'_>, LoadError>) -> &'static str {
        match result {
            Ok(_) => "ACCEPTED",
            Err(LoadError::SignatureInvalid) => "SignatureInvalid",
            Err(LoadError::SignatureTruncated) => "SignatureTruncated",
            Err(LoadError::Unsigned) => "Unsigned",
            Err(_) => "other",
        }
    }

    /// Verifies `blob` with the trusted key, timed and with its own stack measurement, checks
    /// altered copies in `copy` (a copy that loads fails the firmware), paints the stack again,
    /// and times `new_checked` on `blob` for comparison.
    // Not inlined: its frame (the verifier's buffers) must not become part of `main`'s, or
    // the inference's stack peak would include it.
    #[inline(never)]
    pub fn check<'b>(
        blob: &'b [u8],
        copy: &mut [u8],
    ) -> (Result<crate::Runtime<'b>, LoadError>, Check) {
        let clock = crate::board::Clock::start();
        let start = clock.now();
        let loaded = crate::Runtime::new_signed_with_kernels(blob, &crate::key::PUBLIC_KEY);
        let verify_ticks = clock.now() - start;
        let (stack, _) = crate::stack_peak_bytes();
        copy.copy_from_slice(blob);
        let n = copy.len();
        copy[n / 2] ^= 0x10;
        let tampered = name(Model::new_signed(copy, &crate::key::PUBLIC_KEY));
        copy[n / 2] ^= 0x10;
        let truncated = name(Model::new_signed(&copy[..n - 1], &crate::key::PUBLIC_KEY));
        copy[6] &= !1; // header flag SIGNED
        let trailer = icefold::format::signature::TRAILER_LEN;
        let unsigned = name(Model::new_signed(&copy[..n - trailer], &crate::key::PUBLIC_KEY));
        if [tampered, truncated, unsigned].contains(&"ACCEPTED") {
            fail!(
                "ERR signed: an altered blob was accepted (tampered {} truncated {} unsigned {})",
                tampered,
                truncated,
                unsigned
            );
        }
        // The stack peak reported as `STACK` is then, as without `signed`, that of `new_checked`
        // and the inference.
        crate::repaint_stack();
        let start = clock.now();
        let checked = Model::new_checked(blob).is_ok();
        let checked_ticks = clock.now() - start;
        if !checked {
            fail!("ERR signed: the blob does not pass new_checked");
        }
        let check = Check {
            verify_ticks,
            checked_ticks,
            stack,
            tampered,
            truncated,
            unsigned,
        };
        (loaded, check)
    }
}

/// Paints the unused stack again (below the current stack pointer, with a margin for this
/// function's own frame), so the next [`stack_peak_bytes`] measures only what runs after.
#[cfg(feature = "signed")]
fn repaint_stack() {
    extern "C" {
        static _stack_end: u32;
    }
    let bottom = core::ptr::addr_of!(_stack_end) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    let mut addr = bottom;
    while addr + 256 < sp {
        // SAFETY: the words between `_stack_end` and 256 bytes below the current stack pointer
        // belong to the stack region and hold no live data (nothing runs deeper than this frame
        // while it writes).
        unsafe { core::ptr::write_volatile(addr as *mut u32, cortex_m_rt::STACK_PAINT_VALUE) };
        addr += 4;
    }
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

/// Exits QEMU with failure (after `fail!` reported why).
fn exit_failure() -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

/// With defmt there is no panic-semihosting (its text would corrupt the frames): report the
/// location as a record and exit with failure.
#[cfg(feature = "defmt")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => fail!("ERR panicked at {}:{}", l.file(), l.line()),
        None => fail!("ERR panicked"),
    }
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if !board::on_interrupt(irqn) {
        fail!("ERR unexpected interrupt {}", irqn);
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    fail!("ERR hard fault at pc={:#x}", frame.pc())
}
