//! Fast int8 and 16×8 convolutions: the same results as
//! [`reference::int8::conv`](crate::kernels::reference::int8::conv), byte for byte.
//!
//! Two loops cover the convolutions of the networks icefold targets; everything else (grouped
//! but not depthwise convolutions, windows of more than [`MAX_TAPS`] taps) runs the reference
//! kernel.
//! - **Regular** (`groups == 1`): output channels in pairs, each pair reading the input once.
//!   For an output pixel and a kernel row, the taps that fall inside the input are one contiguous
//!   run of `taps · in_c` values in the channels-last layout (dilation 1), and so are their
//!   weights: one dot product per kernel row, four products per step on two lane pairs
//!   ([`simd::smlad`]); taps in the padding add their pad values' products. With the DSP
//!   extension the weights are widened once per channel pair and two pixels of the pair run a
//!   hand-written register tile over their whole window in one call ([`simd::smlad_2x2_rows`]
//!   for int16 activations, [`simd::sxtb16_2x2_rows`] for int8; a border pixel's clipped window
//!   [`simd::smlad_2x1_rows`] / [`simd::sxtb16_2x1_rows`]).
//! - **Depthwise** (`groups == in_c == out_c`): one channel at a time over every output pixel,
//!   its weights and output stage prepared once.
//!
//! Integer sums do not depend on their order, and the output stage is the reference's
//! ([`super::requant`]), so the results are identical; the tests compare both on random shapes.

use super::requant::{Bounds, Stage};
use super::simd;
use super::{Outs, Store};
use crate::kernels::reference::int8::conv::{self as reference, ConvQuant, WideConvQuant};
use crate::kernels::reference::int8::{ChannelQuant, Element};
use crate::kernels::ConvGeometry;

/// Largest `kernel_h · kernel_w` the fast loops take.
pub const MAX_TAPS: usize = 64;

/// An activation element whose runs of four can be read as two lane pairs (`(x0, x2)`,
/// `(x1, x3)`), the order in which [`simd::sxtb16`] and [`simd::sxtb16_ror8`] widen four int8
/// weights.
pub trait Lanes: Element + bytemuck::Pod {
    /// True for int16: pairs of values can be read as words.
    const WIDE: bool;
    /// The even and odd lane pairs of four consecutive elements.
    fn quad(x: &[Self; 4]) -> (u32, u32);
    /// The values as int16, if they are (`WIDE`), else empty.
    fn as_i16(x: &[Self]) -> &[i16];
    /// The values for the x86_64 AVX2 dot products.
    #[cfg(target_arch = "x86_64")]
    fn activations(x: &[Self]) -> crate::kernels::x86::Activations<'_>;
    /// int8 values as words of four (little-endian), if they are int8, 4-byte aligned and a
    /// whole number of words: what [`simd::sxtb16_2x2`] reads.
    fn packed(x: &[Self]) -> Option<&[u32]> {
        if Self::WIDE {
            None
        } else {
            bytemuck::try_cast_slice(x).ok()
        }
    }
    /// int16 values as words of two lanes, if they are int16 and 4-byte aligned.
    fn words(x: &[Self]) -> Option<&[u32]> {
        if Self::WIDE {
            bytemuck::try_cast_slice(Self::as_i16(x)).ok()
        } else {
            None
        }
    }
}

impl Lanes for i8 {
    const WIDE: bool = false;
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn activations(x: &[i8]) -> crate::kernels::x86::Activations<'_> {
        crate::kernels::x86::Activations::I8(x)
    }
    #[inline(always)]
    fn as_i16(_: &[i8]) -> &[i16] {
        &[]
    }
    #[inline(always)]
    fn quad(x: &[i8; 4]) -> (u32, u32) {
        let word = u32::from_le_bytes(x.map(|v| v as u8));
        (simd::sxtb16(word), simd::sxtb16_ror8(word))
    }
}

impl Lanes for i16 {
    const WIDE: bool = true;
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn activations(x: &[i16]) -> crate::kernels::x86::Activations<'_> {
        crate::kernels::x86::Activations::I16(x)
    }
    #[inline(always)]
    fn as_i16(x: &[i16]) -> &[i16] {
        x
    }
    #[inline(always)]
    fn quad(x: &[i16; 4]) -> (u32, u32) {
        let [x0, x1, x2, x3] = x.map(|v| v as u16 as u32);
        let (a, b) = (x0 | (x1 << 16), x2 | (x3 << 16));
        (simd::pack_lo(a, b), simd::pack_hi(a, b))
    }
}

/// Four int8 weights as the lane pairs `(w0, w2)`, `(w1, w3)`.
#[inline(always)]
fn weight_quad(w: &[i8; 4]) -> (u32, u32) {
    <i8 as Lanes>::quad(w)
}

/// `acc[k] + Σ_i w[k][i] · x[i]` over the length of `x`, for two weight rows at once (each at
/// least as long as `x`): four products per row and step.
#[inline(always)]
pub(super) fn dot<X: Lanes>(w: [&[i8]; 2], x: &[X], acc: [i32; 2]) -> [i32; 2] {
    #[cfg(target_arch = "x86_64")]
    if let Some([r]) = crate::kernels::x86::int8_dot(w, [X::activations(x)], [acc]) {
        return r;
    }
    let [mut a0, mut a1] = acc;
    let quads = x.chunks_exact(4);
    let tail = quads.remainder();
    let steps = quads.zip(w[0].chunks_exact(4)).zip(w[1].chunks_exact(4));
    for ((xq, w0), w1) in steps {
        let (Some(xq), Some(w0), Some(w1)) = (
            xq.first_chunk::<4>(),
            w0.first_chunk::<4>(),
            w1.first_chunk::<4>(),
        ) else {
            continue;
        };
        let (x_even, x_odd) = X::quad(xq);
        let (w_even, w_odd) = weight_quad(w0);
        a0 = simd::smlad(w_odd, x_odd, simd::smlad(w_even, x_even, a0));
        let (w_even, w_odd) = weight_quad(w1);
        a1 = simd::smlad(w_odd, x_odd, simd::smlad(w_even, x_even, a1));
    }
    let done = x.len() - tail.len();
    let scalar = |a: i32, w: &[i8]| {
        let w_tail = w.get(done..).unwrap_or_default();
        w_tail
            .iter()
            .zip(tail)
            .fold(a, |s, (w, x)| s.wrapping_add(i32::from(*w) * x.widen()))
    };
    [scalar(a0, w[0]), scalar(a1, w[1])]
}

/// [`dot`] for two pixels (`x[p]`, each as long as the weight rows): `acc[2p + k]`.
#[inline(always)]
fn dot2<X: Lanes>(w: [&[i8]; 2], x: [&[X]; 2], acc: [i32; 4]) -> [i32; 4] {
    #[cfg(target_arch = "x86_64")]
    if let Some([[a0, a1], [b0, b1]]) = crate::kernels::x86::int8_dot(
        w,
        x.map(X::activations),
        [[acc[0], acc[1]], [acc[2], acc[3]]],
    ) {
        return [a0, a1, b0, b1];
    }
    let [mut a0, mut a1, mut b0, mut b1] = acc;
    let quads = x[0].chunks_exact(4).zip(x[1].chunks_exact(4));
    let tail = [
        x[0].chunks_exact(4).remainder(),
        x[1].chunks_exact(4).remainder(),
    ];
    for (((xa, xb), w0), w1) in quads.zip(w[0].chunks_exact(4)).zip(w[1].chunks_exact(4)) {
        let (Some(xa), Some(xb), Some(w0), Some(w1)) = (
            xa.first_chunk::<4>(),
            xb.first_chunk::<4>(),
            w0.first_chunk::<4>(),
            w1.first_chunk::<4>(),
        ) else {
            continue;
        };
        let (xa_even, xa_odd) = X::quad(xa);
        let (xb_even, xb_odd) = X::quad(xb);
        let (w_even, w_odd) = weight_quad(w0);
        a0 = simd::smlad(w_odd, xa_odd, simd::smlad(w_even, xa_even, a0));
        b0 = simd::smlad(w_odd, xb_odd, simd::smlad(w_even, xb_even, b0));
        let (w_even, w_odd) = weight_quad(w1);
        a1 = simd::smlad(w_odd, xa_odd, simd::smlad(w_even, xa_even, a1));
        b1 = simd::smlad(w_odd, xb_odd, simd::smlad(w_even, xb_even, b1));
    }
    let done = x[0].len() - tail[0].len();
    let scalar = |a: i32, w: &[i8], tail: &[X]| {
        let w_tail = w.get(done..).unwrap_or_default();
        w_tail
            .iter()
            .zip(tail)
            .fold(a, |s, (w, x)| s.wrapping_add(i32::from(*w) * x.widen()))
    };
    [
        scalar(a0, w[0], tail[0]),
        scalar(a1, w[1], tail[0]),
        scalar(b0, w[0], tail[1]),
        scalar(b1, w[1], tail[1]),
    ]
}

/// The x86_64 AVX2 sums of [`Wide`] and [`pointwise`] (`kernels::x86::word_dot`), if the CPU
/// has AVX2; `None` elsewhere.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn words_x86<const P: usize>(
    w: [&[u32]; 2],
    x: [&[u32]; P],
    acc: [[i32; 2]; P],
) -> Option<[[i32; 2]; P]> {
    crate::kernels::x86::word_dot(w, x, acc)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn words_x86<const P: usize>(
    _: [&[u32]; 2],
    _: [&[u32]; P],
    _: [[i32; 2]; P],
) -> Option<[[i32; 2]; P]> {
    None
}

/// What a padded tap reads: one value per input channel, or the zero point.
#[derive(Clone, Copy)]
pub struct Padding<'a, X> {
    /// The input zero point.
    pub zero: X,
    /// Per-input-channel values (`[in_c]`), or empty.
    pub values: &'a [X],
}

impl<X: Element> Padding<'_, X> {
    /// `Σ_i w[i] · pad(first + i)` for the weights of one tap.
    #[inline]
    fn tap(&self, w: &[i8], first: usize) -> i32 {
        if self.values.is_empty() {
            let zero = self.zero.widen();
            w.iter()
                .fold(0i32, |s, w| s.wrapping_add(i32::from(*w) * zero))
        } else {
            let pad = self.values.get(first..).unwrap_or_default();
            w.iter()
                .zip(pad)
                .fold(0i32, |s, (w, x)| s.wrapping_add(i32::from(*w) * x.widen()))
        }
    }
}

/// The operands of one convolution, except its output.
pub struct Conv<'a, X> {
    /// Window.
    pub geometry: &'a ConvGeometry,
    /// `[h, w, c]` of the input and of the output.
    pub dims: ([usize; 3], [usize; 3]),
    /// Padded taps.
    pub padding: Padding<'a, X>,
    /// Bias and factors per output channel.
    pub channels: &'a ChannelQuant<'a>,
    /// Output zero point and clamp.
    pub bounds: Bounds,
    /// Input `[h, w, in_c]`.
    pub input: &'a [X],
    /// `[out_c][kh][kw][in_c / groups]`.
    pub weights: &'a [i8],
}

/// Which loops of [`run`] a caller links, as constants: a loop left out is not linked, and
/// [`run_loops`] returns `false` for the geometries it covers (the engine's kernel set,
/// `engine::Kernels`, leaves out the depthwise loops of a model without depthwise layers).
pub trait Loops {
    /// The `groups == 1` loops (regular, columns, pointwise).
    const REGULAR: bool;
    /// The depthwise loops (`groups == in_c == out_c`).
    const DEPTHWISE: bool;
    /// Of the `groups == 1` loops, those of [`RegularLoop::Columns`] with the small buffers.
    const COLUMNS: bool = Self::REGULAR;
    /// Those of [`RegularLoop::Columns`] with the whole layer's buffers.
    const COLUMNS_WHOLE: bool = Self::REGULAR;
    /// Those of [`RegularLoop::Pointwise`] and [`RegularLoop::Strided`].
    const POINTWISE: bool = Self::REGULAR;
    /// Those of [`RegularLoop::Quads`].
    const QUADS: bool = Self::REGULAR;
    /// Those of [`RegularLoop::Pixels`].
    const PIXELS: bool = Self::REGULAR;
    /// Of the depthwise loops, the pixel loop of narrow maps (DSP cores,
    /// [`depthwise_by_pixel`]).
    const DEPTHWISE_PIXEL: bool = Self::DEPTHWISE;
    /// The other depthwise loops (the 3x3 row kernel, channel pairs, one channel at a time).
    const DEPTHWISE_ROWS: bool = Self::DEPTHWISE;
}

/// Whether a depthwise convolution runs by the pixel loop on a DSP core, from its record alone
/// (window, dims, whether its output is a view, its output bounds, `wide` for an int16 input
/// not sliced in place: the loop reads channel pairs as words). The loop can still refuse a
/// layer whose output factors do not have its form; the row loops, or the reference kernel
/// where they are not linked, then run it.
pub fn depthwise_by_pixel(
    g: &ConvGeometry,
    dims: ([usize; 3], [usize; 3]),
    bounds: &Bounds,
    wide: bool,
) -> bool {
    let ([_, _, in_c], [_, _, out_c]) = dims;
    wide && !g.strided_input(in_c)
        && g.out_stride(out_c) == out_c
        && super::depthwise::covers_by_pixel_of(g, dims, bounds)
}

/// The loop a regular (`groups == 1`) convolution takes, one class of code each: a firmware's
/// kernel set names those its model reaches (`engine::Kernel::ConvColumnsI8`, ...), so that
/// the others are not linked (most of the fast kernels' code, each monomorphised per element
/// type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegularLoop {
    /// Whole receptive fields gathered ([`columns_any`]): few input channels (first layers),
    /// or an input sliced in place; with the buffers it takes.
    Columns(ColumnBuffers),
    /// A 1x1, stride 1 layer on int16 words ([`pointwise_layer`]).
    Pointwise,
    /// A 1x1 layer of stride above 1, gathered and run as a pointwise one on int16 words
    /// ([`pointwise_strided`], DSP cores).
    Strided,
    /// Four output channels at a time over runs of windows ([`regular_quads`], DSP cores).
    Quads,
    /// Output channel pairs over pixel pairs (`regular`'s own loop, every core).
    Pixels,
}

/// The buffers [`RegularLoop::Columns`] takes (two sizes, each a copy of the loops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnBuffers {
    /// The small ones only.
    Small,
    /// The whole layer's only (its weights widened once per layer: DS-CNN's first layer).
    Whole,
    /// Both: the fused tile's of one size, the other loop's of the other.
    Both,
}

impl RegularLoop {
    /// Whether `L` links this loop.
    const fn linked<L: Loops>(self) -> bool {
        match self {
            RegularLoop::Columns(ColumnBuffers::Small) => L::COLUMNS,
            RegularLoop::Columns(ColumnBuffers::Whole) => L::COLUMNS_WHOLE,
            RegularLoop::Columns(ColumnBuffers::Both) => L::COLUMNS && L::COLUMNS_WHOLE,
            RegularLoop::Pointwise | RegularLoop::Strided => L::POINTWISE,
            RegularLoop::Quads => L::QUADS,
            RegularLoop::Pixels => L::PIXELS,
        }
    }
}

/// The loop [`run_loops`] runs a regular convolution by, from its record alone: `wide` for an
/// int16 input, `words` if it can be read as words (int16 and word-aligned: the host, which
/// does not know the arena's address, assumes `wide`), `tiles` for a core
/// with the DSP register tiles (elsewhere neither [`RegularLoop::Strided`] nor
/// [`RegularLoop::Quads`]), `strided` unless a strided pointwise layer was refused its loop;
/// `None` where the reference kernel runs it. The dispatch itself decides with this function,
/// so a kernel set computed with it (`engine::KernelSet::of`) cannot disagree with it.
#[inline(always)]
pub fn regular_loop(
    g: &ConvGeometry,
    dims: ([usize; 3], [usize; 3]),
    (wide, words): (bool, bool),
    tiles: bool,
    strided: bool,
) -> Option<RegularLoop> {
    let ([_, _, in_c], _) = dims;
    let [kh, kw] = g.kernel;
    let per_out = kh * kw * in_c;
    let fits_columns = kh * row_values(kw, in_c) <= MAX_COLUMN;
    // (Worked out only for the layers that take it: a layer run in bands pays this per band.)
    let columns = || {
        RegularLoop::Columns(match column_buffers(kh, kw, in_c, dims.1[2]) {
            _ if !tiles => ColumnBuffers::Small,
            (true, false) => ColumnBuffers::Small,
            (false, true) => ColumnBuffers::Whole,
            _ => ColumnBuffers::Both,
        })
    };
    if g.strided_input(in_c) {
        return fits_columns.then(columns);
    }
    if strided && tiles && takes_pointwise_strided(g, dims) {
        return Some(RegularLoop::Strided);
    }
    Some(if in_c % 4 != 0 && fits_columns {
        columns()
    } else if words && in_c % 2 == 0 && per_out <= MAX_WIDE_PRODUCTS && is_pointwise(g) {
        RegularLoop::Pointwise
    } else if tiles && quad_windows(g, dims, wide) {
        RegularLoop::Quads
    } else {
        RegularLoop::Pixels
    })
}

/// Every loop of [`run`].
pub struct AllLoops;

impl Loops for AllLoops {
    const REGULAR: bool = true;
    const DEPTHWISE: bool = true;
}

/// Runs `conv` into `output` (`[out_h, out_w, out_c]`) if a fast loop covers it; `false`
/// (nothing written) if not.
#[inline]
pub fn run<X: Lanes, Y: Store + 'static>(conv: &Conv<'_, X>, output: &mut [Y]) -> bool {
    run_loops::<X, Y, AllLoops>(conv, output, None)
}

/// The set-up of a layer run in bands of rows (in place, `engine::in_place`) kept from one
/// band's call to the next: the band driver makes one per layer, for the loop that layer
/// takes, and passes it to every band's call, so that the loop prepares its per-layer
/// constants on the first band instead of on each (a band is an ordinary convolution of the
/// same weights, factors and clamp on fewer rows). A loop checks that what it holds is its
/// layer's ([`LayerKey`]) before reading it, and ignores a set-up of another loop's kind.
pub enum Prepared<'a, 'b> {
    /// A depthwise 3x3 convolution's pixel loop ([`super::depthwise::by_pixel`]).
    Pixel(&'a mut PixelSetUp<'b>),
    /// A pointwise layer's four-channel loop (`pointwise_layer`).
    Pointwise(&'a mut PointwiseSetUp<'b>),
}

pub use super::depthwise::{PixelSetUp, PIXEL_RING};

/// Whether a [`PointwiseSetUp`] serves: the four-channel tiles run (DSP cores, and the tests).
/// Elsewhere the band driver does not make one (stack for nothing).
pub const POINTWISE_SET_UP: bool = TILES;

/// Whether a [`PixelSetUp`] serves: the depthwise pixel loop runs (DSP cores only; the
/// Cortex-M0 and M3 keep the row loops, and their stack would carry 5.6 KiB for nothing).
pub const PIXEL_SET_UP: bool = cfg!(icefold_dsp);

/// Words a pointwise layer's widened weights take in a [`PointwiseSetUp`]: `out_c` rounded up
/// to a group of four, times `in_c / 2`.
pub fn pointwise_set_up_words(in_c: usize, out_c: usize) -> usize {
    out_c.div_ceil(4) * 4 * (in_c / 2)
}

/// A pointwise layer's weights widened for the four-channel tile ([`simd::widen_interleaved`],
/// every group of four output channels one after the other), kept across the bands of a layer
/// run in place: widening them was most of a band's set-up (about 600 instructions per group
/// of four 64-input channels, 16 groups per band on DS-CNN). The band driver lends the buffer,
/// sized to the layer ([`pointwise_set_up_words`]); a layer whose weights do not fit it
/// widens per band as before.
pub struct PointwiseSetUp<'a> {
    widened: &'a mut [u32],
    /// The layer whose weights `widened` and constants `stages` hold, if any.
    layer: Option<LayerKey>,
    /// Per group of four output channels (the first [`POINTWISE_STAGES`]), the fused tile's
    /// constants ([`simd::QuadStage`]), or `None` where the group takes the unfused loop:
    /// building them was most of what a band's call still did per group (about 500
    /// instructions per group per band on DS-CNN). Groups past these build theirs per call.
    stages: [simd::QuadStage; POINTWISE_STAGES],
    /// Which of `stages` hold a group's constants (the others take the unfused loop).
    staged: [bool; POINTWISE_STAGES],
    /// The unfused loop's block buffers, zeroed once per layer rather than once per band.
    blocks: Blocks,
    /// Whether every group of `layer` has a stage in `stages` ([`pointwise_staged`]).
    fused: bool,
    /// Whether `widened` holds `layer`'s [`simd::small_pixels`] records (8 input channels,
    /// [`small_records`]) rather than widened weights, their clamp `clamp`.
    small: bool,
    clamp: Option<simd::QuadClamp>,
}

/// Groups of four output channels whose fused-tile constants a [`PointwiseSetUp`] keeps (64
/// channels, DS-CNN's: 1.4 KiB of the set-up's frame).
const POINTWISE_STAGES: usize = 16;

impl<'a> PointwiseSetUp<'a> {
    /// Nothing prepared yet, the weights to be widened into `widened`.
    pub fn new(widened: &'a mut [u32]) -> PointwiseSetUp<'a> {
        PointwiseSetUp {
            widened,
            layer: None,
            stages: [simd::QuadStage::EMPTY; POINTWISE_STAGES],
            staged: [false; POINTWISE_STAGES],
            blocks: Blocks::new(),
            fused: false,
            small: false,
            clamp: None,
        }
    }
}

/// Which layer a set-up was prepared for: its weights' and biases' addresses (a band keeps its
/// layer's), so that a set-up given another layer's operands (a caller's mistake) is prepared
/// again rather than read. Two words: a longer key is compared by a `memcmp` call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct LayerKey([usize; 2]);

impl LayerKey {
    pub(super) fn of<X>(c: &Conv<'_, X>) -> LayerKey {
        LayerKey([c.weights.as_ptr().addr(), c.channels.bias.as_ptr().addr()])
    }
}

/// [`run`] with the loops of `L` only; `false` (nothing written) for a geometry no loop of `L`
/// covers.
///
/// Not inlined, nor are the loops it picks: one call per layer costs nothing, each loop's stack
/// buffers (up to 1.5 KiB) are not added to the others', and the firmware keeps one function per
/// loop and element-type pair (visible to the object-level no-float check).
#[inline(never)]
pub fn run_loops<X: Lanes, Y: Store + 'static, L: Loops>(
    conv: &Conv<'_, X>,
    output: &mut [Y],
    prepared: Option<&mut Prepared>,
) -> bool {
    if cfg!(icefold_reference_only) {
        return false;
    }
    let g = conv.geometry;
    let ([_, _, in_c], [_, _, out_c]) = conv.dims;
    let taps = g.kernel[0].saturating_mul(g.kernel[1]);
    if taps == 0 || taps > MAX_TAPS || in_c == 0 || out_c == 0 || g.stride.contains(&0) {
        return false;
    }
    // Output pixels `out_stride` elements apart: a view (zero-copy concatenation) or dense.
    let strided = g.out_stride(out_c) != out_c;
    // Input pixels wider than `in_c`: a channel slice read in place. The loops that gather
    // their input (receptive fields, the depthwise rows) read it at its stride; the others
    // leave it to the reference kernel.
    let slice_input = g.strided_input(in_c);
    if g.groups == 1 {
        if !L::REGULAR {
            return false;
        }
        if x86(conv, output) {
            return true;
        }
        // The loop the layer takes; one the firmware does not link leaves the layer to the
        // reference kernel (the same bytes, more time).
        let words = X::words(conv.input).is_some();
        let tiles = TILES && !host_avx2();
        let class = |strided| regular_loop(g, conv.dims, (X::WIDE, words), tiles, strided);
        let first = class(true);
        if !first.is_some_and(RegularLoop::linked::<L>) {
            return false;
        }
        // (Each loop's call guarded by its constant too, so that the compiler sees which it
        // need not link.)
        if slice_input && (L::COLUMNS || L::COLUMNS_WHOLE) {
            columns_any::<X, Y, L>(conv, output);
            return true;
        }
        // A pointwise layer run in bands: its weights widened once per layer.
        if let Some(Prepared::Pointwise(setup)) = prepared {
            if L::POINTWISE && first == Some(RegularLoop::Pointwise) {
                pointwise_layer_with(conv, output, setup);
                return true;
            }
        }
        // A strided pointwise layer: its pixels gathered, then as a dense one (DSP cores: out of
        // the Cortex-M3's build, whose loops LLVM compiled differently with it, +0.07 %).
        #[cfg(any(icefold_dsp, test))]
        if L::POINTWISE && first == Some(RegularLoop::Strided) && pointwise_strided(conv, output) {
            return true;
        }
        // A strided pointwise layer refused (an operand not word-aligned): the loop it takes
        // otherwise.
        let taken = if first == Some(RegularLoop::Strided) {
            class(false)
        } else {
            first
        };
        match taken.filter(|t| t.linked::<L>()) {
            Some(taken) => regular::<X, Y, L>(conv, output, taken),
            None => return false,
        }
        true
    } else if g.groups == in_c && g.groups == out_c {
        if !L::DEPTHWISE {
            return false;
        }
        if x86(conv, output) {
            return true;
        }
        // A slice read in place is read value by value (its channel pairs need not be words).
        let words = if slice_input {
            None
        } else {
            X::words(conv.input)
        };
        // Narrow maps on DSP cores: pixel by pixel, the channel pairs innermost (a dense input
        // and output only, like the row kernel below).
        if L::DEPTHWISE_PIXEL
            && cfg!(icefold_dsp)
            && !strided
            && super::depthwise::covers_by_pixel(conv)
        {
            if let Some(words) = words {
                let taken = match prepared {
                    Some(Prepared::Pixel(setup)) => {
                        super::depthwise::by_pixel_with(conv, words, output, setup)
                    }
                    _ => super::depthwise::by_pixel(conv, words, output),
                };
                if taken {
                    return true;
                }
            }
        }
        // The other loops, if linked ([`Loops::DEPTHWISE_ROWS`]), else the reference kernel.
        if !L::DEPTHWISE_ROWS {
            return false;
        }
        // The 3x3 row kernel writes dense rows only.
        if !strided && super::depthwise::covers(conv) {
            super::depthwise::depthwise3x3(conv, words, output);
            return true;
        }
        match words {
            Some(words) if in_c % 2 == 0 => depthwise_pairs(conv, words, output),
            _ => depthwise(conv, output),
        }
        true
    } else {
        false
    }
}

