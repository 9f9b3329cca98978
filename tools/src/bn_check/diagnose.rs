//! Checking BatchNorm running statistics against real data before they are frozen.
//!
//! Folding makes the device immune to training-mode BatchNorm, but it freezes whatever running
//! statistics the model carries. Statistics that were never updated (running mean 0, variance 1
//! while the real activations sit at 20 or 300) give a confidently wrong frozen model. This
//! module measures, for every BatchNorm node, the per-channel population mean and variance of its
//! input over calibration samples and compares them with the stored running statistics:
//!
//! - standardized mean shift `|mean_data - mean_run| / sqrt(var_run + eps)`: how far, in units of
//!   the stored standard deviation, the normalized output is off centre;
//! - variance ratio `(var_data + eps) / (var_run + eps)`: how much wider (or narrower) the
//!   normalized output is than the unit spread the layer was trained to produce.
//!
//! **What "the data at a BN's input" means.** When an upstream BatchNorm is stale, every
//! activation after it is wrong too, so a downstream BatchNorm with perfectly good statistics
//! would look stale if measured on the model as it runs. The statistics compared here are
//! measured with every *upstream* BatchNorm using population statistics (exactly what
//! [`recalibrate`](crate::passes::recalibrate_bn::recalibrate) computes, one pass layer by
//! layer), so a BatchNorm is named stale only when its *own* statistics are wrong. The plain
//! eval-mode numbers (the model as stored) are measured too and shown alongside ("as run").
//!
//! Every comparison allows for sampling noise: the standard error of each data statistic is
//! estimated from its spread over the samples and [`Thresholds::noise_sigmas`] of it are
//! subtracted before a threshold applies, so a BatchNorm1d after a dense layer (one value per
//! channel per sample) is not flagged because the calibration set is small. Channels whose data
//! variance is tiny next to the layer's other channels ("quiet", e.g. dead channels) have no
//! meaningful variance ratio and are judged on the mean shift alone. docs/DIAGNOSE.md gives the
//! thresholds and the numbers they were chosen from.

use std::fmt::{self, Write as _};

use anyhow::{ensure, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::io::Array;
use crate::ir::eval;
use crate::ir::graph::{ImportedGraph, Op, Origin};
use crate::passes::recalibrate_bn::{self, ChannelAccumulator, ChannelStats, Recalibration};

/// How far stored statistics may be from the data's before a BatchNorm is flagged.
///
/// Variance ratios are judged separately in the two directions. Data *wider* than the stored
/// variance make the layer amplify: the error grows without bound. Data *narrower* than stored
/// only shrink the channel towards the constant `beta` (an error of at most about one unit of
/// the normalized output), and stored variances of channels with little variance keep a floor
/// from their initial value of 1 until training has run long enough, so that side is lenient.
/// For never-updated statistics (exactly 0 and 1) the stored values carry no information and
/// both directions use the `wider` factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// A channel whose standardized mean shift exceeds this (after the noise allowance) is
    /// suspicious.
    pub suspicious_shift: f64,
    /// ... and stale above this.
    pub stale_shift: f64,
    /// A channel whose data variance exceeds the stored one by more than this factor (after the
    /// noise allowance) is suspicious.
    pub suspicious_wider: f64,
    /// ... and stale beyond this factor.
    pub stale_wider: f64,
    /// A channel whose stored variance exceeds the data's by more than this factor (after the
    /// noise allowance) is suspicious.
    pub suspicious_narrower: f64,
    /// ... and stale beyond this factor.
    pub stale_narrower: f64,
    /// Standard errors of the data statistic subtracted before comparing with a threshold.
    pub noise_sigmas: f64,
    /// A channel whose data variance is below this fraction of the median data variance of the
    /// layer's channels is quiet: its variance ratio is not judged.
    pub quiet_fraction: f64,
}

impl Thresholds {
    /// The defaults, chosen in docs/DIAGNOSE.md from the healthy and stale fixtures.
    pub const DEFAULT: Thresholds = Thresholds {
        suspicious_shift: 0.5,
        stale_shift: 1.5,
        suspicious_wider: 1.5,
        stale_wider: 3.0,
        suspicious_narrower: 30.0,
        stale_narrower: 100.0,
        noise_sigmas: 4.0,
        quiet_fraction: 1e-3,
    };
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds::DEFAULT
    }
}

