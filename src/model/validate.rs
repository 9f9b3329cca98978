//! The load-time checks. After they pass, every tensor lies inside the arena, every span inside
//! the weights section with the length its shapes require, every read sees data written earlier,
//! and no write destroys data that is still needed; the engine and kernels rely on all of it.
//!
//! Layers are never stored: checks that relate layers to each other re-decode the records, which
//! keeps RAM use O(1) for any layer count at the price of O(L²) decodes at load.

mod axis;

use super::decode::{NotLinked, Undecoded};
use super::{
    Boundary, LayerFault, Layers, LoadError, Model, Operand, ParamFault, SpanFault, SpanRole,
    TensorFault,
};
use crate::engine::kernel_set::{linked, links_any};
use crate::engine::{Kernel, KernelSet, Kernels};
use crate::format::{
    Activation, ChannelRequant, Clamp, Concat, ConcatI8, Conv2d, DType, DenseLayout, Layer, Op,
    Pool, PoolI8, Quant, Requant, Span, TensorDesc, ARENA_ALIGN,
};
use crate::quant::contract::{
    accumulator_fits_for, MAX_POOL_WINDOW_AREA, SOFTMAX_OUTPUT_ZERO_POINT,
    WIDE_SOFTMAX_OUTPUT_SHIFT,
};

/// Byte range of a tensor's storage in the arena (a view's whole storage: `H · W ·
/// pixel_stride` elements); only used on descriptions that passed `check_desc`.
fn region(d: &TensorDesc) -> (u64, u64) {
    let [h, w, c] = d.dims.map(u64::from);
    let per_pixel = d.view.map_or(c, |v| u64::from(v.pixel_stride));
    let bytes = h * w * per_pixel * d.dtype.size() as u64;
    (u64::from(d.offset), u64::from(d.offset) + bytes)
}

/// The dims of `[h, w, c]` padded by `pad` (`[top, left, bottom, right]`) at the edges and by
/// `interior` `[rows, columns]` between neighbours (`kernels::layout::pad_with`).
fn padded([h, w, c]: [u64; 3], pad: [u16; 4], interior: [u16; 2]) -> [u64; 3] {
    let [pt, pl, pb, pr] = pad.map(u64::from);
    let spread = |n: u64, fill: u16| n + n.saturating_sub(1) * u64::from(fill);
    [
        pt + spread(h, interior[0]) + pb,
        pl + spread(w, interior[1]) + pr,
        c,
    ]
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// True when two tensors share an arena byte. Tensors laid out in one storage (same offset,
/// element type, pixels and pixel stride; at least one a view) share bytes only if their channel
/// ranges meet: the views of one concatenation interleave without touching. Any other pair is
/// compared by storage range, which is conservative for views.
fn collide(a: &TensorDesc, b: &TensorDesc) -> bool {
    let pixels = |d: &TensorDesc| u32::from(d.dims[0]) * u32::from(d.dims[1]);
    let one_storage = (a.view.is_some() || b.view.is_some())
        && a.offset == b.offset
        && a.dtype == b.dtype
        && pixels(a) == pixels(b)
        && a.pixel_stride() == b.pixel_stride();
    if one_storage {
        let channels = |d: &TensorDesc| {
            let start = d.channel() as u64;
            (start, start + u64::from(d.dims[2]))
        };
        overlaps(channels(a), channels(b))
    } else {
        overlaps(region(a), region(b))
    }
}

/// Views are written by convolutions (their kernels take an output pixel stride), by a
/// concatenation along channels (a nested concatenation's output lies in the outer one's
/// storage) and by a `Slice` in place (its output is a view of its input's storage, nothing is
/// moved: `Layer::in_place`). They are read by a concatenation along channels as an input
/// already in its slot of the output, unrescaled; by a `Slice` in place (a slice of a slice);
/// and (version 10) by a convolution as its input (`Conv2d`, `Conv2dI8`, `Conv2dI16`: the
/// kernels take an input pixel stride).
fn check_views(layer: &Layer) -> Result<(), LayerFault> {
    let writes_views = match layer.op {
        Op::Conv2d(_)
        | Op::Conv2dI8(_)
        | Op::Conv2dI16(_)
        | Op::Concat(Concat { axis: 2 })
        | Op::ConcatI8(ConcatI8 { axis: 2, .. }) => true,
        Op::Slice(_) => layer.in_place(0),
        _ => false,
    };
    if layer.output.view.is_some() && !writes_views {
        return Err(LayerFault::ViewOperand {
            operand: Operand::Output,
        });
    }
    let convolution = matches!(layer.op, Op::Conv2d(_) | Op::Conv2dI8(_) | Op::Conv2dI16(_));
    for (k, x) in used_inputs(layer).iter().enumerate() {
        let unrescaled = match &layer.op {
            Op::ConcatI8(c) => c.rescale.get(k).is_some_and(Option::is_none),
            _ => true,
        };
        let read_at_stride = convolution && k == 0;
        if x.view.is_some() && !(layer.in_place(k) && unrescaled) && !read_at_stride {
            return Err(LayerFault::ViewOperand {
                operand: Operand::Input(u8::try_from(k).unwrap_or(u8::MAX)),
            });
        }
    }
    Ok(())
}

/// [`check_views`] for a firmware without the layers that make views: no operand may be one.
fn no_views(layer: &Layer) -> Result<(), LayerFault> {
    if layer.output.view.is_some() {
        return Err(LayerFault::ViewOperand {
            operand: Operand::Output,
        });
    }
    match used_inputs(layer).iter().position(|x| x.view.is_some()) {
        Some(k) => Err(LayerFault::ViewOperand {
            operand: Operand::Input(u8::try_from(k).unwrap_or(u8::MAX)),
        }),
        None => Ok(()),
    }
}

/// The inputs of a layer that the operation uses.
pub(crate) fn used_inputs(layer: &Layer) -> &[TensorDesc] {
    layer
        .inputs
        .get(..usize::from(layer.input_count))
        .unwrap_or_default()
}

/// [`Layer::in_place`] in a firmware of kernel set `K`: only concatenations and slices run in
/// place, and a firmware that links none of them refused such records when it decoded them.
fn in_place<K: Kernels>(layer: &Layer, k: usize) -> bool {
    links_any::<K>(KernelSet::AXIS.with(Kernel::SliceView)) && layer.in_place(k)
}

fn layer_index(i: usize) -> u16 {
    // Layer indices are below `layer_count: u16`.
    u16::try_from(i).unwrap_or(u16::MAX)
}

fn check_desc(d: &TensorDesc, arena_bytes: u32) -> Result<(), TensorFault> {
    match (d.dtype, d.quant) {
        (DType::F32, None) => {}
        (DType::F32, Some(_)) => return Err(TensorFault::QuantOnFloat),
        (DType::I8 | DType::I16, None) => return Err(TensorFault::QuantMissing),
        (dtype, Some(Quant { scale, zero_point })) => {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(TensorFault::QuantScale);
            }
            let fits = match dtype {
                DType::I16 => i16::try_from(zero_point).is_ok(),
                _ => i8::try_from(zero_point).is_ok(),
            };
            if !fits {
                return Err(TensorFault::QuantZeroPoint { zero_point });
            }
        }
    }
    if d.dims.contains(&0) {
        return Err(TensorFault::ZeroDim);
    }
    if let Some(v) = d.view {
        if u32::from(v.channel) + u32::from(d.dims[2]) > u32::from(v.pixel_stride) {
            return Err(TensorFault::ViewOutsideStorage {
                channel: v.channel,
                channels: d.dims[2],
                pixel_stride: v.pixel_stride,
            });
        }
    }
    let bytes =
        u32::try_from(region(d).1 - u64::from(d.offset)).map_err(|_| TensorFault::TooLarge)?;
    if d.offset as usize % ARENA_ALIGN != 0 {
        return Err(TensorFault::MisalignedOffset { offset: d.offset });
    }
    if u64::from(d.offset) + u64::from(bytes) > u64::from(arena_bytes) {
        return Err(TensorFault::OutsideArena {
            offset: d.offset,
            bytes,
            arena_bytes,
        });
    }
    Ok(())
}

