//! A convolution fused with the pooling that reads it: the pooling's output rows are produced one
//! at a time from a band of the convolution's output rows, so the whole convolution output never
//! exists.
//!
//! The driver defines the fused layer by the two layers it replaces: every convolution output row
//! is computed by the convolution kernel on a sub-problem (the input rows its windows read, the
//! padding that falls inside it, the same weights), and every pooled row by the pooling kernel on
//! the band rows its windows read. Each output element of a convolution or a pooling depends only
//! on its window's elements, read in the kernel's fixed order, so the fused layer's bytes are
//! exactly those of the convolution followed by the pooling (int8 and f32 alike); the tests in
//! `engine/fused.rs` check it on random geometries. The convolution kernel is whatever the engine
//! dispatches a convolution to (fast or reference): it is given rows, not asked for a new loop.

use crate::kernels::{ConvGeometry, PoolGeometry};

/// Shapes of a fused layer, as the engine builds them from a validated record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedGeometry {
    /// The convolution's window (dense output: `out_pixel_stride` 0).
    pub conv: ConvGeometry,
    /// The pooling's window.
    pub pool: PoolGeometry,
    /// The convolution input `[H, W, Cin]`.
    pub in_dims: [usize; 3],
    /// The whole convolution output `[OH, OW, C]` (never stored).
    pub mid_dims: [usize; 3],
    /// Convolution output rows the band holds.
    pub band_rows: usize,
    /// The pooled output `[PH, PW, C]`.
    pub out_dims: [usize; 3],
}

/// Convolution output rows `first..end` as their own convolution: the input rows their windows
/// read (`in_rows`) and the geometry that reads them, with the padding that falls inside those
/// windows. `None` when a window holds no input row (the loader refuses such a fused record: its
/// convolution padding is below the window extent).
pub fn conv_rows(
    g: &ConvGeometry,
    in_h: usize,
    first: usize,
    end: usize,
) -> Option<(core::ops::Range<usize>, ConvGeometry)> {
    let [kernel_h, _] = g.kernel;
    let [stride_h, _] = g.stride;
    let [dilation_h, _] = g.dilation;
    let [pad_top, pad_left, _, pad_right] = g.pad;
    let extent = dilation_h
        .checked_mul(kernel_h.checked_sub(1)?)?
        .checked_add(1)?;
    // Rows of the padded input (input row `i` is padded row `i + pad_top`).
    let start = first.checked_mul(stride_h)?;
    let stop = end
        .checked_sub(1)?
        .checked_mul(stride_h)?
        .checked_add(extent)?;
    let lo = start.saturating_sub(pad_top);
    let hi = stop.saturating_sub(pad_top).min(in_h);
    if lo >= hi {
        return None;
    }
    let top = pad_top.saturating_sub(start);
    let bottom = stop.saturating_sub(pad_top).checked_sub(hi)?;
    let geometry = ConvGeometry {
        pad: [top, pad_left, bottom, pad_right],
        out_pixel_stride: 0,
        in_pixel_stride: 0,
        ..*g
    };
    Some((lo..hi, geometry))
}

/// Runs a fused layer: for each pooled row, the convolution rows its windows read are brought
/// into `band` when they are not there yet (rows the previous windows share with it are moved to
/// its start, then `conv` fills the band: one call computes as many rows as the band holds, which
/// amortizes a fast kernel's per-call set-up), then `pool` computes the row from them. No
/// convolution row is computed twice.
///
/// `conv(geometry, in_dims, input, out_dims, output)` and `pool(geometry, in_dims, input,
/// out_dims, output)` are the two layers' kernels. Returns `None` (with the output partly
/// written) only for a geometry the loader refuses: a window outside the band, a slice beyond an
/// operand.
pub fn run<X: Copy, T: Copy>(
    f: &FusedGeometry,
    input: &[X],
    band: &mut [T],
    output: &mut [T],
    mut conv: impl FnMut(&ConvGeometry, [usize; 3], &[X], [usize; 3], &mut [T]),
    mut pool: impl FnMut(&PoolGeometry, [usize; 3], &[T], [usize; 3], &mut [T]),
) -> Option<()> {
    let [in_h, in_w, in_c] = f.in_dims;
    let [mid_h, mid_w, mid_c] = f.mid_dims;
    let [out_h, out_w, out_c] = f.out_dims;
    let in_row = in_w.checked_mul(in_c)?;
    let mid_row = mid_w.checked_mul(mid_c)?;
    let out_row = out_w.checked_mul(out_c)?;
    let [pool_h, _] = f.pool.kernel;
    let [stride_h, _] = f.pool.stride;
    let [pad_top, pad_left, _, pad_right] = f.pool.pad;
    // Convolution rows in the band: `held`, at band rows `0..held.len()`.
    let mut held = 0..0;
    for (oy, out) in output
        .chunks_exact_mut(out_row.max(1))
        .take(out_h)
        .enumerate()
    {
        // The window's rows of the padded convolution output, then the real ones.
        let start = oy.checked_mul(stride_h)?;
        let lo = start.saturating_sub(pad_top);
        let hi = start
            .checked_add(pool_h)?
            .saturating_sub(pad_top)
            .min(mid_h);
        if lo >= hi || hi - lo > f.band_rows || lo < held.start {
            return None;
        }
        if held.end < hi {
            // Keep the rows this window shares with the last ones (moved to the band's start),
            // then fill the band: as many rows per convolution call as it holds.
            if lo < held.end {
                let from = (lo - held.start) * mid_row;
                let to = (held.end - held.start) * mid_row;
                band.copy_within(from..to, 0);
                held = lo..held.end;
            } else {
                held = lo..lo;
            }
            let end = lo.checked_add(f.band_rows)?.min(mid_h);
            let (rows, g) = conv_rows(&f.conv, in_h, held.end, end)?;
            let x = input.get(rows.start * in_row..rows.end * in_row)?;
            let y = band.get_mut((held.end - lo) * mid_row..(end - lo) * mid_row)?;
            conv(
                &g,
                [rows.len(), in_w, in_c],
                x,
                [end - held.end, mid_w, mid_c],
                y,
            );
            held = lo..end;
        }
        let window = PoolGeometry {
            pad: [pad_top.saturating_sub(start), pad_left, 0, pad_right],
            ..f.pool
        };
        let first = lo - held.start;
        let rows = band.get(first * mid_row..(hi - held.start) * mid_row)?;
        pool(
            &window,
            [hi - lo, mid_w, mid_c],
            rows,
            [1, out_w, out_c],
            out,
        );
    }
    Some(())
}