/// How a BatchNorm's (or a channel's) statistics compare with the data, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Within the healthy thresholds.
    Healthy,
    /// Off by more than a trained model's statistics should be, not enough to be sure.
    Suspicious,
    /// Wrong: folding these statistics gives a model that does not compute what was trained.
    Stale,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Healthy => "healthy",
            Verdict::Suspicious => "suspicious",
            Verdict::Stale => "STALE",
        })
    }
}

/// One channel of one BatchNorm: stored vs data statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelCheck {
    /// Channel index.
    pub channel: usize,
    /// Stored running mean.
    pub running_mean: f64,
    /// Stored running variance.
    pub running_var: f64,
    /// Population mean of the input (upstream BatchNorms on population statistics).
    pub data_mean: f64,
    /// Population variance of the input (same).
    pub data_var: f64,
    /// `|data_mean - running_mean| / sqrt(running_var + eps)`.
    pub shift: f64,
    /// Standard error of `shift` from sampling noise.
    pub shift_se: f64,
    /// `(data_var + eps) / (running_var + eps)`.
    pub var_ratio: f64,
    /// Standard error of `ln(var_ratio)` from sampling noise.
    pub log_ratio_se: f64,
    /// The data variance is tiny next to the layer's other channels: the ratio is not judged.
    pub quiet: bool,
    /// This channel's verdict.
    pub verdict: Verdict,
}

impl ChannelCheck {
    /// The mean shift beyond the noise allowance (0 when within the noise).
    pub fn shift_beyond_noise(&self, t: &Thresholds) -> f64 {
        (self.shift - t.noise_sigmas * self.shift_se).max(0.0)
    }

    /// `ln(var_ratio)` moved towards 0 by the noise allowance (0 when within the noise or when
    /// the channel is quiet): positive when the data are wider than stored, negative narrower.
    pub fn log_ratio_beyond_noise(&self, t: &Thresholds) -> f64 {
        if self.quiet {
            return 0.0;
        }
        let l = self.var_ratio.ln();
        l.signum() * (l.abs() - t.noise_sigmas * self.log_ratio_se).max(0.0)
    }

    /// The channel's verdict. `symmetric`: judge narrower data with the `wider` factors (for
    /// never-updated statistics).
    fn judge(&self, t: &Thresholds, symmetric: bool) -> Verdict {
        let s = self.shift_beyond_noise(t);
        let l = self.log_ratio_beyond_noise(t);
        let (susp, stale) = if l >= 0.0 || symmetric {
            (t.suspicious_wider, t.stale_wider)
        } else {
            (t.suspicious_narrower, t.stale_narrower)
        };
        if s > t.stale_shift || l.abs() > stale.ln() {
            Verdict::Stale
        } else if s > t.suspicious_shift || l.abs() > susp.ln() {
            Verdict::Suspicious
        } else {
            Verdict::Healthy
        }
    }

    /// How bad the channel is, in units of its stale thresholds (for ranking the worst channels).
    fn severity(&self, t: &Thresholds) -> f64 {
        let s = self.shift_beyond_noise(t) / t.stale_shift;
        let l = self.log_ratio_beyond_noise(t);
        let r = if l >= 0.0 {
            l / t.stale_wider.ln()
        } else {
            -l / t.stale_narrower.ln()
        };
        s.max(r)
    }
}

/// The check of one BatchNorm node.
#[derive(Clone, Debug, PartialEq)]
pub struct BnCheck {
    /// Index of the node in the graph's `nodes`.
    pub node: usize,
    /// ONNX node name and op type.
    pub origin: Origin,
    /// The node's epsilon.
    pub epsilon: f32,
    /// Per channel, in channel order.
    pub channels: Vec<ChannelCheck>,
    /// The running statistics are exactly their initial values (mean 0 and variance 1 in every
    /// channel): the layer's statistics were never updated.
    pub never_updated: bool,
    /// Statistics of the input when the model runs as stored (upstream BatchNorms on their own
    /// running statistics), if they were measured.
    pub as_run: Option<ChannelStats>,
    /// The node's verdict: its worst channel's, or stale for never-updated statistics.
    pub verdict: Verdict,
}

impl BnCheck {
    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The channel with the largest mean shift.
    pub fn worst_shift(&self) -> &ChannelCheck {
        let (_, i) = recalibrate_bn::worst(self.channels.iter().map(|c| c.shift));
        &self.channels[i]
    }

