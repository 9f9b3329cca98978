//! `icefold sign`: append an Ed25519 signature to a blob, for `Model::new_signed`.

use std::path::PathBuf;

use anyhow::Result;

use icefold_tool::{io, signing};

use super::read_blob;

/// Arguments of `icefold sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// The blob written by `convert`.
    blob: PathBuf,
    /// The private key (from `icefold keygen`).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Where to write the signed blob.
    #[arg(short, long, value_name = "SIGNED")]
    output: PathBuf,
    /// Also write a Rust module with the public key as `PUBLIC_KEY` (for the firmware).
    #[arg(long, value_name = "KEY_RS")]
    emit_rust: Option<PathBuf>,
}

pub fn run(a: &SignArgs) -> Result<()> {
    let (blob_path, key_path, output) = (a.blob.as_path(), a.key.as_path(), a.output.as_path());
    io::ensure_not_an_input(output, &[blob_path, key_path])?;
    let blob = read_blob(blob_path)?;
    let key = signing::read_private(key_path)?;
    let signed = signing::sign(blob.as_slice(), &key)?;
    io::write_atomic(output, &signed.bytes, &[blob_path, key_path])?;
    println!(
        "wrote {} ({} bytes, signed{}; verified with Model::new_signed)",
        output.display(),
        signed.bytes.len(),
        if signed.resigned {
            ", replacing its old signature"
        } else {
            ""
        }
    );
    if let Some(module) = &a.emit_rust {
        let text = format!(
            "//! The public key of `{}`, written by `icefold sign --emit-rust`.\n\n{}",
            output.display(),
            signing::public_key_rust(&signed.public)
        );
        io::write_atomic(module, text.as_bytes(), &[blob_path, key_path, output])?;
        println!("wrote {} (PUBLIC_KEY)", module.display());
    }
    Ok(())
}
