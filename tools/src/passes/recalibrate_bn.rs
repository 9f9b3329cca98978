//! Re-estimating BatchNorm running statistics from calibration data.
//!
//! Every BatchNorm's running mean and variance are replaced by the population statistics of its
//! input over the calibration samples, measured in eval mode with every earlier BatchNorm already
//! recalibrated: BN k sees the activations it would see if the model's own statistics upstream
//! were right. That is the only order in which the result does not depend on how wrong the
//! upstream statistics were, and it is what `diagnose` compares the stored statistics with.
//!
//! "Population statistics" means the mean and the (biased, divide-by-count) variance over all
//! samples and all spatial positions of a channel, accumulated in f64 and rounded to f32 once.
//! PyTorch's running variance is an average of unbiased batch variances; the two differ by
//! `M / (M - 1)` for `M` values per channel, which is under 2 % even for a BatchNorm1d after a
//! dense layer with 64 calibration samples and negligible for feature maps.
//!
//! The graph is run layer by layer over all samples at once (each activation is kept for every
//! sample until its last reader has run), so one pass over the data suffices however many
//! BatchNorms there are.

use std::fmt;

use anyhow::{anyhow, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::io::Array;
use crate::ir::eval::{EvalOp, Operand};
use crate::ir::graph::{BatchNorm, ImportedGraph, Op, Origin};

/// Per-channel population statistics of one tensor over the calibration samples, with the
/// sampling error of each estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Population (biased) variance per channel.
    pub var: Vec<f64>,
    /// Standard error of `mean`: the spread of the per-sample channel means over the samples,
    /// divided by `sqrt(samples)`. Values within one sample are correlated (neighbouring pixels),
    /// samples are not, so this is honest for feature maps and for single values alike.
    pub mean_se: Vec<f64>,
    /// Standard error of `var`, computed the same way from each sample's mean squared deviation
    /// from the channel mean.
    pub var_se: Vec<f64>,
    /// Calibration samples the statistics come from.
    pub samples: usize,
    /// Values per channel in one sample (spatial positions; 1 after a dense layer).
    pub values_per_sample: usize,
}

/// Collects per-sample channel moments; exact in f64 however far the mean is from zero.
#[derive(Clone, Debug)]
pub struct ChannelAccumulator {
    channels: usize,
    /// Per sample: channel means.
    means: Vec<Vec<f64>>,
    /// Per sample: channel variances about the sample's own mean.
    vars: Vec<Vec<f64>>,
    values_per_sample: usize,
}

impl ChannelAccumulator {
    /// An accumulator for tensors of `channels` channels (axis 0 of the per-sample shape).
    pub fn new(channels: usize) -> Self {
        ChannelAccumulator {
            channels,
            means: Vec::new(),
            vars: Vec::new(),
            values_per_sample: 0,
        }
    }

    /// Adds one sample (`[C, ...]`, row-major). Every sample must have the same length.
    pub fn add(&mut self, x: &[f32]) -> Result<()> {
        let c = self.channels;
        ensure!(
            c > 0 && x.len() % c == 0 && !x.is_empty(),
            "{} values cannot be split into {c} channels",
            x.len()
        );
        let inner = x.len() / c;
        ensure!(
            self.means.is_empty() || inner == self.values_per_sample,
            "sample has {inner} values per channel, earlier ones had {}",
            self.values_per_sample
        );
        self.values_per_sample = inner;
        let mut means = Vec::with_capacity(c);
        let mut vars = Vec::with_capacity(c);
        for xs in x.chunks_exact(inner) {
            // Two passes within the sample: the deviations are summed, not the raw squares, so a
            // channel at 300 +- 0.1 keeps its variance.
            let m = xs.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
            let v = xs.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / inner as f64;
            means.push(m);
            vars.push(v);
        }
        self.means.push(means);
        self.vars.push(vars);
        Ok(())
    }

    /// Samples added so far.
    pub fn samples(&self) -> usize {
        self.means.len()
    }