    /// The channel whose variance ratio is furthest from 1 (quiet channels excluded unless all are).
    pub fn worst_ratio(&self) -> &ChannelCheck {
        let (_, i) = recalibrate_bn::worst(self.channels.iter().map(|c| {
            let d = c.var_ratio.ln().abs();
            if c.quiet {
                d - 1e6
            } else {
                d
            }
        }));
        &self.channels[i]
    }

    /// Up to `k` channels, worst first (by distance beyond the thresholds).
    pub fn worst_channels(&self, k: usize, t: &Thresholds) -> Vec<&ChannelCheck> {
        let mut v: Vec<&ChannelCheck> = self.channels.iter().collect();
        v.sort_by(|a, b| b.severity(t).total_cmp(&a.severity(t)));
        v.truncate(k);
        v
    }

    /// Channels with the given verdict or worse.
    pub fn count_at_least(&self, v: Verdict) -> usize {
        self.channels.iter().filter(|c| c.verdict >= v).count()
    }

    /// Largest mean shift and variance-ratio factor (either way) as the model runs as stored.
    pub fn as_run_worst(&self) -> Option<(f64, f64)> {
        let s = self.as_run.as_ref()?;
        let eps = self.epsilon as f64;
        let mut shift = 0f64;
        let mut factor = 1f64;
        for (c, ch) in self.channels.iter().enumerate() {
            let sd = (ch.running_var + eps).sqrt();
            shift = shift.max((s.mean[c] - ch.running_mean).abs() / sd);
            let r = (s.var[c] + eps) / (ch.running_var + eps);
            factor = factor.max(r.max(1.0 / r));
        }
        Some((shift, factor))
    }

    /// One sentence on why the node got its verdict.
    pub fn reason(&self) -> String {
        let stale = self.count_at_least(Verdict::Stale);
        let susp = self.count_at_least(Verdict::Suspicious);
        let mut why = match (self.never_updated, self.verdict) {
            (true, _) if self.count_at_least(Verdict::Suspicious) > 0 => {
                "never updated: running mean 0 and variance 1 in every channel".to_string()
            }
            (true, _) => "never updated (running mean 0, variance 1 in every channel); the data \
                          here happen to be close to that, but the statistics describe no data"
                .to_string(),
            (false, Verdict::Stale) => format!(
                "{stale} of {} channels beyond the stale thresholds",
                self.channels.len()
            ),
            (false, Verdict::Suspicious) => format!(
                "{susp} of {} channels beyond the healthy thresholds",
                self.channels.len()
            ),
            (false, Verdict::Healthy) => String::new(),
        };
        let quiet = self.channels.iter().filter(|c| c.quiet).count();
        if quiet > 0 {
            if !why.is_empty() {
                why.push_str("; ");
            }
            let _ = write!(why, "{quiet} quiet channel(s) judged on the mean only");
        }
        why
    }
}

/// Options of [`diagnose`].
#[derive(Clone, Copy, Debug)]
pub struct DiagnoseOptions {
    /// Where the verdicts change.
    pub thresholds: Thresholds,
    /// Also measure the input statistics with the model as stored (one more pass over the data).
    pub as_run: bool,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for DiagnoseOptions {
    fn default() -> Self {
        DiagnoseOptions {
            thresholds: Thresholds::DEFAULT,
            as_run: true,
            progress: false,
        }
    }
}

/// The overall result of a diagnosis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every BatchNorm is healthy.
    Healthy,
    /// No BatchNorm is stale, some are suspicious.
    Suspicious,
    /// At least one BatchNorm is stale.
    Stale,
    /// The graph has no BatchNorm node: the exporter already fused the statistics into the
    /// weights (or the model never had any), so they cannot be checked.
    NoBatchNorm,
}

impl Outcome {
    /// The exit code of `icefold diagnose` for this outcome (docs/DIAGNOSE.md): 0 healthy or
    /// suspicious, 3 stale, 4 nothing to check. (1 is any error, 2 a usage error.)
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Healthy | Outcome::Suspicious => 0,
            Outcome::Stale => 3,
            Outcome::NoBatchNorm => 4,
        }
    }
}

/// The diagnosis of every BatchNorm of a graph.
#[derive(Clone, Debug)]
pub struct Diagnosis {
    /// One check per BatchNorm, in execution order.
    pub bns: Vec<BnCheck>,
    /// Calibration samples used.
    pub samples: usize,
    /// The thresholds applied.
    pub thresholds: Thresholds,
    /// The graph with population statistics (the data side of the comparison); convert
    /// `--recalibrate-bn` folds this one.
    pub recalibration: Recalibration,
}

