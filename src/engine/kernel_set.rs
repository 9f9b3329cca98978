//! The kernels a firmware links: a compile-time set the engine consults before every dispatch.
//!
//! The engine dispatches on records read at run time, so without a restriction every kernel of
//! both precisions and every element-type pair is reachable and linked (about 110 KB of code on
//! a Cortex-M4F, docs/BENCHMARKS.md). A [`Kernels`] type names a [`KernelSet`] as an associated
//! `const`; a [`Model`] loaded with it ([`Model::new_checked_with_kernels`]) refuses, at load, a
//! layer whose kernel is outside the set ([`LoadError::KernelNotLinked`]), and the engine guards
//! each dispatch with the constant, so the compiler removes every kernel outside it.
//!
//! The set a blob needs is [`KernelSet::of`] (a host `build.rs` can compute it from the blob the
//! firmware embeds: `examples/firmware-minimal/build.rs`), and `icefold inspect` prints it.
//! [`DefaultKernels`] is every kernel of the precisions the crate features `f32` and `int8` (both
//! default) enable: what [`Model::new_checked`] uses.
//!
//! [`LoadError::KernelNotLinked`]: crate::LoadError::KernelNotLinked

use core::marker::PhantomData;

use crate::format::{DType, DenseLayout, Layer, Op};
use crate::kernels::fast::conv::{depthwise_by_pixel, regular_loop, ColumnBuffers, RegularLoop};
use crate::kernels::fast::requant::Bounds;
use crate::model::Model;

macro_rules! kernels {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// One kernel the engine can dispatch to: an operation with its element types (precision,
        /// and for the 16×8 convolution the input and output widths).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[non_exhaustive]
        #[repr(u8)]
        pub enum Kernel {
            $($(#[$doc])* $name,)*
        }

        impl Kernel {
            /// Every kernel, f32 first, in the order of their bits.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$name,)*];

            /// The variant's name, as Rust code names it (`Kernel::Conv2dI8`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Kernel::$name => stringify!($name),)*
                }
            }
        }
    };
}

