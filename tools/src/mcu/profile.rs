//! What `icefold mcu` measures: the profile, its JSON form and its table.

use std::fmt::Write as _;
use std::path::PathBuf;

use icefold::format::{Layer, Op};

use super::parity::{Parity, F32_REL_L2_LIMIT};
use super::report::{SignedReport, TraceRecord};
use super::target::Target;
use crate::io::Array;

/// One layer's cost on the MCU.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerProfile {
    /// Position in the schedule.
    pub index: usize,
    /// Short op description (`Conv2d i8 3x3/1 g1`, as `icefold inspect` prints it).
    pub kind: String,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Instructions per inference (mean over the samples, rounded), as [`Profile::counter`]
    /// counted them: including the few instructions of the marker calls (plugin) or of the
    /// timer reads (timer) around the layer.
    pub instructions: u64,
    /// Instructions per inference by the firmware's timer under `-icount` (equal to
    /// `instructions` when the timer counted them).
    pub timer_instructions: u64,
    /// Estimated Cortex-M4 cycles per inference (the plugin's model), on a Cortex-M4 only.
    pub cycles: Option<u64>,
}

impl LayerProfile {
    /// MACs per instruction (`None` for layers without MACs).
    pub fn macs_per_instruction(&self) -> Option<f64> {
        (self.macs > 0 && self.instructions > 0)
            .then(|| self.macs as f64 / self.instructions as f64)
    }
}

/// What counted the instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// The project's QEMU plugin between the firmware's marker functions (exact; estimates
    /// Cortex-M4 cycles too).
    Plugin,
    /// The firmware's timer under QEMU's `-icount` (no C compiler to build the plugin).
    Timer,
}

impl Counter {
    /// Name in the JSON profile.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Plugin => "plugin",
            Counter::Timer => "timer",
        }
    }
}

/// Everything `icefold mcu` measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The core.
    pub target: Target,
    /// The model ran on int8 boundaries (`run_i8` on host-quantized inputs).
    pub int8: bool,
    /// Outputs as float32, shaped `[N, ...]` like the ONNX model's output (int8 outputs
    /// dequantized with `icefold::engine::dequantize`, as `icefold run` writes them).
    pub outputs: Array,
    /// The raw output bytes per sample, as the firmware computed them: little-endian f32, or
    /// int8.
    pub output_bytes: Vec<Vec<u8>>,
    /// Per-layer costs.
    pub layers: Vec<LayerProfile>,
    /// Instructions of each whole inference (`run_f32_observed` or `run_i8_observed` call),
    /// per sample.
    pub instructions_per_sample: Vec<u64>,
    /// Mean of `instructions_per_sample`, rounded.
    pub instructions_per_inference: u64,
    /// Instructions of each whole inference by the firmware's timer under `-icount` (equal to
    /// `instructions_per_sample` when the timer counted them).
    pub timer_instructions_per_sample: Vec<u64>,
    /// Estimated Cortex-M4 cycles of each inference (empty unless the plugin ran on a Cortex-M4).
    pub cycles_per_sample: Vec<u64>,
    /// Mean of `cycles_per_sample`, rounded.
    pub cycles_per_inference: Option<u64>,
    /// What counted the instructions.
    pub counter: Counter,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Flash for everything but the model and the embedded test inputs: runtime, firmware,
    /// vector table, constants.
    pub flash_code_bytes: u64,
    /// Flash for the model blob.
    pub flash_model_bytes: u64,
    /// Flash for the embedded input samples (profiling only; a product reads a sensor).
    pub flash_inputs_bytes: u64,
    /// Static RAM (`.data` + `.bss`) a product needs: the arena and the firmware's statics,
    /// without the profiling harness's result buffers (`ram_harness_bytes`).
    pub ram_static_bytes: u64,
    /// Static RAM of the profiling harness (per-sample outputs and instruction counts).
    pub ram_harness_bytes: u64,
    /// The arena (part of `ram_static_bytes`).
    pub arena_bytes: u64,
    /// Deepest stack use, from reset through every inference.
    pub stack_peak_bytes: u64,
    /// The firmware image that ran.
    pub elf: PathBuf,
    /// The device's per-layer trace of sample 0 (defmt firmware only; empty otherwise).
    pub trace: Vec<TraceRecord>,
    /// Signed loading on the device (`icefold mcu --public-key`).
    pub signed: Option<SignedReport>,
    /// Clamped values per layer counted on the device (`icefold mcu --drift`): `(layer, values,
    /// low, high)`.
    pub drift: Vec<(usize, u64, u64, u64)>,
}

impl Profile {
    /// MACs per instruction (0 if nothing ran).
    pub fn macs_per_instruction(&self) -> f64 {
        if self.instructions_per_inference == 0 {
            0.0
        } else {
            self.macs as f64 / self.instructions_per_inference as f64
        }
    }

    /// Estimated cycles per instruction (`None` without a cycle estimate).
    pub fn cycles_per_instruction(&self) -> Option<f64> {
        let cycles = self.cycles_per_inference?;
        (self.instructions_per_inference > 0)
            .then(|| cycles as f64 / self.instructions_per_inference as f64)
    }