impl Diagnosis {
    /// The overall outcome.
    pub fn outcome(&self) -> Outcome {
        match self.bns.iter().map(|b| b.verdict).max() {
            None => Outcome::NoBatchNorm,
            Some(Verdict::Healthy) => Outcome::Healthy,
            Some(Verdict::Suspicious) => Outcome::Suspicious,
            Some(Verdict::Stale) => Outcome::Stale,
        }
    }

    /// The BatchNorm nodes judged stale.
    pub fn stale(&self) -> impl Iterator<Item = &BnCheck> {
        self.bns.iter().filter(|b| b.verdict == Verdict::Stale)
    }

    /// The per-BN table, the worst channels of every flagged node, and a closing line.
    pub fn table(&self) -> String {
        let t = &self.thresholds;
        let mut s = String::new();
        if self.bns.is_empty() {
            s.push_str(NO_BATCHNORM);
            return s;
        }
        let _ = writeln!(
            s,
            "BatchNorm statistics vs {} calibration samples (data: upstream BatchNorms on \
             population statistics; as run: the model as stored)",
            self.samples
        );
        let _ = writeln!(
            s,
            "{:<40} {:>5}  {:<10} {:>16} {:>16} {:>17}  note",
            "node", "C", "verdict", "mean shift (ch)", "var ratio (ch)", "as run: shift/var"
        );
        for b in &self.bns {
            let ws = b.worst_shift();
            let wr = b.worst_ratio();
            let as_run = match b.as_run_worst() {
                Some((sh, f)) => format!("{} / x{}", num(sh), num(f)),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<40} {:>5}  {:<10} {:>16} {:>16} {:>17}  {}",
                ellipsize(&b.origin.name, 40),
                b.channel_count(),
                b.verdict.to_string(),
                format!("{} ({})", num(ws.shift), ws.channel),
                format!("{} ({})", num(wr.var_ratio), wr.channel),
                as_run,
                b.reason()
            );
        }
        let flagged: Vec<&BnCheck> = self
            .bns
            .iter()
            .filter(|b| b.verdict > Verdict::Healthy)
            .collect();
        if !flagged.is_empty() {
            let _ = writeln!(s, "\nworst channels (running vs data, +- standard error):");
            for b in flagged {
                let _ = writeln!(s, "  {} [{}]", b.origin, b.verdict);
                for c in b.worst_channels(3, t) {
                    let _ = writeln!(
                        s,
                        "    ch {:>4}: mean {} vs {} (+-{}), var {} vs {} (+-{}){}  -> shift {}, ratio {}",
                        c.channel,
                        num(c.running_mean),
                        num(c.data_mean),
                        num(c.shift_se * (c.running_var + b.epsilon as f64).sqrt()),
                        num(c.running_var),
                        num(c.data_var),
                        num(c.log_ratio_se * (c.data_var + b.epsilon as f64)),
                        if c.quiet { " quiet" } else { "" },
                        num(c.shift),
                        num(c.var_ratio)
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "\nthresholds (after subtracting {} standard errors of sampling noise): healthy up to mean \
             shift {}, data variance up to x{} wider or x{} narrower than stored; stale beyond \
             shift {}, x{} wider, x{} narrower (never-updated layers: x{} either way)",
            t.noise_sigmas,
            t.suspicious_shift,
            t.suspicious_wider,
            t.suspicious_narrower,
            t.stale_shift,
            t.stale_wider,
            t.stale_narrower,
            t.suspicious_wider
        );
        let stale: Vec<String> = self.stale().map(|b| b.origin.to_string()).collect();
        match self.outcome() {
            Outcome::Stale => {
                let _ = writeln!(
                    s,
                    "STALE: {} BatchNorm node(s) carry statistics that do not match the data: {}.\n\
                     Folding them would freeze a model that does not compute what was trained. \
                     Update the running statistics in training (PyTorch: model.train() forward \
                     passes; TensorFlow/Keras: run the UPDATE_OPS / call the model with \
                     training=True), or let icefold re-estimate them from this data: \
                     icefold convert --calib ... --recalibrate-bn",
                    stale.len(),
                    stale.join(", ")
                );
            }
            Outcome::Suspicious => {
                let _ = writeln!(
                    s,
                    "suspicious: no BatchNorm is clearly stale, but some are off by more than a \
                     trained model's statistics usually are; check that the calibration data come \
                     from the distribution the model was trained on"
                );
            }
            Outcome::Healthy => {
                let _ = writeln!(s, "healthy: every BatchNorm's statistics match the data");
            }
            Outcome::NoBatchNorm => {}
        }
        s
    }
}

/// What to say when there is nothing to check.
pub const NO_BATCHNORM: &str = "\
no BatchNormalization node in this model: the exporter already fused the running statistics \
into the conv/dense weights (or the model never had BatchNorm), so icefold cannot check them.
To keep the BatchNorm nodes, export without fusion:
  PyTorch: torch.onnx.export(model.eval(), example, \"model.onnx\", dynamo=False,
                             training=torch.onnx.TrainingMode.PRESERVE)
           (the default training=EVAL and the dynamo exporter fold BatchNorm)
  Keras:   python tools/export_keras.py model.keras -o model.onnx --keep-bn
";

/// Compact number for tables: 3 significant digits, scientific when far from 1.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn ellipsize(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        // Keep the end: ONNX names are paths and their last parts tell layers apart.
        let tail: String = s.chars().skip(s.chars().count() - (n - 1)).collect();
        format!("…{tail}")
    }
}

