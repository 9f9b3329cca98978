//! Datasets for `icefold train`: a synthetic accelerometer-gesture set the tool generates itself
//! (deterministic, no download), or the user's `.npy` files; splits and label files.
//!
//! The synthetic set is in raw sensor units on purpose. A wrist-worn 3-axis accelerometer reads
//! m/s² with gravity (9.81) on whichever axis points down, so the input means are far from 0 and
//! the first convolution's outputs sit far from 0 too: exactly the situation in which
//! never-updated BatchNorm statistics (mean 0, variance 1) wreck a model.

use std::f64::consts::TAU;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use npyz::WriterBuilder;

use super::rng::Rng;
use crate::io::{self, Array};

/// Samples per second of the simulated accelerometer.
pub const SAMPLE_RATE_HZ: f64 = 50.0;
/// Samples per window (1.28 s at 50 Hz).
pub const WINDOW: usize = 64;
/// Axes of the accelerometer (x, y, z).
pub const AXES: usize = 3;
/// Standard gravity in m/s².
pub const GRAVITY: f64 = 9.81;
/// Names of the synthetic gesture classes, in label order.
pub const GESTURES: [&str; 5] = ["idle", "shake", "circle", "tap", "tilt"];

/// Labelled samples: `x` is `[N, channels, length]` (the model's input layout, batch first).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Samples stacked on axis 0.
    pub x: Array,
    /// Class index of each sample.
    pub labels: Vec<usize>,
    /// Name of each class (`class_names.len()` is the number of classes).
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Shape of one sample (`[channels, length]`).
    pub fn sample_shape(&self) -> &[usize] {
        &self.x.shape[1..]
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.x.sample_len();
        let mut data = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            data.extend_from_slice(self.x.sample(i));
        }
        let mut shape = self.x.shape.clone();
        shape[0] = indices.len();
        Dataset {
            x: Array { shape, data },
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// Per-class sample counts.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// The four sets a run uses. Calibration and test samples are never trained on; calibration data
/// follows the training distribution (it is what `diagnose` and int8 calibration see).
#[derive(Clone, Debug)]
pub struct Splits {
    /// Trained on.
    pub train: Dataset,
    /// Evaluated after every epoch (eval-mode BN).
    pub val: Dataset,
    /// For BN diagnosis, BN re-estimation and int8 calibration.
    pub calib: Dataset,
    /// Held out for the final comparison (folded f32, int8, MCU).
    pub test: Dataset,
}

/// Sizes of the synthetic splits.
#[derive(Clone, Copy, Debug)]
pub struct SyntheticSizes {
    /// Training samples.
    pub train: usize,
    /// Validation samples.
    pub val: usize,
    /// Calibration samples.
    pub calib: usize,
    /// Test samples.
    pub test: usize,
}

impl Default for SyntheticSizes {
    /// Sized so that training takes about 10-20 s on 2 cores in release (see docs/TRAINING.md).
    fn default() -> Self {
        SyntheticSizes {
            train: 2000,
            val: 500,
            calib: 256,
            test: 500,
        }
    }
}

/// Generates the synthetic gesture splits. Each split comes from its own random stream of `seed`,
/// so changing one split's size leaves the others unchanged.
pub fn synthetic_splits(seed: u64, sizes: SyntheticSizes) -> Splits {
    Splits {
        train: gestures(sizes.train, &mut Rng::stream(seed, 11)),
        val: gestures(sizes.val, &mut Rng::stream(seed, 12)),
        calib: gestures(sizes.calib, &mut Rng::stream(seed, 13)),
        test: gestures(sizes.test, &mut Rng::stream(seed, 14)),
    }
}

/// `n` gesture windows, classes balanced (`i % 5`) and then shuffled.
pub fn gestures(n: usize, rng: &mut Rng) -> Dataset {
    let mut labels: Vec<usize> = (0..n).map(|i| i % GESTURES.len()).collect();
    rng.shuffle(&mut labels);
    let mut data = Vec::with_capacity(n * AXES * WINDOW);
    for &label in &labels {
        data.extend(gesture(label, rng));
    }
    Dataset {
        x: Array {
            shape: vec![n, AXES, WINDOW],
            data,
        },
        labels,
        class_names: GESTURES.iter().map(|s| s.to_string()).collect(),
    }
}

/// Gravity in sensor axes for a device rolled by `roll` and pitched by `pitch` (radians).
fn gravity(roll: f64, pitch: f64) -> [f64; 3] {
    [
        -GRAVITY * pitch.sin(),
        GRAVITY * roll.sin() * pitch.cos(),
        GRAVITY * roll.cos() * pitch.cos(),
    ]
}

/// A smooth 0→1 step centred at `at` with width `width` (samples).
fn step(t: f64, at: f64, width: f64) -> f64 {
    1.0 / (1.0 + (-(t - at) / width).exp())
}

/// A random unit vector, mostly horizontal (the user moves the hand, not up and down).
fn horizontal_direction(rng: &mut Rng) -> [f64; 3] {
    let a = rng.range(0.0, TAU);
    let z = rng.range(-0.3, 0.3);
    let h = (1.0 - z * z).sqrt();
    [h * a.cos(), h * a.sin(), z]
}

/// One window `[AXES][WINDOW]` (axis-major) of gesture `label` in m/s².
///
/// Every class shares what makes real recordings messy: a random device orientation (gravity
/// spread over the axes), a per-axis sensor bias, slow arm drift, white noise of random strength,
/// and per-sample amplitude, frequency and phase jitter. The class-specific motion is then added.
/// The ranges overlap at their edges (a weak shake is close to a restless idle, a small tilt is
/// close to drift) so that a good model still makes a few mistakes.
fn gesture(label: usize, rng: &mut Rng) -> Vec<f32> {
    let roll0 = rng.normal() * 0.3;
    let pitch0 = rng.normal() * 0.3;
    let bias: [f64; 3] = [rng.normal() * 0.2, rng.normal() * 0.2, rng.normal() * 0.2];
    let noise = rng.range(0.2, 0.9);
    // Slow arm drift: two low-frequency sinusoids per axis.
    let drift: Vec<(f64, f64, f64)> = (0..AXES * 2)
        .map(|_| {
            (
                rng.range(0.0, 1.2),
                rng.range(0.1, 0.9) * TAU / SAMPLE_RATE_HZ,
                rng.range(0.0, TAU),
            )
        })
        .collect();

    let mut w = vec![[0f64; 3]; WINDOW];
    for (t, s) in w.iter_mut().enumerate() {
        let t = t as f64;
        *s = gravity(roll0, pitch0);
        for (k, &(a, f, p)) in drift.iter().enumerate() {
            s[k / 2] += a * (f * t + p).sin();
        }
    }

    let len = WINDOW as f64;
    match GESTURES[label] {
        "idle" => {
            // Hand tremor: a few tenths of m/s² at 6-12 Hz.
            let dir = horizontal_direction(rng);
            let amp = rng.range(0.0, 0.9);
            let f = rng.range(6.0, 12.0) * TAU / SAMPLE_RATE_HZ;
            let p = rng.range(0.0, TAU);
            for (t, s) in w.iter_mut().enumerate() {
                let v = amp * (f * t as f64 + p).sin();
                (0..3).for_each(|a| s[a] += dir[a] * v);
            }
        }
        "shake" => {
            // Back and forth along one direction, over part of the window.
            let dir = horizontal_direction(rng);
            let amp = rng.range(1.2, 8.0);
            let f = rng.range(2.5, 6.0) * TAU / SAMPLE_RATE_HZ;
            let p = rng.range(0.0, TAU);
            let dur = rng.range(0.5, 1.0) * len;
            let start = rng.range(0.0, len - dur);
            for (t, s) in w.iter_mut().enumerate() {
                let t = t as f64;
                let env = step(t, start, 2.0) * (1.0 - step(t, start + dur, 2.0));
                let v = amp * env * (f * t + p).sin();
                (0..3).for_each(|a| s[a] += dir[a] * v);
            }
        }
        "circle" => {
            // A circle in a random (mostly horizontal) plane: two axes a quarter period apart.
            let theta = rng.range(0.0, TAU);
            let u = [theta.cos(), theta.sin(), 0.0];
            let tilt = rng.range(-0.4, 0.4);
            let v = [
                -theta.sin() * tilt.cos(),
                theta.cos() * tilt.cos(),
                tilt.sin(),
            ];
            let amp = rng.range(1.0, 5.0);
            let f = rng.range(0.8, 2.2) * TAU / SAMPLE_RATE_HZ;
            let p = rng.range(0.0, TAU);
            let dir = rng.sign();
            for (t, s) in w.iter_mut().enumerate() {
                let ph = f * t as f64 + p;
                let (c, sn) = (amp * ph.cos(), dir * amp * ph.sin());
                (0..3).for_each(|a| s[a] += u[a] * c + v[a] * sn);
            }
        }
        "tap" => {
            // One to three sharp knocks on the device (mostly along z), each with a short ringing.
            let taps = 1 + rng.below(3);
            for _ in 0..taps {
                let at = rng.range(3.0, len - 6.0);
                let amp = rng.range(2.5, 15.0) * rng.sign();
                let width = rng.range(0.6, 1.5);
                let ring = rng.range(12.0, 20.0) * TAU / SAMPLE_RATE_HZ;
                let dir = [rng.normal() * 0.3, rng.normal() * 0.3, 1.0];
                for (t, s) in w.iter_mut().enumerate() {
                    let d = t as f64 - at;
                    let mut v = amp * (-(d / width).powi(2)).exp();
                    if d > 0.0 {
                        v += 0.3 * amp * (ring * d).sin() * (-d / 3.0).exp();
                    }
                    (0..3).for_each(|a| s[a] += dir[a] * v);
                }
            }
        }
        "tilt" => {
            // The wrist turns: gravity moves to other axes with a smooth transition.
            let d_roll = rng.range(0.35, 1.3) * rng.sign() * rng.uniform().sqrt();
            let d_pitch = rng.range(0.35, 1.3) * rng.sign() * rng.uniform().sqrt();
            let at = rng.range(0.25, 0.75) * len;
            let width = rng.range(1.5, 6.0);
            for (t, s) in w.iter_mut().enumerate() {
                let k = step(t as f64, at, width);
                let g0 = gravity(roll0, pitch0);
                let g1 = gravity(roll0 + k * d_roll, pitch0 + k * d_pitch);
                (0..3).for_each(|a| s[a] += g1[a] - g0[a]);
            }
        }
        other => unreachable!("gesture class {other} has no generator"),
    }

    let mut out = vec![0f32; AXES * WINDOW];
    for a in 0..AXES {
        for (t, s) in w.iter().enumerate() {
            out[a * WINDOW + t] = (s[a] + bias[a] + noise * rng.normal()) as f32;
        }
    }
    out
}

/// Loads the user's samples (`float32 [N, channels, length]`) and integer labels (`[N]`).
pub fn load_npy(data: &Path, labels: &Path) -> Result<Dataset> {
    let x = io::read_npy(data)?;
    ensure!(
        x.shape.len() == 3,
        "{}: samples have shape {:?}; icefold train builds a Conv1d model and needs \
         [N, channels, length] (N samples stacked on axis 0, channels first; for a [N, length, \
         channels] recording use np.transpose(x, (0, 2, 1)))",
        data.display(),
        x.shape
    );
    let [n, channels, length] = [x.shape[0], x.shape[1], x.shape[2]];
    ensure!(
        n >= 10,
        "{}: only {n} samples; training and validation need at least 10",
        data.display()
    );
    ensure!(
        channels >= 1 && length >= 4,
        "{}: samples are [{channels}, {length}]; the model pools the length twice by 2, so it \
         needs at least one channel and a length of at least 4",
        data.display()
    );
    if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: sample {} holds a non-finite value ({}); clean or drop it",
            data.display(),
            i / x.sample_len(),
            x.data[i]
        );
    }
    let labels_v = read_labels(labels)?;
    ensure!(
        labels_v.len() == n,
        "{} has {} labels but {} has {n} samples; they must match one to one",
        labels.display(),
        labels_v.len(),
        data.display()
    );
    let classes = labels_v.iter().max().map_or(0, |&m| m + 1);
    ensure!(
        classes >= 2,
        "{}: every label is {}; a classifier needs at least two classes",
        labels.display(),
        labels_v.first().copied().unwrap_or(0)
    );
    let ds = Dataset {
        x,
        labels: labels_v,
        class_names: (0..classes).map(|c| format!("class {c}")).collect(),
    };
    let counts = ds.class_counts();
    if let Some(empty) = counts.iter().position(|&c| c == 0) {
        bail!(
            "{}: labels go up to {} but class {empty} has no sample; labels must be 0..C-1 with \
             every class present (renumber them)",
            labels.display(),
            classes - 1
        );
    }
    Ok(ds)
}

