//! The commands of `icefold`, one file each; each command prints its own report.

use std::path::Path;

use anyhow::{Context, Result};

use icefold_tool::lower::blob::AlignedBytes;
use icefold_tool::lower::limits::Limits;

pub mod bench;
pub mod convert;
pub mod diagnose;
pub mod inspect;
pub mod keygen;
pub mod mcu;
pub mod run;
pub mod sign;
pub mod verify;

/// The budgets a conversion is held to (flash for weights, RAM for the arena, the ONNX file size),
/// the same flags for every command that converts (`convert`, `verify`), so a model refused by
/// one can be let through by the same flag in the other.
#[derive(clap::Args, Clone, Copy)]
pub struct BudgetArgs {
    /// Refuse models whose weights exceed this many bytes.
    #[arg(long, default_value_t = Limits::DEFAULT.max_weight_bytes)]
    max_weight_bytes: usize,
    /// Refuse models whose arena exceeds this many bytes. With `--quantize int8`, int16
    /// activations first go back to int8 (least error per byte first) until the arena fits.
    #[arg(long, default_value_t = Limits::DEFAULT.max_arena_bytes)]
    max_arena_bytes: usize,
    /// Refuse ONNX files larger than this many bytes (checked before reading).
    #[arg(long, default_value_t = Limits::DEFAULT.max_file_bytes)]
    max_file_bytes: u64,
}

impl BudgetArgs {
    /// The conversion's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_weight_bytes: self.max_weight_bytes,
            max_arena_bytes: self.max_arena_bytes,
            max_file_bytes: self.max_file_bytes,
        }
    }
}

/// A blob file, held 4-byte aligned.
pub fn read_blob(path: &Path) -> Result<AlignedBytes> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(AlignedBytes::new(&bytes))
}
