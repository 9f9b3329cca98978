//! Files: `.npy` arrays in and out, and atomic writes that never touch the inputs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;

/// A row-major float32 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: Vec<f32>,
}

impl Array {
    /// Number of samples (axis 0).
    pub fn samples(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }
    /// Elements of one sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    /// Sample `i` as a slice.
    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.data[i * n..(i + 1) * n]
    }
    /// The first `n` samples (all of them if there are fewer).
    pub fn first(&self, n: usize) -> Array {
        let n = n.min(self.samples());
        let mut shape = self.shape.clone();
        if let Some(d) = shape.first_mut() {
            *d = n;
        }
        Array {
            shape,
            data: self.data[..n * self.sample_len()].to_vec(),
        }
    }
}

/// Read a float32 (or float64, converted) C-ordered `.npy` file.
pub fn read_npy(path: &Path) -> Result<Array> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{} is not a valid .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!(
            "{} is stored in Fortran order; save it C-ordered (np.save(path, np.ascontiguousarray(x)))",
            path.display()
        );
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = match npy.dtype().descr().trim_matches('\'') {
        "<f4" => npy.into_vec::<f32>()?,
        "<f8" => npy
            .into_vec::<f64>()?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        other => bail!(
            "{}: expected float32 (or float64) data, found numpy dtype '{other}'; convert with \
             x.astype(np.float32)",
            path.display()
        ),
    };
    if data.len() != shape.iter().product::<usize>() {
        bail!(
            "{}: data length does not match shape {shape:?}",
            path.display()
        );
    }
    Ok(Array { shape, data })
}

/// Serialize a float32 array in `.npy` format.
pub fn npy_bytes(a: &Array) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let shape: Vec<u64> = a.shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut out)
        .begin_nd()?;
    w.extend(a.data.iter().copied())?;
    w.finish()?;
    Ok(out)
}

/// Write a float32 array atomically.
pub fn write_npy(path: &Path, a: &Array, inputs: &[&Path]) -> Result<()> {
    write_atomic(path, &npy_bytes(a)?, inputs)
}

/// Refuse to write over any of `inputs` (compared after resolving links and `..`).
pub fn ensure_not_an_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    let resolved = |p: &Path| fs::canonicalize(p).ok();
    if let Some(o) = resolved(out) {
        for i in inputs {
            if resolved(i).as_ref() == Some(&o) {
                bail!(
                    "refusing to write {}: it is one of the inputs; choose another output path",
                    out.display()
                );
            }
        }
    }
    Ok(())
}

/// Write `bytes` to `path` so that readers see either the old file or the whole new one: write a
/// temporary file in the same directory, flush it to disk, then rename it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8], inputs: &[&Path]) -> Result<()> {
    ensure_not_an_input(path, inputs)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_atomic_write() {
        let dir = std::env::temp_dir().join(format!("icefold-io-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let a = Array {
            shape: vec![2, 3],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
        };
        write_npy(&p, &a, &[]).unwrap();
        assert_eq!(read_npy(&p).unwrap(), a);
        // The input is never overwritten.
        let err = write_npy(&p, &a, &[&p]).unwrap_err().to_string();
        assert!(err.contains("one of the inputs"), "{err}");
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
