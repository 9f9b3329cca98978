//! Resource budgets for one conversion: a model that needs more than the target can hold, or a
//! file too large to be a model for one, is refused with a message instead of exhausting memory.
//!
//! Checked by [`crate::pipeline::convert`]: the file size before the file is read,
//! the weights and the arena after lowering (before the blob is written or anything runs it).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::lower::Lowered;

/// Budgets for one conversion. [`Limits::default`] suits microcontroller targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest weights section of the blob (flash), in bytes. CLI: `--max-weight-bytes`.
    pub max_weight_bytes: usize,
    /// Largest arena (RAM for activations) a run may need, in bytes. CLI: `--max-arena-bytes`.
    pub max_arena_bytes: usize,
    /// Largest ONNX file accepted, in bytes, checked before reading it. CLI: `--max-file-bytes`.
    pub max_file_bytes: u64,
}

const MIB: usize = 1 << 20;

impl Limits {
    /// The defaults:
    /// - weights 16 MiB: above the largest on-chip flash of current MCUs (2 to 8 MiB) and a
    ///   typical external QSPI flash, so every model a device can hold passes; a larger one is
    ///   almost certainly the wrong model (or a desktop network).
    /// - arena 8 MiB: above the largest on-chip SRAM (1 to 2 MiB, plus external SDRAM on a few
    ///   boards); it also bounds what `verify` and `run` allocate on the host.
    /// - file 512 MiB: import holds the file and a float copy of its constants in memory, so this
    ///   keeps a hostile or mistaken input (a checkpoint, a disk image) from exhausting the host,
    ///   while leaving room for ONNX files with unused initializers (optimizer state, other heads).
    pub const DEFAULT: Limits = Limits {
        max_weight_bytes: 16 * MIB,
        max_arena_bytes: 8 * MIB,
        max_file_bytes: 512 * MIB as u64,
    };

    /// No limit at all (tests and trusted batch jobs).
    pub const UNLIMITED: Limits = Limits {
        max_weight_bytes: usize::MAX,
        max_arena_bytes: usize::MAX,
        max_file_bytes: u64::MAX,
    };

    /// Refuse a model file larger than `max_file_bytes`, without reading it.
    pub fn check_file(&self, path: &Path) -> Result<()> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read the ONNX model {}", path.display()))?
            .len();
        if len > self.max_file_bytes {
            bail!(
                "{}: the file is {}, above the limit of {} for ONNX files; if it really is the \
                 model to convert, raise the limit with --max-file-bytes {len}",
                path.display(),
                bytes(len),
                bytes(self.max_file_bytes),
            );
        }
        Ok(())
    }

    /// Refuse a lowered model whose weights or arena exceed the budget.
    pub fn check_lowered(&self, lowered: &Lowered) -> Result<()> {
        let weights = lowered.weights.len();
        if weights > self.max_weight_bytes {
            bail!(
                "the model's weights take {}, above the limit of {}; use a smaller model, or \
                 raise the limit with --max-weight-bytes {weights} if the target's flash holds it",
                bytes(weights as u64),
                bytes(self.max_weight_bytes as u64),
            );
        }
        let arena = lowered.info.arena_bytes as usize;
        if arena > self.max_arena_bytes {
            let biggest = lowered
                .notes
                .iter()
                .zip(&lowered.layers)
                .max_by_key(|(_, layer)| layer.output.byte_len())
                .map(|(note, layer)| {
                    format!(
                        " (largest activation: {} from {}, {})",
                        bytes(layer.output.byte_len() as u64),
                        note.source,
                        note.kind
                    )
                })
                .unwrap_or_default();
            bail!(
                "a run of the model needs an arena of {}{biggest}, above the limit of {}; use a \
                 smaller input or model, or raise the limit with --max-arena-bytes {arena} if the \
                 target's RAM holds it",
                bytes(arena as u64),
                bytes(self.max_arena_bytes as u64),
            );
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// `1234567 bytes (1.2 MiB)`: exact for the flag, rounded for the reader.
fn bytes(n: u64) -> String {
    if n >= MIB as u64 {
        format!("{n} bytes ({:.1} MiB)", n as f64 / MIB as f64)
    } else if n >= 1024 {
        format!("{n} bytes ({:.1} KiB)", n as f64 / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(bytes(2048), "2048 bytes (2.0 KiB)");
        assert_eq!(bytes(3 << 20), "3145728 bytes (3.0 MiB)");
    }

    #[test]
    fn file_limit_names_the_flag_and_reads_nothing() {
        let path = std::env::temp_dir().join(format!("icefold-limits-{}.onnx", std::process::id()));
        std::fs::write(&path, [0u8; 100]).unwrap();
        let tight = Limits {
            max_file_bytes: 99,
            ..Limits::DEFAULT
        };
        let err = tight.check_file(&path).unwrap_err().to_string();
        assert!(err.contains("--max-file-bytes 100"), "{err}");
        assert!(err.contains("100 bytes"), "{err}");
        Limits::DEFAULT.check_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = Limits::DEFAULT.check_file(&path).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