/// The x86_64 AVX2 convolution ([`crate::kernels::x86::int8`]), if it takes `conv` (AVX2
/// present, a regular or depthwise window it covers); `false` elsewhere and, in this module's
/// tests, while they run the portable loops.
#[inline(always)]
fn x86<X: Lanes, Y: Store + 'static>(conv: &Conv<'_, X>, output: &mut [Y]) -> bool {
    #[cfg(test)]
    if tests::PORTABLE_TILES.with(|p| p.get()) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    return crate::kernels::x86::int8::conv(conv, output);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (conv, output);
        false
    }
}

/// The output stage of channel `o`, if the arrays have it.
#[inline]
pub(super) fn stage(channels: &ChannelQuant, o: usize) -> Option<(i32, Stage)> {
    let bias = *channels.bias.get(o)?;
    let requant = crate::quant::Requant {
        multiplier: *channels.multiplier.get(o)?,
        shift: *channels.shift.get(o)?,
    };
    Some((bias, Stage::new(requant)))
}

/// Input coordinate of output `out` at tap `tap`: `out·stride + tap·dilation − pad`, if inside.
///
/// Wrapping arithmetic: for a geometry the loader accepted, `out · stride` and `tap · dilation`
/// are each at most the padded input size (below 3 · 2^16: dimensions and pads are u16, and the
/// output size follows from them), so nothing wraps and this equals the reference's checked
/// `window_coord`; for any other, a wrapped value is only
/// ever compared with `size`, so it reads as padding or as some element inside, never out of
/// bounds.
#[inline(always)]
pub(super) fn coord(
    out: usize,
    stride: usize,
    tap: usize,
    dilation: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    let at = out
        .wrapping_mul(stride)
        .wrapping_add(tap.wrapping_mul(dilation))
        .wrapping_sub(pad);
    (at < size).then_some(at)
}

/// Stores `acc` of one output through its channel's stage.
#[inline(always)]
fn finish<Y: Store>(bounds: &Bounds, stage: &Stage, acc: i32) -> Y {
    Y::from_wide(bounds.apply(stage.scale(acc)) as i16)
}

/// Outputs along one axis whose every tap lies inside the input: `lo..hi` (possibly empty).
fn interior(
    out: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    kernel: usize,
    size: usize,
) -> (usize, usize) {
    let span = dilation * (kernel - 1) + 1;
    // `run` refuses stride 0; the `max` keeps this function total (no division by zero).
    let stride = stride.max(1);
    let lo = pad.div_ceil(stride);
    let hi = match (size + pad).checked_sub(span) {
        Some(last) => (last / stride + 1).min(out),
        None => 0,
    };
    (lo.min(hi), hi)
}

/// Largest reduction (`kh · kw · in_c`) whose weights [`regular`] widens to int16 pairs on the
/// stack for an int16 input (the 16×8 layers sum at most 256 products: see
/// `quant::contract`); 2 output channels × 128 words = 1 KiB of stack.
const MAX_WIDE_PRODUCTS: usize = 256;

/// Whether the hand-written tiles run: [`regular`] widens int8 weights for an int8 input
/// ([`Packed`]) and whole windows go to one call ([`Operands::window`],
/// [`Operands::window_one`]). With the DSP extension (the SXTB16/SMLAD loops of `simd`), and in
/// tests (their portable twins against the reference). Not on cores without it: there the
/// twins' lane arithmetic costs more than the previous loops (Cortex-M3, ResNet-8: 62.3 M →
/// 64.5 M instructions measured).
pub(crate) const TILES: bool = cfg!(any(icefold_dsp, test));

/// Largest reduction whose int8 weights [`regular`] widens for an int8 input
/// ([`simd::widen_quads`]: one word per product of the channel pair): ResNet-8's 3x3 × 64
/// channels. 2.25 KiB of stack, shared with the int16 layers' buffer.
const MAX_PACKED_PRODUCTS: usize = 576;

/// Words per channel of [`regular`]'s widened-weights buffer: int8 pairs need
/// [`MAX_PACKED_PRODUCTS`] words in all where the tiles run, int16 layers half of
/// [`MAX_WIDE_PRODUCTS`] per channel (1 KiB in all, the size on cores without the tiles).
const WIDE_WORDS: usize = if TILES {
    MAX_PACKED_PRODUCTS / 2
} else {
    MAX_WIDE_PRODUCTS / 2
};

/// How [`regular`] reads the dot products of two output channels.
trait Operands {
    /// Whether [`Self::window`] and [`Self::window_one`] may compute (else `border_pixel`
    /// skips the clipped window's bounds, and the compiler the code).
    const WINDOWS: bool = false;
    /// `acc[k] += Σ w[k][w_at + i] · x[x_at + i]` over `n` values, for one pixel.
    fn one(&self, w_at: usize, x_at: usize, n: usize, acc: [i32; 2]) -> [i32; 2];
    /// The same for two pixels (`x_at[p]`): `acc[2p + k]`.
    fn two(&self, w_at: usize, x_at: [usize; 2], n: usize, acc: [i32; 4]) -> [i32; 4];
    /// [`Self::two`] over a whole window in one call, if these operands have a loop for it and
    /// take its shape: `rows` rows of `n` values from weight 0 (the weight rows one after the
    /// other) and from `x_at[p]`, the activation rows `x_step` values apart.
    fn window(
        &self,
        _x_at: [usize; 2],
        _rows: usize,
        _n: usize,
        _x_step: usize,
        _acc: [i32; 4],
    ) -> Option<[i32; 4]> {
        None
    }
    /// [`Self::one`] over the clipped window of a border pixel in one call, if these operands
    /// have a loop for it and take its shape: `shape.rows` rows of `shape.len` values from
    /// weight `w_at` and activation `x_at`, the rows `shape.w_step` and `shape.x_step` values
    /// apart.
    fn window_one(
        &self,
        _w_at: usize,
        _x_at: usize,
        _shape: simd::Rows,
        _acc: [i32; 2],
    ) -> Option<[i32; 2]> {
        None
    }
}

/// Whether the host runs the AVX2 dot products ([`Wide`] and [`Packed`] then sum row by row
/// with them rather than through the window loops).
#[inline(always)]
fn host_avx2() -> bool {
    #[cfg(all(test, target_arch = "x86_64"))]
    if tests::PORTABLE_TILES.with(|p| p.get()) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernels::x86::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// int8 weights and any activation: four values per step, widened in registers.
struct Quads<'a, X> {
    w: [&'a [i8]; 2],
    x: &'a [X],
}

impl<X: Lanes> Operands for Quads<'_, X> {
    #[inline(always)]
    fn one(&self, w_at: usize, x_at: usize, n: usize, acc: [i32; 2]) -> [i32; 2] {
        let w = self.w.map(|w| w.get(w_at..w_at + n).unwrap_or_default());
        dot(w, self.x.get(x_at..x_at + n).unwrap_or_default(), acc)
    }

    #[inline(always)]
    fn two(&self, w_at: usize, x_at: [usize; 2], n: usize, acc: [i32; 4]) -> [i32; 4] {
        let w = self.w.map(|w| w.get(w_at..w_at + n).unwrap_or_default());
        let x = x_at.map(|at| self.x.get(at..at + n).unwrap_or_default());
        dot2(w, x, acc)
    }
}

/// Weights widened to int16 pairs and an int16 input read as words: two products per SMLAD
/// with no widening in the loop. Offsets are in elements and even.
struct Wide<'a> {
    w: [&'a [u32]; 2],
    x: &'a [u32],
}

impl Operands for Wide<'_> {
    const WINDOWS: bool = TILES;
    #[inline(always)]
    fn one(&self, w_at: usize, x_at: usize, n: usize, [mut a0, mut a1]: [i32; 2]) -> [i32; 2] {
        let (w_at, x_at, n) = (w_at / 2, x_at / 2, n / 2);
        let w = self.w.map(|w| w.get(w_at..w_at + n).unwrap_or_default());
        let x = self.x.get(x_at..x_at + n).unwrap_or_default();
        if let Some([r]) = words_x86(w, [x], [[a0, a1]]) {
            return r;
        }
        for ((x, w0), w1) in x.iter().zip(w[0]).zip(w[1]) {
            a0 = simd::smlad(*w0, *x, a0);
            a1 = simd::smlad(*w1, *x, a1);
        }
        [a0, a1]
    }

    #[inline(always)]
    fn two(&self, w_at: usize, x_at: [usize; 2], n: usize, acc: [i32; 4]) -> [i32; 4] {
        let [a0, a1, b0, b1] = acc;
        let (w_at, n) = (w_at / 2, n / 2);
        let w = self.w.map(|w| w.get(w_at..w_at + n).unwrap_or_default());
        let [xa, xb] = x_at.map(|at| self.x.get(at / 2..at / 2 + n).unwrap_or_default());
        if let Some([[a0, a1], [b0, b1]]) = words_x86(w, [xa, xb], [[a0, a1], [b0, b1]]) {
            return [a0, a1, b0, b1];
        }
        simd::smlad_2x2(w, [xa, xb], acc)
    }

    #[inline(always)]
    fn window(
        &self,
        x_at: [usize; 2],
        rows: usize,
        n: usize,
        x_step: usize,
        acc: [i32; 4],
    ) -> Option<[i32; 4]> {
        if !TILES || host_avx2() || (x_at[0] | x_at[1] | n | x_step) % 2 != 0 {
            return None;
        }
        let x = x_at.map(|at| self.x.get(at / 2..).unwrap_or_default());
        let window = simd::Window {
            rows,
            len: n / 2,
            x_step: x_step / 2,
        };
        simd::smlad_2x2_rows(self.w, x, window, acc)
    }

    #[inline(always)]
    fn window_one(
        &self,
        w_at: usize,
        x_at: usize,
        shape: simd::Rows,
        acc: [i32; 2],
    ) -> Option<[i32; 2]> {
        let simd::Rows {
            rows,
            len,
            x_step,
            w_step,
        } = shape;
        if !TILES || host_avx2() || (w_at | x_at | len | x_step | w_step) % 2 != 0 {
            return None;
        }
        let w = self.w.map(|w| w.get(w_at / 2..).unwrap_or_default());
        let x = self.x.get(x_at / 2..).unwrap_or_default();
        let shape = simd::Rows {
            rows,
            len: len / 2,
            x_step: x_step / 2,
            w_step: w_step / 2,
        };
        simd::smlad_2x1_rows(w, x, shape, acc)
    }
}

/// int8 weights widened once per channel pair ([`simd::widen_quads`]: four words per run of
/// four products, so a run's words start at its product index) and an int8 input read as words
/// of four values: pixel pairs run [`simd::sxtb16_2x2`], single (border) pixels the int8
/// weights as [`Quads`]. Offsets and lengths are in elements, multiples of 4.
struct Packed<'a, X> {
    w: &'a [u32],
    x: &'a [u32],
    raw: Quads<'a, X>,
}

impl<X: Lanes> Operands for Packed<'_, X> {
    const WINDOWS: bool = TILES;
    #[inline(always)]
    fn one(&self, w_at: usize, x_at: usize, n: usize, acc: [i32; 2]) -> [i32; 2] {
        self.raw.one(w_at, x_at, n, acc)
    }

    #[inline(always)]
    fn two(&self, w_at: usize, x_at: [usize; 2], n: usize, acc: [i32; 4]) -> [i32; 4] {
        // `regular` takes this path only for input channels in multiples of 4, so every
        // offset is; anything else would drop values: the int8 weights instead.
        if (w_at | x_at[0] | x_at[1] | n) % 4 != 0 {
            return self.raw.two(w_at, x_at, n, acc);
        }
        if host_avx2() {
            // The host's AVX2 dot products, on the int8 weights.
            return self.raw.two(w_at, x_at, n, acc);
        }
        let w = self.w.get(w_at..w_at + n).unwrap_or_default();
        let x = x_at.map(|at| self.x.get(at / 4..(at + n) / 4).unwrap_or_default());
        simd::sxtb16_2x2(w, x, acc)
    }

    #[inline(always)]
    fn window(
        &self,
        x_at: [usize; 2],
        rows: usize,
        n: usize,
        x_step: usize,
        acc: [i32; 4],
    ) -> Option<[i32; 4]> {
        if !TILES || host_avx2() || (x_at[0] | x_at[1] | n | x_step) % 4 != 0 {
            return None;
        }
        let x = x_at.map(|at| self.x.get(at / 4..).unwrap_or_default());
        let window = simd::Window {
            rows,
            len: n / 4,
            x_step: x_step / 4,
        };
        simd::sxtb16_2x2_rows(self.w, x, window, acc)
    }

    #[inline(always)]
    fn window_one(
        &self,
        w_at: usize,
        x_at: usize,
        shape: simd::Rows,
        acc: [i32; 2],
    ) -> Option<[i32; 2]> {
        let simd::Rows {
            rows,
            len,
            x_step,
            w_step,
        } = shape;
        if !TILES || host_avx2() || (w_at | x_at | len | x_step | w_step) % 4 != 0 {
            return None;
        }
        // A run's four weight words start at its first product's index.
        let w = self.w.get(w_at..).unwrap_or_default();
        let x = self.x.get(x_at / 4..).unwrap_or_default();
        let shape = simd::Rows {
            rows,
            len: len / 4,
            x_step: x_step / 4,
            w_step: w_step / 4,
        };
        simd::sxtb16_2x1_rows(w, x, shape, acc)
    }
}

/// `groups == 1`: output channels in pairs; interior output pixels in pairs, one dot product
/// per kernel row (dilation 1) or tap; border pixels one at a time, their padded taps from
/// per-tap sums of the pad values' products computed once per channel pair.
/// `taken` is the loop [`regular_loop`] chose, one `L` links: the others' calls are guarded by
/// `L`'s constants, so that a firmware does not link them.
#[inline(never)]
fn regular<X: Lanes, Y: Store + 'static, L: Loops>(
    c: &Conv<'_, X>,
    output: &mut [Y],
    taken: RegularLoop,
) {
    let ([_, _, in_c], [_, _, out_c]) = c.dims;
    let [kh, kw] = c.geometry.kernel;
    let per_out = kh * kw * in_c;
    match taken {
        // Few input channels (first layers): a kernel row is a short, odd run; gather whole
        // receptive fields instead (a tail call: this frame's buffers are not live).
        RegularLoop::Columns(_) => return columns_any::<X, Y, L>(c, output),
        // Pointwise: output pixel p reads input pixel p, nothing else (decided once, not per
        // channel pair: the array compares are `memcmp` calls). A tail call with its own
        // buffers (three register arguments, so LLVM makes it a jump: this frame's buffers are
        // not live), so that this frame does not grow for the other layers.
        RegularLoop::Pointwise if L::POINTWISE => return pointwise_layer(c, output),
        // Input channels in multiples of 8 (int16) or 16 (int8): output channels four at a
        // time, a tail call with its own buffers like the pointwise one (with the tiles only:
        // `regular_loop` never gives it elsewhere, and the guard keeps it out of those builds).
        RegularLoop::Quads if TILES && L::QUADS => return quads_from::<X, Y>(c, output),
        RegularLoop::Pixels if L::PIXELS => {}
        _ => return,
    }
    // int16 inputs read as words, weights widened once per channel pair.
    let words = if in_c % 2 == 0 && per_out <= MAX_WIDE_PRODUCTS {
        X::words(c.input)
    } else {
        None
    };
    // int8 inputs read as words of four, weights widened once per channel pair.
    let packed = if TILES && in_c % 4 == 0 && per_out <= MAX_PACKED_PRODUCTS {
        X::packed(c.input)
    } else {
        None
    };
    // Per channel pair, reused (not re-zeroed: each pair writes what it reads). int16 layers
    // use each half for one channel, int8 layers the whole as one run.
    let mut wide = [[0u32; WIDE_WORDS]; 2];
    let padded = c.geometry.pad != [0; 4];
    let mut o = 0;
    while o < out_c {
        let pair = o + 1 < out_c;
        let second = if pair { o + 1 } else { o };
        let rows = [o, second].map(|o| c.weights.get(o * per_out..(o + 1) * per_out));
        let (Some(w0), Some(w1)) = (rows[0], rows[1]) else {
            return;
        };
        let (Some((b0, s0)), Some((b1, s1))) = (stage(c.channels, o), stage(c.channels, second))
        else {
            return;
        };
        // Only border pixels read the pad sums: an unpadded layer has none (and skips the
        // copies of two 256-byte arrays per channel pair).
        let computed;
        let pads = if padded {
            computed = [w0, w1].map(|w| pad_sums(&c.padding, w, in_c));
            &computed
        } else {
            &NO_PADS
        };
        let outs = Outputs {
            bias: [b0, b1],
            stage: [s0, s1],
            o,
            pair,
        };
        match words {
            Some(x) => {
                for (buf, w) in wide.iter_mut().zip([w0, w1]) {
                    for (slot, w) in buf.iter_mut().zip(w.chunks_exact(2)) {
                        if let Some(&[lo, hi]) = w.first_chunk::<2>() {
                            *slot = simd::pair(i32::from(lo), i32::from(hi));
                        }
                    }
                }
                let w = wide
                    .each_ref()
                    .map(|w| w.get(..per_out / 2).unwrap_or_default());
                pixels(c, &mut *output, &Wide { w, x }, &outs, pads);
            }
            None => {
                let raw = Quads {
                    w: [w0, w1],
                    x: c.input,
                };
                match packed {
                    Some(x) => {
                        let flat = wide.as_flattened_mut();
                        let runs = flat.chunks_exact_mut(4).zip(w0.chunks_exact(4));
                        for ((slot, q0), q1) in runs.zip(w1.chunks_exact(4)) {
                            let (Ok(slot), Some(q0), Some(q1)) = (
                                <&mut [u32; 4]>::try_from(slot),
                                q0.first_chunk::<4>(),
                                q1.first_chunk::<4>(),
                            ) else {
                                continue;
                            };
                            *slot = simd::widen_quads(q0, q1);
                        }
                        let w = flat.get(..per_out).unwrap_or_default();
                        pixels(c, &mut *output, &Packed { w, x, raw }, &outs, pads);
                    }
                    None => pixels(c, &mut *output, &raw, &outs, pads),
                }
            }
        }
        o += if pair { 2 } else { 1 };
    }
}

/// Words of [`pointwise_layer`]'s widened weights: four channels' interleaved
/// ([`simd::widen_interleaved`]) where the four-channel tile runs (2 KiB), else a channel
/// pair's (1 KiB, the size on cores without the tiles; the pair path uses the first half
/// either way).
const POINTWISE_WORDS: usize = if TILES {
    2 * MAX_WIDE_PRODUCTS
} else {
    MAX_WIDE_PRODUCTS
};

/// Whether [`regular_quads`] takes a layer on a core with the DSP tiles: input channels in multiples of
/// 8 for an int16 input, 16 for an int8 one (every clipped window row is a multiple of 4
/// words), dilation 1 along rows (a window row is contiguous), output rows of at most
/// [`POINTWISE_BLOCK`] pixels (one block of sums), at least four output channels, at most
/// [`QUAD_TAPS`] taps, and weights that fit the widened buffer.
fn quad_windows(g: &ConvGeometry, dims: ([usize; 3], [usize; 3]), wide: bool) -> bool {
    let ([_, _, in_c], [_, out_w, out_c]) = dims;
    let [kh, kw] = g.kernel;
    let (multiple, products) = if wide {
        (8, MAX_WIDE_PRODUCTS)
    } else {
        (16, MAX_QUAD_PRODUCTS)
    };
    in_c % multiple == 0
        && g.dilation[1] == 1
        && out_w <= POINTWISE_BLOCK
        && out_c >= 4
        && kh * kw <= QUAD_TAPS
        && kh * kw * in_c <= products
}

/// Largest reduction whose int8 weights [`regular_quads`] widens for an int8 input: four
/// channels' two words per product pair, 4.5 KiB of stack (ResNet-8's 3x3 × 64 channels,
/// `MAX_PACKED_PRODUCTS`).
const MAX_QUAD_PRODUCTS: usize = MAX_PACKED_PRODUCTS;

/// [`simd::sxtb16_4x1_run`] for an int8 input (`I8`), else [`simd::smlad_4x1_run`] (inlined:
/// out of line, the calls for border pixels cost ResNet-8 1 % more instructions).
#[inline(always)]
fn quad_run<const I8: bool>(
    w: &[u32],
    x: &[u32],
    run: (simd::Rows, usize),
    bias: [i32; 4],
    sums: &mut [i32],
    pixels: usize,
) -> bool {
    if I8 {
        simd::sxtb16_4x1_run(w, x, run, bias, sums, pixels)
    } else {
        simd::smlad_4x1_run(w, x, run, bias, sums, pixels)
    }
}

/// Most taps of a window [`regular_quads`] takes (its pad sums: four channels' on the stack).
const QUAD_TAPS: usize = 16;

/// Most border columns [`regular_quads`] runs as columns (their sums kept for the rows: 512
/// bytes of stack each); a layer with more (pads of 2 or more) runs its border pixels one by
/// one.
const BORDER_COLUMNS: usize = 2;

/// The four output channels of a group starting at `o`, the last channel repeated for a
/// tail of one to three (computed again, not written), and how many are written.
fn quad_channels(o: usize, out_c: usize) -> ([usize; 4], usize) {
    let last = out_c.saturating_sub(1);
    (
        [o, o + 1, o + 2, o + 3].map(|ch| ch.min(last)),
        out_c.saturating_sub(o).min(4),
    )
}