kernels! {
    /// f32 convolution (`Op::Conv2d`).
    Conv2d,
    /// f32 fully connected (`Op::Dense`).
    Dense,
    /// f32 pooling (`Op::Pool`).
    Pool,
    /// f32 addition (`Op::Add`).
    Add,
    /// f32 per-channel affine (`Op::Affine`).
    Affine,
    /// f32 activation (`Op::Activation`).
    Activation,
    /// f32 softmax (`Op::Softmax`).
    Softmax,
    /// f32 padding (`Op::Pad`).
    Pad,
    /// f32 product of two activations (`Op::Mul`).
    Mul,
    /// f32 PReLU (`Op::PRelu`).
    PRelu,
    /// `Op::Transpose` of f32 tensors.
    Transpose,
    /// `Op::Concat` of f32 tensors.
    Concat,
    /// `Op::Slice` of an f32 tensor.
    Slice,
    /// `Op::Gather` of an f32 tensor.
    Gather,
    /// f32 convolution fused with the pooling that reads it (`Op::Conv2dPool`).
    Conv2dPool,
    /// int8 convolution (`Op::Conv2dI8`) other than depthwise: `groups` 1, or another grouping
    /// (the reference kernel's).
    Conv2dI8,
    /// int8 fully connected (`Op::DenseI8`).
    DenseI8,
    /// int8 fully connected with an int16 output (`Op::DenseI8Wide`).
    DenseI8Wide,
    /// int8 fully connected whose weights the tool widened to int16 (`Op::DenseI8` with
    /// `DenseLayout::QuadsI16`): a kernel of its own, so that a firmware links only the dense
    /// loops its model's layouts need.
    DenseI8Quads,
    /// int8 fully connected with an int16 output and widened weights (`Op::DenseI8Wide` with
    /// `DenseLayout::QuadsI16`).
    DenseI8WideQuads,
    /// int8 fully connected with its weights in row pairs (`Op::DenseI8` with
    /// `DenseLayout::PairsI8`).
    DenseI8Pairs,
    /// int8 fully connected with an int16 output and its weights in row pairs
    /// (`Op::DenseI8Wide` with `DenseLayout::PairsI8`).
    DenseI8WidePairs,
    /// int8 pooling (`Op::PoolI8`).
    PoolI8,
    /// int8 addition (`Op::AddI8`).
    AddI8,
    /// int8 per-channel affine (`Op::AffineI8`).
    AffineI8,
    /// int8 clamp (`Op::ClampI8`).
    ClampI8,
    /// int8 table lookup (`Op::LookupI8`).
    LookupI8,
    /// int8 softmax (`Op::SoftmaxI8`).
    SoftmaxI8,
    /// int16 softmax (`Op::SoftmaxI16`).
    SoftmaxI16,
    /// int8 padding (`Op::PadI8`).
    PadI8,
    /// int8 product of two activations (`Op::MulI8`).
    MulI8,
    /// int8 PReLU (`Op::PReluI8`).
    PReluI8,
    /// int8 concatenation that rescales (`Op::ConcatI8`).
    ConcatI8,
    /// `Op::Concat` of int8 tensors (one quantization: copies).
    ConcatCopyI8,
    /// `Op::Slice` of an int8 tensor.
    SliceI8,
    /// `Op::Gather` of an int8 tensor.
    GatherI8,
    /// `Op::Transpose` of int8 tensors.
    TransposeI8,
    /// `Op::Transpose` of int16 tensors (an int16 model input).
    TransposeI16,
    /// 16×8 convolution other than depthwise, int8 in, int16 out (`Op::Conv2dI16`).
    Conv2dI8ToI16,
    /// 16×8 convolution other than depthwise, int16 in, int16 out (`Op::Conv2dI16`).
    Conv2dI16ToI16,
    /// 16×8 convolution other than depthwise, int16 in, int8 out (`Op::Conv2dI16`).
    Conv2dI16ToI8,
    /// int8 depthwise convolution (`Op::Conv2dI8` with `groups` = input = output channels > 1).
    DepthwiseI8,
    /// 16×8 depthwise convolution, int8 in, int16 out.
    DepthwiseI8ToI16,
    /// 16×8 depthwise convolution, int16 in, int16 out.
    DepthwiseI16ToI16,
    /// 16×8 depthwise convolution, int16 in, int8 out.
    DepthwiseI16ToI8,
    /// int8 convolution (any grouping) fused with the int8 pooling that reads it
    /// (`Op::Conv2dPoolI8`).
    Conv2dPoolI8,
    /// 16×8 convolution (int16 in, int8 out) fused with the int8 pooling that reads it
    /// (`Op::Conv2dPoolI16`).
    Conv2dPoolI16ToI8,
    /// Not a kernel of one operation but the engine's band driver: a layer written over its own
    /// input, run a band of output rows at a time (`format::in_place`), any precision.
    InPlace,
    /// The model input transposed as the engine writes it (`ModelInfo::input_transpose`).
    InputTranspose,
    /// A `Slice` whose output is a view of its input (`Layer::is_view_slice`): it moves
    /// nothing, but its record is decoded and checked, and its readers read at a pixel stride.
    SliceView,
    /// Not a kernel of its own but a class of the fast loops of the regular (`groups` 1)
    /// convolutions (`kernels::fast::conv::RegularLoop`), for an int8 input, any output:
    /// whole receptive fields gathered (first layers, few input channels; inputs sliced in
    /// place). A set that names no loop class links every loop of its convolution kernels;
    /// one that names some links only those, and runs a layer whose loop is not linked by the
    /// reference kernel (the same bytes, more time).
    ConvColumnsI8,
    /// The receptive-field loops for an int16 input.
    ConvColumnsI16,
    /// The receptive-field loops with buffers for a whole layer's weights (DSP cores: first
    /// layers whose weights do not fit the small ones, DS-CNN's), for the input types whose
    /// regular kernels the set links.
    ConvColumnsWhole,
    /// The four-channel window loops (DSP cores) for an int8 input, any output.
    ConvQuadsI8,
    /// The four-channel window loops (DSP cores) for an int16 input, any output.
    ConvQuadsI16,
    /// The pointwise loops on int16 words (1x1 layers, and on DSP cores the strided 1x1 layers
    /// gathered as such), any input, int8 output.
    ConvPointwiseToI8,
    /// The pointwise loops, int16 output.
    ConvPointwiseToI16,
    /// The channel-pair pixel loop (every other regular convolution), int8 in, int8 out. On
    /// cores without the DSP extension it also runs the layers the four-channel and strided
    /// loops take on the others, and is linked with every regular kernel.
    ConvPixelsI8ToI8,
    /// The pixel loop, int8 in, int16 out.
    ConvPixelsI8ToI16,
    /// The pixel loop, int16 in, int16 out.
    ConvPixelsI16ToI16,
    /// The pixel loop, int16 in, int8 out.
    ConvPixelsI16ToI8,
    /// Not a kernel but a class of the fast depthwise loops, for every element-type pair the set
    /// links: the pixel loop of narrow maps (DSP cores, int16 inputs). As with the regular
    /// loops, a set that names no class links every loop.
    DepthwisePixel,
    /// The other depthwise loops (the 3x3 row kernel, channel pairs, one channel at a time);
    /// cores without the DSP extension run every depthwise layer by them, and link them with
    /// every depthwise kernel.
    DepthwiseRows,
}

/// The f32 kernels: the variants before the first int8 one.
const F32_KERNELS: u32 = Kernel::Conv2dI8 as u32;

