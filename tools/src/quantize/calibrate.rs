//! Calibration: the range of every activation of a frozen graph over the user's calibration data,
//! and the int8 quantization chosen from it.
//!
//! The reference interpreter runs over the samples once to find each value's min and max, overall
//! and per sample; the histogram methods run it a second time to fill a histogram over that range.
//! The clipping range is then chosen:
//! - `Tail(n)` (the default): the observed range widened to where one sample in `n` would reach. The
//!   smallest and largest value of each sample are treated as draws of a Gumbel (extreme-value)
//!   distribution, fitted by its moments; the range end is that distribution's `1 - 1/n` quantile,
//!   never inside the observed range. Only ends the value can cross are widened: a ReLU's 0 or a
//!   Clip's limits stay where they are, and so does the model input (the data itself). A
//!   calibration set of 64 samples sees each tensor's 1-in-64 extreme; a new input beyond it is
//!   clipped, and a clipped logit or residual sum costs more than all the rounding of the other
//!   samples together (measured: docs/QUANTIZATION.md);
//! - `Balanced(n)`: each end of an int8 tensor between the observed extreme and `Tail(n)`'s, where
//!   the expected squared error per sample is least: `elements * step^2 / 12` of rounding against
//!   the Gumbel fit's expected squared excess of the next sample's extreme over the end (clipping).
//!   A large feature map pays its step on every element and keeps close to the observed range; a
//!   small tensor (pooled features, logits) widens. 16-bit tensors (int16 activations, the int16
//!   output head) keep `Tail(n)`'s range: 256 times finer steps make the widening nearly free;
//! - `MinMax`: the full observed range (what onnxruntime's MinMax calibration does);
//! - `Percentile(p)`: the central `p` percent of the observations;
//! - `Mse`: the range that minimizes the expected squared error of int8 rounding plus clipping over
//!   the observed distribution. Long-tailed activations (post-ReLU maps with a few large values) lose
//!   resolution for everything else under min/max; this trades a little clipping error for a much
//!   finer step.

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::io::Array;
use crate::ir::eval;
use crate::ir::graph::{Activation, FrozenGraph, FrozenOp};

/// Bins of the per-value histogram.
const BINS: usize = 2048;

/// `tail`'s default: ranges hold the extreme of one sample in this many.
pub const TAIL_SAMPLES: f64 = 1000.0;

/// How the clipping range of an activation is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Observed minimum and maximum widened to the extreme one sample in `n` reaches.
    Tail(f64),
    /// Per int8 tensor, each end between the observed and `Tail`'s extreme at the least expected
    /// squared error (rounding against clipping); 16-bit tensors as `Tail`.
    Balanced(f64),
    /// Observed minimum and maximum.
    MinMax,
    /// Central percentage of the observations, e.g. 99.99.
    Percentile(f64),
    /// Minimum expected squared quantization error.
    Mse,
}

impl Method {
    /// What `convert --quantize int8` uses unless told otherwise.
    pub const DEFAULT: Method = Method::Tail(TAIL_SAMPLES);
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Tail(n) => write!(f, "tail:{n}"),
            Method::Balanced(n) => write!(f, "balanced:{n}"),
            Method::MinMax => f.write_str("minmax"),
            Method::Percentile(p) => write!(f, "percentile:{p}"),
            Method::Mse => f.write_str("mse"),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minmax" => Ok(Method::MinMax),
            _ if s.starts_with("tail") || s.starts_with("balanced") => {
                let (name, make): (&str, fn(f64) -> Method) = if s.starts_with("tail") {
                    ("tail", Method::Tail)
                } else {
                    ("balanced", Method::Balanced)
                };
                let n = s[name.len()..].trim_start_matches([':', '=']);
                let v: f64 = if n.is_empty() {
                    TAIL_SAMPLES
                } else {
                    n.parse()
                        .map_err(|_| format!("bad {name} sample count {n:?}"))?
                };
                if !(2.0..=1e9).contains(&v) {
                    return Err(format!("{name} sample count {v} must be within 2..=1e9"));
                }
                Ok(make(v))
            }
            "mse" => Ok(Method::Mse),
            _ => match s.strip_prefix("percentile") {
                Some(p) => {
                    let p = p.trim_start_matches([':', '=']);
                    let v: f64 = if p.is_empty() {
                        99.99
                    } else {
                        p.parse().map_err(|_| format!("bad percentile {p:?}"))?
                    };
                    if !(50.0..=100.0).contains(&v) {
                        return Err(format!("percentile {v} must be within 50..=100"));
                    }
                    Ok(Method::Percentile(v))
                }
                None => Err(format!(
                    "unknown calibration method {s:?}: use tail[:N], balanced[:N], minmax, mse or \
                     percentile[:P]"
                )),
            },
        }
    }
}

/// A real-valued range, `min <= 0 <= max` once widened for quantization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// Lower end.
    pub min: f32,
    /// Upper end.
    pub max: f32,
}

/// Affine int8 quantization of one tensor: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    /// Real value of one step.
    pub scale: f32,
    /// Integer representing real zero, within -128..=127.
    pub zero_point: i32,
}

