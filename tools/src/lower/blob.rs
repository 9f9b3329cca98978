//! Emit: the lowered model as blob bytes, and blobs held 4-byte aligned in host memory.

use anyhow::{anyhow, Result};

use crate::lower::Lowered;

/// Serialize a lowered model into an icefold blob (see `docs/FORMAT.md`).
pub fn blob(l: &Lowered) -> Result<Vec<u8>> {
    // Layers are well under 256 postcard bytes each; the writer reports if this guess is short.
    let capacity = icefold::format::HEADER_LEN
        + 64
        + 256 * (l.layers.len() + 1)
        + icefold::format::WEIGHTS_ALIGN
        + l.weights.len();
    let mut out = vec![0u8; capacity];
    let n = icefold::format::emit(&l.info, &l.layers, &l.weights, &mut out)
        .map_err(|e| anyhow!("cannot serialize the model: {e}"))?;
    out.truncate(n);
    Ok(out)
}

/// Bytes kept at a 4-byte aligned address, as `Model::new_checked` requires (the weights section
/// is read as `f32`/`i32` in place).
#[derive(Clone, Debug)]
pub struct AlignedBytes {
    words: Vec<u32>,
    len: usize,
}

impl AlignedBytes {
    /// Copy `bytes` into aligned storage.
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}