impl Kernel {
    /// The kernel that runs `layer`, from its operation and its operands' element types; `None`
    /// for combinations no kernel runs (the loader refuses them). A slice in place
    /// (`Layer::is_view_slice`) moves nothing: its "kernel" is [`Kernel::SliceView`], the
    /// decoding and checks of its record.
    pub fn of(layer: &Layer) -> Option<Kernel> {
        let x = layer.inputs.first()?.dtype;
        let y = layer.output.dtype;
        let by_type = |f32: Kernel, i8: Kernel, i16: Option<Kernel>| match y {
            DType::F32 => Some(f32),
            DType::I8 => Some(i8),
            DType::I16 => i16,
        };
        Some(match &layer.op {
            Op::Conv2d(_) => Kernel::Conv2d,
            Op::Dense(_) => Kernel::Dense,
            Op::Pool(_) => Kernel::Pool,
            Op::Add { .. } => Kernel::Add,
            Op::Affine(_) => Kernel::Affine,
            Op::Activation(_) => Kernel::Activation,
            Op::Softmax => Kernel::Softmax,
            Op::Pad(_) => Kernel::Pad,
            Op::Mul { .. } => Kernel::Mul,
            Op::PRelu { .. } => Kernel::PRelu,
            Op::Transpose(_) => by_type(
                Kernel::Transpose,
                Kernel::TransposeI8,
                Some(Kernel::TransposeI16),
            )?,
            Op::Concat(_) => by_type(Kernel::Concat, Kernel::ConcatCopyI8, None)?,
            // A slice in place (its output a view of its input) moves nothing.
            Op::Slice(_) if layer.is_view_slice() => Kernel::SliceView,
            Op::Slice(_) => by_type(Kernel::Slice, Kernel::SliceI8, None)?,
            Op::Gather(_) => by_type(Kernel::Gather, Kernel::GatherI8, None)?,
            Op::Conv2dI8(p) if depthwise(&p.conv, layer) => Kernel::DepthwiseI8,
            Op::Conv2dI8(_) => Kernel::Conv2dI8,
            Op::DenseI8(p) if p.layout == DenseLayout::QuadsI16 => Kernel::DenseI8Quads,
            Op::DenseI8(p) if p.layout == DenseLayout::PairsI8 => Kernel::DenseI8Pairs,
            Op::DenseI8(_) => Kernel::DenseI8,
            Op::DenseI8Wide(p) if p.layout == DenseLayout::QuadsI16 => Kernel::DenseI8WideQuads,
            Op::DenseI8Wide(p) if p.layout == DenseLayout::PairsI8 => Kernel::DenseI8WidePairs,
            Op::DenseI8Wide(_) => Kernel::DenseI8Wide,
            Op::PoolI8(_) => Kernel::PoolI8,
            Op::AddI8(_) => Kernel::AddI8,
            Op::AffineI8(_) => Kernel::AffineI8,
            Op::ClampI8(_) => Kernel::ClampI8,
            Op::LookupI8 { .. } => Kernel::LookupI8,
            Op::SoftmaxI8 { .. } => Kernel::SoftmaxI8,
            Op::SoftmaxI16 { .. } => Kernel::SoftmaxI16,
            Op::PadI8 { .. } => Kernel::PadI8,
            Op::MulI8(_) => Kernel::MulI8,
            Op::PReluI8(_) => Kernel::PReluI8,
            Op::ConcatI8(_) => Kernel::ConcatI8,
            Op::Conv2dPool(_) => Kernel::Conv2dPool,
            Op::Conv2dPoolI8(_) => Kernel::Conv2dPoolI8,
            Op::Conv2dPoolI16(_) => Kernel::Conv2dPoolI16ToI8,
            Op::Conv2dI16(p) => match (x, y, depthwise(&p.conv, layer)) {
                (DType::I8, DType::I16, false) => Kernel::Conv2dI8ToI16,
                (DType::I16, DType::I16, false) => Kernel::Conv2dI16ToI16,
                (DType::I16, DType::I8, false) => Kernel::Conv2dI16ToI8,
                (DType::I8, DType::I16, true) => Kernel::DepthwiseI8ToI16,
                (DType::I16, DType::I16, true) => Kernel::DepthwiseI16ToI16,
                (DType::I16, DType::I8, true) => Kernel::DepthwiseI16ToI8,
                _ => return None,
            },
        })
    }

    /// Whether this kernel computes in f32 (the rest are integer-only).
    pub const fn is_f32(self) -> bool {
        (self as u32) < F32_KERNELS
    }

    /// The kernel's bit in a [`KernelSet`].
    const fn bit(self) -> u64 {
        1 << self as u32
    }