impl QParams {
    /// Asymmetric int8 parameters covering `r` (widened to contain 0, so zero padding and ReLU's
    /// zero are exact).
    pub fn from_range(r: Range) -> QParams {
        let lo = r.min.min(0.0) as f64;
        let hi = r.max.max(0.0) as f64;
        if hi - lo <= f64::from(f32::MIN_POSITIVE) {
            return QParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = (hi - lo) / 255.0;
        let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
        QParams {
            scale: scale as f32,
            zero_point,
        }
    }

    /// `round(x / scale) + zero_point`, saturated to int8 (host side only).
    pub fn quantize(&self, x: f32) -> i8 {
        let q = (x as f64 / self.scale as f64).round() + self.zero_point as f64;
        q.clamp(-128.0, 127.0) as i8
    }

    /// [`QParams::quantize`] for an int16 tensor (saturating to int16).
    pub fn quantize_i16(&self, x: f32) -> i16 {
        let q = (x as f64 / self.scale as f64).round() + self.zero_point as f64;
        q.clamp(i16::MIN as f64, i16::MAX as f64) as i16
    }

    /// The real value of `q`.
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point) as f32
    }
}

/// Observations of one value.
#[derive(Clone, Debug)]
struct Stats {
    min: f32,
    max: f32,
    hist: Vec<u64>,
    /// Sums of the per-sample maxima and minima and of their squares, and the sample count.
    extremes: Extremes,
}

/// Moments of the per-sample extremes of one value.
#[derive(Clone, Debug, Default)]
struct Extremes {
    n: f64,
    max_sum: f64,
    max_sq: f64,
    min_sum: f64,
    min_sq: f64,
    /// Elements of the value in one sample.
    elements: f64,
}

impl Extremes {
    fn add(&mut self, lo: f32, hi: f32) {
        self.n += 1.0;
        self.max_sum += hi as f64;
        self.max_sq += hi as f64 * hi as f64;
        self.min_sum += lo as f64;
        self.min_sq += lo as f64 * lo as f64;
    }
    /// The value one sample in `samples` exceeds, for a Gumbel distribution with the mean and
    /// variance of `n` draws (sum and sum of squares); `None` below two draws.
    fn gumbel_quantile(n: f64, sum: f64, sq: f64, samples: f64) -> Option<f64> {
        if n < 2.0 {
            return None;
        }
        let mean = sum / n;
        let var = ((sq - sum * sum / n) / (n - 1.0)).max(0.0);
        // Method of moments: variance = (pi * beta)^2 / 6, mean = mu + Euler-Mascheroni * beta.
        let beta = var.sqrt() * 6f64.sqrt() / std::f64::consts::PI;
        let mu = mean - 0.577_215_664_901_532_9 * beta;
        let p = 1.0 / samples;
        Some(mu - beta * (-(1.0 - p).ln()).ln())
    }

    /// `observed` widened to the extreme of one sample in `samples` at each end the value can
    /// cross. An end with a finite `bound` (a ReLU's 0, a Clip's limits) is left as observed: the
    /// values pile up against a hard limit there, which is no extreme-value tail, and on the
    /// held-out fixtures widening such ends cost more step than it saved clipping.
    fn widen(&self, observed: Range, samples: f64, bounds: (f32, f32)) -> Range {
        let mut range = observed;
        if bounds.1 == f32::INFINITY {
            if let Some(q) = Self::gumbel_quantile(self.n, self.max_sum, self.max_sq, samples) {
                range.max = range.max.max(q as f32);
            }
        }
        // The minimum is the maximum of the negated values.
        if bounds.0 == f32::NEG_INFINITY {
            if let Some(q) = Self::gumbel_quantile(self.n, -self.min_sum, self.min_sq, samples) {
                range.min = range.min.min(-q as f32);
            }
        }
        range
    }
}

impl Extremes {
    /// Gumbel location and scale `(mu, beta)` of `n` draws (sum and sum of squares) by the method
    /// of moments; `None` below two draws.
    fn gumbel(n: f64, sum: f64, sq: f64) -> Option<(f64, f64)> {
        if n < 2.0 {
            return None;
        }
        let mean = sum / n;
        let var = ((sq - sum * sum / n) / (n - 1.0)).max(0.0);
        let beta = var.sqrt() * 6f64.sqrt() / std::f64::consts::PI;
        Some((mean - 0.577_215_664_901_532_9 * beta, beta))
    }

    /// `E[(Y - h)_+^2]` for `Y ~ Gumbel(mu, beta)`: the expected squared excess of the next
    /// sample's extreme over a range end `h`, `integral from h of 2 (y - h) P(Y > y) dy`
    /// (midpoint rule over 40 scales past `h`, where `P(Y > y) < 5e-18`).
    fn clipped_sq(mu: f64, beta: f64, h: f64) -> f64 {
        if beta <= 0.0 {
            return (mu - h).max(0.0).powi(2);
        }
        const STEPS: usize = 400;
        let dy = (h.max(mu) + 40.0 * beta - h) / STEPS as f64;
        (0..STEPS)
            .map(|i| {
                let y = h + (i as f64 + 0.5) * dy;
                // P(Y > y) = 1 - exp(-exp(-(y - mu) / beta)), without cancellation in the tail.
                let survive = -(-(-(y - mu) / beta).exp()).exp_m1();
                2.0 * (y - h) * survive * dy
            })
            .sum()
    }