    /// The population statistics over every sample added.
    pub fn finish(&self) -> ChannelStats {
        let n = self.means.len();
        let nf = n as f64;
        let mut out = ChannelStats {
            mean: Vec::with_capacity(self.channels),
            var: Vec::with_capacity(self.channels),
            mean_se: Vec::with_capacity(self.channels),
            var_se: Vec::with_capacity(self.channels),
            samples: n,
            values_per_sample: self.values_per_sample,
        };
        for ch in 0..self.channels {
            // Every sample holds the same number of values, so the grand mean is the mean of the
            // sample means, and the grand variance is the mean of (within-sample variance +
            // squared distance of the sample mean from the grand mean).
            let mean = self.means.iter().map(|m| m[ch]).sum::<f64>() / nf;
            let per_sample_sq: Vec<f64> = self
                .means
                .iter()
                .zip(&self.vars)
                .map(|(m, v)| v[ch] + (m[ch] - mean).powi(2))
                .collect();
            let var = per_sample_sq.iter().sum::<f64>() / nf;
            let sd = |xs: &mut dyn Iterator<Item = f64>, centre: f64| -> f64 {
                if n < 2 {
                    return f64::INFINITY;
                }
                (xs.map(|x| (x - centre).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt()
            };
            let mean_se = sd(&mut self.means.iter().map(|m| m[ch]), mean) / nf.sqrt();
            let var_se = sd(&mut per_sample_sq.iter().copied(), var) / nf.sqrt();
            out.mean.push(mean);
            out.var.push(var);
            out.mean_se.push(mean_se);
            out.var_se.push(var_se);
        }
        out
    }
}

/// One BatchNorm's statistics before and after recalibration.
#[derive(Clone, Debug, PartialEq)]
pub struct RecalibratedBn {
    /// Index of the node in the graph's `nodes`.
    pub node: usize,
    /// ONNX node name and op type.
    pub origin: Origin,
    /// The BatchNorm as it was in the graph (stored running statistics, gamma, beta, epsilon).
    pub before: BatchNorm,
    /// Population statistics of its input with every earlier BatchNorm recalibrated; the new
    /// running mean and variance are these, rounded to f32.
    pub data: ChannelStats,
}

impl RecalibratedBn {
    /// Largest standardized change of the running mean, `|new - old| / sqrt(old_var + eps)`,
    /// and the channel where it occurs.
    pub fn max_mean_change(&self) -> (f64, usize) {
        let eps = self.before.epsilon as f64;
        worst(self.data.mean.iter().enumerate().map(|(c, &m)| {
            (m - self.before.mean[c] as f64).abs() / (self.before.var[c] as f64 + eps).sqrt()
        }))
    }

    /// Smallest and largest `(new_var + eps) / (old_var + eps)` over the channels.
    pub fn var_ratio_range(&self) -> (f64, f64) {
        let eps = self.before.epsilon as f64;
        self.data
            .var
            .iter()
            .zip(&self.before.var)
            .map(|(&n, &o)| (n + eps) / (o as f64 + eps))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                (lo.min(r), hi.max(r))
            })
    }
}

/// Largest value of an iterator and its position (0 for an empty one).
pub(crate) fn worst(values: impl Iterator<Item = f64>) -> (f64, usize) {
    values
        .enumerate()
        .fold((f64::NEG_INFINITY, 0), |(best, at), (i, v)| {
            if v > best {
                (v, i)
            } else {
                (best, at)
            }
        })
}

impl fmt::Display for RecalibratedBn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shift, ch) = self.max_mean_change();
        let (lo, hi) = self.var_ratio_range();
        write!(
            f,
            "{}: {} channels, running mean moved by up to {shift:.3} old std (channel {ch}), \
             running variance scaled by {lo:.3}..{hi:.3}",
            self.origin,
            self.data.mean.len()
        )
    }
}

/// The result of [`recalibrate`]: the graph with new statistics and what changed.
#[derive(Clone, Debug)]
pub struct Recalibration {
    /// The input graph with every BatchNorm's running mean and variance replaced.
    pub graph: ImportedGraph,
    /// One entry per BatchNorm, in execution order.
    pub layers: Vec<RecalibratedBn>,
    /// Calibration samples used.
    pub samples: usize,
}