    /// The loop classes of a regular convolution kernel, in the order of [`RegularLoop`]'s
    /// columns (small buffers), pointwise, quads, pixels, then the columns' whole-layer buffers;
    /// `None` for the other kernels (a fused convolution links every loop).
    const fn loops(self) -> Option<[Kernel; 5]> {
        use Kernel::*;
        let whole = ConvColumnsWhole;
        Some(match self {
            Conv2dI8 => [
                ConvColumnsI8,
                ConvPointwiseToI8,
                ConvQuadsI8,
                ConvPixelsI8ToI8,
                whole,
            ],
            Conv2dI8ToI16 => [
                ConvColumnsI8,
                ConvPointwiseToI16,
                ConvQuadsI8,
                ConvPixelsI8ToI16,
                whole,
            ],
            Conv2dI16ToI16 => [
                ConvColumnsI16,
                ConvPointwiseToI16,
                ConvQuadsI16,
                ConvPixelsI16ToI16,
                whole,
            ],
            Conv2dI16ToI8 => [
                ConvColumnsI16,
                ConvPointwiseToI8,
                ConvQuadsI16,
                ConvPixelsI16ToI8,
                whole,
            ],
            _ => return None,
        })
    }

    /// The classes of the loop `taken` of this regular convolution kernel (one, or two for
    /// the receptive-field loops with both sizes of buffers).
    const fn loop_classes(self, taken: RegularLoop) -> Option<[Kernel; 2]> {
        let Some([columns, pointwise, quads, pixels, whole]) = self.loops() else {
            return None;
        };
        Some(match taken {
            RegularLoop::Columns(ColumnBuffers::Small) => [columns; 2],
            RegularLoop::Columns(ColumnBuffers::Whole) => [whole; 2],
            RegularLoop::Columns(ColumnBuffers::Both) => [columns, whole],
            RegularLoop::Pointwise | RegularLoop::Strided => [pointwise; 2],
            RegularLoop::Quads => [quads; 2],
            RegularLoop::Pixels => [pixels; 2],
        })
    }
}

/// The depthwise loop class `layer` reaches if it is a depthwise convolution (the pixel loop's
/// own test of the layer, `kernels::fast::conv::depthwise_by_pixel`), else the loop classes it
/// reaches if it is a regular convolution the fast loops take (the
/// dispatch's own choice, `kernels::fast::conv::regular_loop`, on a core with the DSP tiles,
/// its input assumed word-aligned as the planner places tensors).
fn loop_classes(layer: &Layer, kernel: Kernel) -> Option<[Kernel; 2]> {
    let (conv, [min, max]) = match &layer.op {
        Op::Conv2dI8(p) => (&p.conv, [p.clamp.min, p.clamp.max].map(i32::from)),
        Op::Conv2dI16(p) => (&p.conv, [p.clamp.min, p.clamp.max].map(i32::from)),
        _ => return None,
    };
    let x = layer.inputs.first()?;
    let g = super::conv_geometry_into(conv, x, &layer.output);
    let dims = (x.dims.map(usize::from), layer.output.dims.map(usize::from));
    let wide = x.dtype == DType::I16;
    if depthwise(conv, layer) {
        // As the engine's output stage reads the record (`Bounds::from`).
        let bounds = Bounds {
            zero_point: layer.output.quant?.zero_point,
            min,
            max,
        };
        let class = if depthwise_by_pixel(&g, dims, &bounds, wide) {
            Kernel::DepthwisePixel
        } else {
            Kernel::DepthwiseRows
        };
        return Some([class; 2]);
    }
    if conv.groups != 1 {
        return None;
    }
    let taken = regular_loop(&g, dims, (wide, wide), true, true)?;
    kernel.loop_classes(taken)
}

/// Whether an int8 convolution runs the depthwise loops (`kernels::fast::conv::run`'s choice):
/// as many groups as input and output channels, more than one.
fn depthwise(conv: &crate::format::Conv2d, layer: &Layer) -> bool {
    let groups = conv.groups;
    let in_c = layer.inputs.first().map_or(0, |x| x.dims[2]);
    groups != 1 && groups == in_c && groups == layer.output.dims[2]
}

/// A set of [`Kernel`]s, as bits: `const` so that a firmware's set is known at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KernelSet(u64);

impl KernelSet {
    /// No kernel.
    pub const EMPTY: KernelSet = KernelSet(0);
    /// Every f32 kernel.
    pub const F32: KernelSet = KernelSet((1 << F32_KERNELS) - 1);
    /// The engine's parts that serve any precision: the band driver of layers written over
    /// their input, the transposition of the model input, slices in place.
    pub const PLAN: KernelSet =
        KernelSet(Kernel::InPlace.bit() | Kernel::InputTranspose.bit() | Kernel::SliceView.bit());
    /// Every integer kernel (int8, and the int16 ones of the 16×8 convolutions and output heads).
    pub const INT8: KernelSet =
        KernelSet(((1 << Kernel::ALL.len()) - 1) & !Self::F32.0 & !Self::PLAN.0);
    /// Every kernel.
    pub const ALL: KernelSet = Self::F32.union(Self::INT8).union(Self::PLAN);
    /// The operations along one axis (`engine::moves`): a firmware without any of them does not
    /// link their dispatch.
    pub const AXIS: KernelSet = KernelSet::EMPTY
        .with(Kernel::Concat)
        .with(Kernel::Slice)
        .with(Kernel::Gather)
        .with(Kernel::ConcatI8)
        .with(Kernel::ConcatCopyI8)
        .with(Kernel::SliceI8)
        .with(Kernel::GatherI8);
    /// The classes of the regular convolutions' fast loops.
    pub const CONV_LOOPS: KernelSet = KernelSet::EMPTY
        .with(Kernel::ConvColumnsI8)
        .with(Kernel::ConvColumnsI16)
        .with(Kernel::ConvColumnsWhole)
        .with(Kernel::ConvQuadsI8)
        .with(Kernel::ConvQuadsI16)
        .with(Kernel::ConvPointwiseToI8)
        .with(Kernel::ConvPointwiseToI16)
        .with(Kernel::ConvPixelsI8ToI8)
        .with(Kernel::ConvPixelsI8ToI16)
        .with(Kernel::ConvPixelsI16ToI16)
        .with(Kernel::ConvPixelsI16ToI8)
        .with(Kernel::DepthwisePixel)
        .with(Kernel::DepthwiseRows);
    /// The convolutions fused with a pooling (`engine::fused`).
    pub const FUSED: KernelSet = KernelSet::EMPTY
        .with(Kernel::Conv2dPool)
        .with(Kernel::Conv2dPoolI8)
        .with(Kernel::Conv2dPoolI16ToI8);

