//! Constant tensors: decoding ONNX `TensorProto`s (inline or external data) and the small amount
//! of tensor arithmetic that shape subgraphs need.
//!
//! Values are kept as f64 or i64: every ONNX float type widens exactly to f64, every integer type
//! except large u64 to i64, so folding can compute in one representation and round once when a
//! weight becomes f32.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use onnx_rs::ast::{DataLocation, DataType, TensorProto};

/// Largest constant we materialize (elements). Real MCU models are far below; the limit keeps
/// absurd dims (or a `ConstantOfShape` of a huge shape) from exhausting memory.
pub(super) const MAX_CONST_ELEMENTS: usize = 1 << 27;

/// Element storage of a constant.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Data {
    /// Any ONNX floating-point type.
    Float(Vec<f64>),
    /// Any ONNX integer type, and bool as 0/1.
    Int(Vec<i64>),
}

/// A constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Const {
    /// Dimensions (may contain 0: empty tensors appear in shape arithmetic).
    pub shape: Vec<usize>,
    /// Row-major elements, `shape.iter().product()` many.
    pub data: Data,
}

impl Const {
    /// A float constant; the caller guarantees `data.len() == product(shape)`.
    pub fn float(shape: Vec<usize>, data: Vec<f64>) -> Self {
        Const {
            shape,
            data: Data::Float(data),
        }
    }

    /// An integer constant; the caller guarantees `data.len() == product(shape)`.
    pub fn int(shape: Vec<usize>, data: Vec<i64>) -> Self {
        Const {
            shape,
            data: Data::Int(data),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::Float(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }

    /// True for integer element types.
    pub fn is_int(&self) -> bool {
        matches!(self.data, Data::Int(_))
    }

    /// Elements as f64 (integers converted).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::Float(v) => v.clone(),
            Data::Int(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Elements of an integer tensor (shape and index arithmetic only accepts integers).
    pub fn to_i64(&self, what: &str) -> Result<Vec<i64>> {
        match &self.data {
            Data::Int(v) => Ok(v.clone()),
            Data::Float(_) => bail!("{what} must be an integer tensor (int64), got a float tensor"),
        }
    }

    /// The single element of a one-element tensor, as f64.
    pub fn scalar_f64(&self, what: &str) -> Result<f64> {
        ensure!(
            self.len() == 1,
            "{what} must be a single value, got a tensor of shape {:?}",
            self.shape
        );
        Ok(self.to_f64()[0])
    }

    /// Same elements, new shape (the caller checked the element count).
    pub fn with_shape(&self, shape: Vec<usize>) -> Const {
        Const {
            shape,
            data: self.data.clone(),
        }
    }

    /// Elements picked by flat indices, as a new tensor of `shape`.
    fn gather_flat(&self, shape: Vec<usize>, index: &[usize]) -> Const {
        let data = match &self.data {
            Data::Float(v) => Data::Float(index.iter().map(|&i| v[i]).collect()),
            Data::Int(v) => Data::Int(index.iter().map(|&i| v[i]).collect()),
        };
        Const { shape, data }
    }
}

/// Number of elements of a shape, refusing overflow and absurd sizes.
pub(super) fn element_count(shape: &[usize], limit: usize) -> Result<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d).filter(|&n| n <= limit).ok_or_else(|| {
            anyhow!("tensor of shape {shape:?} is too large (more than {limit} elements)")
        })?;
    }
    Ok(n)
}

/// ONNX dims (i64) as sizes.
pub(super) fn dims_to_shape(dims: &[i64]) -> Result<Vec<usize>> {
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| anyhow!("negative dimension {d} in {dims:?}")))
        .collect::<Result<Vec<_>>>()?;
    element_count(&shape, MAX_CONST_ELEMENTS)?;
    Ok(shape)
}

/// Row-major strides of a shape.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// Normalizes a possibly negative axis against `rank`.
pub(super) fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        (-r..r).contains(&axis),
        "axis {axis} is out of range for rank {rank}"
    );
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Files referenced by `external_data`, read once each.
pub(super) struct ExternalFiles {
    base_dir: Option<PathBuf>,
    files: HashMap<String, Vec<u8>>,
}

impl ExternalFiles {
    /// External data is resolved relative to `base_dir` (the model's directory).
    pub fn new(base_dir: Option<&Path>) -> Self {
        ExternalFiles {
            base_dir: base_dir.map(Path::to_path_buf),
            files: HashMap::new(),
        }
    }

