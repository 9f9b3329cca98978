//! Layers that write over their own input (`format::in_place`): the output rows in bands, from
//! the first row when the output lies below its input and from the last when above, each band as
//! large as the arena offsets allow (one call when the output trails its input by a whole
//! tensor, one row at a time at the tightest placement the loader accepts). A convolution's
//! loops keep their per-layer set-up from one band to the next ([`Prepared`]).

use core::ops::Range;

use super::{bytes_of, Kernels};
use crate::format::{DType, Layer, Op, RowWindow, MAX_LAYER_INPUTS};
use crate::kernels::fast::conv::{self, Prepared};
use crate::model::Model;

/// Runs a validated layer that writes over its own input, a band of rows at a time on disjoint
/// slices ([`run_bands`]); returns its output bytes. `None` only if validation was bypassed.
pub(super) fn run<'s, K: Kernels>(
    model: &Model<'_, K>,
    arena: &'s mut [u8],
    layer: &Layer,
) -> Option<&'s [u8]> {
    // The set-up buffer is sized to the layer, so that the stack grows by what it needs.
    match conv_kind(layer) {
        Some(ConvKind::Depthwise) if conv::PIXEL_SET_UP => run_depthwise(model, arena, layer)?,
        Some(ConvKind::Pointwise(words)) if conv::POINTWISE_SET_UP && words <= 512 => {
            run_pointwise::<K, 512>(model, arena, layer)?
        }
        Some(ConvKind::Pointwise(words)) if conv::POINTWISE_SET_UP && words <= 2048 => {
            run_pointwise::<K, 2048>(model, arena, layer)?
        }
        _ => run_bands(layer, |band, _| {
            model.run_disjoint(arena, band, None).map(|_| ())
        })?,
    }
    arena.get(bytes_of(&layer.output))
}

/// The convolutions whose loops keep a set-up across bands.
enum ConvKind {
    /// `groups == in_c == out_c`, more than one, an int16 input (read as words).
    Depthwise,
    /// 1x1, stride 1, no padding, `groups == 1`, an int16 input; the words of its widened
    /// weights.
    Pointwise(usize),
}

fn conv_kind(layer: &Layer) -> Option<ConvKind> {
    let (conv, x) = match &layer.op {
        Op::Conv2dI8(p) => (&p.conv, layer.inputs.first()?),
        Op::Conv2dI16(p) => (&p.conv, layer.inputs.first()?),
        _ => return None,
    };
    // Both loops read an int16 input as words (an int8 one takes other loops).
    if x.dtype != DType::I16 {
        return None;
    }
    let channels = (x.dims[2], layer.output.dims[2]);
    if conv.groups > 1 && channels == (conv.groups, conv.groups) {
        Some(ConvKind::Depthwise)
    } else if conv.groups == 1
        && conv.kernel == [1, 1]
        && conv.stride == [1, 1]
        && conv.pad == [0; 4]
    {
        let (in_c, out_c) = (usize::from(channels.0), usize::from(channels.1));
        Some(ConvKind::Pointwise(conv::pointwise_set_up_words(
            in_c, out_c,
        )))
    } else {
        None
    }
}

/// [`run_bands`] with one set-up for all the bands of a depthwise convolution: its pixel loop
/// prepares the channels' constants on the first band and zeroes its ring once. Out of line,
/// and for depthwise layers only: the set-up (the constants and a ring for the widest rows the loop takes, 1,248 words; what the pixel loop's own frame holds
/// otherwise) is on the stack only while such a layer runs, never under another kernel's frame.
#[inline(never)]
fn run_depthwise<K: Kernels>(model: &Model<'_, K>, arena: &mut [u8], layer: &Layer) -> Option<()> {
    let mut ring = [0u32; conv::PIXEL_RING];
    let mut setup = conv::PixelSetUp::new(&mut ring);
    // The ring's rows are kept from one band to the next (a band's halo rows are in it).
    let stride = layer.row_window(0).map_or(1, |w| usize::from(w.stride));
    run_bands(layer, |band, rows| {
        setup.at_row(rows.start as usize, stride);
        let mut prepared = Prepared::Pixel(&mut setup);
        model
            .run_disjoint(arena, band, Some(&mut prepared))
            .map(|_| ())
    })
}

