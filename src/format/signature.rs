//! The signature trailer of a signed blob (`icefold sign`, `icefold convert --sign`;
//! verified by `Model::new_signed`, feature `signed`).
//!
//! ```text
//! offset 0         the blob exactly as `emit` writes it, except header flag SIGNED (bit 0) set
//! offset len - 68  trailer magic "ICSG"
//! offset len - 64  Ed25519 signature (RFC 8032, 64 bytes) over bytes 0 .. len - 68
//! ```
//!
//! The signature covers the header (flags included) and the whole payload, so nothing of what
//! the loader reads is outside it; the trailer is not part of the CRC'd bytes or of the lengths
//! in the header. An unsigned blob has no trailer and flag 0, byte for byte as before signing
//! existed: runtimes without this flag refuse a signed blob as having unknown flags.

use super::header::{field, HEADER_LEN};

/// Header flag: a signature trailer follows the blob.
pub const FLAG_SIGNED: u16 = 1;
/// First four bytes of the trailer.
pub const TRAILER_MAGIC: [u8; 4] = *b"ICSG";
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of the trailer: magic and signature.
pub const TRAILER_LEN: usize = TRAILER_MAGIC.len() + SIGNATURE_LEN;
/// Bytes of an Ed25519 public key (what firmware embeds, `icefold convert --sign --emit-rust`).
pub const PUBLIC_KEY_LEN: usize = 32;

/// A signed blob in its two parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed<'a> {
    /// The bytes the signature covers: the blob (header, meta, padding, weights).
    pub message: &'a [u8],
    /// The Ed25519 signature.
    pub signature: &'a [u8; SIGNATURE_LEN],
}

/// Splits `bytes` into blob and signature if its last [`TRAILER_LEN`] bytes are a trailer
/// (magic and 64 bytes). Says nothing about whether the signature is valid.
pub fn split(bytes: &[u8]) -> Option<Signed<'_>> {
    let at = bytes.len().checked_sub(TRAILER_LEN)?;
    let (message, trailer) = bytes.split_at_checked(at)?;
    let (magic, signature) = trailer.split_first_chunk::<4>()?;
    if *magic != TRAILER_MAGIC {
        return None;
    }
    Some(Signed {
        message,
        signature: signature.try_into().ok()?,
    })
}

/// Whether the header's flags field (if `bytes` is long enough to hold a header) has
/// [`FLAG_SIGNED`]: a blob that says it is signed but has no complete trailer was truncated.
pub fn says_signed(bytes: &[u8]) -> bool {
    bytes
        .get(field::FLAGS)
        .filter(|_| bytes.len() >= HEADER_LEN)
        .and_then(|f| <[u8; 2]>::try_from(f).ok())
        .is_some_and(|f| u16::from_le_bytes(f) & FLAG_SIGNED != 0)
}

/// Sets [`FLAG_SIGNED`] in the header of an unsigned blob, in place, before it is signed (the
/// flag is under the signature). `false` if `blob` is shorter than a header.
pub fn mark_signed(blob: &mut [u8]) -> bool {
    if blob.len() < HEADER_LEN {
        return false;
    }
    let Some(flags) = blob.get_mut(field::FLAGS) else {
        return false;
    };
    let value = u16::from_le_bytes([flags[0], flags[1]]) | FLAG_SIGNED;
    flags.copy_from_slice(&value.to_le_bytes());
    true
}

/// The trailer bytes for `signature`, to append to the marked blob.
pub fn trailer(signature: &[u8; SIGNATURE_LEN]) -> [u8; TRAILER_LEN] {
    let mut out = [0u8; TRAILER_LEN];
    let (magic, sig) = out.split_at_mut(TRAILER_MAGIC.len());
    magic.copy_from_slice(&TRAILER_MAGIC);
    sig.copy_from_slice(signature);
    out
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn trailer_round_trips_and_short_or_foreign_tails_are_not_one() {
        let mut blob = [7u8; 40];
        blob[6] = 0;
        assert!(!says_signed(&blob));
        assert!(mark_signed(&mut blob));
        assert!(says_signed(&blob));
        assert_eq!(blob[6], 1);
        let sig = core::array::from_fn::<u8, 64, _>(|i| i as u8);
        let mut signed = blob.to_vec();
        signed.extend_from_slice(&trailer(&sig));
        let s = split(&signed).unwrap();
        assert_eq!((s.message, s.signature), (&blob[..], &sig));
        assert_eq!(split(&signed[..signed.len() - 1]), None, "one byte short");
        assert_eq!(split(&signed[1..]).map(|s| s.message.len()), Some(39));
        assert_eq!(split(&blob), None);
        assert!(!mark_signed(&mut [0u8; 23]));
        assert!(!says_signed(&signed[..23]));
    }
}