    /// The profile as JSON, with the parity verdict.
    pub fn to_json(&self, parity: Option<&Parity>) -> String {
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"target\": {},", json_str(self.target.name()));
        let _ = writeln!(s, "  \"triple\": {},", json_str(self.target.triple()));
        let _ = writeln!(
            s,
            "  \"qemu_machine\": {},",
            json_str(self.target.machine())
        );
        let _ = writeln!(
            s,
            "  \"elements\": {},",
            json_str(if self.int8 { "i8" } else { "f32" })
        );
        let _ = writeln!(s, "  \"samples\": {},", self.instructions_per_sample.len());
        let _ = writeln!(
            s,
            "  \"instructions_per_inference\": {},",
            self.instructions_per_inference
        );
        let per_sample: Vec<String> = self
            .instructions_per_sample
            .iter()
            .map(u64::to_string)
            .collect();
        let _ = writeln!(
            s,
            "  \"instructions_per_sample\": [{}],",
            per_sample.join(", ")
        );
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let _ = writeln!(s, "  \"counter\": {},", json_str(self.counter.name()));
        let _ = writeln!(
            s,
            "  \"timer_instructions_per_sample\": [{}],",
            list(&self.timer_instructions_per_sample)
        );
        let _ = writeln!(
            s,
            "  \"cycle_model\": {},",
            if self.cycles_per_inference.is_some() {
                json_str("cortex-m4")
            } else {
                "null".into()
            }
        );
        let _ = writeln!(
            s,
            "  \"cycles_per_inference\": {},",
            json_opt(self.cycles_per_inference)
        );
        let _ = writeln!(
            s,
            "  \"cycles_per_sample\": [{}],",
            list(&self.cycles_per_sample)
        );
        let _ = writeln!(
            s,
            "  \"cycles_per_instruction\": {},",
            self.cycles_per_instruction()
                .map_or("null".into(), |c| format!("{c:.6}"))
        );
        let _ = writeln!(s, "  \"macs\": {},", self.macs);
        let _ = writeln!(
            s,
            "  \"macs_per_instruction\": {:.6},",
            self.macs_per_instruction()
        );
        let _ = writeln!(s, "  \"flash_code_bytes\": {},", self.flash_code_bytes);
        let _ = writeln!(s, "  \"flash_model_bytes\": {},", self.flash_model_bytes);
        let _ = writeln!(s, "  \"flash_inputs_bytes\": {},", self.flash_inputs_bytes);
        let _ = writeln!(s, "  \"ram_static_bytes\": {},", self.ram_static_bytes);
        let _ = writeln!(s, "  \"ram_harness_bytes\": {},", self.ram_harness_bytes);
        let _ = writeln!(s, "  \"arena_bytes\": {},", self.arena_bytes);
        let _ = writeln!(s, "  \"stack_peak_bytes\": {},", self.stack_peak_bytes);
        if let Some(p) = parity {
            let _ = writeln!(s, "  \"max_abs\": {},", json_f64(p.max_abs));
            let _ = writeln!(s, "  \"rel_l2\": {},", json_f64(p.rel_l2));
            let _ = writeln!(s, "  \"bytes_identical\": {},", p.bytes_identical);
            let _ = writeln!(s, "  \"pass\": {},", p.pass);
        }
        s.push_str("  \"layers\": [\n");
        for (i, l) in self.layers.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"index\": {}, \"kind\": {}, \"macs\": {}, \"instructions\": {}, \
                 \"timer_instructions\": {}, \"cycles\": {}, \"macs_per_instruction\": {}}}",
                l.index,
                json_str(&l.kind),
                l.macs,
                l.instructions,
                l.timer_instructions,
                json_opt(l.cycles),
                l.macs_per_instruction()
                    .map_or("null".into(), |r| format!("{r:.6}"))
            );
            s.push_str(if i + 1 < self.layers.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        s.push_str("  ]\n}\n");
        s
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(x: Option<u64>) -> String {
    x.map_or("null".into(), |x| x.to_string())
}

fn json_f64(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".into()
    }
}

/// Multiply-accumulates of one runtime layer (convolution and dense; 0 for the rest).
pub fn layer_macs(layer: &Layer) -> u64 {
    // A fused convolution and pooling: the convolution's, over the output it never stores.
    let out = layer.fused_intermediate().unwrap_or(layer.output).len() as u64;
    let input = &layer.inputs[0];
    let conv = |c: &icefold::format::Conv2d| {
        let in_per_group = u64::from(input.dims[2]) / u64::from(c.groups.max(1));
        out * u64::from(c.kernel[0]) * u64::from(c.kernel[1]) * in_per_group
    };
    match &layer.op {
        Op::Conv2d(c) => conv(c),
        Op::Conv2dI8(c) => conv(&c.conv),
        Op::Conv2dI16(c) => conv(&c.conv),
        Op::Conv2dPool(f) => conv(&f.conv),
        Op::Conv2dPoolI8(f) => conv(&f.conv.conv),
        Op::Conv2dPoolI16(f) => conv(&f.conv.conv),
        Op::Dense(_) | Op::DenseI8(_) | Op::DenseI8Wide(_) => out * input.len() as u64,
        _ => 0,
    }
}