/// [`regular`]'s layers four output channels at a time ([`quad_windows`], a tail of one to
/// three channels as a group with the last channel repeated): per group its weights widened
/// interleaved ([`simd::widen_interleaved`] or [`simd::widen_interleaved_quads`],
/// `2 · kh · kw · in_c` words), then runs of output pixels whose windows are clipped alike in
/// one call of [`simd::smlad_4x1_run`] or [`simd::sxtb16_4x1_run`] each: a row's interior
/// pixels, a row clipped vertically (top, bottom), each border column down the rows inside
/// vertically (kept in `columns` until each row's stage), the corners one by one; the padded
/// taps from per-tap sums of the pad values' products in the run's bias. A row's sums then
/// go through each channel's output stage and into the output. `false` if a shape check
/// refuses (never for the layers `quad_windows` admits: the tests check it). Its own buffers
/// (4.5 KiB of widened weights, 1 KiB of border columns' sums, 1 KiB of sums and pad sums),
/// called as a tail call from `regular`, whose frame then is not live.
#[inline(never)]
fn regular_quads<X: Lanes, const I8: bool>(c: &Conv<'_, X>, mut output: Outs<'_>) -> bool {
    let g = c.geometry;
    let ([in_h, in_w, in_c], [out_h, out_w, out_c]) = c.dims;
    let [kh, kw] = g.kernel;
    let per_out = kh * kw * in_c;
    // The input as words: int8 values four to a word, int16 two.
    let (x, per_word) = if I8 {
        (X::packed(c.input), 4)
    } else {
        (X::words(c.input), 2)
    };
    let Some(x) = x else {
        return false;
    };
    let (y_lo, y_hi) = interior(out_h, g.stride[0], g.dilation[0], g.pad[0], kh, in_h);
    let (x_lo, x_hi) = interior(out_w, g.stride[1], g.dilation[1], g.pad[1], kw, in_w);
    let out_stride = g.out_stride(out_c).max(1);
    let padded = g.pad != [0; 4];
    // Words per input pixel, between two kernel rows' inputs.
    let half = in_c / per_word;
    let x_step = g.dilation[0] * in_w * half;
    // Two weight words per product pair of the four channels either way.
    let mut wide = [0u32; 2 * MAX_QUAD_PRODUCTS];
    let mut accs = [0i32; 2 * simd::QUAD_SPLIT];
    let mut narrow = [0i16; 2 * simd::QUAD_SPLIT];
    let mut pads = [[0i32; QUAD_TAPS]; 4];
    let mut columns = [[0i32; 2 * simd::QUAD_SPLIT]; BORDER_COLUMNS];
    let mut o = 0;
    while o < out_c {
        let (chs, valid) = quad_channels(o, out_c);
        let rows = chs.map(|o| c.weights.get(o * per_out..(o + 1) * per_out));
        let [Some(w0), Some(w1), Some(w2), Some(w3)] = rows else {
            return false;
        };
        let (Some((b0, s0)), Some((b1, s1)), Some((b2, s2)), Some((b3, s3))) = (
            stage(c.channels, chs[0]),
            stage(c.channels, chs[1]),
            stage(c.channels, chs[2]),
            stage(c.channels, chs[3]),
        ) else {
            return false;
        };
        let Some(w4) = wide.get_mut(..2 * per_out) else {
            return false;
        };
        if I8 {
            simd::widen_interleaved_quads([w0, w1, w2, w3], per_out / 4, w4);
        } else {
            simd::widen_interleaved([w0, w1, w2, w3], per_out / 2, w4);
        }
        let w4 = &*w4;
        if padded && c.padding.values.is_empty() {
            // Each tap's pad sums: the zero point times the tap's weights, from the widened
            // words (two per value of the tap; channel `k`'s are the words `≡ k` mod 4), one
            // SMLAD per two weights where the int8 weights' loop took 3.5 instructions each.
            let zero = c.padding.zero.widen();
            let both = simd::pair(zero, zero);
            for (t, words) in w4.chunks_exact((2 * in_c).max(1)).enumerate() {
                let mut acc = [0i32; 4];
                for quad in words.chunks_exact(4) {
                    if let Some(quad) = quad.first_chunk::<4>() {
                        for (a, w) in acc.iter_mut().zip(quad) {
                            *a = simd::smlad(*w, both, *a);
                        }
                    }
                }
                for (sums, a) in pads.iter_mut().zip(acc) {
                    if let Some(sum) = sums.get_mut(t) {
                        *sum = a;
                    }
                }
            }
        } else if padded {
            for (sums, w) in pads.iter_mut().zip([w0, w1, w2, w3]) {
                for (sum, tap) in sums.iter_mut().zip(w.chunks_exact(in_c.max(1))) {
                    *sum = c.padding.tap(tap, 0);
                }
            }
        }
        let stages = [s0, s1, s2, s3];
        let stored = output.stage_bounds(&c.bounds);
        let runs = stages
            .each_ref()
            .map(|s| s.single().and_then(|s| s.run(&stored)));
        let bias = [b0, b1, b2, b3];
        let int8 = matches!(output, Outs::I8(_));
        let size = if int8 { 1 } else { 2 };
        let fused = match (valid, runs) {
            (4, [Some(r0), Some(r1), Some(r2), Some(r3)]) => {
                let runs = [r0, r1, r2, r3];
                simd::QuadClamp::of(&runs, int8).map(|clamp| (runs, clamp))
            }
            _ => None,
        };
        // The kernel rows of output row `oy` whose taps lie inside the input: `ky0..ky1`.
        let rows_inside = |oy: usize| {
            let inside = |ky: usize| coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], in_h);
            let ky0 = (0..kh).find(|&ky| inside(ky).is_some()).unwrap_or(kh);
            let ky1 = (ky0..kh).find(|&ky| inside(ky).is_none()).unwrap_or(kh);
            (ky0, ky1)
        };
        // `pixels` output pixels from (`oy`, `ox`) on, `pixel_step` input words apart, whose
        // windows are clipped alike: kernel rows `ky0..ky1` inside the input, and the columns
        // that output column `ox` has inside; the other taps from the pad sums (one bias for
        // the run). Their sums into `sums` as `simd::QUAD_SPLIT` describes.
        let clipped = |(oy, ox): (usize, usize),
                       (ky0, ky1): (usize, usize),
                       (pixels, pixel_step): (usize, usize),
                       sums: &mut [i32]| {
            let ix0 = ox * g.stride[1];
            let first = g.pad[1].saturating_sub(ix0).min(kw);
            let end = (in_w + g.pad[1]).saturating_sub(ix0).max(first).min(kw);
            let mut acc = bias;
            for ky in 0..kh {
                for kx in 0..kw {
                    if !((ky0..ky1).contains(&ky) && (first..end).contains(&kx)) {
                        let t = ky * kw + kx;
                        for (a, sums) in acc.iter_mut().zip(&pads) {
                            *a = a.wrapping_add(sums.get(t).copied().unwrap_or(0));
                        }
                    }
                }
            }
            if ky0 < ky1 && first < end {
                let Some(iy0) = coord(oy, g.stride[0], ky0, g.dilation[0], g.pad[0], in_h) else {
                    return false;
                };
                let x_at = (iy0 * in_w + ix0 + first - g.pad[1]) * half;
                // Two weight words per product pair of the four channels.
                let w_at = 2 * (ky0 * kw + first) * in_c;
                let shape = simd::Rows {
                    rows: ky1 - ky0,
                    len: (end - first) * half,
                    x_step,
                    w_step: kw * half,
                };
                let (xs, ws) = (
                    x.get(x_at..).unwrap_or_default(),
                    w4.get(w_at..).unwrap_or_default(),
                );
                return quad_run::<I8>(ws, xs, (shape, pixel_step), acc, sums, pixels);
            }
            // No tap inside the input: the pad sums alone.
            let [a0, a1, a2, a3] = acc;
            for p in 0..pixels {
                for (at, v) in [(2 * p, [a0, a1]), (simd::QUAD_SPLIT + 2 * p, [a2, a3])] {
                    if let Some(dst) = sums.get_mut(at..).and_then(|s| s.first_chunk_mut::<2>()) {
                        *dst = v;
                    }
                }
            }
            true
        };
        // The border columns (`ox < x_lo`, `ox >= x_hi`) of the rows inside vertically
        // (`y_lo..y_hi`): one run down each column (their windows are clipped alike), kept in
        // `columns` until each row's stage. One call per column where one per pixel cost about
        // 350 instructions of set-up each (ResNet-8's 8x8 maps: 28 of 64 pixels on the border).
        let border = (0..x_lo).chain(x_hi..out_w);
        let by_column = y_lo < y_hi
            && y_hi - y_lo <= simd::QUAD_SPLIT / 2
            && x_lo + (out_w - x_hi) <= BORDER_COLUMNS;
        if by_column {
            for (sums, ox) in columns.iter_mut().zip(border.clone()) {
                let down = (y_hi - y_lo, g.stride[0] * in_w * half);
                if !clipped((y_lo, ox), (0, kh), down, sums) {
                    return false;
                }
            }
        }
        for oy in 0..out_h {
            let (ky0, ky1) = rows_inside(oy);
            if (y_lo..y_hi).contains(&oy) && x_lo < x_hi {
                // The row's interior pixels (whole windows) in one call, their sums from
                // `2 · x_lo` on.
                let origin =
                    ((oy * g.stride[0] - g.pad[0]) * in_w + x_lo * g.stride[1] - g.pad[1]) * half;
                let shape = simd::Rows {
                    rows: kh,
                    len: kw * half,
                    x_step,
                    w_step: kw * half,
                };
                let run = (shape, g.stride[1] * half);
                let (xs, sums) = (
                    x.get(origin..).unwrap_or_default(),
                    accs.get_mut(2 * x_lo..).unwrap_or_default(),
                );
                if !quad_run::<I8>(w4, xs, run, bias, sums, x_hi - x_lo) {
                    return false;
                }
            } else if x_lo < x_hi {
                // A row clipped vertically: its pixels clipped only there in one call.
                let along = (x_hi - x_lo, g.stride[1] * half);
                let sums = accs.get_mut(2 * x_lo..).unwrap_or_default();
                if !clipped((oy, x_lo), (ky0, ky1), along, sums) {
                    return false;
                }
            }
            let columns_hold = by_column && (y_lo..y_hi).contains(&oy);
            for (slot, ox) in border.clone().enumerate() {
                if columns_hold {
                    // This row's sums of the column's run.
                    let (Some(col), p) = (columns.get(slot), oy - y_lo) else {
                        return false;
                    };
                    for at in [0, simd::QUAD_SPLIT] {
                        let (Some(src), Some(dst)) = (
                            col.get(at + 2 * p..).and_then(|s| s.first_chunk::<2>()),
                            accs.get_mut(at + 2 * ox..)
                                .and_then(|s| s.first_chunk_mut::<2>()),
                        ) else {
                            return false;
                        };
                        *dst = *src;
                    }
                    continue;
                }
                let sums = accs.get_mut(2 * ox..).unwrap_or_default();
                if !clipped((oy, ox), (ky0, ky1), (1, 0), sums) {
                    return false;
                }
            }
            // Four whole channels whose stages clamp alike: straight into the output.
            if let Some((runs, clamp)) = fused {
                let first = (oy * out_w * out_stride + o) * size;
                let out = match &mut output {
                    Outs::I8(y) => bytemuck::cast_slice_mut::<i8, u8>(y),
                    Outs::I16(y) => bytemuck::cast_slice_mut::<i16, u8>(y),
                };
                let out = out.get_mut(first..).unwrap_or_default();
                if simd::stage_quads(&accs, (&runs, clamp), out, (out_w, out_stride)) {
                    continue;
                }
            }
            quad_stages(
                &accs,
                &mut narrow,
                stages.each_ref(),
                &runs,
                &c.bounds,
                out_w,
            );
            // The output's element type matters only here: one `match` per row, so both types
            // share the rest of this function's code.
            let row = (
                &narrow,
                (oy * out_w * out_stride + o, out_stride),
                valid,
                out_w,
            );
            match &mut output {
                Outs::I8(y) => store_quad_row(y, row),
                Outs::I16(y) => store_quad_row(y, row),
            }
        }
        o += 4;
    }
    true
}

/// [`regular_quads`] from `regular`, by a jump (two slices' words of arguments, so `regular`'s
/// frame is not live while the tile runs: an [`Outs`] argument is passed by reference, which
/// would keep it), for the element types of the layer; the body is one copy per input kind.
#[inline(never)]
fn quads_from<X: Lanes, Y: Store>(c: &Conv<'_, X>, output: &mut [Y]) {
    if X::WIDE {
        regular_quads::<X, false>(c, Y::outs(output));
    } else {
        regular_quads::<X, true>(c, Y::outs(output));
    }
}

/// The output stage of four channels' sums over `m` pixels (`accs` laid out as
/// [`simd::QUAD_SPLIT`] describes) into `narrow` (the same layout): each channel as one
/// [`simd::requant_run`] loop where its factor has that form (`runs[k]`), else
/// `narrow_any`. Inlined: out of line (7 KB less code on the M4F) it cost 0.6 % more
/// instructions on ResNet-8, DS-CNN and MobileNet, whose small maps call it per few pixels.
#[inline(always)]
fn quad_stages(
    accs: &[i32],
    narrow: &mut [i16],
    stages: [&Stage; 4],
    runs: &[Option<simd::RunScale>; 4],
    bounds: &Bounds,
    m: usize,
) {
    for (k, (stage, run)) in stages.iter().zip(runs).enumerate() {
        let at = (k / 2) * simd::QUAD_SPLIT + k % 2;
        let (Some(sums), Some(dst)) = (accs.get(at..), narrow.get_mut(at..)) else {
            return;
        };
        match run {
            Some(run) => simd::requant_run(sums, dst, m, run),
            None => super::depthwise::narrow_any(sums, dst, m, stage, bounds),
        }
    }
}

/// A row of `m` pixels' four channels from `narrow` (laid out as [`simd::QUAD_SPLIT`]
/// describes) into `output` from `at` on, `stride` elements per pixel, the first `valid`
/// channels of each.
#[inline(always)]
fn store_quad_row<Y: Store>(
    output: &mut [Y],
    (narrow, (at, stride), valid, m): (&[i16; 2 * simd::QUAD_SPLIT], (usize, usize), usize, usize),
) {
    let (lo, hi) = narrow.split_at(simd::QUAD_SPLIT);
    let pairs = lo.chunks_exact(2).zip(hi.chunks_exact(2)).take(m);
    for (ox, (v01, v23)) in pairs.enumerate() {
        store_quad(output, at + ox * stride, valid, v01, v23);
    }
}

/// A pixel's four channels (`v01`: channels 0 and 1, `v23`: 2 and 3) at `output[at..]`, the
/// first `valid` of them.
#[inline(always)]
fn store_quad<Y: Store>(output: &mut [Y], at: usize, valid: usize, v01: &[i16], v23: &[i16]) {
    if valid == 4 {
        if let (Some(y), Some(&[v0, v1]), Some(&[v2, v3])) = (
            output
                .get_mut(at..at + 4)
                .and_then(|y| y.first_chunk_mut::<4>()),
            v01.first_chunk::<2>(),
            v23.first_chunk::<2>(),
        ) {
            *y = [v0, v1, v2, v3].map(Y::from_wide);
        }
        return;
    }
    let values = v01.iter().take(2).chain(v23.iter().take(2)).take(valid);
    for (y, v) in output
        .get_mut(at..)
        .unwrap_or_default()
        .iter_mut()
        .zip(values)
    {
        *y = Y::from_wide(*v);
    }
}

/// Output pixel `p` reads input pixel `p` and nothing else (1x1, stride 1, no padding).
#[inline(always)]
fn is_pointwise(g: &ConvGeometry) -> bool {
    // Element by element: an array compare is a `memcmp` call.
    let ones = |a: [usize; 2]| a.iter().all(|&v| v == 1);
    ones(g.kernel) && ones(g.stride) && g.pad.iter().all(|&p| p == 0)
}

/// [`regular`]'s pointwise layers on an int16 input read as words: with the DSP tiles, input
/// channels in multiples of 8 and at least four output channels, output channels four at a
/// time ([`pointwise_quads`], a tail of one to three as a group with the last channel
/// repeated); elsewhere per channel pair, its weights widened, then
/// [`pointwise`] over every pixel. The block buffers are zeroed once per call rather than
/// once per channel group (a layer run in bands of rows, in place, calls this once per band).
#[inline(never)]
fn pointwise_layer<X: Lanes, Y: Store>(c: &Conv<'_, X>, output: &mut [Y]) {
    let ([_, _, in_c], [_, _, out_c]) = c.dims;
    let Some(x) = X::words(c.input) else {
        return;
    };
    let out_stride = c.geometry.out_stride(out_c);
    let mut buf = [0u32; POINTWISE_WORDS];
    let mut blocks = Blocks::new();
    let n = in_c / 2;
    let mut o = 0;
    if takes_small(c)
        && small_records(c, matches!(Y::outs(&mut []), Outs::I8(_)), &mut buf).is_some_and(
            |clamp| pointwise_small(x, &buf, clamp, c.geometry.out_stride(out_c), out_c, output),
        )
    {
        return;
    }
    if TILES && n % 4 == 0 && out_c >= 4 && !host_avx2() {
        pointwise_groups(c, x, output, (&mut buf, None), &mut blocks);
        return;
    }
    let (wa, wb) = buf.split_at_mut(MAX_WIDE_PRODUCTS / 2);
    let mut wide = [wa, wb];
    while o < out_c {
        let pair = o + 1 < out_c;
        let second = if pair { o + 1 } else { o };
        let rows = [o, second].map(|o| c.weights.get(o * in_c..(o + 1) * in_c));
        let (Some(w0), Some(w1)) = (rows[0], rows[1]) else {
            return;
        };
        let (Some((b0, s0)), Some((b1, s1))) = (stage(c.channels, o), stage(c.channels, second))
        else {
            return;
        };
        let outs = Outputs {
            bias: [b0, b1],
            stage: [s0, s1],
            o,
            pair,
        };
        for (buf, w) in wide.iter_mut().zip([w0, w1]) {
            for (slot, w) in buf.iter_mut().zip(w.chunks_exact(2)) {
                if let Some(&[lo, hi]) = w.first_chunk::<2>() {
                    *slot = simd::pair(i32::from(lo), i32::from(hi));
                }
            }
        }
        let w = wide
            .each_ref()
            .map(|w| w.get(..in_c / 2).unwrap_or_default());
        let shape = (in_c, out_stride);
        pointwise(x, w, &outs, &c.bounds, shape, &mut blocks, &mut *output);
        o += if pair { 2 } else { 1 };
    }
}

/// [`pointwise_layer`] of a layer run in bands (in place), its groups' widened weights kept in
/// `setup`: widened by the first band's call, read by the others. Its frame has no weight
/// buffer of its own (the set-up is the buffer). A layer whose weights do not fit, or that
/// the four-channel tile does not take, runs [`pointwise_layer`].
#[inline(never)]
fn pointwise_layer_with<X: Lanes, Y: Store>(
    c: &Conv<'_, X>,
    output: &mut [Y],
    setup: &mut PointwiseSetUp<'_>,
) {
    let ([_, _, in_c], [_, _, out_c]) = c.dims;
    let n = in_c / 2;
    let fits = pointwise_set_up_words(in_c, out_c) <= setup.widened.len();
    if let (true, Some(x)) = (takes_small(c), X::words(c.input)) {
        // The records built on the first band, kept for the others (the set-up's buffer holds
        // them instead of widened weights: `small` says which).
        // A set-up holding this layer's widened weights already (its records failed on the
        // first band) keeps them.
        let key = LayerKey::of(c);
        if setup.layer != Some(key) {
            let int8 = matches!(Y::outs(&mut []), Outs::I8(_));
            setup.clamp = small_records(c, int8, setup.widened);
            setup.small = setup.clamp.is_some();
            setup.layer = setup.small.then_some(key);
        }
        let stride = c.geometry.out_stride(out_c);
        if let (true, Some(clamp)) = (setup.small && setup.layer == Some(key), setup.clamp) {
            if pointwise_small(x, setup.widened, clamp, stride, out_c, output) {
                return;
            }
        }
    }
    match X::words(c.input) {
        Some(x) if TILES && fits && n % 4 == 0 && out_c >= 4 && !host_avx2() => {
            let key = LayerKey::of(c);
            if setup.layer == Some(key) && setup.fused {
                pointwise_staged(
                    x,
                    (n, out_c / 4),
                    setup,
                    c.geometry.out_stride(out_c),
                    output,
                );
                return;
            }
            let PointwiseSetUp {
                widened,
                layer,
                stages,
                staged,
                blocks,
                fused,
                small,
                ..
            } = setup;
            // The buffer is about to hold widened weights again.
            *small = false;
            let kept = Some((&mut *layer, &mut stages[..], &mut staged[..]));
            pointwise_groups(c, x, output, (widened, kept), blocks);
            // Every group through a kept stage: the later bands take the short loop.
            let groups = out_c / 4;
            *fused = *layer == Some(key)
                && out_c % 4 == 0
                && staged.get(..groups).is_some_and(|s| s.iter().all(|&s| s));
        }
        _ => pointwise_layer(c, output),
    }
}

/// [`simd::widen_interleaved`] out of line: inlined into [`pointwise_groups`], whose frame
/// holds a set-up's stages too, its loop spilled to the stack (50 instructions per word
/// quad where its own frame takes 34; about 4,000 instructions per DS-CNN layer).
#[inline(never)]
fn widen_group(w: [&[i8]; 4], n: usize, out: &mut [u32]) {
    simd::widen_interleaved(w, n, out);
}

/// Whether [`pointwise_small`] takes `c` (before its records are built): with the DSP tiles, a
/// pointwise layer on 8 input channels (an int16 input read as words) with output channels in
/// fours. (MobileNetV1's second pointwise layer, 8 → 16 at 48x48, spent about 17 instructions
/// per output in the four-channel tile, whose per-pixel and per-group words its 4 SMLADs per
/// output do not amortise.)
fn takes_small<X: Lanes>(c: &Conv<'_, X>) -> bool {
    let ([_, _, in_c], [_, _, out_c]) = c.dims;
    TILES && in_c == 2 * simd::SMALL_WORDS && out_c >= 4 && out_c % 4 == 0 && !host_avx2()
}

/// [`simd::small_pixels`]' records of `c`'s output channels (8 input channels) into `buf`:
/// each channel's bias, weights widened to lane pairs and output stage; their common clamp,
/// or `None` (with `buf` partly written) if `buf` is short, an operand is missing (validation
/// bypassed), a factor has no register form, a channel's constants are too wide for the
/// record ([`simd::small_record`]) or the channels' clamps differ.
#[inline(never)]
fn small_records<X>(c: &Conv<'_, X>, int8: bool, buf: &mut [u32]) -> Option<simd::QuadClamp> {
    let ([_, _, in_c], [_, _, out_c]) = c.dims;
    let records = buf.get_mut(..out_c * simd::SMALL_RECORD)?;
    let mut clamp = None;
    for (o, quad) in records.chunks_exact_mut(4 * simd::SMALL_RECORD).enumerate() {
        let chs = [0, 1, 2, 3].map(|k| 4 * o + k);
        let [Some(r0), Some(r1), Some(r2), Some(r3)] =
            chs.map(|ch| super::depthwise::channel_run(c, ch))
        else {
            return None;
        };
        let runs = [r0, r1, r2, r3];
        let form = simd::QuadClamp::of(&runs, int8)?;
        if *clamp.get_or_insert(form) != form {
            return None;
        }
        for ((ch, run), rec) in chs
            .iter()
            .zip(&runs)
            .zip(quad.chunks_exact_mut(simd::SMALL_RECORD))
        {
            let bias = *c.channels.bias.get(*ch)?;
            let w = c.weights.get(ch * in_c..(ch + 1) * in_c)?;
            rec.copy_from_slice(&simd::small_record(bias, *w.first_chunk::<8>()?, run)?);
        }
    }
    clamp
}

/// A pointwise layer on 8 input channels through [`simd::small_pixels`] (every pixel of `x`,
/// `records` from [`small_records`]); `false`, nothing written, if the shapes do not fit.
#[inline(always)]
fn pointwise_small<Y: Store>(
    x: &[u32],
    records: &[u32],
    clamp: simd::QuadClamp,
    out_stride: usize,
    out_c: usize,
    output: &mut [Y],
) -> bool {
    let bytes = match Y::outs(output) {
        Outs::I8(y) => bytemuck::cast_slice_mut::<i8, u8>(y),
        Outs::I16(y) => bytemuck::cast_slice_mut::<i16, u8>(y),
    };
    let pixels = x.len() / simd::SMALL_WORDS;
    pixels > 0 && simd::small_pixels(records, x, clamp, bytes, (pixels, out_stride, out_c))
}

/// A later band of a pointwise layer whose every group of four output channels takes the
/// fused tile: each group's kept weights and stage straight into the tile (the per-group work
/// of [`pointwise_groups`], its channel and weight-row look-ups, is the first band's).
#[inline(always)]
fn pointwise_staged<Y: Store>(
    x: &[u32],
    (n, groups): (usize, usize),
    setup: &mut PointwiseSetUp<'_>,
    out_stride: usize,
    output: &mut [Y],
) {
    let bytes = match Y::outs(output) {
        Outs::I8(y) => bytemuck::cast_slice_mut::<i8, u8>(y),
        Outs::I16(y) => bytemuck::cast_slice_mut::<i16, u8>(y),
    };
    let pixels = x.len() / n.max(1);
    let PointwiseSetUp {
        widened, stages, ..
    } = setup;
    if let Some(stages) = stages.get_mut(..groups) {
        simd::smlad_4x1_groups(widened, x, n, stages, bytes, (pixels, out_stride));
    }
}

/// A [`PointwiseSetUp`]'s layer key, stages and which of them hold a group's constants.
type KeptStages<'s> = (
    &'s mut Option<LayerKey>,
    &'s mut [simd::QuadStage],
    &'s mut [bool],
);

