//! Picks the memory map of the QEMU board for the target being built (the profiling firmware's
//! maps, `../firmware/memory/`), copied to `OUT_DIR/memory.x` for cortex-m-rt's `link.x`.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    let memory = match target.as_str() {
        "thumbv7em-none-eabihf" | "thumbv7em-none-eabi" | "thumbv7m-none-eabi" => "mps2.x",
        "thumbv8m.main-none-eabihf" | "thumbv8m.main-none-eabi" => "mps2-an505.x",
        "thumbv6m-none-eabi" => "microbit.x",
        _ => panic!("icefold-kernel-check has no board for target `{target}`"),
    };
    let from = manifest.join("../firmware/memory").join(memory);
    println!("cargo::rerun-if-changed={}", from.display());
    fs::copy(&from, out.join("memory.x"))
        .unwrap_or_else(|e| panic!("cannot copy {} to OUT_DIR: {e}", from.display()));
    println!("cargo::rustc-link-search={}", out.display());
}
