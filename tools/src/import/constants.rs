//! Evaluation of constant nodes at import: `Constant`, and the shape arithmetic exporters emit
//! around `Reshape` (`Shape` → `Gather` → `Unsqueeze` → `Concat`, ...). With a static per-sample
//! shape and the batch taken as 1, all of it is known before the model ever runs.

use anyhow::{anyhow, bail, ensure, Result};
use onnx_rs::ast::{Node, OpType};

use super::attr::Attrs;
use super::rounding;
use super::tensor::{self, norm_axis, BinOp, Const, Data, ExternalFiles, MAX_CONST_ELEMENTS};

/// Input `k` of a constant node, which must be present.
fn required<'c>(inputs: &[Option<&'c Const>], k: usize) -> Result<&'c Const> {
    inputs
        .get(k)
        .copied()
        .flatten()
        .ok_or_else(|| anyhow!("input {k} is missing"))
}

/// `axes` from input `k` (newer opsets) or the `axes` attribute (older ones).
pub(super) fn axes(
    attrs: &Attrs<'_, '_>,
    inputs: &[Option<&Const>],
    k: usize,
) -> Result<Option<Vec<i64>>> {
    match inputs.get(k).copied().flatten() {
        Some(c) => Ok(Some(c.to_i64("axes")?)),
        None => attrs.ints("axes"),
    }
}

/// ONNX `Shape` of a tensor of `shape` (with the `start`/`end` attributes of opset 15).
pub(super) fn shape_of(node: &Node<'_>, shape: &[usize]) -> Result<Const> {
    let attrs = Attrs::new(node);
    let r = shape.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(attrs.int("start", 0)?);
    let end = clamp(attrs.int("end", r)?);
    let dims: Vec<i64> = shape
        .get(start..end.max(start))
        .unwrap_or(&[])
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(Const::int(vec![dims.len()], dims))
}

/// Evaluates a node whose inputs are all constants; returns the value of output 0.
pub(super) fn evaluate(
    node: &Node<'_>,
    inputs: &[Option<&Const>],
    ext: &mut ExternalFiles,
) -> Result<Const> {
    let attrs = Attrs::new(node);
    let x = || required(inputs, 0);
    match node.op_type {
        OpType::Constant => constant(&attrs, ext),
        OpType::Identity | OpType::Dropout => Ok(x()?.clone()),
        OpType::Shape => shape_of(node, &x()?.shape),
        OpType::Cast => cast(x()?, attrs.int("to", 0)?),
        OpType::Neg => Ok(match &x()?.data {
            Data::Int(v) => Const::int(
                x()?.shape.clone(),
                v.iter().map(|a| a.saturating_neg()).collect(),
            ),
            Data::Float(v) => Const::float(x()?.shape.clone(), v.iter().map(|a| -a).collect()),
        }),
        OpType::Sqrt => Ok(Const::float(
            x()?.shape.clone(),
            x()?.to_f64().iter().map(|a| a.sqrt()).collect(),
        )),
        OpType::Add | OpType::Sub | OpType::Mul | OpType::Div => {
            let op = match node.op_type {
                OpType::Add => BinOp::Add,
                OpType::Sub => BinOp::Sub,
                OpType::Mul => BinOp::Mul,
                _ => BinOp::Div,
            };
            tensor::binary(op, x()?, required(inputs, 1)?)
        }
        OpType::ConstantOfShape => constant_of_shape(&attrs, x()?, ext),
        OpType::Reshape => {
            let target = required(inputs, 1)?.to_i64("the Reshape target shape")?;
            let shape =
                tensor::reshape_target(&x()?.shape, &target, attrs.int("allowzero", 0)? != 0)?;
            Ok(x()?.with_shape(shape))
        }
        OpType::Flatten => {
            let c = x()?;
            let axis = flatten_axis(attrs.int("axis", 1)?, c.shape.len())?;
            let outer = c.shape[..axis].iter().product();
            let inner = c.shape[axis..].iter().product();
            Ok(c.with_shape(vec![outer, inner]))
        }
        OpType::Transpose => {
            let c = x()?;
            let perm = permutation(attrs.ints("perm")?, c.shape.len())?;
            Ok(tensor::transpose(c, &perm))
        }
        OpType::Squeeze => {
            let c = x()?;
            let shape = squeeze_shape(&c.shape, axes(&attrs, inputs, 1)?.as_deref())?;
            Ok(c.with_shape(shape))
        }
        OpType::Unsqueeze => {
            let c = x()?;
            let axes = axes(&attrs, inputs, 1)?.ok_or_else(|| anyhow!("Unsqueeze needs axes"))?;
            Ok(c.with_shape(unsqueeze_shape(&c.shape, &axes)?))
        }
        OpType::Gather => {
            let c = x()?;
            ensure!(!c.shape.is_empty(), "Gather of a scalar");
            let axis = norm_axis(attrs.int("axis", 0)?, c.shape.len())?;
            let idx = required(inputs, 1)?;
            let d = c.shape[axis] as i64;
            let flat = idx
                .to_i64("Gather indices")?
                .iter()
                .map(|&i| {
                    ensure!(
                        (-d..d).contains(&i),
                        "Gather index {i} is out of range for a dimension of {d}"
                    );
                    Ok(if i < 0 { (i + d) as usize } else { i as usize })
                })
                .collect::<Result<Vec<_>>>()?;
            tensor::gather(c, axis, &flat, &idx.shape)
        }
        OpType::Concat => {
            let parts: Vec<&Const> = inputs.iter().copied().flatten().collect();
            ensure!(!parts.is_empty(), "Concat without inputs");
            let rank = parts[0].shape.len();
            ensure!(rank > 0, "Concat of scalars");
            let axis = norm_axis(attrs.int("axis", 0)?, rank)?;
            for p in &parts {
                let same = p.shape.len() == rank
                    && (0..rank).all(|k| k == axis || p.shape[k] == parts[0].shape[k]);
                ensure!(
                    same,
                    "Concat inputs of shapes {:?} and {:?} do not fit together",
                    parts[0].shape,
                    p.shape
                );
            }
            let total = parts.iter().map(|p| p.len()).sum::<usize>();
            ensure!(total <= MAX_CONST_ELEMENTS, "Concat result too large");
            Ok(tensor::concat(&parts, axis))
        }
        OpType::Slice => slice(x()?, inputs),
        OpType::Ceil => Ok(rounding::round(x()?, true)),
        OpType::Floor => Ok(rounding::round(x()?, false)),
        OpType::Clip => {
            let bound = |k: usize| inputs.get(k).copied().flatten();
            rounding::clip(x()?, bound(1), bound(2), &attrs)
        }
        ref other => bail!("{} cannot be evaluated at import", other.as_str()),
    }
}

