//! Signed blobs on the host: Ed25519 key pairs (`icefold keygen`), signing (`icefold sign`,
//! `icefold convert --sign`), and the public key as Rust for the firmware (`--emit-rust`).
//!
//! Keys are files OpenSSL reads too: the private key PKCS#8 PEM (`openssl pkey -in KEY`), the
//! public key SubjectPublicKeyInfo PEM (`openssl pkey -pubin -in KEY.pub`). The trailer format is
//! the runtime's (`icefold::format::signature`, docs/FORMAT.md); the runtime's own verifier checks
//! every signature made here before it is written.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ed25519_compact::{KeyPair, PublicKey, SecretKey, Seed};
use icefold::format::signature::{self, PUBLIC_KEY_LEN};

/// The public key file written next to a private key `KEY`: `KEY.pub`.
pub fn public_key_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// A new key pair from the operating system's random source.
pub fn generate() -> Result<KeyPair> {
    let mut seed = [0u8; Seed::BYTES];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness from the OS: {e}"))?;
    KeyPair::try_from_seed(Seed::new(seed)).map_err(|e| anyhow!("key generation failed: {e}"))
}

/// Writes `bytes` to `path` as a new file that only its owner can read and write (0600 on Unix),
/// atomically: a temporary file in the same directory is filled, synced, then linked into place.
/// An existing `path` is an error unless `force`, and is then replaced by a rename (readers see
/// the old key or the new one, never a mix).
pub fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    write_new(path, bytes, force, 0o600)
}

/// [`write_private`] for a file anyone may read (the public key).
pub fn write_public(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    write_new(path, bytes, force, 0o644)
}

fn write_new(path: &Path, bytes: &[u8], force: bool, mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !force && path.exists() {
        bail!(
            "{} exists; refusing to overwrite a key (pass --force to replace it)",
            path.display()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            // The mode applies at creation: the key is never readable by others, not even
            // between creation and a later chmod.
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if force {
            fs::rename(&tmp, path)?;
        } else {
            // A hard link fails if `path` appeared meanwhile: never overwrite without --force.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a new key pair: the private key to `path` (owner-only), the public key to `path.pub`.
/// Returns the public key.
pub fn keygen(path: &Path, force: bool) -> Result<PublicKey> {
    let pair = generate()?;
    let public = public_key_path(path);
    if !force && public.exists() {
        bail!(
            "{} exists; refusing to overwrite a key (pass --force to replace it)",
            public.display()
        );
    }
    write_private(path, pair.sk.to_pem().as_bytes(), force)?;
    write_public(&public, pair.pk.to_pem().as_bytes(), force)?;
    Ok(pair.pk)
}

/// Reads a private key written by `icefold keygen` (or OpenSSL: `openssl genpkey -algorithm ed25519`).
pub fn read_private(path: &Path) -> Result<SecretKey> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SecretKey::from_pem(&text).map_err(|e| {
        anyhow!(
            "{} is not an Ed25519 private key in PEM (PKCS#8) form: {e}; make one with `icefold keygen -o KEY`",
            path.display()
        )
    })
}

/// Reads a public key: a `KEY.pub` PEM file, or the private key (its public half).
pub fn read_public(path: &Path) -> Result<PublicKey> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(pk) = PublicKey::from_pem(&text) {
        return Ok(pk);
    }
    SecretKey::from_pem(&text)
        .map(|sk| sk.public_key())
        .map_err(|e| {
            anyhow!(
                "{} is not an Ed25519 public or private key in PEM form: {e}",
                path.display()
            )
        })
}

/// A signed copy of `blob`: flag SIGNED set in the header, then the trailer with the signature
/// over all of it. A blob that is signed already is signed again (its old trailer is dropped,
/// `resigned` says so). The result is checked with the runtime's own `Model::new_signed`.
pub fn sign(blob: &[u8], key: &SecretKey) -> Result<Signed> {
    let aligned = crate::lower::blob::AlignedBytes::new(blob);
    crate::host::load(aligned.as_slice())?;
    let (unsigned, resigned) = match signature::split(blob) {
        Some(s) if signature::says_signed(blob) => (s.message, true),
        _ => (blob, false),
    };
    let mut bytes = unsigned.to_vec();
    if !signature::mark_signed(&mut bytes) {
        bail!("the blob is shorter than its header");
    }
    let sig = key.sign(&bytes, None);
    bytes.extend_from_slice(&signature::trailer(&sig));
    let public: [u8; PUBLIC_KEY_LEN] = *key.public_key();
    let check = crate::lower::blob::AlignedBytes::new(&bytes);
    icefold::Model::new_signed(check.as_slice(), &public)
        .map_err(|e| anyhow!("the signed blob does not load with its own key: {e}"))?;
    Ok(Signed {
        bytes,
        public,
        resigned,
    })
}

/// A blob after [`sign`].
#[derive(Clone, Debug)]
pub struct Signed {
    /// The signed blob (the input with the flag set, and `format::signature::TRAILER_LEN` bytes longer).
    pub bytes: Vec<u8>,
    /// The public key that verifies it.
    pub public: [u8; PUBLIC_KEY_LEN],
    /// The input was signed already; its old signature was replaced.
    pub resigned: bool,
}

/// Rust source for the firmware: the public key as a `const`, for `Model::new_signed`.
pub fn public_key_rust(public: &[u8; PUBLIC_KEY_LEN]) -> String {
    let hex: String = public.iter().map(|b| format!("{b:02x}")).collect();
    let bytes = public
        .chunks(8)
        .map(|c| {
            c.iter()
                .map(|b| format!("0x{b:02x}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join(",\n    ");
    format!(
        "/// The Ed25519 public key that verifies `BLOB` (hex {hex}): load it with\n\
         /// `icefold::Model::new_signed(&BLOB.0, &PUBLIC_KEY)` (runtime feature `signed`), which\n\
         /// refuses any blob this key did not sign.\n\
         pub const PUBLIC_KEY: [u8; {PUBLIC_KEY_LEN}] = [\n    {bytes},\n];\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_owner_only_never_overwritten_and_sign_what_the_runtime_verifies() {
        let dir = std::env::temp_dir().join(format!("icefold-signing-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let key = dir.join("vendor.key");
        let pk = keygen(&key, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "private key mode {mode:o}");
        }
        let before = fs::read(&key).unwrap();
        let err = keygen(&key, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(fs::read(&key).unwrap(), before, "not overwritten");
        let pk2 = keygen(&key, true).unwrap();
        assert_ne!(pk, pk2, "--force writes a new key");
        assert_eq!(read_public(&public_key_path(&key)).unwrap(), pk2);
        assert_eq!(
            read_public(&key).unwrap(),
            pk2,
            "the private key's public half"
        );
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let text = public_key_rust(&pk2);
        assert!(
            text.contains("pub const PUBLIC_KEY: [u8; 32] = ["),
            "{text}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