/// [`run_bands`] with one set-up for all the bands of a pointwise layer of at most `WORDS`
/// widened weight words: its weights widened on the first band (`4 · WORDS` bytes on the stack
/// while such a layer runs, as [`run_depthwise`]; 8 KiB for DS-CNN's 64 × 64).
#[inline(never)]
fn run_pointwise<K: Kernels, const WORDS: usize>(
    model: &Model<'_, K>,
    arena: &mut [u8],
    layer: &Layer,
) -> Option<()> {
    let mut words = [0u32; WORDS];
    let mut setup = conv::PointwiseSetUp::new(&mut words);
    run_bands(layer, |band, _| {
        let mut prepared = Prepared::Pointwise(&mut setup);
        model
            .run_disjoint(arena, band, Some(&mut prepared))
            .map(|_| ())
    })
}

/// What the band driver needs of a layer, computed once per layer rather than once per band:
/// the inputs the output overlaps (those a band must leave intact) and their row windows.
struct Overlaps {
    /// `(k, input k's row window)` of each overlapped input, the first `count` (no window: no
    /// band is safe over that input).
    inputs: [(usize, Option<RowWindow>); MAX_LAYER_INPUTS],
    count: usize,
}

impl Overlaps {
    fn of(layer: &Layer) -> Overlaps {
        let mut over = Overlaps {
            inputs: [(0, None); MAX_LAYER_INPUTS],
            count: 0,
        };
        for k in 0..usize::from(layer.input_count) {
            if !layer.inputs.get(k).is_some_and(|x| layer.output_meets(x)) {
                continue;
            }
            if let Some(slot) = over.inputs.get_mut(over.count) {
                *slot = (k, layer.row_window(k));
                over.count += 1;
            }
        }
        over
    }

    fn iter(&self) -> impl Iterator<Item = (usize, Option<RowWindow>)> + '_ {
        self.inputs.iter().take(self.count).copied()
    }
}

/// Whether every input the output overlaps stays intact for output rows `rows` and those after
/// them (in the run's order).
fn safe(layer: &Layer, over: &Overlaps, rows: &Range<u32>) -> bool {
    over.iter()
        .all(|(k, window)| window.is_some_and(|w| layer.band_is_safe_in(k, w, rows)))
}

/// The next band of a forward run from row `start`: the largest the offsets allow
/// ([`Layer::band_limit`], proved by [`safe`] once), else the largest found row by row.
fn forward_band(layer: &Layer, over: &Overlaps, start: u32, rows: u32) -> Option<u32> {
    let limit = over.iter().try_fold(rows, |end, (k, window)| {
        Some(end.min(layer.band_limit_in(k, window?, start)?))
    });
    if let Some(end) = limit.filter(|&end| end > start) {
        if safe(layer, over, &(start..end)) {
            return Some(end);
        }
    }
    let mut end = start + 1;
    if !safe(layer, over, &(start..end)) {
        return None;
    }
    while end < rows && safe(layer, over, &(start..end + 1)) {
        end += 1;
    }
    Some(end)
}

/// The next band of a reverse run ending at row `end` (exclusive), as [`forward_band`].
fn reverse_band(layer: &Layer, over: &Overlaps, end: u32) -> Option<u32> {
    let limit = over.iter().try_fold(0, |start, (k, window)| {
        Some(start.max(layer.band_limit_in(k, window?, end)?))
    });
    if let Some(start) = limit.filter(|&start| start < end) {
        if safe(layer, over, &(start..end)) {
            return Some(start);
        }
    }
    let mut start = end - 1;
    if !safe(layer, over, &(start..end)) {
        return None;
    }
    while start > 0 && safe(layer, over, &(start - 1..end)) {
        start -= 1;
    }
    Some(start)
}

