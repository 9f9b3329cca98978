//! Layers that write their output over their own input (format version 9).
//!
//! A convolution, a pooling or an element-wise layer computes output row `r` from a window of its
//! input's rows. Once the rows before that window have been read for the last time, the output
//! may overwrite them: the layer's output may start below its input and be written from the first
//! row on ("forward"), or start above it and be written from the last row on ("reverse"), as long
//! as no output row lands on input rows that it or a later row still reads. Chains of such layers
//! then live in one region little larger than their largest tensor, where a layer-by-layer plan
//! needs the sum of each layer's input and output (MCUNet's and TinyEngine's in-place idea,
//! generalised from depthwise convolutions to every row-local layer).
//!
//! The engine runs such a layer a band of output rows at a time, each band an ordinary layer on
//! disjoint slices of the arena ([`Layer::band`]), so the kernels stay what they are and no slice
//! aliases. The loader proves every row safe ([`Layer::band_is_safe`]); the tool's planner places
//! outputs with the same arithmetic ([`Layer::in_place_bounds`]).

use core::ops::Range;

use super::{Layer, Op, TensorDesc, MAX_LAYER_INPUTS};

/// How a layer's output rows read one input's rows: output row `r` reads input rows
/// `r·stride − pad_top .. r·stride − pad_top + extent`, clipped to the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowWindow {
    /// Input rows one output row spans (`dilation·(kernel − 1) + 1`).
    pub extent: u16,
    /// Input rows between consecutive output rows.
    pub stride: u16,
    /// Virtual rows above the input.
    pub pad_top: u16,
}

impl RowWindow {
    /// Output row `r` reads input row `r` (element-wise layers).
    const ROW: RowWindow = RowWindow {
        extent: 1,
        stride: 1,
        pad_top: 0,
    };

    /// The window of output rows `rows` (non-empty) before clipping: first and one past the last
    /// input row, in signed row coordinates.
    fn unclipped(&self, rows: &Range<u32>) -> (i64, i64) {
        let stride = i64::from(self.stride);
        let start = i64::from(rows.start) * stride - i64::from(self.pad_top);
        let last = i64::from(rows.end.saturating_sub(1)) * stride - i64::from(self.pad_top);
        (start, last + i64::from(self.extent))
    }

    /// Input rows `lo..hi` that output rows `rows` (non-empty) read, for an input of `in_rows`
    /// rows.
    pub fn reads(&self, rows: &Range<u32>, in_rows: u32) -> Range<u32> {
        let (start, end) = self.unclipped(rows);
        let clip = |v: i64| v.clamp(0, i64::from(in_rows)) as u32;
        clip(start)..clip(end)
    }
}

/// Byte length of one row (`W · pixel stride` elements) of a tensor.
fn row_bytes(d: &TensorDesc) -> u64 {
    u64::from(d.dims[1]) * d.pixel_stride() as u64 * d.dtype.size() as u64
}

fn disjoint(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 <= b.0 || b.1 <= a.0
}

/// Where the output may start relative to one of its inputs, for every row to be safe:
/// `output.offset − input.offset <= forward_max` (the output below, written from its first row)
/// or `>= reverse_min` (above, written from its last row). Sufficient bounds, used by the
/// planner; the loader checks the rows themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlaceBounds {
    /// Largest (negative) output offset minus input offset for a forward run.
    pub forward_max: i64,
    /// Smallest (positive) output offset minus input offset for a reverse run.
    pub reverse_min: i64,
}

impl Layer {
    /// Whether the output shares a byte with an input it reads (not a concatenation's input
    /// already in its slot): in a validated model, a layer that runs in place.
    pub fn writes_over_input(&self) -> bool {
        (0..usize::from(self.input_count))
            .any(|k| !self.in_place(k) && self.inputs.get(k).is_some_and(|x| self.output_meets(x)))
    }

    /// Whether the output's bytes meet tensor `x`'s (storage ranges).
    pub fn output_meets(&self, x: &TensorDesc) -> bool {
        let range = |d: &TensorDesc| {
            let start = u64::from(d.offset);
            (start, start + d.storage_len() as u64)
        };
        let (out, x) = (range(&self.output), range(x));
        x.0 < out.1 && out.0 < x.1
    }