    /// [`Extremes::widen`]'s range, each end moved back towards the observed extreme to where
    /// the expected squared error of an int8 tensor per sample is least: `elements * step^2 / 12`
    /// of rounding (step = range / 255) plus the expected squared excess of the next sample's
    /// extreme over the end (its clipping; the extreme element only, the Gumbel fit's one
    /// draw per sample). The upper end is chosen first, with the lower end observed, then the
    /// lower end with the chosen upper one; 64 candidates each.
    fn balance(&self, observed: Range, samples: f64, bounds: (f32, f32)) -> Range {
        const CANDIDATES: usize = 64;
        let wide = self.widen(observed, samples, bounds);
        let rounding = |lo: f64, hi: f64| {
            let step = (hi.max(0.0) - lo.min(0.0)) / 255.0;
            self.elements * step * step / 12.0
        };
        // The candidate end in `from..=to` (on the axis where the value grows outwards) with the
        // least `cost`.
        let best = |from: f64, to: f64, cost: &dyn Fn(f64) -> f64| {
            (0..=CANDIDATES)
                .map(|i| from + (to - from) * i as f64 / CANDIDATES as f64)
                .map(|h| (cost(h), h))
                .fold((f64::INFINITY, from), |m, c| if c.0 < m.0 { c } else { m })
                .1
        };
        let mut range = observed;
        if let (true, Some((mu, beta))) = (
            wide.max > observed.max,
            Self::gumbel(self.n, self.max_sum, self.max_sq),
        ) {
            let lo = observed.min as f64;
            range.max = best(observed.max as f64, wide.max as f64, &|h| {
                rounding(lo, h) + Self::clipped_sq(mu, beta, h)
            }) as f32;
        }
        // The minimum is the maximum of the negated values.
        if let (true, Some((mu, beta))) = (
            wide.min < observed.min,
            Self::gumbel(self.n, -self.min_sum, self.min_sq),
        ) {
            let hi = range.max as f64;
            range.min = -best(-observed.min as f64, -wide.min as f64, &|h| {
                rounding(-h, hi) + Self::clipped_sq(mu, beta, h)
            }) as f32;
        }
        range
    }
}

impl Stats {
    fn bin(&self, x: f32) -> usize {
        let w = (self.max - self.min) as f64;
        if w <= 0.0 {
            return 0;
        }
        (((x - self.min) as f64 / w) * BINS as f64)
            .floor()
            .clamp(0.0, (BINS - 1) as f64) as usize
    }
    fn bin_center(&self, i: usize) -> f64 {
        let w = (self.max - self.min) as f64 / BINS as f64;
        self.min as f64 + (i as f64 + 0.5) * w
    }
}

/// Ranges of every value of `g` (indexed by value id; `None` for values the interpreter never
/// produced, e.g. removed ones).
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Chosen clipping range per value.
    pub ranges: Vec<Option<Range>>,
    /// Range per value for a 16-bit tensor (an int16 activation, the int16 output head): the
    /// same as `ranges` except under `Balanced`, whose int8 trade-off does not apply there.
    pub wide_ranges: Vec<Option<Range>>,
    /// Observed min/max per value (before clipping).
    pub observed: Vec<Option<Range>>,
    /// Method used.
    pub method: Method,
    /// Samples seen.
    pub samples: usize,
}

/// The progress bar of the quantization passes: `len` steps of `unit` (hidden unless `show`).
pub(crate) fn progress(len: u64, msg: &'static str, unit: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{msg:>24}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})"
    )) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

/// Visit the input and every node output of `g` for one sample.
fn visit(g: &FrozenGraph, x: &[f32], f: &mut dyn FnMut(usize, &[f32])) -> Result<()> {
    f(g.input, x);
    let outputs: Vec<usize> = g.nodes.iter().map(|n| n.output).collect();
    eval::run_traced(g, x, &mut |ni, _input, out| f(outputs[ni], out))?;
    Ok(())
}