    /// The bytes of one externally stored tensor.
    fn read(&mut self, t: &TensorProto<'_>, expected_bytes: usize) -> Result<Vec<u8>> {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for e in t.external_data() {
            match e.key {
                "location" => location = Some(e.value),
                "offset" => {
                    offset = e
                        .value
                        .parse()
                        .map_err(|_| anyhow!("bad external data offset {:?}", e.value))?
                }
                "length" => {
                    length = Some(
                        e.value
                            .parse::<usize>()
                            .map_err(|_| anyhow!("bad external data length {:?}", e.value))?,
                    )
                }
                _ => {}
            }
        }
        let location =
            location.ok_or_else(|| anyhow!("external data without a \"location\" entry"))?;
        let rel = Path::new(location);
        // A model file must not make the tool read arbitrary files: only paths below its directory.
        ensure!(
            rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
            "external data location {location:?} must be a relative path inside the model's directory"
        );
        let Some(base) = &self.base_dir else {
            bail!(
                "the tensor's data is stored in the external file {location:?}; import the model with \
                 `import_file` (or pass the model's directory) so the file can be found"
            );
        };
        if !self.files.contains_key(location) {
            let path = base.join(rel);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "cannot read external data file {} (it must sit next to the .onnx file; \
                     torch.onnx.export writes it as <model>.onnx.data)",
                    path.display()
                )
            })?;
            self.files.insert(location.to_string(), bytes);
        }
        let file = &self.files[location];
        let length = length.unwrap_or(expected_bytes);
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= file.len())
            .ok_or_else(|| {
                anyhow!(
                    "external data {location:?} offset {offset} + length {length} is past the end of \
                     the file ({} bytes); is the data file complete and from the same export?",
                    file.len()
                )
            })?;
        Ok(file[offset..end].to_vec())
    }
}

/// Decodes an initializer or `Constant` value.
pub(super) fn decode(t: &TensorProto<'_>, ext: &mut ExternalFiles) -> Result<Const> {
    let shape = dims_to_shape(t.dims())?;
    let n = element_count(&shape, MAX_CONST_ELEMENTS)?;
    let dtype = t.data_type();
    let width = byte_width(dtype)
        .ok_or_else(|| anyhow!("element type {dtype:?} is not supported for constants"))?;
    let external;
    let raw = if t.data_location() == DataLocation::External {
        external = ext.read(t, n * width)?;
        Some(external.as_slice())
    } else {
        t.as_raw()
    };
    let data = match raw {
        Some(raw) => {
            ensure!(
                raw.len() == n * width,
                "raw data holds {} bytes, but shape {shape:?} of {dtype:?} needs {}",
                raw.len(),
                n * width
            );
            decode_raw(dtype, raw)?
        }
        None => decode_typed(t, dtype)?,
    };
    let len = match &data {
        Data::Float(v) => v.len(),
        Data::Int(v) => v.len(),
    };
    ensure!(
        len == n,
        "holds {len} values, but its shape {shape:?} needs {n}"
    );
    Ok(Const { shape, data })
}

fn byte_width(dtype: DataType) -> Option<usize> {
    Some(match dtype {
        DataType::Bool | DataType::Int8 | DataType::Uint8 => 1,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        _ => return None,
    })
}

fn decode_raw(dtype: DataType, raw: &[u8]) -> Result<Data> {
    fn le<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    Ok(match dtype {
        DataType::Float => {
            Data::Float(le::<4>(raw).map(|b| f32::from_le_bytes(b) as f64).collect())
        }
        DataType::Double => Data::Float(le::<8>(raw).map(f64::from_le_bytes).collect()),
        DataType::Float16 => Data::Float(
            le::<2>(raw)
                .map(|b| f16_to_f64(u16::from_le_bytes(b)))
                .collect(),
        ),
        DataType::Bfloat16 => Data::Float(
            le::<2>(raw)
                .map(|b| bf16_to_f64(u16::from_le_bytes(b)))
                .collect(),
        ),
        DataType::Bool | DataType::Uint8 => Data::Int(raw.iter().map(|&b| b as i64).collect()),
        DataType::Int8 => Data::Int(raw.iter().map(|&b| b as i8 as i64).collect()),
        DataType::Int16 => Data::Int(le::<2>(raw).map(|b| i16::from_le_bytes(b) as i64).collect()),
        DataType::Uint16 => Data::Int(le::<2>(raw).map(|b| u16::from_le_bytes(b) as i64).collect()),
        DataType::Int32 => Data::Int(le::<4>(raw).map(|b| i32::from_le_bytes(b) as i64).collect()),
        DataType::Uint32 => Data::Int(le::<4>(raw).map(|b| u32::from_le_bytes(b) as i64).collect()),
        DataType::Int64 => Data::Int(le::<8>(raw).map(i64::from_le_bytes).collect()),
        DataType::Uint64 => Data::Int(
            le::<8>(raw)
                .map(|b| {
                    i64::try_from(u64::from_le_bytes(b))
                        .map_err(|_| anyhow!("uint64 value too large"))
                })
                .collect::<Result<_>>()?,
        ),
        other => bail!("element type {other:?} is not supported for constants"),
    })
}