    /// The row window through which the output reads input `k`, if the operation can run over
    /// that input: convolutions and poolings (input 0), element-wise operations (each input of
    /// the output's dimensions; not the per-channel gate of a `Mul`). Views and fused layers
    /// never run in place.
    pub fn row_window(&self, k: usize) -> Option<RowWindow> {
        let input = self
            .inputs
            .get(k)
            .filter(|_| k < usize::from(self.input_count))?;
        if input.view.is_some() || self.output.view.is_some() {
            return None;
        }
        let window = |kernel: u16, stride: u16, dilation: u16, pad_top: u16| {
            let extent = u32::from(dilation) * u32::from(kernel.checked_sub(1)?) + 1;
            Some(RowWindow {
                extent: u16::try_from(extent).ok()?,
                stride,
                pad_top,
            })
        };
        match &self.op {
            Op::Conv2d(c) if k == 0 => window(c.kernel[0], c.stride[0], c.dilation[0], c.pad[0]),
            Op::Conv2dI8(c) if k == 0 => {
                let c = &c.conv;
                window(c.kernel[0], c.stride[0], c.dilation[0], c.pad[0])
            }
            Op::Conv2dI16(c) if k == 0 => {
                let c = &c.conv;
                window(c.kernel[0], c.stride[0], c.dilation[0], c.pad[0])
            }
            Op::Pool(p) if k == 0 => window(p.kernel[0], p.stride[0], 1, p.pad[0]),
            Op::PoolI8(p) if k == 0 => {
                let p = &p.pool;
                window(p.kernel[0], p.stride[0], 1, p.pad[0])
            }
            Op::Add { .. } | Op::AddI8(_) => Some(RowWindow::ROW),
            Op::Mul { .. } | Op::MulI8(_) if input.dims == self.output.dims => Some(RowWindow::ROW),
            Op::Affine(_)
            | Op::AffineI8(_)
            | Op::Activation(_)
            | Op::ClampI8(_)
            | Op::LookupI8 { .. }
            | Op::PRelu { .. }
            | Op::PReluI8(_)
                if k == 0 =>
            {
                Some(RowWindow::ROW)
            }
            _ => None,
        }
    }

    /// Whether writing output rows `rows` leaves intact every row of input `k` that these rows
    /// and the rows still to come read: for a forward run (output below the input) the rows from
    /// the first one `rows` read to the input's end, for a reverse run (output above) the rows
    /// from the input's start to the last one `rows` read. Every output row must read at least
    /// one input row (a window wholly in the padding has no band of its own). An output at the
    /// input's own offset never runs in place.
    pub fn band_is_safe(&self, k: usize, rows: &Range<u32>) -> bool {
        self.row_window(k)
            .is_some_and(|window| self.band_is_safe_in(k, window, rows))
    }

    /// [`Layer::band_is_safe`] with input `k`'s row window given (`self.row_window(k)`,
    /// computed once per layer by the band driver).
    pub(crate) fn band_is_safe_in(&self, k: usize, window: RowWindow, rows: &Range<u32>) -> bool {
        let Some(input) = self.inputs.get(k) else {
            return false;
        };
        if rows.is_empty() {
            return false;
        }
        let in_rows = u32::from(input.dims[0]);
        let reads = window.reads(rows, in_rows);
        let first_read = window.reads(&(rows.start..rows.start + 1), in_rows);
        let last_read = window.reads(&(rows.end - 1..rows.end), in_rows);
        if first_read.is_empty() || last_read.is_empty() {
            return false;
        }
        let (o, i) = (u64::from(self.output.offset), u64::from(input.offset));
        let (ro, ri) = (row_bytes(&self.output), row_bytes(input));
        let written = (o + u64::from(rows.start) * ro, o + u64::from(rows.end) * ro);
        let still_read = if o < i {
            (i + u64::from(reads.start) * ri, i + u64::from(in_rows) * ri)
        } else if o > i {
            (i, i + u64::from(reads.end) * ri)
        } else {
            return false;
        };
        disjoint(written, still_read)
    }

    /// The band the output may write next over input `k`, from the offsets alone: for a
    /// forward run (output below the input) the end of the largest band from row `from`, for a
    /// reverse run (above) the start of the largest band ending at row `from` (exclusive).
    /// [`Layer::band_is_safe`]'s condition solved for the free end; a band with no row, or
    /// `None`, when the condition has no solution (the engine then searches row by row, as it
    /// does for any band this does not prove safe). Arithmetic only: the band driver's cost per
    /// band is one call, not one [`Layer::band_is_safe`] per row.
    pub fn band_limit(&self, k: usize, from: u32) -> Option<u32> {
        self.band_limit_in(k, self.row_window(k)?, from)
    }

    /// [`Layer::band_limit`] with input `k`'s row window given (as [`Layer::band_is_safe_in`]).
    pub(crate) fn band_limit_in(&self, k: usize, window: RowWindow, from: u32) -> Option<u32> {
        let input = self.inputs.get(k)?;
        let in_rows = u32::from(input.dims[0]);
        let (o, i) = (u64::from(self.output.offset), u64::from(input.offset));
        let ri = row_bytes(input);
        // The quotients in u32: a loaded model's tensors lie in its u32 arena, so the row sizes
        // and the byte gaps below fit, and a u64 division would link a 0.9 KB routine on 32-bit
        // cores. Past u32 (no loaded model) the answer is `None`, which is always allowed.
        let ro = u32::try_from(row_bytes(&self.output))
            .ok()
            .filter(|&ro| ro != 0)?;
        if o < i {
            // Rows `from..e` end at or before the first input row `from` reads.
            let first = window.reads(&(from..from + 1), in_rows).start;
            let gap = u32::try_from(i + u64::from(first) * ri - o).ok()?;
            Some(gap / ro)
        } else {
            // Rows `s..from` start at or after the end of what row `from − 1` reads.
            let last = from.checked_sub(1)?;
            let end = window.reads(&(last..from), in_rows).end;
            match (i + u64::from(end) * ri).checked_sub(o) {
                Some(gap) => Some(u32::try_from(gap).ok()?.div_ceil(ro)),
                None => Some(0),
            }
        }
    }

