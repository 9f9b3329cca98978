//! The memory map of the boards `examples/firmware` runs on (`OUT_DIR/memory.x`, which
//! cortex-m-rt's `link.x` includes), and the model: `ICEFOLD_BLOB` names the blob to embed.

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
    fs::copy(&blob, out.join("model.icefold")).expect("ICEFOLD_BLOB must name a readable file");
    println!("cargo::rerun-if-changed={blob}");
    println!("cargo::rerun-if-env-changed=ICEFOLD_IO");
    let io = env::var("ICEFOLD_IO").unwrap_or_else(|_| "f32".into());
    let code = match io.as_str() {
        "f32" => "type In = f32; type Out = f32; const ZERO_IN: In = 0.0; const ZERO_OUT: Out = 0.0;\n\
                  fn run(m: &Model<'_>, a: &mut [u8], x: &[In], y: &mut [Out]) -> Result<(), icefold::RunError> { m.run_f32(a, x, y) }\n"
            .to_string(),
        other => {
            let (i, o) = other.split_once(',').expect("ICEFOLD_IO: f32, or IN,OUT of i8/i16");
            format!(
                "type In = {i}; type Out = {o}; const ZERO_IN: In = 0; const ZERO_OUT: Out = 0;\n\
                 fn run(m: &Model<'_>, a: &mut [u8], x: &[In], y: &mut [Out]) -> Result<(), icefold::RunError> {{ m.run_i8(a, x, y) }}\n"
            )
        }
    };
    fs::write(out.join("io.rs"), code).expect("OUT_DIR is writable");
}
