//! Writing a blob: the inverse of [`Model::new_checked`](crate::Model::new_checked), for the host
//! tool and for tests. No allocation: the caller provides the buffer ([`emitted_len`] says how big).
//!
//! `emit` only lays out bytes; it does not judge the model. Run `Model::new_checked` on the result
//! to find out whether the runtime will accept it.

use core::fmt;

use crate::format::{weights_offset, Layer, ModelInfo, CRC, FORMAT_VERSION, HEADER_LEN, MAGIC};

/// Why [`emit`] could not write a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EmitError {
    /// `ModelInfo::layer_count` differs from the number of layers given.
    LayerCountMismatch {
        /// `info.layer_count`.
        declared: u16,
        /// `layers.len()` (saturated at `u32::MAX`).
        given: u32,
    },
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes the blob needs (saturated at `u32::MAX`).
        needed: u32,
    },
    /// The meta or weights section does not fit the header's 32-bit length fields.
    TooLarge,
    /// postcard refused a record (not expected for the format types).
    Encode,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EmitError::LayerCountMismatch { declared, given } => write!(
                f,
                "model info declares {declared} layers but {given} were given"
            ),
            EmitError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: the blob needs {needed} bytes")
            }
            EmitError::TooLarge => f.write_str("model sections exceed 4 GiB"),
            EmitError::Encode => f.write_str("postcard could not encode a record"),
        }
    }
}

impl core::error::Error for EmitError {}

fn encoded_len<T: serde::Serialize>(value: &T) -> Result<usize, EmitError> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|_| EmitError::Encode)
}

/// Length of the meta section (postcard info + layers, without padding).
fn meta_len(info: &ModelInfo, layers: &[Layer]) -> Result<usize, EmitError> {
    layers.iter().try_fold(encoded_len(info)?, |sum, layer| {
        sum.checked_add(encoded_len(layer)?).ok_or(EmitError::TooLarge)
    })
}

/// Total length of the blob [`emit`] writes for these records and `weights_len` bytes of weights.
pub fn emitted_len(info: &ModelInfo, layers: &[Layer], weights_len: usize) -> Result<usize, EmitError> {
    let meta = meta_len(info, layers)?;
    u32::try_from(meta).map_err(|_| EmitError::TooLarge)?;
    u32::try_from(weights_len).map_err(|_| EmitError::TooLarge)?;
    // meta and weights_len are below 2^32, so this only overflows on 32-bit hosts.
    meta.checked_add(HEADER_LEN + crate::format::WEIGHTS_ALIGN)
        .map(|_| weights_offset(meta))
        .and_then(|at| at.checked_add(weights_len))
        .ok_or(EmitError::TooLarge)
}

/// Writes a blob into `out`: header, postcard `info`, postcard of each layer, zero padding up to
/// `WEIGHTS_ALIGN`, then `weights`. Returns the blob length; bytes of `out` after it are untouched.
///
/// `info.layer_count` must equal `layers.len()`. Spans in the layers are offsets into `weights`.
pub fn emit(info: &ModelInfo, layers: &[Layer], weights: &[u8], out: &mut [u8]) -> Result<usize, EmitError> {
    if usize::from(info.layer_count) != layers.len() {
        return Err(EmitError::LayerCountMismatch {
            declared: info.layer_count,
            given: u32::try_from(layers.len()).unwrap_or(u32::MAX),
        });
    }
    let total = emitted_len(info, layers, weights.len())?;
    let too_small = EmitError::BufferTooSmall { needed: u32::try_from(total).unwrap_or(u32::MAX) };
    let blob = out.get_mut(..total).ok_or(too_small)?;
    let (header, payload) = blob.split_at_mut_checked(HEADER_LEN).ok_or(too_small)?;
    // Both fit in u32 (emitted_len checked) and add up to `total`.
    let meta_len = meta_len(info, layers)?;
    let weights_at = weights_offset(meta_len) - HEADER_LEN;

    let mut free = payload.get_mut(..meta_len).ok_or(too_small)?;
    let used = postcard::to_slice(info, free).map_err(|_| EmitError::Encode)?.len();
    free = free.get_mut(used..).ok_or(EmitError::Encode)?;
    for layer in layers {
        let used = postcard::to_slice(layer, free).map_err(|_| EmitError::Encode)?.len();
        free = free.get_mut(used..).ok_or(EmitError::Encode)?;
    }
    payload.get_mut(meta_len..weights_at).ok_or(too_small)?.fill(0);
    let weights_out = payload.get_mut(weights_at..).ok_or(too_small)?;
    weights_out.iter_mut().zip(weights).for_each(|(o, w)| *o = *w);
    let crc = CRC.checksum(payload);

    let fields = [
        &MAGIC[..],
        &FORMAT_VERSION.to_le_bytes(),
        &0u16.to_le_bytes(), // flags
        &(meta_len as u32).to_le_bytes(),
        &(weights.len() as u32).to_le_bytes(),
        &crc.to_le_bytes(),
        &0u32.to_le_bytes(), // reserved
    ];
    let mut at = header.iter_mut();
    for byte in fields.into_iter().flatten() {
        if let Some(slot) = at.next() {
            *slot = *byte;
        }
    }
    Ok(total)
}
