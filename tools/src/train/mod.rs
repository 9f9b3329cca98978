//! `icefold train`: train a small conv+BatchNorm classifier on the host with candle, evaluate it
//! with BatchNorm in the three modes that matter for deployment, and export it to ONNX.
//!
//! - [`data`]: the synthetic accelerometer-gesture set (deterministic, raw m/s²) or the user's
//!   `.npy` files, and the train / validation / calibration / test splits;
//! - [`net`]: the candle model (Conv1d → BN → ReLU ×3, global average pool, dense);
//! - this module: the training loop ([`train`]) and evaluation in a [`BnMode`] ([`evaluate`]);
//! - [`export`]: the trained network as ONNX with real `BatchNormalization` nodes, with its
//!   running statistics or with never-updated ones (mean 0, variance 1) to reproduce the seed's bug;
//! - [`cli`]: the `icefold train` command.
//!
//! Everything is a function of the seed: data, initial weights and batch order come from
//! [`rng::Rng`], and candle's CPU kernels are deterministic for a fixed thread count (checked in
//! the tests by training twice).

pub mod cli;
pub mod data;
pub mod export;
pub mod net;
pub mod rng;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};

pub use data::{Dataset, Splits};
pub use net::{BnMode, Net, NetParams, NetShape};
use rng::Rng;

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per optimizer step (BN's batch statistics are taken over this many samples).
    pub batch_size: usize,
    /// AdamW learning rate (halved for the last third of the epochs).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the initial weights and the batch order.
    pub seed: u64,
    /// Show a progress bar and print one line per epoch (on stderr).
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 12,
            batch_size: 32,
            lr: 3e-3,
            weight_decay: 1e-4,
            seed: 1,
            progress: true,
        }
    }
}

/// Loss and accuracy of a model on a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy (natural log).
    pub loss: f64,
    /// Fraction of samples whose largest logit is the label.
    pub accuracy: f64,
    /// Number of samples.
    pub samples: usize,
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loss {:.4}, accuracy {:.1} % ({} samples)",
            self.loss,
            100.0 * self.accuracy,
            self.samples
        )
    }
}

/// What one epoch did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean over the epoch's batches, BN in training mode (as the optimizer saw them).
    pub train: Metrics,
    /// Validation after the epoch, BN in eval mode with the running statistics.
    pub val: Metrics,
}

/// A trained network and its history.
pub struct Trained {
    /// The network (BN running statistics included).
    pub net: Net,
    /// One report per epoch.
    pub history: Vec<EpochReport>,
    /// Wall time of the training loop (validation included).
    pub elapsed: Duration,
}

