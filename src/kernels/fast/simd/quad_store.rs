//! Four output channels' output stage in registers, straight into the output: fused with the
//! pointwise four-channel tile ([`smlad_4x1_store`]: each pixel's four sums never leave the
//! registers) and over a row of buffered sums ([`stage_quads`], for the regular tile's rows),
//! where [`requant_run`](super::requant_run) per channel (ten instructions per output) and a
//! copy into the output (about four more) take about fourteen.

use super::RunScale;

/// The clamp of a fused output stage: one saturation, and the stored element type. The four
/// channels' [`RunScale`]s must clamp to exactly this range (the caller checks, [`Self::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuadClamp {
    /// int16 outputs, `[-32768, 32767]`.
    I16,
    /// int16 outputs, `[0, 32767]` (ReLU with a zero point of 0).
    I16Relu,
    /// int8 outputs, `[-128, 127]` (every int8 output after ReLU: zero point -128).
    I8,
}

impl QuadClamp {
    /// The form all four stages share for an output of int8 (`int8`) or int16 elements, if any.
    /// For int8 outputs the int16 range stands for the int8 range it was widened from
    /// (`fast::Store::stage_bounds`: an int8 output's clamp is never wider than int8).
    pub fn of(runs: &[RunScale; 4], int8: bool) -> Option<QuadClamp> {
        let clamp = (runs[0].min, runs[0].max);
        if runs.iter().any(|r| (r.min, r.max) != clamp) {
            return None;
        }
        match (int8, clamp) {
            (false, (-32768, 32767)) => Some(QuadClamp::I16),
            (false, (0, 32767)) => Some(QuadClamp::I16Relu),
            (true, (-128, 127) | (-32768, 32767)) => Some(QuadClamp::I8),
            _ => None,
        }
    }
}

/// Parameter words per call: the weights' start, the biases, the multiply pass's entry (one
/// LDM of the six per pixel), then per channel its stage's high word, multiplier and shift
/// (three LDMs through the pointer to word 6). The output's words (the next pixel's, the end,
/// the step) live on the loop's stack beside that pointer: one LDRD per pixel reaches the
/// output and the constants.
#[cfg(icefold_dsp)]
const PARAMS: usize = 18;

/// Most activation words per pixel of the fused tile ([`smlad_4x1_staged`]): its multiply pass
/// is unrolled for this many (256 int16 input channels, every 16x8 pointwise layer's:
/// `quant::contract`), entered past the quads a pixel does not fill, so that no loop ends
/// inside a pixel (three instructions per 32 words).
const FUSED_WORDS: usize = 4 * FUSED_QUADS;

/// Activation quads (four words, 32 products each) of [`fused_pixels`]' unrolled pass.
const FUSED_QUADS: usize = 32;

/// Activation quads of the pass of [`fused_pixels`]' int16 outputs in the doubled sum's form
/// (a sum of 128 products or fewer: [`QuadStage::new`]): half the code.
const DOUBLED_QUADS: usize = 16;

/// One channel's output stage in assembly text: its three constants (high word, multiplier,
/// shift) loaded from `lr` (advanced past them with `$next` = "!", left with ""), then
/// `requant_run`'s arithmetic on the sum in `$acc`, the saturation `$sat` and the store `$st`
/// (of r4). Uses r0-r4.
#[cfg(icefold_dsp)]
macro_rules! channel_stage {
    ($acc:literal, $next:literal, $sat:literal, $st:literal) => {
        concat!(
            "ldm lr",
            $next,
            ", {{r0-r2}}\n",
            "and r3, ",
            $acc,
            ", #0x80000000\n",
            "orr r3, r3, #0x40000000\n",
            "add r4, r0, ",
            $acc,
            ", asr #31\n",
            "smlal r3, r4, ",
            $acc,
            ", r1\n",
            "asr r4, r4, r2\n",
            $sat,
            "\n",
            $st
        )
    };
}

/// [`channel_stage`] on the sum doubled (the stage's form for a sum below 2^30, whose double
/// does not wrap: [`QuadStage::new`]): the constants are the high word doubled, the multiplier
/// and the shift plus one, the arithmetic LSL, ADD, SMMLAR and ASR where AND, ORR, ADD, SMLAL
/// and ASR took five (why it is the same stage: src/kernels/fast/simd/pointwise.rs).
#[cfg(icefold_dsp)]
macro_rules! channel_stage_doubled {
    ($acc:literal, $next:literal, $sat:literal, $st:literal) => {
        concat!(
            "ldm lr",
            $next,
            ", {{r0-r2}}\n",
            "lsl r3, ",
            $acc,
            ", #1\n",
            "add r4, r0, ",
            $acc,
            ", asr #31\n",
            "smmlar r4, r3, r1, r4\n",
            "asr r4, r4, r2\n",
            $sat,
            "\n",
            $st
        )
    };
}