/// Largest class count accepted in a label file (a typo guard: a float array of measurements
/// passed as labels would otherwise create millions of classes).
const MAX_CLASSES: usize = 1000;

/// Reads integer labels `[N]` (or `[N, 1]`): any integer dtype, or floats holding whole numbers.
pub fn read_labels(path: &Path) -> Result<Vec<usize>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{} is not a valid .npy file", path.display()))?;
    let shape: Vec<u64> = npy.shape().to_vec();
    let ok_shape = shape.len() == 1 || (shape.len() == 2 && shape[1] == 1);
    ensure!(
        ok_shape,
        "{}: labels have shape {shape:?}; expected [N] (one class index per sample; for one-hot \
         labels use np.argmax(y, axis=1))",
        path.display()
    );
    let descr = npy.dtype().descr().trim_matches('\'').to_string();
    let values: Vec<f64> = match descr.as_str() {
        "<i8" => npy
            .into_vec::<i64>()?
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        "<i4" => npy.into_vec::<i32>()?.into_iter().map(f64::from).collect(),
        "<i2" => npy.into_vec::<i16>()?.into_iter().map(f64::from).collect(),
        "|i1" => npy.into_vec::<i8>()?.into_iter().map(f64::from).collect(),
        "<u8" => npy
            .into_vec::<u64>()?
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        "<u4" => npy.into_vec::<u32>()?.into_iter().map(f64::from).collect(),
        "<u2" => npy.into_vec::<u16>()?.into_iter().map(f64::from).collect(),
        "|u1" => npy.into_vec::<u8>()?.into_iter().map(f64::from).collect(),
        "<f4" => npy.into_vec::<f32>()?.into_iter().map(f64::from).collect(),
        "<f8" => npy.into_vec::<f64>()?,
        other => bail!(
            "{}: labels have dtype {other}; expected integers (e.g. y.astype(np.int64))",
            path.display()
        ),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() != 0.0 || !(0.0..MAX_CLASSES as f64).contains(&v) {
                bail!(
                    "{}: label {i} is {v}; labels must be whole numbers in 0..{MAX_CLASSES} \
                     (class indices, not one-hot or probabilities)",
                    path.display()
                );
            }
            Ok(v as usize)
        })
        .collect()
}

