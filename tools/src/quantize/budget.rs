//! int16 activations within an arena budget (`convert --max-arena-bytes N`, issue #19).
//!
//! The default conversion keeps the activations of the first convolutions in int16 (16×8), which
//! buys accuracy and costs RAM: an int16 tensor is twice the bytes, and on the MLPerf Tiny
//! networks the arena doubles. When the arena would exceed the budget, tensors go back to int8 one
//! group at a time (a tensor with the tensors transposes move it from and to), each time the group
//! that costs the least end-to-end error per arena byte it frees. The error is measured, not
//! guessed, because what an int16 tensor saves depends on what follows it: once per group, the
//! int8 model (without bias correction) with that group int8 and the others int16, against the
//! f32 twin on a calibration subset; the arena of each step is re-planned. A group whose removal
//! frees no arena byte on its own (it is not in the largest live set) is chosen only when no
//! group frees any, by the error it costs per tensor byte.

use anyhow::Result;
use icefold::format::{DType, Op};

use super::calibrate::{progress, Calibration};
use super::int16::transposed_with;
use super::{arena_with_int8, device_arena, quantize_with_int16, Writes};
use crate::host;
use crate::io::Array;
use crate::lower::blob::{blob, AlignedBytes};
use crate::lower::Lowered;

/// Calibration samples each candidate is measured on (a budget search runs one int8 model per
/// candidate and step; the ranking needs the error's size, not its third digit).
const BUDGET_SAMPLES: usize = 16;

/// What the budget decided, for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Int16Budget {
    /// The arena budget in bytes.
    pub budget: usize,
    /// Arena bytes with every int16 tensor the conversion would otherwise keep.
    pub arena_unbounded: u32,
    /// Int16 tensors before and after (the output head apart).
    pub int16_before: usize,
    /// Tensors kept in int16.
    pub int16_after: usize,
    /// Calibration samples the errors were measured on.
    pub samples: usize,
    /// End-to-end relative L2 (no bias correction, calibration subset) with every int16 tensor,
    /// and with the chosen ones.
    pub error_unbounded: f64,
    /// See `error_unbounded`.
    pub error_chosen: f64,
}

