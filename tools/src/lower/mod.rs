//! Lowering: a `FrozenGraph` (ONNX logical layout) becomes runtime layers, a weights section and
//! an arena plan.
//!
//! Layout is decided here, once, on the host. Every value of the graph is kept in some physical
//! order (a `Layout`): convolution, pooling and per-channel layers want channels last (`[H, W, C]`),
//! the model boundary keeps the ONNX model's own layout, dense layers accept anything (the
//! permutation is folded into their weight columns), and Reshape/Flatten/Transpose are free
//! relabellings whenever the bytes already sit in the right order. A copy (`Transpose` layer) is
//! emitted only where a consumer needs an order the bytes are not in.

mod axis;
pub mod blob;
pub mod limits;
pub mod plan;
pub mod rustgen;

use anyhow::{anyhow, bail, Result};
use icefold::format::{
    self, Activation as RtActivation, DType, ModelInfo, Op as RtOp, Span, TensorDesc,
};

use crate::ir::graph::{Activation, FrozenGraph, FrozenOp, Node, Origin, PoolKind, ValueId};
use crate::lower::plan::{plan_arena, BufferLife};

/// The runtime form of a model, ready to be emitted.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// Model-wide facts (arena size, boundary tensors).
    pub info: ModelInfo,
    /// The schedule.
    pub layers: Vec<format::Layer>,
    /// Raw little-endian constants referenced by the layers' spans.
    pub weights: Vec<u8>,
    /// One note per layer, for reports (the blob carries no names).
    pub notes: Vec<LayerNote>,
    /// For each tensor id, the graph value whose elements it holds (calibration ranges attach here).
    pub tensor_values: Vec<ValueId>,
}

impl Lowered {
    /// Fuses convolutions with the pooling that follows them while the arena exceeds `budget`
    /// bytes ([`plan::fuse_conv_pool`]); the fused layer's note joins the two layers' notes. Run
    /// before [`plan::share_concat_storage`] (it replans the arena from scratch).
    pub fn fuse_conv_pool(&mut self, budget: usize) -> Result<plan::Fusion> {
        let fusion = plan::fuse_conv_pool(&mut self.info, &mut self.layers, budget)?;
        for &conv in fusion.fused_convs.iter().rev() {
            let pool = self.notes.remove(conv + 1);
            let note = &mut self.notes[conv];
            note.source = format!("{} + {}", note.source, pool.source);
            note.output_dims = pool.output_dims;
            note.macs += pool.macs;
            note.params += pool.params;
        }
        for (note, layer) in self.notes.iter_mut().zip(&self.layers) {
            if layer.fused().is_some() {
                note.kind = crate::describe::op_name(&layer.op);
            }
        }
        Ok(fusion)
    }

    /// The layers that read tensor `t`, with their indices in the schedule.
    pub fn readers(&self, t: u16) -> impl Iterator<Item = (usize, &format::Layer)> {
        self.layers.iter().enumerate().filter(move |(_, r)| {
            r.inputs[..usize::from(r.input_count)]
                .iter()
                .any(|x| x.id == t)
        })
    }
}

/// Choices that differ between the f32 and the int8 lowering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// Fuse LeakyRelu and Sigmoid into the preceding layer. The int8 lowering keeps them separate:
    /// they become 256-entry tables between two calibrated tensors (ReLU and Clip always fuse as
    /// clamps).
    pub fuse_table_activations: bool,
    /// Fold a global average pooling read only by a dense layer into that layer (the pass
    /// [`passes::global_pool_into_dense`](crate::passes::global_pool_into_dense)). The int8
    /// lowering does, so the pooled features are not rounded to int8 before the classifier; the
    /// f32 lowering keeps the two layers.
    pub fold_global_pool: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            fuse_table_activations: true,
            fold_global_pool: false,
        }
    }
}

impl LowerOptions {
    /// The int8 lowering's choices: table activations separate, global pooling folded.
    pub const INT8: LowerOptions = LowerOptions {
        fuse_table_activations: false,
        fold_global_pool: true,
    };
}

/// What a runtime layer came from and what it costs.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNote {
    /// ONNX nodes merged into this layer (`conv1 + relu1`), or what inserted it.
    pub source: String,
    /// Short op description (`Conv2d 3x3/2 g1`).
    pub kind: String,
    /// Output dimensions as the runtime sees them.
    pub output_dims: [u16; 3],
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Number of constant parameters.
    pub params: usize,
}

impl LayerNote {
    /// The note of a layer without constants or multiply-accumulates.
    fn weightless(source: String, kind: String, output_dims: [u16; 3]) -> Self {
        LayerNote {
            source,
            kind,
            output_dims,
            macs: 0,
            params: 0,
        }
    }
}

