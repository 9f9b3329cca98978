//! Lowering of the operations along one axis: Concat (a chain of two-input `Concat` layers),
//! Slice (a `Slice` layer) and Gather (a `Gather` layer with a u16 index table).
//!
//! Each works in the layout its first input already has when that is a permutation of the
//! value's logical axes (so channels-last feature maps are joined and split along their last
//! physical axis without a layout copy), else channels last (row-major for vectors); the other
//! inputs are brought to the same axis order and the output keeps it.

use anyhow::{anyhow, bail, Result};
use icefold::format::{self, Op as RtOp};

use super::{LayerNote, Layout, Lowerer, Placed, Use};
use crate::ir::graph::{FrozenOp, Node, Origin, ValueId};

/// Converts an index or step to the record's u16, naming the node.
fn u16_of(origin: &Origin, what: &str, n: usize) -> Result<u16> {
    u16::try_from(n).map_err(|_| {
        anyhow!("{origin}: {what} {n} is above 65535, the largest the runtime's records hold")
    })
}

impl<'g> Lowerer<'g> {
    /// `v` in a layout that is a permutation of its logical axes (its current one if it is).
    fn axis_placed(&mut self, v: ValueId, origin: &Origin) -> Result<Placed> {
        let shape = self.shape(v).to_vec();
        let p = self.placed(v, origin)?;
        if p.layout.src == shape {
            return Ok(p);
        }
        let want = if shape.len() >= 2 {
            Layout::channels_last(&shape)
        } else {
            Layout::identity(&shape)
        };
        self.require(v, want, origin)
    }

    /// The runtime axis (of the three physical dims) that holds logical `axis` in `layout`.
    fn physical_axis(layout: &Layout, axis: usize, origin: &Origin) -> Result<u8> {
        let rank = layout.perm.len();
        let at = layout
            .perm
            .iter()
            .position(|&p| p == axis)
            .ok_or_else(|| anyhow!("{origin}: axis {axis} is outside rank {rank}"))?;
        if rank > 3 {
            bail!(
                "{origin}: tensors of rank {rank} per sample are not supported (the runtime \
                 handles ranks 1 to 3 after the batch axis); reshape to at most 3 axes before it"
            );
        }
        Ok((3 - rank + at) as u8)
    }

    pub(super) fn lower_axis_op(&mut self, node: &'g Node<FrozenOp>) -> Result<()> {
        let origin = &node.origin;
        match &node.op {
            FrozenOp::Concat { axis } => self.lower_concat(node, *axis),
            FrozenOp::Slice { axis, start, step } => {
                let x = self.axis_placed(node.inputs[0], origin)?;
                let phys = Self::physical_axis(&x.layout, *axis, origin)?;
                let op = RtOp::Slice(format::Slice {
                    axis: phys,
                    start: u16_of(origin, "slice start", *start)?,
                    step: u16_of(origin, "slice step", *step)?,
                });
                let kind = format!("Slice axis {axis} from {start} step {step}");
                self.moved(node, x, op, kind, 0)
            }
            FrozenOp::Gather { axis, indices } => {
                let x = self.axis_placed(node.inputs[0], origin)?;
                let phys = Self::physical_axis(&x.layout, *axis, origin)?;
                let table = indices
                    .iter()
                    .map(|&i| u16_of(origin, "gather index", i))
                    .collect::<Result<Vec<_>>>()?;
                while self.weights.len() % 2 != 0 {
                    self.weights.push(0);
                }
                let at = self.weights.len();
                for i in &table {
                    self.weights.extend_from_slice(&i.to_le_bytes());
                }
                let indices_span = format::Span {
                    offset: at as u32,
                    len: (self.weights.len() - at) as u32,
                };
                let op = RtOp::Gather(format::Gather {
                    axis: phys,
                    indices: indices_span,
                });
                let kind = format!("Gather axis {axis} ({} indices)", table.len());
                self.moved(node, x, op, kind, table.len())
            }
            _ => bail!("{origin}: not an axis operation"),
        }
    }

    /// A one-input layer that moves `x`'s elements into `node`'s output, in `x`'s axis order.
    fn moved(
        &mut self,
        node: &Node<FrozenOp>,
        x: Placed,
        op: RtOp,
        kind: String,
        params: usize,
    ) -> Result<()> {
        let origin = &node.origin;
        let out_shape = self.shape(node.output).to_vec();
        let layout = Layout {
            src: out_shape.clone(),
            perm: x.layout.perm.clone(),
        };
        let xin = self.use_of(&x, origin)?;
        let out = self.out_placed(node.output, &out_shape, layout, origin)?;
        let mut note = LayerNote::weightless(origin.name.clone(), kind, out.dims);
        note.params = params;
        self.push_layer(op, vec![xin], out, note);
        Ok(())
    }