impl fmt::Display for Recalibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "recalibrated {} BatchNorm node(s) on {} calibration samples (population statistics, \
             layer by layer in eval mode):",
            self.layers.len(),
            self.samples
        )?;
        for l in &self.layers {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// Re-estimates every BatchNorm's running mean and variance from `calib` (`[N, ...]` in the
/// model's input shape, at least 2 samples), propagating layer by layer in eval mode. Gamma, beta
/// and epsilon are kept. `progress` shows a bar over the samples of each node.
pub fn recalibrate(g: &ImportedGraph, calib: &Array, progress: bool) -> Result<Recalibration> {
    let input = g
        .values
        .get(g.input)
        .ok_or_else(|| anyhow!("graph input value id {} is out of range", g.input))?;
    // BatchNorm statistics need a variance: two samples at least.
    crate::quantize::calibrate::check_samples(calib, &input.shape, &input.name, 2)?;
    let n = calib.samples();

    // How many node inputs still have to read each value; a value is dropped after its last
    // reader so only the live activations of all samples are held.
    let mut readers = vec![0usize; g.values.len()];
    for node in &g.nodes {
        for &v in &node.inputs {
            if let Some(r) = readers.get_mut(v) {
                *r += 1;
            }
        }
    }
    let mut slots: Vec<Option<Vec<Vec<f32>>>> = vec![None; g.values.len()];
    slots[g.input] = Some((0..n).map(|i| calib.sample(i).to_vec()).collect());

    let bar = progress_bar(progress, (g.nodes.len() * n) as u64);
    let mut graph = g.clone();
    let mut layers = Vec::new();
    for (index, node) in g.nodes.iter().enumerate() {
        let mut run_node = || -> Result<Vec<Vec<f32>>> {
            ensure!(!node.inputs.is_empty(), "node has no inputs");
            ensure!(
                node.output < g.values.len(),
                "output value id {} is out of range",
                node.output
            );
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for &v in &node.inputs {
                let data = slots.get(v).and_then(|s| s.as_ref()).ok_or_else(|| {
                    anyhow!("reads value {v} before any node computed it (graph not in topological order?)")
                })?;
                inputs.push((data, g.values[v].shape.as_slice()));
            }
            let op = match &node.op {
                Op::BatchNorm(bn) => {
                    let channels = bn.mean.len();
                    let mut acc = ChannelAccumulator::new(channels);
                    for x in inputs[0].0 {
                        acc.add(x)?;
                    }
                    let data = acc.finish();
                    let mut new = bn.clone();
                    new.mean = data.mean.iter().map(|&m| m as f32).collect();
                    new.var = data.var.iter().map(|&v| v as f32).collect();
                    layers.push(RecalibratedBn {
                        node: index,
                        origin: node.origin.clone(),
                        before: bn.clone(),
                        data,
                    });
                    graph.nodes[index].op = Op::BatchNorm(new.clone());
                    Op::BatchNorm(new)
                }
                other => other.clone(),
            };
            let out_shape = &g.values[node.output].shape;
            let mut outputs = Vec::with_capacity(n);
            for i in 0..n {
                let operands: Vec<Operand<'_>> = inputs
                    .iter()
                    .map(|(data, shape)| Operand {
                        data: &data[i],
                        shape,
                    })
                    .collect();
                outputs.push(op.eval(&operands, out_shape)?);
                bar.inc(1);
            }
            Ok(outputs)
        };
        let outputs = run_node().with_context(|| format!("{} (node #{index})", node.origin))?;
        for &v in &node.inputs {
            readers[v] -= 1;
            if readers[v] == 0 {
                slots[v] = None;
            }
        }
        if readers[node.output] > 0 {
            slots[node.output] = Some(outputs);
        }
    }
    bar.finish_and_clear();
    Ok(Recalibration {
        graph,
        layers,
        samples: n,
    })
}

fn progress_bar(show: bool, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} sample-nodes ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("BatchNorm statistics, layer by layer");
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::eval;
    use crate::ir::eval::testkit::Builder;
    use crate::ir::graph::{Dense, FrozenOp, Tensor};

    fn bn(c: usize) -> BatchNorm {
        BatchNorm {
            gamma: vec![1.0; c],
            beta: vec![0.0; c],
            mean: vec![0.0; c],
            var: vec![1.0; c],
            epsilon: 1e-5,
        }
    }

    #[test]
    fn accumulator_is_exact_far_from_zero() {
        let mut acc = ChannelAccumulator::new(2);
        // Channel 0: 300 +- 0.1 over samples; channel 1: -1, 1 within each sample.
        acc.add(&[300.1, 299.9, -1.0, 1.0]).unwrap();
        acc.add(&[300.1, 299.9, -1.0, 1.0]).unwrap();
        let s = acc.finish();
        assert!((s.mean[0] - 300.0).abs() < 1e-4, "{s:?}");
        assert!((s.var[0] - 0.01).abs() < 1e-4, "{s:?}");
        assert_eq!(s.mean[1], 0.0);
        assert_eq!(s.var[1], 1.0);
        // Identical samples: no spread between them.
        assert_eq!(s.mean_se[1], 0.0);
    }

    /// dense (x2 +5) -> BN -> dense (x3) -> BN: the second BN must be measured with the first
    /// already recalibrated, whatever the first one's stored statistics were.
    #[test]
    fn statistics_propagate_through_recalibrated_layers() {
        let (mut b, x) = Builder::<Op>::new(&[1]);
        let d1 = b.node(
            "d1",
            "Gemm",
            Op::Frozen(FrozenOp::Dense(Dense {
                weight: Tensor::new(vec![1, 1], vec![2.0]),
                bias: vec![5.0],
            })),
            &[x],
            &[1],
        );
        let n1 = b.node(
            "bn1",
            "BatchNormalization",
            Op::BatchNorm(bn(1)),
            &[d1],
            &[1],
        );
        let d2 = b.node(
            "d2",
            "Gemm",
            Op::Frozen(FrozenOp::Dense(Dense {
                weight: Tensor::new(vec![1, 1], vec![3.0]),
                bias: vec![0.0],
            })),
            &[n1],
            &[1],
        );
        let y = b.node(
            "bn2",
            "BatchNormalization",
            Op::BatchNorm(bn(1)),
            &[d2],
            &[1],
        );
        let g = b.finish(y);
        let calib = Array {
            shape: vec![4, 1],
            data: vec![-1.0, 0.0, 1.0, 2.0],
        };
        let r = recalibrate(&g, &calib, false).unwrap();
        assert_eq!(r.layers.len(), 2);
        // bn1 sees 3, 5, 7, 9: mean 6, variance 5.
        assert!((r.layers[0].data.mean[0] - 6.0).abs() < 1e-9);
        assert!((r.layers[0].data.var[0] - 5.0).abs() < 1e-9);
        // bn2 sees 3 * standardized values: mean 0, variance 9 (up to epsilon).
        assert!(r.layers[1].data.mean[0].abs() < 1e-6);
        assert!((r.layers[1].data.var[0] - 9.0).abs() < 1e-3);
        // The recalibrated graph standardizes its output.
        let out: Vec<f32> = (0..4)
            .flat_map(|i| eval::run(&r.graph, calib.sample(i)).unwrap())
            .collect();
        let mean = out.iter().map(|&v| v as f64).sum::<f64>() / 4.0;
        let var = out.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "{out:?}");
    }

    #[test]
    fn wrong_calibration_shape_is_refused() {
        let (mut b, x) = Builder::<Op>::new(&[2]);
        let y = b.node("bn", "BatchNormalization", Op::BatchNorm(bn(2)), &[x], &[2]);
        let g = b.finish(y);
        let calib = Array {
            shape: vec![3, 3],
            data: vec![0.0; 9],
        };
        let err = recalibrate(&g, &calib, false).unwrap_err().to_string();
        assert!(err.contains("model's input"), "{err}");
    }
}