/// [`pointwise_layer`]'s four-channel groups ([`pointwise_quads`]), each group's weights
/// widened into `widened`: all into its first `4 · n` words, one group after the other, when
/// `held` is `None`; when it is a set-up's layer key and stages, the group from channel `o`
/// into words `o · n ..` (all of them fit) and its fused tile's constants into its stage, and
/// neither at all if the key is `c`'s layer's already (set once every group is prepared).
#[inline(always)]
fn pointwise_groups<X: Lanes, Y: Store>(
    c: &Conv<'_, X>,
    x: &[u32],
    output: &mut [Y],
    (widened, mut held): (&mut [u32], Option<KeptStages<'_>>),
    blocks: &mut Blocks,
) {
    let ([_, _, in_c], [_, _, out_c]) = c.dims;
    let out_stride = c.geometry.out_stride(out_c);
    let n = in_c / 2;
    let key = LayerKey::of(c);
    let int8 = matches!(Y::outs(&mut []), Outs::I8(_));
    let ready = held.as_ref().is_some_and(|(h, _, _)| **h == Some(key));
    if let Some((h, _, _)) = held.as_mut() {
        **h = None;
    }
    let mut o = 0;
    while o < out_c {
        let (chs, valid) = quad_channels(o, out_c);
        let at = if held.is_some() { o * n } else { 0 };
        let w = widened.get_mut(at..at + 4 * n).unwrap_or_default();
        if !ready {
            let rows = chs.map(|o| c.weights.get(o * in_c..(o + 1) * in_c));
            let [Some(w0), Some(w1), Some(w2), Some(w3)] = rows else {
                return;
            };
            // Out of line for a set-up only: inlined, the loop of a layer apart is shortest.
            if held.is_some() {
                widen_group([w0, w1, w2, w3], n, w);
            } else {
                simd::widen_interleaved([w0, w1, w2, w3], n, w);
            }
        }
        // Four whole channels whose factors have the output stage's register form and clamp
        // alike: the fused tile from the factors directly, no `Stage` built (a layer in place
        // comes here once per band: building four `Stage`s cost about 450 instructions), its
        // constants built once per layer where a set-up keeps them.
        let kept = held
            .as_mut()
            .and_then(|(_, stages, staged)| Some((stages.get_mut(o / 4)?, staged.get_mut(o / 4)?)));
        let fused = match kept {
            _ if valid != 4 => false,
            Some((stage, staged)) => {
                if !ready {
                    let built = quad_stage(c, chs, int8);
                    *staged = built.is_some();
                    *stage = built.unwrap_or(simd::QuadStage::EMPTY);
                }
                *staged && pointwise_fused(x, &*w, stage, (o, out_stride, n), &mut *output)
            }
            None => quad_stage(c, chs, int8).is_some_and(|mut stage| {
                pointwise_fused(x, &*w, &mut stage, (o, out_stride, n), &mut *output)
            }),
        };
        if fused {
            o += 4;
            continue;
        }
        let (Some((b0, s0)), Some((b1, s1)), Some((b2, s2)), Some((b3, s3))) = (
            stage(c.channels, chs[0]),
            stage(c.channels, chs[1]),
            stage(c.channels, chs[2]),
            stage(c.channels, chs[3]),
        ) else {
            return;
        };
        let outs = [
            Outputs {
                bias: [b0, b1],
                stage: [s0, s1],
                o,
                pair: true,
            },
            Outputs {
                bias: [b2, b3],
                stage: [s2, s3],
                o: o + 2,
                pair: true,
            },
        ];
        let shape = (n, out_stride, valid);
        pointwise_quads(x, w, &outs, &c.bounds, shape, blocks, &mut *output);
        o += 4;
    }
    if let Some((h, _, _)) = held {
        *h = Some(key);
    }
}

/// The pad sums of an unpadded layer (never read), in flash rather than on the stack.
const NO_PADS: [[i32; MAX_TAPS]; 2] = [[0; MAX_TAPS]; 2];

/// Largest reduction (`kh · kw · in_c`, each kernel row rounded up to whole words) whose
/// receptive fields [`columns`] gathers: 7x7x3 windows (154 values) and smaller.
const MAX_COLUMN: usize = 168;

/// Words of [`columns`]' receptive fields (1 KiB of stack): pixel pairs' fields interleaved
/// word by word, then one field's words (the values of a window gathered value by value). A
/// field is int16 lane pairs in weight order (`(v0, v1), (v2, v3), ...`, the order of an
/// int16 input's words), its kernel rows [`row_values`] apart, the words after them unused
/// (their weights are zero).
const FIELD_WORDS: usize = 256;

/// Most pixels per block of [`columns`] (their sums and int16 results: 384 bytes of stack).
const COLUMN_BLOCK: usize = 32;

/// Words of [`columns`]' widened weights (1 KiB of stack): at least one channel pair of
/// [`MAX_COLUMN`] values.
const COLUMN_WEIGHTS: usize = 256;

/// Words of the fields of [`columns`] with the smaller weight buffer: with the DSP tiles a
/// whole block of [`COLUMN_BLOCK`] pixels of 3x3x3 windows (16 words each) beside the spare
/// field (2 KiB; blocks of 14 such pixels cost ResNet-8's first layer 7 % more); elsewhere
/// (Cortex-M0, whose stack the larger buffer overflows in the kernel check) 1 KiB.
const BLOCK_FIELD_WORDS: usize = if TILES {
    COLUMN_BLOCK * 16 + 16
} else {
    FIELD_WORDS
};

/// Most words of one field in [`columns`] ([`column_words`] of [`MAX_COLUMN`] values).
const MAX_FIELD_WORDS: usize = MAX_COLUMN.div_ceil(8) * 4;

// [`columns`] widens the weights of at least one channel pair, and gathers at least one pixel
// pair's fields beside a spare field.
const _: () = assert!(COLUMN_WEIGHTS >= 2 * MAX_FIELD_WORDS && FIELD_WORDS >= 3 * MAX_FIELD_WORDS);

/// Values per kernel row in [`columns`]' fields and widened weights: `kw · in_c` rounded up
/// to whole words (the value after an odd row meets a zero weight).
#[inline(always)]
fn row_values(kw: usize, in_c: usize) -> usize {
    (kw * in_c).next_multiple_of(2)
}

/// Copies the `kh · kw · in_c` values output pixel `(oy, ox)` reads, in weight order, padded
/// taps reading their pad values, as int16 lane pairs (int8 and int16 values fit) into lane
/// `LANE` of the interleaved pixel pair `pair` (the field's word `i` at `pair[2i + LANE]`),
/// each kernel row from a word boundary ([`row_values`] values apart). `spare` (the field's
/// words) holds the values of a window that is not copied word by word straight into `pair`.
#[inline(always)]
fn gather<X: Lanes, const LANE: usize>(
    c: &Conv<'_, X>,
    (oy, ox): (usize, usize),
    pair: &mut [u32],
    spare: &mut [u32],
) {
    let g = c.geometry;
    let ([in_h, in_w, in_c], _) = c.dims;
    let [kh, kw] = g.kernel;
    // A window inside the input (dilation 1): `kh` contiguous runs of `kw · in_c` values.
    let top = oy * g.stride[0];
    let left = ox * g.stride[1];
    let run = kw * in_c;
    let run2 = row_values(kw, in_c);
    if g.dilation == [1, 1]
        && !g.strided_input(in_c)
        && top >= g.pad[0]
        && top - g.pad[0] + kh <= in_h
        && left >= g.pad[1]
        && left - g.pad[1] + kw <= in_w
    {
        let (iy, ix) = (top - g.pad[0], left - g.pad[1]);
        let row_step = in_w * in_c;
        let at = (iy * in_w + ix) * in_c;
        // int16 input: each row's words straight into the pair, read from its bytes at any
        // value's offset (one loop over every row).
        if X::WIDE {
            let bytes: &[u8] = bytemuck::cast_slice(X::as_i16(c.input));
            let dst = pair.get_mut(LANE..).unwrap_or_default();
            if simd::copy_rows(bytes, 2 * at, 2 * row_step, kh, run2 / 2, dst) {
                return;
            }
        }
        let values: &mut [i16] = bytemuck::cast_slice_mut(spare);
        let mut at = at;
        for dst in values.chunks_exact_mut(run2.max(1)).take(kh) {
            if let Some(src) = c.input.get(at..at + run) {
                for (d, v) in dst.iter_mut().zip(src) {
                    *d = v.widen() as i16;
                }
            }
            at += row_step;
        }
    } else {
        gather_border(c, oy, ox, bytemuck::cast_slice_mut(spare));
    }
    for (d, v) in pair.chunks_exact_mut(2).zip(spare.iter()) {
        if let Some(d) = d.get_mut(LANE) {
            *d = *v;
        }
    }
}

/// [`gather`]'s values for a window that reaches into the padding (or is dilated), or of a
/// channel slice read in place (input pixels `in_stride` apart): tap by tap.
fn gather_border<X: Lanes>(c: &Conv<'_, X>, oy: usize, ox: usize, values: &mut [i16]) {
    let g = c.geometry;
    let ([in_h, in_w, in_c], _) = c.dims;
    let in_stride = g.in_stride(in_c);
    let [kh, kw] = g.kernel;
    // Undilated columns of a dense input: each row's taps inside the input are one run.
    let runs = g.dilation[1] == 1 && in_stride == in_c;
    let left = ox * g.stride[1];
    let kx0 = g.pad[1].saturating_sub(left).min(kw);
    let kx1 = (in_w + g.pad[1]).saturating_sub(left).clamp(kx0, kw);
    let pad = |dst: &mut [i16]| {
        if c.padding.values.is_empty() {
            dst.fill(c.padding.zero.widen() as i16);
        } else {
            for (d, v) in dst.iter_mut().zip(c.padding.values) {
                *d = v.widen() as i16;
            }
        }
    };
    let mut rows = values.chunks_exact_mut(row_values(kw, in_c).max(1));
    for ky in 0..kh {
        let iy = coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], in_h);
        let Some(row) = rows.next() else {
            return;
        };
        if let (Some(iy), true) = (iy, runs) {
            // Pad taps, the run inside the input, pad taps.
            let (before, rest) = row.split_at_mut((kx0 * in_c).min(row.len()));
            before.chunks_exact_mut(in_c.max(1)).for_each(pad);
            let at = (iy * in_w + (left + kx0).saturating_sub(g.pad[1]).min(in_w)) * in_c;
            let n = (kx1 - kx0) * in_c;
            if let (Some(src), Some((inside, after))) =
                (c.input.get(at..at + n), rest.split_at_mut_checked(n))
            {
                for (d, v) in inside.iter_mut().zip(src) {
                    *d = v.widen() as i16;
                }
                after
                    .chunks_exact_mut(in_c.max(1))
                    .take(kw - kx1)
                    .for_each(pad);
            }
            continue;
        }
        let mut taps = row.chunks_exact_mut(in_c.max(1));
        for kx in 0..kw {
            let Some(dst) = taps.next() else {
                return;
            };
            let ix = coord(ox, g.stride[1], kx, g.dilation[1], g.pad[1], in_w);
            let src = match (iy, ix) {
                (Some(iy), Some(ix)) => c.input.get((iy * in_w + ix) * in_stride..),
                _ if c.padding.values.is_empty() => None,
                _ => Some(c.padding.values),
            };
            match src {
                // int8 and int16 values fit i16.
                Some(src) => dst
                    .iter_mut()
                    .zip(src)
                    .for_each(|(d, v)| *d = v.widen() as i16),
                None => dst.fill(c.padding.zero.widen() as i16),
            }
        }
    }
}

/// [`gather_border`] for a window of a dense int16 input (`input`, its bytes; dilation 1) that
/// reaches into the padding (MobileNetV1's first output column and last row): its rows inside
/// the input copied whole ([`simd::copy_windows`], reading past the input's left or right edge
/// into the row before's last or the next row's first values), then its taps in the padding
/// set to the pad values (about 60 instructions, where the tap-by-tap gather and its `memcpy`
/// calls took 650). `false` (nothing written) for a window whose copy would read outside the
/// input. `field` takes the window's [`row_values`]-spaced rows, as [`gather`] writes them.
fn gather_edge<X: Lanes>(
    c: &Conv<'_, X>,
    input: &[u8],
    (oy, ox): (usize, usize),
    field: &mut [u32],
) -> bool {
    let g = c.geometry;
    let ([in_h, in_w, in_c], _) = c.dims;
    let [kh, kw] = g.kernel;
    let run2 = row_values(kw, in_c);
    let (top, left) = (oy * g.stride[0], ox * g.stride[1]);
    // The taps inside the input: columns `kx0..kx1`, rows `ky0..ky1`.
    let kx0 = g.pad[1].saturating_sub(left).min(kw);
    let kx1 = (in_w + g.pad[1]).saturating_sub(left).clamp(kx0, kw);
    let ky0 = g.pad[0].saturating_sub(top).min(kh);
    let ky1 = (in_h + g.pad[0]).saturating_sub(top).clamp(ky0, kh);
    if kx1 == kx0 || ky1 == ky0 {
        return false;
    }
    // A window reaching left of the input reads the row before's last values there.
    let Some(at) = (((top + ky0 - g.pad[0]) * in_w + left) * in_c).checked_sub(g.pad[1] * in_c)
    else {
        return false;
    };
    let shape = (ky1 - ky0, run2 / 2, 1);
    let Some(rows) = field.get_mut(ky0 * run2 / 2..) else {
        return false;
    };
    if !simd::copy_windows(
        input,
        (2 * at, 0, 2 * in_w * in_c),
        shape,
        rows,
        shape.0 * shape.1,
    ) {
        return false;
    }
    let pad = |dst: &mut [i16]| {
        if c.padding.values.is_empty() {
            dst.fill(c.padding.zero.widen() as i16);
        } else {
            for tap in dst.chunks_exact_mut(in_c.max(1)) {
                for (d, v) in tap.iter_mut().zip(c.padding.values) {
                    *d = v.widen() as i16;
                }
            }
        }
    };
    let values: &mut [i16] = bytemuck::cast_slice_mut(field);
    for (ky, row) in values.chunks_exact_mut(run2.max(1)).take(kh).enumerate() {
        let Some(taps) = row.get_mut(..kw * in_c) else {
            return false;
        };
        if (ky0..ky1).contains(&ky) {
            let (before, rest) = taps.split_at_mut(kx0 * in_c);
            pad(before);
            pad(rest.get_mut((kx1 - kx0) * in_c..).unwrap_or_default());
        } else {
            pad(taps);
        }
    }
    true
}

/// Values of [`columns`]' ring of padded input rows in the variant with the whole layer's
/// weights (1 KiB of stack): DS-CNN's 10x4 windows over rows of 10 values with 3 of padding
/// (260 values), whose windows are mostly in the padding.
const RING_VALUES: usize = 512;

/// Values of the ring in the variant with the smaller weight buffer, with the DSP tiles
/// (1.25 KiB of stack, below the peak of the networks measured): ResNet-8's 3x3x3 windows
/// over rows of 32 pixels with one of padding each side (624 values). MobileNetV1's 96-pixel
/// rows (1,776 values) keep the per-window gather at the border: copying every row twice
/// would cost more than its few border windows. Elsewhere none (no ring: the Cortex-M0's
/// kernel check has no stack to spare).
const BLOCK_RING_VALUES: usize = if TILES { 640 } else { 0 };

/// Padded input row `row` (`pad[0]` rows of padding come first) of `c` into `dst` as int16
/// values: `pad[1]` pixels of pad values, the input row, `pad[3]` pixels of pad values (a
/// row above or below the input all pad values); values after them are left as they are.
fn pad_row<X: Lanes>(c: &Conv<'_, X>, row: usize, dst: &mut [i16]) {
    let g = c.geometry;
    let ([in_h, in_w, in_c], _) = c.dims;
    let pad = |dst: &mut [i16]| {
        if c.padding.values.is_empty() {
            dst.fill(c.padding.zero.widen() as i16);
        } else {
            for (d, v) in dst.iter_mut().zip(c.padding.values) {
                *d = v.widen() as i16;
            }
        }
    };
    let width = (g.pad[1] + in_w + g.pad[3]) * in_c;
    let Some(dst) = dst.get_mut(..width) else {
        return;
    };
    let iy = row.wrapping_sub(g.pad[0]);
    let src = if iy < in_h {
        c.input.get(iy * in_w * in_c..(iy + 1) * in_w * in_c)
    } else {
        None
    };
    let Some(src) = src else {
        dst.chunks_exact_mut(in_c.max(1)).for_each(pad);
        return;
    };
    let (before, rest) = dst.split_at_mut((g.pad[1] * in_c).min(width));
    before.chunks_exact_mut(in_c.max(1)).for_each(pad);
    let (inside, after) = rest.split_at_mut(src.len().min(rest.len()));
    for (d, v) in inside.iter_mut().zip(src) {
        *d = v.widen() as i16;
    }
    after.chunks_exact_mut(in_c.max(1)).for_each(pad);
}

/// Most output channels [`columns`] computes per pass over the pixels (their biases and output
/// stages on the stack).
const STAGE_CHUNK: usize = 16;

/// [`columns`]' widened weights and channels per pass for layers whose every channel's
/// widened weights fit 5 KiB (DS-CNN's first layer: 64 channels of 40 weights) but not
/// [`COLUMN_WEIGHTS`]: widened once per layer rather than once per block of pixels.
const WHOLE_LAYER_WEIGHTS: usize = 1280;
const WHOLE_LAYER_CHANNELS: usize = 64;

/// [`columns`] with the buffers that hold every channel of the layer at once when
/// [`COLUMN_WEIGHTS`] does not and [`WHOLE_LAYER_WEIGHTS`] does; the smaller frame otherwise.
/// Out of line, so that `regular` reaches it by a jump (two slices' words of arguments) and its
/// frame is not live while `columns` runs: an [`Outs`] argument is passed by reference, which
/// would keep the caller's frame.
///
/// The calls of the buffers `L` does not link are left out ([`Loops::COLUMNS_WHOLE`]); the
/// small buffers' [`columns`] takes any layer, at more instructions.
#[inline(never)]
fn columns_any<X: Lanes, Y: Store + 'static, L: Loops>(c: &Conv<'_, X>, output: &mut [Y]) {
    let ([_, _, in_c], [_, _, out_c]) = c.dims;
    let [kh, kw] = c.geometry.kernel;
    let (fused_small, columns_whole) = column_buffers(kh, kw, in_c, out_c);
    // The fused tile first, in the frame whose weight buffer holds the layer's.
    if TILES && fused_small {
        if L::COLUMNS
            && columns_fused::<X, COLUMN_WEIGHTS, BLOCK_FIELD_WORDS, BLOCK_RING_VALUES>(
                c,
                Y::outs(output),
            )
        {
            return;
        }
    } else if TILES
        && L::COLUMNS_WHOLE
        && columns_fused::<X, WHOLE_LAYER_WEIGHTS, FIELD_WORDS, RING_VALUES>(c, Y::outs(output))
    {
        return;
    }
    if TILES && columns_whole && L::COLUMNS_WHOLE {
        return columns::<X, WHOLE_LAYER_WEIGHTS, WHOLE_LAYER_CHANNELS, FIELD_WORDS, RING_VALUES>(
            c,
            Y::outs(output),
        );
    }
    if L::COLUMNS {
        columns::<X, COLUMN_WEIGHTS, STAGE_CHUNK, BLOCK_FIELD_WORDS, BLOCK_RING_VALUES>(
            c,
            Y::outs(output),
        );
    }
}

/// Which buffers [`columns_any`] runs a layer with on a core with the DSP tiles: whether the
/// fused tile's are the small ones ([`COLUMN_WEIGHTS`], else [`WHOLE_LAYER_WEIGHTS`]), and
/// whether [`columns`]' are the whole layer's.
fn column_buffers(kh: usize, kw: usize, in_c: usize, out_c: usize) -> (bool, bool) {
    let pair_words = 2 * column_words(kh, kw, in_c);
    let fits = |weights: usize, channels: usize| {
        out_c <= channels && out_c.div_ceil(2) * pair_words <= weights
    };
    (
        out_c * column_words(kh, kw, in_c) <= COLUMN_WEIGHTS,
        !fits(COLUMN_WEIGHTS, STAGE_CHUNK) && fits(WHOLE_LAYER_WEIGHTS, WHOLE_LAYER_CHANNELS),
    )
}

/// Where [`columns_fused`]' ring holds a padded input row: from value `lead` of its slot of
/// `ring_row` values (each row twice, `2 · kh` slots). An int16 input row lands on its own word
/// alignment, so that [`pad_row`] is a word copy (ResNet-8's rows after 3 pad values were a
/// byte copy, 768 instructions a row); the slot ends a word after the row (the last window's
/// odd last word reads past it, against a zero weight).
fn ring_rows<X: Lanes>(c: &Conv<'_, X>) -> (usize, usize) {
    let g = c.geometry;
    let ([_, in_w, in_c], _) = c.dims;
    let lead = usize::from(X::WIDE && (in_w * in_c) % 2 == 0 && (g.pad[1] * in_c) % 2 == 1);
    let row = (lead + (g.pad[1] + in_w + g.pad[3]) * in_c).next_multiple_of(2) + 2;
    (lead, row)
}

/// Most groups of four output channels [`columns_fused`] takes (their stages on the stack: 88
/// bytes each with the DSP extension): DS-CNN's 64 channels.
const FUSED_GROUPS: usize = 16;

/// [`columns`] for layers whose output channels come in groups of four whose output stages
/// have the register form and clamp alike (every first layer measured), on the fused tile
/// ([`simd::fused_fields`]): each output pixel's receptive field one contiguous run of its
/// `kh` rows of [`row_values`] (no words rounding it up: the tile takes any number of word
/// pairs and an odd last word; copied by [`simd::copy_windows`] from the ring of padded rows
/// or an int16 input, or gathered tap by tap), the layer's weights widened once per call with
/// the four channels of a group interleaved word by word, then per block of pixels each
/// group's four sums in registers straight through their output stages into the output:
/// about 31 instructions per output of a 3x3x3 window, where [`columns`]' 2x2 tile, its
/// buffered sums and [`simd::stage_quads`] take 37. `false` when the layer does not have that
/// form or its weights do not fit `W` words (checked before anything is written); `F` words
/// of fields, `R` values of ring as in [`columns`].
#[inline(never)]
fn columns_fused<X: Lanes, const W: usize, const F: usize, const R: usize>(
    c: &Conv<'_, X>,
    output: Outs<'_>,
) -> bool {
    let g = c.geometry;
    let ([in_h, in_w, in_c], [out_h, out_w, out_c]) = c.dims;
    let out_stride = g.out_stride(out_c);
    let [kh, kw] = g.kernel;
    let per_out = kh * kw * in_c;
    let (run, run2) = (kw * in_c, row_values(kw, in_c));
    let row_words = run2 / 2;
    // The fields' exact words: the tile takes any number of word pairs and an odd last word.
    let n = kh * row_words;
    let groups = out_c / 4;
    if !simd::fused_takes(n)
        || n > MAX_FIELD_WORDS
        || run == 0
        || out_c % 4 != 0
        || groups == 0
        || groups > FUSED_GROUPS
        || groups * 4 * n > W
        || out_stride < out_c
    {
        return false;
    }
    // Every pixel's outputs inside `output` (each block's call checks its own again).
    let span = (out_h * out_w)
        .checked_sub(1)
        .map(|p| p * out_stride + out_c);
    if span.is_none_or(|span| span > output.len()) {
        return false;
    }
    let block = (F / n).min(out_w.max(1) * out_h);
    if block == 0 {
        return false;
    }
    // Each group's biases and stages, one clamp for all (the tile's loop stores one form).
    let stored = output.stage_bounds(&c.bounds);
    let (bytes, int8) = match output {
        Outs::I8(y) => (bytemuck::cast_slice_mut::<i8, u8>(y), true),
        Outs::I16(y) => (bytemuck::cast_slice_mut::<i16, u8>(y), false),
    };
    let mut stages = [simd::FieldStage::EMPTY; FUSED_GROUPS];
    let mut clamp = None;
    for (q, quad) in stages.iter_mut().take(groups).enumerate() {
        let mut bias = [0i32; 4];
        let mut runs = [simd::RunScale {
            high: 0,
            multiplier: 0,
            shift: 1,
            min: 0,
            max: 0,
        }; 4];
        for (k, (b, r)) in bias.iter_mut().zip(runs.iter_mut()).enumerate() {
            let Some((b0, s)) = stage(c.channels, 4 * q + k) else {
                return false;
            };
            let Some(run) = s.single().and_then(|s| s.run(&stored)) else {
                return false;
            };
            (*b, *r) = (b0, run);
        }
        let Some(this) = simd::QuadClamp::of(&runs, int8) else {
            return false;
        };
        if clamp.is_some_and(|first| first != this) {
            return false;
        }
        clamp = Some(this);
        *quad = simd::FieldStage::new(bias, &runs, this);
    }
    // The weights: channel `k` of group `q`, field word `i` (kernel row `i / row_words`) at
    // word `4 · (q · n + i) + k`; the words after the rows and a row's odd last lane stay zero.
    let mut wide = [0u32; W];
    for o in 0..out_c {
        let Some(w) = c.weights.get(o * per_out..(o + 1) * per_out) else {
            return false;
        };
        let (q, k) = (o / 4, o % 4);
        for (r, row) in w.chunks_exact(run).enumerate() {
            for (j, v) in row.chunks(2).enumerate() {
                let at = |i: usize| v.get(i).map_or(0, |&x| i32::from(x));
                if let Some(d) = wide.get_mut(4 * (q * n + r * row_words + j) + k) {
                    *d = simd::pair(at(0), at(1));
                }
            }
        }
    }
    let Some(wide) = wide.get(..groups * 4 * n) else {
        return false;
    };
    let size = if int8 { 1 } else { 2 };
    // An int16 input read densely (dilation 1): its bytes, and the output columns and rows
    // whose windows lie inside it.
    let dense = g.dilation == [1, 1] && !g.strided_input(in_c);
    let direct = (X::WIDE && dense).then(|| {
        let x = interior(out_w, g.stride[1], 1, g.pad[1], kw, in_w);
        let y = interior(out_h, g.stride[0], 1, g.pad[0], kh, in_h);
        let bytes: &[u8] = bytemuck::cast_slice(X::as_i16(c.input));
        (bytes, x, y)
    });
    // The ring of padded input rows (as in [`columns`]): every window copied from it.
    let mut ring = [0i16; R];
    let (lead, ring_row) = ring_rows(c);
    let ringed = dense
        && 2 * kh * ring_row <= R
        && (c.padding.values.is_empty() || c.padding.values.len() >= in_c);
    let mut staged = 0;
    // Zeroed once; the words after a field's rows are never written (their weights are zero).
    let mut fields = [0u32; F];
    let pixels = out_h * out_w;
    let mut p0 = 0;
    while p0 < pixels {
        let p1 = (p0 + block).min(pixels);
        let mut q = p0;
        while q < p1 {
            let (oy, ox) = (q / out_w, q % out_w);
            let dst = fields.get_mut((q - p0) * n..).unwrap_or_default();
            if ringed {
                // The output row's padded rows `top..top + kh` into the ring, those not there.
                let top = oy * g.stride[0];
                for row in staged.max(top)..top + kh {
                    let slot = row % kh;
                    let (Some(dst), Some(at)) = (
                        ring.get_mut(slot * ring_row + lead..(slot + 1) * ring_row),
                        (slot + kh).checked_mul(ring_row),
                    ) else {
                        return false;
                    };
                    pad_row(c, row, dst);
                    ring.copy_within(slot * ring_row..(slot + 1) * ring_row, at);
                }
                staged = staged.max(top + kh);
                let count = (out_w - ox).min(p1 - q);
                let at = (top % kh) * ring_row + lead + ox * g.stride[1] * in_c;
                let src: &[u8] = bytemuck::cast_slice(&ring);
                let steps = (2 * at, 2 * g.stride[1] * in_c, 2 * ring_row);
                if simd::copy_windows(src, steps, (kh, row_words, count), dst, n) {
                    q += count;
                    continue;
                }
            }
            // A run of windows inside an int16 input along the output row: one copy.
            if let Some((src, (x_lo, x_hi), (y_lo, y_hi))) = direct {
                if (y_lo..y_hi).contains(&oy) && (x_lo..x_hi).contains(&ox) {
                    let count = (x_hi - ox).min(p1 - q);
                    let [sy, sx] = g.stride;
                    let at = ((oy * sy - g.pad[0]) * in_w + ox * sx - g.pad[1]) * in_c;
                    let steps = (2 * at, 2 * sx * in_c, 2 * in_w * in_c);
                    // The input's last window of an odd row length reads a value past the
                    // input's end in its last word (whose weight is zero): refused, so the
                    // windows before it are copied alone and it is gathered.
                    let shape = |count| (kh, row_words, count);
                    let copied = if simd::copy_windows(src, steps, shape(count), dst, n) {
                        count
                    } else if count > 1
                        && simd::copy_windows(src, steps, shape(count - 1), &mut *dst, n)
                    {
                        count - 1
                    } else {
                        0
                    };
                    if copied > 0 {
                        q += copied;
                        continue;
                    }
                }
            }
            let Some(field) = dst.get_mut(..n) else {
                return false;
            };
            let edge = direct.is_some_and(|(src, _, _)| gather_edge(c, src, (oy, ox), field));
            if !edge {
                gather_border(c, oy, ox, bytemuck::cast_slice_mut(field));
            }
            q += 1;
        }
        let (Some(x), Some(out), Some(stages)) = (
            fields.get(..(p1 - p0) * n),
            bytes.get_mut(p0 * out_stride * size..),
            stages.get_mut(..groups),
        ) else {
            return false;
        };
        if !simd::fused_fields(wide, x, n, stages, out, (p1 - p0, out_stride)) {
            return false;
        }
        p0 = p1;
    }
    true
}

