//! Loading signed blobs: [`Model::new_signed`] (feature `signed`).
//!
//! The verifier is ed25519-compact built with `opt_size`: of the no_std Ed25519 crates compared
//! on a Cortex-M4F it gave the best balance of flash and time for one verification per update
//! (docs/BENCHMARKS.md has the comparison). Verification runs over the untrusted bytes with no
//! parsing at all, so the loader's checks only ever see bytes the vendor signed.

use super::{LoadError, Model};
use crate::engine::Kernels;
use crate::format::signature::{self, PUBLIC_KEY_LEN};

impl<'a> Model<'a> {
    /// Verifies the Ed25519 signature of a signed blob with `public_key` before parsing anything,
    /// then validates it as [`Model::new_checked`] does.
    ///
    /// Refuses, each with its own error: a blob without signature ([`LoadError::Unsigned`]), one
    /// whose header says signed but whose trailer is cut short ([`LoadError::SignatureTruncated`]),
    /// and one whose signature does not verify ([`LoadError::SignatureInvalid`]: any byte changed
    /// after signing, another key, another blob's signature). The format is in
    /// [`format::signature`](crate::format::signature) and docs/FORMAT.md; the key pair comes
    /// from `icefold keygen`, and `icefold convert --sign KEY --emit-rust` writes the public key
    /// as a `const` for the firmware.
    ///
    /// Time: one SHA-512 pass over the blob and one double scalar multiplication (about 4 M
    /// instructions on a Cortex-M4F for a 16 KiB blob; docs/BENCHMARKS.md).
    pub fn new_signed(
        blob: &'a [u8],
        public_key: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<Model<'a>, LoadError> {
        Model::new_signed_with_kernels(blob, public_key)
    }
}