/// The human-readable report: per-layer table, totals, sizes and the parity verdict.
pub fn render(p: &Profile, parity: &Parity) -> String {
    let mut s = String::new();
    let cycles = p.cycles_per_inference.is_some();
    let _ = write!(
        s,
        "{:>3}  {:<36} {:>12} {:>14}",
        "#", "layer", "MACs", "instructions"
    );
    if cycles {
        let _ = write!(s, " {:>14} {:>8}", "est. cycles", "cyc/insn");
    }
    let _ = writeln!(s, " {:>9}", "MAC/insn");
    for l in &p.layers {
        let ratio = l
            .macs_per_instruction()
            .map_or("-".into(), |r| format!("{r:.3}"));
        let _ = write!(
            s,
            "{:>3}  {:<36} {:>12} {:>14}",
            l.index, l.kind, l.macs, l.instructions
        );
        if let Some(c) = l.cycles {
            let cpi = if l.instructions > 0 {
                format!("{:.2}", c as f64 / l.instructions as f64)
            } else {
                "-".into()
            };
            let _ = write!(s, " {c:>14} {cpi:>8}");
        }
        let _ = writeln!(s, " {ratio:>9}");
    }
    let _ = writeln!(s);
    let (min, max) = (
        p.instructions_per_sample.iter().min().copied().unwrap_or(0),
        p.instructions_per_sample.iter().max().copied().unwrap_or(0),
    );
    let spread = if min == max {
        String::new()
    } else {
        format!(" (samples range {min} to {max})")
    };
    let _ = writeln!(
        s,
        "instructions per inference  {}{spread}",
        p.instructions_per_inference
    );
    let _ = writeln!(
        s,
        "counted by                  {}",
        match p.counter {
            Counter::Plugin => "the QEMU plugin between the firmware's marker functions (exact)",
            Counter::Timer => {
                "the firmware's timer under -icount (no C compiler to build the cycle plugin: \
                 install gcc for exact counts and Cortex-M4 cycle estimates)"
            }
        }
    );
    match (p.cycles_per_inference, p.cycles_per_instruction()) {
        (Some(c), Some(cpi)) => {
            let _ = writeln!(
                s,
                "est. Cortex-M4 cycles       {c} per inference ({cpi:.2} per instruction; model: \
                 docs/MCU.md)"
            );
        }
        _ if p.counter == Counter::Plugin => {
            let _ = writeln!(
                s,
                "est. cycles                 not estimated on {} (the model is the Cortex-M4's)",
                p.target
            );
        }
        _ => {}
    }
    let _ = writeln!(s, "MACs per inference          {}", p.macs);
    let _ = writeln!(
        s,
        "MACs per instruction        {:.3}",
        p.macs_per_instruction()
    );
    let _ = writeln!(
        s,
        "flash                       {} code + {} model (+ {} embedded test inputs)",
        p.flash_code_bytes, p.flash_model_bytes, p.flash_inputs_bytes
    );
    let _ = writeln!(
        s,
        "RAM                         {} static (arena {}) + {} peak stack (+ {} profiling buffers)",
        p.ram_static_bytes, p.arena_bytes, p.stack_peak_bytes, p.ram_harness_bytes
    );
    if let Some(v) = &p.signed {
        let _ = writeln!(
            s,
            "signed load                 new_signed {} instructions ({} over new_checked), {} B \
             stack; refused: tampered {}, truncated {}, unsigned {}",
            v.verify_instructions,
            v.verify_instructions.saturating_sub(v.checked_instructions),
            v.stack_bytes,
            v.tampered,
            v.truncated,
            v.unsigned
        );
    }
    if !p.drift.is_empty() {
        let _ = writeln!(
            s,
            "clamped on the device       {} (layer: fraction of its values at the ends of the \
             int8 range, all samples)",
            p.drift
                .iter()
                .map(|&(i, n, lo, hi)| format!(
                    "#{i}: {:.3}%",
                    100.0 * (lo + hi) as f64 / n.max(1) as f64
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let verdict = if parity.pass { "PASS" } else { "FAIL" };
    if p.int8 {
        let _ = writeln!(
            s,
            "MCU vs host runtime         int8 outputs {} (dequantized max-abs {:.3e}) -> {verdict} \
             (int8 must be byte-identical)",
            if parity.bytes_identical {
                "byte-identical"
            } else {
                "DIFFER"
            },
            parity.max_abs
        );
        return s;
    }
    let _ = writeln!(
        s,
        "MCU vs host runtime         max-abs {:.3e}, rel-L2 {:.3e}{} -> {verdict} (f32 limit rel-L2 {:.0e})",
        parity.max_abs,
        parity.rel_l2,
        if parity.bytes_identical {
            ", bit-identical"
        } else {
            ""
        },
        F32_REL_L2_LIMIT
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
