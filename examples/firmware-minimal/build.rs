//! The memory map of the boards `examples/firmware` runs on (`OUT_DIR/memory.x`, which
//! cortex-m-rt's `link.x` includes), and the model: `ICEFOLD_BLOB` names the blob to embed.
//!
//! The kernels the firmware links (`OUT_DIR/kernels.rs`, a `Kernels` type): by default exactly
//! those of the blob (`KernelSet::of`, computed here with the runtime on the host);
//! `ICEFOLD_KERNELS=all`, `int8` or `f32` links every kernel, or every one of a precision (what a
//! firmware that loads models it does not know at build time needs).

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    let memory = match target.as_str() {
        "thumbv6m-none-eabi" => "microbit.x",
        t if t.starts_with("thumbv8m") => "mps2-an505.x",
        _ => "mps2.x",
    };
    let memory = manifest.join("../firmware/memory").join(memory);
    fs::copy(&memory, out.join("memory.x")).expect("the boards' memory maps in examples/firmware");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=ICEFOLD_BLOB");
    let blob = env::var("ICEFOLD_BLOB").expect("set ICEFOLD_BLOB to the model blob to embed");
    let bytes = fs::read(&blob).expect("ICEFOLD_BLOB must name a readable file");
    fs::write(out.join("model.icefold"), &bytes).expect("OUT_DIR is writable");
    println!("cargo::rerun-if-changed={blob}");
    println!("cargo::rerun-if-env-changed=ICEFOLD_KERNELS");
    let set = match env::var("ICEFOLD_KERNELS").as_deref() {
        Ok("all") => "icefold::engine::KernelSet::ALL".to_string(),
        // A precision with the engine parts any model of it may need (layers in place, the
        // input transposed, slices in place), as the runtime's Cargo features give them.
        Ok("int8") => "icefold::engine::KernelSet::INT8.union(icefold::engine::KernelSet::PLAN)"
            .to_string(),
        Ok("f32") => "icefold::engine::KernelSet::F32.union(icefold::engine::KernelSet::PLAN)"
            .to_string(),
        Ok("model") | Err(_) => model_kernels(&bytes),
        Ok(other) => panic!("ICEFOLD_KERNELS: model (default), all, int8 or f32, not {other}"),
    };
    let kernels = format!(
        "/// The kernels this firmware links (build.rs, `ICEFOLD_KERNELS`).\n\
         struct ModelKernels;\n\
         impl icefold::engine::Kernels for ModelKernels {{\n    \
             const SET: icefold::engine::KernelSet = {set};\n\
         }}\n"
    );
    fs::write(out.join("kernels.rs"), kernels).expect("OUT_DIR is writable");
    println!("cargo::rerun-if-env-changed=ICEFOLD_IO");
    let io = env::var("ICEFOLD_IO").unwrap_or_else(|_| "f32".into());
    let code = match io.as_str() {
        "f32" => "type In = f32; type Out = f32; const ZERO_IN: In = 0.0; const ZERO_OUT: Out = 0.0;\n\
                  fn run(m: &Model<'_, ModelKernels>, a: &mut [u8], x: &[In], y: &mut [Out]) -> Result<(), icefold::RunError> { m.run_f32(a, x, y) }\n"
            .to_string(),
        other => {
            let (i, o) = other.split_once(',').expect("ICEFOLD_IO: f32, or IN,OUT of i8/i16");
            format!(
                "type In = {i}; type Out = {o}; const ZERO_IN: In = 0; const ZERO_OUT: Out = 0;\n\
                 fn run(m: &Model<'_, ModelKernels>, a: &mut [u8], x: &[In], y: &mut [Out]) -> Result<(), icefold::RunError> {{ m.run_i8(a, x, y) }}\n"
            )
        }
    };
    fs::write(out.join("io.rs"), code).expect("OUT_DIR is writable");
}

/// The blob's kernel set as a Rust expression (`KernelSet::EMPTY.with(Kernel::..)..`).
fn model_kernels(bytes: &[u8]) -> String {
    // The loader takes 4-byte aligned blobs only: copy into an aligned window of a buffer.
    let mut buffer = vec![0u8; bytes.len() + icefold::format::ARENA_ALIGN];
    let skip = buffer.as_ptr().align_offset(icefold::format::ARENA_ALIGN);
    let aligned = &mut buffer[skip..skip + bytes.len()];
    aligned.copy_from_slice(bytes);
    let model = icefold::Model::new_checked(aligned)
        .unwrap_or_else(|e| panic!("ICEFOLD_BLOB does not load: {e}"));
    let set = icefold::engine::KernelSet::of(&model);
    let mut code = String::from("icefold::engine::KernelSet::EMPTY");
    for kernel in set.iter() {
        code += &format!(
            "\n        .with(icefold::engine::Kernel::{})",
            kernel.name()
        );
    }
    code
}