    /// This set and `kernel`.
    #[must_use]
    pub const fn with(self, kernel: Kernel) -> KernelSet {
        KernelSet(self.0 | kernel.bit())
    }

    /// The kernels of both sets.
    #[must_use]
    pub const fn union(self, other: KernelSet) -> KernelSet {
        KernelSet(self.0 | other.0)
    }

    /// The kernels of this set that are not in `other`.
    #[must_use]
    pub const fn difference(self, other: KernelSet) -> KernelSet {
        KernelSet(self.0 & !other.0)
    }

    /// The kernels in both sets.
    #[must_use]
    pub const fn intersection(self, other: KernelSet) -> KernelSet {
        KernelSet(self.0 & other.0)
    }

    /// Whether `kernel` is in the set. Inlined so that a constant set folds each engine guard.
    #[inline(always)]
    pub const fn contains(self, kernel: Kernel) -> bool {
        self.0 & kernel.bit() != 0
    }

    /// Whether the set has no kernel.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kernels in the set, in the order of [`Kernel::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Kernel> {
        Kernel::ALL
            .iter()
            .copied()
            .filter(move |k| self.contains(*k))
    }

    /// The kernels `model`'s layers run, with the engine parts it needs ([`KernelSet::PLAN`])
    /// and the classes of the fast convolution loops its layers reach: the smallest set that
    /// loads it and runs it as fast as every kernel does.
    pub fn of<K: Kernels>(model: &Model<'_, K>) -> KernelSet {
        let set = model.layers().fold(KernelSet::EMPTY, |set, layer| {
            let kernel = Kernel::of(&layer);
            let set = kernel.map_or(set, |k| set.with(k));
            let set = kernel
                .and_then(|k| loop_classes(&layer, k))
                .map_or(set, |[a, b]| set.with(a).with(b));
            if layer.writes_over_input() {
                set.with(Kernel::InPlace)
            } else {
                set
            }
        });
        if model.info().input_transpose.is_some() {
            set.with(Kernel::InputTranspose)
        } else {
            set
        }
    }
}

impl FromIterator<Kernel> for KernelSet {
    fn from_iter<I: IntoIterator<Item = Kernel>>(kernels: I) -> KernelSet {
        kernels.into_iter().fold(KernelSet::EMPTY, KernelSet::with)
    }
}

/// The kernels a firmware links, named by a type: implement it with the set of the firmware's
/// model and load with [`Model::new_checked_with_kernels`].
///
/// ```
/// use icefold::engine::{Kernel, KernelSet, Kernels};
///
/// /// What an all-int8 ResNet-8 runs (`icefold inspect` prints a blob's set as such code).
/// struct ModelKernels;
/// impl Kernels for ModelKernels {
///     const SET: KernelSet = KernelSet::EMPTY
///         .with(Kernel::TransposeI8)
///         .with(Kernel::Conv2dI8)
///         .with(Kernel::AddI8)
///         .with(Kernel::DenseI8);
/// }
/// assert!(!ModelKernels::SET.contains(Kernel::Conv2d));
/// ```
pub trait Kernels {
    /// The kernels. A constant: the engine's guards fold and the others are not linked.
    const SET: KernelSet;
}

/// Every kernel of the enabled precisions (crate features `f32` and `int8`, both default): the
/// set of [`Model::new_checked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DefaultKernels;

impl Kernels for DefaultKernels {
    const SET: KernelSet = {
        let f32 = if cfg!(feature = "f32") {
            KernelSet::F32
        } else {
            KernelSet::EMPTY
        };
        let int8 = if cfg!(feature = "int8") {
            KernelSet::INT8
        } else {
            KernelSet::EMPTY
        };
        f32.union(int8).union(KernelSet::PLAN)
    };
}

