//! The commands of `icefold`, one file each; each command prints its own report.

use std::path::Path;

use anyhow::{Context, Result};

use icefold_tool::lower::blob::AlignedBytes;

pub mod bench;
pub mod convert;
pub mod diagnose;
pub mod inspect;
pub mod keygen;
pub mod mcu;
pub mod run;
pub mod sign;
pub mod verify;

/// A blob file, held 4-byte aligned.
pub fn read_blob(path: &Path) -> Result<AlignedBytes> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(AlignedBytes::new(&bytes))
}
