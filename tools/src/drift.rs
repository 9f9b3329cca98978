//! The drift report of `icefold run --calib`: per int8 layer, the fraction of values clamped at
//! the ends of their range on the given inputs, next to the fraction on the calibration data,
//! with the layers far above it flagged (the runtime's `icefold::observe::ClampCounter`).

use std::fmt::Write as _;

use anyhow::{anyhow, Result};
use icefold::observe::{counts_clamping, ClampCounter, LayerClamps};
use icefold::Model;

use crate::io::Array;

/// A layer is flagged when its clamped fraction on the inputs is at least this much...
pub const FLAG_MIN_FRACTION: f64 = 0.01;
/// ...and at least this many times the fraction on the calibration data.
pub const FLAG_FACTOR: f64 = 4.0;

/// Per-layer clamp counts of `model` over every sample of `x` (run as `run_f32` does: quantized
/// at the input; `allow_nonfinite` lets NaN and infinities through to the quantization).
pub fn clamp_counts(
    model: &Model<'_>,
    x: &Array,
    allow_nonfinite: bool,
) -> Result<Vec<LayerClamps>> {
    let info = model.info();
    let mut counts = vec![LayerClamps::default(); usize::from(info.layer_count)];
    let mut arena = vec![0u32; (info.arena_bytes as usize).div_ceil(4)];
    let mut out = vec![0f32; info.output.len()];
    for i in 0..x.samples() {
        let arena = bytemuck::cast_slice_mut::<u32, u8>(&mut arena);
        let mut counter = ClampCounter::new(&mut counts);
        if allow_nonfinite {
            model.run_f32_allowing_nonfinite_observed(arena, x.sample(i), &mut out, &mut counter)
        } else {
            model.run_f32_observed(arena, x.sample(i), &mut out, &mut counter)
        }
        .map_err(|e| anyhow!("sample {i}: runtime error: {e}"))?;
    }
    Ok(counts)
}

/// Input values of `x` that quantize to an end of the model input's range (where that end is
/// clamping, as for the layers): the first place out-of-range data shows. Empty for f32 models.
pub fn input_clamps(model: &Model<'_>, x: &Array) -> LayerClamps {
    let input = model.input();
    let mut c = LayerClamps::default();
    let Some(q) = input.quant else { return c };
    let (lo, hi) = match input.dtype {
        icefold::format::DType::I16 => (i32::from(i16::MIN), i32::from(i16::MAX)),
        _ => (i32::from(i8::MIN), i32::from(i8::MAX)),
    };
    for &v in x.data.iter().filter(|v| v.is_finite()) {
        let steps = match input.dtype {
            icefold::format::DType::I16 => i32::from(icefold::engine::quantize_i16(v, q)),
            _ => i32::from(icefold::engine::quantize(v, q)),
        };
        c.values = c.values.saturating_add(1);
        c.low += u32::from(steps == lo && lo < q.zero_point);
        c.high += u32::from(steps == hi && hi > q.zero_point);
    }
    c
}

fn fraction(c: &LayerClamps) -> f64 {
    if c.values == 0 {
        0.0
    } else {
        f64::from(c.clamped()) / f64::from(c.values)
    }
}

/// Whether a layer's fraction on the inputs is far above the calibration's.
pub fn flagged(on_inputs: &LayerClamps, on_calib: &LayerClamps) -> bool {
    let (x, c) = (fraction(on_inputs), fraction(on_calib));
    x >= FLAG_MIN_FRACTION && x >= FLAG_FACTOR * c
}

/// The table: one row per counted layer; returns the text and the flagged layers' indices.
///
/// `inputs` and `calib` are the model input's own counts ([`input_clamps`]), shown first.
pub fn render(
    model: &Model<'_>,
    (input, on_inputs): (LayerClamps, &[LayerClamps]),
    on_calib: Option<(LayerClamps, &[LayerClamps])>,
) -> (String, Vec<usize>) {
    let mut s = String::new();
    let mut flagged_layers = Vec::new();
    let mut input_flagged = false;
    let _ = writeln!(
        s,
        "values clamped at the ends of their int8 range, per requantizing layer{}",
        if on_calib.is_some() {
            ", on the inputs and on the calibration data"
        } else {
            " (give --calib CALIB.npy to compare with the calibration data)"
        }
    );
    let _ = write!(s, "{:>3}  {:<24} {:>10}", "#", "layer", "inputs");
    if on_calib.is_some() {
        let _ = write!(s, " {:>12}", "calibration");
    }
    let _ = writeln!(s);
    let _ = write!(
        s,
        "{:>3}  {:<24} {:>9.3}%",
        "-",
        "input (quantize)",
        100.0 * fraction(&input)
    );
    if let Some((c, _)) = on_calib {
        let _ = write!(s, " {:>11.3}%", 100.0 * fraction(&c));
        if flagged(&input, &c) {
            input_flagged = true;
            let _ = write!(s, "  DRIFT");
        }
    }
    let _ = writeln!(s);
    let on_calib = on_calib.map(|(_, layers)| layers);
    for (i, layer) in model.layers().enumerate() {
        if !counts_clamping(&layer.op) {
            continue;
        }
        let Some(x) = on_inputs.get(i) else { continue };
        let name = crate::describe::op_name(&layer.op);
        let _ = write!(s, "{i:>3}  {name:<24} {:>9.3}%", 100.0 * fraction(x));
        if let Some(c) = on_calib.and_then(|c| c.get(i)) {
            let _ = write!(s, " {:>11.3}%", 100.0 * fraction(c));
            if flagged(x, c) {
                flagged_layers.push(i);
                let _ = write!(s, "  DRIFT");
            }
        }
        let _ = writeln!(s);
    }
    if on_calib.is_some() {
        let names: Vec<String> = input_flagged
            .then(|| "the input".to_string())
            .into_iter()
            .chain(flagged_layers.iter().map(|i| format!("layer {i}")))
            .collect();
        if names.is_empty() {
            let _ = writeln!(s, "no layer clamps far more than on the calibration data");
        } else {
            let _ = writeln!(
                s,
                "DRIFT: {} clamp(s) at least {FLAG_FACTOR}x the calibration's fraction (and \
                 >= {}%): the inputs are outside what the model was calibrated on, and its \
                 answers on them are not to be trusted (recalibrate on data like them, or fix \
                 the input scaling)",
                names.join(", "),
                100.0 * FLAG_MIN_FRACTION
            );
        }
    }
    (s, flagged_layers)
}