/// Words of one receptive field in [`columns`]: `kh` rows of [`row_values`], rounded up to
/// whole passes of the tile's loop (four words; the weights after the rows are zero).
#[inline(always)]
fn column_words(kh: usize, kw: usize, in_c: usize) -> usize {
    (kh * row_values(kw, in_c)).div_ceil(8) * 4
}

/// `groups == 1` with few input channels (first layers): output channels in chunks (of up to
/// `CH`, their weights in `W` words) whose weights are widened (int16 lane pairs in weight
/// order, each kernel row padded with a zero weight to whole words, each channel to whole
/// passes of four words) and interleaved word by word per channel pair; output pixels in
/// blocks whose receptive fields are gathered once ([`gather`], pad values included, so
/// borders cost nothing extra) and interleaved word by word per pixel pair; then each channel
/// pair of a chunk runs one register tile over every pixel pair of the block
/// ([`simd::smlad_2x2_pairs`]: one LDRD loads a word of both channels' weights, one a word of
/// both pixels' fields).
#[inline(never)]
fn columns<X: Lanes, const W: usize, const CH: usize, const F: usize, const R: usize>(
    c: &Conv<'_, X>,
    mut output: Outs<'_>,
) {
    let ([_, _, in_c], [out_h, out_w, out_c]) = c.dims;
    let out_stride = c.geometry.out_stride(out_c).max(1);
    let [kh, kw] = c.geometry.kernel;
    let per_out = kh * kw * in_c;
    let (run, run2) = (kw * in_c, row_values(kw, in_c));
    let pixels = out_h * out_w;
    let out_w = out_w.max(1);
    let words = column_words(kh, kw, in_c);
    if words == 0 || words > MAX_FIELD_WORDS || run == 0 {
        return;
    }
    // A channel pair's or a pixel pair's interleaved words.
    // (At least 1 as a divisor and chunk size, so that no panic path is linked.)
    let pair_words = (2 * words).max(1);
    let chunk = (W / pair_words * 2).min(CH);
    let block = (F.saturating_sub(words) / pair_words * 2).min(COLUMN_BLOCK);
    if chunk == 0 || block == 0 {
        return;
    }
    // Zeroed once; the words a field does not fill are never multiplied by a nonzero weight.
    let mut buffer = [0u32; F];
    let Some((fields, spare)) = buffer.split_at_mut_checked(block / 2 * pair_words) else {
        return;
    };
    let mut wide = [0u32; W];
    let several = out_c > chunk;
    // Per channel of the chunk: its bias, and its output stage as one loop when it has that
    // form (`simd::requant_run`; otherwise `stage` when the outputs are stored).
    let mut biases = [0i32; CH];
    let mut runs = [None; CH];
    let stored = output.stage_bounds(&c.bounds);
    // With the DSP tiles: a channel pair's sums over the block, then each channel's output
    // stage as one loop, as in `pointwise_blocks`; or two channel pairs' sums (the second from
    // `simd::QUAD_SPLIT` on), then the four channels' output stage straight into the output.
    let mut accs = [0i32; simd::QUAD_SPLIT + 2 * COLUMN_BLOCK];
    // The int16 results of a channel pair, a pixel's two as one word.
    let mut narrow = [0u32; COLUMN_BLOCK];
    // An int16 input read densely (dilation 1): its bytes, and the output columns and rows
    // whose windows lie inside it ([`simd::copy_fields`] copies runs of them).
    let g = c.geometry;
    let ([in_h, in_w, _], _) = c.dims;
    let direct = (X::WIDE && g.dilation == [1, 1] && !g.strided_input(in_c)).then(|| {
        let x = interior(out_w, g.stride[1], 1, g.pad[1], kw, in_w);
        let y = interior(out_h, g.stride[0], 1, g.pad[0], kh, in_h);
        let bytes: &[u8] = bytemuck::cast_slice(X::as_i16(c.input));
        (bytes, x, y)
    });
    // With `R` values of stack and a window that fits: the padded input rows the output row's
    // windows read, as int16 values with the pad values in place, each row twice in a ring of
    // `2 · kh` rows (any `kh` consecutive rows contiguous); every window then reads inside
    // it, border or not.
    let mut ring = [0i16; R];
    let ring_row = ((g.pad[1] + in_w + g.pad[3]) * in_c).next_multiple_of(2) + 2;
    let ringed = TILES
        && g.dilation == [1, 1]
        && !g.strided_input(in_c)
        && 2 * kh * ring_row <= R
        && (c.padding.values.is_empty() || c.padding.values.len() >= in_c);
    // Padded input rows below this one are in the ring (or not needed).
    let mut staged = 0;
    let mut p0 = 0;
    while p0 < pixels {
        // A block of pixels' fields gathered once for every chunk of channels, a pixel pair's
        // two fields interleaved.
        let p1 = (p0 + block).min(pixels);
        let m = p1 - p0;
        let pairs = m.div_ceil(2);
        // An odd last pixel's partner lane keeps an earlier field: its sums are never stored.
        let mut q = p0;
        while q < p1 {
            let (oy, ox) = (q / out_w, q % out_w);
            let i = q - p0;
            if ringed {
                // The output row's padded rows `top..top + kh` into the ring, those not there.
                let top = oy * g.stride[0];
                for row in staged.max(top)..top + kh {
                    let slot = row % kh;
                    let (Some(dst), Some(at)) = (
                        ring.get_mut(slot * ring_row..(slot + 1) * ring_row),
                        (slot + kh).checked_mul(ring_row),
                    ) else {
                        return;
                    };
                    pad_row(c, row, dst);
                    ring.copy_within(slot * ring_row..(slot + 1) * ring_row, at);
                }
                staged = staged.max(top + kh);
                let count = (out_w - ox).min(p1 - q);
                let at = (top % kh) * ring_row + ox * g.stride[1] * in_c;
                let bytes: &[u8] = bytemuck::cast_slice(&ring);
                let steps = (2 * at, 2 * g.stride[1] * in_c, 2 * ring_row);
                let shape = (kh, run2 / 2, count);
                let dst = fields.get_mut(i / 2 * pair_words..).unwrap_or_default();
                if simd::copy_fields(bytes, steps, shape, dst, (i % 2, pair_words)) {
                    q += count;
                    continue;
                }
            }
            // A run of windows inside an int16 input along the output row: one copy.
            if let Some((bytes, (x_lo, x_hi), (y_lo, y_hi))) = direct {
                if (y_lo..y_hi).contains(&oy) && (x_lo..x_hi).contains(&ox) {
                    let count = (x_hi - ox).min(p1 - q);
                    let [sy, sx] = c.geometry.stride;
                    let at =
                        ((oy * sy - c.geometry.pad[0]) * in_w + ox * sx - c.geometry.pad[1]) * in_c;
                    let steps = (2 * at, 2 * sx * in_c, 2 * in_w * in_c);
                    let shape = (kh, run2 / 2, count);
                    let dst = fields.get_mut(i / 2 * pair_words..).unwrap_or_default();
                    if simd::copy_fields(bytes, steps, shape, dst, (i % 2, pair_words)) {
                        q += count;
                        continue;
                    }
                }
            }
            // Slices by index, not `chunks_exact_mut`: with a run-time size its zero check (a
            // formatted panic) stays linked in the Cortex-M0's size-optimized build.
            let (Some(pair), Some(f)) = (
                fields.get_mut(i / 2 * pair_words..(i / 2 + 1) * pair_words),
                spare.get_mut(..words),
            ) else {
                return;
            };
            if i % 2 == 0 {
                gather::<X, 0>(c, (oy, ox), pair, f);
            } else {
                gather::<X, 1>(c, (oy, ox), pair, f);
            }
            q += 1;
        }
        let Some(fields) = fields.get(..pairs * pair_words) else {
            return;
        };
        let mut first = 0;
        while first < out_c {
            let end = (first + chunk).min(out_c);
            if several || p0 == 0 {
                for k in 0..(end - first).div_ceil(2) {
                    let Some(region) = wide.get_mut(k * pair_words..(k + 1) * pair_words) else {
                        return;
                    };
                    // An odd last channel fills both lanes (the second's sums unused).
                    let o = first + 2 * k;
                    let second = (o + 1).min(end - 1);
                    let (Some(w0), Some(w1)) = (
                        c.weights.get(o * per_out..(o + 1) * per_out),
                        c.weights.get(second * per_out..(second + 1) * per_out),
                    ) else {
                        return;
                    };
                    widen_pair([w0, w1], region, run, run2);
                    for o in [o, second] {
                        if let (Some(bias), Some(quick), Some((b, s))) = (
                            biases.get_mut(o - first),
                            runs.get_mut(o - first),
                            stage(c.channels, o),
                        ) {
                            *bias = b;
                            *quick = s.single().and_then(|s| s.run(&stored));
                        }
                    }
                }
            }
            let mut o = first;
            while o < end {
                if TILES
                    && o + 4 <= end
                    && column_quad(
                        (&wide, words, o - first),
                        (&biases, &runs),
                        fields,
                        &mut accs,
                        &mut output,
                        (p0 * out_stride + o, m, out_stride),
                    )
                {
                    o += 4;
                    continue;
                }
                let second = if o + 1 < end { o + 1 } else { o };
                let (k0, k1) = (o - first, second - first);
                let (Some(w), Some(&b0), Some(&b1)) = (
                    wide.get(k0 * words..(k0 + 2) * words),
                    biases.get(k0),
                    biases.get(k1),
                ) else {
                    return;
                };
                if TILES {
                    simd::smlad_2x2_pairs(w, fields, [b0, b1], &mut accs);
                    let narrow16: &mut [i16] = bytemuck::cast_slice_mut(&mut narrow);
                    for (lane, (k, o)) in [(k0, o), (k1, second)]
                        .into_iter()
                        .enumerate()
                        .take(1 + usize::from(second != o))
                    {
                        let (Some(sums), Some(dst), Some(run)) =
                            (accs.get(lane..), narrow16.get_mut(lane..), runs.get(k))
                        else {
                            return;
                        };
                        // The channel's `Stage` only for a factor `requant_run` does not take.
                        if let Some(run) = run {
                            simd::requant_run(sums, dst, m, run);
                        } else if let Some((_, s)) = stage(c.channels, o) {
                            super::depthwise::narrow_any(sums, dst, m, &s, &c.bounds);
                        } else {
                            return;
                        }
                    }
                    // An int16 output, word-aligned, pixels a whole number of words apart: a
                    // pixel's two results as one word (`o` is even).
                    let words = match &mut output {
                        Outs::I16(y) if second != o && out_stride % 2 == 0 => {
                            bytemuck::try_cast_slice_mut::<i16, u32>(y).ok()
                        }
                        _ => None,
                    };
                    if let Some(words) = words {
                        let step = out_stride / 2;
                        for (i, v) in narrow.iter().take(m).enumerate() {
                            if let Some(y) = words.get_mut((p0 + i) * step + o / 2) {
                                *y = *v;
                            }
                        }
                    } else {
                        // The output's element type matters only here (one `match` per block:
                        // both types share the rest of this function).
                        let narrow16: &[i16] = bytemuck::cast_slice(&narrow);
                        let block = (narrow16, m, (p0 * out_stride + o, out_stride), second != o);
                        match &mut output {
                            Outs::I8(y) => store_pairs(y, block),
                            Outs::I16(y) => store_pairs(y, block),
                        }
                    }
                } else {
                    // Per pixel pair, each output stored as it is summed.
                    let (Some((_, s0)), Some((_, s1))) =
                        (stage(c.channels, o), stage(c.channels, second))
                    else {
                        return;
                    };
                    // The output's element type matched once per channel pair and block.
                    let pass = PixelPairs {
                        w,
                        fields: (fields, pair_words, pairs),
                        bias: [b0, b1],
                        stages: [&s0, &s1],
                        bounds: &c.bounds,
                        pixels: (p0, p1),
                        at: (o, out_stride, second != o),
                    };
                    match &mut output {
                        Outs::I8(y) => pass.run(y),
                        Outs::I16(y) => pass.run(y),
                    }
                }
                o += 2;
            }
            first = end;
        }
        p0 = p1;
    }
}

/// Four channels `k..k + 4` of [`columns`]' chunk (their interleaved widened weights from
/// word `k · words` of `wide`, their biases and output stages at `k..k + 4`) over a block of
/// `m` pixels' `fields`: both channel pairs' sums ([`simd::smlad_2x2_pairs`], the second
/// pair's from `simd::QUAD_SPLIT` on in `accs`), then the four channels' output stage straight
/// into the output from element `at`, `stride` elements per pixel ([`simd::stage_quads`]:
/// about ten instructions per output, where `requant_run` per channel and the copy into the
/// output took 13-23). `false` (nothing written) unless the four stages have the register form
/// and clamp alike.
#[inline(always)]
fn column_quad(
    (wide, words, k): (&[u32], usize, usize),
    (biases, runs): (&[i32], &[Option<simd::RunScale>]),
    fields: &[u32],
    accs: &mut [i32],
    output: &mut Outs<'_>,
    (at, m, stride): (usize, usize, usize),
) -> bool {
    let int8 = matches!(output, Outs::I8(_));
    let (Some(&[Some(r0), Some(r1), Some(r2), Some(r3)]), Some(&[b0, b1, b2, b3]), Some(w)) = (
        runs.get(k..).and_then(|r| r.first_chunk::<4>()),
        biases.get(k..).and_then(|b| b.first_chunk::<4>()),
        wide.get(k * words..(k + 4) * words),
    ) else {
        return false;
    };
    let runs = [r0, r1, r2, r3];
    let Some(clamp) = simd::QuadClamp::of(&runs, int8) else {
        return false;
    };
    let size = if int8 { 1 } else { 2 };
    let out = match output {
        Outs::I8(y) => bytemuck::cast_slice_mut::<i8, u8>(y),
        Outs::I16(y) => bytemuck::cast_slice_mut::<i16, u8>(y),
    };
    let Some(out) = out.get_mut(at * size..) else {
        return false;
    };
    let (w01, w23) = w.split_at(2 * words);
    let Some((a01, a23)) = accs.split_at_mut_checked(simd::QUAD_SPLIT) else {
        return false;
    };
    simd::smlad_2x2_pairs(w01, fields, [b0, b1], a01);
    simd::smlad_2x2_pairs(w23, fields, [b2, b3], a23);
    simd::stage_quads(accs, (&runs, clamp), out, (m, stride))
}

/// [`columns`]' loop on cores without the DSP tiles: a channel pair over a block's pixel
/// pairs, each output stored as it is summed.
struct PixelPairs<'a> {
    /// The channel pair's interleaved weights.
    w: &'a [u32],
    /// The block's interleaved fields, words per pixel pair, pixel pairs.
    fields: (&'a [u32], usize, usize),
    bias: [i32; 2],
    stages: [&'a Stage; 2],
    bounds: &'a Bounds,
    /// The block's pixels `p0..p1`.
    pixels: (usize, usize),
    /// First channel, elements per output pixel, whether the second channel is stored.
    at: (usize, usize, bool),
}

impl PixelPairs<'_> {
    #[inline(always)]
    fn run<Y: Store>(&self, output: &mut [Y]) {
        let (fields, pair_words, pairs) = self.fields;
        let (p0, p1) = self.pixels;
        let (o, out_stride, both) = self.at;
        let [s0, s1] = self.stages;
        let mut store = |at: usize, stage: &Stage, acc: i32| {
            if let Some(y) = output.get_mut(at) {
                *y = finish(self.bounds, stage, acc);
            }
        };
        for k in 0..pairs {
            let Some(pair) = fields.get(k * pair_words..(k + 1) * pair_words) else {
                return;
            };
            let mut acc = [0i32; 4];
            simd::smlad_2x2_pairs(self.w, pair, self.bias, &mut acc);
            let [a0, a1, c0, c1] = acc;
            let p = p0 + 2 * k;
            let at = p * out_stride + o;
            store(at, s0, a0);
            if both {
                store(at + 1, s1, a1);
            }
            if p + 1 < p1 {
                let at = at + out_stride;
                store(at, s0, c0);
                if both {
                    store(at + 1, s1, c1);
                }
            }
        }
    }
}

/// A block of `m` pixels' channel pair (`narrow`: `[pixel][2]`) into `output` from `at` on,
/// `stride` elements per pixel; the second channel only if `pair`.
#[inline(always)]
fn store_pairs<Y: Store>(
    output: &mut [Y],
    (narrow, m, (at, stride), pair): (&[i16], usize, (usize, usize), bool),
) {
    for (i, v) in narrow.chunks_exact(2).take(m).enumerate() {
        let at = at + i * stride;
        if let (Some(y), Some(&v0)) = (output.get_mut(at), v.first()) {
            *y = Y::from_wide(v0);
        }
        if pair {
            if let (Some(y), Some(&v1)) = (output.get_mut(at + 1), v.get(1)) {
                *y = Y::from_wide(v1);
            }
        }
    }
}

/// Widens two channels' int8 weights `w` into `region` interleaved word by word (`w0[0],
/// w1[0], w0[1], ...`), each kernel row of `run` values as `run2 / 2` lane pairs (an odd row's
/// last word with a zero high lane); the words after the rows are left as they are (zero).
#[inline(always)]
fn widen_pair(w: [&[i8]; 2], region: &mut [u32], run: usize, run2: usize) {
    let [w0, w1] = w;
    if run % 2 == 0 {
        // Even rows lie in the widened words as they lie in the weights: one run.
        let words = region
            .chunks_exact_mut(2)
            .zip(w0.chunks_exact(2).zip(w1.chunks_exact(2)));
        for (d, (a, b)) in words {
            if let ([x, y], &[a0, a1], &[b0, b1]) = (d, a, b) {
                *x = simd::pair(i32::from(a0), i32::from(a1));
                *y = simd::pair(i32::from(b0), i32::from(b1));
            }
        }
        return;
    }
    for r in 0..w0.len() / run.max(1) {
        let (Some(r0), Some(r1), Some(dst)) = (
            w0.get(r * run..(r + 1) * run),
            w1.get(r * run..(r + 1) * run),
            region.get_mut(r * run2..(r + 1) * run2),
        ) else {
            return;
        };
        let words = dst.chunks_exact_mut(2).zip(r0.chunks(2).zip(r1.chunks(2)));
        for (d, (a, b)) in words {
            let word = |v: &[i8]| {
                let at = |i| v.get(i).map_or(0, |&x| i32::from(x));
                simd::pair(at(0), at(1))
            };
            if let [x, y] = d {
                *x = word(a);
                *y = word(b);
            }
        }
    }
}

/// A 1x1, stride-1, unpadded convolution of one output channel pair on int16 words: input
/// pixels in pairs, each a contiguous run of `in_c / 2` words, against the widened weights.
#[inline(never)]
fn pointwise<Y: Store>(
    x: &[u32],
    w: [&[u32]; 2],
    outs: &Outputs,
    bounds: &Bounds,
    (in_c, out_stride): (usize, usize),
    blocks: &mut Blocks,
    output: &mut [Y],
) {
    let n = in_c / 2;
    if n == 0 || out_stride == 0 {
        return;
    }
    if TILES {
        return pointwise_blocks(x, w, outs, bounds, (n, out_stride), blocks, output);
    }
    // Pixel pairs by index: one slice check per pair, outputs written at their offsets
    // (`out_stride` elements per pixel; a view's last pixel may be just its channels).
    let mut p = 0;
    while let Some((xa, xb)) = x
        .get(p * n..(p + 2) * n)
        .and_then(|x| x.split_at_checked(n))
    {
        let acc = [outs.bias[0], outs.bias[1], outs.bias[0], outs.bias[1]];
        let [a0, a1, b0, b1] = match words_x86(w, [xa, xb], [outs.bias, outs.bias]) {
            Some([[a0, a1], [b0, b1]]) => [a0, a1, b0, b1],
            None => simd::smlad_2x2(w, [xa, xb], acc),
        };
        outs.store_at(bounds, output, p * out_stride, [a0, a1]);
        outs.store_at(bounds, output, (p + 1) * out_stride, [b0, b1]);
        p += 2;
    }
    // An odd last pixel.
    if let Some(xa) = x.get(p * n..(p + 1) * n) {
        let [mut a0, mut a1] = outs.bias;
        for ((xa, w0), w1) in xa.iter().zip(w[0]).zip(w[1]) {
            a0 = simd::smlad(*w0, *xa, a0);
            a1 = simd::smlad(*w1, *xa, a1);
        }
        outs.store_at(bounds, output, p * out_stride, [a0, a1]);
    }
}

/// Pixels per block of [`pointwise_blocks`] (its sums and int16 results on the stack: 384
/// bytes).
const POINTWISE_BLOCK: usize = 32;

/// Values in each of [`Blocks`]' buffers: none without the DSP tiles (`pointwise_blocks` is
/// theirs), so that `regular`'s frame does not grow on cores without them (the Cortex-M0's
/// stack is tight).
const BLOCK_VALUES: usize = if TILES { 2 * simd::QUAD_SPLIT } else { 0 };

// The four-channel tile's two channel-pair halves each hold a block's `[pixel][2]` sums.
const _: () = assert!(simd::QUAD_SPLIT == 2 * POINTWISE_BLOCK);

/// [`pointwise_blocks`]' buffers: a channel pair's sums over a block of pixels
/// (`[pixel][2]`) and their int16 results. Every value read was written first in the same
/// block, so one zeroing per layer call serves every channel pair.
struct Blocks {
    accs: [i32; BLOCK_VALUES],
    narrow: [i16; BLOCK_VALUES],
}

impl Blocks {
    fn new() -> Blocks {
        Blocks {
            accs: [0; BLOCK_VALUES],
            narrow: [0; BLOCK_VALUES],
        }
    }
}

/// [`pointwise`] with the DSP tiles: per block of pixels, the channel pair's sums first (the
/// tile per pixel pair), then each channel's output stage as one loop with its constants in
/// registers ([`simd::requant_run`], about 10 instructions per output where the store through
/// [`Outputs`] costs about 30), then the int16 results into the output.
#[inline(always)]
fn pointwise_blocks<Y: Store>(
    x: &[u32],
    w: [&[u32]; 2],
    outs: &Outputs,
    bounds: &Bounds,
    (n, out_stride): (usize, usize),
    blocks: &mut Blocks,
    output: &mut [Y],
) {
    let stored = Y::stage_bounds(bounds);
    let runs = outs
        .stage
        .each_ref()
        .map(|s| s.single().and_then(|s| s.run(&stored)));
    let lanes = if outs.pair { 2 } else { 1 };
    let pixels = x.len() / n;
    let Blocks { accs, narrow } = blocks;
    let mut p0 = 0;
    while p0 < pixels {
        let m = (pixels - p0).min(POINTWISE_BLOCK);
        let (Some(xs), Some(sums)) = (x.get(p0 * n..(p0 + m) * n), accs.get_mut(..2 * m)) else {
            return;
        };
        // Sums `[pixel][channel]`: the tile per pixel pair, an odd last pixel alone.
        let mut pxs = xs.chunks_exact((2 * n).max(1));
        let mut at = sums.chunks_exact_mut(4);
        for (xy, acc) in (&mut pxs).zip(&mut at) {
            let Some((xa, xb)) = xy.split_at_checked(n) else {
                return;
            };
            let start = [outs.bias[0], outs.bias[1], outs.bias[0], outs.bias[1]];
            let sums = match words_x86(w, [xa, xb], [outs.bias, outs.bias]) {
                Some([[a0, a1], [b0, b1]]) => [a0, a1, b0, b1],
                None => simd::smlad_2x2(w, [xa, xb], start),
            };
            if let Some(acc) = acc.first_chunk_mut::<4>() {
                *acc = sums;
            }
        }
        if let (xa, Some([s0, s1])) = (pxs.remainder(), at.into_remainder().first_chunk_mut::<2>())
        {
            let [mut a0, mut a1] = outs.bias;
            for ((xa, w0), w1) in xa.iter().zip(w[0]).zip(w[1]) {
                a0 = simd::smlad(*w0, *xa, a0);
                a1 = simd::smlad(*w1, *xa, a1);
            }
            (*s0, *s1) = (a0, a1);
        }
        for (lane, (stage, run)) in outs.stage.iter().zip(&runs).enumerate().take(lanes) {
            let (Some(sums), Some(dst)) = (accs.get(lane..), narrow.get_mut(lane..)) else {
                return;
            };
            match run {
                Some(run) => simd::requant_run(sums, dst, m, run),
                None => super::depthwise::narrow_any(sums, dst, m, stage, bounds),
            }
        }
        for (i, v) in narrow.chunks_exact(2).take(m).enumerate() {
            let at = (p0 + i) * out_stride + outs.o;
            if let (Some(y), Some(&v0)) = (output.get_mut(at), v.first()) {
                *y = Y::from_wide(v0);
            }
            if outs.pair {
                if let (Some(y), Some(&v1)) = (output.get_mut(at + 1), v.get(1)) {
                    *y = Y::from_wide(v1);
                }
            }
        }
        p0 += m;
    }
}