    /// The axis order a concatenation works in: of the inputs' current orders (and channels last),
    /// the one that needs the fewest elements copied to bring every input to it; channels last
    /// on a tie (the convolutions that usually follow read it).
    fn concat_order(&self, node: &Node<FrozenOp>) -> Result<Vec<usize>> {
        let rank = self.shape(node.inputs[0]).len();
        let preferred = if rank >= 2 {
            Layout::channels_last(self.shape(node.inputs[0])).perm
        } else {
            (0..rank).collect()
        };
        let mut candidates = vec![preferred];
        for &v in &node.inputs {
            let p = self.placed(v, &node.origin)?;
            if p.layout.src == self.shape(v) && !candidates.contains(&p.layout.perm) {
                candidates.push(p.layout.perm);
            }
        }
        let cost = |perm: &Vec<usize>| -> Result<usize> {
            let mut elems = 0;
            for &v in &node.inputs {
                let shape = self.shape(v);
                let want = Layout {
                    src: shape.to_vec(),
                    perm: perm.clone(),
                };
                if !self.placed(v, &node.origin)?.layout.same_order(&want) {
                    elems += shape.iter().product::<usize>();
                }
            }
            Ok(elems)
        };
        let mut best = (cost(&candidates[0])?, 0);
        for (i, c) in candidates.iter().enumerate().skip(1) {
            let this = cost(c)?;
            if this < best.0 {
                best = (this, i);
            }
        }
        Ok(candidates.swap_remove(best.1))
    }

    /// The value to start `node`'s chain from and the index of the first input still to join:
    /// the output of the earlier Concat (same axis) whose inputs are the longest proper prefix of
    /// `node`'s, if its bytes are already in the `perm` order; else input 0 and 1.
    fn joined_prefix(
        &self,
        node: &Node<FrozenOp>,
        axis: usize,
        perm: &[usize],
    ) -> (ValueId, usize) {
        let mut best = (node.inputs[0], 1);
        for earlier in &self.g.nodes {
            if std::ptr::eq(earlier, node) {
                break;
            }
            let FrozenOp::Concat { axis: a } = earlier.op else {
                continue;
            };
            let n = earlier.inputs.len();
            let is_prefix = a == axis
                && n < node.inputs.len()
                && n > best.1
                && node.inputs[..n] == earlier.inputs[..];
            let in_order = self.placed[earlier.output].as_ref().is_some_and(|p| {
                p.layout.same_order(&Layout {
                    src: self.shape(earlier.output).to_vec(),
                    perm: perm.to_vec(),
                })
            });
            if is_prefix && in_order {
                best = (earlier.output, n);
            }
        }
        best
    }

    /// N inputs: N - 1 two-input `Concat` layers, each joining the previous result and the next
    /// input (every intermediate holds the output's value, so int8 gives it the output's grid).
    fn lower_concat(&mut self, node: &'g Node<FrozenOp>, axis: usize) -> Result<()> {
        let origin = &node.origin;
        if node.inputs.len() < 2 {
            bail!("{origin}: Concat needs at least two inputs");
        }
        let perm = self.concat_order(node)?;
        // A DenseNet block joins the same leading inputs again and again (x ++ c1, then
        // x ++ c1 ++ c2, ..): start from the longest earlier join of a prefix of these inputs that
        // is still in this axis order, instead of copying the prefix once more.
        let (start_value, skip) = self.joined_prefix(node, axis, &perm);
        let shape0 = self.shape(start_value).to_vec();
        let first_layout = Layout {
            src: shape0.clone(),
            perm: perm.clone(),
        };
        let phys = Self::physical_axis(&first_layout, axis, origin)?;
        let first = self.require(start_value, first_layout, origin)?;
        let mut acc: Use = self.use_of(&first, origin)?;
        let mut acc_shape = shape0;
        for (k, &v) in node.inputs.iter().enumerate().skip(skip) {
            let shape = self.shape(v).to_vec();
            let b = self.require(
                v,
                Layout {
                    src: shape.clone(),
                    perm: perm.clone(),
                },
                origin,
            )?;
            let bin = self.use_of(&b, origin)?;
            acc_shape[axis] += shape[axis];
            let layout = Layout {
                src: acc_shape.clone(),
                perm: perm.clone(),
            };
            let out = self.out_placed(node.output, &acc_shape, layout, origin)?;
            let step = if node.inputs.len() > 2 {
                format!(" (input {} of {})", k + 1, node.inputs.len())
            } else {
                String::new()
            };
            let note = LayerNote::weightless(
                origin.name.clone(),
                format!("Concat axis {axis}{step}"),
                out.dims,
            );
            self.push_layer(
                RtOp::Concat(format::Concat { axis: phys }),
                vec![acc, bin],
                out,
                note,
            );
            acc = out;
        }
        if acc_shape != self.shape(node.output) {
            bail!(
                "{origin}: the inputs join to {acc_shape:?}, the graph says {:?}",
                self.shape(node.output)
            );
        }
        Ok(())
    }
}