fn constant(attrs: &Attrs<'_, '_>, ext: &mut ExternalFiles) -> Result<Const> {
    if let Some(t) = attrs.tensor("value")? {
        return tensor::decode(t, ext);
    }
    if attrs.has("value_float") {
        return Ok(Const::float(
            vec![],
            vec![attrs.float("value_float", 0.0)? as f64],
        ));
    }
    if let Some(v) = attrs.floats("value_floats")? {
        return Ok(Const::float(
            vec![v.len()],
            v.iter().map(|&x| x as f64).collect(),
        ));
    }
    if attrs.has("value_int") {
        return Ok(Const::int(vec![], vec![attrs.int("value_int", 0)?]));
    }
    if let Some(v) = attrs.ints("value_ints")? {
        return Ok(Const::int(vec![v.len()], v));
    }
    bail!("Constant needs a value, value_float(s) or value_int(s) attribute (sparse and string constants are not supported)")
}

/// ONNX `Cast`; float targets round through their width, integer targets truncate like C.
fn cast(c: &Const, to: i64) -> Result<Const> {
    use onnx_rs::ast::DataType as T;
    let to = T::try_from(i32::try_from(to).unwrap_or(-1))
        .map_err(|_| anyhow!("Cast to unknown type {to}"))?;
    let shape = c.shape.clone();
    let to_int = |v: Vec<f64>| {
        v.into_iter()
            .map(|x| {
                ensure!(x.is_finite(), "Cast of {x} to an integer type");
                Ok(x.trunc() as i64)
            })
            .collect::<Result<Vec<i64>>>()
    };
    Ok(match to {
        T::Float | T::Float16 | T::Bfloat16 => {
            Const::float(shape, c.to_f64().iter().map(|&x| x as f32 as f64).collect())
        }
        T::Double => Const::float(shape, c.to_f64()),
        T::Int64 | T::Int32 | T::Int16 | T::Int8 | T::Uint8 | T::Uint16 | T::Uint32 | T::Uint64 => {
            match &c.data {
                Data::Int(v) => Const::int(shape, v.clone()),
                Data::Float(v) => Const::int(shape, to_int(v.clone())?),
            }
        }
        T::Bool => Const::int(
            shape,
            c.to_f64().iter().map(|&x| (x != 0.0) as i64).collect(),
        ),
        other => bail!("Cast to {other:?} is not supported"),
    })
}