/// The loops of the fast int8 convolution that `K` links, for the element types whose regular
/// and depthwise kernels are `Kernel::ALL[REGULAR]` and `Kernel::ALL[DEPTHWISE]`.
pub(crate) struct ConvLoops<K, const REGULAR: u8, const DEPTHWISE: u8>(PhantomData<K>);

impl<K: Kernels, const REGULAR: u8, const DEPTHWISE: u8> crate::kernels::fast::conv::Loops
    for ConvLoops<K, REGULAR, DEPTHWISE>
{
    const REGULAR: bool = linked::<K>(Kernel::ALL[REGULAR as usize]);
    const DEPTHWISE: bool = linked::<K>(Kernel::ALL[DEPTHWISE as usize]);
    // Cores without the tiles run every receptive-field layer with the small buffers.
    const COLUMNS: bool = Self::REGULAR
        && (loop_linked::<K>(Kernel::ALL[REGULAR as usize], 0)
            || (!crate::kernels::fast::conv::TILES && Self::COLUMNS_WHOLE));
    const COLUMNS_WHOLE: bool = Self::REGULAR && loop_linked::<K>(Kernel::ALL[REGULAR as usize], 4);
    const POINTWISE: bool = Self::REGULAR && loop_linked::<K>(Kernel::ALL[REGULAR as usize], 1);
    const QUADS: bool = Self::REGULAR && loop_linked::<K>(Kernel::ALL[REGULAR as usize], 2);
    // Cores without the tiles run the four-channel and strided loops' layers by the pixel loop.
    const PIXELS: bool = Self::REGULAR
        && (!crate::kernels::fast::conv::TILES
            || loop_linked::<K>(Kernel::ALL[REGULAR as usize], 3));
    const DEPTHWISE_PIXEL: bool = Self::DEPTHWISE
        && depthwise_linked::<K>(Kernel::ALL[DEPTHWISE as usize], Kernel::DepthwisePixel);
    const DEPTHWISE_ROWS: bool = Self::DEPTHWISE
        && (!crate::kernels::fast::conv::PIXEL_SET_UP
            || depthwise_linked::<K>(Kernel::ALL[DEPTHWISE as usize], Kernel::DepthwiseRows));
}

/// Whether `K` links the depthwise loops of `class` for the depthwise kernel `depthwise`: yes
/// if `K` names the class or no class at all, or the kernel is a fused one (every loop).
const fn depthwise_linked<K: Kernels>(depthwise: Kernel, class: Kernel) -> bool {
    let fused = matches!(depthwise, Kernel::Conv2dPoolI8 | Kernel::Conv2dPoolI16ToI8);
    fused || K::SET.intersection(KernelSet::CONV_LOOPS).is_empty() || K::SET.contains(class)
}

/// Whether `K` links loop `i` of the regular kernel `regular` ([`Kernel::loops`]): yes if `K`
/// names that class, or names no class at all (a set written before the classes, or by hand
/// with the kernels only, keeps every loop), or `regular` has no classes.
const fn loop_linked<K: Kernels>(regular: Kernel, i: usize) -> bool {
    match regular.loops() {
        Some(classes) => {
            K::SET.intersection(KernelSet::CONV_LOOPS).is_empty() || K::SET.contains(classes[i])
        }
        None => true,
    }
}

/// Whether `K` links `kernel` (a constant after inlining: the engine's dispatch guards).
#[inline(always)]
pub(crate) const fn linked<K: Kernels>(kernel: Kernel) -> bool {
    K::SET.contains(kernel)
}