/// Splits the user's dataset: a seeded shuffle, then `val_fraction` of it for validation (also
/// used as the test set: there is no third independent draw of real data), and calibration samples
/// taken from the training part (at most 256).
pub fn split_user(ds: &Dataset, val_fraction: f64, seed: u64) -> Splits {
    let mut order: Vec<usize> = (0..ds.len()).collect();
    Rng::stream(seed, 21).shuffle(&mut order);
    let n_val = ((ds.len() as f64 * val_fraction).round() as usize).clamp(1, ds.len() - 1);
    let (val_idx, train_idx) = order.split_at(n_val);
    let calib_idx = &train_idx[..train_idx.len().min(256)];
    let val = ds.subset(val_idx);
    Splits {
        train: ds.subset(train_idx),
        test: val.clone(),
        val,
        calib: ds.subset(calib_idx),
    }
}

/// Labels as a little-endian int64 `.npy` file (NumPy's default integer type).
pub fn labels_npy_bytes(labels: &[usize]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[labels.len() as u64])
        .writer(&mut out)
        .begin_nd()?;
    w.extend(labels.iter().map(|&l| l as i64))?;
    w.finish()?;
    Ok(out)
}

/// Writes labels atomically as int64 `.npy`, never over one of `inputs`.
pub fn write_labels(path: &Path, labels: &[usize], inputs: &[&Path]) -> Result<()> {
    io::write_atomic(path, &labels_npy_bytes(labels)?, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_set_is_deterministic_balanced_and_in_sensor_units() {
        let a = gestures(100, &mut Rng::new(3));
        let b = gestures(100, &mut Rng::new(3));
        assert_eq!(a, b);
        assert_eq!(a.x.shape, vec![100, AXES, WINDOW]);
        assert_eq!(a.class_counts(), vec![20; 5]);
        // Gravity dominates the z axis on average: the raw scale is far from 0 mean.
        let z_mean: f64 = (0..a.len())
            .flat_map(|i| a.x.sample(i)[2 * WINDOW..].to_vec())
            .map(f64::from)
            .sum::<f64>()
            / (a.len() * WINDOW) as f64;
        assert!((7.0..10.5).contains(&z_mean), "{z_mean}");
        assert!(a.x.data.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn labels_round_trip_and_bad_labels_are_explained() {
        let dir = std::env::temp_dir().join(format!("icefold-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("y.npy");
        write_labels(&p, &[0, 2, 1], &[]).unwrap();
        assert_eq!(read_labels(&p).unwrap(), vec![0, 2, 1]);
        let bad = Array {
            shape: vec![2],
            data: vec![0.0, 0.5],
        };
        io::write_npy(&p, &bad, &[]).unwrap();
        let err = format!("{:#}", read_labels(&p).unwrap_err());
        assert!(err.contains("label 1 is 0.5"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