/// The typed protobuf fields (`float_data`, `int32_data`, ...), used when there is no raw data.
/// ONNX stores 8/16-bit types and bool in `int32_data`.
fn decode_typed(t: &TensorProto<'_>, dtype: DataType) -> Result<Data> {
    let int32 = || t.as_i32().map(|v| v.into_owned()).unwrap_or_default();
    Ok(match dtype {
        DataType::Float => Data::Float(
            t.as_f32()
                .map(|v| v.iter().map(|&x| x as f64).collect())
                .unwrap_or_default(),
        ),
        DataType::Double => Data::Float(t.as_f64().map(|v| v.into_owned()).unwrap_or_default()),
        DataType::Float16 => {
            Data::Float(int32().into_iter().map(|x| f16_to_f64(x as u16)).collect())
        }
        DataType::Bfloat16 => {
            Data::Float(int32().into_iter().map(|x| bf16_to_f64(x as u16)).collect())
        }
        DataType::Int64 => Data::Int(t.as_i64().map(|v| v.into_owned()).unwrap_or_default()),
        DataType::Uint64 | DataType::Uint32 => Data::Int(
            t.as_u64()
                .map(|v| v.into_owned())
                .unwrap_or_default()
                .into_iter()
                .map(|x| i64::try_from(x).map_err(|_| anyhow!("unsigned value {x} too large")))
                .collect::<Result<_>>()?,
        ),
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint16 | DataType::Uint8 => {
            Data::Int(int32().into_iter().map(i64::from).collect())
        }
        DataType::Bool => Data::Int(int32().into_iter().map(|x| (x != 0) as i64).collect()),
        other => bail!("element type {other:?} is not supported for constants"),
    })
}

/// IEEE 754 half precision to f64 (exact).
pub(super) fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        0x1f if frac == 0.0 => f64::INFINITY,
        0x1f => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

fn bf16_to_f64(bits: u16) -> f64 {
    f32::from_bits((bits as u32) << 16) as f64
}

// ---- tensor arithmetic for shape subgraphs ----

/// Numpy-style broadcast of two shapes.
pub(super) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], k: usize| {
        if k + s.len() >= rank {
            s[k + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|k| match (dim(a, k), dim(b, k)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => bail!("shapes {a:?} and {b:?} do not broadcast (dimension {x} vs {y})"),
        })
        .collect()
}

/// For every element of `out_shape`, the flat index of the broadcast source element of `shape`.
fn broadcast_index(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let n: usize = out_shape.iter().product();
    let offset = out_shape.len() - shape.len();
    let src_strides = strides(shape);
    let out_strides = strides(out_shape);
    (0..n)
        .map(|flat| {
            let mut src = 0;
            for (k, &d) in shape.iter().enumerate() {
                let coord = flat / out_strides[k + offset] % out_shape[k + offset];
                if d != 1 {
                    src += coord * src_strides[k];
                }
            }
            src
        })
        .collect()
}

/// Element-wise binary arithmetic with broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a op b` with numpy broadcasting; integer if both are integers (division truncates like
/// onnxruntime), float otherwise.
pub(super) fn binary(op: BinOp, a: &Const, b: &Const) -> Result<Const> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    element_count(&shape, MAX_CONST_ELEMENTS)?;
    let ia = broadcast_index(&a.shape, &shape);
    let ib = broadcast_index(&b.shape, &shape);
    if let (Data::Int(x), Data::Int(y)) = (&a.data, &b.data) {
        let data = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| {
                let (p, q) = (x[i], y[j]);
                match op {
                    BinOp::Add => p.checked_add(q),
                    BinOp::Sub => p.checked_sub(q),
                    BinOp::Mul => p.checked_mul(q),
                    BinOp::Div => p.checked_div(q),
                }
                .ok_or_else(|| {
                    anyhow!("integer {op:?} of {p} and {q} overflows or divides by zero")
                })
            })
            .collect::<Result<_>>()?;
        return Ok(Const::int(shape, data));
    }
    let (x, y) = (a.to_f64(), b.to_f64());
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| match op {
            BinOp::Add => x[i] + y[j],
            BinOp::Sub => x[i] - y[j],
            BinOp::Mul => x[i] * y[j],
            BinOp::Div => x[i] / y[j],
        })
        .collect();
    Ok(Const::float(shape, data))
}

/// Axis permutation.
pub(super) fn transpose(c: &Const, perm: &[usize]) -> Const {
    let out_shape: Vec<usize> = perm.iter().map(|&p| c.shape[p]).collect();
    let in_strides = strides(&c.shape);
    let out_strides = strides(&out_shape);
    let n = c.len();
    let index: Vec<usize> = (0..n)
        .map(|flat| {
            perm.iter()
                .enumerate()
                .map(|(k, &p)| (flat / out_strides[k] % out_shape[k]) * in_strides[p])
                .sum()
        })
        .collect();
    c.gather_flat(out_shape, &index)
}

