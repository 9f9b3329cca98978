//! The supported cores, the QEMU board each runs on, and the tools a run needs.

use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// A supported core, each profiled on one QEMU board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Cortex-M4F (FPU, DSP) on MPS2 AN386.
    CortexM4,
    /// Cortex-M3 (no FPU: soft-float f32) on MPS2 AN385.
    CortexM3,
    /// Cortex-M0 (ARMv6-M, soft-float) on the BBC micro:bit (256 KiB flash, 16 KiB RAM).
    CortexM0,
    /// Cortex-M33 (ARMv8-M Mainline, FPU) on MPS2 AN505.
    CortexM33,
}

impl Target {
    /// Every supported target.
    pub const ALL: [Target; 4] = [
        Target::CortexM4,
        Target::CortexM3,
        Target::CortexM0,
        Target::CortexM33,
    ];

    /// The name used on the command line (`cortex-m4`).
    pub fn name(self) -> &'static str {
        match self {
            Target::CortexM4 => "cortex-m4",
            Target::CortexM3 => "cortex-m3",
            Target::CortexM0 => "cortex-m0",
            Target::CortexM33 => "cortex-m33",
        }
    }

    /// The Rust target triple the firmware is compiled for.
    pub fn triple(self) -> &'static str {
        match self {
            Target::CortexM4 => "thumbv7em-none-eabihf",
            Target::CortexM3 => "thumbv7m-none-eabi",
            Target::CortexM0 => "thumbv6m-none-eabi",
            Target::CortexM33 => "thumbv8m.main-none-eabihf",
        }
    }

    /// True if the firmware for this core links only its model's kernels (firmware feature
    /// `model-kernels`): the micro:bit, whose 256 KiB of flash the soft-float runtime with every
    /// kernel (about 236 KB) nearly fills. The other boards link every kernel.
    pub fn links_model_kernels_only(self) -> bool {
        matches!(self, Target::CortexM0)
    }

    /// True if the core has a single-precision FPU (otherwise f32 is soft-float calls).
    pub fn has_fpu(self) -> bool {
        matches!(self, Target::CortexM4 | Target::CortexM33)
    }

    /// QEMU `-machine`.
    pub fn machine(self) -> &'static str {
        match self {
            Target::CortexM4 => "mps2-an386",
            Target::CortexM3 => "mps2-an385",
            Target::CortexM0 => "microbit",
            Target::CortexM33 => "mps2-an505",
        }
    }

    /// RAM of the QEMU board's memory map (`examples/firmware/memory/`).
    pub fn ram_bytes(self) -> u64 {
        match self {
            Target::CortexM4 | Target::CortexM3 => 4 << 20,
            Target::CortexM0 => 16 << 10,
            Target::CortexM33 => 2 << 20,
        }
    }

    /// True if the cycle plugin's model (the Cortex-M4's timings, docs/MCU.md) applies to this
    /// core. The Cortex-M3 shares the integer pipeline but takes 3 to 7 cycles for long
    /// multiplies; the Cortex-M0 and M33 time differently: their cycles are not estimated.
    pub fn has_cycle_model(self) -> bool {
        self == Target::CortexM4
    }

    /// Extra build settings for cores whose DSP extension is optional in their architecture: the
    /// MPS2 AN505's Cortex-M33 has it, so its firmware enables the runtime's `dsp` feature and
    /// tells the compiler the core (`(cargo features, rustflags)`). Armv7E-M (Cortex-M4) always
    /// has it and needs nothing; the M3 and M0 have none.
    pub fn dsp_build(self) -> Option<(&'static str, &'static str)> {
        (self == Target::CortexM33).then_some(("dsp", "-C target-cpu=cortex-m33"))
    }

    /// QEMU `-cpu`.
    pub fn cpu(self) -> &'static str {
        match self {
            Target::CortexM4 => "cortex-m4",
            Target::CortexM3 => "cortex-m3",
            Target::CortexM0 => "cortex-m0",
            Target::CortexM33 => "cortex-m33",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Target> {
        let key = s.to_ascii_lowercase();
        let key = key.trim_end_matches('f'); // cortex-m4f, cortex-m33f
        Target::ALL
            .into_iter()
            .find(|t| t.name() == key || t.triple() == s)
            .ok_or_else(|| {
                anyhow!(
                    "unknown target `{s}`; choose one of {}",
                    Target::ALL.map(Target::name).join(", ")
                )
            })
    }
}

/// Checks that QEMU and the Rust target are installed; the error says how to install them.
pub fn check_prerequisites(target: Target) -> Result<()> {
    let qemu = Command::new("qemu-system-arm")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if !matches!(qemu, Ok(ref o) if o.status.success()) {
        bail!(
            "qemu-system-arm is not installed (needed to run the firmware); install it with \
             `sudo apt-get install --no-install-recommends qemu-system-arm` (Debian/Ubuntu), \
             `brew install qemu` (macOS) or your system's QEMU package (version 7.2 or newer)"
        );
    }
    let sysroot = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "sysroot"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run rustc; is a Rust toolchain installed (https://rustup.rs)?")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let lib = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target.triple());
    if !lib.is_dir() {
        bail!(
            "the Rust target {} (for {target}) is not installed; install it with \
             `rustup target add {}`",
            target.triple(),
            target.triple()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_name_and_triple() {
        assert_eq!("cortex-m4".parse::<Target>().unwrap(), Target::CortexM4);
        assert_eq!("Cortex-M4F".parse::<Target>().unwrap(), Target::CortexM4);
        assert_eq!(
            "thumbv6m-none-eabi".parse::<Target>().unwrap(),
            Target::CortexM0
        );
        let e = "cortex-m7".parse::<Target>().unwrap_err().to_string();
        assert!(e.contains("cortex-m33"), "{e}");
    }
}
