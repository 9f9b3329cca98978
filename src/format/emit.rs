//! Writing a blob: the inverse of [`Model::new_checked`](crate::Model::new_checked), for the host
//! tool and for tests. No allocation: the caller provides the buffer ([`emitted_len`] says how big).
//!
//! `emit` only lays out bytes; it does not judge the model. Run `Model::new_checked` on the result
//! to find out whether the runtime will accept it.

#[cfg(feature = "fmt")]
use core::fmt;

use super::{weights_offset, Header, Layer, ModelInfo, CRC, FORMAT_VERSION, HEADER_LEN, MAGIC};

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

#[cfg(feature = "fmt")]
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

#[cfg(feature = "fmt")]
impl core::error::Error for EmitError {}

fn encoded_len<T: serde::Serialize>(value: &T) -> Result<usize, EmitError> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|_| EmitError::Encode)
}

/// Length of the meta section (postcard info + layers, without padding).
fn meta_len(info: &ModelInfo, layers: &[Layer]) -> Result<usize, EmitError> {
    layers.iter().try_fold(encoded_len(info)?, |sum, layer| {
        sum.checked_add(encoded_len(layer)?)
            .ok_or(EmitError::TooLarge)
    })
}

/// Total length of the blob [`emit`] writes for these records and `weights_len` bytes of weights.
pub fn emitted_len(
    info: &ModelInfo,
    layers: &[Layer],
    weights_len: usize,
) -> Result<usize, EmitError> {
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
pub fn emit(
    info: &ModelInfo,
    layers: &[Layer],
    weights: &[u8],
    out: &mut [u8],
) -> Result<usize, EmitError> {
    if usize::from(info.layer_count) != layers.len() {
        return Err(EmitError::LayerCountMismatch {
            declared: info.layer_count,
            given: u32::try_from(layers.len()).unwrap_or(u32::MAX),
        });
    }
    let total = emitted_len(info, layers, weights.len())?;
    let too_small = EmitError::BufferTooSmall {
        needed: u32::try_from(total).unwrap_or(u32::MAX),
    };
    let blob = out.get_mut(..total).ok_or(too_small)?;
    let (header, payload) = blob.split_at_mut_checked(HEADER_LEN).ok_or(too_small)?;
    // Both fit in u32 (emitted_len checked) and add up to `total`.
    let meta_len = meta_len(info, layers)?;
    let weights_at = weights_offset(meta_len) - HEADER_LEN;

    let mut free = payload.get_mut(..meta_len).ok_or(too_small)?;
    let used = postcard::to_slice(info, free)
        .map_err(|_| EmitError::Encode)?
        .len();
    free = free.get_mut(used..).ok_or(EmitError::Encode)?;
    for layer in layers {
        let used = postcard::to_slice(layer, free)
            .map_err(|_| EmitError::Encode)?
            .len();
        free = free.get_mut(used..).ok_or(EmitError::Encode)?;
    }
    payload
        .get_mut(meta_len..weights_at)
        .ok_or(too_small)?
        .fill(0);
    let weights_out = payload.get_mut(weights_at..).ok_or(too_small)?;
    weights_out
        .iter_mut()
        .zip(weights)
        .for_each(|(o, w)| *o = *w);
    let crc = CRC.checksum(payload);

    let written = Header {
        magic: MAGIC,
        version: FORMAT_VERSION,
        flags: 0,
        meta_len: meta_len as u32,
        weights_len: weights.len() as u32,
        crc,
        reserved: 0,
    }
    .write();
    header
        .iter_mut()
        .zip(written)
        .for_each(|(slot, byte)| *slot = byte);
    Ok(total)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::format::WEIGHTS_ALIGN;
    use crate::testutil::tiny;

    #[test]
    fn header_layout_and_length() {
        let spec = tiny();
        let mut info = spec.info;
        info.layer_count = spec.layers.len() as u16;
        let len = emitted_len(&info, &spec.layers, spec.weights.len()).unwrap();
        let mut out = std::vec![0xEEu8; len + 3];
        assert_eq!(emit(&info, &spec.layers, &spec.weights, &mut out), Ok(len));
        assert_eq!(
            &out[len..],
            &[0xEE; 3],
            "bytes after the blob are untouched"
        );
        assert_eq!(&out[..4], b"ICEF");
        assert_eq!(u16::from_le_bytes([out[4], out[5]]), FORMAT_VERSION);
        assert_eq!(&out[6..8], &[0, 0]);
        let meta_len = u32::from_le_bytes(out[8..12].try_into().unwrap()) as usize;
        let weights_len = u32::from_le_bytes(out[12..16].try_into().unwrap()) as usize;
        assert_eq!(weights_len, spec.weights.len());
        let at = weights_offset(meta_len);
        assert_eq!(at % WEIGHTS_ALIGN, 0);
        assert_eq!(at + weights_len, len);
        assert!(out[HEADER_LEN + meta_len..at].iter().all(|&b| b == 0));
        assert_eq!(&out[at..len], &spec.weights[..]);
        let crc = u32::from_le_bytes(out[16..20].try_into().unwrap());
        assert_eq!(crc, CRC.checksum(&out[HEADER_LEN..len]));
        assert_eq!(&out[20..24], &[0; 4]);
    }

    #[test]
    fn refuses_small_buffers_and_wrong_layer_counts() {
        let spec = tiny();
        let mut info = spec.info;
        info.layer_count = spec.layers.len() as u16;
        let len = emitted_len(&info, &spec.layers, spec.weights.len()).unwrap();
        for short in [0, HEADER_LEN, len / 2, len - 1] {
            let mut out = std::vec![0u8; short];
            assert_eq!(
                emit(&info, &spec.layers, &spec.weights, &mut out),
                Err(EmitError::BufferTooSmall { needed: len as u32 })
            );
        }
        info.layer_count = 3;
        let mut out = std::vec![0u8; len];
        assert_eq!(
            emit(&info, &spec.layers, &spec.weights, &mut out),
            Err(EmitError::LayerCountMismatch {
                declared: 3,
                given: 10
            })
        );
    }
}