/// Physical order of a value: the value's logical elements, taken in row-major order of `src`
/// (a shape with the same element count as the value), are stored row-major in the dimension order
/// `perm` of `src`. Reshape keeps the layout (it preserves the logical flat order); Transpose
/// permutes it.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    src: Vec<usize>,
    perm: Vec<usize>,
}

impl Layout {
    fn identity(shape: &[usize]) -> Self {
        Layout {
            src: shape.to_vec(),
            perm: (0..shape.len()).collect(),
        }
    }

    /// Channels (axis 0 of the logical shape) innermost: `[C, H, W]` → `[H, W, C]`.
    fn channels_last(shape: &[usize]) -> Self {
        let r = shape.len();
        let mut perm: Vec<usize> = (1..r).collect();
        perm.push(0);
        Layout {
            src: shape.to_vec(),
            perm,
        }
    }

    fn physical_shape(&self) -> Vec<usize> {
        self.perm.iter().map(|&p| self.src[p]).collect()
    }

    /// For each logical flat index, the physical flat index.
    fn flat_map(&self) -> Vec<usize> {
        let phys = self.physical_shape();
        let r = self.src.len();
        // Stride of each src axis in the physical buffer.
        let mut stride_of_src = vec![0usize; r];
        let mut s = 1;
        for j in (0..r).rev() {
            stride_of_src[self.perm[j]] = s;
            s *= phys[j];
        }
        let n: usize = self.src.iter().product();
        let mut map = Vec::with_capacity(n);
        let mut idx = vec![0usize; r];
        for _ in 0..n {
            map.push(idx.iter().zip(&stride_of_src).map(|(i, s)| i * s).sum());
            for a in (0..r).rev() {
                idx[a] += 1;
                if idx[a] < self.src[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        map
    }

    /// Same bytes in the same places (ignores how the dimensions are labelled).
    fn same_order(&self, other: &Layout) -> bool {
        self == other || self.flat_map() == other.flat_map()
    }
}

/// Where a value lives: a buffer and the order of its elements there.
#[derive(Clone, Debug)]
struct Placed {
    buf: usize,
    layout: Layout,
}

struct Buffer {
    /// The graph value whose elements it holds (layout copies hold their source's).
    value: ValueId,
    elems: usize,
    written: isize,
    last_read: isize,
}

/// Operand of a pending layer: buffer and the dimensions the layer sees it with.
#[derive(Clone, Copy)]
struct Use {
    buf: usize,
    dims: [u16; 3],
}

struct Pending {
    op: RtOp,
    inputs: Vec<Use>,
    output: Use,
    note: LayerNote,
}

struct Lowerer<'g> {
    g: &'g FrozenGraph,
    options: LowerOptions,
    placed: Vec<Option<Placed>>,
    buffers: Vec<Buffer>,
    layers: Vec<Pending>,
    weights: Vec<u8>,
}

fn dims3(origin: &str, shape: &[usize]) -> Result<[u16; 3]> {
    if shape.is_empty() || shape.len() > 3 {
        bail!(
            "{origin}: tensors of rank {} per sample are not supported (the runtime handles ranks 1 \
             to 3 after the batch axis)",
            shape.len()
        );
    }
    let mut d = [1u16; 3];
    for (k, &n) in shape.iter().enumerate() {
        d[3 - shape.len() + k] = u16::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
            anyhow!("{origin}: dimension {n} of shape {shape:?} is outside 1..=65535")
        })?;
    }
    Ok(d)
}

fn map_activation(a: &Activation) -> RtActivation {
    match *a {
        Activation::Relu => RtActivation::Relu,
        Activation::Clip { lo, hi } => RtActivation::Clip { lo, hi },
        Activation::LeakyRelu { alpha } => RtActivation::LeakyRelu { alpha },
        Activation::Sigmoid => RtActivation::Sigmoid,
        Activation::HardSigmoid { alpha, beta } => RtActivation::HardSigmoid { alpha, beta },
        Activation::HardSwish => RtActivation::HardSwish,
        Activation::Tanh => RtActivation::Tanh,
        Activation::Silu => RtActivation::Silu,
    }
}

fn pads_u16(origin: &Origin, pads: [usize; 4]) -> Result<[u16; 4]> {
    let mut out = [0u16; 4];
    for (o, p) in out.iter_mut().zip(pads) {
        *o = u16::try_from(p).map_err(|_| anyhow!("{origin}: padding {p} is too large"))?;
    }
    Ok(out)
}

fn pair_u16(origin: &Origin, what: &str, v: [usize; 2]) -> Result<[u16; 2]> {
    let conv =
        |x: usize| u16::try_from(x).map_err(|_| anyhow!("{origin}: {what} {x} is too large"));
    Ok([conv(v[0])?, conv(v[1])?])
}

