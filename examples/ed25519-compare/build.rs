//! The firmware example's MPS2 memory map and timer (shared files, not copies).
use std::{env, fs, path::PathBuf};
fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::copy("../firmware/memory/mps2.x", out.join("memory.x")).unwrap();
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=../firmware/memory/mps2.x");
    println!("cargo::rustc-check-cfg=cfg(icefold_board, values(\"mps2\", \"mps2_an505\", \"microbit\"))");
    println!("cargo::rustc-cfg=icefold_board=\"mps2\"");
}
