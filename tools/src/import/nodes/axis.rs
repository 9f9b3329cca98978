//! Concat, Slice and Split of activations: IR `Concat` nodes and `Slice` nodes (one per sliced
//! axis, one per used Split output). Their constant forms (shape arithmetic) are evaluated in
//! `import::constants` before this is reached.

use anyhow::{bail, ensure, Result};
use onnx_rs::ast::Node as OnnxNode;

use super::{frozen_op, ImportedOp, NodeImporter, Val};
use crate::import::attr::Attrs;
use crate::import::tensor::{self, Const};
use crate::ir::graph::{FrozenOp, Op, Origin, ValueId};

/// What to do about a slice of the batch axis.
const BATCH_AXIS: &str = "it slices the batch axis (axis 0); icefold runs one sample at a time, \
     so slice only the axes after the batch";

impl NodeImporter<'_> {
    /// Concat of two or more activations along one per-sample axis.
    pub(super) fn concat(
        &self,
        attrs: &Attrs<'_, '_>,
        inputs: &[Option<Val>],
    ) -> Result<ImportedOp> {
        let mut acts: Vec<ValueId> = Vec::with_capacity(inputs.len());
        for (k, v) in inputs.iter().enumerate() {
            match v {
                Some(Val::Act(a)) => acts.push(*a),
                Some(Val::Const(_)) => bail!(
                    "input {k} is a constant; Concat of activations with constant tensors is \
                     not supported (only activations are joined at run time): compute the \
                     constant part with a layer (e.g. a 1x1 Conv with zero weights and the \
                     values as bias) or remove it from the model"
                ),
                None => bail!("input {k} is empty"),
            }
        }
        let first = self.shape(acts[0]).to_vec();
        let rank = first.len() + 1;
        let axis = tensor::norm_axis(attrs.int("axis", i64::MIN)?, rank)
            .map_err(|e| e.context("Concat needs its `axis` attribute within the input rank"))?;
        ensure!(
            axis != 0,
            "Concat along the batch axis (axis 0) joins samples; icefold runs one sample at a \
             time, so join along a per-sample axis (channels: axis 1)"
        );
        let axis = axis - 1;
        let mut shape = first.clone();
        shape[axis] = 0;
        for &a in &acts {
            let s = self.shape(a);
            let mut same = s.to_vec();
            ensure!(
                same.len() == first.len(),
                "inputs of different ranks: {first:?} and {s:?}"
            );
            shape[axis] += s[axis];
            same[axis] = first[axis];
            ensure!(
                same == first,
                "inputs {first:?} and {s:?} differ outside the concatenation axis {}",
                axis + 1
            );
        }
        if acts.len() == 1 {
            return Ok(frozen_op(FrozenOp::Reshape, acts[0], shape));
        }
        Ok(ImportedOp {
            op: Op::Frozen(FrozenOp::Concat { axis }),
            inputs: acts,
            shape,
        })
    }

    /// Per-sample `(axis, start, count)` of one ONNX slice spec on `shape` (with the batch
    /// axis at 0); `None` for a spec that keeps the whole axis.
    fn slice_spec(
        &self,
        shape: &[usize],
        (axis, start, end, step): (i64, i64, i64, i64),
    ) -> Result<Option<(usize, usize, usize, usize)>> {
        let rank = shape.len() + 1;
        let axis = tensor::norm_axis(axis, rank)?;
        ensure!(step != 0, "Slice step is 0");
        ensure!(
            step > 0,
            "Slice with the negative step {step} (a reversal) is not supported; flip the \
             weights of the following layer instead, or slice with a positive step"
        );
        if axis == 0 {
            let batch_end = self.fixed_batch.unwrap_or(i64::MAX / 2);
            ensure!(start == 0 && step == 1 && end >= batch_end, "{BATCH_AXIS}");
            return Ok(None);
        }
        let d = shape[axis - 1] as i64;
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (norm(start).clamp(0, d), norm(end).clamp(0, d));
        ensure!(
            e > s,
            "Slice of axis {axis} from {start} to {end} selects nothing of its {d} indices"
        );
        let count = ((e - s) as u64).div_ceil(step as u64) as usize;
        if s == 0 && count == d as usize {
            return Ok(None);
        }
        Ok(Some((axis - 1, s as usize, step as usize, count)))
    }

    /// Slice of an activation (constant starts / ends / axes / steps; attributes before opset
    /// 10): one IR `Slice` node per axis it narrows. Returns the imported op of the last one and
    /// adds the earlier ones.
    pub(super) fn slice(
        &mut self,
        origin: &Origin,
        out: &str,
        attrs: &Attrs<'_, '_>,
        x: ValueId,
        params: [Option<&Const>; 4],
    ) -> Result<ImportedOp> {
        let [starts, ends, axes, steps] = params;
        let int = |c: Option<&Const>, what: &str| c.map(|c| c.to_i64(what)).transpose();
        let (starts, ends, axes, steps) = if self.opset >= 10 {
            (
                int(starts, "Slice starts")?,
                int(ends, "Slice ends")?,
                int(axes, "Slice axes")?,
                int(steps, "Slice steps")?,
            )
        } else {
            (
                attrs.ints("starts")?,
                attrs.ints("ends")?,
                attrs.ints("axes")?,
                None,
            )
        };
        let (Some(starts), Some(ends)) = (starts, ends) else {
            bail!("Slice needs constant starts and ends");
        };
        let n = starts.len();
        let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; n]);
        ensure!(
            ends.len() == n && axes.len() == n && steps.len() == n,
            "Slice starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        );
        let mut cur = x;
        let mut pending: Option<ImportedOp> = None;
        for k in 0..n {
            let spec = (axes[k], starts[k], ends[k], steps[k]);
            let Some((axis, start, step, count)) = self.slice_spec(self.shape(cur), spec)? else {
                continue;
            };
            if let Some(op) = pending.take() {
                cur = self.add_node(origin, &format!("{out}/axis{k}"), op)?;
            }
            let mut shape = self.shape(cur).to_vec();
            shape[axis] = count;
            pending = Some(frozen_op(FrozenOp::Slice { axis, start, step }, cur, shape));
        }
        Ok(pending.unwrap_or_else(|| frozen_op(FrozenOp::Reshape, cur, self.shape(cur).to_vec())))
    }

    /// Split of an activation: one IR `Slice` per output that some node reads. Sizes from input
    /// 1 (opset 13+), the `split` attribute (before 13) or equal parts (`num_outputs` in opset
    /// 18+, else the output count).
    pub(super) fn split(
        &mut self,
        node: &OnnxNode<'_>,
        origin: &Origin,
        attrs: &Attrs<'_, '_>,
        x: ValueId,
        sizes: Option<&Const>,
    ) -> Result<()> {
        let shape = self.shape(x).to_vec();
        let rank = shape.len() + 1;
        let axis = tensor::norm_axis(attrs.int("axis", 0)?, rank)?;
        ensure!(axis != 0, "{BATCH_AXIS}");
        let axis = axis - 1;
        let d = shape[axis];
        let outputs = node.output.len();
        let sizes: Vec<usize> = match sizes {
            Some(c) => c
                .to_i64("Split sizes")?
                .iter()
                .map(|&s| usize::try_from(s))
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("Split sizes must not be negative"))?,
            None => match attrs.ints("split")? {
                Some(s) if self.opset < 13 => s
                    .iter()
                    .map(|&s| usize::try_from(s))
                    .collect::<Result<_, _>>()
                    .map_err(|_| anyhow::anyhow!("Split sizes must not be negative"))?,
                _ => {
                    let parts = usize::try_from(attrs.int("num_outputs", outputs as i64)?)
                        .unwrap_or(0)
                        .max(1);
                    let each = d.div_ceil(parts);
                    (0..parts)
                        .map(|k| each.min(d.saturating_sub(k * each)))
                        .collect()
                }
            },
        };
        ensure!(
            sizes.len() == outputs && sizes.iter().sum::<usize>() == d,
            "Split sizes {sizes:?} do not cut axis {} of size {d} into the node's {outputs} outputs",
            axis + 1
        );
        let mut start = 0;
        for (&size, &name) in sizes.iter().zip(&node.output) {
            let used = !name.is_empty() && self.readers.get(name).copied().unwrap_or(0) > 0;
            if used {
                ensure!(size > 0, "Split output {name:?} is empty but used");
                let mut out = shape.clone();
                out[axis] = size;
                let op = if size == d {
                    frozen_op(FrozenOp::Reshape, x, out)
                } else {
                    frozen_op(
                        FrozenOp::Slice {
                            axis,
                            start,
                            step: 1,
                        },
                        x,
                        out,
                    )
                };
                self.add_node(origin, name, op)?;
            }
            start += size;
        }
        Ok(())
    }
}
