//! A checked view over a model blob: [`Model::new_checked`] validates everything once, after which
//! the accessors and the engine cannot fail on the model's account.

#[cfg(test)]
mod axis_tests;
mod decode;
mod error;
#[cfg(test)]
mod gating_tests;
#[cfg(test)]
pub(crate) mod int8_tests;
#[cfg(feature = "signed")]
mod signed;
#[cfg(test)]
mod slice_view_tests;
#[cfg(test)]
mod tests;
mod validate;
#[cfg(test)]
mod view_tests;
#[cfg(test)]
mod with_weights_tests;

pub use error::{
    Boundary, LayerFault, LoadError, Operand, ParamFault, SpanFault, SpanRole, TensorFault,
};

use core::marker::PhantomData;

use crate::engine::{DefaultKernels, Kernels};
use crate::format::signature::{self, FLAG_SIGNED};
use crate::format::{
    Header, Layer, ModelInfo, TensorDesc, ARENA_ALIGN, CRC, FORMAT_VERSION, HEADER_LEN, MAGIC,
    WEIGHTS_ALIGN,
};

/// Storage with 16-byte alignment, for model blobs in flash.
///
/// ```
/// # const N: usize = 4;
/// use icefold::Aligned;
/// static BLOB: Aligned<[u8; N]> = Aligned(*b"ICEF"); // *include_bytes!("model.icefold")
/// assert_eq!(core::ptr::addr_of!(BLOB) as usize % 16, 0);
/// ```
///
/// `include_bytes!` gives a byte array with alignment 1, and [`Model::new_checked`] refuses blobs
/// that are not 4-byte aligned (f32 weights are borrowed in place). 16 leaves room for SIMD kernels.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Aligned<T: ?Sized>(pub T);

impl<T: ?Sized> core::ops::Deref for Aligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A validated model, borrowing its blob.
///
/// Holds only the model info and borrowed byte slices: layer records are decoded again each time
/// they are needed, so a model of any size costs O(1) RAM.
///
/// `K` is the set of kernels the firmware links ([`Kernels`]): every kernel of the enabled
/// precisions by default ([`Model::new_checked`]), or only a model's
/// ([`Model::new_checked_with_kernels`], `engine::kernel_set`).
pub struct Model<'a, K = DefaultKernels> {
    info: ModelInfo,
    /// The layer records (postcard), exactly `info.layer_count` of them, nothing after.
    layer_bytes: &'a [u8],
    /// The weights section.
    weights: &'a [u8],
    /// f32 convolutions and dense layers on the reference kernels even where fast ones exist
    /// ([`Model::with_reference_f32_kernels`]).
    reference_f32: bool,
    /// The linked kernels: a type, so that the engine's guards are constants.
    kernels: PhantomData<fn() -> K>,
}

// By hand: derived impls would require `K: Clone` (and `Debug`) of a marker type.
impl<K> Clone for Model<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Model<'_, K> {}

impl<K> core::fmt::Debug for Model<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .field("layer_bytes", &self.layer_bytes.len())
            .field("weights", &self.weights.len())
            .field("reference_f32", &self.reference_f32)
            .finish()
    }
}

fn saturate(n: impl TryInto<u32>) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