/// Whether the firmware links any kernel of `set` (a constant: a guard on it removes code).
#[inline(always)]
pub(crate) const fn links_any<K: Kernels>(set: KernelSet) -> bool {
    !K::SET.intersection(set).is_empty()
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;

    use super::*;
    use crate::format::TensorDesc;
    use crate::testutil::*;
    use crate::LoadError;

    /// The operations of `testutil::tiny`, as written there (conv, pool, affine, ReLU, add,
    /// transpose, pad, sigmoid, dense, softmax): all f32.
    struct Tiny;
    impl Kernels for Tiny {
        const SET: KernelSet = KernelSet::EMPTY
            .with(Kernel::Conv2d)
            .with(Kernel::Pool)
            .with(Kernel::Affine)
            .with(Kernel::Activation)
            .with(Kernel::Add)
            .with(Kernel::Transpose)
            .with(Kernel::Pad)
            .with(Kernel::Dense)
            .with(Kernel::Softmax);
    }

    /// `Tiny` without the softmax of its last layer (9).
    struct TinyButSoftmax;
    impl Kernels for TinyButSoftmax {
        const SET: KernelSet = KernelSet(Tiny::SET.0 & !Kernel::Softmax.bit());
    }

    /// The f32 kernels only: an f32-only firmware.
    struct F32Only;
    impl Kernels for F32Only {
        const SET: KernelSet = KernelSet::F32;
    }

    /// The integer kernels only: an int8-only firmware.
    struct Int8Only;
    impl Kernels for Int8Only {
        const SET: KernelSet = KernelSet::INT8;
    }

    #[test]
    fn the_set_of_a_model_is_the_kernels_of_its_layers() {
        let blob = tiny().blob();
        let model = crate::Model::new_checked(blob.bytes()).unwrap();
        assert_eq!(KernelSet::of(&model), Tiny::SET);
        assert!(Tiny::SET.iter().all(Kernel::is_f32));
        assert_eq!(Tiny::SET.iter().count(), 9);
    }

    #[test]
    fn a_model_runs_the_same_on_exactly_its_kernels() {
        let blob = tiny().blob();
        let all = crate::Model::new_checked(blob.bytes()).unwrap();
        let only = crate::Model::<Tiny>::new_checked_with_kernels(blob.bytes()).unwrap();
        let x = values(all.input().len(), 3);
        let mut arena = Blob::zeroed(all.arena_bytes());
        let (mut want, mut got) = ([0.0f32; 5], [0.0f32; 5]);
        all.run_f32(arena.bytes_mut(), &x, &mut want).unwrap();
        only.run_f32(arena.bytes_mut(), &x, &mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn a_layer_outside_the_set_is_refused_by_name() {
        let blob = tiny().blob();
        let refused = crate::Model::<TinyButSoftmax>::new_checked_with_kernels(blob.bytes());
        let err = refused.unwrap_err();
        assert_eq!(
            err,
            LoadError::KernelNotLinked {
                layer: 9,
                kernel: Kernel::Softmax
            }
        );
        let message = format!("{err}");
        for what in ["layer 9", "Softmax", "rebuild", "icefold inspect"] {
            assert!(message.contains(what), "{what} not in: {message}");
        }
        // An int8-only firmware refuses an f32 model at its first layer.
        let refused = crate::Model::<Int8Only>::new_checked_with_kernels(blob.bytes());
        assert_eq!(
            refused.unwrap_err(),
            LoadError::KernelNotLinked {
                layer: 0,
                kernel: Kernel::Conv2d
            }
        );
        // An f32-only firmware refuses an int8 model at its first layer, a convolution whose
        // kernel (regular or depthwise) its record does not say before the operands: the
        // operation is named, undecoded.
        let blob = crate::model::int8_tests::int8_model().blob();
        let f32_only = crate::Model::<F32Only>::new_checked_with_kernels(blob.bytes());
        let err = f32_only.unwrap_err();
        assert_eq!(
            err,
            LoadError::OperationNotLinked {
                layer: 0,
                operation: "conv2d_i8"
            }
        );
        let message = format!("{err}");
        for what in ["layer 0", "conv2d_i8", "rebuild", "icefold inspect"] {
            assert!(message.contains(what), "{what} not in: {message}");
        }
    }

    /// A convolution layer of `groups` groups from `[1, 1, in_c]` to `[1, 1, out_c]`, with the
    /// given element types (`Conv2dI8` for int8 to int8, else the 16×8 record).
    fn conv(groups: u16, in_c: u16, out_c: u16, types: (DType, DType)) -> Layer {
        let conv = crate::format::Conv2d {
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0; 4],
            groups,
            weights: Default::default(),
            bias: Default::default(),
            pad_values: Default::default(),
            activation: crate::format::Activation::Identity,
        };
        let requant = crate::format::ChannelRequant {
            multipliers: Default::default(),
            shifts: Default::default(),
        };
        let op = if types == (DType::I8, DType::I8) {
            let clamp = crate::quant::Clamp::FULL;
            Op::Conv2dI8(crate::format::Conv2dI8 {
                conv,
                requant,
                clamp,
            })
        } else {
            let clamp = crate::quant::ClampI16::FULL;
            Op::Conv2dI16(crate::format::Conv2dI16 {
                conv,
                requant,
                clamp,
            })
        };
        let x = TensorDesc {
            dtype: types.0,
            ..desc(0, 0, [1, 1, in_c])
        };
        let y = TensorDesc {
            dtype: types.1,
            ..desc(1, 64, [1, 1, out_c])
        };
        layer(op, x, y)
    }

    #[test]
    fn depthwise_convolutions_have_their_own_kernels() {
        use DType::{I16, I8};
        // As many groups as input and output channels, more than one: the depthwise loops.
        assert_eq!(
            Kernel::of(&conv(8, 8, 8, (I8, I8))),
            Some(Kernel::DepthwiseI8)
        );
        assert_eq!(
            Kernel::of(&conv(8, 8, 8, (I8, I16))),
            Some(Kernel::DepthwiseI8ToI16)
        );
        assert_eq!(
            Kernel::of(&conv(8, 8, 8, (I16, I16))),
            Some(Kernel::DepthwiseI16ToI16)
        );
        assert_eq!(
            Kernel::of(&conv(8, 8, 8, (I16, I8))),
            Some(Kernel::DepthwiseI16ToI8)
        );
        // One group (even of one channel), or groups of several channels: the regular kernel.
        assert_eq!(Kernel::of(&conv(1, 1, 1, (I8, I8))), Some(Kernel::Conv2dI8));
        assert_eq!(
            Kernel::of(&conv(1, 8, 8, (I16, I8))),
            Some(Kernel::Conv2dI16ToI8)
        );
        assert_eq!(Kernel::of(&conv(2, 8, 8, (I8, I8))), Some(Kernel::Conv2dI8));
        assert_eq!(
            Kernel::of(&conv(8, 8, 16, (I8, I16))),
            Some(Kernel::Conv2dI8ToI16)
        );
        // No 16x8 kernel reads and writes int8.
        let narrow = conv(1, 8, 8, (I8, I8));
        let Op::Conv2dI8(p) = narrow.op else {
            unreachable!()
        };
        let wide_op = Op::Conv2dI16(crate::format::Conv2dI16 {
            conv: p.conv,
            requant: p.requant,
            clamp: crate::quant::ClampI16::FULL,
        });
        assert_eq!(
            Kernel::of(&Layer {
                op: wide_op,
                ..narrow
            }),
            None
        );
    }

    /// Every integer kernel and engine part, of the convolution loops only the whole-layer
    /// receptive fields: what a firmware built for another model links.
    struct OtherLoops;
    impl Kernels for OtherLoops {
        const SET: KernelSet = KernelSet::INT8
            .union(KernelSet::PLAN)
            .difference(KernelSet::CONV_LOOPS)
            .with(Kernel::ConvColumnsWhole);
    }

    #[test]
    fn a_convolution_whose_loop_is_not_linked_runs_by_the_reference_kernel() {
        let blob = crate::model::int8_tests::int8_model().blob();
        let every = crate::Model::new_checked(blob.bytes()).unwrap();
        // Its 3x3 convolution of two int8 input channels gathers receptive fields (small
        // buffers): the only loop class of its set.
        assert_eq!(
            KernelSet::of(&every).intersection(KernelSet::CONV_LOOPS),
            KernelSet::EMPTY.with(Kernel::ConvColumnsI8)
        );
        // A firmware that links its kernels but another class loads it and computes the same
        // bytes (the reference kernel, or the host's AVX2 loops, runs the convolution).
        let other = crate::Model::<OtherLoops>::new_checked_with_kernels(blob.bytes()).unwrap();
        let x: std::vec::Vec<i8> = (0..every.input().len())
            .map(|i| (i * 37 % 251) as i8)
            .collect();
        let mut arena = Blob::zeroed(every.arena_bytes());
        let mut want = std::vec![0i8; every.output().len()];
        let mut got = want.clone();
        every.run_i8(arena.bytes_mut(), &x, &mut want).unwrap();
        other.run_i8(arena.bytes_mut(), &x, &mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn loop_classes_of_a_set_that_names_none_are_every_loop() {
        use crate::kernels::fast::conv::Loops;
        type ResNet8Loops<K> =
            ConvLoops<K, { Kernel::Conv2dI8 as u8 }, { Kernel::DepthwiseI8 as u8 }>;
        // The doc example's set (kernels only, no class): every loop of its convolutions.
        struct KernelsOnly;
        impl Kernels for KernelsOnly {
            const SET: KernelSet = KernelSet::EMPTY.with(Kernel::Conv2dI8);
        }
        assert!(ResNet8Loops::<KernelsOnly>::QUADS && ResNet8Loops::<KernelsOnly>::COLUMNS);
        assert!(!ResNet8Loops::<KernelsOnly>::DEPTHWISE_PIXEL);
        // A set naming classes links those (and, off the DSP cores, the pixel and row loops).
        assert!(ResNet8Loops::<OtherLoops>::COLUMNS_WHOLE);
        assert!(!ResNet8Loops::<OtherLoops>::QUADS && !ResNet8Loops::<OtherLoops>::POINTWISE);
        assert_eq!(
            ResNet8Loops::<OtherLoops>::PIXELS,
            !crate::kernels::fast::conv::TILES
        );
        assert!(!ResNet8Loops::<OtherLoops>::DEPTHWISE_PIXEL);
    }

    #[test]
    fn the_precision_sets_split_every_kernel() {
        assert_eq!(
            KernelSet::F32.intersection(KernelSet::INT8),
            KernelSet::EMPTY
        );
        assert_eq!(KernelSet::ALL.iter().count(), Kernel::ALL.len());
        assert_eq!(
            KernelSet::F32.iter().count(),
            Kernel::ALL.iter().filter(|k| k.is_f32()).count()
        );
        // Names are the variants' (build scripts write them back as Rust code).
        assert_eq!(Kernel::Conv2dI16ToI8.name(), "Conv2dI16ToI8");
        assert_eq!(
            format!("{:?}", Kernel::DenseI8Wide),
            Kernel::DenseI8Wide.name()
        );
        assert_eq!(DefaultKernels::SET, KernelSet::ALL);
    }
}