impl<'a, K: Kernels> Model<'a, K> {
    /// [`Model::new_signed`] for a firmware that links only the kernels of `K`: after the
    /// signature, the checks of [`Model::new_checked_with_kernels`] (a layer outside the set is
    /// refused with [`LoadError::KernelNotLinked`]).
    pub fn new_signed_with_kernels(
        blob: &'a [u8],
        public_key: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<Model<'a, K>, LoadError> {
        let Some(signed) = signature::split(blob) else {
            return Err(if signature::says_signed(blob) {
                LoadError::SignatureTruncated
            } else {
                LoadError::Unsigned
            });
        };
        let key = ed25519_compact::PublicKey::new(*public_key);
        let sig = ed25519_compact::Signature::new(*signed.signature);
        key.verify(signed.message, &sig)
            .map_err(|_| LoadError::SignatureInvalid)?;
        // Authentic: now the integrity and structure checks, on exactly the signed bytes (the
        // header must say signed, or its lengths do not cover the trailer).
        Model::new_checked_with_kernels(blob)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use ed25519_compact::{KeyPair, Seed};
    use proptest::prelude::*;

    use super::*;
    use crate::format::signature::{mark_signed, trailer, TRAILER_LEN};
    use crate::model::int8_tests::int8_model;
    use crate::testutil::*;

    fn key(seed: u8) -> KeyPair {
        KeyPair::from_seed(Seed::new([seed; 32]))
    }

    fn public(k: &KeyPair) -> [u8; PUBLIC_KEY_LEN] {
        *k.pk
    }

    /// What `icefold sign` does: set the flag, sign everything, append the trailer.
    fn sign(blob: &[u8], k: &KeyPair) -> Blob {
        let mut bytes = blob.to_vec();
        assert!(mark_signed(&mut bytes));
        let sig = k.sk.sign(&bytes, None);
        bytes.extend_from_slice(&trailer(&sig));
        aligned(&bytes)
    }

    fn aligned(bytes: &[u8]) -> Blob {
        let mut b = Blob::zeroed(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    #[test]
    fn a_signed_blob_loads_with_its_key_and_new_checked_loads_both() {
        let unsigned = tiny().blob();
        let k = key(1);
        let signed = sign(unsigned.bytes(), &k);
        assert_eq!(signed.bytes().len(), unsigned.bytes().len() + TRAILER_LEN);
        let m = Model::new_signed(signed.bytes(), &public(&k)).unwrap();
        let plain = Model::new_checked(unsigned.bytes()).unwrap();
        assert_eq!(m.info(), plain.info());
        assert_eq!(m.weights(), plain.weights());
        // new_checked takes signed blobs too, without verifying (integrity, not origin).
        assert!(Model::new_checked(signed.bytes()).is_ok());
        let mut forged = aligned(signed.bytes());
        let n = forged.bytes().len();
        forged.bytes_mut()[n - 1] ^= 1;
        assert!(Model::new_checked(forged.bytes()).is_ok());
        assert_eq!(
            Model::new_signed(forged.bytes(), &public(&k)).err(),
            Some(LoadError::SignatureInvalid)
        );
        // And runs like the unsigned blob.
        let x = values(32, 3);
        let (mut a, mut b) = (Blob::zeroed(m.arena_bytes()), Blob::zeroed(m.arena_bytes()));
        let (mut ya, mut yb) = ([0f32; 5], [0f32; 5]);
        m.run_f32(a.bytes_mut(), &x, &mut ya).unwrap();
        plain.run_f32(b.bytes_mut(), &x, &mut yb).unwrap();
        assert_eq!(ya, yb);
    }

    #[test]
    fn a_signed_blob_loads_with_a_kernel_set_only_if_the_set_runs_it() {
        use crate::engine::{KernelSet, Kernels};
        struct Int8Only;
        impl Kernels for Int8Only {
            const SET: KernelSet = KernelSet::INT8;
        }
        struct F32Only;
        impl Kernels for F32Only {
            const SET: KernelSet = KernelSet::F32;
        }
        let k = key(2);
        let signed = sign(tiny().blob().bytes(), &k);
        let f32_only = Model::<F32Only>::new_signed_with_kernels(signed.bytes(), &public(&k));
        assert!(f32_only.is_ok());
        // The f32 model's first layer, a convolution, has no kernel in an int8-only firmware.
        let refused = Model::<Int8Only>::new_signed_with_kernels(signed.bytes(), &public(&k));
        assert_eq!(
            refused.err(),
            Some(LoadError::KernelNotLinked {
                layer: 0,
                kernel: crate::engine::Kernel::Conv2d
            })
        );
        // The signature comes first, whatever the set.
        let other = key(3);
        let foreign = Model::<F32Only>::new_signed_with_kernels(signed.bytes(), &public(&other));
        assert_eq!(foreign.err(), Some(LoadError::SignatureInvalid));
    }

    #[test]
    fn unsigned_wrong_key_other_blob_and_truncated_signatures_are_refused() {
        let (k, other_key) = (key(1), key(2));
        let pk = public(&k);
        let a = tiny().blob();
        let b = int8_model().blob();
        let (sa, sb) = (sign(a.bytes(), &k), sign(b.bytes(), &k));

        assert_eq!(
            Model::new_signed(a.bytes(), &pk).err(),
            Some(LoadError::Unsigned)
        );
        assert_eq!(Model::new_signed(&[], &pk).err(), Some(LoadError::Unsigned));
        assert_eq!(
            Model::new_signed(sign(a.bytes(), &other_key).bytes(), &pk).err(),
            Some(LoadError::SignatureInvalid),
            "another key"
        );
        // A's bytes with B's (valid, same key) signature.
        let mut swapped = sa.bytes()[..sa.bytes().len() - TRAILER_LEN].to_vec();
        swapped.extend_from_slice(&sb.bytes()[sb.bytes().len() - TRAILER_LEN..]);
        assert_eq!(
            Model::new_signed(aligned(&swapped).bytes(), &pk).err(),
            Some(LoadError::SignatureInvalid),
            "another blob's signature"
        );
        // Every truncation of the trailer (and of the blob behind it).
        for cut in 1..=TRAILER_LEN + 8 {
            let short = aligned(&sa.bytes()[..sa.bytes().len() - cut]);
            assert_eq!(
                Model::new_signed(short.bytes(), &pk).err(),
                Some(LoadError::SignatureTruncated),
                "cut {cut} bytes"
            );
            assert!(
                Model::new_checked(short.bytes()).is_err(),
                "cut {cut} bytes"
            );
        }
        // The signature over the unmarked blob (flag clear) does not verify the marked one.
        let mut unmarked = a.bytes().to_vec();
        let sig = k.sk.sign(&unmarked, None);
        mark_signed(&mut unmarked);
        unmarked.extend_from_slice(&trailer(&sig));
        assert_eq!(
            Model::new_signed(aligned(&unmarked).bytes(), &pk).err(),
            Some(LoadError::SignatureInvalid)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any byte of a signed blob changed, anywhere (header, meta, weights, trailer): refused,
        /// by the signature (or, in the trailer magic, as a blob whose signature is missing).
        #[test]
        fn a_changed_byte_anywhere_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let k = key(7);
            let signed = sign(int8_model().blob().bytes(), &k);
            let mut bytes = signed.bytes().to_vec();
            let n = bytes.len();
            let i = at.index(n);
            bytes[i] ^= flip;
            let got = Model::new_signed(aligned(&bytes).bytes(), &public(&k)).err();
            let in_magic = (n - TRAILER_LEN..n - TRAILER_LEN + 4).contains(&i);
            let want = if in_magic { LoadError::SignatureTruncated } else { LoadError::SignatureInvalid };
            prop_assert_eq!(got, Some(want), "byte {} of {}", i, n);
        }
    }
}