fn constant_of_shape(
    attrs: &Attrs<'_, '_>,
    shape: &Const,
    ext: &mut ExternalFiles,
) -> Result<Const> {
    let dims = shape.to_i64("the ConstantOfShape shape")?;
    let shape = tensor::dims_to_shape(&dims)?;
    let n: usize = shape.iter().product();
    let value = match attrs.tensor("value")? {
        Some(t) => tensor::decode(t, ext)?,
        None => Const::float(vec![1], vec![0.0]),
    };
    ensure!(
        value.len() == 1,
        "ConstantOfShape value must hold one element"
    );
    Ok(match value.data {
        Data::Float(v) => Const::float(shape, vec![v[0]; n]),
        Data::Int(v) => Const::int(shape, vec![v[0]; n]),
    })
}

fn slice(c: &Const, inputs: &[Option<&Const>]) -> Result<Const> {
    let starts = required(inputs, 1)?.to_i64("Slice starts")?;
    let ends = required(inputs, 2)?.to_i64("Slice ends")?;
    let n = starts.len();
    ensure!(
        ends.len() == n,
        "Slice starts {starts:?} and ends {ends:?} differ in length"
    );
    let axes = match inputs.get(3).copied().flatten() {
        Some(a) => a.to_i64("Slice axes")?,
        None => (0..n as i64).collect(),
    };
    let steps = match inputs.get(4).copied().flatten() {
        Some(s) => s.to_i64("Slice steps")?,
        None => vec![1; n],
    };
    ensure!(
        axes.len() == n && steps.len() == n,
        "Slice starts, ends, axes and steps differ in length"
    );
    let specs = (0..n)
        .map(|k| {
            Ok((
                norm_axis(axes[k], c.shape.len())?,
                starts[k],
                ends[k],
                steps[k],
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    tensor::slice(c, &specs)
}

/// A Transpose `perm` (default: reversed axes), checked to be a permutation of `0..rank`.
pub(super) fn permutation(perm: Option<Vec<i64>>, rank: usize) -> Result<Vec<usize>> {
    let perm: Vec<usize> = match perm {
        None => (0..rank).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Result<_>>()?,
    };
    let mut seen = vec![false; rank];
    for &p in &perm {
        ensure!(
            !std::mem::replace(&mut seen[p], true),
            "perm {perm:?} repeats axis {p}"
        );
    }
    ensure!(
        perm.len() == rank,
        "perm {perm:?} must list each of the {rank} axes once"
    );
    Ok(perm)
}

/// Shape after Squeeze; without axes, every dimension of size 1 goes.
pub(super) fn squeeze_shape(shape: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>> {
    let Some(axes) = axes else {
        return Ok(shape.iter().copied().filter(|&d| d != 1).collect());
    };
    let axes = axes
        .iter()
        .map(|&a| norm_axis(a, shape.len()))
        .collect::<Result<Vec<_>>>()?;
    for &a in &axes {
        ensure!(
            shape[a] == 1,
            "cannot squeeze axis {a} of shape {shape:?}: its size is not 1"
        );
    }
    Ok(shape
        .iter()
        .enumerate()
        .filter(|(k, _)| !axes.contains(k))
        .map(|(_, &d)| d)
        .collect())
}

/// Shape after Unsqueeze (axes refer to the output rank).
pub(super) fn unsqueeze_shape(shape: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let rank = shape.len() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    ensure!(
        axes.windows(2).all(|w| w[0] != w[1]),
        "Unsqueeze axes {axes:?} repeat"
    );
    let mut rest = shape.iter();
    Ok((0..rank)
        .map(|k| {
            if axes.contains(&k) {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect())
}

/// Flatten's axis, which (unlike most axes) may equal the rank.
pub(super) fn flatten_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        (-r..=r).contains(&axis),
        "Flatten axis {axis} is out of range for rank {rank}"
    );
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}