/// Compares every BatchNorm's running statistics in `g` with the population statistics of its
/// input over `calib` (`[N, ...]` in the model's input shape, N >= 2), measured with every
/// upstream BatchNorm on population statistics. A graph without BatchNorm gives a diagnosis with
/// no entries ([`Outcome::NoBatchNorm`]) without running anything.
pub fn diagnose(g: &ImportedGraph, calib: &Array, opts: &DiagnoseOptions) -> Result<Diagnosis> {
    let recalibration = recalibrate_bn::recalibrate(g, calib, opts.progress)?;
    let as_run = if opts.as_run && !recalibration.layers.is_empty() {
        Some(stats_as_run(g, calib, opts.progress)?)
    } else {
        None
    };
    let t = opts.thresholds;
    let mut bns = Vec::with_capacity(recalibration.layers.len());
    for (k, layer) in recalibration.layers.iter().enumerate() {
        let bn = &layer.before;
        let d = &layer.data;
        let eps = bn.epsilon as f64;
        let mut sorted: Vec<f64> = d.var.clone();
        sorted.sort_by(f64::total_cmp);
        let median_var = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        let never_updated = bn.mean.iter().all(|&m| m == 0.0) && bn.var.iter().all(|&v| v == 1.0);
        let channels: Vec<ChannelCheck> = (0..d.mean.len())
            .map(|c| {
                let (rm, rv) = (bn.mean[c] as f64, bn.var[c] as f64);
                let sd_run = (rv + eps).sqrt();
                let mut ch = ChannelCheck {
                    channel: c,
                    running_mean: rm,
                    running_var: rv,
                    data_mean: d.mean[c],
                    data_var: d.var[c],
                    shift: (d.mean[c] - rm).abs() / sd_run,
                    shift_se: d.mean_se[c] / sd_run,
                    var_ratio: (d.var[c] + eps) / (rv + eps),
                    log_ratio_se: d.var_se[c] / (d.var[c] + eps),
                    quiet: d.var[c] < t.quiet_fraction * median_var,
                    verdict: Verdict::Healthy,
                };
                ch.verdict = ch.judge(&t, never_updated);
                ch
            })
            .collect();
        let worst = channels
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Healthy);
        // Statistics at exactly their initial values are certain evidence that the update never
        // ran: they describe no data, so the layer is stale even where this calibration set
        // happens to sit near mean 0 / variance 1 (the reason says so).
        let verdict = if never_updated { Verdict::Stale } else { worst };
        bns.push(BnCheck {
            node: layer.node,
            origin: layer.origin.clone(),
            epsilon: bn.epsilon,
            channels,
            never_updated,
            as_run: as_run.as_ref().map(|s| s[k].clone()),
            verdict,
        });
    }
    Ok(Diagnosis {
        bns,
        samples: calib.samples(),
        thresholds: t,
        recalibration,
    })
}