/// Reads and checks the fixed header (everything except the checksum of the payload).
fn parse_header(blob: &[u8]) -> Result<Header, LoadError> {
    let bytes: &[u8; HEADER_LEN] = blob.first_chunk().ok_or(LoadError::TooShort {
        len: saturate(blob.len()),
    })?;
    let header = Header::parse(bytes);
    if header.magic != MAGIC {
        return Err(LoadError::BadMagic {
            found: header.magic,
        });
    }
    if header.version != FORMAT_VERSION {
        return Err(LoadError::UnsupportedVersion {
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    // FLAG_SIGNED is the only flag: the blob carries a signature trailer (format::signature).
    if header.flags & !FLAG_SIGNED != 0 {
        return Err(LoadError::UnknownFlags {
            flags: header.flags,
        });
    }
    if header.reserved != 0 {
        return Err(LoadError::ReservedNotZero);
    }
    Ok(header)
}

impl<'a> Model<'a> {
    /// Validates a blob and returns a view of it, with every kernel of the enabled precisions
    /// ([`DefaultKernels`]: both, unless a crate feature `f32` or `int8` is off).
    ///
    /// Accepts unsigned and signed blobs alike (a signed blob's trailer is split off unverified:
    /// this checks integrity, not origin). Firmware that must run only its vendor's models loads
    /// with `Model::new_signed` (feature `signed`) instead. The checks are those of
    /// [`Model::new_checked_with_kernels`].
    pub fn new_checked(blob: &'a [u8]) -> Result<Model<'a>, LoadError> {
        Model::new_checked_with_kernels(blob)
    }
}

impl<'a, K: Kernels> Model<'a, K> {
    /// Validates a blob and returns a view of it that runs on the kernels of `K` only: a layer
    /// whose kernel is not in `K::SET` is refused ([`LoadError::KernelNotLinked`] or [`LoadError::OperationNotLinked`], naming the
    /// layer and the kernel). The kernels outside the set are then unreachable and not linked.
    ///
    /// Accepts unsigned and signed blobs alike (a signed blob's trailer is split off unverified:
    /// this checks integrity, not origin). Firmware that must run only its vendor's models loads
    /// with `Model::new_signed` (feature `signed`) instead.
    ///
    /// Checks, in order: 4-byte alignment of `blob`, header (length, magic, version, flags),
    /// that the header's section lengths account for every byte of `blob`, the CRC, that the
    /// meta records decode and fill the meta section exactly, zero padding, and then every
    /// tensor, operator parameter, weight span and the arena plan (see the crate documentation
    /// for the full list). Time is O(L²) record decodes for L layers (the plan checks compare
    /// layer pairs without storing layers); RAM use is O(1).
    pub fn new_checked_with_kernels(blob: &'a [u8]) -> Result<Model<'a, K>, LoadError> {
        if blob.as_ptr().addr() % ARENA_ALIGN != 0 {
            return Err(LoadError::Misaligned);
        }
        let header = parse_header(blob)?;
        // A signed blob's trailer follows the bytes the header describes. This checks the blob's
        // integrity, not its origin: that is `Model::new_signed` (feature `signed`).
        let blob = if header.flags & FLAG_SIGNED != 0 {
            signature::split(blob)
                .ok_or(LoadError::SignatureTruncated)?
                .message
        } else {
            blob
        };
        // u64: the header lengths are untrusted and must not overflow on 32-bit targets.
        let weights_at = (HEADER_LEN as u64 + u64::from(header.meta_len))
            .div_ceil(WEIGHTS_ALIGN as u64)
            * WEIGHTS_ALIGN as u64;
        let declared = weights_at + u64::from(header.weights_len);
        if declared != blob.len() as u64 {
            return Err(LoadError::LengthMismatch {
                declared: saturate(declared),
                actual: saturate(blob.len()),
            });
        }
        // Both now fit in usize: they are at most blob.len().
        let meta_end = HEADER_LEN + header.meta_len as usize;
        let weights_at = weights_at as usize;
        let payload = blob.get(HEADER_LEN..).unwrap_or_default();
        let computed = CRC.checksum(payload);
        // Fuzz builds only (cargo-fuzz sets `--cfg fuzzing`; see fuzz/README.md): a mutated blob
        // almost never carries a matching CRC, so the fuzzer would test nothing past this line.
        // Everything after it must be safe without the checksum anyway.
        #[allow(unexpected_cfgs)]
        let check_crc = !cfg!(fuzzing);
        if check_crc && computed != header.crc {
            return Err(LoadError::ChecksumMismatch {
                stored: header.crc,
                computed,
            });
        }
        let meta = blob.get(HEADER_LEN..meta_end).unwrap_or_default();
        let padding = blob.get(meta_end..weights_at).unwrap_or_default();
        let weights = blob.get(weights_at..).unwrap_or_default();

        let (info, layer_bytes) = postcard::take_from_bytes::<ModelInfo>(meta)
            .map_err(|_| LoadError::MetaDecode { layer: None })?;
        let model = Model {
            info,
            layer_bytes,
            weights,
            reference_f32: false,
            kernels: PhantomData,
        };
        let rest = validate::records(&model)?;
        if !rest.is_empty() {
            return Err(LoadError::MetaTrailing {
                unused: saturate(rest.len()),
            });
        }
        if padding.iter().any(|&b| b != 0) {
            return Err(LoadError::PaddingNotZero);
        }
        validate::dataflow(&model)?;
        validate::plan(&model)?;
        Ok(model)
    }

    /// This model's layers over another weights section of the same length: what a host tool
    /// that changes weights in place and runs the model again (bias correction changes one
    /// layer's biases at a time) loads instead of a whole new blob. Every check that reads the
    /// weights runs again on `weights`, the layer records' checks of
    /// [`Model::new_checked_with_kernels`]; the dataflow and the arena plan, which do not depend
    /// on the weights, are this model's, already checked (on a deep network they are most of a
    /// load: each layer's tensors are compared with every earlier and later layer's).
    ///
    /// Refused: a section of another length ([`LoadError::LengthMismatch`]), one not at a
    /// 4-byte aligned address ([`LoadError::Misaligned`]), weights a layer refuses (as at load).
    pub fn with_weights<'b>(&self, weights: &'b [u8]) -> Result<Model<'b, K>, LoadError>
    where
        'a: 'b,
    {
        if weights.as_ptr().addr() % ARENA_ALIGN != 0 {
            return Err(LoadError::Misaligned);
        }
        if weights.len() != self.weights.len() {
            return Err(LoadError::LengthMismatch {
                declared: saturate(self.weights.len()),
                actual: saturate(weights.len()),
            });
        }
        let model = Model {
            info: self.info,
            layer_bytes: self.layer_bytes,
            weights,
            reference_f32: self.reference_f32,
            kernels: PhantomData,
        };
        // The records decoded before: nothing follows them.
        validate::records(&model)?;
        Ok(model)
    }
}

impl<'a, K> Model<'a, K> {
    /// The same model with its f32 layers run on the reference kernels only, never the host's
    /// fast f32 kernels (AVX2 and FMA on x86_64), whose results differ from the reference in the
    /// last bits. The host tool computes the f32 side of bias correction with it, so a converted
    /// blob does not depend on the converting machine's CPU. int8 layers are unaffected (their
    /// fast kernels are bit-exact).
    pub fn with_reference_f32_kernels(self) -> Model<'a, K> {
        Model {
            reference_f32: true,
            ..self
        }
    }

    /// Whether f32 layers run on the reference kernels only
    /// ([`Model::with_reference_f32_kernels`]).
    pub fn reference_f32_kernels(&self) -> bool {
        self.reference_f32
    }

    /// Model-wide facts: layer count, arena size, input and output.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The layers in execution order (decoded on the fly; each was validated at load).
    pub fn layers(&self) -> Layers<'a, K> {
        Layers {
            rest: self.layer_bytes,
            remaining: self.info.layer_count,
            kernels: PhantomData,
        }
    }

    /// The weights section (raw little-endian arrays referenced by `Span`s).
    pub fn weights(&self) -> &'a [u8] {
        self.weights
    }

    /// Bytes of arena a run needs (`ModelInfo::arena_bytes`).
    pub fn arena_bytes(&self) -> usize {
        self.info.arena_bytes as usize
    }

    /// The model input tensor. Its `dtype` is the element type of the whole model (every tensor
    /// of a validated model has the same one): `I8` models also run with [`Model::run_i8`].
    pub fn input(&self) -> &TensorDesc {
        &self.info.input
    }

    /// The model output tensor.
    pub fn output(&self) -> &TensorDesc {
        &self.info.output
    }

    /// A span of the weights section as an array of `T` (f32, i32, u32, i8), if it is in range
    /// and aligned for `T` (the blob is 4-aligned and the section 16-aligned within it).
    ///
    /// Always `Some` for the spans of a validated layer, each read as the type the format gives it.
    pub(crate) fn weights_as<T: bytemuck::AnyBitPattern>(
        &self,
        span: crate::format::Span,
    ) -> Option<&'a [T]> {
        let start = span.offset as usize;
        let bytes = self
            .weights
            .get(start..start.checked_add(span.len as usize)?)?;
        bytemuck::try_cast_slice(bytes).ok()
    }
}