/// The fused tile's constants of channels `chs` (four whole ones) of a pointwise layer whose
/// output is int8 (`int8`) or int16, if each channel's factor has the register form
/// ([`super::depthwise::channel_run`]) and the four clamp alike.
#[inline(always)]
fn quad_stage<X>(c: &Conv<'_, X>, chs: [usize; 4], int8: bool) -> Option<simd::QuadStage> {
    let runs = chs.map(|ch| super::depthwise::channel_run(c, ch));
    let bias = chs.map(|ch| c.channels.bias.get(ch).copied());
    let ([Some(r0), Some(r1), Some(r2), Some(r3)], [Some(b0), Some(b1), Some(b2), Some(b3)]) =
        (runs, bias)
    else {
        return None;
    };
    let runs = [r0, r1, r2, r3];
    let clamp = simd::QuadClamp::of(&runs, int8)?;
    let ([_, _, in_c], _) = c.dims;
    Some(simd::QuadStage::new([b0, b1, b2, b3], &runs, clamp, in_c))
}

/// Four output channels (the first `o`) of a pointwise layer through the fused tile
/// ([`simd::smlad_4x1_staged`], every pixel of `x` at once) with the constants `stage`
/// ([`quad_stage`]); `false`, with nothing written, if the stage's element type is not the
/// output's or the shapes do not fit. `w`: the four channels' [`simd::widen_interleaved`]
/// weights, `n` words per input pixel.
#[inline(always)]
fn pointwise_fused<Y: Store>(
    x: &[u32],
    w: &[u32],
    stage: &mut simd::QuadStage,
    (o, out_stride, n): (usize, usize, usize),
    output: &mut [Y],
) -> bool {
    let (bytes, int8) = match Y::outs(output) {
        Outs::I8(y) => (bytemuck::cast_slice_mut::<i8, u8>(y), true),
        Outs::I16(y) => (bytemuck::cast_slice_mut::<i16, u8>(y), false),
    };
    let size = if int8 { 1 } else { 2 };
    let Some(out) = bytes.get_mut(o * size..) else {
        return false;
    };
    let pixels = x.len() / n.max(1);
    stage.int8() == int8
        && pixels > 0
        && simd::smlad_4x1_staged(w, x, n, stage, out, (pixels, out_stride))
}

/// Four output channels of a pointwise layer with the DSP tiles: per block of pixels the
/// four channels' sums in one call ([`simd::smlad_4x1_pixels`] on [`simd::widen_interleaved`]
/// weights `w`), then each channel's output stage as one loop (as [`pointwise_blocks`]), then
/// the int16 results into the output, four channels per pixel, the first `valid` of them
/// (a tail group repeats its last channel). `outs`: channels `o, o + 1` and `o + 2, o + 3`;
/// `n`: words per input pixel, a multiple of 4.
#[inline(never)]
fn pointwise_quads<Y: Store>(
    x: &[u32],
    w: &[u32],
    outs: &[Outputs; 2],
    bounds: &Bounds,
    (n, out_stride, valid): (usize, usize, usize),
    blocks: &mut Blocks,
    output: &mut [Y],
) {
    if n == 0 {
        return;
    }
    let [lo, hi] = outs.each_ref().map(|outs| &outs.stage);
    let stages = [&lo[0], &lo[1], &hi[0], &hi[1]];
    let stored = Y::stage_bounds(bounds);
    let runs = stages.map(|s| s.single().and_then(|s| s.run(&stored)));
    let bias = [
        outs[0].bias[0],
        outs[0].bias[1],
        outs[1].bias[0],
        outs[1].bias[1],
    ];
    let o = outs[0].o;
    let pixels = x.len() / n;
    // Four whole channels whose stages clamp alike: the output stage in the tile's registers,
    // every pixel in one call, straight into the output.
    if let (4, [Some(r0), Some(r1), Some(r2), Some(r3)]) = (valid, runs) {
        let runs = [r0, r1, r2, r3];
        let (bytes, int8) = match Y::outs(output) {
            Outs::I8(y) => (bytemuck::cast_slice_mut::<i8, u8>(y), true),
            Outs::I16(y) => (bytemuck::cast_slice_mut::<i16, u8>(y), false),
        };
        let size = if int8 { 1 } else { 2 };
        if let (Some(clamp), Some(out)) =
            (simd::QuadClamp::of(&runs, int8), bytes.get_mut(o * size..))
        {
            if simd::smlad_4x1_store(w, x, (n, bias, &runs, clamp), out, (pixels, out_stride)) {
                return;
            }
        }
    }
    let Blocks { accs, narrow } = blocks;
    let mut p0 = 0;
    while p0 < pixels {
        let m = (pixels - p0).min(POINTWISE_BLOCK);
        let xs = x.get(p0 * n..).unwrap_or_default();
        simd::smlad_4x1_pixels(w, xs, n, bias, accs, m);
        quad_stages(accs, narrow, stages, &runs, bounds, m);
        let (lo, hi) = narrow.split_at(simd::QUAD_SPLIT);
        let pairs = lo.chunks_exact(2).zip(hi.chunks_exact(2)).take(m);
        for (i, (v01, v23)) in pairs.enumerate() {
            let at = (p0 + i) * out_stride + o;
            store_quad(output, at, valid, v01, v23);
        }
        p0 += m;
    }
}

#[cfg(any(icefold_dsp, test))]
/// Input words (int16 lane pairs) [`pointwise_strided`] gathers per chunk of output pixels
/// (4 KiB of its frame).
const STRIDED_WORDS: usize = 1024;

/// Most input channels [`pointwise_strided`] takes (one group's widened weights: 1 KiB).
const MAX_STRIDED_IN: usize = 128;

/// Whether [`pointwise_strided`] takes a layer on a core with the DSP tiles: a 1x1 unpadded
/// window with a stride above 1 (output pixel `(y, x)` reads input pixel `(y · sy, x · sx)`
/// only), input channels a positive multiple of 8 up to [`MAX_STRIDED_IN`], dense input pixels,
/// at least four output channels. (ResNet-8's two shortcut convolutions, 1x1 stride 2, took
/// the window loops of [`regular_quads`] at 0.42-0.55 MAC per instruction: one tap per
/// window.)
fn takes_pointwise_strided(g: &ConvGeometry, dims: ([usize; 3], [usize; 3])) -> bool {
    let ([_, _, in_c], [_, _, out_c]) = dims;
    g.kernel == [1, 1]
        && g.pad == [0; 4]
        && g.stride != [1, 1]
        && in_c % 8 == 0
        && (8..=MAX_STRIDED_IN).contains(&in_c)
        && out_c >= 4
        && !g.strided_input(in_c)
}

#[cfg(any(icefold_dsp, test))]
/// A strided pointwise layer ([`takes_pointwise_strided`]) as a dense one: per chunk of
/// output pixels (as many as [`STRIDED_WORDS`] holds) the input pixels they read gathered
/// as int16 lane pairs (an int8 input widened: SXTB16, SXTB16 ROR 8 and two packs per word
/// of four), then [`pointwise_layer`] over the chunk as a dense layer on an int16 input (the
/// four-channel tile, fused with the output stage where the channels allow). `false`, with nothing written, if the input or
/// output is shorter than the dims say or not word-aligned.
#[inline(never)]
fn pointwise_strided<X: Lanes, Y: Store>(c: &Conv<'_, X>, output: &mut [Y]) -> bool {
    let ([in_h, in_w, in_c], [out_h, out_w, out_c]) = c.dims;
    let [sy, sx] = c.geometry.stride;
    let out_stride = c.geometry.out_stride(out_c);
    let n = in_c / 2;
    // Words per input pixel as stored: int16 pairs, or int8 quads.
    let stored = if X::WIDE { n } else { in_c / 4 };
    let src = if X::WIDE {
        X::words(c.input)
    } else {
        X::packed(c.input)
    };
    let Some(src) = src else {
        return false;
    };
    let pixels = out_h * out_w;
    // The last output pixel's input pixel and output elements inside their slices.
    let last_in = ((out_h.saturating_sub(1) * sy) * in_w + out_w.saturating_sub(1) * sx + 1)
        .checked_mul(stored);
    let fits = pixels > 0
        && out_w > 0
        && (out_h - 1) * sy < in_h
        && (out_w - 1) * sx < in_w
        && last_in.is_some_and(|l| l <= src.len())
        && (pixels - 1) * out_stride + out_c <= output.len()
        && n > 0
        && n <= MAX_STRIDED_IN / 2;
    if !fits {
        return false;
    }
    let chunk = STRIDED_WORDS / n;
    let mut gathered = [0u32; STRIDED_WORDS];
    // Each chunk as a dense pointwise layer on an int16 input: `pointwise_layer::<i16, Y>`,
    // which the firmware of any 16x8 network links already (a copy of the groups' loop per
    // input type cost 12 KB of code).
    let dense = ConvGeometry {
        stride: [1, 1],
        ..*c.geometry
    };
    let (mut oy, mut ox) = (0, 0);
    let mut p0 = 0;
    while p0 < pixels {
        let m = (pixels - p0).min(chunk);
        for dst in gathered.chunks_exact_mut(n).take(m) {
            let at = (oy * sy * in_w + ox * sx) * stored;
            let Some(px) = src.get(at..at + stored) else {
                return false;
            };
            if X::WIDE {
                dst.copy_from_slice(px);
            } else {
                for (pair, &word) in dst.chunks_exact_mut(2).zip(px) {
                    let (even, odd) = (simd::sxtb16(word), simd::sxtb16_ror8(word));
                    if let Some([lo, hi]) = pair.first_chunk_mut::<2>() {
                        *lo = (even & 0xFFFF) | (odd << 16);
                        *hi = (even >> 16) | (odd & 0xFFFF_0000);
                    }
                }
            }
            ox += 1;
            if ox == out_w {
                (oy, ox) = (oy + 1, 0);
            }
        }
        let (Some(x), Some(out)) = (gathered.get(..m * n), output.get_mut(p0 * out_stride..))
        else {
            return false;
        };
        let chunk = Conv::<i16> {
            geometry: &dense,
            dims: ([1, m, in_c], [1, m, out_c]),
            // Unpadded: never read.
            padding: Padding {
                zero: 0,
                values: &[],
            },
            channels: c.channels,
            bounds: c.bounds,
            input: bytemuck::cast_slice(x),
            weights: c.weights,
        };
        pointwise_layer(&chunk, out);
        p0 += m;
    }
    true
}

/// `Σ_i w[t][i] · pad(i)` per tap `t` of one output channel's weights (`[taps][in_c]`).
fn pad_sums<X: Element>(padding: &Padding<'_, X>, w: &[i8], in_c: usize) -> [i32; MAX_TAPS] {
    let mut sums = [0i32; MAX_TAPS];
    for (sum, tap) in sums.iter_mut().zip(w.chunks_exact(in_c.max(1))) {
        *sum = padding.tap(tap, 0);
    }
    sums
}

/// The output side of a channel pair.
pub(super) struct Outputs {
    pub(super) bias: [i32; 2],
    pub(super) stage: [Stage; 2],
    /// First channel.
    pub(super) o: usize,
    /// Whether `o + 1` is written too.
    pub(super) pair: bool,
}

impl Outputs {
    /// [`Self::store`] for the pixel whose channels start at `output[at]`.
    #[inline(always)]
    fn store_at<Y: Store>(&self, bounds: &Bounds, output: &mut [Y], at: usize, acc: [i32; 2]) {
        if let Some(y) = output.get_mut(at + self.o) {
            *y = finish(bounds, &self.stage[0], acc[0]);
        }
        if self.pair {
            if let Some(y) = output.get_mut(at + self.o + 1) {
                *y = finish(bounds, &self.stage[1], acc[1]);
            }
        }
    }

    #[inline(always)]
    pub(super) fn store<Y: Store>(&self, bounds: &Bounds, out_px: &mut [Y], acc: [i32; 2]) {
        if let Some(y) = out_px.get_mut(self.o) {
            *y = finish(bounds, &self.stage[0], acc[0]);
        }
        if self.pair {
            if let Some(y) = out_px.get_mut(self.o + 1) {
                *y = finish(bounds, &self.stage[1], acc[1]);
            }
        }
    }
}

/// Every output pixel of one channel pair.
fn pixels<X: Lanes, Y: Store>(
    c: &Conv<'_, X>,
    output: &mut [Y],
    ops: &impl Operands,
    outs: &Outputs,
    pads: &[[i32; MAX_TAPS]; 2],
) {
    let g = c.geometry;
    let ([in_h, in_w, in_c], [out_h, out_w, out_c]) = c.dims;
    let [kh, kw] = g.kernel;
    let row_len = kw * in_c;
    let (y_lo, y_hi) = interior(out_h, g.stride[0], g.dilation[0], g.pad[0], kh, in_h);
    let (x_lo, x_hi) = interior(out_w, g.stride[1], g.dilation[1], g.pad[1], kw, in_w);
    // Input offset of tap (ky, kx) relative to the window's origin, for interior pixels.
    let tap_at = |ky: usize, kx: usize| (ky * g.dilation[0] * in_w + kx * g.dilation[1]) * in_c;
    // Chunk sizes are at least 1 (`run` refuses empty shapes): no panic path.
    // Output pixels `out_stride` elements apart (a view's last row and pixel may be short).
    let out_stride = g.out_stride(out_c).max(1);
    // With the DSP tiles and rows of at most `ROW_BLOCK` pixels, a row's sums are buffered
    // and each channel's output stage runs as one loop (`simd::requant_run`).
    let buffered = TILES && out_w <= ROW_BLOCK;
    let stored = Y::stage_bounds(&c.bounds);
    let runs = outs
        .stage
        .each_ref()
        .map(|s| s.single().and_then(|s| s.run(&stored)));
    let mut accs = [0i32; 2 * ROW_BLOCK];
    let mut narrow = [0i16; 2 * ROW_BLOCK];
    let mut rows = output.chunks_mut((out_stride * out_w).max(1)).take(out_h);
    for oy in 0..out_h {
        let Some(row) = rows.next() else {
            return;
        };
        let mut px = row.chunks_mut(out_stride);
        let mut ox = 0;
        while ox < out_w {
            let interior_pair = (y_lo..y_hi).contains(&oy) && ox >= x_lo && ox + 1 < x_hi;
            if interior_pair {
                let origin =
                    ((oy * g.stride[0] - g.pad[0]) * in_w + ox * g.stride[1] - g.pad[1]) * in_c;
                let next = origin + g.stride[1] * in_c;
                let mut acc = [outs.bias[0], outs.bias[1], outs.bias[0], outs.bias[1]];
                let x_step = g.dilation[0] * in_w * in_c;
                let whole = match g.dilation[1] {
                    1 => ops.window([origin, next], kh, row_len, x_step, acc),
                    _ => None,
                };
                for ky in 0..kh {
                    if let Some(sums) = whole {
                        acc = sums;
                        break;
                    }
                    if g.dilation[1] == 1 {
                        let at = tap_at(ky, 0);
                        acc = ops.two(ky * row_len, [origin + at, next + at], row_len, acc);
                    } else {
                        for kx in 0..kw {
                            let at = tap_at(ky, kx);
                            let w_at = (ky * kw + kx) * in_c;
                            acc = ops.two(w_at, [origin + at, next + at], in_c, acc);
                        }
                    }
                }
                let [a0, a1, b0, b1] = acc;
                if buffered {
                    if let Some(sums) = accs
                        .get_mut(2 * ox..)
                        .and_then(|s| s.first_chunk_mut::<4>())
                    {
                        *sums = acc;
                    }
                } else {
                    if let Some(out_px) = px.next() {
                        outs.store(&c.bounds, out_px, [a0, a1]);
                    }
                    if let Some(out_px) = px.next() {
                        outs.store(&c.bounds, out_px, [b0, b1]);
                    }
                }
                ox += 2;
            } else {
                let acc = border_pixel(c, ops, outs, pads, oy, ox);
                if buffered {
                    if let Some(sums) = accs
                        .get_mut(2 * ox..)
                        .and_then(|s| s.first_chunk_mut::<2>())
                    {
                        *sums = acc;
                    }
                } else if let Some(out_px) = px.next() {
                    outs.store(&c.bounds, out_px, acc);
                }
                ox += 1;
            }
        }
        if buffered {
            let lanes = if outs.pair { 2 } else { 1 };
            for (lane, (stage, run)) in outs.stage.iter().zip(&runs).enumerate().take(lanes) {
                let (Some(sums), Some(dst)) = (accs.get(lane..), narrow.get_mut(lane..)) else {
                    return;
                };
                match run {
                    Some(run) => simd::requant_run(sums, dst, out_w, run),
                    None => super::depthwise::narrow_any(sums, dst, out_w, stage, &c.bounds),
                }
            }
            for (out_px, v) in row.chunks_mut(out_stride).zip(narrow.chunks_exact(2)) {
                if let (Some(y), Some(&v0)) = (out_px.get_mut(outs.o), v.first()) {
                    *y = Y::from_wide(v0);
                }
                if outs.pair {
                    if let (Some(y), Some(&v1)) = (out_px.get_mut(outs.o + 1), v.get(1)) {
                        *y = Y::from_wide(v1);
                    }
                }
            }
        }
    }
}

/// Widest output row whose sums [`pixels`] buffers for the output stage (384 bytes of stack).
const ROW_BLOCK: usize = 32;

/// One output pixel with any of its taps in the padding.
fn border_pixel<X: Lanes, O: Operands>(
    c: &Conv<'_, X>,
    ops: &O,
    outs: &Outputs,
    pads: &[[i32; MAX_TAPS]; 2],
    oy: usize,
    ox: usize,
) -> [i32; 2] {
    let g = c.geometry;
    let ([in_h, in_w, in_c], _) = c.dims;
    let [kh, kw] = g.kernel;
    let mut acc = outs.bias;
    let padded = |acc: &mut [i32; 2], t: usize| {
        for (a, sums) in acc.iter_mut().zip(pads) {
            *a = a.wrapping_add(sums.get(t).copied().unwrap_or(0));
        }
    };
    if O::WINDOWS && g.dilation[1] == 1 {
        // The taps inside the input: kernel rows `ky0..ky1` (contiguous: the input row grows
        // with the kernel row) × columns `first..end`, one window call if the operands have
        // one; every other tap reads the pad sums.
        let inside = |ky: usize| coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], in_h);
        let ky0 = (0..kh).find(|&ky| inside(ky).is_some()).unwrap_or(kh);
        let ky1 = (ky0..kh).find(|&ky| inside(ky).is_none()).unwrap_or(kh);
        let ix0 = ox * g.stride[1];
        let first = g.pad[1].saturating_sub(ix0).min(kw);
        let end = (in_w + g.pad[1]).saturating_sub(ix0).max(first).min(kw);
        if let (Some(iy0), true) = (inside(ky0), first < end) {
            let x_at = (iy0 * in_w + ix0 + first - g.pad[1]) * in_c;
            let shape = simd::Rows {
                rows: ky1 - ky0,
                len: (end - first) * in_c,
                x_step: g.dilation[0] * in_w * in_c,
                w_step: kw * in_c,
            };
            if let Some(sums) = ops.window_one((ky0 * kw + first) * in_c, x_at, shape, acc) {
                acc = sums;
                for ky in 0..kh {
                    for kx in 0..kw {
                        if !((ky0..ky1).contains(&ky) && (first..end).contains(&kx)) {
                            padded(&mut acc, ky * kw + kx);
                        }
                    }
                }
                return acc;
            }
        }
    }
    for ky in 0..kh {
        let Some(iy) = coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], in_h) else {
            (ky * kw..(ky + 1) * kw).for_each(|t| padded(&mut acc, t));
            continue;
        };
        if g.dilation[1] == 1 {
            // Taps kx in [first, end) are inside the input, contiguous.
            let ix0 = ox * g.stride[1];
            let first = g.pad[1].saturating_sub(ix0).min(kw);
            let end = (in_w + g.pad[1]).saturating_sub(ix0).max(first).min(kw);
            (0..first)
                .chain(end..kw)
                .for_each(|kx| padded(&mut acc, ky * kw + kx));
            if first < end {
                let x_at = (iy * in_w + ix0 + first - g.pad[1]) * in_c;
                let w_at = (ky * kw + first) * in_c;
                acc = ops.one(w_at, x_at, (end - first) * in_c, acc);
            }
        } else {
            for kx in 0..kw {
                match coord(ox, g.stride[1], kx, g.dilation[1], g.pad[1], in_w) {
                    Some(ix) => {
                        let x_at = (iy * in_w + ix) * in_c;
                        acc = ops.one((ky * kw + kx) * in_c, x_at, in_c, acc);
                    }
                    None => padded(&mut acc, ky * kw + kx),
                }
            }
        }
    }
    acc
}

/// `groups == in_c == out_c`: one channel at a time over every output pixel; interior pixels
/// read each kernel row as a strided run, border pixels check every tap.
#[inline(never)]
fn depthwise<X: Lanes, Y: Store>(c: &Conv<'_, X>, output: &mut [Y]) {
    let g = c.geometry;
    let ([in_h, in_w, channels], [out_h, out_w, _]) = c.dims;
    let out_stride = g.out_stride(channels);
    let [kh, kw] = g.kernel;
    let taps = kh * kw;
    let (y_lo, y_hi) = interior(out_h, g.stride[0], g.dilation[0], g.pad[0], kh, in_h);
    let (x_lo, x_hi) = interior(out_w, g.stride[1], g.dilation[1], g.pad[1], kw, in_w);
    // Input pixels `in_stride` apart (a channel slice read in place: wider than `channels`).
    let in_stride = g.in_stride(channels);
    let row_step = g.dilation[0] * in_w * in_stride;
    let col_step = g.dilation[1] * in_stride;
    for (ch, w) in c
        .weights
        .chunks_exact(taps.max(1))
        .take(channels)
        .enumerate()
    {
        let Some((bias, stage)) = stage(c.channels, ch) else {
            return;
        };
        let pad = if c.padding.values.is_empty() {
            c.padding.zero.widen()
        } else {
            c.padding.values.get(ch).map_or(0, |v| v.widen())
        };
        let mut outputs = output.iter_mut().skip(ch).step_by(out_stride.max(1));
        for oy in 0..out_h {
            let inside_y = (y_lo..y_hi).contains(&oy);
            for ox in 0..out_w {
                let Some(y) = outputs.next() else {
                    return;
                };
                let mut acc = bias;
                if inside_y && (x_lo..x_hi).contains(&ox) {
                    let origin = ((oy * g.stride[0] - g.pad[0]) * in_w + ox * g.stride[1]
                        - g.pad[1])
                        * in_stride
                        + ch;
                    for (ky, w_row) in w.chunks_exact(kw.max(1)).enumerate() {
                        let row = c.input.get(origin + ky * row_step..).unwrap_or_default();
                        for (w, x) in w_row.iter().zip(row.iter().step_by(col_step.max(1))) {
                            acc = acc.wrapping_add(i32::from(*w) * x.widen());
                        }
                    }
                } else {
                    for (ky, w_row) in w.chunks_exact(kw.max(1)).enumerate() {
                        let iy = coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], in_h);
                        for (kx, w) in w_row.iter().enumerate() {
                            let ix = coord(ox, g.stride[1], kx, g.dilation[1], g.pad[1], in_w);
                            let x = match (iy, ix) {
                                (Some(iy), Some(ix)) => c
                                    .input
                                    .get((iy * in_w + ix) * in_stride + ch)
                                    .map_or(0, |v| v.widen()),
                                _ => pad,
                            };
                            acc = acc.wrapping_add(i32::from(*w) * x);
                        }
                    }
                }
                *y = finish(&c.bounds, &stage, acc);
            }
        }
    }
}