/// Checks calibration data against the model input `name` of per-sample shape `in_shape`:
/// `[N, in_shape...]` with at least `min_samples` samples, every value finite. The errors say
/// what the data looks like and how to fix it (a missing sample axis, flattened or permuted
/// samples, a NaN in sample k).
pub fn check_samples(
    calib: &Array,
    in_shape: &[usize],
    name: &str,
    min_samples: usize,
) -> Result<()> {
    let dims = |s: &[usize]| {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let want = format!("[N, {}]", dims(in_shape));
    if calib.shape[..] == in_shape[..] {
        bail!(
            "calibration data has shape [{}], which is one sample of the model's input \"{name}\" \
             without the sample axis: stack the samples on axis 0, {want} (np.stack(samples))",
            dims(&calib.shape)
        );
    }
    if calib.shape.len() != in_shape.len() + 1 || calib.shape[1..] != in_shape[..] {
        let sample: &[usize] = calib.shape.get(1..).unwrap_or(&[]);
        let mut hint = String::new();
        if calib.sample_len() == in_shape.iter().product::<usize>() && !calib.shape.is_empty() {
            let (mut a, mut b) = (sample.to_vec(), in_shape.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            hint = if a == b && sample.len() == in_shape.len() {
                "; the sample axes look permuted (NCHW vs NHWC?): transpose the samples to the \
                 model's layout"
                    .into()
            } else {
                format!(
                    "; reshape the samples: x.reshape({}, {})",
                    calib.samples(),
                    dims(in_shape)
                )
            };
        }
        bail!(
            "calibration data has shape [{}]; the model's input \"{name}\" takes {want}{hint}",
            dims(&calib.shape)
        );
    }
    if calib.samples() < min_samples {
        bail!(
            "calibration data holds {} sample(s); at least {min_samples} are needed (use a few \
             dozen representative inputs, never the test inputs)",
            calib.samples()
        );
    }
    if let Some(i) = calib.data.iter().position(|v| !v.is_finite()) {
        let per = calib.sample_len().max(1);
        bail!(
            "calibration data holds a non-finite value ({}) in sample {} (element {} of the \
             sample): calibration samples must be finite",
            calib.data[i],
            i / per,
            i % per
        );
    }
    Ok(())
}

/// Calibrate `g` on `calib` (`[N, ...]` in the graph input's shape).
pub fn calibrate(
    g: &FrozenGraph,
    calib: &Array,
    method: Method,
    show_progress: bool,
) -> Result<Calibration> {
    let input = &g.values[g.input];
    check_samples(calib, &input.shape, &input.name, 1)?;
    let n = g.values.len();
    let mut stats: Vec<Option<Stats>> = vec![None; n];

    let pb = progress(
        calib.samples() as u64,
        "calibration: ranges",
        "samples",
        show_progress,
    );
    // The samples run on every core; their per-value extremes are then merged in sample order,
    // so the f64 sums of `Extremes` (and every range) do not depend on the thread count.
    let per_sample: Vec<Vec<(usize, f32, f32, usize)>> = (0..calib.samples())
        .into_par_iter()
        .map(|i| {
            let mut seen = Vec::new();
            visit(g, calib.sample(i), &mut |v, data| {
                let elements = data.len();
                let (lo, hi) = data
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    });
                seen.push((v, lo, hi, elements));
            })?;
            pb.inc(1);
            Ok(seen)
        })
        .collect::<Result<_>>()?;
    for (v, lo, hi, elements) in per_sample.into_iter().flatten() {
        let s = stats[v].get_or_insert(Stats {
            min: lo,
            max: hi,
            hist: Vec::new(),
            extremes: Extremes::default(),
        });
        s.extremes.add(lo, hi);
        s.extremes.elements = s.extremes.elements.max(elements as f64);
        s.min = s.min.min(lo);
        s.max = s.max.max(hi);
    }
    pb.finish_and_clear();

    if matches!(method, Method::Percentile(_) | Method::Mse) {
        for s in stats.iter_mut().flatten() {
            s.hist = vec![0; BINS];
        }
        let pb = progress(
            calib.samples() as u64,
            "calibration: histograms",
            "samples",
            show_progress,
        );
        // Bin counts add up the same in any order: each thread counts into its own histograms.
        let binned = &stats;
        let counts = (0..calib.samples())
            .into_par_iter()
            .try_fold(
                || vec![Vec::<u64>::new(); n],
                |mut counts, i| {
                    visit(g, calib.sample(i), &mut |v, data| {
                        if let Some(s) = binned[v].as_ref() {
                            let c = &mut counts[v];
                            c.resize(BINS, 0);
                            for &x in data {
                                c[s.bin(x)] += 1;
                            }
                        }
                    })?;
                    pb.inc(1);
                    Ok::<_, anyhow::Error>(counts)
                },
            )
            .try_reduce(
                || vec![Vec::new(); n],
                |mut a, b| {
                    for (a, b) in a.iter_mut().zip(b) {
                        if a.is_empty() {
                            *a = b;
                        } else {
                            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                        }
                    }
                    Ok(a)
                },
            )?;
        for (s, c) in stats.iter_mut().zip(counts) {
            if let (Some(s), false) = (s.as_mut(), c.is_empty()) {
                s.hist.iter_mut().zip(c).for_each(|(h, c)| *h += c);
            }
        }
        pb.finish_and_clear();
    }

    let observed: Vec<Option<Range>> = stats
        .iter()
        .map(|s| {
            s.as_ref().map(|s| Range {
                min: s.min,
                max: s.max,
            })
        })
        .collect();
    let bounds = value_bounds(g, observed[g.input]);
    let choose = |wide: bool| -> Vec<Option<Range>> {
        stats
            .iter()
            .zip(&observed)
            .zip(&bounds)
            .map(|((s, observed), &bounds)| {
                let (s, observed) = (s.as_ref()?, (*observed)?);
                Some(match method {
                    Method::Tail(samples) => s.extremes.widen(observed, samples, bounds),
                    Method::Balanced(samples) if wide => {
                        s.extremes.widen(observed, samples, bounds)
                    }
                    Method::Balanced(samples) => s.extremes.balance(observed, samples, bounds),
                    Method::MinMax => observed,
                    Method::Percentile(p) => percentile_range(s, p),
                    Method::Mse => mse_range(s),
                })
            })
            .collect()
    };
    Ok(Calibration {
        ranges: choose(false),
        wide_ranges: choose(true),
        observed,
        method,
        samples: calib.samples(),
    })
}