impl<'g> Lowerer<'g> {
    fn shape(&self, v: ValueId) -> &'g [usize] {
        &self.g.values[v].shape
    }

    fn new_buffer(&mut self, value: ValueId, elems: usize) -> usize {
        self.buffers.push(Buffer {
            value,
            elems,
            written: self.layers.len() as isize,
            last_read: -1,
        });
        self.buffers.len() - 1
    }

    fn push_f32(&mut self, data: impl IntoIterator<Item = f32>) -> Span {
        let offset = self.weights.len();
        for x in data {
            self.weights.extend_from_slice(&x.to_le_bytes());
        }
        Span {
            offset: offset as u32,
            len: (self.weights.len() - offset) as u32,
        }
    }

    fn placed(&self, v: ValueId, origin: &Origin) -> Result<Placed> {
        self.placed[v].clone().ok_or_else(|| {
            anyhow!(
                "{origin}: input \"{}\" is not computed before this node",
                self.g.values[v].name
            )
        })
    }

    fn push_layer(&mut self, op: RtOp, inputs: Vec<Use>, output: Use, note: LayerNote) {
        let at = self.layers.len() as isize;
        for u in &inputs {
            let b = &mut self.buffers[u.buf];
            b.last_read = b.last_read.max(at);
        }
        self.layers.push(Pending {
            op,
            inputs,
            output,
            note,
        });
    }

    /// A copy of `p` into a new buffer with the dimensions permuted (`out dim k = in dim perm[k]`).
    fn transpose_copy(&mut self, p: &Placed, perm: &[usize], source: &str) -> Result<Placed> {
        let phys = p.layout.physical_shape();
        let r = phys.len();
        let in_dims = dims3(source, &phys)?;
        let out_shape: Vec<usize> = perm.iter().map(|&k| phys[k]).collect();
        let out_dims = dims3(source, &out_shape)?;
        let mut rt_perm = [0u8, 1, 2];
        for k in 0..r {
            rt_perm[3 - r + k] = (3 - r + perm[k]) as u8;
        }
        let elems = phys.iter().product();
        let buf = self.new_buffer(self.buffers[p.buf].value, elems);
        self.push_layer(
            RtOp::Transpose(format::Transpose { perm: rt_perm }),
            vec![Use {
                buf: p.buf,
                dims: in_dims,
            }],
            Use {
                buf,
                dims: out_dims,
            },
            LayerNote::weightless(source.to_string(), format!("Transpose {perm:?}"), out_dims),
        );
        // The new buffer holds the elements row-major over `out_shape`, i.e. in the order of
        // `p.layout.src` permuted by `perm ∘ p.layout.perm`.
        let composed = perm.iter().map(|&k| p.layout.perm[k]).collect();
        Ok(Placed {
            buf,
            layout: Layout {
                src: p.layout.src.clone(),
                perm: composed,
            },
        })
    }

    /// `v` in the order `want`, copying only if its bytes are not already in that order.
    fn require(&mut self, v: ValueId, want: Layout, origin: &Origin) -> Result<Placed> {
        let p = self.placed(v, origin)?;
        if p.layout.same_order(&want) {
            return Ok(Placed {
                buf: p.buf,
                layout: want,
            });
        }
        let source = format!("layout change for {origin}");
        // Step 1: to the logical row-major order of the current layout's src shape.
        let mut cur = p;
        if cur.layout.perm.iter().enumerate().any(|(i, &k)| i != k) {
            let mut inv = vec![0; cur.layout.perm.len()];
            for (j, &k) in cur.layout.perm.iter().enumerate() {
                inv[k] = j;
            }
            cur = self.transpose_copy(&cur, &inv, &source)?;
        }
        // Row-major over any shape of the same size is the same order: relabel to `want.src`.
        cur.layout = Layout::identity(&want.src);
        // Step 2: from row-major `want.src` to `want`.
        if !cur.layout.same_order(&want) {
            cur = self.transpose_copy(&cur, &want.perm, &source)?;
        }
        debug_assert!(cur.layout.same_order(&want));
        Ok(Placed {
            buf: cur.buf,
            layout: want,
        })
    }

    fn use_of(&self, p: &Placed, origin: &Origin) -> Result<Use> {
        Ok(Use {
            buf: p.buf,
            dims: dims3(&origin.to_string(), &p.layout.physical_shape())?,
        })
    }

    /// If the only consumer of `v` is an activation (and `v` is not the graph output), return it
    /// so that the producing layer applies it.
    fn fusable_activation(&self, v: ValueId) -> Option<usize> {
        if v == self.g.output {
            return None;
        }
        let consumers = self.g.consumers(v);
        match consumers.as_slice() {
            [c] => match &self.g.nodes[*c].op {
                FrozenOp::Activation(Activation::Relu | Activation::Clip { .. }) => Some(*c),
                FrozenOp::Activation(_) if self.options.fuse_table_activations => Some(*c),
                _ => None,
            },
            _ => None,
        }
    }

    fn lower(mut self) -> Result<Lowered> {
        let g = self.g;
        let in_shape = self.shape(g.input).to_vec();
        let input_origin = Origin {
            name: g.values[g.input].name.clone(),
            op_type: "input".into(),
        };
        let input_dims = dims3(&input_origin.to_string(), &in_shape)?;
        let input_buf = self.new_buffer(g.input, in_shape.iter().product());
        self.buffers[input_buf].written = -1;
        self.placed[g.input] = Some(Placed {
            buf: input_buf,
            layout: Layout::identity(&in_shape),
        });

        let mut skip = vec![false; g.nodes.len()];
        for (ni, node) in g.nodes.iter().enumerate() {
            if skip[ni] {
                continue;
            }
            self.lower_node(node, &mut skip)?;
        }

        // The output leaves in the ONNX model's own layout, in a buffer no one else uses.
        let out_shape = self.shape(g.output).to_vec();
        let out_origin = Origin {
            name: g.values[g.output].name.clone(),
            op_type: "output".into(),
        };
        let mut out = self.require(g.output, Layout::identity(&out_shape), &out_origin)?;
        if out.buf == input_buf {
            let p = out.clone();
            out =
                self.transpose_copy(&p, &(0..out_shape.len()).collect::<Vec<_>>(), "output copy")?;
        }
        let output_dims = dims3(&out_origin.to_string(), &out_shape)?;
        let end = self.layers.len() as isize;
        self.buffers[out.buf].last_read = end;

        let lives: Vec<BufferLife> = self
            .buffers
            .iter()
            .map(|b| BufferLife {
                bytes: b.elems * 4,
                first: b.written,
                last: b.last_read.max(b.written),
            })
            .collect();
        let plan = plan_arena(&lives, format::ARENA_ALIGN);
        let desc = |u: Use| -> Result<TensorDesc> {
            Ok(TensorDesc {
                view: None,
                id: u16::try_from(u.buf).map_err(|_| anyhow!("more than 65535 tensors"))?,
                offset: u32::try_from(plan.offsets[u.buf])
                    .map_err(|_| anyhow!("arena offset beyond 4 GiB"))?,
                dims: u.dims,
                dtype: DType::F32,
                quant: None,
            })
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut notes = Vec::with_capacity(self.layers.len());
        for p in self.layers {
            let first = desc(p.inputs[0])?;
            let second = match p.inputs.get(1) {
                Some(&u) => desc(u)?,
                None => first,
            };
            layers.push(format::Layer {
                op: p.op,
                inputs: [first, second],
                input_count: p.inputs.len() as u8,
                output: desc(p.output)?,
            });
            notes.push(p.note);
        }
        let info = ModelInfo {
            layer_count: u16::try_from(layers.len())
                .map_err(|_| anyhow!("more than 65535 layers"))?,
            arena_bytes: u32::try_from(plan.total).map_err(|_| anyhow!("arena beyond 4 GiB"))?,
            input: desc(Use {
                buf: input_buf,
                dims: input_dims,
            })?,
            output: desc(Use {
                buf: out.buf,
                dims: output_dims,
            })?,
            input_rank: in_shape.len() as u8,
            output_rank: out_shape.len() as u8,
            input_transpose: None,
        };
        let tensor_values = self.buffers.iter().map(|b| b.value).collect();
        let mut lowered = Lowered {
            info,
            layers,
            weights: self.weights,
            notes,
            tensor_values,
        };
        transpose_while_writing_input(&mut lowered);
        // Planned again from the layers: with the layers that can run in place written over
        // the inputs they read last.
        plan::replan(&mut lowered.info, &mut lowered.layers)?;
        Ok(lowered)
    }

    fn lower_node(&mut self, node: &'g Node<FrozenOp>, skip: &mut [bool]) -> Result<()> {
        let g = self.g;
        let origin = &node.origin;
        let in_shape = self.shape(node.inputs[0]).to_vec();
        let out_shape = self.shape(node.output).to_vec();

        // Fuse a following activation into layers that can apply one.
        let fusable = matches!(
            node.op,
            FrozenOp::Conv(_)
                | FrozenOp::Dense(_)
                | FrozenOp::Pool(_)
                | FrozenOp::Add
                | FrozenOp::Mul
                | FrozenOp::Affine(_)
        );
        let fused = if fusable {
            self.fusable_activation(node.output)
        } else {
            None
        };
        let (activation, final_value, source) = match fused {
            Some(ai) => {
                skip[ai] = true;
                let FrozenOp::Activation(a) = &g.nodes[ai].op else {
                    unreachable!()
                };
                (
                    map_activation(a),
                    g.nodes[ai].output,
                    format!("{} + {}", origin.name, g.nodes[ai].origin.name),
                )
            }
            None => (RtActivation::Identity, node.output, origin.name.clone()),
        };

        match &node.op {
            FrozenOp::Conv(c) => {
                if in_shape.len() < 2 {
                    bail!("{origin}: convolution input must have channels and spatial axes, got {in_shape:?}");
                }
                let x = self.require(node.inputs[0], Layout::channels_last(&in_shape), origin)?;
                let [o, ipg, kh, kw] = <[usize; 4]>::try_from(c.weight.shape.as_slice())
                    .map_err(|_| anyhow!("{origin}: weight must be 4-D [out, in/group, kh, kw]"))?;
                // OIHW → OHWI: the runtime's inner loop runs over contiguous input channels.
                let mut w = Vec::with_capacity(c.weight.len());
                for oo in 0..o {
                    for y in 0..kh {
                        for xx in 0..kw {
                            for i in 0..ipg {
                                w.push(c.weight.data[((oo * ipg + i) * kh + y) * kw + xx]);
                            }
                        }
                    }
                }
                let weights = self.push_f32(w);
                let bias = self.push_f32(c.bias.iter().copied());
                let pad_values = match &c.pad_values {
                    Some(p) => self.push_f32(p.iter().copied()),
                    None => Span::default(),
                };
                let out = self.out_placed(
                    final_value,
                    &out_shape,
                    Layout::channels_last(&out_shape),
                    origin,
                )?;
                let out_elems: usize = out_shape.iter().product();
                let op = RtOp::Conv2d(format::Conv2d {
                    kernel: pair_u16(origin, "kernel size", [kh, kw])?,
                    stride: pair_u16(origin, "stride", c.strides)?,
                    dilation: pair_u16(origin, "dilation", c.dilations)?,
                    pad: pads_u16(origin, c.pads)?,
                    groups: u16::try_from(c.group)
                        .map_err(|_| anyhow!("{origin}: too many groups"))?,
                    weights,
                    bias,
                    pad_values,
                    activation,
                });
                let kind = format!(
                    "Conv{}d {}x{}/{} g{}",
                    c.spatial_rank,
                    kh,
                    kw,
                    c.strides[1].max(c.strides[0]),
                    c.group
                );
                let note = LayerNote {
                    source,
                    kind,
                    output_dims: out.dims,
                    macs: (out_elems * ipg * kh * kw) as u64,
                    params: c.weight.len() + c.bias.len(),
                };
                let xin = self.use_of(&x, origin)?;
                self.push_layer(op, vec![xin], out, note);
            }
            FrozenOp::Dense(d) => {
                let x = self.placed(node.inputs[0], origin)?;
                let [o, n] = <[usize; 2]>::try_from(d.weight.shape.as_slice())
                    .map_err(|_| anyhow!("{origin}: weight must be 2-D [out, in]"))?;
                let map = x.layout.flat_map();
                if map.len() != n {
                    bail!(
                        "{origin}: weight expects {n} inputs, the input has {}",
                        map.len()
                    );
                }
                // Fold the input's physical order into the weight columns: no copy at run time.
                let mut w = vec![0f32; o * n];
                for r in 0..o {
                    for (i, &m) in map.iter().enumerate() {
                        w[r * n + m] = d.weight.data[r * n + i];
                    }
                }
                let weights = self.push_f32(w);
                let bias = self.push_f32(d.bias.iter().copied());
                let out = self.out_placed(
                    final_value,
                    &out_shape,
                    Layout::identity(&out_shape),
                    origin,
                )?;
                let note = LayerNote {
                    source,
                    kind: format!("Dense {n}→{o}"),
                    output_dims: out.dims,
                    macs: (o * n) as u64,
                    params: o * n + o,
                };
                let xin = Use {
                    buf: x.buf,
                    dims: dims3(&origin.to_string(), &[n])?,
                };
                self.push_layer(
                    RtOp::Dense(format::Dense {
                        weights,
                        bias,
                        activation,
                    }),
                    vec![xin],
                    out,
                    note,
                );
            }
            FrozenOp::Pool(p) => {
                let x = self.require(node.inputs[0], Layout::channels_last(&in_shape), origin)?;
                let kind = match p.kind {
                    PoolKind::Max => format::PoolKind::Max,
                    PoolKind::Average { count_include_pad } => {
                        format::PoolKind::Average { count_include_pad }
                    }
                };
                let out = self.out_placed(
                    final_value,
                    &out_shape,
                    Layout::channels_last(&out_shape),
                    origin,
                )?;
                let op = RtOp::Pool(format::Pool {
                    kind,
                    kernel: pair_u16(origin, "kernel size", p.kernel)?,
                    stride: pair_u16(origin, "stride", p.strides)?,
                    pad: pads_u16(origin, p.pads)?,
                    activation,
                });
                let note = LayerNote::weightless(
                    source,
                    format!(
                        "{}Pool {}x{}/{}",
                        kind_name(p.kind),
                        p.kernel[0],
                        p.kernel[1],
                        p.strides[1]
                    ),
                    out.dims,
                );
                let xin = self.use_of(&x, origin)?;
                self.push_layer(op, vec![xin], out, note);
            }
            FrozenOp::GlobalAveragePool => {
                if in_shape.len() < 2 {
                    bail!("{origin}: global pooling needs spatial axes, got {in_shape:?}");
                }
                let x = self.require(node.inputs[0], Layout::channels_last(&in_shape), origin)?;
                let xin = self.use_of(&x, origin)?;
                let (h, w) = (xin.dims[0], xin.dims[1]);
                let out_layout = if out_shape.len() >= 2 {
                    Layout::channels_last(&out_shape)
                } else {
                    Layout::identity(&out_shape)
                };
                let out = self.out_placed(final_value, &out_shape, out_layout, origin)?;
                let op = RtOp::Pool(format::Pool {
                    kind: format::PoolKind::Average {
                        count_include_pad: false,
                    },
                    kernel: [h, w],
                    stride: [1, 1],
                    pad: [0; 4],
                    activation,
                });
                let note =
                    LayerNote::weightless(source, format!("GlobalAvgPool {h}x{w}"), out.dims);
                self.push_layer(op, vec![xin], out, note);
            }
            FrozenOp::Add => {
                let a = self.placed(node.inputs[0], origin)?;
                let b = self.require(node.inputs[1], a.layout.clone(), origin)?;
                let out = self.out_placed(final_value, &out_shape, a.layout.clone(), origin)?;
                let (ua, ub) = (self.use_of(&a, origin)?, self.use_of(&b, origin)?);
                let note = LayerNote::weightless(source, "Add".into(), out.dims);
                self.push_layer(RtOp::Add { activation }, vec![ua, ub], out, note);
            }
            FrozenOp::PRelu { slope } => {
                let x = self.require(node.inputs[0], Layout::channels_last(&in_shape), origin)?;
                let slope = self.push_f32(slope.iter().copied());
                let out = self.out_placed(
                    node.output,
                    &out_shape,
                    Layout::channels_last(&out_shape),
                    origin,
                )?;
                let note = LayerNote::weightless(source, "PReLU per channel".into(), out.dims);
                let xin = self.use_of(&x, origin)?;
                self.push_layer(RtOp::PRelu { slope }, vec![xin], out, note);
            }
            FrozenOp::Mul => {
                // Element-wise: the gate in the first input's order. Per channel: the first
                // input channels-last, the gate's C values in any order (its other axes are 1).
                let per_channel = self.shape(node.inputs[1]) != in_shape.as_slice();
                let (ua, ug, layout) = if per_channel {
                    let a =
                        self.require(node.inputs[0], Layout::channels_last(&in_shape), origin)?;
                    let g = self.placed(node.inputs[1], origin)?;
                    let gate = Use {
                        buf: g.buf,
                        dims: dims3(&origin.to_string(), &[in_shape[0]])?,
                    };
                    (self.use_of(&a, origin)?, gate, a.layout)
                } else {
                    let a = self.placed(node.inputs[0], origin)?;
                    let g = self.require(node.inputs[1], a.layout.clone(), origin)?;
                    (self.use_of(&a, origin)?, self.use_of(&g, origin)?, a.layout)
                };
                let out = self.out_placed(final_value, &out_shape, layout, origin)?;
                let kind = if per_channel {
                    "Mul per channel"
                } else {
                    "Mul"
                };
                let note = LayerNote::weightless(source, kind.into(), out.dims);
                self.push_layer(RtOp::Mul { activation }, vec![ua, ug], out, note);
            }
            FrozenOp::Affine(a) => {
                let x = self.require(node.inputs[0], Layout::channels_last(&in_shape), origin)?;
                let c = in_shape[0];
                let expand = |v: &[f64]| -> Result<Vec<f32>> {
                    match v.len() {
                        1 => Ok(vec![v[0] as f32; c]),
                        n if n == c => Ok(v.iter().map(|&x| x as f32).collect()),
                        n => bail!("{origin}: {n} per-channel constants for {c} channels"),
                    }
                };
                let (scale, shift) = (expand(&a.scale)?, expand(&a.shift)?);
                let scale = self.push_f32(scale);
                let shift = self.push_f32(shift);
                let out = self.out_placed(
                    final_value,
                    &out_shape,
                    Layout::channels_last(&out_shape),
                    origin,
                )?;
                let note = LayerNote {
                    source,
                    kind: "Affine (frozen per-channel scale, shift)".into(),
                    output_dims: out.dims,
                    macs: 0,
                    params: 2 * c,
                };
                let xin = self.use_of(&x, origin)?;
                self.push_layer(
                    RtOp::Affine(format::Affine {
                        scale,
                        shift,
                        activation,
                    }),
                    vec![xin],
                    out,
                    note,
                );
            }
            FrozenOp::Activation(a) => {
                let x = self.placed(node.inputs[0], origin)?;
                let out = self.out_placed(node.output, &out_shape, x.layout.clone(), origin)?;
                let note = LayerNote::weightless(source, format!("{a:?}"), out.dims);
                let xin = self.use_of(&x, origin)?;
                self.push_layer(RtOp::Activation(map_activation(a)), vec![xin], out, note);
            }
            FrozenOp::Softmax => {
                let x = self.require(node.inputs[0], Layout::identity(&in_shape), origin)?;
                let out = self.out_placed(
                    node.output,
                    &out_shape,
                    Layout::identity(&out_shape),
                    origin,
                )?;
                let note = LayerNote::weightless(source, "Softmax".into(), out.dims);
                let xin = self.use_of(&x, origin)?;
                self.push_layer(RtOp::Softmax, vec![xin], out, note);
            }
            FrozenOp::Reshape => {
                // Row-major reinterpretation keeps the logical flat order, hence the layout.
                let x = self.placed(node.inputs[0], origin)?;
                if out_shape.iter().product::<usize>() != in_shape.iter().product::<usize>() {
                    bail!("{origin}: reshape from {in_shape:?} to {out_shape:?} changes the element count");
                }
                // A rank-4 view is fine between reshapes (and the channel shuffle's transpose,
                // which refuses itself when it is not one); anything else would fail later at a
                // layout copy named after its reader, so refuse it here, at the Reshape.
                let relabel_only = g.consumers(node.output).iter().all(|&c| {
                    matches!(
                        g.nodes[c].op,
                        FrozenOp::Reshape | FrozenOp::Transpose { .. }
                    )
                });
                if out_shape.len() > 3 && (node.output == g.output || !relabel_only) {
                    bail!(
                        "{origin}: Reshape to the rank-{} shape {out_shape:?} per sample; the \
                         runtime holds at most 3 axes per sample, and this tensor is read as is \
                         (not reshaped back). Reshape to at most 4 axes (with the batch), or, for \
                         a channel shuffle, export Reshape [N, g, C/g, H, W], Transpose perm \
                         [0, 2, 1, 3, 4], Reshape back to [N, C, H, W]",
                        out_shape.len()
                    );
                }
                self.placed[node.output] = Some(x);
            }
            FrozenOp::Transpose { perm } => {
                if in_shape.len() > 3 {
                    bail!(
                        "{origin}: Transpose {perm:?} of a rank-{} tensor per sample                          ({in_shape:?}); the runtime holds at most 3 axes per sample. icefold                          runs a channel shuffle (Reshape [N, C, H, W] -> [N, g, C/g, H, W],                          Transpose perm [0, 2, 1, 3, 4], Reshape back to [N, C, H, W], each                          intermediate read only by the next) as a permutation of channels; this                          Transpose is not part of that pattern: export the shuffle in that form,                          or keep at most 4 axes (with the batch) around it",
                        in_shape.len()
                    );
                }
                let mut x = self.placed(node.inputs[0], origin)?;
                if x.layout.src != in_shape {
                    x = self.require(node.inputs[0], Layout::identity(&in_shape), origin)?;
                }
                if perm.len() != in_shape.len() {
                    bail!(
                        "{origin}: permutation {perm:?} does not match rank {}",
                        in_shape.len()
                    );
                }
                // A relabelling: output axis k is input axis perm[k]; the bytes stay where they are.
                let mut inv = vec![0; perm.len()];
                for (k, &p) in perm.iter().enumerate() {
                    inv[p] = k;
                }
                let new_perm = x.layout.perm.iter().map(|&p| inv[p]).collect();
                self.placed[node.output] = Some(Placed {
                    buf: x.buf,
                    layout: Layout {
                        src: out_shape.clone(),
                        perm: new_perm,
                    },
                });
            }
            FrozenOp::Pad {
                pads,
                interior,
                value,
            } => {
                let r = in_shape.len();
                if r < 2 || pads[0] != 0 || pads[r] != 0 || interior[0] != 0 || r > 3 {
                    bail!("{origin}: only padding of the spatial axes of [C, H, W] or [C, L] tensors is supported (pads {pads:?}, interior {interior:?})");
                }
                let (t, l, b, rr) = if r == 3 {
                    (pads[1], pads[2], pads[4], pads[5])
                } else {
                    (0, pads[1], 0, pads[3])
                };
                let (ih, iw) = if r == 3 {
                    (interior[1], interior[2])
                } else {
                    (0, interior[1])
                };
                let x = self.require(node.inputs[0], Layout::channels_last(&in_shape), origin)?;
                let out = self.out_placed(
                    node.output,
                    &out_shape,
                    Layout::channels_last(&out_shape),
                    origin,
                )?;
                let what = if interior.iter().all(|&i| i == 0) {
                    format!("Pad {pads:?}")
                } else {
                    format!("Pad {pads:?} interior {interior:?}")
                };
                let note = LayerNote::weightless(source, what, out.dims);
                let xin = self.use_of(&x, origin)?;
                let op = RtOp::Pad(format::Pad {
                    pad: pads_u16(origin, [t, l, b, rr])?,
                    interior: pair_u16(origin, "interior padding", [ih, iw])?,
                    value: *value,
                });
                self.push_layer(op, vec![xin], out, note);
            }
            FrozenOp::Concat { .. } | FrozenOp::Slice { .. } | FrozenOp::Gather { .. } => {
                self.lower_axis_op(node)?
            }
        }
        Ok(())
    }

    /// A fresh buffer for `v` in `layout`.
    fn out_placed(
        &mut self,
        v: ValueId,
        shape: &[usize],
        layout: Layout,
        origin: &Origin,
    ) -> Result<Use> {
        let dims = dims3(&origin.to_string(), &layout.physical_shape())?;
        let buf = self.new_buffer(v, shape.iter().product());
        self.placed[v] = Some(Placed { buf, layout });
        Ok(Use { buf, dims })
    }
}