/// Quantizes `l` with the int16 candidates `candidates`, then, if its arena exceeds `budget`,
/// moves int16 tensors back to int8 as the module docs say until it fits (or none is left: the
/// arena limit then refuses the model, naming the flag). `None` when the budget did not bind.
/// The arena is the one the device will have ([`device_arena`]: layers over their inputs if
/// `over_inputs`), so no int16 tensor goes that the in-place plan makes room for.
#[allow(clippy::too_many_arguments)]
pub fn fit_int16_to_arena(
    l: &Lowered,
    cal: &Calibration,
    writes: Writes,
    candidates: Vec<u16>,
    budget: usize,
    over_inputs: bool,
    calib: &Array,
    show_progress: bool,
) -> Result<(Lowered, Option<Int16Budget>)> {
    let q = quantize_with_int16(l, cal, writes, candidates)?;
    let arena_unbounded = device_arena(&q, over_inputs)?;
    if arena_unbounded as usize <= budget {
        return Ok((q, None));
    }
    let int16 = int16_tensors(&q);
    if int16.is_empty() {
        return Ok((q, None));
    }
    let subset = calib.first(BUDGET_SAMPLES);
    let f32_blob = AlignedBytes::new(&blob(l)?);
    // The reference f32 kernels on both sides: the choice must not depend on the host's CPU
    // (the AVX2 kernels round differently), so the blob does not either.
    let reference = host::run_f32(
        &host::load(f32_blob.as_slice())?.with_reference_f32_kernels(),
        &subset,
    )?;
    let error_of = |q: &Lowered| -> Result<f64> {
        let b = AlignedBytes::new(&blob(q)?);
        let got = host::run_f32(
            &host::load(b.as_slice())?.with_reference_f32_kernels(),
            &subset,
        )?;
        Ok(host::diff(&got, &reference)?.rel_l2)
    };
    let int16_before = int16.len();
    let error_unbounded = error_of(&q)?;
    // Removal units: a tensor with what transposes move it from and to.
    let mut units: Vec<Vec<u16>> = Vec::new();
    for &t in &int16 {
        if !units.iter().any(|u| u.contains(&t)) {
            let mut unit = transposed_with(l, t);
            unit.retain(|x| int16.contains(x));
            units.push(unit);
        }
    }
    // What each unit's int16 saves: the error with it int8 and every other unit int16, measured
    // once (one int8 model per unit); the arena is then re-planned per step, which is cheap.
    let pb = progress(
        units.len() as u64,
        "int16 within the budget",
        "tensors",
        show_progress,
    );
    let mut cost = Vec::with_capacity(units.len());
    for unit in &units {
        let rest: Vec<u16> = int16
            .iter()
            .copied()
            .filter(|t| !unit.contains(t))
            .collect();
        let e = error_of(&quantize_with_int16(l, cal, writes, rest)?)?;
        cost.push((e - error_unbounded).max(0.0));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut dropped: Vec<u16> = Vec::new();
    let mut gone: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = (0..units.len()).collect();
    let mut arena = arena_unbounded;
    while arena as usize > budget && !left.is_empty() {
        // The unit to drop, by (reaches the budget alone, frees arena bytes, its cost): among
        // units that reach the budget the one costing the least error, else the least error
        // per byte freed (per tensor byte when none frees any).
        let mut best: Option<((bool, bool, f64), usize, u32)> = None;
        for (k, &u) in left.iter().enumerate() {
            let ids: Vec<u16> = dropped.iter().chain(&units[u]).copied().collect();
            let after = arena_with_int8(&q, &ids, over_inputs)?;
            let (reaches, frees) = (after as usize <= budget, after < arena);
            let bytes = if frees {
                (arena - after) as usize
            } else {
                units[u]
                    .iter()
                    .filter_map(|&t| tensor_len(l, t))
                    .sum::<usize>()
                    .max(1)
            };
            let cost = if reaches {
                cost[u]
            } else {
                cost[u] / bytes as f64
            };
            let better = match best {
                None => true,
                Some(((best_reaches, best_frees, best_cost), ..)) => {
                    (reaches, frees) > (best_reaches, best_frees)
                        || ((reaches, frees) == (best_reaches, best_frees) && cost < best_cost)
                }
            };
            if better {
                best = Some(((reaches, frees, cost), k, after));
            }
        }
        let Some((_, k, after)) = best else { break };
        let u = left.remove(k);
        dropped.extend(&units[u]);
        gone.push(u);
        arena = after;
    }
    // The steps can overshoot: while the peak sits in several layers no single step frees
    // anything, and a step may free more than was missing. Every dropped unit the budget still
    // allows goes back to int16, the costliest first.
    if arena as usize <= budget {
        gone.sort_by(|a, b| cost[*b].total_cmp(&cost[*a]));
        for u in gone {
            let ids: Vec<u16> = dropped
                .iter()
                .copied()
                .filter(|t| !units[u].contains(t))
                .collect();
            if arena_with_int8(&q, &ids, over_inputs)? as usize <= budget {
                dropped = ids;
            }
        }
    }
    let kept: Vec<u16> = int16.into_iter().filter(|t| !dropped.contains(t)).collect();
    let chosen = quantize_with_int16(l, cal, writes, kept)?;
    let report = Int16Budget {
        budget,
        arena_unbounded,
        int16_before,
        int16_after: int16_tensors(&chosen).len(),
        samples: subset.samples(),
        error_unbounded,
        error_chosen: error_of(&chosen)?,
    };
    Ok((chosen, Some(report)))
}

/// The int16 activation tensors of the quantized model `q`, the int16 output head apart.
pub(super) fn int16_tensors(q: &Lowered) -> Vec<u16> {
    let head: Vec<u16> = q
        .layers
        .iter()
        .filter(|l| matches!(l.op, Op::DenseI8Wide(_) | Op::SoftmaxI16 { .. }))
        .map(|l| l.output.id)
        .collect();
    let mut ids: Vec<u16> = q
        .layers
        .iter()
        .flat_map(|l| l.inputs.iter().chain([&l.output]))
        .chain([&q.info.input])
        .filter(|d| d.dtype == DType::I16 && !head.contains(&d.id))
        .map(|d| d.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Elements of tensor `t` of `l` (the bytes it frees per element going from int16 to int8).
fn tensor_len(l: &Lowered, t: u16) -> Option<usize> {
    l.layers
        .iter()
        .flat_map(|x| x.inputs.iter().chain([&x.output]))
        .chain([&l.info.input])
        .find(|d| d.id == t)
        .map(|d| d.len())
}