/// The interval each value of `g` stays in: a clamp's limits, carried through the ops that only
/// select, average or move values (pooling, layout changes). The model input counts as bounded by
/// its observed range `input`: it is the data itself, whose range the preprocessing fixes and the
/// calibration set spans; widening it (and its layout changes) only coarsens the first layer's
/// step (measured on MobileNet, docs/QUANTIZATION.md).
fn value_bounds(g: &FrozenGraph, input: Option<Range>) -> Vec<(f32, f32)> {
    let mut bounds = vec![(f32::NEG_INFINITY, f32::INFINITY); g.values.len()];
    if let Some(r) = input {
        bounds[g.input] = (r.min, r.max);
    }
    for node in &g.nodes {
        bounds[node.output] = match &node.op {
            FrozenOp::Activation(Activation::Relu) => (0.0, f32::INFINITY),
            FrozenOp::Activation(Activation::Clip { lo, hi }) => (*lo, *hi),
            FrozenOp::Activation(Activation::Sigmoid | Activation::HardSigmoid { .. }) => {
                (0.0, 1.0)
            }
            FrozenOp::Activation(Activation::Tanh) => (-1.0, 1.0),
            // The minima of x * gate(x): at x = -1.5 for hard swish, x = -1.2785 for SiLU.
            FrozenOp::Activation(Activation::HardSwish) => (-0.375, f32::INFINITY),
            FrozenOp::Activation(Activation::Silu) => (-0.278_464_6, f32::INFINITY),
            FrozenOp::Affine(a) => affine_bounds(a, bounds[node.inputs[0]]),
            FrozenOp::PRelu { slope } => prelu_bounds(slope, bounds[node.inputs[0]]),
            // A gate in [0, 1] (sigmoid, hard sigmoid) only shrinks its input towards 0.
            FrozenOp::Mul => {
                let (x, g) = (bounds[node.inputs[0]], bounds[node.inputs[1]]);
                if g.0 >= 0.0 && g.1 <= 1.0 {
                    (x.0.min(0.0), x.1.max(0.0))
                } else if x.0 >= 0.0 && x.1 <= 1.0 {
                    (g.0.min(0.0), g.1.max(0.0))
                } else {
                    (f32::NEG_INFINITY, f32::INFINITY)
                }
            }
            FrozenOp::Pool(_)
            | FrozenOp::GlobalAveragePool
            | FrozenOp::Reshape
            | FrozenOp::Transpose { .. } => bounds[node.inputs[0]],
            _ => (f32::NEG_INFINITY, f32::INFINITY),
        };
    }
    // An end where every reader of a value is flat (both ends of a sigmoid, tanh or hard sigmoid,
    // the negative end of SiLU and hard swish) gains nothing from widening: values beyond the
    // observed range map to (almost) the outputs the range's end does, while the wider step
    // costs resolution everywhere. Such an end counts as bounded (it is kept as observed).
    for (v, b) in bounds.iter_mut().enumerate() {
        let readers = g.consumers(v);
        if readers.is_empty() || v == g.output {
            continue;
        }
        let flat = |low: bool| {
            readers.iter().all(|&r| match &g.nodes[r].op {
                FrozenOp::Activation(
                    Activation::Sigmoid | Activation::Tanh | Activation::HardSigmoid { .. },
                ) => true,
                FrozenOp::Activation(Activation::Silu | Activation::HardSwish) => low,
                _ => false,
            })
        };
        if flat(true) && b.0 == f32::NEG_INFINITY {
            b.0 = f32::MIN;
        }
        if flat(false) && b.1 == f32::INFINITY {
            b.1 = f32::MAX;
        }
    }
    bounds
}

/// The interval of `x * scale[c] + shift[c]` over every channel for `x` in `b`; unbounded unless
/// both ends of `b` are finite.
fn affine_bounds(a: &crate::ir::graph::Affine, b: (f32, f32)) -> (f32, f32) {
    if !(b.0.is_finite() && b.1.is_finite()) {
        return (f32::NEG_INFINITY, f32::INFINITY);
    }
    let n = a.scale.len().max(a.shift.len());
    let pick = |v: &[f64], c: usize| v.get(c).or(v.first()).copied().unwrap_or(0.0);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for c in 0..n {
        let (s, t) = (pick(&a.scale, c), pick(&a.shift, c));
        for x in [b.0 as f64, b.1 as f64] {
            lo = lo.min(x * s + t);
            hi = hi.max(x * s + t);
        }
    }
    if lo <= hi {
        (lo as f32, hi as f32)
    } else {
        (f32::NEG_INFINITY, f32::INFINITY)
    }
}

/// The interval of a per-channel PReLU over inputs in `b`: the non-negative part as is, the
/// negative part scaled by each slope; unbounded unless both ends of `b` are finite.
fn prelu_bounds(slope: &[f32], b: (f32, f32)) -> (f32, f32) {
    if !(b.0.is_finite() && b.1.is_finite()) {
        return (f32::NEG_INFINITY, f32::INFINITY);
    }
    let (mut lo, mut hi) = (b.0.max(0.0).min(b.1), b.1.max(0.0));
    if b.0 < 0.0 {
        for &s in slope {
            for x in [b.0, b.1.min(0.0)] {
                lo = lo.min(s * x);
                hi = hi.max(s * x);
            }
        }
    }
    (lo, hi)
}

fn percentile_range(s: &Stats, p: f64) -> Range {
    let total: u64 = s.hist.iter().sum();
    let tail = ((1.0 - p / 100.0) / 2.0 * total as f64).floor() as u64;
    let (mut lo_bin, mut acc) = (0, 0);
    for (i, &c) in s.hist.iter().enumerate() {
        acc += c;
        if acc > tail {
            lo_bin = i;
            break;
        }
    }
    let (mut hi_bin, mut acc) = (BINS - 1, 0);
    for (i, &c) in s.hist.iter().enumerate().rev() {
        acc += c;
        if acc > tail {
            hi_bin = i;
            break;
        }
    }
    let w = (s.max - s.min) / BINS as f32;
    Range {
        min: s.min + lo_bin as f32 * w,
        max: s.min + (hi_bin + 1) as f32 * w,
    }
}