/// Checks the model info and every layer record on its own; returns the bytes after the last
/// record (the caller requires there are none).
pub(super) fn records<'a, K: Kernels>(model: &Model<'a, K>) -> Result<&'a [u8], LoadError> {
    let info = &model.info;
    if let Some(t) = info.input_transpose {
        // The first layer reads the transposed input: it is the one that cannot run.
        if !linked::<K>(Kernel::InputTranspose) {
            return Err(LoadError::KernelNotLinked {
                layer: 0,
                kernel: Kernel::InputTranspose,
            });
        }
        let mut seen = [false; 3];
        for &axis in &t.perm {
            if let Some(s) = seen.get_mut(usize::from(axis)) {
                *s = true;
            }
        }
        if seen.contains(&false) {
            let fault = TensorFault::NotAPermutation { perm: t.perm };
            let tensor = Boundary::Input;
            return Err(LoadError::BadModelTensor { tensor, fault });
        }
    }
    let boundaries = [
        (&info.input, info.input_rank, Boundary::Input),
        (&info.output, info.output_rank, Boundary::Output),
    ];
    for (d, rank, tensor) in boundaries {
        check_desc(d, info.arena_bytes)
            .map_err(|fault| LoadError::BadModelTensor { tensor, fault })?;
        if d.view.is_some() {
            let fault = TensorFault::ViewAtBoundary;
            return Err(LoadError::BadModelTensor { tensor, fault });
        }
        // The dims outside the logical rank (of the caller's layout) are padding of the shape
        // and must be 1.
        let dims = match tensor {
            Boundary::Input => info.caller_input_dims(),
            _ => d.dims,
        };
        let unused = dims
            .len()
            .checked_sub(usize::from(rank))
            .filter(|_| rank >= 1);
        let leading = unused.and_then(|n| dims.get(..n));
        if !leading.is_some_and(|dims| dims.iter().all(|&n| n == 1)) {
            let fault = TensorFault::Rank { rank };
            return Err(LoadError::BadModelTensor { tensor, fault });
        }
    }
    if info.output.id == info.input.id {
        return Err(LoadError::OutputIsInput);
    }
    let weights = Weights(model.weights);
    let mut layers = model.layers();
    let mut index = 0u16;
    while let Some(decoded) = layers.try_next() {
        let layer = decoded.map_err(|why| match why {
            Undecoded::Malformed => LoadError::MetaDecode { layer: Some(index) },
            Undecoded::NotLinked(NotLinked::Kernel(kernel)) => LoadError::KernelNotLinked {
                layer: index,
                kernel,
            },
            Undecoded::NotLinked(NotLinked::Operation(operation)) => {
                LoadError::OperationNotLinked {
                    layer: index,
                    operation,
                }
            }
        })?;
        check_layer::<K>(index, &layer, info.arena_bytes, weights)?;
        index = index.saturating_add(1);
    }
    Ok(layers.rest)
}

/// Refuses a (valid) layer whose kernel the firmware does not link.
fn check_linked<K: Kernels>(index: u16, layer: &Layer) -> Result<(), LoadError> {
    match Kernel::of(layer) {
        Some(kernel) if !K::SET.contains(kernel) => Err(LoadError::KernelNotLinked {
            layer: index,
            kernel,
        }),
        _ => Ok(()),
    }
}

fn check_layer<K: Kernels>(
    index: u16,
    layer: &Layer,
    arena_bytes: u32,
    weights: Weights<'_>,
) -> Result<(), LoadError> {
    let bad = |what| LoadError::BadLayer { layer: index, what };
    let attribute = |operand| move |fault| bad(LayerFault::Tensor { operand, fault });
    let expected = match layer.op {
        Op::Add { .. }
        | Op::AddI8(_)
        | Op::Concat(_)
        | Op::ConcatI8(_)
        | Op::Mul { .. }
        | Op::MulI8(_) => 2,
        _ => 1,
    };
    if layer.input_count != expected {
        return Err(bad(LayerFault::InputCount {
            expected,
            found: layer.input_count,
        }));
    }
    // First, so that the checks of what the firmware does not link (fused layers, layers written
    // over their input) are left out of it: a layer that needs them is refused here.
    check_linked::<K>(index, layer)?;
    let inputs = used_inputs(layer);
    for (i, d) in (0u8..).zip(inputs) {
        check_desc(d, arena_bytes).map_err(attribute(Operand::Input(i)))?;
    }
    check_desc(&layer.output, arena_bytes).map_err(attribute(Operand::Output))?;
    // Views come only from the layers that make them (concatenations, slices in place): a
    // firmware that links none of those refuses any view without the checks of their uses.
    if links_any::<K>(KernelSet::AXIS.with(Kernel::SliceView)) {
        check_views(layer).map_err(bad)?;
    } else {
        no_views(layer).map_err(bad)?;
    }
    let mut over_inputs = false;
    for (i, d) in (0u8..).zip(inputs) {
        // An input in its slot of a concatenation's output is part of it, by design; a row-local
        // operation may write over an input (its rows are checked once its shapes are).
        if !in_place::<K>(layer, usize::from(i)) && collide(&layer.output, d) {
            if !linked::<K>(Kernel::InPlace) {
                return Err(LoadError::KernelNotLinked {
                    layer: index,
                    kernel: Kernel::InPlace,
                });
            }
            if layer.row_window(usize::from(i)).is_none() {
                return Err(bad(LayerFault::OverlapsOwnInput { input: i }));
            }
            over_inputs = true;
        }
        // A view read by a layer that moves something (a convolution) and its output are
        // separate slices of the arena for the engine: their storages may not meet even where
        // their channels do not (a convolution reading one slot of a storage and writing
        // another).
        let views = d.view.is_some() || layer.output.view.is_some();
        if views
            && !in_place::<K>(layer, usize::from(i))
            && overlaps(region(d), region(&layer.output))
        {
            return Err(bad(LayerFault::OverlapsOwnInput { input: i }));
        }
    }
    check_dtypes(&layer.op, inputs, &layer.output).map_err(bad)?;
    // A fused layer was refused above unless its kernel is linked.
    if links_any::<K>(KernelSet::FUSED) && layer.fused().is_some() {
        return check_fused::<K>(layer, arena_bytes, weights).map_err(bad);
    }
    match (&layer.op, inputs.first()) {
        // A slice in place moves nothing (its `Kernel::of` is `SliceView`, refused above unless
        // linked): its shapes are checked all the same.
        (Op::Slice(slice), Some(x)) if linked::<K>(Kernel::SliceView) && layer.is_view_slice() => {
            axis::check_slice(slice, x, &layer.output).map_err(bad)?
        }
        _ => check_op::<K>(&layer.op, inputs, &layer.output, weights).map_err(bad)?,
    }
    if over_inputs {
        check_over_inputs(layer).map_err(bad)?;
    }
    Ok(())
}

