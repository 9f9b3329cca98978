//! Chooses the Arm DSP kernels at build time.
//!
//! Stable Rust never sets `cfg(target_feature = "dsp")` for Arm targets, so the target name
//! decides (as the `cortex-m` crate does): every `thumbv7em-*` core (Cortex-M4, M7) has the DSP
//! extension; a `thumbv8m.main-*` core (Cortex-M33, M35P, M55) may lack it, so there the `dsp`
//! feature asks for it (and the firmware must then be built with `-C target-cpu=cortex-m33` or
//! another core that has it, or the assembler refuses the instructions).
//!
//! Chooses the fast f32 kernels (`icefold_fast_f32`) on the hard-float microcontroller targets
//! (`*-none-eabihf`: Cortex-M4F, M7, M33 with an FPU). Soft-float cores (Cortex-M0/M3, RV32IMC)
//! keep the reference kernels: there every product is a library call, and the register tiles
//! only add code. Hosts keep them too: the tool calibrates int8 models with host f32 inference,
//! so host f32 results decide every int8 blob (tests/golden pins them), and host SIMD kernels
//! are a separate module. Among the chosen targets, the Armv7E-M and Armv8-M Mainline ones
//! (`icefold_vfp`: an FPU with 32 single-precision registers, FPv4-SP or FPv5) run the register
//! tiles as VLDM/VMLA assembly (src/kernels/fast/simd.rs).
//!
//! Thumb-2 cores (`icefold_thumb2`: thumbv7m, thumbv7em, thumbv8m.main) run the int8 dense
//! layers stored in row pairs as a plain Thumb-2 loop in assembly (LLVM unrolled and spilled it).
//!
//! Feature `small-code` (`icefold_reference_only`) keeps the reference kernels on every target
//! but x86_64: none of the above is chosen, and the fast integer kernels step aside. x86_64 hosts keep their kernels (a host has no flash to save, and its f32 kernels
//! decide the tool's calibration).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(icefold_dsp)");
    println!("cargo:rustc-check-cfg=cfg(icefold_fast_f32)");
    println!("cargo:rustc-check-cfg=cfg(icefold_vfp)");
    println!("cargo:rustc-check-cfg=cfg(icefold_reference_only)");
    println!("cargo:rustc-check-cfg=cfg(icefold_thumb2)");
    println!("cargo:rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    let dsp_feature = std::env::var_os("CARGO_FEATURE_DSP").is_some();
    let small_code =
        std::env::var_os("CARGO_FEATURE_SMALL_CODE").is_some() && !target.starts_with("x86_64");
    if small_code {
        println!("cargo:rustc-cfg=icefold_reference_only");
    }
    let dsp_target =
        target.starts_with("thumbv7em-") || (target.starts_with("thumbv8m.main-") && dsp_feature);
    if dsp_target && !small_code {
        println!("cargo:rustc-cfg=icefold_dsp");
    }
    // Thumb-2 cores (M3, M4, M7, M33, M55), with or without DSP: SBFX, SXTB, SXTH, MLA, LDRD.
    let thumb2 = ["thumbv7m-", "thumbv7em-", "thumbv8m.main-"]
        .iter()
        .any(|t| target.starts_with(t));
    if thumb2 && !small_code {
        println!("cargo:rustc-cfg=icefold_thumb2");
    }
    let fpu_mcu = target.ends_with("-none-eabihf");
    if fpu_mcu && !small_code {
        println!("cargo:rustc-cfg=icefold_fast_f32");
    }
    // The x86_64 int8 kernels' AVX512-VNNI sums (src/kernels/x86/int8.rs) need the AVX-512
    // target features, stable since Rust 1.89 (the crate's MSRV is older).
    println!("cargo:rustc-check-cfg=cfg(icefold_vnni)");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let minor = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|v| v.split(' ').nth(1)?.split('.').nth(1)?.parse::<u32>().ok());
    if target.starts_with("x86_64") && minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=icefold_vnni");
    }
    let vfp_core = target.starts_with("thumbv7em-") || target.starts_with("thumbv8m.main-");
    if fpu_mcu && vfp_core && !small_code {
        println!("cargo:rustc-cfg=icefold_vfp");
    }
}
