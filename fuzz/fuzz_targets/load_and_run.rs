//! Parse then run: a blob that loads must run to completion on a deterministic input, with an
//! arena of the size it asks for (up to 64 KiB; larger models are checked to refuse a short arena).
//! Built with `--cfg fuzzing` (CRC comparison skipped, see src/model.rs).
#![no_main]

use icefold::{Model, RunError};
use libfuzzer_sys::fuzz_target;

/// Largest arena given to a run: keeps every execution fast (the seed models need 1 to 20 KiB;
/// a mutated `arena_bytes` alone would otherwise make most executions allocate and clear 1 MiB).
const ARENA_CAP: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut words = vec![0u32; data.len().div_ceil(4)];
    let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()];
    bytes.copy_from_slice(data);
    let Ok(model) = Model::new_checked(bytes) else {
        return;
    };
    let needed = model.arena_bytes();
    if needed > ARENA_CAP {
        // The input and output live in the arena, so they are too large to allocate here; the
        // run must still refuse a short arena before touching anything.
        let mut small = [0u32; 16];
        let result = model.run_f32(bytemuck::cast_slice_mut(&mut small), &[], &mut []);
        assert!(
            matches!(result, Err(RunError::ArenaTooSmall { .. })),
            "{result:?}"
        );
        return;
    }
    let mut arena = vec![0u32; needed.div_ceil(4)];
    let arena = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut arena)[..needed];
    let input: Vec<f32> = (0..model.input().len())
        .map(|i| ((i * 37) % 11) as f32 * 0.5 - 2.5)
        .collect();
    let mut output = vec![0f32; model.output().len()];
    // A loaded model runs: the only run errors are about the caller's buffers, which are right.
    model
        .run_f32(arena, &input, &mut output)
        .expect("a model that loaded refused to run");
});
