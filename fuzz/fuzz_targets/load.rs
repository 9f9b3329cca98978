//! `Model::new_checked` on arbitrary bytes: every input is either refused or yields a model whose
//! accessors work. Built with `--cfg fuzzing`, which skips the CRC comparison (src/model.rs) so
//! that mutations reach the structural checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader refuses unaligned blobs; copy into u32 storage so every input is tested on its
    // content (libFuzzer's buffer is usually aligned, but that is not promised).
    let mut words = vec![0u32; data.len().div_ceil(4)];
    let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()];
    bytes.copy_from_slice(data);
    if let Ok(model) = icefold::Model::new_checked(bytes) {
        // Walk everything a caller can reach on a loaded model.
        let layers = model.layers().count();
        assert_eq!(layers, usize::from(model.info().layer_count));
        let _ = (model.input().len(), model.output().len(), model.weights().len());
    }
});