fn kind_name(k: PoolKind) -> &'static str {
    match k {
        PoolKind::Max => "Max",
        PoolKind::Average { .. } => "Avg",
    }
}

/// Lower a frozen graph to f32 runtime layers and plan its arena.
pub fn lower(g: &FrozenGraph) -> Result<Lowered> {
    lower_with(g, LowerOptions::default())
}

/// Lower with explicit options.
pub fn lower_with(g: &FrozenGraph, options: LowerOptions) -> Result<Lowered> {
    let mut g = g.clone();
    crate::passes::fuse_pad::fuse_pad_into_conv(&mut g);
    crate::passes::channel_shuffle::shuffle_to_gather(&mut g);
    let l = Lowerer {
        g: &g,
        options,
        placed: vec![None; g.values.len()],
        buffers: Vec::new(),
        layers: Vec::new(),
        weights: Vec::new(),
    };
    let mut lowered = l.lower()?;
    if options.fold_global_pool {
        crate::passes::global_pool_into_dense::fold_global_pool_into_dense(&mut lowered)?;
    }
    Ok(lowered)
}

/// A first layer that only transposes the model input (a channels-first ONNX input into the
/// runtime's channels-last layout) becomes part of writing the input
/// (`ModelInfo::input_transpose`): the engine transposes as it copies the caller's input in, so
/// the arena never holds the input twice (on MobileNetV1-0.25 at 96x96 the two copies were the
/// largest live set of the all-int8 model).
fn transpose_while_writing_input(l: &mut Lowered) {
    let Some(first) = l.layers.first().copied() else {
        return;
    };
    let format::Op::Transpose(t) = first.op else {
        return;
    };
    let input = l.info.input.id;
    let read_later = l.layers[1..].iter().any(|layer| {
        layer.inputs[..usize::from(layer.input_count)]
            .iter()
            .any(|x| x.id == input)
    });
    if first.inputs[0].id != input || read_later || first.output.id == l.info.output.id {
        return;
    }
    l.info.input = first.output;
    l.info.input_transpose = Some(t);
    l.layers.remove(0);
    l.notes.remove(0);
    l.info.layer_count -= 1;
    // Tensor ids stay dense (the quantizer and the planner index by id): the old input's id goes.
    l.tensor_values.remove(usize::from(input));
    let renumber = |d: &mut TensorDesc| {
        if d.id > input {
            d.id -= 1;
        }
    };
    for layer in &mut l.layers {
        // Both slots: a one-input layer's unused slot repeats its input.
        layer.inputs.iter_mut().for_each(renumber);
        renumber(&mut layer.output);
    }
    renumber(&mut l.info.input);
    renumber(&mut l.info.output);
}