/// Input statistics of every BatchNorm (in execution order) with the model as stored.
fn stats_as_run(g: &ImportedGraph, calib: &Array, progress: bool) -> Result<Vec<ChannelStats>> {
    let mut accs: Vec<(usize, ChannelAccumulator)> = g
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            Op::BatchNorm(bn) => Some((i, ChannelAccumulator::new(bn.mean.len()))),
            Op::Frozen(_) => None,
        })
        .collect();
    let bar = if progress {
        let bar = ProgressBar::new(calib.samples() as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} samples ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message("BatchNorm inputs as run");
        bar
    } else {
        ProgressBar::hidden()
    };
    for i in 0..calib.samples() {
        let mut failed = None;
        eval::run_traced(g, calib.sample(i), &mut |node, input, _| {
            if let Some((_, acc)) = accs.iter_mut().find(|(n, _)| *n == node) {
                if let Err(e) = acc.add(input) {
                    failed.get_or_insert(e);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    ensure!(
        accs.iter().all(|(_, a)| a.samples() == calib.samples()),
        "a BatchNorm node was not reached on every sample"
    );
    Ok(accs.iter().map(|(_, a)| a.finish()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::eval::testkit::Builder;
    use crate::ir::graph::{BatchNorm, Dense, FrozenOp, Tensor};

    /// x -> dense(scale, offset) -> BN(stats), one feature.
    fn graph(scale: f32, offset: f32, mean: f32, var: f32) -> ImportedGraph {
        let (mut b, x) = Builder::<Op>::new(&[1]);
        let d = b.node(
            "fc",
            "Gemm",
            Op::Frozen(FrozenOp::Dense(Dense {
                weight: Tensor::new(vec![1, 1], vec![scale]),
                bias: vec![offset],
            })),
            &[x],
            &[1],
        );
        let bn = BatchNorm {
            gamma: vec![1.0],
            beta: vec![0.0],
            mean: vec![mean],
            var: vec![var],
            epsilon: 1e-5,
        };
        let y = b.node("bn", "BatchNormalization", Op::BatchNorm(bn), &[d], &[1]);
        b.finish(y)
    }

    /// 64 values, mean 0 and variance 1 (a symmetric, deterministic set).
    fn unit_calib() -> Array {
        let n = 64;
        let raw: Vec<f32> = (0..n).map(|i| (i as f32 - 31.5) / 18.472).collect();
        Array {
            shape: vec![n, 1],
            data: raw,
        }
    }

    #[test]
    fn matching_statistics_are_healthy_and_init_values_far_off_are_stale() {
        let calib = unit_calib();
        let opts = DiagnoseOptions::default();
        let good = diagnose(&graph(3.0, 20.0, 20.0, 9.0), &calib, &opts).unwrap();
        assert_eq!(good.outcome(), Outcome::Healthy, "{}", good.table());
        let stale = diagnose(&graph(3.0, 20.0, 0.0, 1.0), &calib, &opts).unwrap();
        assert_eq!(stale.outcome(), Outcome::Stale, "{}", stale.table());
        assert!(stale.bns[0].never_updated);
        assert!(stale.table().contains("never updated"));
    }

    #[test]
    fn init_values_are_stale_even_where_the_data_happen_to_match() {
        let d = diagnose(
            &graph(1.0, 0.0, 0.0, 1.0),
            &unit_calib(),
            &DiagnoseOptions::default(),
        )
        .unwrap();
        assert_eq!(d.outcome(), Outcome::Stale, "{}", d.table());
        assert_eq!(d.bns[0].count_at_least(Verdict::Suspicious), 0);
        assert!(d.table().contains("happen to be close"), "{}", d.table());
    }

    #[test]
    fn a_small_calibration_set_widens_the_noise_allowance() {
        // One value per sample (a BatchNorm1d after a dense layer), 64 samples: the data mean is
        // 20 with standard deviation 3; the stored mean 21.5 is off by half a standard deviation,
        // and the standard error of that shift is 3 / sqrt(64) / 3 = 0.125 (4 of them: 0.5).
        let d = diagnose(
            &graph(3.0, 20.0, 21.5, 9.0),
            &unit_calib(),
            &DiagnoseOptions::default(),
        )
        .unwrap();
        let c = &d.bns[0].channels[0];
        assert!((c.shift - 0.5).abs() < 0.01, "{c:?}");
        assert!(c.shift_se > 0.1 && c.shift_se < 0.15, "{c:?}");
    }

    #[test]
    fn no_batchnorm_is_its_own_outcome() {
        let (mut b, x) = Builder::<Op>::new(&[1]);
        let y = b.node(
            "relu",
            "Relu",
            Op::Frozen(FrozenOp::Activation(crate::ir::graph::Activation::Relu)),
            &[x],
            &[1],
        );
        let d = diagnose(&b.finish(y), &unit_calib(), &DiagnoseOptions::default()).unwrap();
        assert_eq!(d.outcome(), Outcome::NoBatchNorm);
        assert_eq!(d.outcome().exit_code(), 4);
        assert!(d.table().contains("already fused"));
    }
}