/// Trains a fresh [`Net`] on `train`, validating on `val` after every epoch.
pub fn train(train: &Dataset, val: &Dataset, cfg: &TrainConfig) -> Result<Trained> {
    ensure!(
        cfg.epochs >= 1 && cfg.batch_size >= 2,
        "training needs at least 1 epoch and batches of at least 2 samples (BatchNorm's batch \
         variance is undefined for one sample); got {} epochs, batch size {}",
        cfg.epochs,
        cfg.batch_size
    );
    ensure!(
        train.len() >= cfg.batch_size,
        "the training set has {} samples, fewer than one batch of {}; lower --batch-size",
        train.len(),
        cfg.batch_size
    );
    ensure!(
        train.sample_shape() == val.sample_shape() && train.classes() == val.classes(),
        "training samples {:?} ({} classes) and validation samples {:?} ({} classes) differ",
        train.sample_shape(),
        train.classes(),
        val.sample_shape(),
        val.classes()
    );
    let [channels, length] = [train.sample_shape()[0], train.sample_shape()[1]];
    let shape = NetShape::new(channels, length, train.classes());
    let net = Net::new(shape, &mut Rng::stream(cfg.seed, 1))?;
    let mut order_rng = Rng::stream(cfg.seed, 2);
    let mut opt = AdamW::new(
        net.trainable(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;

    // Drop the last partial batch: a batch of one or two would give BN nearly meaningless
    // statistics and put them into the running averages.
    let steps_per_epoch = train.len() / cfg.batch_size;
    let bar = if cfg.progress {
        let bar = ProgressBar::new((steps_per_epoch * cfg.epochs) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "training {bar:30.cyan/blue} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let mut history = Vec::new();
    let sample_len = train.x.sample_len();
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut batch = Vec::with_capacity(cfg.batch_size * sample_len);
    for epoch in 1..=cfg.epochs {
        if epoch > cfg.epochs * 2 / 3 {
            opt.set_learning_rate(cfg.lr * 0.5);
        }
        order_rng.shuffle(&mut order);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for step in 0..steps_per_epoch {
            let idx = &order[step * cfg.batch_size..(step + 1) * cfg.batch_size];
            batch.clear();
            for &i in idx {
                batch.extend_from_slice(train.x.sample(i));
            }
            let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i] as u32).collect();
            let x = net.input(&batch, idx.len())?;
            let y = Tensor::new(labels.as_slice(), x.device())?;
            let logits = net.forward(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * idx.len() as f64;
            correct += count_correct(&logits, &labels)?;
            bar.inc(1);
        }
        let seen = steps_per_epoch * cfg.batch_size;
        let report = EpochReport {
            epoch,
            train: Metrics {
                loss: loss_sum / seen as f64,
                accuracy: correct as f64 / seen as f64,
                samples: seen,
            },
            val: evaluate(&net, val, BnMode::Running)?,
        };
        if cfg.progress {
            // `suspend` rather than `println`: the latter prints nothing when stderr is not a
            // terminal (the bar is hidden), and the per-epoch lines must reach logs too.
            bar.suspend(|| {
                eprintln!(
                    "epoch {epoch:>2}/{}: train loss {:.4} acc {:5.1} %   val loss {:.4} acc {:5.1} %",
                    cfg.epochs,
                    report.train.loss,
                    100.0 * report.train.accuracy,
                    report.val.loss,
                    100.0 * report.val.accuracy
                )
            });
        }
        history.push(report);
    }
    bar.finish_and_clear();
    Ok(Trained {
        net,
        history,
        elapsed: start.elapsed(),
    })
}

fn count_correct(logits: &Tensor, labels: &[u32]) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok(pred.iter().zip(labels).filter(|(p, l)| p == l).count())
}

/// Samples per forward pass when the batch size does not change the result (eval mode).
const EVAL_CHUNK: usize = 256;

/// Logits `[N, classes]` of every sample of `x` with BN in `mode`. In
/// [`BnMode::BatchStats`] consecutive samples form the inference batches (the last may be
/// smaller), as a deployment that runs BN in training mode would batch them.
pub fn logits(net: &Net, x: &crate::io::Array, mode: BnMode) -> Result<crate::io::Array> {
    let shape = net.shape();
    ensure!(
        x.shape.len() == 3 && x.shape[1..] == [shape.in_channels, shape.length],
        "samples have shape {:?}; the model takes [N, {}, {}]",
        x.shape,
        shape.in_channels,
        shape.length
    );
    let chunk = match mode {
        BnMode::BatchStats { batch_size } => {
            ensure!(
                batch_size >= 1,
                "the inference batch size must be at least 1"
            );
            batch_size
        }
        _ => EVAL_CHUNK,
    };
    let n = x.samples();
    let sample_len = x.sample_len();
    let mut data = Vec::with_capacity(n * shape.classes);
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let t = net.input(&x.data[start * sample_len..end * sample_len], end - start)?;
        let out = net.forward_mode(&t, mode)?;
        data.extend(out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        start = end;
    }
    Ok(crate::io::Array {
        shape: vec![n, shape.classes],
        data,
    })
}

/// Mean cross-entropy and accuracy of logits `[N, classes]` against `labels`. Losses are
/// computed in f64 with log-sum-exp, so a confidently wrong model shows its real (large) loss.
pub fn score(logits: &crate::io::Array, labels: &[usize]) -> Result<Metrics> {
    ensure!(
        logits.shape.len() == 2 && logits.samples() == labels.len(),
        "logits {:?} do not match {} labels",
        logits.shape,
        labels.len()
    );
    let (mut loss, mut correct) = (0f64, 0usize);
    for (i, &label) in labels.iter().enumerate() {
        let row = logits.sample(i);
        ensure!(
            label < row.len(),
            "label {label} of sample {i} is not below the {} classes",
            row.len()
        );
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[label] as f64;
        if crate::host::argmax(row) == label {
            correct += 1;
        }
    }
    let n = labels.len().max(1) as f64;
    Ok(Metrics {
        loss: loss / n,
        accuracy: correct as f64 / n,
        samples: labels.len(),
    })
}

/// Loss and accuracy of `net` on `ds` with BN in `mode`.
pub fn evaluate(net: &Net, ds: &Dataset, mode: BnMode) -> Result<Metrics> {
    score(&logits(net, &ds.x, mode)?, &ds.labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// candle computes the gradients (we never differentiate by hand); check a sample of them
    /// against central finite differences of the training-mode loss, for every kind of variable.
    #[test]
    fn candle_gradients_match_finite_differences() {
        let ds = data::gestures(8, &mut Rng::new(5));
        let net = Net::new(NetShape::new(3, data::WINDOW, 5), &mut Rng::new(6)).unwrap();
        let x = net.input(&ds.x.data, ds.len()).unwrap();
        let labels: Vec<u32> = ds.labels.iter().map(|&l| l as u32).collect();
        let y = Tensor::new(labels.as_slice(), x.device()).unwrap();
        let loss_of = |net: &Net| -> f64 {
            let l = candle_nn::loss::cross_entropy(&net.forward(&x, true).unwrap(), &y).unwrap();
            l.to_scalar::<f32>().unwrap() as f64
        };
        let loss = candle_nn::loss::cross_entropy(&net.forward(&x, true).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        let (mut checked, mut agree) = (0, 0);
        for (vi, var) in net.trainable().iter().enumerate() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("variable {vi} has no gradient"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for k in [0, base.len() / 2, base.len() - 1] {
                let h = 1e-2f32;
                let set = |v: f32| {
                    let mut b = base.clone();
                    b[k] = v;
                    let t = Tensor::from_vec(b, var.shape(), var.device()).unwrap();
                    var.set(&t).unwrap();
                };
                set(base[k] + h);
                let up = loss_of(&net);
                set(base[k] - h);
                let down = loss_of(&net);
                set(base[k]);
                let fd = (up - down) / (2.0 * h as f64);
                let an = g[k] as f64;
                // f32 forward passes and a step of 1e-2 that can cross a ReLU or max-pool kink
                // make a few finite differences inexact (one of 33 is off by 0.0034 here), so
                // the bound is on the count; candle 0.11.1's own conv1d and max_pool2d
                // backward (factors of 2-20 off) fail more than half of these.
                if (fd - an).abs() <= 0.1 * fd.abs().max(an.abs()) + 1e-3 {
                    agree += 1;
                } else {
                    eprintln!("variable {vi} element {k}: candle {an}, finite difference {fd}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 3 * net.trainable().len());
        assert!(
            agree * 10 >= checked * 9,
            "only {agree} of {checked} gradients agree with finite differences"
        );
    }
}