/// Expected squared error of quantizing the histogram of `s` with the int8 grid of `r`.
fn quant_mse(s: &Stats, r: Range) -> f64 {
    let q = QParams::from_range(r);
    let step = q.scale as f64;
    let lo = step * (-128 - q.zero_point) as f64;
    let hi = step * (127 - q.zero_point) as f64;
    let mut err = 0.0;
    for (i, &c) in s.hist.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let x = s.bin_center(i);
        let e = if x < lo {
            (lo - x).powi(2)
        } else if x > hi {
            (x - hi).powi(2)
        } else {
            // Rounding error of values spread over the bin: uniform over a step.
            step * step / 12.0
        };
        err += e * c as f64;
    }
    err
}

fn mse_range(s: &Stats) -> Range {
    let full = Range {
        min: s.min,
        max: s.max,
    };
    let mut best = (quant_mse(s, full), full);
    // Shrink each end independently over a grid; sides that hold no mass stay put.
    const STEPS: usize = 64;
    for a in 0..STEPS {
        let fa = 1.0 - a as f32 / STEPS as f32 * 0.95;
        for b in 0..STEPS {
            let fb = 1.0 - b as f32 / STEPS as f32 * 0.95;
            let r = Range {
                min: s.min.min(0.0) * fa,
                max: s.max.max(0.0) * fb,
            };
            let e = quant_mse(s, r);
            if e < best.0 {
                best = (e, r);
            }
            if s.max <= 0.0 {
                break;
            }
        }
        if s.min >= 0.0 {
            break;
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(data: &[f32]) -> Stats {
        let (lo, hi) = data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let mut s = Stats {
            min: lo,
            max: hi,
            hist: vec![0; BINS],
            extremes: Extremes::default(),
        };
        for &x in data {
            let b = s.bin(x);
            s.hist[b] += 1;
        }
        s
    }

    #[test]
    fn qparams_cover_range_and_keep_zero_exact() {
        let q = QParams::from_range(Range {
            min: -1.0,
            max: 3.0,
        });
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
        assert!((q.dequantize(-128) + 1.0).abs() <= q.scale);
        assert!((q.dequantize(127) - 3.0).abs() <= q.scale);
        // Post-ReLU range: zero point at the bottom.
        let r = QParams::from_range(Range { min: 0.0, max: 6.0 });
        assert_eq!(r.zero_point, -128);
        // Degenerate ranges do not divide by zero.
        assert_eq!(QParams::from_range(Range { min: 0.0, max: 0.0 }).scale, 1.0);
    }

    #[test]
    fn mse_clips_a_rare_moderate_outlier() {
        // A million values in [0, 1) and one at 3: clipping it costs 4 in squared error, while the
        // 3x finer step saves about 10 over the bulk.
        let mut data: Vec<f32> = (0..1_000_000).map(|i| i as f32 / 1_000_000.0).collect();
        data.push(3.0);
        let s = stats_of(&data);
        let r = mse_range(&s);
        assert!(r.max < 1.5, "MSE range {r:?} should clip the outlier");
        assert!(r.max >= 0.95, "MSE range {r:?} must keep the bulk");
        assert!(
            quant_mse(&s, r)
                < 0.7
                    * quant_mse(
                        &s,
                        Range {
                            min: s.min,
                            max: s.max
                        }
                    )
        );
    }

    #[test]
    fn mse_keeps_a_lone_outlier_that_would_cost_more_clipped() {
        // One value at 100 among 10,000 in [0, 1): clipping it costs ~8,000 in squared error,
        // far more than the coarser step costs the bulk, so the expected error keeps it.
        let mut data: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        data.push(100.0);
        let s = stats_of(&data);
        assert!(mse_range(&s).max > 90.0);
    }

    #[test]
    fn percentile_drops_tails() {
        let mut data: Vec<f32> = (0..10_000).map(|i| (i as f32 / 10_000.0) - 0.5).collect();
        data.push(-80.0);
        data.push(90.0);
        let s = stats_of(&data);
        let r = percentile_range(&s, 99.9);
        assert!(r.min > -1.0 && r.max < 1.0, "{r:?}");
    }

    #[test]
    fn method_parses() {
        assert_eq!("mse".parse::<Method>(), Ok(Method::Mse));
        assert_eq!("minmax".parse::<Method>(), Ok(Method::MinMax));
        assert_eq!(
            "percentile:99.9".parse::<Method>(),
            Ok(Method::Percentile(99.9))
        );
        assert_eq!("tail".parse::<Method>(), Ok(Method::Tail(TAIL_SAMPLES)));
        assert_eq!("tail:500".parse::<Method>(), Ok(Method::Tail(500.0)));
        assert_eq!(
            "balanced".parse::<Method>(),
            Ok(Method::Balanced(TAIL_SAMPLES))
        );
        assert_eq!("balanced:64".parse::<Method>(), Ok(Method::Balanced(64.0)));
        assert!("balanced:0".parse::<Method>().is_err());
        assert!("tail:1".parse::<Method>().is_err());
        assert!("tail:many".parse::<Method>().is_err());
        assert!("median".parse::<Method>().is_err());
        // The report prints what the command line accepts.
        for m in [
            Method::DEFAULT,
            Method::MinMax,
            Method::Mse,
            Method::Percentile(99.9),
            Method::Balanced(500.0),
        ] {
            assert_eq!(m.to_string().parse::<Method>(), Ok(m));
        }
    }

    #[test]
    fn gumbel_quantile_matches_the_closed_form() {
        // Draws with mean 10 and variance 6: beta = sqrt(6 * 6) / pi = 6 / pi.
        let (n, mean, var) = (4.0, 10.0, 6.0);
        let sum = n * mean;
        let sq = var * (n - 1.0) + sum * sum / n;
        let beta = 6.0 / std::f64::consts::PI;
        let mu = mean - 0.577_215_664_901_532_9 * beta;
        let q = Extremes::gumbel_quantile(n, sum, sq, 1000.0).unwrap();
        // 1 - exp(-exp(-(q - mu) / beta)) = 1/1000.
        let tail = 1.0 - (-(-(q - mu) / beta).exp()).exp();
        assert!((tail - 1e-3).abs() < 1e-9, "tail probability {tail}");
        // Rarer extremes lie further out; one draw says nothing about the spread.
        assert!(Extremes::gumbel_quantile(n, sum, sq, 1e6).unwrap() > q);
        assert_eq!(Extremes::gumbel_quantile(1.0, 5.0, 25.0, 1000.0), None);
    }

    #[test]
    fn gumbel_clipping_cost_matches_a_sampled_mean() {
        // E[(Y - h)_+^2] by quadrature against the mean over Gumbel quantiles at 10^5 midpoints.
        let (mu, beta) = (2.0, 0.5);
        let m = 100_000;
        for h in [1.0, 2.5, 4.0] {
            let sampled = (0..m)
                .map(|i| {
                    let p = (i as f64 + 0.5) / m as f64;
                    (mu - beta * (-p.ln()).ln() - h).max(0.0).powi(2)
                })
                .sum::<f64>()
                / m as f64;
            let q = Extremes::clipped_sq(mu, beta, h);
            // 1 %: the quantile midpoints stop at 1 - 5e-6 and miss that much of the far tail
            // (0.2 % at h = 4).
            assert!(
                (q - sampled).abs() < 1e-2 * sampled,
                "{h}: {q} vs {sampled}"
            );
        }
        // No spread: the excess of the one possible value.
        assert_eq!(Extremes::clipped_sq(3.0, 0.0, 2.0), 1.0);
        assert_eq!(Extremes::clipped_sq(3.0, 0.0, 4.0), 0.0);
    }

    #[test]
    fn balanced_ends_widen_small_tensors_and_keep_large_maps_near_the_observed_range() {
        let mut e = Extremes::default();
        for (lo, hi) in [
            (-1.0, 1.0),
            (-2.0, 3.0),
            (-1.5, 2.0),
            (-0.5, 2.5),
            (-1.2, 2.2),
        ] {
            e.add(lo, hi);
        }
        let observed = Range {
            min: -2.0,
            max: 3.0,
        };
        let free = (f32::NEG_INFINITY, f32::INFINITY);
        let tail = e.widen(observed, 1000.0, free);
        // Ten logits: rounding is cheap, clipping the next sample's extreme is not.
        e.elements = 10.0;
        let logits = e.balance(observed, 1000.0, free);
        // A 64x64x16 map pays a coarser step on 65536 elements for one extreme element.
        e.elements = 65536.0;
        let map = e.balance(observed, 1000.0, free);
        for r in [logits, map] {
            assert!(r.min <= observed.min && r.min >= tail.min, "{r:?} {tail:?}");
            assert!(r.max >= observed.max && r.max <= tail.max, "{r:?} {tail:?}");
        }
        assert!(
            logits.max > map.max && logits.min < map.min,
            "{logits:?} {map:?}"
        );
        assert!(
            map.max - observed.max < 0.1 * (tail.max - observed.max),
            "{map:?}"
        );
        assert!(
            tail.max - logits.max < 0.5 * (tail.max - observed.max),
            "{logits:?}"
        );
        // Bounded ends stay as observed, as under tail.
        assert_eq!(e.balance(observed, 1000.0, (-6.0, 6.0)), observed);
    }

    #[test]
    fn widening_reaches_past_the_observed_range_only_where_values_can_go() {
        let mut e = Extremes::default();
        for (lo, hi) in [(-1.0, 1.0), (-2.0, 3.0), (-1.5, 2.0), (-0.5, 2.5)] {
            e.add(lo, hi);
        }
        let observed = Range {
            min: -2.0,
            max: 3.0,
        };
        let free = e.widen(observed, 1000.0, (f32::NEG_INFINITY, f32::INFINITY));
        assert!(
            free.min < observed.min && free.max > observed.max,
            "{free:?}"
        );
        // A ReLU's floor and a clip's ceiling stay as observed.
        let relu = e.widen(observed, 1000.0, (0.0, f32::INFINITY));
        assert_eq!(relu.min, observed.min);
        assert_eq!(relu.max, free.max);
        assert_eq!(e.widen(observed, 1000.0, (-6.0, 6.0)), observed);
        // Identical extremes (zero spread) never narrow the range.
        let mut flat = Extremes::default();
        flat.add(-2.0, 3.0);
        flat.add(-2.0, 3.0);
        assert_eq!(
            flat.widen(observed, 1000.0, (f32::NEG_INFINITY, f32::INFINITY)),
            observed
        );
    }

    #[test]
    fn ends_where_every_reader_is_flat_are_not_widened() {
        use crate::ir::eval::testkit::{Builder, Rng};
        use crate::ir::graph::{Affine, Dense, Tensor};
        // input [3] -> Dense (unbounded) -> SiLU, and the Dense -> Dense2 -> Tanh -> Affine(x2).
        let (mut b, x) = Builder::new(&[3]);
        let identity = || Tensor::new(vec![3, 3], vec![1., 0., 0., 0., 1., 0., 0., 0., 1.]);
        let dense = |w| {
            FrozenOp::Dense(Dense {
                weight: w,
                bias: vec![0.; 3],
            })
        };
        let d = b.node("fc", "Gemm", dense(identity()), &[x], &[3]);
        let s = b.node(
            "silu",
            "SiLU",
            FrozenOp::Activation(Activation::Silu),
            &[d],
            &[3],
        );
        let d2 = b.node("fc2", "Gemm", dense(identity()), &[s], &[3]);
        let t = b.node(
            "tanh",
            "Tanh",
            FrozenOp::Activation(Activation::Tanh),
            &[d2],
            &[3],
        );
        let affine = FrozenOp::Affine(Affine {
            scale: vec![2.0],
            shift: vec![0.5],
        });
        let a = b.node("scale", "Mul", affine, &[t], &[3]);
        let g = b.finish(a);
        let bounds = value_bounds(&g, None);
        // SiLU is flat below: its input keeps the observed minimum, its maximum is widened.
        assert_eq!(bounds[d], (f32::MIN, f32::INFINITY));
        assert_eq!(bounds[s].0, -0.278_464_6);
        // tanh is flat at both ends; its output, scaled, is bounded.
        assert_eq!(bounds[d2], (f32::MIN, f32::MAX));
        assert_eq!(bounds[a], (-1.5, 2.5));
        let mut rng = Rng::new(3);
        let calib = Array {
            shape: vec![64, 3],
            data: rng.vec(64 * 3, -3.0, 3.0),
        };
        let c = calibrate(&g, &calib, Method::DEFAULT, false).unwrap();
        let (fc, fc_seen) = (c.ranges[d].unwrap(), c.observed[d].unwrap());
        assert_eq!(fc.min, fc_seen.min);
        assert!(fc.max > fc_seen.max);
        assert_eq!(c.ranges[d2], c.observed[d2]);
    }

    #[test]
    fn tail_widens_unbounded_values_but_not_the_input_or_a_relu_floor() {
        use crate::ir::eval::testkit::{Builder, Rng};
        use crate::ir::graph::{Dense, Tensor};
        // input [3] -> Reshape -> Dense (identity, unbounded) -> ReLU.
        let (mut b, x) = Builder::new(&[3]);
        let t = b.node("reshape", "Reshape", FrozenOp::Reshape, &[x], &[3]);
        let identity = Tensor::new(vec![3, 3], vec![1., 0., 0., 0., 1., 0., 0., 0., 1.]);
        let d = b.node(
            "fc",
            "Gemm",
            FrozenOp::Dense(Dense {
                weight: identity,
                bias: vec![0.; 3],
            }),
            &[t],
            &[3],
        );
        let r = b.node(
            "relu",
            "Relu",
            FrozenOp::Activation(Activation::Relu),
            &[d],
            &[3],
        );
        let g = b.finish(r);
        let mut rng = Rng::new(7);
        let calib = Array {
            shape: vec![64, 3],
            data: rng.vec(64 * 3, -1.0, 1.0),
        };
        let c = calibrate(&g, &calib, Method::DEFAULT, false).unwrap();
        let (input, input_seen) = (c.ranges[x].unwrap(), c.observed[x].unwrap());
        assert_eq!(input, input_seen);
        // A layout change of the input is still the input.
        assert_eq!(c.ranges[t], c.observed[t]);
        let (fc, fc_seen) = (c.ranges[d].unwrap(), c.observed[d].unwrap());
        assert!(
            fc.min < fc_seen.min && fc.max > fc_seen.max,
            "{fc:?} vs {fc_seen:?}"
        );
        let (relu, relu_seen) = (c.ranges[r].unwrap(), c.observed[r].unwrap());
        assert_eq!(relu.min, relu_seen.min);
        assert!(relu.max > relu_seen.max);
        // min/max keeps every observed range as it is.
        let m = calibrate(&g, &calib, Method::MinMax, false).unwrap();
        assert_eq!(m.ranges, m.observed);
    }

    /// Each way calibration data can miss the model's input gets its own error, naming the fix.
    #[test]
    fn calibration_data_errors_name_the_fix() {
        let model = [3, 4, 5];
        let err = |shape: &[usize], data: Option<Vec<f32>>, min: usize| {
            let len = shape.iter().product();
            let a = Array {
                shape: shape.to_vec(),
                data: data.unwrap_or_else(|| vec![0.5; len]),
            };
            check_samples(&a, &model, "x", min)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(err(&[8, 3, 4, 5], None, 2), None);
        let cases: [(&[usize], &str); 4] = [
            (&[3, 4, 5], "without the sample axis"),
            (&[8, 60], "x.reshape(8, 3, 4, 5)"),
            (&[8, 4, 5, 3], "permuted"),
            (&[8, 3, 4, 6], "takes [N, 3, 4, 5]"),
        ];
        for (shape, want) in cases {
            let e = err(shape, None, 1).unwrap();
            assert!(e.contains(want) && e.contains("\"x\""), "{shape:?}: {e}");
        }
        let one = err(&[1, 3, 4, 5], None, 2).unwrap();
        assert!(one.contains("1 sample(s); at least 2"), "{one}");
        let mut data = vec![0.5; 2 * 60];
        data[60 + 7] = f32::NAN;
        let nan = err(&[2, 3, 4, 5], Some(data), 1).unwrap();
        assert!(nan.contains("NaN) in sample 1 (element 7"), "{nan}");
    }
}