/// A layer whose output overlaps inputs it reads through row windows (shapes valid): every
/// overlapped input on the same side of the output (the engine runs the rows in one direction),
/// and every output row, run as a band of its own, clear of the input rows still to be read.
fn check_over_inputs(layer: &Layer) -> Result<(), LayerFault> {
    let mut side = None;
    for (k, d) in used_inputs(layer).iter().enumerate() {
        if layer.in_place(k) || !collide(&layer.output, d) {
            continue;
        }
        let input = u8::try_from(k).unwrap_or(u8::MAX);
        let below = layer.output.offset < d.offset;
        if *side.get_or_insert(below) != below {
            return Err(LayerFault::InPlaceDirections);
        }
        for row in 0..u32::from(layer.output.dims[0]) {
            if !layer.band_is_safe(k, &(row..row + 1)) {
                return Err(LayerFault::InPlaceRow {
                    input,
                    row: u16::try_from(row).unwrap_or(u16::MAX),
                });
            }
        }
    }
    Ok(())
}

/// A fused convolution and pooling: the convolution against its input and the whole convolution
/// output it never stores, the pooling against that and the output, each as its own layer would
/// be checked; the band (a valid description of convolution rows inside the arena, disjoint from
/// the input and the output, holding the rows one pooling window reads); and the convolution
/// padding below the window height (every band row is computed from at least one input row).
fn check_fused<K: Kernels>(
    layer: &Layer,
    arena_bytes: u32,
    weights: Weights<'_>,
) -> Result<(), LayerFault> {
    let (Some((conv, pool, band)), Some(x)) = (layer.fused(), layer.inputs.first()) else {
        return Err(LayerFault::Param(ParamFault::WindowLargerThanInput));
    };
    let (Some(mid), Some(scratch)) = (layer.fused_intermediate(), layer.scratch()) else {
        return Err(LayerFault::Param(ParamFault::WindowLargerThanInput));
    };
    let extent = u32::from(conv.dilation[0]) * u32::from(conv.kernel[0].saturating_sub(1)) + 1;
    if u32::from(conv.pad[0]) >= extent || u32::from(conv.pad[2]) >= extent {
        return Err(LayerFault::Param(ParamFault::FusedConvPad));
    }
    let needed = pool.kernel[0].min(mid.dims[0]);
    if band.rows < needed || band.rows > mid.dims[0] {
        return Err(LayerFault::Param(ParamFault::BandRows {
            rows: band.rows,
            needed,
            conv_rows: mid.dims[0],
        }));
    }
    check_desc(&scratch, arena_bytes).map_err(|fault| LayerFault::Tensor {
        operand: Operand::Band,
        fault,
    })?;
    if collide(&scratch, x) {
        return Err(LayerFault::OverlapsOwnInput { input: 0 });
    }
    if collide(&scratch, &layer.output) {
        return Err(LayerFault::BandOverlapsOutput);
    }
    match &layer.op {
        Op::Conv2dPool(f) if linked::<K>(Kernel::Conv2dPool) => {
            check_conv_f32(&f.conv, x, &mid, weights)?;
            check_activation(&f.pool.activation)?;
            pool_geometry(&f.pool, &mid, &layer.output)
        }
        Op::Conv2dPoolI8(f) if linked::<K>(Kernel::Conv2dPoolI8) => {
            let clamp = check_clamp(f.conv.clamp);
            check_integer_conv(weights, (&f.conv.conv, &f.conv.requant), clamp, x, &mid)?;
            check_pool_i8(&f.pool, &mid, &layer.output)
        }
        Op::Conv2dPoolI16(f) if linked::<K>(Kernel::Conv2dPoolI16ToI8) => {
            let clamp = check_bounds(f.conv.clamp.min, f.conv.clamp.max);
            check_integer_conv(weights, (&f.conv.conv, &f.conv.requant), clamp, x, &mid)?;
            check_pool_i8(&f.pool, &mid, &layer.output)
        }
        // Refused by `check_linked`.
        _ => Err(LayerFault::InputCount {
            expected: 1,
            found: layer.input_count,
        }),
    }
}

/// An f32 convolution record against its operands.
fn check_conv_f32(
    conv: &Conv2d,
    x: &TensorDesc,
    y: &TensorDesc,
    weights: Weights<'_>,
) -> Result<(), LayerFault> {
    let f32s = |n: u64| n.saturating_mul(4);
    check_activation(&conv.activation)?;
    let (out_c, per_out) = conv_geometry(conv, x, y)?;
    let n_weights = out_c.saturating_mul(per_out);
    weights.span(conv.weights, SpanRole::Weights, f32s(n_weights), 4)?;
    weights.span(conv.bias, SpanRole::Bias, f32s(out_c), 4)?;
    let pad_values = if conv.pad_values.len == 0 {
        0
    } else {
        f32s(u64::from(x.dims[2]))
    };
    weights.span(conv.pad_values, SpanRole::PadValues, pad_values, 4)?;
    Ok(())
}