/// Calls `run` on the layer's bands (and their output rows) in a safe order, each band the
/// largest the offsets allow. `None` if a row cannot be run safely (validation was bypassed)
/// or `run` fails.
pub(super) fn run_bands(
    layer: &Layer,
    mut run: impl FnMut(&Layer, &Range<u32>) -> Option<()>,
) -> Option<()> {
    let rows = u32::from(layer.output.dims[0]);
    let over = Overlaps::of(layer);
    let windows = layer.row_windows();
    // The direction of the first overlapped input; the loader made every other one agree.
    let forward = over
        .iter()
        .filter_map(|(k, _)| layer.inputs.get(k))
        .all(|x| layer.output.offset < x.offset);
    // One copy of the layer, each band written over it (a copy per band cost a few hundred
    // instructions).
    let mut band = *layer;
    if forward {
        let mut start = 0;
        while start < rows {
            let end = forward_band(layer, &over, start, rows)?;
            let rows = start..end;
            layer.band_into(&rows, &mut band, &windows)?;
            run(&band, &rows)?;
            start = end;
        }
    } else {
        let mut end = rows;
        while end > 0 {
            let start = reverse_band(layer, &over, end)?;
            let rows = start..end;
            layer.band_into(&rows, &mut band, &windows)?;
            run(&band, &rows)?;
            end = start;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    //! A layer written over its own input against the same layer written elsewhere, through the
    //! loader and the engine: random convolutions (regular and depthwise; strides, dilations,
    //! pads), poolings and element-wise layers, f32, int8 and 16×8, placed at the tightest
    //! offsets the planner's bounds allow (one row per band) and at looser ones (bands of many
    //! rows), below and above the input. Equal bytes, int8 and f32 alike: each band runs the
    //! same kernel on the same values in the same order.
    extern crate std;

    use std::vec::Vec;

    use proptest::prelude::*;

    use crate::format::*;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::model::int8_tests::{push_i32, push_i8, push_requant};
    use crate::model::{LayerFault, LoadError};
    use crate::quant::add_requant;
    use crate::testutil::*;
    use crate::Model;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Precision {
        F32,
        I8,
        /// int16 in, int8 out (a 16×8 convolution; other operations int8).
        I16,
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        Conv {
            depthwise: bool,
        },
        Pool {
            kind: u8,
        },
        /// A clamp (int8) or ReLU (f32) over the input.
        Unary,
        /// `x + clamp(x)`: written over the first layer's output.
        Add,
    }

    #[derive(Clone, Copy, Debug)]
    struct Case {
        kind: Kind,
        precision: Precision,
        in_dims: [u16; 3],
        out_c: u16,
        kernel: [u16; 2],
        stride: [u16; 2],
        dilation: [u16; 2],
        pad: [u16; 4],
        /// Bytes (in words) beyond the tightest placement: bands of several rows.
        slack: u32,
        seed: u64,
    }

    fn window(size: u16, k: u16, s: u16, d: u16, a: u16, b: u16) -> Option<u16> {
        let extent = d * (k - 1) + 1;
        (size + a + b).checked_sub(extent).map(|n| n / s + 1)
    }

    impl Case {
        fn out_dims(&self) -> Option<[u16; 3]> {
            let [h, w, c] = self.in_dims;
            let [pt, pl, pb, pr] = self.pad;
            match self.kind {
                Kind::Conv { depthwise } => Some([
                    window(h, self.kernel[0], self.stride[0], self.dilation[0], pt, pb)?,
                    window(w, self.kernel[1], self.stride[1], self.dilation[1], pl, pr)?,
                    if depthwise { c } else { self.out_c },
                ]),
                Kind::Pool { .. } => Some([
                    window(h, self.kernel[0], self.stride[0], 1, pt, pb)?,
                    window(w, self.kernel[1], self.stride[1], 1, pl, pr)?,
                    c,
                ]),
                Kind::Unary | Kind::Add => Some(self.in_dims),
            }
        }
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            (0u8..5, 0u8..3, 1u16..9, 1u16..7, 1u16..5, 1u16..5),
            (
                [1u16..4, 1u16..4],
                [1u16..3, 1u16..3],
                [1u16..3, 1u16..3],
                [0u16..3, 0u16..3, 0u16..3, 0u16..3],
            ),
            (0u32..40, any::<u64>()),
        )
            .prop_map(
                |((kind, precision, h, w, c, out_c), geometry, (slack, seed))| {
                    let (kernel, stride, dilation, pad) = geometry;
                    let kind = match kind {
                        0 => Kind::Conv { depthwise: false },
                        1 => Kind::Conv { depthwise: true },
                        2 => Kind::Pool {
                            kind: (seed % 3) as u8,
                        },
                        3 => Kind::Unary,
                        _ => Kind::Add,
                    };
                    let precision = match precision {
                        0 => Precision::F32,
                        1 => Precision::I8,
                        _ if matches!(kind, Kind::Conv { .. }) => Precision::I16,
                        _ => Precision::I8,
                    };
                    Case {
                        kind,
                        precision,
                        in_dims: [h, w, c],
                        out_c,
                        kernel,
                        stride,
                        dilation,
                        pad,
                        slack,
                        seed,
                    }
                },
            )
            .prop_filter("a valid geometry", |c| {
                let pool_pads_ok = !matches!(c.kind, Kind::Pool { .. })
                    || (c.pad[0] < c.kernel[0]
                        && c.pad[2] < c.kernel[0]
                        && c.pad[1] < c.kernel[1]
                        && c.pad[3] < c.kernel[1]);
                pool_pads_ok && c.out_dims().is_some()
            })
    }

    fn aligned(n: usize) -> u32 {
        n.div_ceil(4) as u32 * 4
    }

    /// Where the written-over tensor and the output lie, relative to each other.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Placement {
        /// Apart: the reference.
        Apart,
        /// The output `bytes` below the input (a multiple of 4).
        Below(u32),
        /// The output `bytes` above the input.
        Above(u32),
    }

    /// The model of `case` with its last layer's output placed as `placement` says relative to
    /// the tensor it writes over (the model input; for `Add`, the clamp's output).
    fn model(case: &Case, placement: Placement) -> Spec {
        let out_dims = case.out_dims().unwrap();
        let int8 = case.precision != Precision::F32;
        let dtype = if int8 { DType::I8 } else { DType::F32 };
        let q = |scale: f32, zero_point: i32| int8.then_some(Quant { scale, zero_point });
        let tensor = |id, dims, dtype, quant| TensorDesc {
            id,
            offset: 0,
            dims,
            dtype,
            quant,
            view: None,
        };
        let in_dtype = if case.precision == Precision::I16 {
            DType::I16
        } else {
            dtype
        };
        let qx = if case.precision == Precision::I16 {
            q(0.0004, 0)
        } else {
            q(0.05, -3)
        };
        let mut x = tensor(0, case.in_dims, in_dtype, qx);
        let mut t = tensor(1, case.in_dims, dtype, qx);
        let qy = match case.kind {
            Kind::Pool { .. } | Kind::Unary => qx,
            _ => q(0.1, 5),
        };
        let mut y = tensor(2, out_dims, dtype, qy);
        // The tensor the last layer writes over: the model input, or the clamp's output.
        let over_t = case.kind == Kind::Add;
        let below = aligned(x.byte_len()) + if over_t { aligned(t.byte_len()) } else { 0 };
        let (over, out) = match placement {
            Placement::Apart => (below, below + aligned(x.byte_len().max(t.byte_len()))),
            Placement::Below(d) => (below + d, below),
            Placement::Above(d) => (below, below + d),
        };
        if over_t {
            t.offset = over;
        } else {
            x.offset = over;
        }
        y.offset = out;
        let end = [&x, &t, &y]
            .iter()
            .map(|d| d.offset + aligned(d.byte_len()))
            .max()
            .unwrap();
        let mut spec = Spec::new(end, x, y);
        spec.info.output_rank = 3;
        let mut g = Gen(case.seed);
        let clamp = Clamp { min: -60, max: 90 };
        let op = match case.kind {
            Kind::Conv { depthwise } => {
                let c = case.in_dims[2];
                let n_out = usize::from(out_dims[2]);
                let per_out = usize::from(case.kernel[0])
                    * usize::from(case.kernel[1])
                    * usize::from(if depthwise { 1 } else { c });
                let n_weights = n_out * per_out;
                let (weights, bias) = if int8 {
                    let weights = push_i8(&mut spec, &g.i8s(n_weights));
                    let bias: Vec<i32> = (0..n_out).map(|_| i32::from(g.i8()) * 8).collect();
                    (weights, push_i32(&mut spec, &bias))
                } else {
                    let weights = spec.f32s(&values(n_weights, case.seed));
                    (weights, spec.f32s(&values(n_out, case.seed ^ 1)))
                };
                let conv = Conv2d {
                    kernel: case.kernel,
                    stride: case.stride,
                    dilation: case.dilation,
                    pad: case.pad,
                    groups: if depthwise { c } else { 1 },
                    weights,
                    bias,
                    pad_values: Span::default(),
                    activation: Activation::Identity,
                };
                if int8 {
                    let s_x = f64::from(qx.unwrap().scale);
                    let reals: Vec<f64> = (0..n_out)
                        .map(|i| s_x * 0.01 * (1.0 + i as f64 / 4.0) / 0.1)
                        .collect();
                    let requant = push_requant(&mut spec, &reals);
                    if case.precision == Precision::I16 {
                        Op::Conv2dI16(Conv2dI16 {
                            conv,
                            requant,
                            clamp: ClampI16 { min: -60, max: 90 },
                        })
                    } else {
                        Op::Conv2dI8(Conv2dI8 {
                            conv,
                            requant,
                            clamp,
                        })
                    }
                } else {
                    Op::Conv2d(Conv2d {
                        activation: Activation::Relu,
                        ..conv
                    })
                }
            }
            Kind::Pool { kind } => {
                let pool = Pool {
                    kind: match kind {
                        0 => PoolKind::Max,
                        k => PoolKind::Average {
                            count_include_pad: k == 2,
                        },
                    },
                    kernel: case.kernel,
                    stride: case.stride,
                    pad: case.pad,
                    activation: Activation::Identity,
                };
                if int8 {
                    Op::PoolI8(PoolI8 {
                        pool,
                        rescale: None,
                        clamp: Clamp::FULL,
                    })
                } else {
                    Op::Pool(pool)
                }
            }
            Kind::Unary | Kind::Add => {
                if int8 {
                    Op::ClampI8(clamp)
                } else {
                    Op::Activation(Activation::Relu)
                }
            }
        };
        if over_t {
            spec.push(layer(op, x, t));
            let add = if int8 {
                let f = add_requant(0.05, 0.05, 0.1).unwrap();
                Op::AddI8(AddI8 {
                    input_requant: f.inputs,
                    output_requant: f.output,
                    clamp: Clamp::FULL,
                })
            } else {
                Op::Add {
                    activation: Activation::Identity,
                }
            };
            // The written-over tensor second on odd seeds.
            if case.seed % 2 == 0 {
                spec.push(layer2(add, t, x, y));
            } else {
                spec.push(layer2(add, x, t, y));
            }
        } else {
            spec.push(layer(op, x, y));
        }
        spec
    }

    fn input(case: &Case) -> Vec<u8> {
        let n = case.in_dims.iter().map(|&d| usize::from(d)).product();
        match case.precision {
            Precision::I16 => Gen(case.seed ^ 7)
                .i16s(n)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            Precision::I8 => Gen(case.seed ^ 7).i8s(n).iter().map(|&v| v as u8).collect(),
            Precision::F32 => values(n, case.seed ^ 7)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        }
    }

    /// The model's output bytes, or the load error.
    fn run(spec: &Spec, case: &Case) -> Result<Vec<u8>, LoadError> {
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes())?;
        let mut arena = Blob::zeroed(spec.info.arena_bytes as usize);
        // Stale bytes everywhere: an in-place layer must not read what it has not been given.
        arena.bytes_mut().iter_mut().for_each(|b| *b = 0xa5);
        let x = input(case);
        let n_out = spec.info.output.len();
        Ok(match case.precision {
            Precision::I16 => {
                let x: Vec<i16> = x
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let mut y = std::vec![0i8; n_out];
                model.run_i8(arena.bytes_mut(), &x, &mut y).unwrap();
                y.iter().map(|&v| v as u8).collect()
            }
            Precision::I8 => {
                let x: Vec<i8> = x.iter().map(|&b| b as i8).collect();
                let mut y = std::vec![0i8; n_out];
                model.run_i8(arena.bytes_mut(), &x, &mut y).unwrap();
                y.iter().map(|&v| v as u8).collect()
            }
            Precision::F32 => {
                let x: Vec<f32> = x
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let mut y = std::vec![0f32; n_out];
                model.run_f32(arena.bytes_mut(), &x, &mut y).unwrap();
                y.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        })
    }

    /// The bounds the planner would use for the layer that writes over its input.
    fn bounds(spec: &Spec) -> Option<InPlaceBounds> {
        let last = spec.layers.last().unwrap();
        let over = if last.input_count == 2 {
            last.inputs.iter().position(|d| d.id == 1).unwrap()
        } else {
            0
        };
        last.in_place_bounds(over)
    }

    fn check(case: &Case) -> Result<(), TestCaseError> {
        let apart = model(case, Placement::Apart);
        let expected = run(&apart, case).unwrap();
        let Some(b) = bounds(&apart) else {
            // A row that reads only padding: no in-place placement exists.
            return Ok(());
        };
        let slack = 4 * case.slack;
        let below = (-b.forward_max) as u32;
        let above = b.reverse_min as u32;
        for placement in [
            Placement::Below(below.div_ceil(4) * 4),
            Placement::Below(below.div_ceil(4) * 4 + slack),
            Placement::Above(above.div_ceil(4) * 4),
            Placement::Above(above.div_ceil(4) * 4 + slack),
        ] {
            let spec = model(case, placement);
            match run(&spec, case) {
                Ok(y) => prop_assert_eq!(&y, &expected, "{:?}", placement),
                Err(e) => prop_assert!(false, "{:?} refused: {:?}", placement, e),
            }
            largest_bands(spec.layers.last().unwrap())?;
        }
        // One word tighter than the bounds: refused, or (a row landing past the input's end)
        // still exact.
        for placement in [
            Placement::Below((below.div_ceil(4) * 4).saturating_sub(4)),
            Placement::Above((above.div_ceil(4) * 4).saturating_sub(4)),
        ] {
            if let Ok(y) = run(&model(case, placement), case) {
                prop_assert_eq!(&y, &expected, "{:?}", placement);
            }
        }
        Ok(())
    }

    /// Every band the driver picks (by [`super::Layer::band_limit`]) is the largest the
    /// row-by-row search finds from the same row.
    fn largest_bands(layer: &Layer) -> Result<(), TestCaseError> {
        use super::{forward_band, reverse_band, safe, Overlaps};
        let over = &Overlaps::of(layer);
        let rows = u32::from(layer.output.dims[0]);
        let forward = layer.output.offset < layer.inputs[0].offset;
        for at in 0..rows {
            if forward {
                let mut end = at + 1;
                while end < rows && safe(layer, over, &(at..end + 1)) {
                    end += 1;
                }
                let want = safe(layer, over, &(at..at + 1)).then_some(end);
                prop_assert_eq!(
                    forward_band(layer, over, at, rows),
                    want,
                    "forward from {}",
                    at
                );
            } else {
                let end = at + 1;
                let mut start = at;
                while start > 0 && safe(layer, over, &(start - 1..end)) {
                    start -= 1;
                }
                let want = safe(layer, over, &(at..end)).then_some(start);
                prop_assert_eq!(reverse_band(layer, over, end), want, "reverse to {}", end);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        #[test]
        fn a_layer_over_its_own_input_writes_the_same_bytes(case in case()) {
            check(&case)?;
        }
    }

    fn unary_i8(offsets: (u32, u32), rows: u16) -> Spec {
        let q = Some(Quant {
            scale: 0.1,
            zero_point: 0,
        });
        let d = |id, offset| TensorDesc {
            id,
            offset,
            dims: [rows, 2, 4],
            dtype: DType::I8,
            quant: q,
            view: None,
        };
        let (x, y) = (d(0, offsets.0), d(1, offsets.1));
        let mut spec = Spec::new(offsets.0.max(offsets.1) + u32::from(rows) * 8, x, y);
        spec.info.output_rank = 3;
        spec.push(layer(Op::ClampI8(Clamp { min: 0, max: 127 }), x, y));
        spec
    }

    fn load_error(spec: &Spec) -> Option<LoadError> {
        Model::new_checked(spec.blob().bytes()).err()
    }

    #[test]
    fn an_output_must_trail_its_input_by_a_row() {
        // Rows of 8 bytes: the output may start 8 bytes below the input or 8 above.
        assert_eq!(load_error(&unary_i8((8, 0), 4)), None);
        assert_eq!(load_error(&unary_i8((0, 8), 4)), None);
        let row = |offsets, row| {
            let bad = LayerFault::InPlaceRow { input: 0, row };
            assert_eq!(
                load_error(&unary_i8(offsets, 4)),
                Some(LoadError::BadLayer {
                    layer: 0,
                    what: bad
                })
            );
        };
        row((4, 0), 0);
        row((0, 0), 0);
        row((0, 4), 0);
    }

    #[test]
    fn a_firmware_without_the_band_driver_refuses_a_layer_in_place() {
        use crate::engine::{Kernel, KernelSet, Kernels};
        struct Int8Only;
        impl Kernels for Int8Only {
            const SET: KernelSet = KernelSet::INT8;
        }
        let spec = unary_i8((8, 0), 4);
        let blob = spec.blob();
        let every = Model::new_checked(blob.bytes()).unwrap();
        assert!(KernelSet::of(&every).contains(Kernel::InPlace));
        assert_eq!(
            Model::<Int8Only>::new_checked_with_kernels(blob.bytes()).err(),
            Some(LoadError::KernelNotLinked {
                layer: 0,
                kernel: Kernel::InPlace
            })
        );
        // Apart, the same layer needs no band driver.
        let apart = unary_i8((32, 0), 4);
        let blob = apart.blob();
        assert!(Model::<Int8Only>::new_checked_with_kernels(blob.bytes()).is_ok());
    }

    #[test]
    fn a_layer_writes_over_an_input_only_when_no_later_layer_reads_it() {
        let mut spec = unary_i8((8, 0), 4);
        let (x, y) = (spec.info.input, spec.info.output);
        let z = TensorDesc {
            id: 2,
            offset: 40,
            ..y
        };
        spec.info.output = z;
        spec.info.arena_bytes = 80;
        let q = add_requant(0.1, 0.1, 0.1).unwrap();
        let add = Op::AddI8(AddI8 {
            input_requant: q.inputs,
            output_requant: q.output,
            clamp: Clamp::FULL,
        });
        spec.push(layer2(add, x, y, z));
        assert_eq!(
            load_error(&spec),
            Some(LoadError::BadLayer {
                layer: 0,
                what: LayerFault::ClobbersLiveTensor { tensor: 0 }
            })
        );
    }
}