/// ONNX Gather along `axis` with (already normalized, in-range) indices of `index_shape`.
pub(super) fn gather(
    c: &Const,
    axis: usize,
    indices: &[usize],
    index_shape: &[usize],
) -> Result<Const> {
    let outer: usize = c.shape[..axis].iter().product();
    let inner: usize = c.shape[axis + 1..].iter().product();
    let dim = c.shape[axis];
    let mut shape = c.shape[..axis].to_vec();
    shape.extend_from_slice(index_shape);
    shape.extend_from_slice(&c.shape[axis + 1..]);
    element_count(&shape, MAX_CONST_ELEMENTS)?;
    let mut flat = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            for k in 0..inner {
                flat.push((o * dim + i) * inner + k);
            }
        }
    }
    Ok(c.gather_flat(shape, &flat))
}

/// Concatenation along `axis` (ranks and other dims already checked).
pub(super) fn concat(parts: &[&Const], axis: usize) -> Const {
    let mut shape = parts[0].shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let outer: usize = shape[..axis].iter().product();
    let any_float = parts.iter().any(|p| !p.is_int());
    let mut floats = Vec::new();
    let mut ints = Vec::new();
    for o in 0..outer {
        for p in parts {
            let chunk: usize = p.shape[axis..].iter().product();
            let range = o * chunk..(o + 1) * chunk;
            if any_float {
                floats.extend_from_slice(&p.to_f64()[range]);
            } else if let Data::Int(v) = &p.data {
                ints.extend_from_slice(&v[range]);
            }
        }
    }
    if any_float {
        Const::float(shape, floats)
    } else {
        Const::int(shape, ints)
    }
}

/// ONNX Slice with per-axis (start, end, step) already given for every axis in `specs`.
pub(super) fn slice(c: &Const, specs: &[(usize, i64, i64, i64)]) -> Result<Const> {
    let rank = c.shape.len();
    // Per axis: the list of selected coordinates.
    let mut picks: Vec<Vec<usize>> = c.shape.iter().map(|&d| (0..d).collect()).collect();
    for &(axis, start, end, step) in specs {
        ensure!(step != 0, "Slice step must not be 0");
        let d = c.shape[axis] as i64;
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let mut sel = Vec::new();
        if step > 0 {
            let (mut i, e) = (clamp(norm(start), 0, d), clamp(norm(end), 0, d));
            while i < e {
                sel.push(i as usize);
                i = i.saturating_add(step);
            }
        } else {
            let (mut i, e) = (clamp(norm(start), -1, d - 1), clamp(norm(end), -1, d - 1));
            while i > e {
                sel.push(i as usize);
                i = i.saturating_add(step);
            }
        }
        picks[axis] = sel;
    }
    let shape: Vec<usize> = picks.iter().map(Vec::len).collect();
    let n = element_count(&shape, MAX_CONST_ELEMENTS)?;
    let in_strides = strides(&c.shape);
    let out_strides = strides(&shape);
    let index: Vec<usize> = (0..n)
        .map(|flat| {
            (0..rank)
                .map(|k| picks[k][flat / out_strides[k] % shape[k]] * in_strides[k])
                .sum()
        })
        .collect();
    Ok(c.gather_flat(shape, &index))
}

/// Resolves an ONNX Reshape target (`0` copies the input dim unless `allow_zero`, `-1` infers).
pub(super) fn reshape_target(
    input: &[usize],
    target: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (k, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                ensure!(
                    infer.is_none(),
                    "Reshape target {target:?} has more than one -1"
                );
                infer = Some(k);
                out.push(1);
            }
            0 if !allow_zero => {
                let d = *input
                    .get(k)
                    .ok_or_else(|| anyhow!("Reshape target {target:?}: 0 at axis {k} copies an axis the input {input:?} does not have"))?;
                out.push(d);
            }
            t if t >= 0 => out.push(usize::try_from(t).map_err(|_| anyhow!("bad dimension {t}"))?),
            t => bail!("Reshape target {target:?} has the invalid dimension {t}"),
        }
    }
    let known = element_count(&out, usize::MAX)?;
    if let Some(k) = infer {
        ensure!(
            known != 0 && total % known == 0,
            "cannot reshape {input:?} ({total} elements) to {target:?}"
        );
        out[k] = total / known;
    } else {
        ensure!(
            known == total,
            "cannot reshape {input:?} ({total} elements) to {target:?} ({known} elements)"
        );
    }
    Ok(out)
}
