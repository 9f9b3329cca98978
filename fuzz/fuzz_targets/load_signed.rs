//! `Model::new_signed` on arbitrary bytes, and on those bytes signed with a fixed test key.
//!
//! Unlike the CRC, the signature is not skipped under `--cfg fuzzing`: a fuzzer cannot forge
//! one, so every input as given must be refused, never panic. To reach the checks behind the
//! signature, the target also signs the input itself (as `icefold sign` would: flag set, trailer
//! appended) and then requires `new_signed` to agree with `new_checked` on it, and to refuse it
//! after one byte chosen by the input is changed.
#![no_main]

use ed25519_compact::{KeyPair, Seed};
use icefold::format::signature::{mark_signed, trailer};
use icefold::Model;
use libfuzzer_sys::fuzz_target;

/// u32 storage, so every input is tested on its content and not on its alignment.
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

fuzz_target!(|data: &[u8]| {
    let key = KeyPair::from_seed(Seed::new([0x2a; 32]));
    let pk: [u8; 32] = *key.pk;

    let words = aligned(data);
    let given = &bytemuck::cast_slice::<u32, u8>(&words)[..data.len()];
    assert!(
        Model::new_signed(given, &pk).is_err(),
        "an input the fuzzer made carries a valid signature"
    );

    // Signed here: from now on only the loader's checks decide.
    let mut signed = data.to_vec();
    if !mark_signed(&mut signed) {
        return;
    }
    let signature = key.sk.sign(&signed, None);
    signed.extend_from_slice(&trailer(&signature));
    let words = aligned(&signed);
    let bytes = &bytemuck::cast_slice::<u32, u8>(&words)[..signed.len()];
    let verified = Model::new_signed(bytes, &pk);
    let checked = Model::new_checked(bytes);
    assert_eq!(verified.is_ok(), checked.is_ok(), "{verified:?} vs {checked:?}");
    if let Ok(model) = verified {
        assert_eq!(model.layers().count(), usize::from(model.info().layer_count));
    }

    // One byte changed (position and value from the input): refused by the signature.
    let at = data.first().map_or(0, |&b| usize::from(b) * 257) % signed.len();
    let mut tampered = signed.clone();
    tampered[at] ^= data.get(1).copied().unwrap_or(1).max(1);
    let words = aligned(&tampered);
    let bytes = &bytemuck::cast_slice::<u32, u8>(&words)[..tampered.len()];
    assert!(Model::new_signed(bytes, &pk).is_err(), "byte {at} changed");
});