/// The saturation and the four stores of each [`QuadClamp`], for [`channel_stage`].
#[cfg(icefold_dsp)]
macro_rules! with_clamp {
    ($clamp:expr, $body:ident) => {
        match $clamp {
            QuadClamp::I16 => $body!(
                "ssat r4, #16, r4",
                "strh r4, [r5]",
                "strh r4, [r5, #2]",
                "strh r4, [r5, #4]",
                "strh r4, [r5, #6]"
            ),
            QuadClamp::I16Relu => $body!(
                "usat r4, #15, r4",
                "strh r4, [r5]",
                "strh r4, [r5, #2]",
                "strh r4, [r5, #4]",
                "strh r4, [r5, #6]"
            ),
            QuadClamp::I8 => $body!(
                "ssat r4, #8, r4",
                "strb r4, [r5]",
                "strb r4, [r5, #1]",
                "strb r4, [r5, #2]",
                "strb r4, [r5, #3]"
            ),
        }
    };
}

/// Checks the output side of [`smlad_4x1_store`] and [`stage_quads`]: element size of `clamp`,
/// and whether `out` holds `pixels` pixels `stride` elements apart (four elements each).
fn output_fits(clamp: QuadClamp, out: &[u8], pixels: usize, stride: usize) -> Option<usize> {
    let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
    let span = pixels
        .checked_sub(1)?
        .checked_mul(stride)?
        .checked_add(4)?
        .checked_mul(size)?;
    ((4..=1 << 20).contains(&stride) && span <= out.len()).then_some(size)
}

/// Pixel `p`'s four results through `runs` (in the doubled sum's form if `doubled`, as the
/// assembly computes them) into `out` (the portable output stage of both).
#[cfg(not(icefold_dsp))]
fn store_pixel(
    acc: [i32; 4],
    (runs, doubled): (&[RunScale; 4], bool),
    clamp: QuadClamp,
    out: &mut [u8],
    at: usize,
) {
    let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
    for (k, (a, r)) in acc.iter().zip(runs).enumerate() {
        let v = if doubled {
            let high = r.high.wrapping_mul(2);
            let v =
                super::pointwise::doubled_stage(a.wrapping_mul(2), high, r.multiplier, r.shift + 1);
            v.max(r.min).min(r.max)
        } else {
            r.apply(*a)
        };
        let at = at + k * size;
        if let Some(y) = out.get_mut(at..at + size) {
            match clamp {
                // The int8 saturation (the stage may clamp to the int16 range it stands for).
                QuadClamp::I8 => y.copy_from_slice(&[v.clamp(-128, 127) as i8 as u8]),
                _ => y.copy_from_slice(&(v as i16).to_le_bytes()),
            }
        }
    }
}

/// The constants of [`smlad_4x1_staged`] for four channels: their biases, their stages'
/// register form and common clamp, built once per layer where a layer run in bands of rows
/// (in place) calls the tile once per band (building them per call, from the factors, cost
/// about 500 instructions per group of four channels per band on DS-CNN).
#[derive(Clone, Copy, Debug)]
pub struct QuadStage {
    /// The tile's parameter block ([`PARAMS`] words): the biases and each channel's high word,
    /// multiplier and shift at their places; the per-call words (weights, entry) written by
    /// each call.
    #[cfg(icefold_dsp)]
    params: [u32; PARAMS],
    #[cfg(not(icefold_dsp))]
    bias: [i32; 4],
    #[cfg(not(icefold_dsp))]
    runs: [RunScale; 4],
    clamp: QuadClamp,
    /// Whether the constants are in the doubled sum's form ([`channel_stage_doubled`]).
    doubled: bool,
    /// The most activation words per pixel whose sums the form holds for.
    words: usize,
}

impl QuadStage {
    /// No channels' constants (a placeholder: its outputs are never asked for).
    pub const EMPTY: QuadStage = QuadStage {
        #[cfg(icefold_dsp)]
        params: [0; PARAMS],
        #[cfg(not(icefold_dsp))]
        bias: [0; 4],
        #[cfg(not(icefold_dsp))]
        runs: [RunScale {
            high: 0,
            multiplier: 0,
            shift: 1,
            min: 0,
            max: 0,
        }; 4],
        clamp: QuadClamp::I16,
        doubled: false,
        words: 0,
    };