/// An int8 pooling record against its operands.
fn check_pool_i8(q: &PoolI8, x: &TensorDesc, y: &TensorDesc) -> Result<(), LayerFault> {
    check_identity(&q.pool.activation)?;
    pool_geometry(&q.pool, x, y)?;
    let area = u64::from(q.pool.kernel[0]) * u64::from(q.pool.kernel[1]);
    if area > MAX_POOL_WINDOW_AREA as u64 {
        return Err(LayerFault::Param(ParamFault::PoolWindowTooLarge {
            area: u32::try_from(area).unwrap_or(u32::MAX),
            max: MAX_POOL_WINDOW_AREA as u32,
        }));
    }
    match q.rescale {
        Some(r) => check_requant(r)?,
        None => same_quant(x, y)?,
    }
    check_clamp(q.clamp)
}

/// The element types of `op`'s inputs and of its output, `None` for element-type generic
/// operations (transpose: output as input, any element type) and the 16×8 convolution (int8 or
/// int16 on each side, checked in `check_dtypes`).
fn op_dtypes(op: &Op) -> Option<(DType, DType)> {
    let same = |d| Some((d, d));
    match op {
        Op::DenseI8Wide(_) => Some((DType::I8, DType::I16)),
        // Checked on its own in `check_dtypes`.
        Op::Conv2dI16(_) => None,
        Op::SoftmaxI16 { .. } => same(DType::I16),
        Op::Conv2dPool(_) => same(DType::F32),
        Op::Conv2dPoolI8(_) => same(DType::I8),
        Op::Conv2dPoolI16(_) => Some((DType::I16, DType::I8)),
        Op::Conv2d(_)
        | Op::Dense(_)
        | Op::Pool(_)
        | Op::Add { .. }
        | Op::Affine(_)
        | Op::Activation(_)
        | Op::Softmax
        | Op::Pad(_)
        | Op::Mul { .. }
        | Op::PRelu { .. } => same(DType::F32),
        Op::Conv2dI8(_)
        | Op::DenseI8(_)
        | Op::PoolI8(_)
        | Op::AddI8(_)
        | Op::AffineI8(_)
        | Op::ClampI8(_)
        | Op::LookupI8 { .. }
        | Op::SoftmaxI8 { .. }
        | Op::PadI8 { .. }
        | Op::ConcatI8(_)
        | Op::MulI8(_)
        | Op::PReluI8(_) => same(DType::I8),
        // Moves of any element type (int16 refused in `check_op`).
        Op::Transpose(_) | Op::Concat(_) | Op::Slice(_) | Op::Gather(_) => None,
    }
}

fn check_dtypes(op: &Op, inputs: &[TensorDesc], y: &TensorDesc) -> Result<(), LayerFault> {
    let Some(first) = inputs.first() else {
        return Ok(());
    };
    let (input, output) = match op_dtypes(op) {
        Some(types) => types,
        // A 16×8 convolution: int8 or int16 on each side, one of them int16.
        None if matches!(op, Op::Conv2dI16(_)) => {
            let int = |d: DType| if d == DType::F32 { DType::I16 } else { d };
            let input = int(first.dtype);
            let output = match (input, y.dtype) {
                (DType::I8, _) => DType::I16,
                (_, out) => int(out),
            };
            (input, output)
        }
        // A transpose, concat, slice or gather moves any element type.
        None => (first.dtype, first.dtype),
    };
    let operands = (0u8..)
        .zip(inputs)
        .map(|(i, d)| (Operand::Input(i), d, input))
        .chain([(Operand::Output, y, output)]);
    for (operand, d, expected) in operands {
        if d.dtype != expected {
            return Err(LayerFault::DType {
                operand,
                expected,
                found: d.dtype,
            });
        }
    }
    Ok(())
}

fn check_activation(a: &Activation) -> Result<(), LayerFault> {
    match *a {
        Activation::Clip { lo, hi } if lo.is_nan() || hi.is_nan() || lo > hi => {
            Err(LayerFault::Param(ParamFault::ClipBounds))
        }
        Activation::LeakyRelu { alpha } if !alpha.is_finite() => {
            Err(LayerFault::Param(ParamFault::NotFinite))
        }
        Activation::HardSigmoid { alpha, beta } if !(alpha.is_finite() && beta.is_finite()) => {
            Err(LayerFault::Param(ParamFault::NotFinite))
        }
        _ => Ok(()),
    }
}

/// The weights section, for checking spans and reading the constants the loader must inspect.
#[derive(Clone, Copy)]
struct Weights<'a>(&'a [u8]);

impl<'a> Weights<'a> {
    /// The bytes of `span`, which must be exactly `expected` bytes long, start at a multiple of
    /// `align` (4 for f32/i32/u32 arrays, which are borrowed in place; 1 for i8 arrays) and lie
    /// inside the section.
    fn span(
        self,
        span: Span,
        role: SpanRole,
        expected: u64,
        align: u32,
    ) -> Result<&'a [u8], LayerFault> {
        let fault = |fault| LayerFault::Span { role, fault };
        if u64::from(span.len) != expected {
            return Err(fault(SpanFault::Length {
                expected,
                found: span.len,
            }));
        }
        if span.offset % align != 0 {
            return Err(fault(SpanFault::Misaligned {
                offset: span.offset,
            }));
        }
        let end = u64::from(span.offset) + u64::from(span.len);
        let weights_len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        let out_of_bounds = fault(SpanFault::OutOfBounds { end, weights_len });
        let start = usize::try_from(span.offset).map_err(|_| out_of_bounds)?;
        let end_at = usize::try_from(end).map_err(|_| out_of_bounds)?;
        self.0.get(start..end_at).ok_or(out_of_bounds)
    }

    /// The `n` little-endian i32 values of `span` (4-aligned, exactly `4 n` bytes).
    fn i32s(
        self,
        span: Span,
        role: SpanRole,
        n: u64,
    ) -> Result<impl Iterator<Item = i32> + 'a, LayerFault> {
        let bytes = self.span(span, role, n.saturating_mul(4), 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| <[u8; 4]>::try_from(b).map_or(0, i32::from_le_bytes)))
    }

    /// Per-channel factors `[n]`: both arrays present and every factor normalized.
    fn channel_requant(self, r: &ChannelRequant, n: u64) -> Result<(), LayerFault> {
        let multipliers = self.i32s(r.multipliers, SpanRole::Multipliers, n)?;
        let shifts = self.i32s(r.shifts, SpanRole::Shifts, n)?;
        let mut factors = multipliers.zip(shifts);
        if factors.all(|(multiplier, shift)| Requant { multiplier, shift }.is_normalized()) {
            Ok(())
        } else {
            Err(LayerFault::Param(ParamFault::Requant))
        }
    }
}

fn check_requant(r: Requant) -> Result<(), LayerFault> {
    if r.is_normalized() {
        Ok(())
    } else {
        Err(LayerFault::Param(ParamFault::Requant))
    }
}

