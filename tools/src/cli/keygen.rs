//! `icefold keygen`: an Ed25519 key pair for signing blobs.

use std::path::PathBuf;

use anyhow::Result;

use icefold_tool::signing;

/// Arguments of `icefold keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, owner-only); the public key goes to KEY.pub.
    #[arg(short, long, value_name = "KEY")]
    output: PathBuf,
    /// Replace existing key files (by default an existing file is an error: a lost private key
    /// means every device must be re-provisioned).
    #[arg(long)]
    force: bool,
}

pub fn run(a: &KeygenArgs) -> Result<()> {
    let pk = signing::keygen(&a.output, a.force)?;
    let public = signing::public_key_path(&a.output);
    println!(
        "wrote {} (private, owner-only: keep it off the devices and out of version control)",
        a.output.display()
    );
    println!("wrote {} (public)", public.display());
    println!(
        "public key {}",
        pk.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    println!(
        "sign with `icefold sign BLOB --key {} -o SIGNED` or `icefold convert ... --sign {}`",
        a.output.display(),
        a.output.display()
    );
    Ok(())
}