/// Iterator over the layer records of a [`Model`], decoding each as it goes with the decoders of
/// the operations `K` links only (`decode`).
#[derive(Debug)]
pub struct Layers<'a, K = DefaultKernels> {
    rest: &'a [u8],
    remaining: u16,
    kernels: PhantomData<K>,
}

// Not derived: a derive would require `K: Clone`, and `K` is only a marker.
impl<K> Clone for Layers<'_, K> {
    fn clone(&self) -> Self {
        Layers {
            rest: self.rest,
            remaining: self.remaining,
            kernels: PhantomData,
        }
    }
}

impl<'a, K: Kernels> Layers<'a, K> {
    /// Decodes the next record, reporting a decode failure (used by the loader).
    fn try_next(&mut self) -> Option<Result<Layer, decode::Undecoded>> {
        if self.remaining == 0 {
            return None;
        }
        match decode::take_layer::<K>(self.rest) {
            Ok((layer, rest)) => {
                self.rest = rest;
                self.remaining -= 1;
                Some(Ok(layer))
            }
            Err(why) => {
                self.remaining = 0;
                Some(Err(why))
            }
        }
    }
}

impl<K: Kernels> Iterator for Layers<'_, K> {
    type Item = Layer;

    fn next(&mut self) -> Option<Layer> {
        // Records of a validated model always decode; a failure just ends the iteration.
        self.try_next()?.ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

impl<K: Kernels> core::iter::FusedIterator for Layers<'_, K> {}