/// [`depthwise`] on int16 words, two channels at a time: one load brings both channels' values
/// of a tap, one instruction pair ([`simd::smla_lanes`]) multiplies them by the two channels'
/// weights. Padded taps read the two channels' pad values as one word.
#[inline(never)]
fn depthwise_pairs<X: Lanes, Y: Store>(c: &Conv<'_, X>, x: &[u32], output: &mut [Y]) {
    let g = c.geometry;
    let ([in_h, in_w, channels], [out_h, out_w, _]) = c.dims;
    let out_stride = g.out_stride(channels);
    let [kh, kw] = g.kernel;
    let taps = kh * kw;
    let half = channels / 2;
    let (y_lo, y_hi) = interior(out_h, g.stride[0], g.dilation[0], g.pad[0], kh, in_h);
    let (x_lo, x_hi) = interior(out_w, g.stride[1], g.dilation[1], g.pad[1], kw, in_w);
    // Word steps between taps along a row and between kernel rows.
    let col = g.dilation[1] * half;
    let row_step = g.dilation[0] * in_w * half;
    let pad_of = |ch: usize| {
        if c.padding.values.is_empty() {
            c.padding.zero.widen()
        } else {
            c.padding.values.get(ch).map_or(0, |v| v.widen())
        }
    };
    for cp in 0..half {
        let ch = 2 * cp;
        let (Some(w0), Some(w1)) = (
            c.weights.get(ch * taps..(ch + 1) * taps),
            c.weights.get((ch + 1) * taps..(ch + 2) * taps),
        ) else {
            return;
        };
        let (Some((b0, s0)), Some((b1, s1))) = (stage(c.channels, ch), stage(c.channels, ch + 1))
        else {
            return;
        };
        let mut w = [0u32; MAX_TAPS];
        for ((slot, a), b) in w.iter_mut().zip(w0).zip(w1) {
            *slot = simd::pair(i32::from(*a), i32::from(*b));
        }
        let w = w.get(..taps).unwrap_or_default();
        let pad = simd::pair(pad_of(ch), pad_of(ch + 1));
        let mut outputs = output.chunks_mut(out_stride.max(1));
        let outs = Outputs {
            bias: [b0, b1],
            stage: [s0, s1],
            o: ch,
            pair: true,
        };
        for oy in 0..out_h {
            let inside_y = (y_lo..y_hi).contains(&oy);
            let mut ox = 0;
            while ox < out_w {
                if inside_y && ox == x_lo && kh == 3 && kw == 3 && x_lo < x_hi {
                    // A run of interior pixels of the common 3x3 window.
                    let run = Run3x3 {
                        origin: ((oy * g.stride[0] - g.pad[0]) * in_w + ox * g.stride[1]
                            - g.pad[1])
                            * half
                            + cp,
                        step: g.stride[1] * half,
                        row: row_step,
                        col,
                        bias: [b0, b1],
                    };
                    let pixels = (&mut outputs).take(x_hi - x_lo);
                    run3x3(x, &run, w, pixels, &outs, &c.bounds);
                    ox = x_hi;
                    continue;
                }
                let Some(out_px) = outputs.next() else {
                    return;
                };
                ox += 1;
                let ox = ox - 1;
                let mut acc = [b0, b1];
                if inside_y && (x_lo..x_hi).contains(&ox) {
                    let origin =
                        ((oy * g.stride[0] - g.pad[0]) * in_w + ox * g.stride[1] - g.pad[1]) * half
                            + cp;
                    for (ky, w_row) in w.chunks_exact(kw.max(1)).enumerate() {
                        let at = origin + ky * row_step;
                        if let (&[w0, w1, w2], Some(run)) = (w_row, x.get(at..at + 2 * col + 1)) {
                            // The common 3-wide row: one slice check for three taps.
                            let (Some(x0), Some(x1), Some(x2)) =
                                (run.first(), run.get(col), run.last())
                            else {
                                continue;
                            };
                            acc = simd::smla_lanes(w0, *x0, acc);
                            acc = simd::smla_lanes(w1, *x1, acc);
                            acc = simd::smla_lanes(w2, *x2, acc);
                        } else {
                            for (kx, wt) in w_row.iter().enumerate() {
                                let xw = x.get(at + kx * col).copied().unwrap_or(0);
                                acc = simd::smla_lanes(*wt, xw, acc);
                            }
                        }
                    }
                } else {
                    for (ky, w_row) in w.chunks_exact(kw.max(1)).enumerate() {
                        let iy = coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], in_h);
                        for (kx, wt) in w_row.iter().enumerate() {
                            let ix = coord(ox, g.stride[1], kx, g.dilation[1], g.pad[1], in_w);
                            let xw = match (iy, ix) {
                                (Some(iy), Some(ix)) => {
                                    x.get((iy * in_w + ix) * half + cp).copied().unwrap_or(0)
                                }
                                _ => pad,
                            };
                            acc = simd::smla_lanes(*wt, xw, acc);
                        }
                    }
                }
                outs.store(&c.bounds, out_px, acc);
            }
        }
    }
}

/// A run of interior output pixels of a 3x3 depthwise window, in words of two channels.
struct Run3x3 {
    /// Word of tap (0, 0) of the first pixel.
    origin: usize,
    /// Words from one pixel's window to the next.
    step: usize,
    /// Words between kernel rows.
    row: usize,
    /// Words between taps of a row.
    col: usize,
    /// The two channels' biases.
    bias: [i32; 2],
}

/// The pixels of `run`, each nine taps of two channels ([`simd::smla_lanes`]) stored by `store`.
#[inline(never)]
fn run3x3<'o, Y: Store + 'o>(
    x: &[u32],
    run: &Run3x3,
    w: &[u32],
    pixels: impl Iterator<Item = &'o mut [Y]>,
    outs: &Outputs,
    bounds: &Bounds,
) {
    let Some(&[w0, w1, w2, w3, w4, w5, w6, w7, w8]) = w.first_chunk::<9>() else {
        return;
    };
    let span = 2 * run.col + 1;
    let mut at = run.origin;
    for out_px in pixels {
        let rows = [at, at + run.row, at + 2 * run.row].map(|r| x.get(r..r + span));
        let [Some(r0), Some(r1), Some(r2)] = rows else {
            return;
        };
        let mut acc = run.bias;
        for (r, [a, b, c]) in [(r0, [w0, w1, w2]), (r1, [w3, w4, w5]), (r2, [w6, w7, w8])] {
            let (Some(first), Some(mid), Some(last)) = (r.first(), r.get(run.col), r.last()) else {
                return;
            };
            acc = simd::smla_lanes(a, *first, acc);
            acc = simd::smla_lanes(b, *mid, acc);
            acc = simd::smla_lanes(c, *last, acc);
        }
        outs.store(bounds, out_px, acc);
        at += run.step;
    }
}

/// [`reference::int8::conv::conv2d`](crate::kernels::reference::int8::conv::conv2d), fast where
/// a loop of this module covers the geometry.
pub fn conv2d(
    params: &ConvGeometry,
    quant: &ConvQuant,
    in_dims: [usize; 3],
    input: &[i8],
    out_dims: [usize; 3],
    output: &mut [i8],
    weights: &[i8],
) {
    conv2d_loops::<AllLoops>(
        params, quant, in_dims, input, out_dims, output, weights, None,
    );
}

/// [`conv2d`] with the loops of `L` only (the reference kernel where they do not cover it);
/// `prepared`: the set-up kept across the bands of a layer run in place ([`Prepared`]).
#[allow(clippy::too_many_arguments)] // the reference kernel's operands and `prepared`
pub fn conv2d_loops<L: Loops>(
    params: &ConvGeometry,
    quant: &ConvQuant,
    in_dims: [usize; 3],
    input: &[i8],
    out_dims: [usize; 3],
    output: &mut [i8],
    weights: &[i8],
    prepared: Option<&mut Prepared>,
) {
    let conv = Conv {
        geometry: params,
        dims: (in_dims, out_dims),
        padding: Padding {
            zero: quant.input_zero_point,
            values: quant.pad_values,
        },
        channels: &quant.channels,
        bounds: Bounds::from(quant.output),
        input,
        weights,
    };
    if !run_loops::<i8, i8, L>(&conv, output, prepared) {
        reference::conv2d(params, quant, in_dims, input, out_dims, output, weights);
    }
}

/// [`reference::int8::conv::conv2d_wide`](crate::kernels::reference::int8::conv::conv2d_wide),
/// fast where a loop of this module covers the geometry.
pub fn conv2d_wide<X: Lanes, Y: Store + 'static>(
    params: &ConvGeometry,
    quant: &WideConvQuant<X>,
    in_dims: [usize; 3],
    input: &[X],
    out_dims: [usize; 3],
    output: &mut [Y],
    weights: &[i8],
) {
    conv2d_wide_loops::<X, Y, AllLoops>(
        params, quant, in_dims, input, out_dims, output, weights, None,
    );
}