fn check_clamp(c: Clamp) -> Result<(), LayerFault> {
    check_bounds(c.min.into(), c.max.into())
}

fn check_bounds(min: i16, max: i16) -> Result<(), LayerFault> {
    if min <= max {
        Ok(())
    } else {
        Err(LayerFault::Param(ParamFault::ClampBounds { min, max }))
    }
}

/// The activation embedded in an int8 layer's geometry record: only `Identity` (the int8 layer
/// applies its `clamp` instead).
fn check_identity(a: &Activation) -> Result<(), LayerFault> {
    match a {
        Activation::Identity => Ok(()),
        _ => Err(LayerFault::Param(ParamFault::FusedActivation)),
    }
}

/// Every output channel's bias plus `products` products of an `input`-typed operand (int8 or
/// int16) and int8 weights fits in the i32 accumulator.
fn check_accumulator(
    bias: impl Iterator<Item = i32>,
    products: u64,
    input: DType,
) -> Result<(), LayerFault> {
    let k = usize::try_from(products).unwrap_or(usize::MAX);
    for (channel, b) in (0u32..).zip(bias) {
        if !accumulator_fits_for(input, k, b) {
            return Err(LayerFault::AccumulatorOverflow {
                channel,
                products: u32::try_from(products).unwrap_or(u32::MAX),
            });
        }
    }
    Ok(())
}

/// Output quantization equal to the input's, for operations that cannot rescale.
fn same_quant(x: &TensorDesc, y: &TensorDesc) -> Result<(), LayerFault> {
    if x.quant == y.quant {
        Ok(())
    } else {
        Err(LayerFault::QuantMismatch {
            operand: Operand::Output,
        })
    }
}

fn expect_dims(operand: Operand, expected: [u64; 3], found: [u16; 3]) -> Result<(), LayerFault> {
    if expected == found.map(u64::from) {
        Ok(())
    } else {
        Err(LayerFault::Shape {
            operand,
            expected: expected.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            found,
        })
    }
}

fn nonzero(values: &[u16], fault: ParamFault) -> Result<(), LayerFault> {
    if values.contains(&0) {
        Err(LayerFault::Param(fault))
    } else {
        Ok(())
    }
}

/// Output length of a sliding window along one axis (floor mode, as ONNX without `ceil_mode`):
/// `(size + pad_a + pad_b - dilation * (kernel - 1) - 1) / stride + 1`.
/// `kernel`, `stride` and `dilation` are non-zero.
fn window_out(
    size: u16,
    kernel: u16,
    stride: u16,
    dilation: u16,
    pad_a: u16,
    pad_b: u16,
) -> Result<u64, LayerFault> {
    // u32 holds it all (the padded size is below 2^18, the extent at most 65,535 · 65,534 + 1):
    // a u64 division would link a 0.9 KB routine on 32-bit cores.
    let extent = u32::from(dilation) * (u32::from(kernel) - 1) + 1;
    let padded = u32::from(size) + u32::from(pad_a) + u32::from(pad_b);
    if padded < extent {
        return Err(LayerFault::Param(ParamFault::WindowLargerThanInput));
    }
    Ok(u64::from((padded - extent) / u32::from(stride) + 1))
}

/// Convolution geometry (shared by f32 and int8): parameters against the operand shapes.
/// Returns the output channel count and the number of weights per output channel
/// (`kernel_h · kernel_w · in_c / groups`, also the products summed per output).
fn conv_geometry(conv: &Conv2d, x: &TensorDesc, y: &TensorDesc) -> Result<(u64, u64), LayerFault> {
    let [h, w, c] = x.dims;
    nonzero(&conv.kernel, ParamFault::ZeroKernel)?;
    nonzero(&conv.stride, ParamFault::ZeroStride)?;
    nonzero(&conv.dilation, ParamFault::ZeroDilation)?;
    nonzero(&[conv.groups], ParamFault::ZeroGroups)?;
    // u16 channel counts: the remainders in u32, not u64 (see `window_out`).
    let (c, out_c, groups) = (u32::from(c), u32::from(y.dims[2]), u32::from(conv.groups));
    if c % groups != 0 || out_c % groups != 0 {
        return Err(LayerFault::Param(ParamFault::GroupsDontDivide {
            groups: conv.groups,
            in_c: x.dims[2],
            out_c: y.dims[2],
        }));
    }
    let [kh, kw] = conv.kernel;
    let [pt, pl, pb, pr] = conv.pad;
    let oh = window_out(h, kh, conv.stride[0], conv.dilation[0], pt, pb)?;
    let ow = window_out(w, kw, conv.stride[1], conv.dilation[1], pl, pr)?;
    let out_c = u64::from(out_c);
    expect_dims(Operand::Output, [oh, ow, out_c], y.dims)?;
    Ok((out_c, u64::from(kh) * u64::from(kw) * u64::from(c / groups)))
}

/// Pooling geometry (shared by f32 and int8): parameters against the operand shapes.
fn pool_geometry(pool: &Pool, x: &TensorDesc, y: &TensorDesc) -> Result<(), LayerFault> {
    let [h, w, c] = x.dims;
    nonzero(&pool.kernel, ParamFault::ZeroKernel)?;
    nonzero(&pool.stride, ParamFault::ZeroStride)?;
    let [kh, kw] = pool.kernel;
    let [pt, pl, pb, pr] = pool.pad;
    // Every window then holds at least one real element: max never returns its start value and
    // the average never divides by zero.
    if pt >= kh || pb >= kh || pl >= kw || pr >= kw {
        return Err(LayerFault::Param(ParamFault::PoolPadTooLarge));
    }
    let oh = window_out(h, kh, pool.stride[0], 1, pt, pb)?;
    let ow = window_out(w, kw, pool.stride[1], 1, pl, pr)?;
    expect_dims(Operand::Output, [oh, ow, u64::from(c)], y.dims)
}

