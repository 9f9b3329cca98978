//! Chooses the Arm DSP kernels at build time.
//!
//! Stable Rust never sets `cfg(target_feature = "dsp")` for Arm targets, so the target name
//! decides (as the `cortex-m` crate does): every `thumbv7em-*` core (Cortex-M4, M7) has the DSP
//! extension; a `thumbv8m.main-*` core (Cortex-M33, M35P, M55) may lack it, so there the `dsp`
//! feature asks for it (and the firmware must then be built with `-C target-cpu=cortex-m33` or
//! another core that has it, or the assembler refuses the instructions).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(icefold_dsp)");
    println!("cargo:rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    let dsp_feature = std::env::var_os("CARGO_FEATURE_DSP").is_some();
    if target.starts_with("thumbv7em-") || (target.starts_with("thumbv8m.main-") && dsp_feature) {
        println!("cargo:rustc-cfg=icefold_dsp");
    }
}