/// [`conv2d_wide`] with the loops of `L` only (the reference kernel where they do not cover it);
/// `prepared` as [`conv2d_loops`]'.
#[allow(clippy::too_many_arguments)] // the reference kernel's operands and `prepared`
pub fn conv2d_wide_loops<X: Lanes, Y: Store + 'static, L: Loops>(
    params: &ConvGeometry,
    quant: &WideConvQuant<X>,
    in_dims: [usize; 3],
    input: &[X],
    out_dims: [usize; 3],
    output: &mut [Y],
    weights: &[i8],
    prepared: Option<&mut Prepared>,
) {
    let conv = Conv {
        geometry: params,
        dims: (in_dims, out_dims),
        padding: Padding {
            zero: quant.input_zero_point,
            values: quant.pad_values,
        },
        channels: &quant.channels,
        bounds: Bounds::from(quant.output),
        input,
        weights,
    };
    if !run_loops::<X, Y, L>(&conv, output, prepared) {
        reference::conv2d_wide(params, quant, in_dims, input, out_dims, output, weights);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{Clamp, ClampI16, OutputQuant, WideOutputQuant};
    use proptest::prelude::*;
    use std::vec::Vec;

    std::thread_local! {
        /// Set: the tiles' portable twins (the window loops of `Wide` and `Packed`) run on an
        /// AVX2 host too, so the tests check them against the reference as well.
        pub(super) static PORTABLE_TILES: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    /// `f` with the host's AVX2 dot products, then with the tiles' portable twins.
    pub(crate) fn both_paths<T>(f: impl Fn() -> T) -> [T; 2] {
        let avx2 = f();
        PORTABLE_TILES.with(|p| p.set(true));
        let portable = f();
        PORTABLE_TILES.with(|p| p.set(false));
        [avx2, portable]
    }

    /// Loop classes as bits of a mask (`Linked`'s).
    const COLUMNS: u8 = 1;
    const COLUMNS_WHOLE: u8 = 2;
    const POINTWISE: u8 = 4;
    const QUADS: u8 = 8;
    const PIXELS: u8 = 16;
    const DEPTHWISE_PIXEL: u8 = 32;
    const DEPTHWISE_ROWS: u8 = 64;
    const ALL_CLASSES: u8 = 127;

    /// The classes of the loop `taken`.
    fn class_mask(taken: RegularLoop) -> u8 {
        match taken {
            RegularLoop::Columns(ColumnBuffers::Small) => COLUMNS,
            RegularLoop::Columns(ColumnBuffers::Whole) => COLUMNS_WHOLE,
            RegularLoop::Columns(ColumnBuffers::Both) => COLUMNS | COLUMNS_WHOLE,
            RegularLoop::Pointwise | RegularLoop::Strided => POINTWISE,
            RegularLoop::Quads => QUADS,
            RegularLoop::Pixels => PIXELS,
        }
    }

    /// A firmware's loops: the classes of `MASK`.
    struct Linked<const MASK: u8>;
    impl<const MASK: u8> Loops for Linked<MASK> {
        const REGULAR: bool = true;
        const DEPTHWISE: bool = true;
        const COLUMNS: bool = MASK & COLUMNS != 0;
        const COLUMNS_WHOLE: bool = MASK & COLUMNS_WHOLE != 0;
        const POINTWISE: bool = MASK & POINTWISE != 0;
        const QUADS: bool = MASK & QUADS != 0;
        const PIXELS: bool = MASK & PIXELS != 0;
        const DEPTHWISE_PIXEL: bool = MASK & DEPTHWISE_PIXEL != 0;
        const DEPTHWISE_ROWS: bool = MASK & DEPTHWISE_ROWS != 0;
    }

    /// [`run_loops`] with the loops of `mask` (one class, or every class but one).
    fn run_linked<X: Lanes, Y: Store + 'static>(
        mask: u8,
        conv: &Conv<'_, X>,
        output: &mut [Y],
    ) -> bool {
        macro_rules! masks {
            ($($m:expr),*) => {
                match mask {
                    $(m if m == $m => run_loops::<X, Y, Linked<{ $m }>>(conv, output, None),
                      m if m == ALL_CLASSES & !$m => run_loops::<X, Y, Linked<{ ALL_CLASSES & !$m }>>(conv, output, None),)*
                    _ => unreachable!("mask {mask:#b}"),
                }
            };
        }
        masks!(
            COLUMNS,
            COLUMNS_WHOLE,
            COLUMNS | COLUMNS_WHOLE,
            POINTWISE,
            QUADS,
            PIXELS,
            DEPTHWISE_ROWS
        )
    }

    /// A random convolution: geometry, dims, per-channel constants and data (from `seed`).
    #[derive(Debug, Clone)]
    struct Case {
        g: ConvGeometry,
        in_dims: [usize; 3],
        out_dims: [usize; 3],
        with_pad_values: bool,
        relu: bool,
        seed: u64,
    }

    fn out_len(size: usize, k: usize, s: usize, d: usize, pa: usize, pb: usize) -> Option<usize> {
        (size + pa + pb)
            .checked_sub(d * (k - 1) + 1)
            .map(|n| n / s + 1)
    }

    prop_compose! {
        fn case()(kind in 0u8..4, icg in 1usize..=9, ocg in 1usize..=5,
                  kh in 1usize..=4, kw in 1usize..=4, sh in 1usize..=3, sw in 1usize..=3,
                  dh in 1usize..=2, dw in 1usize..=2, pad in proptest::array::uniform4(0usize..=2),
                  h in 1usize..=8, w in 1usize..=8, with_pad_values in any::<bool>(),
                  relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            // Regular (twice as likely), depthwise, grouped (the reference's).
            let (groups, in_c, out_c) = match kind {
                0 | 1 => (1, icg * if kind == 1 { 4 } else { 1 }, ocg),
                2 => (icg, icg, icg),
                _ => (2, 2 * icg, 2 * ocg),
            };
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [kh, kw], stride: [sh, sw], dilation: [dh, dw], pad, groups, in_pixel_stride: 0 };
            let oh = out_len(h, kh, sh, dh, pad[0], pad[2])?;
            let ow = out_len(w, kw, sw, dw, pad[1], pad[3])?;
            Some(Case { g, in_dims: [h, w, in_c], out_dims: [oh, ow, out_c], with_pad_values, relu, seed })
        }
    }

    prop_compose! {
        /// First layers (1-3 input channels, `columns`): tall kernels (DS-CNN's 10x4) and
        /// more output channels than one chunk of widened weights holds.
        fn first_layer()(in_c in 1usize..=3, out_c in 1usize..=40, kh in 1usize..=10,
                         kw in 1usize..=4, sh in 1usize..=2, sw in 1usize..=2,
                         pad in proptest::array::uniform4(0usize..=2), h in 1usize..=12,
                         w in 1usize..=8, with_pad_values in any::<bool>(),
                         relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [kh, kw], stride: [sh, sw], dilation: [1, 1], pad, groups: 1, in_pixel_stride: 0 };
            let oh = out_len(h, kh, sh, 1, pad[0], pad[2])?;
            let ow = out_len(w, kw, sw, 1, pad[1], pad[3])?;
            Some(Case { g, in_dims: [h, w, in_c], out_dims: [oh, ow, out_c], with_pad_values, relu, seed })
        }
    }

    prop_compose! {
        /// First layers as `columns` takes them (input channels not a multiple of 4): 1-3 and
        /// 5-7 input channels, kernels up to 10x7 (DS-CNN's 10x4, 7x7), strides 1 and 2, pads
        /// up to 3 a side, dilation, maps down to 1xN and Nx1, output channels up to 20 and
        /// 60-72 (odd, not a multiple of 4, beyond 64).
        fn first_layer_fused()(in_c in prop_oneof![1usize..=3, 5usize..=7],
                               out_c in prop_oneof![3 => 1usize..=20, 1 => 60usize..=72],
                               kh in 1usize..=10, kw in 1usize..=7, sh in 1usize..=2, sw in 1usize..=2,
                               dh in 1usize..=2, dw in 1usize..=2,
                               pad in proptest::array::uniform4(0usize..=3), h in 1usize..=14,
                               w in 1usize..=14, with_pad_values in any::<bool>(),
                               relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            let dilation = if seed % 4 == 0 { [dh, dw] } else { [1, 1] };
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [kh, kw], stride: [sh, sw], dilation, pad, groups: 1, in_pixel_stride: 0 };
            let oh = out_len(h, kh, sh, dilation[0], pad[0], pad[2])?;
            let ow = out_len(w, kw, sw, dilation[1], pad[1], pad[3])?;
            Some(Case { g, in_dims: [h, w, in_c], out_dims: [oh, ow, out_c], with_pad_values, relu, seed })
        }
    }

    prop_compose! {
        /// Depthwise 3x3 windows, the fast loops' most common case, on int16 channel pairs.
        fn depthwise3x3()(half in 1usize..=6, sh in 1usize..=2, sw in 1usize..=2,
                          dh in 1usize..=2, dw in 1usize..=2, pad in proptest::array::uniform4(0usize..=2),
                          h in 3usize..=9, w in 3usize..=9, with_pad_values in any::<bool>(),
                          relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            let c = 2 * half;
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [3, 3], stride: [sh, sw], dilation: [dh, dw], pad, groups: c, in_pixel_stride: 0 };
            let oh = out_len(h, 3, sh, dh, pad[0], pad[2])?;
            let ow = out_len(w, 3, sw, dw, pad[1], pad[3])?;
            Some(Case { g, in_dims: [h, w, c], out_dims: [oh, ow, c], with_pad_values, relu, seed })
        }
    }

    prop_compose! {
        /// Regular windows `regular_quads` takes: input channels in multiples of 8 (int16
        /// inputs) or 16 (int8: half of these), four output channels and a tail of none to three, pads, strides,
        /// row dilation, clipped windows (border pixels, maps smaller than the kernel), rows of
        /// up to `POINTWISE_BLOCK` pixels and beyond, border columns run down the rows
        /// (`BORDER_COLUMNS`, pads of at most 1 a side) and one by one (pads of 2, more than
        /// `POINTWISE_BLOCK` rows inside).
        fn quad_case()(eighths in 1usize..=8, out_c in 4usize..=11, kh in 1usize..=3,
                       kw in 1usize..=3, sh in 1usize..=2, sw in 1usize..=2, dh in 1usize..=2,
                       pad in proptest::array::uniform4(0usize..=2),
                       h in prop_oneof![3 => 1usize..=9, 1 => 30usize..=36],
                       w in prop_oneof![1usize..=9, 30usize..=36], with_pad_values in any::<bool>(),
                       relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [kh, kw], stride: [sh, sw], dilation: [dh, 1], pad, groups: 1, in_pixel_stride: 0 };
            let oh = out_len(h, kh, sh, dh, pad[0], pad[2])?;
            let ow = out_len(w, kw, sw, 1, pad[1], pad[3])?;
            Some(Case { g, in_dims: [h, w, 8 * eighths], out_dims: [oh, ow, out_c], with_pad_values, relu, seed })
        }
    }

    prop_compose! {
        /// Pointwise (1x1, stride 1, unpadded) convolutions: odd and even pixel counts, blocks
        /// of pixels and their tails (more than `POINTWISE_BLOCK` pixels), input channels in
        /// and out of multiples of 8 (the four-channel tile), output channels in groups of
        /// four and a tail of one to three.
        fn pointwise_case()(half in 1usize..=40, out_c in 1usize..=14, h in 1usize..=9,
                            w in 1usize..=9, relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pad: [0; 4], groups: 1, in_pixel_stride: 0 };
            Some(Case { g, in_dims: [h, w, 2 * half], out_dims: [h, w, out_c], with_pad_values: false, relu, seed })
        }
    }

    prop_compose! {
        /// Strided pointwise convolutions (1x1, unpadded, strides 1-3 per axis): input
        /// channels in multiples of 8 up to 128 (`pointwise_strided`) and a few others, output
        /// channels in groups of four and a tail, odd and even sizes, chunks of gathered
        /// pixels and their tails (`STRIDED_WORDS / (in_c / 2)` pixels each).
        fn strided_pointwise_case()(eighths in 1usize..=16, odd in 0usize..8, out_c in 1usize..=14,
                                    sh in 1usize..=3, sw in 1usize..=3, h in 1usize..=24,
                                    w in 1usize..=24, relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            // One case in eight with input channels not a multiple of 8 (not taken).
            let in_c = if odd == 0 { 2 * eighths + 2 } else { 8 * eighths };
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [1, 1], stride: [sh, sw], dilation: [1, 1], pad: [0; 4], groups: 1, in_pixel_stride: 0 };
            let (oh, ow) = ((h - 1) / sh + 1, (w - 1) / sw + 1);
            Some(Case { g, in_dims: [h, w, in_c], out_dims: [oh, ow, out_c], with_pad_values: false, relu, seed })
        }
    }

    struct Data<X> {
        x: Vec<X>,
        weights: Vec<i8>,
        pad_values: Vec<X>,
        bias: Vec<i32>,
        multiplier: Vec<i32>,
        shift: Vec<i32>,
    }

    fn data<X: Copy>(
        c: &Case,
        gen: &mut Gen,
        value: impl Fn(&mut Gen) -> X,
        bias_bits: i32,
    ) -> Data<X> {
        let [h, w, in_c] = c.in_dims;
        let out_c = c.out_dims[2];
        let per_out = c.g.kernel[0] * c.g.kernel[1] * (in_c / c.g.groups);
        // Factors near 1 half of the time, so that a one-unit difference in an accumulator
        // shows in the output; the host's whole range otherwise.
        let requant: Vec<_> = (0..out_c)
            .map(|_| {
                if gen.next() % 2 == 0 {
                    crate::quant::Requant {
                        multiplier: gen.range(1 << 30, i32::MAX),
                        shift: gen.range(-3, 1),
                    }
                } else {
                    gen.requant()
                }
            })
            .collect();
        Data {
            x: (0..h * w * in_c).map(|_| value(gen)).collect(),
            weights: gen.i8s(out_c * per_out),
            pad_values: if c.with_pad_values {
                (0..in_c).map(|_| value(gen)).collect()
            } else {
                Vec::new()
            },
            bias: (0..out_c)
                .map(|_| gen.range(-(1 << bias_bits), 1 << bias_bits))
                .collect(),
            multiplier: requant.iter().map(|r| r.multiplier).collect(),
            shift: requant.iter().map(|r| r.shift).collect(),
        }
    }

    /// The geometry and input rows of output rows `rows` of `c`, as `format::Layer::band` cuts
    /// a layer run in place: the input rows the band reads, the top and bottom pads it still
    /// needs. `None` for a band that reads no input row.
    fn band_of(
        c: &Case,
        rows: core::ops::Range<usize>,
    ) -> Option<(ConvGeometry, core::ops::Range<usize>)> {
        let mut g = c.g;
        let extent = (g.dilation[0] * (g.kernel[0] - 1) + 1) as isize;
        let pad = g.pad[0] as isize;
        let start = (rows.start * g.stride[0]) as isize - pad;
        let end = ((rows.end - 1) * g.stride[0]) as isize - pad + extent;
        let h = c.in_dims[0] as isize;
        let (lo, hi) = (start.clamp(0, h), end.clamp(0, h));
        if lo >= hi {
            return None;
        }
        g.pad[0] = (lo - start) as usize;
        g.pad[2] = (end - hi) as usize;
        Some((g, lo as usize..hi as usize))
    }

    fn len(d: [usize; 3]) -> usize {
        d[0] * d[1] * d[2]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        #[test]
        fn int8_equals_reference(c in prop_oneof![3 => case(), 1 => first_layer(), 1 => strided_pointwise_case()], zp_in in any::<i8>(), zp_out in any::<i8>()) {
            let Some(c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let d = data(&c, &mut gen, Gen::i8, 20);
            let clamp = if c.relu { Clamp { min: zp_out, max: 127 } } else { Clamp::FULL };
            let quant = ConvQuant {
                input_zero_point: zp_in,
                pad_values: &d.pad_values,
                channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                output: OutputQuant { zero_point: zp_out, clamp },
            };
            let mut fast = std::vec![0i8; len(c.out_dims)];
            let mut want = std::vec![0i8; len(c.out_dims)];
            let conv = Conv {
                geometry: &c.g,
                dims: (c.in_dims, c.out_dims),
                padding: Padding { zero: zp_in, values: &d.pad_values },
                channels: &quant.channels,
                bounds: Bounds { zero_point: i32::from(zp_out), min: i32::from(clamp.min), max: i32::from(clamp.max) },
                input: &d.x,
                weights: &d.weights,
            };
            // The fast loops take every regular and depthwise case generated here.
            let covered = c.g.groups == 1 || (c.g.groups == c.in_dims[2] && c.g.groups == c.out_dims[2]);
            prop_assert_eq!(run(&conv, &mut fast), covered);
            reference::conv2d(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut want, &d.weights);
            if covered {
                prop_assert_eq!(&fast, &want);
            }
            for fast in both_paths(|| {
                let mut fast = std::vec![0i8; len(c.out_dims)];
                conv2d(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut fast, &d.weights);
                fast
            }) {
                prop_assert_eq!(&fast, &want);
            }
        }

        #[test]
        fn pointwise_and_depthwise_3x3_equal_reference(c in prop_oneof![depthwise3x3(), pointwise_case()],
                                          zp_in in any::<i16>(), zp_out in any::<i16>()) {
            let Some(c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let d = data(&c, &mut gen, Gen::i16, 20);
            let clamp = if c.relu { ClampI16 { min: zp_out, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            let quant = WideConvQuant {
                input_zero_point: zp_in,
                pad_values: &d.pad_values,
                channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                output: WideOutputQuant { zero_point: zp_out, clamp },
            };
            let mut want = std::vec![0i16; len(c.out_dims)];
            reference::conv2d_wide(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut want, &d.weights);
            // The host's AVX2 loops, then the DSP tiles' portable twins.
            for fast in both_paths(|| {
                let mut fast = std::vec![0i16; len(c.out_dims)];
                conv2d_wide(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut fast, &d.weights);
                fast
            }) {
                prop_assert_eq!(&fast, &want);
            }
        }

        /// A layer run in bands of rows with one set-up for all of them (in place: the
        /// depthwise pixel loop keeps its constants and ring, the pointwise groups their
        /// widened weights, from the first band on) writes what the whole layer writes; the
        /// set-up is kept (the later bands read it) wherever the loop takes the layer.
        #[test]
        fn bands_with_one_set_up_equal_the_whole_layer(c in prop_oneof![depthwise3x3(), pointwise_case()],
                                                       cuts in proptest::collection::vec(1usize..=4, 1..6),
                                                       zp_in in any::<i16>(), zp_out in any::<i16>()) {
            let Some(c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let d = data(&c, &mut gen, Gen::i16, 20);
            let clamp = if c.relu { ClampI16 { min: zp_out, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            let quant = WideConvQuant {
                input_zero_point: zp_in,
                pad_values: &d.pad_values,
                channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                output: WideOutputQuant { zero_point: zp_out, clamp },
            };
            let mut want = std::vec![0i16; len(c.out_dims)];
            reference::conv2d_wide(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut want, &d.weights);
            let ([_, w, in_c], [oh, ow, out_c]) = (c.in_dims, c.out_dims);
            let depthwise = c.g.groups > 1;
            let mut ring = [0u32; PIXEL_RING];
            let mut pixel = PixelSetUp::new(&mut ring);
            let mut words = [0u32; 2048];
            let mut groups = PointwiseSetUp::new(&mut words);
            let mut fast = std::vec![0i16; len(c.out_dims)];
            let mut kept = true;
            PORTABLE_TILES.with(|p| p.set(true));
            let mut start = 0;
            for cut in cuts.iter().cycle() {
                if start >= oh {
                    break;
                }
                let rows = start..(start + cut).min(oh);
                start = rows.end;
                // A band that reads only padding never runs in place.
                let Some((g, in_rows)) = band_of(&c, rows.clone()) else {
                    PORTABLE_TILES.with(|p| p.set(false));
                    return Ok(());
                };
                let x = &d.x[in_rows.start * w * in_c..in_rows.end * w * in_c];
                let y = &mut fast[rows.start * ow * out_c..rows.end * ow * out_c];
                let conv = Conv {
                    geometry: &g,
                    dims: ([in_rows.len(), w, in_c], [rows.len(), ow, out_c]),
                    padding: Padding { zero: zp_in, values: &d.pad_values },
                    channels: &quant.channels,
                    bounds: Bounds::from(quant.output),
                    input: x,
                    weights: &d.weights,
                };
                if depthwise {
                    let pixels = super::super::depthwise::covers_by_pixel(&conv);
                    // The ring's rows kept from the band before, but for some bands (whose
                    // call then copies every row).
                    if rows.start % 5 != 4 {
                        pixel.at_row(rows.start, c.g.stride[0]);
                    }
                    let taken = pixels && <i16 as Lanes>::words(x)
                        .is_some_and(|words| super::super::depthwise::by_pixel_with(&conv, words, &mut *y, &mut pixel));
                    kept &= taken;
                    if !taken {
                        reference::conv2d_wide(&g, &quant, conv.dims.0, x, conv.dims.1, y, &d.weights);
                    }
                } else {
                    pointwise_layer_with(&conv, y, &mut groups);
                    kept &= groups.layer == Some(LayerKey::of(&conv));
                }
            }
            PORTABLE_TILES.with(|p| p.set(false));
            prop_assert_eq!(&fast, &want);
            // The pointwise groups keep their weights wherever the four-channel tile runs.
            if !depthwise && in_c % 8 == 0 && out_c >= 4 {
                prop_assert!(kept, "pointwise set-up not kept");
            }
        }

        /// The strided pointwise path takes every layer it admits (int8 and int16 inputs and
        /// outputs, zero points, views of wider output pixels) and writes what the reference
        /// does, leaving a view's other channels as they were.
        #[test]
        fn strided_pointwise_takes_what_it_admits(c in strided_pointwise_case(), kinds in 0u8..4, extra in 0usize..3,
                                                  zp_in in any::<i16>(), zp_out in any::<i16>()) {
            let Some(mut c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let out_c = c.out_dims[2];
            // An output view: pixels `out_c + extra` elements apart.
            c.g.out_pixel_stride = if extra > 0 { out_c + extra } else { 0 };
            let clamp = if c.relu { ClampI16 { min: zp_out, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            fn check<X: Lanes + core::fmt::Debug, Y: Store + Default + core::fmt::Debug + PartialEq + 'static>(
                c: &Case, d: &Data<X>, zp: X, output: WideOutputQuant,
            ) -> Result<(), TestCaseError> {
                let quant = WideConvQuant {
                    input_zero_point: zp,
                    pad_values: &d.pad_values,
                    channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                    output,
                };
                let [oh, ow, out_c] = c.out_dims;
                let stride = c.g.out_stride(out_c);
                let size = (oh * ow - 1) * stride + out_c;
                // The reference writes a dense output: spread it into the view.
                let mut dense = std::vec![Y::default(); len(c.out_dims)];
                let plain = ConvGeometry { out_pixel_stride: 0, ..c.g };
                reference::conv2d_wide(&plain, &quant, c.in_dims, &d.x, c.out_dims, &mut dense, &d.weights);
                let mut want = std::vec![Y::default(); size];
                for (p, px) in dense.chunks_exact(out_c).enumerate() {
                    want[p * stride..p * stride + out_c].copy_from_slice(px);
                }
                let conv = Conv {
                    geometry: &c.g,
                    dims: (c.in_dims, c.out_dims),
                    padding: Padding { zero: zp, values: &d.pad_values },
                    channels: &quant.channels,
                    bounds: Bounds::from(quant.output),
                    input: &d.x,
                    weights: &d.weights,
                };
                let mut fast = std::vec![Y::default(); size];
                PORTABLE_TILES.with(|p| p.set(true));
                let admitted = takes_pointwise_strided(conv.geometry, conv.dims);
                let taken = admitted && pointwise_strided(&conv, &mut fast);
                PORTABLE_TILES.with(|p| p.set(false));
                let in_c = c.in_dims[2];
                let expected = in_c % 8 == 0 && out_c >= 4 && c.g.stride != [1, 1];
                prop_assert_eq!(admitted, expected);
                prop_assert_eq!(taken, expected);
                if taken {
                    prop_assert_eq!(&fast, &want);
                }
                Ok(())
            }
            let output = WideOutputQuant { zero_point: zp_out, clamp };
            let narrow = WideOutputQuant { zero_point: zp_out.clamp(-128, 127), clamp: ClampI16 { min: clamp.min.clamp(-128, 127), max: 127 } };
            match kinds {
                0 => check::<i8, i16>(&c, &data(&c, &mut gen, Gen::i8, 20), zp_in as i8, output)?,
                1 => check::<i8, i8>(&c, &data(&c, &mut gen, Gen::i8, 20), zp_in as i8, narrow)?,
                2 => check::<i16, i16>(&c, &data(&c, &mut gen, Gen::i16, 20), zp_in, output)?,
                _ => check::<i16, i8>(&c, &data(&c, &mut gen, Gen::i16, 20), zp_in, narrow)?,
            }
        }

        /// The 8-input-channel path (`pointwise_small`) takes every layer it admits (output
        /// channels in fours, int16 and int8 outputs with the clamps of the fused stage, odd
        /// and even pixel counts, one pixel, views of wider output pixels), refuses 16 input
        /// channels and other channel counts, and writes what the reference does, leaving a
        /// view's other elements as they were.
        #[test]
        fn small_pointwise_takes_what_it_admits(sixteen in any::<bool>(), out_c in 1usize..=28, h in 1usize..=9,
                                                w in 1usize..=9, relu in any::<bool>(), int8 in any::<bool>(),
                                                extra in 0usize..3, zp_in in any::<i16>(), seed in any::<u64>()) {
            let in_c = if sixteen { 16 } else { 8 };
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pad: [0; 4], groups: 1, in_pixel_stride: 0 };
            let mut c = Case { g, in_dims: [h, w, in_c], out_dims: [h, w, out_c], with_pad_values: false, relu, seed };
            c.g.out_pixel_stride = if extra > 0 { out_c + extra } else { 0 };
            let mut gen = Gen(c.seed);
            let mut d = data(&c, &mut gen, Gen::i16, 20);
            // Factors of the stage's register form but for about one layer in eight (a
            // channel without it sends the layer to the four-channel groups).
            for s in d.shift.iter_mut() {
                if gen.next() % 64 != 0 {
                    *s = gen.range(-14, -3);
                }
            }
            // The zero points and clamps of the stage's forms: int16 (ReLU at 0), int8.
            let output = match (int8, relu) {
                (false, false) => WideOutputQuant { zero_point: 0, clamp: ClampI16 { min: i16::MIN, max: i16::MAX } },
                (false, true) => WideOutputQuant { zero_point: 0, clamp: ClampI16 { min: 0, max: i16::MAX } },
                (true, false) => WideOutputQuant { zero_point: 3, clamp: ClampI16 { min: -128, max: 127 } },
                (true, true) => WideOutputQuant { zero_point: -128, clamp: ClampI16 { min: -128, max: 127 } },
            };
            fn check<Y: Store + Default + core::fmt::Debug + PartialEq + 'static>(
                c: &Case, d: &Data<i16>, zp: i16, output: WideOutputQuant,
            ) -> Result<(), TestCaseError> {
                let quant = WideConvQuant {
                    input_zero_point: zp,
                    pad_values: &d.pad_values,
                    channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                    output,
                };
                let [oh, ow, out_c] = c.out_dims;
                let stride = c.g.out_stride(out_c);
                let size = (oh * ow - 1) * stride + out_c;
                let mut dense = std::vec![Y::default(); len(c.out_dims)];
                let plain = ConvGeometry { out_pixel_stride: 0, ..c.g };
                reference::conv2d_wide(&plain, &quant, c.in_dims, &d.x, c.out_dims, &mut dense, &d.weights);
                // The view's other elements keep a marker.
                let mut want = std::vec![Y::from_wide(77); size];
                for (p, px) in dense.chunks_exact(out_c).enumerate() {
                    want[p * stride..p * stride + out_c].copy_from_slice(px);
                }
                let conv = Conv {
                    geometry: &c.g,
                    dims: (c.in_dims, c.out_dims),
                    padding: Padding { zero: zp, values: &d.pad_values },
                    channels: &quant.channels,
                    bounds: Bounds::from(quant.output),
                    input: &d.x,
                    weights: &d.weights,
                };
                let mut fast = std::vec![Y::from_wide(77); size];
                let mut buf = [0u32; POINTWISE_WORDS];
                PORTABLE_TILES.with(|p| p.set(true));
                let admitted = takes_small(&conv);
                let int8 = matches!(Y::outs(&mut []), Outs::I8(_));
                let clamp = if admitted { small_records(&conv, int8, &mut buf) } else { None };
                let x = <i16 as Lanes>::words(&d.x).unwrap_or_default();
                let taken = clamp.is_some_and(|clamp| pointwise_small(x, &buf, clamp, stride, out_c, &mut fast));
                // The layer's own path (the records per call) writes the same.
                let mut whole = std::vec![Y::from_wide(77); size];
                pointwise_layer(&conv, &mut whole);
                PORTABLE_TILES.with(|p| p.set(false));
                let expected = c.in_dims[2] == 8 && out_c % 4 == 0;
                let runs = (0..out_c).all(|ch| super::super::depthwise::channel_run(&conv, ch).is_some());
                prop_assert_eq!(admitted, expected);
                prop_assert_eq!(taken, expected && runs, "records {:?}", clamp);
                if taken {
                    prop_assert_eq!(&fast, &want);
                }
                prop_assert_eq!(&whole, &want);
                Ok(())
            }
            if int8 {
                check::<i8>(&c, &d, zp_in, output)?;
            } else {
                check::<i16>(&c, &d, zp_in, output)?;
            }
        }

        /// The four-channel tile runs every layer it admits to the end (it stops at a shape
        /// check it fails) and writes what the reference does, tail channels included.
        #[test]
        fn quads_take_every_group_they_admit(c in quad_case(), zp_in in any::<i16>(), zp_out in any::<i16>()) {
            let Some(c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let clamp = if c.relu { ClampI16 { min: zp_out, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            let output = WideOutputQuant { zero_point: zp_out, clamp };
            fn check<X: Lanes + core::fmt::Debug, const I8: bool>(c: &Case, d: &Data<X>, zp: X, output: WideOutputQuant) -> Result<(), TestCaseError> {
                let quant = WideConvQuant {
                    input_zero_point: zp,
                    pad_values: &d.pad_values,
                    channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                    output,
                };
                let mut want = std::vec![0i16; len(c.out_dims)];
                reference::conv2d_wide(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut want, &d.weights);
                let conv = Conv {
                    geometry: &c.g,
                    dims: (c.in_dims, c.out_dims),
                    padding: Padding { zero: zp, values: &d.pad_values },
                    channels: &quant.channels,
                    bounds: Bounds::from(output),
                    input: &d.x,
                    weights: &d.weights,
                };
                PORTABLE_TILES.with(|p| p.set(true));
                let admitted = quad_windows(conv.geometry, conv.dims, X::WIDE);
                let mut fast = std::vec![0i16; len(c.out_dims)];
                let done = admitted.then(|| regular_quads::<X, I8>(&conv, Outs::I16(&mut fast)));
                PORTABLE_TILES.with(|p| p.set(false));
                let Some(done) = done else { return Ok(()) };
                prop_assert!(done);
                prop_assert_eq!(fast, want);
                Ok(())
            }
            check::<i16, false>(&c, &data(&c, &mut gen, Gen::i16, 20), zp_in, output)?;
            check::<i8, true>(&c, &data(&c, &mut gen, Gen::i8, 20), zp_in as i8, output)?;
        }

        /// The fused first-layer tile (`columns_fused`, both frames) takes every layer of its
        /// form (output channels in groups of four, at most 64, whose stages have the register
        /// form: factors below 1/2 here) and writes what the reference does; views of wider output
        /// pixels keep their other channels; input pixels read at a wider stride (a channel
        /// slice read in place) too. `columns_any`, fused or not, equals the reference as well.
        #[test]
        fn first_layers_fused_equal_reference(c in first_layer_fused(), kinds in 0u8..4, extra in 0usize..3,
                                              extra_in in 0usize..3, zp_in in any::<i16>(), zp_out in -300i16..300) {
            let Some(mut c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let out_c = c.out_dims[2];
            c.g.out_pixel_stride = if extra > 0 { out_c + extra } else { 0 };
            c.g.in_pixel_stride = if extra_in > 0 { c.in_dims[2] + extra_in } else { 0 };
            let clamp = if c.relu { ClampI16 { min: zp_out, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            fn check<X: Lanes + core::fmt::Debug, Y: Store + Default + core::fmt::Debug + PartialEq + 'static>(
                c: &Case, mut d: Data<X>, gen: &mut Gen, zp: X, output: WideOutputQuant,
            ) -> Result<(), TestCaseError> {
                // Factors of 1/4 to 1/256 (the register form of the output stage: a right
                // shift of 2 or more).
                for (m, s) in d.multiplier.iter_mut().zip(d.shift.iter_mut()) {
                    *m = gen.range(1 << 30, i32::MAX);
                    *s = gen.range(-8, -2);
                }
                let [h, w, in_c] = c.in_dims;
                let [kh, kw] = c.g.kernel;
                let [oh, ow, out_c] = c.out_dims;
                let (in_stride, stride) = (c.g.in_stride(in_c), c.g.out_stride(out_c));
                // The input as the fast loops read it: pixels `in_stride` values apart.
                let mut x = std::vec![zp; (h * w - 1) * in_stride + in_c];
                for (p, px) in d.x.chunks_exact(in_c).enumerate() {
                    x[p * in_stride..p * in_stride + in_c].copy_from_slice(px);
                }
                let quant = WideConvQuant {
                    input_zero_point: zp,
                    pad_values: &d.pad_values,
                    channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                    output,
                };
                let size = (oh * ow - 1) * stride + out_c;
                let mut dense = std::vec![Y::default(); len(c.out_dims)];
                let plain = ConvGeometry { out_pixel_stride: 0, in_pixel_stride: 0, ..c.g };
                reference::conv2d_wide(&plain, &quant, c.in_dims, &d.x, c.out_dims, &mut dense, &d.weights);
                let mut want = std::vec![Y::default(); size];
                for (p, px) in dense.chunks_exact(out_c).enumerate() {
                    want[p * stride..p * stride + out_c].copy_from_slice(px);
                }
                let conv = Conv {
                    geometry: &c.g,
                    dims: (c.in_dims, c.out_dims),
                    padding: Padding { zero: zp, values: &d.pad_values },
                    channels: &quant.channels,
                    bounds: Bounds::from(quant.output),
                    input: &x,
                    weights: &d.weights,
                };
                let n = kh * row_values(kw, in_c) / 2;
                // The clamps the tile's loop stores (full range, ReLU at 0; int8 outputs any).
                let stored = Y::stage_bounds(&conv.bounds);
                let run = simd::RunScale { high: 0, multiplier: 0, shift: 1, min: stored.min, max: stored.max };
                let int8 = matches!(Y::outs(&mut []), Outs::I8(_));
                let clamped = simd::QuadClamp::of(&[run; 4], int8).is_some();
                let fits = |words: usize| clamped && out_c % 4 == 0 && out_c <= 4 * FUSED_GROUPS && n >= 2 && out_c * n <= words;
                let mut fast = std::vec![Y::default(); size];
                let taken = columns_fused::<X, WHOLE_LAYER_WEIGHTS, FIELD_WORDS, RING_VALUES>(&conv, Y::outs(&mut fast));
                prop_assert_eq!(taken, fits(WHOLE_LAYER_WEIGHTS));
                if taken {
                    prop_assert_eq!(&fast, &want);
                }
                let mut fast = std::vec![Y::default(); size];
                let taken = columns_fused::<X, COLUMN_WEIGHTS, BLOCK_FIELD_WORDS, BLOCK_RING_VALUES>(&conv, Y::outs(&mut fast));
                prop_assert_eq!(taken, fits(COLUMN_WEIGHTS));
                if taken {
                    prop_assert_eq!(&fast, &want);
                }
                let mut fast = std::vec![Y::default(); size];
                columns_any::<X, Y, AllLoops>(&conv, &mut fast);
                prop_assert_eq!(&fast, &want);
                Ok(())
            }
            let output = WideOutputQuant { zero_point: zp_out, clamp };
            let narrow = WideOutputQuant { zero_point: zp_out.clamp(-128, 127), clamp: ClampI16 { min: clamp.min.clamp(-128, 127), max: 127 } };
            let [kh, kw] = c.g.kernel;
            if kh * row_values(kw, c.in_dims[2]) > MAX_COLUMN {
                return Ok(());
            }
            match kinds {
                0 => { let d = data(&c, &mut gen, Gen::i8, 20); check::<i8, i16>(&c, d, &mut gen, zp_in as i8, output)? }
                1 => { let d = data(&c, &mut gen, Gen::i8, 20); check::<i8, i8>(&c, d, &mut gen, zp_in as i8, narrow)? }
                2 => { let d = data(&c, &mut gen, Gen::i16, 20); check::<i16, i16>(&c, d, &mut gen, zp_in, output)? }
                _ => { let d = data(&c, &mut gen, Gen::i16, 20); check::<i16, i8>(&c, d, &mut gen, zp_in, narrow)? }
            }
        }

        #[test]
        fn each_loop_class_runs_the_layers_it_classifies(c in prop_oneof![2 => case(), 1 => first_layer(), 1 => quad_case(), 1 => strided_pointwise_case(), 1 => pointwise_case(), 1 => depthwise3x3()],
                                                         kinds in 0u8..4, zp_in in any::<i16>(), zp_out in any::<i16>()) {
            // With the tiles (their portable twins), a firmware linking only the class that
            // `regular_loop` gives a layer (or, depthwise, the row loops: no pixel loop off the
            // DSP cores) runs it fast and as the reference does; one linking every class but
            // that one leaves it to the reference, writing nothing.
            let Some(c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let clamp = if c.relu { ClampI16 { min: zp_out, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            let output = WideOutputQuant { zero_point: zp_out, clamp };
            fn check<X: Lanes + core::fmt::Debug + PartialEq, Y: Store + Default + core::fmt::Debug + PartialEq + 'static>(
                c: &Case, d: &Data<X>, zp: X, output: WideOutputQuant,
            ) -> Result<(), TestCaseError> {
                let quant = WideConvQuant {
                    input_zero_point: zp,
                    pad_values: &d.pad_values,
                    channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                    output,
                };
                let dims = (c.in_dims, c.out_dims);
                let conv = Conv {
                    geometry: &c.g,
                    dims,
                    padding: Padding { zero: zp, values: &d.pad_values },
                    channels: &quant.channels,
                    bounds: Bounds::from(output),
                    input: &d.x,
                    weights: &d.weights,
                };
                let [_, _, in_c] = c.in_dims;
                let class = if c.g.groups == 1 {
                    let words = X::words(&d.x).is_some();
                    match regular_loop(&c.g, dims, (X::WIDE, words), true, true) {
                        Some(taken) => class_mask(taken),
                        None => return Ok(()),
                    }
                } else if c.g.groups == in_c && c.g.groups == c.out_dims[2] {
                    DEPTHWISE_ROWS
                } else {
                    return Ok(());
                };
                let mut want = std::vec![Y::default(); len(c.out_dims)];
                reference::conv2d_wide(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut want, &d.weights);
                let untouched = std::vec![Y::default(); len(c.out_dims)];
                let (mut only, mut others) = (untouched.clone(), untouched.clone());
                PORTABLE_TILES.with(|p| p.set(true));
                let (ran, ran_without) = (run_linked::<X, Y>(class, &conv, &mut only), run_linked::<X, Y>(ALL_CLASSES & !class, &conv, &mut others));
                PORTABLE_TILES.with(|p| p.set(false));
                prop_assert!(ran, "{:?} not taken by its class {:#b}", c, class);
                prop_assert_eq!(&only, &want);
                prop_assert!(!ran_without);
                prop_assert_eq!(&others, &untouched);
                Ok(())
            }
            match kinds {
                0 => check::<i8, i16>(&c, &data(&c, &mut gen, Gen::i8, 20), zp_in as i8, output)?,
                1 => check::<i16, i16>(&c, &data(&c, &mut gen, Gen::i16, 20), zp_in, output)?,
                2 => check::<i16, i8>(&c, &data(&c, &mut gen, Gen::i16, 20), zp_in, output)?,
                _ => check::<i8, i8>(&c, &data(&c, &mut gen, Gen::i8, 20), zp_in as i8, output)?,
            }
        }

        #[test]
        fn wide_equals_reference(c in prop_oneof![3 => case(), 1 => first_layer(), 2 => quad_case(), 1 => strided_pointwise_case()], kinds in 0u8..3, zp_in in any::<i16>(),
                                 zp_out in any::<i16>()) {
            let Some(c) = c else { return Ok(()) };
            let mut gen = Gen(c.seed);
            let clamp = if c.relu { ClampI16 { min: zp_out, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            let output = WideOutputQuant { zero_point: zp_out, clamp };
            fn check<X: Lanes + core::fmt::Debug + PartialEq, Y: Store + Default + core::fmt::Debug + PartialEq + 'static>(
                c: &Case, d: &Data<X>, zp: X, output: WideOutputQuant,
            ) -> Result<(), TestCaseError> {
                let quant = WideConvQuant {
                    input_zero_point: zp,
                    pad_values: &d.pad_values,
                    channels: ChannelQuant { bias: &d.bias, multiplier: &d.multiplier, shift: &d.shift },
                    output,
                };
                let mut want = std::vec![Y::default(); len(c.out_dims)];
                reference::conv2d_wide(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut want, &d.weights);
                for fast in both_paths(|| {
                    let mut fast = std::vec![Y::default(); len(c.out_dims)];
                    conv2d_wide(&c.g, &quant, c.in_dims, &d.x, c.out_dims, &mut fast, &d.weights);
                    fast
                }) {
                    prop_assert_eq!(&fast, &want);
                }
                Ok(())
            }
            match kinds {
                0 => check::<i8, i16>(&c, &data(&c, &mut gen, Gen::i8, 20), zp_in as i8, output)?,
                1 => check::<i16, i16>(&c, &data(&c, &mut gen, Gen::i16, 20), zp_in, output)?,
                _ => check::<i16, i8>(&c, &data(&c, &mut gen, Gen::i16, 20), zp_in, output)?,
            }
        }
    }
}