    /// Offsets of the output relative to input `k` at which every output row is safe (see
    /// [`InPlaceBounds`]); `None` when the operation cannot run over that input or some output
    /// row reads only padding.
    pub fn in_place_bounds(&self, k: usize) -> Option<InPlaceBounds> {
        let window = self.row_window(k)?;
        let input = self.inputs.get(k)?;
        let in_rows = u32::from(input.dims[0]);
        let (ro, ri) = (row_bytes(&self.output) as i64, row_bytes(input) as i64);
        let mut bounds = InPlaceBounds {
            forward_max: i64::MAX,
            reverse_min: i64::MIN,
        };
        for r in 0..u32::from(self.output.dims[0]) {
            let reads = window.reads(&(r..r + 1), in_rows);
            if reads.is_empty() {
                return None;
            }
            let r = i64::from(r);
            let forward = i64::from(reads.start) * ri - (r + 1) * ro;
            let reverse = i64::from(reads.end) * ri - r * ro;
            bounds.forward_max = bounds.forward_max.min(forward);
            bounds.reverse_min = bounds.reverse_min.max(reverse);
        }
        Some(bounds)
    }

    /// The layer restricted to output rows `rows`: the output rows at their offset, each input
    /// it reads through a row window cut to the rows `rows` read (at their offset), a window's
    /// top and bottom padding reduced to the virtual rows the cut still needs. Run on disjoint
    /// slices, it writes exactly the bytes the whole layer writes in those rows. `None` for an
    /// empty range, a range past the output, or a cut with no input rows.
    pub fn band(&self, rows: &Range<u32>) -> Option<Layer> {
        let mut band = *self;
        self.band_into(rows, &mut band, &self.row_windows())?;
        Some(band)
    }

    /// Each input's row window ([`Layer::row_window`]), `None` past `input_count`.
    pub fn row_windows(&self) -> [Option<RowWindow>; MAX_LAYER_INPUTS] {
        core::array::from_fn(|k| self.row_window(k))
    }

    /// [`Layer::band`] written over `band`, a copy of this layer (or of any band of it): only
    /// the fields a band changes are written, each from this layer's own (the band driver
    /// copies the layer once, not once per band: a `Layer` is a few hundred bytes). `windows`:
    /// [`Layer::row_windows`], computed once per layer. `None`, with `band` partly written,
    /// where [`Layer::band`] gives `None`.
    pub fn band_into(
        &self,
        rows: &Range<u32>,
        band: &mut Layer,
        windows: &[Option<RowWindow>; MAX_LAYER_INPUTS],
    ) -> Option<()> {
        if rows.is_empty() || rows.end > u32::from(self.output.dims[0]) {
            return None;
        }
        let shift = |d: &mut TensorDesc, first: u32, count: u32| -> Option<()> {
            let offset = u64::from(d.offset) + u64::from(first) * row_bytes(d);
            d.offset = u32::try_from(offset).ok()?;
            d.dims[0] = u16::try_from(count).ok()?;
            Some(())
        };
        for k in 0..usize::from(self.input_count) {
            let (Some(&Some(window)), Some(whole), Some(input)) =
                (windows.get(k), self.inputs.get(k), band.inputs.get_mut(k))
            else {
                continue;
            };
            *input = *whole;
            let in_rows = u32::from(input.dims[0]);
            let reads = window.reads(rows, in_rows);
            if reads.is_empty() {
                return None;
            }
            let (start, end) = window.unclipped(rows);
            let top = u16::try_from(i64::from(reads.start) - start).ok()?;
            let bottom = u16::try_from(end - i64::from(reads.end)).ok()?;
            shift(input, reads.start, reads.end - reads.start)?;
            if let Some(pad) = window_pad(&mut band.op) {
                pad[0] = top;
                pad[2] = bottom;
            }
        }
        band.output = self.output;
        shift(&mut band.output, rows.start, rows.end - rows.start)?;
        Some(())
    }
}

/// The `[top, left, bottom, right]` padding of a windowed operation.
fn window_pad(op: &mut Op) -> Option<&mut [u16; 4]> {
    match op {
        Op::Conv2d(c) => Some(&mut c.pad),
        Op::Conv2dI8(c) => Some(&mut c.conv.pad),
        Op::Conv2dI16(c) => Some(&mut c.conv.pad),
        Op::Pool(p) => Some(&mut p.pad),
        Op::PoolI8(p) => Some(&mut p.pool.pad),
        _ => None,
    }
}