/// Operation parameters against operand shapes and spans. Descriptions and element types were
/// checked already.
fn check_op<K: Kernels>(
    op: &Op,
    inputs: &[TensorDesc],
    y: &TensorDesc,
    weights: Weights<'_>,
) -> Result<(), LayerFault> {
    let Some(x) = inputs.first() else {
        return Err(LayerFault::InputCount {
            expected: 1,
            found: 0,
        });
    };
    let [h, w, c] = x.dims.map(u64::from);
    let same_as_input = x.dims.map(u64::from);
    // Bytes of `n` 4-byte values (f32, or i32 for the int8 layers).
    let f32s = |n: u64| n.saturating_mul(4);
    let second_like_first = || match inputs.get(1) {
        Some(second) => expect_dims(Operand::Input(1), same_as_input, second.dims),
        None => Ok(()),
    };
    match op {
        Op::Conv2d(conv) if linked::<K>(Kernel::Conv2d) => check_conv_f32(conv, x, y, weights),
        Op::Dense(dense) if linked::<K>(Kernel::Dense) => {
            check_activation(&dense.activation)?;
            let n_out = y.len() as u64;
            let n_in = dense_features(dense.weights, 4, n_out, x.len() as u64);
            let n_weights = n_out.saturating_mul(n_in);
            weights.span(dense.weights, SpanRole::Weights, f32s(n_weights), 4)?;
            weights.span(dense.bias, SpanRole::Bias, f32s(n_out), 4)?;
            Ok(())
        }
        Op::Pool(pool) if linked::<K>(Kernel::Pool) => {
            check_activation(&pool.activation)?;
            pool_geometry(pool, x, y)
        }
        Op::Add { activation } if linked::<K>(Kernel::Add) => {
            check_activation(activation)?;
            second_like_first()?;
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::Affine(affine) if linked::<K>(Kernel::Affine) => {
            check_activation(&affine.activation)?;
            weights.span(affine.scale, SpanRole::Scale, f32s(c), 4)?;
            weights.span(affine.shift, SpanRole::Shift, f32s(c), 4)?;
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::Activation(activation) if linked::<K>(Kernel::Activation) => {
            check_activation(activation)?;
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::Softmax if linked::<K>(Kernel::Softmax) => {
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::Transpose(t)
            if linked::<K>(Kernel::Transpose)
                || linked::<K>(Kernel::TransposeI8)
                || linked::<K>(Kernel::TransposeI16) =>
        {
            let mut seen = [false; 3];
            let not_perm = LayerFault::Param(ParamFault::NotAPermutation { perm: t.perm });
            let mut expected = [0u64; 3];
            for (slot, &p) in expected.iter_mut().zip(&t.perm) {
                let was_seen = seen.get_mut(usize::from(p)).ok_or(not_perm)?;
                if *was_seen {
                    return Err(not_perm);
                }
                *was_seen = true;
                *slot = same_as_input.get(usize::from(p)).copied().ok_or(not_perm)?;
            }
            expect_dims(Operand::Output, expected, y.dims)?;
            same_quant(x, y)
        }
        Op::Pad(pad) if linked::<K>(Kernel::Pad) => {
            if !pad.value.is_finite() {
                return Err(LayerFault::Param(ParamFault::NotFinite));
            }
            expect_dims(
                Operand::Output,
                padded([h, w, c], pad.pad, pad.interior),
                y.dims,
            )
        }
        Op::Conv2dI8(q) if linked::<K>(Kernel::Conv2dI8) || linked::<K>(Kernel::DepthwiseI8) => {
            check_integer_conv(weights, (&q.conv, &q.requant), check_clamp(q.clamp), x, y)
        }
        Op::Conv2dI16(q)
            if linked::<K>(Kernel::Conv2dI8ToI16)
                || linked::<K>(Kernel::Conv2dI16ToI16)
                || linked::<K>(Kernel::Conv2dI16ToI8)
                || linked::<K>(Kernel::DepthwiseI8ToI16)
                || linked::<K>(Kernel::DepthwiseI16ToI16)
                || linked::<K>(Kernel::DepthwiseI16ToI8) =>
        {
            let clamp = check_bounds(q.clamp.min, q.clamp.max);
            check_integer_conv(weights, (&q.conv, &q.requant), clamp, x, y)
        }
        Op::DenseI8(q)
            if linked::<K>(Kernel::DenseI8)
                || linked::<K>(Kernel::DenseI8Quads)
                || linked::<K>(Kernel::DenseI8Pairs) =>
        {
            check_clamp(q.clamp)?;
            let quads = (
                linked::<K>(Kernel::DenseI8Quads),
                linked::<K>(Kernel::DenseI8Pairs),
            );
            check_dense_i8(
                weights,
                (q.weights, q.bias, &q.requant),
                (q.layout, quads),
                x,
                y,
            )
        }
        Op::DenseI8Wide(q)
            if linked::<K>(Kernel::DenseI8Wide)
                || linked::<K>(Kernel::DenseI8WideQuads)
                || linked::<K>(Kernel::DenseI8WidePairs) =>
        {
            check_bounds(q.clamp.min, q.clamp.max)?;
            let quads = (
                linked::<K>(Kernel::DenseI8WideQuads),
                linked::<K>(Kernel::DenseI8WidePairs),
            );
            check_dense_i8(
                weights,
                (q.weights, q.bias, &q.requant),
                (q.layout, quads),
                x,
                y,
            )
        }
        Op::PoolI8(q) if linked::<K>(Kernel::PoolI8) => check_pool_i8(q, x, y),
        Op::AddI8(q) if linked::<K>(Kernel::AddI8) => {
            second_like_first()?;
            expect_dims(Operand::Output, same_as_input, y.dims)?;
            for r in q.input_requant {
                check_requant(r)?;
            }
            check_requant(q.output_requant)?;
            check_clamp(q.clamp)
        }
        Op::AffineI8(q) if linked::<K>(Kernel::AffineI8) => {
            weights.span(q.scale, SpanRole::Scale, f32s(c), 4)?;
            weights.span(q.offset, SpanRole::Offset, f32s(c), 4)?;
            weights.channel_requant(&q.requant, c)?;
            check_clamp(q.clamp)?;
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::ClampI8(clamp) if linked::<K>(Kernel::ClampI8) => {
            check_clamp(*clamp)?;
            expect_dims(Operand::Output, same_as_input, y.dims)?;
            same_quant(x, y)
        }
        Op::LookupI8 { table } if linked::<K>(Kernel::LookupI8) => {
            weights.span(*table, SpanRole::Table, 256, 1)?;
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::SoftmaxI16 { exp_hi, exp_lo } if linked::<K>(Kernel::SoftmaxI16) => {
            weights.span(*exp_hi, SpanRole::Table, 256 * 4, 4)?;
            weights.span(*exp_lo, SpanRole::Table, 256 * 4, 4)?;
            expect_dims(Operand::Output, same_as_input, y.dims)?;
            let expected = Quant {
                scale: 1.0 / (1u32 << WIDE_SOFTMAX_OUTPUT_SHIFT) as f32,
                zero_point: 0,
            };
            if y.quant == Some(expected) {
                Ok(())
            } else {
                Err(LayerFault::SoftmaxOutputQuant)
            }
        }
        Op::SoftmaxI8 { exp_table } if linked::<K>(Kernel::SoftmaxI8) => {
            weights.span(*exp_table, SpanRole::Table, 256 * 4, 4)?;
            expect_dims(Operand::Output, same_as_input, y.dims)?;
            let expected = Quant {
                scale: 1.0 / 256.0,
                zero_point: i32::from(SOFTMAX_OUTPUT_ZERO_POINT),
            };
            if y.quant == Some(expected) {
                Ok(())
            } else {
                Err(LayerFault::SoftmaxOutputQuant)
            }
        }
        Op::PadI8 { pad, interior, .. } if linked::<K>(Kernel::PadI8) => {
            expect_dims(Operand::Output, padded([h, w, c], *pad, *interior), y.dims)?;
            same_quant(x, y)
        }
        Op::Concat(concat) if linked::<K>(Kernel::Concat) || linked::<K>(Kernel::ConcatCopyI8) => {
            axis::check_concat(concat, inputs, y)
        }
        Op::ConcatI8(concat) if linked::<K>(Kernel::ConcatI8) => {
            axis::check_concat_i8(concat, inputs, y)
        }
        Op::Slice(slice) if linked::<K>(Kernel::Slice) || linked::<K>(Kernel::SliceI8) => {
            axis::check_slice(slice, x, y)
        }
        Op::Gather(gather) if linked::<K>(Kernel::Gather) || linked::<K>(Kernel::GatherI8) => {
            axis::check_gather(gather, x, y, weights)
        }
        Op::Mul { activation } if linked::<K>(Kernel::Mul) => {
            check_activation(activation)?;
            check_gate(x, inputs.get(1))?;
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::MulI8(q) if linked::<K>(Kernel::MulI8) => {
            check_gate(x, inputs.get(1))?;
            expect_dims(Operand::Output, same_as_input, y.dims)?;
            check_requant(q.requant)?;
            check_clamp(q.clamp)
        }
        Op::PRelu { slope } if linked::<K>(Kernel::PRelu) => {
            let slopes = weights.span(*slope, SpanRole::Scale, f32s(c), 4)?;
            let finite = slopes
                .chunks_exact(4)
                .all(|b| <[u8; 4]>::try_from(b).is_ok_and(|b| f32::from_le_bytes(b).is_finite()));
            if !finite {
                return Err(LayerFault::Param(ParamFault::NotFinite));
            }
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        Op::PReluI8(q) if linked::<K>(Kernel::PReluI8) => {
            check_requant(q.positive)?;
            weights.channel_requant(&q.negative, c)?;
            expect_dims(Operand::Output, same_as_input, y.dims)
        }
        // Only a layer that no linked kernel runs gets here: `check_linked` refused every layer
        // whose kernel is outside `K`, so this is a move of int16 elements, which no kernel
        // takes (`axis::check_concat` and the others give the same fault when linked).
        _ => Err(LayerFault::DType {
            operand: Operand::Input(0),
            expected: DType::I8,
            found: x.dtype,
        }),
    }
}

/// The second operand of a product: the first's dimensions (element-wise), or `[1, 1, C]` with
/// the first's channel count `C` (a gate per channel, repeated over every position).
fn check_gate(x: &TensorDesc, gate: Option<&TensorDesc>) -> Result<(), LayerFault> {
    let Some(gate) = gate else {
        return Err(LayerFault::InputCount {
            expected: 2,
            found: 1,
        });
    };
    let per_channel = [1, 1, u64::from(x.dims[2])];
    if gate.dims.map(u64::from) == per_channel {
        return Ok(());
    }
    expect_dims(Operand::Input(1), x.dims.map(u64::from), gate.dims)
}

/// An integer convolution record (`Conv2dI8`, `Conv2dI16`) against its operands: geometry,
/// weights, pad values in the input's element type, bias, factors, then `clamp` (the record's
/// bounds, checked by the caller) and the accumulator bound of the input's element type.
fn check_integer_conv(
    weights: Weights<'_>,
    (conv, requant): (&Conv2d, &ChannelRequant),
    clamp: Result<(), LayerFault>,
    x: &TensorDesc,
    y: &TensorDesc,
) -> Result<(), LayerFault> {
    check_identity(&conv.activation)?;
    let (out_c, per_out) = conv_geometry(conv, x, y)?;
    let n_weights = out_c.saturating_mul(per_out);
    weights.span(conv.weights, SpanRole::Weights, n_weights, 1)?;
    let elem = x.dtype.size() as u64;
    let pad_values = if conv.pad_values.len == 0 {
        0
    } else {
        u64::from(x.dims[2]) * elem
    };
    weights.span(
        conv.pad_values,
        SpanRole::PadValues,
        pad_values,
        elem as u32,
    )?;
    let bias = weights.i32s(conv.bias, SpanRole::Bias, out_c)?;
    weights.channel_requant(requant, out_c)?;
    clamp?;
    check_accumulator(bias, per_out, x.dtype)
}

/// The weights, bias and factors of an int8 dense layer (int8 or int16 output) for its operands.
/// `quads`, `pairs`: whether the firmware links the kernel of widened weights, of row pairs
/// (constants: without one its layout's checks are not linked, and `check_linked` has refused
/// every such layer already).
fn check_dense_i8(
    weights: Weights<'_>,
    (w, bias, requant): (Span, Span, &ChannelRequant),
    (layout, (quads, pairs)): (DenseLayout, (bool, bool)),
    x: &TensorDesc,
    y: &TensorDesc,
) -> Result<(), LayerFault> {
    let n_out = y.len() as u64;
    match layout {
        DenseLayout::RowsI8 => {
            let n_in = dense_features(w, 1, n_out, x.len() as u64);
            weights.span(w, SpanRole::Weights, n_out.saturating_mul(n_in), 1)?;
        }
        // Unreachable (see `quads`): refused as the layers no linked kernel runs are.
        DenseLayout::QuadsI16 if !quads => {
            return Err(LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::I8,
                found: x.dtype,
            })
        }
        DenseLayout::PairsI8 if !pairs => {
            return Err(LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::I8,
                found: x.dtype,
            })
        }
        DenseLayout::PairsI8 => {
            let n_in = dense_features(w, 1, n_out, x.len() as u64);
            let bytes = weights.span(w, SpanRole::Weights, n_out.saturating_mul(n_in), 4)?;
            let positions = x.len().checked_div(n_in as usize).unwrap_or(0);
            crate::format::check_pairs(
                bytemuck::cast_slice(bytes),
                n_out as usize,
                n_in as usize,
                positions,
            )
            .map_err(|fault| LayerFault::Param(ParamFault::DensePairs(fault)))?;
        }
        DenseLayout::QuadsI16 => {
            let n_in = dense_features(w, 2, n_out, x.len() as u64);
            if n_in % 4 != 0 {
                return Err(LayerFault::Param(ParamFault::DenseQuadInputs {
                    inputs: u32::try_from(n_in).unwrap_or(u32::MAX),
                }));
            }
            let bytes = weights.span(w, SpanRole::Weights, n_out.saturating_mul(2 * n_in), 4)?;
            // The accumulator bound below assumes int8 products: every stored value must be
            // one (the kernels multiply the int16 words as they are).
            let outside = bytes
                .chunks_exact(2)
                .map(|v| i16::from_le_bytes([v[0], v[1]]))
                .enumerate()
                .find(|(_, v)| !(-128..=127).contains(v));
            if let Some((index, value)) = outside {
                return Err(LayerFault::Param(ParamFault::WideWeightRange {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    value,
                }));
            }
        }
    }
    let bias = weights.i32s(bias, SpanRole::Bias, n_out)?;
    weights.channel_requant(requant, n_out)?;
    // Every position's products land in one accumulator.
    check_accumulator(bias, x.len() as u64, x.dtype)
}

/// Input features of a dense layer whose weights span `w` holds `n_out` rows of `elem`-byte
/// values: the row length when the input (`n_x` values) is a whole number of rows (one row per
/// position of a folded global pooling), else `n_x`, so the weights' length check reports the
/// single-position layout.
fn dense_features(w: Span, elem: u32, n_out: u64, n_x: u64) -> u64 {
    // In u32, not u64 (see `window_out`): the operands passed `check_desc`, so their lengths are
    // below 2^32 (their bytes fit the u32 arena); an output longer than the weights leaves no
    // whole row per output either way.
    let (Ok(n_out), Ok(n_x32)) = (u32::try_from(n_out), u32::try_from(n_x)) else {
        return n_x;
    };
    let values = w.len / elem.max(1);
    match values.checked_div(n_out) {
        Some(n_in) if n_in > 0 && values % n_out == 0 && n_x32 % n_in == 0 => u64::from(n_in),
        _ => n_x,
    }
}

/// Two descriptions of one tensor: the same bytes of the arena holding the same element type and
/// quantization. The dimensions may differ: a layer may view a tensor reshaped (a dense layer
/// reads a `[H, W, C]` map as a vector, a flatten is free), and each layer's parameters were
/// checked against the dimensions it is given.
fn same_storage(a: &TensorDesc, b: &TensorDesc) -> bool {
    a.id == b.id
        && a.offset == b.offset
        && a.len() == b.len()
        && a.dtype == b.dtype
        && a.quant == b.quant
        && a.view == b.view
}

/// Every read sees a tensor written before (or the model input) with the same storage, every
/// tensor id is written once, the model input is never written, the model output is written.
pub(super) fn dataflow<K: Kernels>(model: &Model<'_, K>) -> Result<(), LoadError> {
    let info = &model.info;
    let mut output_written = false;
    for (k, layer) in model.layers().enumerate() {
        let index = layer_index(k);
        let bad = |what| LoadError::BadLayer { layer: index, what };
        let out = &layer.output;
        if out.id == info.input.id {
            return Err(bad(LayerFault::WritesModelInput));
        }
        if out.id == info.output.id {
            if !same_storage(out, &info.output) {
                return Err(bad(LayerFault::TensorMismatch { tensor: out.id }));
            }
            output_written = true;
        }
        let inputs = used_inputs(&layer);
        let mut defined = [false; crate::format::MAX_LAYER_INPUTS];
        let mut resolve = |definition: &TensorDesc| -> Result<(), LoadError> {
            for (x, found) in inputs.iter().zip(defined.iter_mut()) {
                if x.id == definition.id {
                    if !same_storage(x, definition) {
                        return Err(bad(LayerFault::TensorMismatch { tensor: x.id }));
                    }
                    *found = true;
                }
            }
            Ok(())
        };
        resolve(&info.input)?;
        for earlier in model.layers().take(k) {
            if earlier.output.id == out.id {
                return Err(bad(LayerFault::DuplicateWrite { tensor: out.id }));
            }
            resolve(&earlier.output)?;
        }
        for (x, found) in inputs.iter().zip(defined) {
            if !found {
                return Err(bad(LayerFault::UninitializedRead { tensor: x.id }));
            }
        }
    }
    if !output_written {
        return Err(LoadError::OutputNeverWritten {
            tensor: info.output.id,
        });
    }
    Ok(())
}

/// The arena plan: no layer overwrites a tensor that a later layer reads or that is the model
/// output. (A layer overwriting its own input unsafely was refused by `records`; one running in
/// place over it may, if no later layer reads it.)
pub(super) fn plan<K: Kernels>(model: &Model<'_, K>) -> Result<(), LoadError> {
    check_lifetime(model, &model.info.input, model.layers(), 0)?;
    let mut later = model.layers();
    let mut next_index = 0usize;
    while let Some(layer) = later.next() {
        next_index += 1;
        check_lifetime(model, &layer.output, later.clone(), next_index)?;
    }
    Ok(())
}

/// `tensor` is produced just before `later`, whose first layer has index `first_index`.
fn check_lifetime<K: Kernels>(
    model: &Model<'_, K>,
    tensor: &TensorDesc,
    later: Layers<'_, K>,
    first_index: usize,
) -> Result<(), LoadError> {
    let mut first_clobber = None;
    let mut over_own_input = false;
    let mut last_read = None;
    for (j, layer) in later.enumerate() {
        let index = first_index + j;
        let inputs = used_inputs(&layer);
        if inputs.iter().any(|x| x.id == tensor.id) {
            last_read = Some(index);
        }
        // A concatenation whose output holds `tensor` in its slot adopts it, it does not write it.
        let adopts = (0..inputs.len())
            .any(|k| in_place::<K>(&layer, k) && inputs.get(k).is_some_and(|x| x.id == tensor.id));
        // A fused layer also writes its band.
        // (Only in a firmware that links them: any other refuses fused layers.)
        let band = links_any::<K>(KernelSet::FUSED)
            && layer.scratch().is_some_and(|b| collide(&b, tensor));
        // A slice in place writes no byte: its output is bytes of its input, which `records`
        // checked (so two slices of one tensor may overlap).
        let writes = !(linked::<K>(Kernel::SliceView) && layer.is_view_slice())
            && collide(&layer.output, tensor);
        if first_clobber.is_none() && !adopts && (writes || band) {
            first_clobber = Some(index);
            // A layer that reads `tensor` and writes over it runs in place: `records` proved
            // that each of its output rows lands only on rows it has read for the last time.
            over_own_input = !band && inputs.iter().any(|x| x.id == tensor.id);
        }
    }
    if let Some(clobber) = first_clobber {
        let read_after = |r: usize| r > clobber || (r == clobber && !over_own_input);
        let needed_later = tensor.id == model.info.output.id || last_read.is_some_and(read_after);
        if needed_later {
            return Err(LoadError::BadLayer {
                layer: layer_index(clobber),
                what: LayerFault::ClobbersLiveTensor { tensor: tensor.id },
            });
        }
    }
    Ok(())
}