    /// Four channels' biases and stages `runs`, whose common clamp is `clamp`
    /// ([`QuadClamp::of`]), for sums of up to `products` products of an int8 weight and an
    /// int16 activation (each at most 2^22 in magnitude; [`smlad_4x1_staged`] refuses more).
    /// For int16 outputs in the doubled sum's form (one instruction less per output) when there
    /// are at most 128 products (the doubled form's pass, [`DOUBLED_QUADS`]) and every bias and
    /// high word is below 2^28 in magnitude: a sum then stays below `2^29 + 2^28 < 2^30`
    /// (its double does not wrap) and the doubled high word plus the sum below 2^31 (nor does
    /// their sum; a [`RunScale`]'s shift is at most 30); else as [`RunScale`] holds them.
    #[inline(always)]
    pub fn new(
        bias: [i32; 4],
        runs: &[RunScale; 4],
        clamp: QuadClamp,
        products: usize,
    ) -> QuadStage {
        // One compare for the eight magnitudes (about 25 instructions per group where a
        // bound per channel took 130).
        let widest = bias
            .iter()
            .zip(runs)
            .fold(0, |m, (b, r)| m | b.unsigned_abs() | r.high.unsigned_abs());
        let doubled = clamp != QuadClamp::I8 && products <= 8 * DOUBLED_QUADS && widest < 1 << 28;
        // The most activation words per pixel the constants' form holds for.
        let words = if doubled { products / 2 } else { FUSED_WORDS };
        #[cfg(icefold_dsp)]
        {
            let mut params = [0u32; PARAMS];
            params[1..5].copy_from_slice(&bias.map(|b| b as u32));
            let twice = u32::from(doubled);
            for (k, r) in runs.iter().enumerate() {
                params[6 + 3 * k] = (r.high as u32) << twice;
                params[7 + 3 * k] = r.multiplier as u32;
                params[8 + 3 * k] = r.shift + twice;
            }
            QuadStage {
                params,
                clamp,
                doubled,
                words,
            }
        }
        #[cfg(not(icefold_dsp))]
        QuadStage {
            bias,
            runs: *runs,
            clamp,
            doubled,
            words,
        }
    }

    /// Whether the stage stores int8 elements (else int16).
    pub fn int8(&self) -> bool {
        self.clamp == QuadClamp::I8
    }
}

/// [`smlad_4x1_staged`] with the stage built for this call.
#[inline(always)]
pub fn smlad_4x1_store(
    w: &[u32],
    x: &[u32],
    (n, bias, runs, clamp): (usize, [i32; 4], &[RunScale; 4], QuadClamp),
    out: &mut [u8],
    shape: (usize, usize),
) -> bool {
    let mut stage = QuadStage::new(bias, runs, clamp, 2 * n);
    smlad_4x1_staged(w, x, n, &mut stage, out, shape)
}

/// [`smlad_4x1_pixels`](super::smlad_4x1_pixels)' sums (`w`, `x`, `n`, the biases of `stage`,
/// `pixels`) through each channel's stage ([`RunScale::apply`]) into `out`: pixel `p`'s channel
/// `k` at element `p · stride + k` (int16 elements for [`QuadClamp::I16`] and
/// [`QuadClamp::I16Relu`], int8 for [`QuadClamp::I8`], `out` as bytes either way,
/// little-endian). `false` (nothing written) unless `n` is a positive multiple of 4 up to the
/// words `stage` was built for (half its products, at most [`FUSED_WORDS`]), `pixels >= 1`, `4 <= stride <= 2^20`, `w` holds `4 · n` words, `x`
/// `pixels · n` and `out` the last pixel's four elements. `stage` is mutable for the call's
/// own words only (its constants are left as they are).
///
/// With the DSP extension (`fused_pixels`, out of line): per pixel the multiply pass on four
/// activation words per LDM (21 instructions per 32 products, one unrolled pass entered by a
/// computed BX), then per channel an LDM of its three constants, AND, ORR, ADD, SMLAL, ASR,
/// one SSAT or USAT and the store (eight instructions per output), nine per pixel for the
/// biases, the weights' start and the entry (one LDM), the output and constants (one LDRD),
/// the advance and the branch.
#[inline(always)]
pub fn smlad_4x1_staged(
    w: &[u32],
    x: &[u32],
    n: usize,
    stage: &mut QuadStage,
    out: &mut [u8],
    (pixels, stride): (usize, usize),
) -> bool {
    let clamp = stage.clamp;
    let Some(size) = output_fits(clamp, out, pixels, stride) else {
        return false;
    };
    if n == 0 || n % 4 != 0 || n > stage.words || w.len() / 4 < n || x.len() / n < pixels {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        let start = out.as_mut_ptr();
        let step = stride * size;
        // SAFETY: the checks above are `fused_pixels`' conditions.
        unsafe { fused_pixels(stage, w, x, n, (start, pixels, step)) };
    }
    #[cfg(not(icefold_dsp))]
    {
        for (p, xp) in x.chunks_exact(n).take(pixels).enumerate() {
            let mut acc = stage.bias;
            for (xw, ws) in xp.iter().zip(w.chunks_exact(4)) {
                for (a, wk) in acc.iter_mut().zip(ws) {
                    *a = super::smlad(*wk, *xw, *a);
                }
            }
            let at = p * stride * size;
            store_pixel(acc, (&stage.runs, stage.doubled), clamp, out, at);
        }
    }
    true
}

