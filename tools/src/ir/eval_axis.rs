//! The reference interpreter's operations along one axis (Concat, Slice, Gather), for any
//! per-sample rank, written as index arithmetic on `[outer, along, inner]` views: the definition
//! the lowered runtime layers are checked against.

use anyhow::{ensure, Result};

use super::eval::Operand;

/// `(outer, along, inner)` of `shape` around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn check_axis(shape: &[usize], axis: usize) -> Result<()> {
    ensure!(
        axis < shape.len(),
        "axis {axis} is outside the {} per-sample axes of {shape:?}",
        shape.len()
    );
    Ok(())
}

/// The inputs joined along `axis`.
pub(super) fn concat(axis: usize, inputs: &[Operand<'_>], out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure!(!inputs.is_empty(), "Concat has no inputs");
    let first = inputs[0].shape;
    check_axis(first, axis)?;
    let mut expected = first.to_vec();
    expected[axis] = 0;
    for x in inputs {
        let mut other = x.shape.to_vec();
        ensure!(
            other.len() == first.len(),
            "inputs of different ranks {first:?} and {other:?}"
        );
        expected[axis] += other[axis];
        other[axis] = first[axis];
        ensure!(
            other == first,
            "inputs {first:?} and {:?} differ outside axis {axis}",
            x.shape
        );
    }
    ensure!(
        out_shape == expected,
        "output shape should be {expected:?}, the graph says {out_shape:?}"
    );
    let (outer, _, inner) = around(first, axis);
    let mut y = Vec::with_capacity(expected.iter().product());
    for o in 0..outer {
        for x in inputs {
            let run = x.shape[axis] * inner;
            y.extend_from_slice(&x.data[o * run..(o + 1) * run]);
        }
    }
    Ok(y)
}

/// Output index `i` along `axis` reads input index `indices[i]`.
pub(super) fn gather(
    axis: usize,
    indices: &[usize],
    x: Operand<'_>,
    out_shape: &[usize],
) -> Result<Vec<f32>> {
    check_axis(x.shape, axis)?;
    let mut expected = x.shape.to_vec();
    expected[axis] = indices.len();
    ensure!(
        out_shape == expected,
        "output shape should be {expected:?}, the graph says {out_shape:?}"
    );
    let (outer, along, inner) = around(x.shape, axis);
    if let Some(bad) = indices.iter().find(|&&i| i >= along) {
        anyhow::bail!("index {bad} is outside axis {axis} of {:?}", x.shape);
    }
    let mut y = Vec::with_capacity(expected.iter().product());
    for o in 0..outer {
        for &i in indices {
            let at = (o * along + i) * inner;
            y.extend_from_slice(&x.data[at..at + inner]);
        }
    }
    Ok(y)
}

/// Indices `start, start + step, ..` of `axis`, as many as `out_shape[axis]`.
pub(super) fn slice(
    (axis, start, step): (usize, usize, usize),
    x: Operand<'_>,
    out_shape: &[usize],
) -> Result<Vec<f32>> {
    check_axis(x.shape, axis)?;
    ensure!(step >= 1, "step {step} is not positive");
    ensure!(
        out_shape.len() == x.shape.len(),
        "output rank differs from the input's"
    );
    let indices: Vec<usize> = (0..out_shape[axis]).map(|i| start + i * step).collect();
    gather(axis, &indices, x, out_shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op<'a>(data: &'a [f32], shape: &'a [usize]) -> Operand<'a> {
        Operand { data, shape }
    }

    #[test]
    fn concat_slice_and_gather_by_hand() {
        // [2, 2] ++ [2, 1] on axis 1: rows joined.
        let a = [1., 2., 3., 4.];
        let b = [5., 6.];
        let y = concat(1, &[op(&a, &[2, 2]), op(&b, &[2, 1])], &[2, 3]).unwrap();
        assert_eq!(y, [1., 2., 5., 3., 4., 6.]);
        // On axis 0: blocks one after the other.
        let y = concat(0, &[op(&a, &[2, 2]), op(&b, &[1, 2])], &[3, 2]).unwrap();
        assert_eq!(y, [1., 2., 3., 4., 5., 6.]);
        // Columns 0 and 2 of [2, 3] (start 0, step 2).
        let x = [0., 1., 2., 10., 11., 12.];
        assert_eq!(
            slice((1, 0, 2), op(&x, &[2, 3]), &[2, 2]).unwrap(),
            [0., 2., 10., 12.]
        );
        assert_eq!(
            gather(0, &[1, 0], op(&x, &[2, 3]), &[2, 3]).unwrap(),
            [10., 11., 12., 0., 1., 2.]
        );
    }

    #[test]
    fn shape_errors_are_reported_not_panics() {
        let a = [1., 2., 3., 4.];
        assert!(concat(1, &[op(&a, &[2, 2]), op(&a, &[4, 1])], &[2, 3]).is_err());
        assert!(concat(2, &[op(&a, &[2, 2]), op(&a, &[2, 2])], &[2, 4]).is_err());
        assert!(gather(1, &[2], op(&a, &[2, 2]), &[2, 1]).is_err());
        assert!(slice((1, 1, 2), op(&a, &[2, 2]), &[2, 2]).is_err());
        assert!(slice((1, 0, 0), op(&a, &[2, 2]), &[2, 1]).is_err());
    }
}