/// [`smlad_4x1_staged`] for consecutive groups of four output channels, the shapes checked
/// once: group `g`'s weights words `4 · n · g ..` of `widened`, its constants `stages[g]`, its
/// outputs from element `4 · g` of each pixel. For `stages.len()` groups; `false` (nothing
/// written) unless every stage has the first's clamp, `widened` holds every group's `4 · n`
/// words, and [`smlad_4x1_staged`]'s conditions hold for the last group's outputs. (A layer
/// run in bands calls this per band: per-group checks cost about 50 instructions a group.)
#[inline(never)]
pub fn smlad_4x1_groups(
    widened: &[u32],
    x: &[u32],
    n: usize,
    stages: &mut [QuadStage],
    out: &mut [u8],
    (pixels, stride): (usize, usize),
) -> bool {
    let Some(clamp) = stages.first().map(|s| s.clamp) else {
        return false;
    };
    let groups = stages.len();
    let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
    // The last group's last element: `(pixels − 1) · stride + 4 · groups − 1`.
    let span = pixels.checked_sub(1).and_then(|p| {
        p.checked_mul(stride)?
            .checked_add(4 * groups)?
            .checked_mul(size)
    });
    let fits = span.is_some_and(|span| span <= out.len()) && (4..=1 << 20).contains(&stride);
    if !fits || n == 0 || n % 4 != 0 || widened.len() / (4 * n) < groups || x.len() / n < pixels {
        return false;
    }
    if stages.iter().any(|s| s.clamp != clamp || n > s.words) {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        let step = stride * size;
        for (g, (stage, w)) in stages
            .iter_mut()
            .zip(widened.chunks_exact(4 * n))
            .enumerate()
        {
            let start = out.as_mut_ptr().wrapping_add(4 * g * size);
            // SAFETY: `fused_pixels`' conditions: `n` within every stage's words, `w` holds
            // `4 · n` words (an exact chunk), `x` `pixels · n`, and group `g`'s last element, `(pixels − 1) · stride + 4g + 3`,
            // lies below `(pixels − 1) · stride + 4 · groups <= out.len() / size` (checked
            // above).
            unsafe { fused_pixels(stage, w, x, n, (start, pixels, step)) };
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let kept = stages.iter_mut().zip(widened.chunks_exact(4 * n));
        for (g, (stage, w)) in kept.enumerate() {
            let Some(out) = out.get_mut(4 * g * size..) else {
                return false;
            };
            smlad_4x1_staged(w, x, n, stage, out, (pixels, stride));
        }
    }
    true
}

/// A quad of [`fused_pixels`]' multiply pass in assembly text: four activation words (one LDM
/// through r12, written back, into r4, r6, r7 and lr), each meeting the four channels'
/// interleaved weight words (LDM of four through r5, written back) in four SMLADs into
/// r8-r11: 21 instructions per 32 products where two LDRDs' pairs took 22 (every register
/// but sp and pc in use). Uses r0-r4, r6, r7 and lr.
#[cfg(icefold_dsp)]
macro_rules! smlad_4x1_quad {
    () => {
        concat!(
            "ldm r12!, {{r4, r6, r7, lr}}\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r6, r8\n",
            "smlad r9, r1, r6, r9\n",
            "smlad r10, r2, r6, r10\n",
            "smlad r11, r3, r6, r11\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r7, r8\n",
            "smlad r9, r1, r7, r9\n",
            "smlad r10, r2, r7, r10\n",
            "smlad r11, r3, r7, r11\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, lr, r8\n",
            "smlad r9, r1, lr, r9\n",
            "smlad r10, r2, lr, r10\n",
            "smlad r11, r3, lr, r11\n",
        )
    };
}

/// Quads 2 to 16 of a pass in assembly text (after the first and the label `4:`).
#[cfg(icefold_dsp)]
macro_rules! quads_2_to_16 {
    () => {
        concat!(
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
        )
    };
}

/// Quads 2 to 32 of a pass in assembly text.
#[cfg(icefold_dsp)]
macro_rules! quads_2_to_32 {
    () => {
        concat!(
            quads_2_to_16!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
            smlad_4x1_quad!(),
        )
    };
}

/// The fused tile's loop ([`smlad_4x1_staged`]) over `pixels` pixels of `x` with weights `w`,
/// the outputs from `start`, `step` bytes apart, stored as `stage`'s clamp says through its
/// constants (its per-call words written here).
///
/// # Safety
/// `n` is a positive multiple of 4 up to the stage's words (at most [`FUSED_WORDS`], and
/// [`DOUBLED_QUADS`] quads in the doubled form), `w` holds `4 · n` words, `x` `pixels · n` words,
/// `pixels >= 1`, and the bytes `start + p · step + k · size` for `p < pixels`, `k < 4`
/// (`size` the element size of the stage's clamp) lie in one writable allocation the caller
/// borrows mutably.
#[cfg(icefold_dsp)]
#[inline(never)]
unsafe fn fused_pixels(
    stage: &mut QuadStage,
    w: &[u32],
    x: &[u32],
    n: usize,
    (start, pixels, step): (*mut u8, usize, usize),
) {
    // Int16 outputs in the doubled form take a pass of their own (an output stage's form is
    // fixed in its code: choosing it per pixel, a load into pc, cost 5 cycles per pixel);
    // int8 outputs (int8 networks' strided shortcuts, 16 or 32 input channels) keep one copy.
    let doubled = stage.doubled;
    let quads = if doubled { DOUBLED_QUADS } else { FUSED_QUADS };
    let params = &mut stage.params;
    params[0] = w.as_ptr() as usize as u32;
    // The pass entered past the quads `n / 4` does not fill (word 5, the entry, is written by
    // the assembly: a label's address).
    let skip = quads.saturating_sub(n / 4);
    let end = start.wrapping_add(pixels * step);
    let constants = params.as_mut_ptr().wrapping_add(6);
    // SAFETY: the function's conditions, and word 0 of `params` written just now from them (the
    // others are constants the loop only reads into its sums and stages; word 5, the entry,
    // is written first by the assembly). Per pixel the loop reads `n` words of `x` through r12
    // (LDM of four, written back: pixel `p` reads words `p · n .. (p + 1) · n`, `p < pixels`,
    // inside `x`: the pass's `quads` quads less the `skip` it is entered past, `n / 4` quads;
    // the entry is the pass's first quad plus `skip` times the distance of its first two, the
    // pass being one instruction sequence repeated, with the Thumb bit set for BX) and the
    // `4 · n` words of `w` from its start through r5 (four LDMs of four words per quad:
    // inside `w`). It writes the four elements of pixel `p` at `start + p · step + k · size`
    // (r5, loaded from the stacked copy of r1, advanced by `step` per pixel), `k < 4`, stopping
    // when r5 reaches `start + pixels · step`. It reads and writes the words of `params`
    // (alive past the statement; r0 points at word 0, the stacked r2 at word 6, the
    // constants' LDMs stay within words 6-17; the LDM through lr loads lr last, without
    // writeback), pushes eight words it pops before the end: r6 and r7 (LLVM's base and frame
    // pointers, not operands) leave as they came. `x` and `w` are `u32` slices: word-aligned,
    // as LDM needs. Only the named registers and the flags (with Q) change. ADR, MLA, BX, LDM,
    // LDRD, SMLAD, SMLAL, SMMLAR, SSAT, USAT, PUSH, POP exist on every icefold_dsp core.
    macro_rules! fused {
        ($rest:ident, $stage:ident, $sat:literal, $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
            unsafe {
                core::arch::asm!(
                    // The stack: params, the next pixel's output, the constants, the end, the
                    // step (r0-r4 as given), r5-r7.
                    "push {{r0-r7}}",
                    "adr.w r7, 2f",
                    "adr.w r1, 4f",
                    "sub r1, r1, r7",
                    "mla r7, r1, r5, r7",
                    "orr r7, r7, #1",
                    "str r7, [r0, #20]",
                    // The pixel loop from a 256-byte boundary (the pass, up to 2,432 bytes,
                    // crosses QEMU's 1 KiB pages at the same places for every call: where a
                    // translation block ends and the cycle model restarts its pipelining).
                    "b 1f",
                    ".balign 256",
                    "1:",
                    "ldr lr, [sp]",
                    "ldm lr, {{r5, r8-r11, lr}}",
                    "bx lr",
                    "2:",
                    smlad_4x1_quad!(),
                    "4:",
                    $rest!(),
                    // Each channel's output stage, into the pixel's four elements.
                    "ldrd r5, lr, [sp, #4]",
                    $stage!("r8", "!", $sat, $s0),
                    $stage!("r9", "!", $sat, $s1),
                    $stage!("r10", "!", $sat, $s2),
                    $stage!("r11", "", $sat, $s3),
                    // The next pixel's output, until the end.
                    "ldrd r0, r1, [sp, #12]",
                    "add r5, r5, r1",
                    "str r5, [sp, #4]",
                    // The next pixel's words (as at `1:`) and its entry: one taken branch
                    // per pixel, not two (a branch back to `1:` cost 4 more cycles).
                    "cmp r5, r0",
                    "beq 5f",
                    "ldr lr, [sp]",
                    "ldm lr, {{r5, r8-r11, lr}}",
                    "bx lr",
                    "5:",
                    "pop {{r0-r7}}",
                    inout("r0") params.as_mut_ptr() => _,
                    inout("r1") start => _, inout("r2") constants => _, inout("r3") end => _,
                    inout("r4") step => _, inout("r5") skip => _,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    inout("r12") x.as_ptr() => _,
                    out("lr") _,
                    options(),
                );
            }
        };
    }
    match (stage.clamp, doubled) {
        (QuadClamp::I16, false) => fused!(
            quads_2_to_32,
            channel_stage,
            "ssat r4, #16, r4",
            "strh r4, [r5]",
            "strh r4, [r5, #2]",
            "strh r4, [r5, #4]",
            "strh r4, [r5, #6]"
        ),
        (QuadClamp::I16, true) => fused!(
            quads_2_to_16,
            channel_stage_doubled,
            "ssat r4, #16, r4",
            "strh r4, [r5]",
            "strh r4, [r5, #2]",
            "strh r4, [r5, #4]",
            "strh r4, [r5, #6]"
        ),
        (QuadClamp::I16Relu, false) => fused!(
            quads_2_to_32,
            channel_stage,
            "usat r4, #15, r4",
            "strh r4, [r5]",
            "strh r4, [r5, #2]",
            "strh r4, [r5, #4]",
            "strh r4, [r5, #6]"
        ),
        (QuadClamp::I16Relu, true) => fused!(
            quads_2_to_16,
            channel_stage_doubled,
            "usat r4, #15, r4",
            "strh r4, [r5]",
            "strh r4, [r5, #2]",
            "strh r4, [r5, #4]",
            "strh r4, [r5, #6]"
        ),
        (QuadClamp::I8, _) => fused!(
            quads_2_to_32,
            channel_stage,
            "ssat r4, #8, r4",
            "strb r4, [r5]",
            "strb r4, [r5, #1]",
            "strb r4, [r5, #2]",
            "strb r4, [r5, #3]"
        ),
    }
}

/// The output stage of four channels' sums over `pixels` pixels, laid out as
/// [`QUAD_SPLIT`](super::QUAD_SPLIT) describes (pixel `p`'s channels 0 and 1 at `sums[2p]`,
/// `sums[2p + 1]`, 2 and 3 at `QUAD_SPLIT + 2p`, `QUAD_SPLIT + 2p + 1`), through each channel's
/// stage `runs[k]` into `out` as [`smlad_4x1_store`] writes it. `clamp` must be the four
/// stages' common clamp ([`QuadClamp::of`]). `false` (nothing written) unless `pixels >= 1`,
/// `2 · pixels <= QUAD_SPLIT`, `sums` holds `QUAD_SPLIT + 2 · pixels` values and `out` the last
/// pixel's four elements.
///
/// With the DSP extension: two LDRDs of the pixel's sums, eight instructions per output
/// (as [`smlad_4x1_store`]'s) and six per pixel to advance.
#[inline(always)]
pub fn stage_quads(
    sums: &[i32],
    (runs, clamp): (&[RunScale; 4], QuadClamp),
    out: &mut [u8],
    (pixels, stride): (usize, usize),
) -> bool {
    let Some(size) = output_fits(clamp, out, pixels, stride) else {
        return false;
    };
    if 2 * pixels > super::QUAD_SPLIT || sums.len() < super::QUAD_SPLIT + 2 * pixels {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        let start = out.as_mut_ptr();
        let step = stride * size;
        let mut params = [0u32; 15];
        params[0] = start as usize as u32;
        params[1] = sums.as_ptr().wrapping_add(2 * pixels) as usize as u32;
        params[2] = step as u32;
        for (k, r) in runs.iter().enumerate() {
            params[3 + 3 * k] = r.high as u32;
            params[4 + 3 * k] = r.multiplier as u32;
            params[5 + 3 * k] = r.shift;
        }
        // SAFETY: the checks above. Per pixel `p < pixels` the loop reads `sums[2p..2p + 2]`
        // and `sums[QUAD_SPLIT + 2p..QUAD_SPLIT + 2p + 2]` (LDRD through r12, post-incremented
        // by 8 bytes, and at the immediate offset 256 = 4 · QUAD_SPLIT bytes), stopping when
        // r12 reaches `2 · pixels`: inside `sums`, which holds `QUAD_SPLIT + 2 · pixels`. It
        // writes pixel `p`'s four elements at byte `p · step + k · size` of `out` (r5, advanced
        // by `step`), the last below `(pixels − 1) · step + 4 · size <= out.len()`. It reads
        // and writes the words of `params` (alive past the statement) and pushes one word it
        // pops before the end. `sums` is an `i32` slice: word-aligned, as LDRD needs. Only the
        // named registers and the flags (with Q) change; r6 and r7 are not touched.
        macro_rules! row {
            ($sat:literal, $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
                unsafe {
                    core::arch::asm!(
                        "push {{r0}}",
                        "1:",
                        "ldrd r10, r11, [r12, #256]",
                        "ldrd r8, r9, [r12], #8",
                        "ldr lr, [sp]",
                        "ldr r5, [lr]",
                        "add lr, lr, #12",
                        channel_stage!("r8", "!", $sat, $s0),
                        channel_stage!("r9", "!", $sat, $s1),
                        channel_stage!("r10", "!", $sat, $s2),
                        channel_stage!("r11", "", $sat, $s3),
                        "ldr lr, [sp]",
                        "ldrd r0, r1, [lr, #4]",
                        "add r5, r5, r1",
                        "str r5, [lr]",
                        "cmp r12, r0",
                        "bne 1b",
                        "pop {{r0}}",
                        inout("r0") params.as_mut_ptr() => _,
                        out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                        out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                        inout("r12") sums.as_ptr() => _,
                        out("lr") _,
                        options(),
                    );
                }
            };
        }
        with_clamp!(clamp, row);
        let _ = params;
    }
    #[cfg(not(icefold_dsp))]
    {
        let (lo, hi) = sums.split_at(super::QUAD_SPLIT);
        let pairs = lo.chunks_exact(2).zip(hi.chunks_exact(2)).take(pixels);
        for (p, (a, b)) in pairs.enumerate() {
            store_pixel(
                [a[0], a[1], b[0], b[1]],
                (runs, false),
                clamp,
                out,
                p * stride * size,
            );
        }
    }
    true
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    fn stage(seed: u32, clamp: QuadClamp) -> QuadStage {
        let run = |k: u32| RunScale {
            high: (seed.wrapping_mul(7 + k) % 64) as i32,
            multiplier: 0x4000_0000 + (seed.wrapping_mul(13 + k) % 0x1000_0000) as i32,
            shift: 8 + (seed + k) % 6,
            min: if clamp == QuadClamp::I16Relu {
                0
            } else {
                -32768
            },
            max: 32767,
        };
        let bias = [0, 1, 2, 3].map(|k| (seed.wrapping_mul(31 + k) % 4000) as i32 - 2000);
        QuadStage::new(bias, &[run(0), run(1), run(2), run(3)], clamp, 16)
    }

    fn words(seed: &mut u64, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                // Lane pairs of small values (int16 inputs, widened int8 weights).
                (*seed as u32) & 0x03ff_03ff
            })
            .collect()
    }

    /// Every output of the fused tile is the plain sum through [`RunScale::apply`] and the
    /// clamp, in either form of the stage: int8 weights and int16 activations with the largest
    /// products, sums of 8 to 256 products (the doubled form up to 128 with a bias near 2^27,
    /// the plain form at 256, with wide high words and for int8 outputs).
    #[test]
    fn staged_equals_plain_sums_in_either_form() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u32
        };
        let lane = |v: u32, hi: bool| i32::from(if hi { (v >> 16) as i16 } else { v as i16 });
        for clamp in [QuadClamp::I16, QuadClamp::I16Relu, QuadClamp::I8] {
            for (n, bias_bits, high, doubled) in [
                (4, 28, 1 << 20, true),
                (60, 28, (1 << 28) - 1, true),
                (64, 21, 1 - (1 << 28), true),
                (128, 8, 1 << 10, false),
                (32, 8, (1 << 30) - (1 << 20), false),
            ] {
                let pixels = 3;
                let stride = 6;
                let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
                let weight = |next: &mut dyn FnMut() -> u32| {
                    let v = next();
                    let pick = |b: u32| {
                        if b % 5 == 0 {
                            -128
                        } else {
                            (b as u8 as i8).into()
                        }
                    };
                    crate::kernels::fast::simd::pair(pick(v), pick(v >> 8))
                };
                let w: Vec<u32> = (0..4 * n).map(|_| weight(&mut next)).collect();
                // The first pixel all `-32768`: with `-128` weights, the largest sums.
                let x: Vec<u32> = (0..pixels * n)
                    .map(|i| if i < n { 0x8000_8000 } else { next() })
                    .collect();
                let bias =
                    [0; 4].map(|_| (next() % (1 << bias_bits)) as i32 - (1 << (bias_bits - 1)));
                let (min, max) = match clamp {
                    QuadClamp::I16 | QuadClamp::I8 => (-32768, 32767),
                    QuadClamp::I16Relu => (0, 32767),
                };
                let runs = [0; 4].map(|_| RunScale {
                    high,
                    multiplier: 0x4000_0000 + (next() % 0x4000_0000) as i32,
                    shift: 1 + next() % 30,
                    min,
                    max,
                });
                let mut stage = QuadStage::new(bias, &runs, clamp, 2 * n);
                let form = doubled && clamp != QuadClamp::I8;
                assert_eq!(stage.doubled, form, "{n} words, bias of {bias_bits} bits");
                let mut out = std::vec![0u8; ((pixels - 1) * stride + 4) * size];
                assert!(smlad_4x1_staged(
                    &w,
                    &x,
                    n,
                    &mut stage,
                    &mut out,
                    (pixels, stride)
                ));
                for p in 0..pixels {
                    for k in 0..4 {
                        let acc = (0..n).fold(bias[k], |a, j| {
                            let (wv, xv) = (w[4 * j + k], x[p * n + j]);
                            a + lane(wv, false) * lane(xv, false) + lane(wv, true) * lane(xv, true)
                        });
                        let v = runs[k].apply(acc);
                        let at = (p * stride + k) * size;
                        let (got, want) = if size == 1 {
                            (i32::from(out[at] as i8), v.clamp(-128, 127))
                        } else {
                            (i32::from(i16::from_le_bytes([out[at], out[at + 1]])), v)
                        };
                        assert_eq!(got, want, "{clamp:?} {n} words pixel {p} channel {k}");
                    }
                }
            }
        }
    }

    /// The groups' call writes what one call per group writes, for every clamp, and refuses
    /// (writing nothing) an output one element short or stages of mixed clamps.
    #[test]
    fn groups_equal_one_call_per_group() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for clamp in [QuadClamp::I16, QuadClamp::I16Relu, QuadClamp::I8] {
            for (groups, n, pixels) in [(1, 4, 1), (3, 8, 5), (4, 4, 7)] {
                let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
                let stride = 4 * groups;
                let widened = words(&mut seed, groups * 4 * n);
                let x = words(&mut seed, pixels * n);
                let mut stages: Vec<QuadStage> =
                    (0..groups).map(|g| stage(g as u32 + 1, clamp)).collect();
                let len = pixels * stride * size;
                let mut want = std::vec![0u8; len];
                for (g, (w, s)) in widened.chunks_exact(4 * n).zip(&stages).enumerate() {
                    let out = &mut want[4 * g * size..];
                    assert!(smlad_4x1_staged(
                        w,
                        &x,
                        n,
                        &mut s.clone(),
                        out,
                        (pixels, stride)
                    ));
                }
                let mut got = std::vec![0u8; len];
                let shape = (pixels, stride);
                assert!(smlad_4x1_groups(
                    &widened,
                    &x,
                    n,
                    &mut stages,
                    &mut got,
                    shape
                ));
                assert_eq!(got, want, "{clamp:?} {groups} groups");
                let mut short = std::vec![0u8; len - size];
                assert!(!smlad_4x1_groups(
                    &widened,
                    &x,
                    n,
                    &mut stages,
                    &mut short,
                    shape
                ));
                assert!(short.iter().all(|&b| b == 0));
                if groups > 1 {
                    let other = if clamp == QuadClamp::I16 {
                        QuadClamp::I16Relu
                    } else {
                        QuadClamp::I16
                    };
                    stages[1] = stage(9, other);
                    assert!(!smlad_4x1_groups(
                        &widened,
                        &x,
                        n,
                        &mut stages,
                        &mut got,
                        shape
                    ));
                }
            }
        }
    }
}
