//! Arena planning: every tensor gets an offset in one caller-provided buffer, tensors whose
//! lifetimes overlap never share bytes, and the total is as small as a simple greedy can make it.
//!
//! Greedy by size (largest first, lowest offset that fits), the strategy TFLite Micro's greedy
//! planner also uses: optimal planning is NP-hard, and on chain-like CNNs this reaches the lower
//! bound of the largest pair of adjacent tensors in practice.

use anyhow::{anyhow, Result};
use icefold::format::{
    Band, Concat, ConcatI8, Conv2dPool, Conv2dPoolI16, Conv2dPoolI8, DType, InPlaceBounds, Layer,
    ModelInfo, Op, TensorDesc, View, ARENA_ALIGN,
};

/// A tensor's size and the span of layers during which it must stay intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLife {
    /// Bytes.
    pub bytes: usize,
    /// Index of the layer that writes it (-1: before the first layer, i.e. the model input).
    pub first: isize,
    /// Index of the last layer that reads it (the layer count for the model output).
    pub last: isize,
}

impl BufferLife {
    fn overlaps(&self, other: &BufferLife) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Offsets per buffer and the arena size they need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Byte offset of each buffer, in input order.
    pub offsets: Vec<usize>,
    /// Arena bytes.
    pub total: usize,
}

/// Buffer `output` may overlap buffer `input` (read for the last time by the layer that writes
/// `output`) at the relative offsets `bounds` allows: the layer runs in place
/// (`icefold::format::in_place`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlace {
    /// The written buffer.
    pub output: usize,
    /// The buffer written over.
    pub input: usize,
    /// Output offset minus input offset at which every row is safe.
    pub bounds: InPlaceBounds,
}

/// Place `lives` in one arena with every offset a multiple of `align`.
pub fn plan_arena(lives: &[BufferLife], align: usize) -> ArenaPlan {
    plan_arena_in_place(lives, &[], align)
}

/// [`plan_arena`] where the pairs `in_place` may overlap as their bounds allow. Greedy by size:
/// each buffer goes outside every forbidden range of the buffers already placed whose lives
/// overlap its own, where it grows the plan least.
pub fn plan_arena_in_place(lives: &[BufferLife], in_place: &[InPlace], align: usize) -> ArenaPlan {
    let round = |x: usize| x.div_ceil(align) * align;
    let mut order: Vec<usize> = (0..lives.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lives[i].bytes), lives[i].first));
    let mut offsets = vec![0i64; lives.len()];
    let mut placed: Vec<usize> = Vec::new();
    let (mut low, mut high) = (0i64, 0i64);
    for &i in &order {
        let need = round(lives[i].bytes);
        // Offsets strictly between the two ends are forbidden (relative to 0, signed).
        let forbidden: Vec<(i64, i64)> = placed
            .iter()
            .filter(|&&j| lives[j].overlaps(&lives[i]))
            .map(|&j| {
                let (at, size_i, size_j) =
                    (offsets[j], lives[i].bytes as i64, lives[j].bytes as i64);
                let pair = |output, input| {
                    in_place
                        .iter()
                        .find(|p| p.output == output && p.input == input)
                };
                if let Some(p) = pair(i, j) {
                    // `i` written over `j`: i − j <= forward_max, >= reverse_min, or apart.
                    let b = p.bounds;
                    (
                        at + b.forward_max.max(-size_i),
                        at + b.reverse_min.min(size_j),
                    )
                } else if let Some(p) = pair(j, i) {
                    // `j` written over `i`: j − i <= forward_max, >= reverse_min, or apart.
                    let b = p.bounds;
                    (
                        at - b.reverse_min.min(size_i),
                        at + (-b.forward_max).min(size_j),
                    )
                } else {
                    (at - need as i64, at + round(lives[j].bytes) as i64)
                }
            })
            .collect();
        // Candidates: 0, and every aligned offset just outside a forbidden range (below one
        // too: an output written over its input may want the bytes under it). The one that
        // grows the plan's extent least wins, then the one nearest 0.
        let (down, up) = (
            |x: i64| x.div_euclid(align as i64) * align as i64,
            |x: i64| (x + align as i64 - 1).div_euclid(align as i64) * align as i64,
        );
        let free = |at: i64| forbidden.iter().all(|&(s, e)| at <= s || at >= e);
        let (at, _) = std::iter::once(0)
            .chain(forbidden.iter().flat_map(|&(s, e)| [down(s), up(e)]))
            .filter(|&at| free(at))
            .map(|at| {
                let extent = (high.max(at + need as i64) - low.min(at), at.abs());
                (at, extent)
            })
            .min_by_key(|&(_, extent)| extent)
            .unwrap_or((high, (0, 0)));
        offsets[i] = at;
        low = low.min(at);
        high = high.max(at + need as i64);
        placed.push(i);
    }
    // Shift the plan to start at 0.
    let offsets = offsets.iter().map(|&o| (o - low) as usize).collect();
    ArenaPlan {
        offsets,
        total: (high - low) as usize,
    }
}

/// Output pixels an in-place layer is planned to run at a time (at least): every band is one
/// call of the layer's kernel, whose per-call work (the depthwise ring's halo rows, the
/// pointwise tile's stage, the band driver) is paid per band, so a band of few pixels pays it
/// often. Bands of at least 32 pixels: DS-CNN's 5-pixel rows run in bands of
/// [`IN_PLACE_BAND_ROWS`] (one row cost it +16 %, docs/BENCHMARKS.md), MobileNetV1's 48- and
/// 24-pixel rows and ResNet-8's 32-pixel rows in one or two rows (one row cost them under 1 %).
const IN_PLACE_BAND_PIXELS: i64 = 32;

/// Most output rows an in-place layer is planned to run at a time: beyond four rows the
/// per-band work is a few per cent of a band on every network measured, and each row more
/// is a row of arena.
const IN_PLACE_BAND_ROWS: i64 = 4;

/// The output rows the planner leaves room for when `output` is written over its input:
/// enough rows for [`IN_PLACE_BAND_PIXELS`], at most [`IN_PLACE_BAND_ROWS`].
fn in_place_band_rows(output: &TensorDesc) -> i64 {
    let width = i64::from(output.dims[1]).max(1);
    ((IN_PLACE_BAND_PIXELS + width - 1) / width).clamp(1, IN_PLACE_BAND_ROWS)
}

/// Bytes of one row of a dense `[H, W, C]` tensor.
fn row_bytes(d: &TensorDesc) -> i64 {
    i64::from(d.dims[1]) * i64::from(d.dims[2]) * d.dtype.size() as i64
}

/// Recompute every tensor's arena offset from the schedule (element sizes may have changed).
pub fn replan(info: &mut ModelInfo, layers: &mut [Layer]) -> Result<()> {
    replan_with(info, layers, (&[], &[]), true)
}

/// [`replan`] where tensor `t` lies in the storage of tensor `storage[t]` (views of one storage
/// share its buffer, whose life spans all of theirs), `shift[t]` bytes after its start (the rows
/// a slice along rows skips; 0 past `shift`); ids past `storage` are their own storage.
/// With `over_inputs` false no layer writes over its input (`--no-in-place`).
fn replan_with(
    info: &mut ModelInfo,
    layers: &mut [Layer],
    (storage, shift): (&[u16], &[u32]),
    over_inputs: bool,
) -> Result<()> {
    let key = |id: u16| usize::from(storage.get(usize::from(id)).copied().unwrap_or(id));
    let n = layers
        .iter()
        .flat_map(|l| l.inputs.iter().chain(std::iter::once(&l.output)))
        .chain([&info.input, &info.output])
        .map(|d| d.id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut lives = vec![
        BufferLife {
            bytes: 0,
            first: isize::MAX,
            last: -1
        };
        n
    ];
    let shift_of = |id: u16| shift.get(usize::from(id)).copied().unwrap_or(0);
    let mut touch = |d: &TensorDesc, at: isize, write: bool| {
        let b = &mut lives[key(d.id)];
        b.bytes = b.bytes.max(shift_of(d.id) as usize + d.storage_len());
        if write {
            b.first = b.first.min(at);
        }
        b.last = b.last.max(at);
    };
    touch(&info.input, -1, true);
    for (i, l) in layers.iter().enumerate() {
        for d in &l.inputs[..l.input_count as usize] {
            touch(d, i as isize, false);
        }
        touch(&l.output, i as isize, true);
    }
    touch(&info.output, layers.len() as isize, false);
    for b in &mut lives {
        if b.first == isize::MAX {
            b.first = b.last;
        }
    }
    // The band of a fused layer is scratch of that layer alone: one more buffer, after the
    // tensors, live only while the layer runs.
    let mut bands = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        if let Some(band) = l.scratch() {
            bands.push((i, lives.len()));
            lives.push(BufferLife {
                bytes: band.byte_len(),
                first: i as isize,
                last: i as isize,
            });
        }
    }
    // Layers that may write over an input they read for the last time: row-local operations
    // whose input and output are dense tensors of their own storage.
    let own_storage = |d: &TensorDesc| d.view.is_none() && key(d.id) == usize::from(d.id);
    // One input per layer (the largest): the loader wants every input an output overlaps on
    // one side of it, which pairs planned separately would not guarantee.
    let mut in_place = Vec::new();
    for (i, l) in layers.iter().enumerate().filter(|_| over_inputs) {
        let candidate = (0..usize::from(l.input_count))
            .filter_map(|k| {
                let x = &l.inputs[k];
                let dies_here = lives[key(x.id)].last == i as isize;
                let own = own_storage(x) && own_storage(&l.output) && l.scratch().is_none();
                let bounds = l.in_place_bounds(k).filter(|_| dies_here && own)?;
                Some((x.storage_len(), key(x.id), bounds))
            })
            .max_by_key(|&(bytes, ..)| bytes);
        if let Some((_, input, bounds)) = candidate {
            // Room for bands of several output rows at a time.
            let slack = (in_place_band_rows(&l.output) - 1) * row_bytes(&l.output);
            in_place.push(InPlace {
                output: key(l.output.id),
                input,
                bounds: InPlaceBounds {
                    forward_max: bounds.forward_max - slack,
                    reverse_min: bounds.reverse_min + slack,
                },
            });
        }
    }
    // In place only where it pays: a layer run in bands costs its kernels' set-up once per band
    // (on Cortex-M4 DS-CNN's depthwise layers took 2.3x the instructions in one-row bands), so
    // a pair whose overlap does not shrink the arena is planned apart.
    let mut plan = plan_arena_in_place(&lives, &in_place, ARENA_ALIGN);
    let mut k = in_place.len();
    while k > 0 {
        k -= 1;
        let mut without = in_place.clone();
        without.remove(k);
        let trial = plan_arena_in_place(&lives, &without, ARENA_ALIGN);
        if trial.total <= plan.total {
            (in_place, plan) = (without, trial);
        }
    }
    let place = |d: &mut TensorDesc| d.offset = plan.offsets[key(d.id)] as u32 + shift_of(d.id);
    for l in layers.iter_mut() {
        l.inputs.iter_mut().for_each(place);
        place(&mut l.output);
    }
    for (i, b) in bands {
        set_band_offset(&mut layers[i], plan.offsets[b] as u32);
    }
    place(&mut info.input);
    place(&mut info.output);
    info.arena_bytes = u32::try_from(plan.total).map_err(|_| anyhow!("arena beyond 4 GiB"))?;
    Ok(())
}

fn set_band_offset(layer: &mut Layer, offset: u32) {
    match &mut layer.op {
        Op::Conv2dPool(f) => f.band.offset = offset,
        Op::Conv2dPoolI8(f) => f.band.offset = offset,
        Op::Conv2dPoolI16(f) => f.band.offset = offset,
        _ => {}
    }
}

/// What [`fuse_conv_pool`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fusion {
    /// Indices (in the schedule before fusion) of the convolutions now fused into the pooling
    /// that followed them; each fused layer sits where its pooling was, minus the layers removed
    /// before it.
    pub fused_convs: Vec<usize>,
    /// Arena bytes before and after.
    pub arena_bytes: (u32, u32),
}

/// Convolution rows a fused layer keeps: the rows one pooling window reads.
fn band_rows(pool_kernel_h: u16, conv_rows: u16) -> u16 {
    pool_kernel_h.min(conv_rows)
}

/// The fused layer of `conv` and `pool` (adjacent in the schedule), if the pair qualifies: the
/// convolution's output (dense, not the model output) is read by the pooling alone, the band is
/// smaller than the convolution output (a global pooling reads every row: nothing to gain) and the
/// convolution's top and bottom padding are below its window height (the loader's rule).
fn fused_pair(conv: &Layer, pool: &Layer, layers: &[Layer], model_output: u16) -> Option<Layer> {
    let mid = conv.output;
    let reads = layers
        .iter()
        .flat_map(|l| l.inputs[..usize::from(l.input_count)].iter())
        .filter(|x| x.id == mid.id)
        .count();
    if mid.view.is_some()
        || mid.id == model_output
        || pool.input_count != 1
        || pool.inputs[0].id != mid.id
        || reads != 1
    {
        return None;
    }
    let band = |kernel_h: u16, quant| Band {
        offset: 0,
        rows: band_rows(kernel_h, mid.dims[0]),
        quant,
    };
    let op = match (conv.op, pool.op) {
        (Op::Conv2d(c), Op::Pool(p)) => Op::Conv2dPool(Conv2dPool {
            conv: c,
            pool: p,
            band: band(p.kernel[0], None),
        }),
        (Op::Conv2dI8(c), Op::PoolI8(p)) => Op::Conv2dPoolI8(Conv2dPoolI8 {
            conv: c,
            pool: p,
            band: band(p.pool.kernel[0], mid.quant),
        }),
        (Op::Conv2dI16(c), Op::PoolI8(p))
            if conv.inputs[0].dtype == DType::I16 && mid.dtype == DType::I8 =>
        {
            Op::Conv2dPoolI16(Conv2dPoolI16 {
                conv: c,
                pool: p,
                band: band(p.pool.kernel[0], mid.quant),
            })
        }
        _ => return None,
    };
    let layer = Layer {
        op,
        inputs: conv.inputs,
        input_count: conv.input_count,
        output: pool.output,
    };
    let (c, _, band) = layer.fused()?;
    let extent = u32::from(c.dilation[0]) * u32::from(c.kernel[0].saturating_sub(1)) + 1;
    let fits =
        band.rows < mid.dims[0] && u32::from(c.pad[0]) < extent && u32::from(c.pad[2]) < extent;
    fits.then_some(layer)
}

/// Fuses convolutions (`Conv2d`, `Conv2dI8`, and a 16×8 `Conv2dI16` from int16 to int8) with the
/// pooling (`Pool`, `PoolI8`) that is the next layer and their output's only reader, into one
/// `Conv2dPool` / `Conv2dPoolI8` / `Conv2dPoolI16` layer whose band holds the convolution rows
/// one pooling window reads, **while the arena exceeds `budget` bytes**: pairs in schedule
/// order, each kept if it shrinks the arena, until the arena fits. The values computed do not
/// change (the fused layer runs the same kernels on the same elements); the arena is replanned
/// with each band live during its layer only. Returns what it did.
///
/// Why a budget and not always: a fused layer computes each convolution row once, but in one
/// kernel call per band, and the fast kernels' per-call set-up (widened weights, pad sums) then
/// recurs: on the Cortex-M4F the 28x28 CNN's int8 inference takes 12 % more instructions fused
/// (f32: 0.4 %), docs/BENCHMARKS.md "Fused convolution and pooling". A model that fits its RAM
/// keeps the faster plan; `convert --max-arena-bytes N` (the target's RAM) fuses what it must.
pub fn fuse_conv_pool(
    info: &mut ModelInfo,
    layers: &mut Vec<Layer>,
    budget: usize,
) -> Result<Fusion> {
    let before = info.arena_bytes;
    let mut fused = layers.clone();
    let mut fused_info = *info;
    let mut fused_convs = Vec::new();
    let (mut i, mut original) = (0, 0);
    while i + 1 < fused.len() && fused_info.arena_bytes as usize > budget {
        if let Some(layer) = fused_pair(&fused[i], &fused[i + 1], &fused, info.output.id) {
            let mut trial = fused.clone();
            trial[i] = layer;
            trial.remove(i + 1);
            let mut trial_info = fused_info;
            trial_info.layer_count =
                u16::try_from(trial.len()).map_err(|_| anyhow!("more than 65535 layers"))?;
            replan(&mut trial_info, &mut trial)?;
            if trial_info.arena_bytes < fused_info.arena_bytes {
                (fused, fused_info) = (trial, trial_info);
                fused_convs.push(original);
                original += 2;
                i += 1;
                continue;
            }
        }
        original += 1;
        i += 1;
    }
    if !fused_convs.is_empty() {
        *info = fused_info;
        *layers = fused;
    }
    Ok(Fusion {
        fused_convs,
        arena_bytes: (before, info.arena_bytes),
    })
}

/// What [`share_concat_storage`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Concatenation inputs written in place by their producers (no copy).
    pub in_place: usize,
    /// Slices whose output is a view of their input (no copy).
    pub slice_views: usize,
    /// Bytes those slices no longer copy per inference.
    pub copies_avoided: usize,
    /// Arena bytes before and after.
    pub arena_bytes: (u32, u32),
}

/// Zero-copy concatenation along channels: every concatenation input that (a) is read by that
/// concatenation only, (b) is produced by a convolution (whose kernels write at an output pixel
/// stride) or by a channel concatenation (nested concatenations flatten into one storage), and
/// (c) already has the output's element type and quantization (no rescaling) becomes a view into
/// its slot of the output (`TensorDesc::view`): its producer writes it there, and the
/// concatenation copies only its other inputs. The arena is then replanned with each storage
/// alive over the union of its views' lives. Everything else keeps today's copy; the values
/// computed do not change. Returns what it did (nothing for a model without concatenation).
/// With `over_inputs` false the arena is replanned with every layer's output apart from its
/// inputs (`convert --no-in-place`), concatenation or not.
pub fn share_concat_storage(
    info: &mut ModelInfo,
    layers: &mut [Layer],
    over_inputs: bool,
) -> Result<Sharing> {
    let before = info.arena_bytes;
    let n = layers
        .iter()
        .flat_map(|l| l.inputs.iter().chain(std::iter::once(&l.output)))
        .chain([&info.input, &info.output])
        .map(|d| usize::from(d.id) + 1)
        .max()
        .unwrap_or(0);
    let mut producer = vec![None; n];
    let mut reads = vec![0usize; n];
    for (i, l) in layers.iter().enumerate() {
        producer[usize::from(l.output.id)] = Some(i);
        for x in &l.inputs[..usize::from(l.input_count)] {
            reads[usize::from(x.id)] += 1;
        }
    }
    let along_channels = |op: &Op| {
        matches!(
            op,
            Op::Concat(Concat { axis: 2 }) | Op::ConcatI8(ConcatI8 { axis: 2, .. })
        )
    };
    // storage[t]: the tensor whose buffer holds t; place[t]: (first channel, pixel stride) there.
    let mut storage: Vec<u16> = (0..n).map(|t| t as u16).collect();
    let mut place: Vec<Option<View>> = vec![None; n];
    let mut in_place = 0;
    // Outer concatenations come later in the schedule: walk backwards so that an output's own
    // place is known before its inputs are placed in it.
    for j in (0..layers.len()).rev() {
        let l = &layers[j];
        if !along_channels(&l.op) || l.output.dtype == DType::I16 {
            continue;
        }
        let y = l.output;
        let (root, base, stride) = match place[usize::from(y.id)] {
            Some(v) => (storage[usize::from(y.id)], v.channel, v.pixel_stride),
            None => (y.id, 0, y.dims[2]),
        };
        let mut slot = 0u16;
        for k in 0..usize::from(l.input_count) {
            let x = l.inputs[k];
            let unrescaled = match &l.op {
                Op::ConcatI8(c) => c.rescale[k].is_none(),
                _ => true,
            };
            let writer_takes_stride = producer[usize::from(x.id)].is_some_and(|p| {
                matches!(
                    layers[p].op,
                    Op::Conv2d(_) | Op::Conv2dI8(_) | Op::Conv2dI16(_)
                ) || along_channels(&layers[p].op)
            });
            let eligible = unrescaled
                && writer_takes_stride
                && reads[usize::from(x.id)] == 1
                && x.id != info.output.id
                && x.id != info.input.id
                && x.dtype == y.dtype
                && x.quant == y.quant
                && x.dims[..2] == y.dims[..2];
            if eligible {
                storage[usize::from(x.id)] = root;
                place[usize::from(x.id)] = Some(View {
                    channel: base + slot,
                    pixel_stride: stride,
                });
                in_place += 1;
            }
            slot += x.dims[2];
        }
    }
    let (slice_views, copies_avoided, shift) =
        slices_as_views(info, layers, (&mut storage, &mut place));
    if in_place == 0 && slice_views == 0 && over_inputs {
        return Ok(Sharing {
            in_place,
            arena_bytes: (before, before),
            ..Sharing::default()
        });
    }
    let set = |d: &mut TensorDesc| d.view = place[usize::from(d.id)];
    for l in layers.iter_mut() {
        l.inputs.iter_mut().for_each(set);
        set(&mut l.output);
    }
    replan_with(info, layers, (&storage, &shift), over_inputs)?;
    Ok(Sharing {
        in_place,
        slice_views,
        copies_avoided,
        arena_bytes: (before, info.arena_bytes),
    })
}

/// Slices as views (format version 10): a `Slice` with step 1 whose output is read only by
/// convolutions (their input 0: the kernels take an input pixel stride) becomes a view of its
/// input's storage (`Layer::in_place`): along channels the same storage at the input's pixel
/// stride from channel `start` on; along rows (the input dense, or every reader a convolution)
/// the input's description `start` rows further on, where that offset stays 4-aligned. The
/// slice then moves nothing, and the storage stays alive while any view of it is read (the
/// replanning keeps one life per storage). A slice with another step, along columns, read by
/// anything else (a concatenation, an element-wise layer, a fused convolution), or that is the
/// model output keeps its copy. Updates `storage` and `place` (as [`share_concat_storage`]
/// keeps them) and returns the number of slices made views, the bytes they no longer copy per
/// inference, and each tensor's byte shift in its storage.
fn slices_as_views(
    info: &ModelInfo,
    layers: &[Layer],
    (storage, place): (&mut [u16], &mut [Option<View>]),
) -> (usize, usize, Vec<u32>) {
    let mut shift = vec![0u32; storage.len()];
    let (mut views, mut bytes) = (0, 0);
    let reads_at_stride = |r: &Layer, id: u16| {
        matches!(r.op, Op::Conv2d(_) | Op::Conv2dI8(_) | Op::Conv2dI16(_))
            && r.input_count == 1
            && r.inputs[0].id == id
    };
    for l in layers {
        let Op::Slice(s) = l.op else { continue };
        let (x, y) = (l.inputs[0], l.output);
        if s.step != 1
            || y.id == info.output.id
            || x.dtype != y.dtype
            || x.dtype == DType::I16
            || usize::from(y.id) >= storage.len()
        {
            continue;
        }
        let readers: Vec<&Layer> = layers
            .iter()
            .filter(|r| {
                r.inputs[..usize::from(r.input_count)]
                    .iter()
                    .any(|d| d.id == y.id)
            })
            .collect();
        let all_convs = readers.iter().all(|r| reads_at_stride(r, y.id));
        let (xi, yi) = (usize::from(x.id), usize::from(y.id));
        let (root, base, stride) = match place[xi] {
            Some(v) => (storage[xi], v.channel, v.pixel_stride),
            None => (storage[xi], 0, x.dims[2]),
        };
        match s.axis {
            2 if all_convs => {
                place[yi] = Some(View {
                    channel: base + s.start,
                    pixel_stride: stride,
                });
            }
            0 if all_convs || place[xi].is_none() => {
                let row = u32::from(x.dims[1]) * u32::from(stride) * x.dtype.size() as u32;
                let skip = shift[xi] + u32::from(s.start) * row;
                if skip as usize % ARENA_ALIGN != 0 {
                    continue;
                }
                shift[yi] = skip;
                place[yi] = place[xi];
            }
            _ => continue,
        }
        storage[yi] = root;
        views += 1;
        bytes += y.byte_len();
    }
    (views, bytes, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(bytes: usize, first: isize, last: isize) -> BufferLife {
        BufferLife { bytes, first, last }
    }

    #[test]
    fn chain_reuses_memory_of_dead_tensors() {
        // input → a → b → c: at most two neighbours are alive at once.
        let lives = [
            life(100, -1, 0),
            life(200, 0, 1),
            life(100, 1, 2),
            life(40, 2, 3),
        ];
        let plan = plan_arena(&lives, 4);
        assert_eq!(plan.total, 300);
        check_disjoint(&lives, &plan);
    }

    #[test]
    fn residual_keeps_skip_alive() {
        // x is read by layer 0 and by the add at layer 2.
        let lives = [
            life(64, -1, 2),
            life(64, 0, 1),
            life(64, 1, 2),
            life(64, 2, 3),
        ];
        let plan = plan_arena(&lives, 4);
        check_disjoint(&lives, &plan);
        assert_eq!(plan.total, 192);
    }

    #[test]
    fn offsets_are_aligned() {
        let lives = [life(3, -1, 0), life(5, 0, 1), life(7, 0, 1)];
        let plan = plan_arena(&lives, 4);
        assert!(plan.offsets.iter().all(|o| o % 4 == 0));
        check_disjoint(&lives, &plan);
    }

    fn tensor(id: u16, c: u16) -> TensorDesc {
        TensorDesc {
            id,
            offset: 0,
            dims: [2, 2, c],
            dtype: DType::F32,
            quant: None,
            view: None,
        }
    }

    /// A 1x1 f32 convolution (its weights are not read by the planner).
    fn pointwise_conv() -> Op {
        use icefold::format::{Activation, Conv2d, Span};
        Op::Conv2d(Conv2d {
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0; 4],
            groups: 1,
            weights: Span::default(),
            bias: Span::default(),
            pad_values: Span::default(),
            activation: Activation::Identity,
        })
    }

    fn step(op: Op, inputs: &[TensorDesc], output: TensorDesc) -> Layer {
        Layer {
            op,
            inputs: [inputs[0], *inputs.get(1).unwrap_or(&inputs[0])],
            input_count: inputs.len() as u8,
            output,
        }
    }

    #[test]
    fn in_place_bands_cover_at_least_32_pixels_in_at_most_four_rows() {
        let width = |w: u16| TensorDesc {
            dims: [25, w, 64],
            ..tensor(0, 64)
        };
        // DS-CNN's 5-pixel rows: four rows (32 pixels would take seven).
        assert_eq!(in_place_band_rows(&width(5)), 4);
        // ResNet-8's 32 and MobileNetV1's 48: one row; MobileNetV1's 24: two.
        assert_eq!(in_place_band_rows(&width(32)), 1);
        assert_eq!(in_place_band_rows(&width(48)), 1);
        assert_eq!(in_place_band_rows(&width(24)), 2);
        assert_eq!(in_place_band_rows(&width(11)), 3);
        assert_eq!(in_place_band_rows(&width(0)), 4);
    }

    #[test]
    fn concatenated_conv_outputs_become_views_of_one_storage() {
        let conv = pointwise_conv();
        let cat = Op::Concat(Concat { axis: 2 });
        let (x, a, b, c, d, e, y) = (
            tensor(0, 4),
            tensor(1, 2),
            tensor(2, 3),
            tensor(3, 5),
            tensor(4, 1),
            tensor(5, 6),
            tensor(6, 7),
        );
        // e = (a ++ b) ++ d with a, b, d by convolutions and c = a ++ b nested; y = e ++ conv(e),
        // where e is read twice (by the last concatenation and a convolution).
        let mut layers = vec![
            step(conv, &[x], a),
            step(conv, &[x], b),
            step(cat, &[a, b], c),
            step(conv, &[x], d),
            step(cat, &[c, d], e),
            step(conv, &[e], tensor(7, 1)),
            step(cat, &[e, tensor(7, 1)], y),
        ];
        let mut info = ModelInfo {
            layer_count: layers.len() as u16,
            arena_bytes: 0,
            input: x,
            output: y,
            input_rank: 3,
            output_rank: 3,
            input_transpose: None,
        };
        replan(&mut info, &mut layers).unwrap();
        let sharing = share_concat_storage(&mut info, &mut layers, true).unwrap();
        let by_id = |id: u16| {
            layers
                .iter()
                .find(|l| l.output.id == id)
                .map(|l| l.output)
                .unwrap()
        };
        let v = |id: u16| by_id(id).view.map(|v| (v.channel, v.pixel_stride));
        // Nested: a, b and d lie in e's storage (6 channels), flattened through c.
        assert_eq!(v(1), Some((0, 6)));
        assert_eq!(v(2), Some((2, 6)));
        assert_eq!(v(3), Some((0, 6)));
        assert_eq!(v(4), Some((5, 6)));
        assert_eq!(by_id(1).offset, by_id(5).offset);
        assert_eq!(by_id(4).offset, by_id(5).offset);
        // e is read by a convolution too: it stays dense and is copied into y; the conv output 7
        // is written in place in y.
        assert_eq!(v(5), None);
        assert_eq!(v(7), Some((6, 7)));
        assert_eq!(v(6), None);
        assert_eq!(sharing.in_place, 5);
        assert!(sharing.arena_bytes.1 < sharing.arena_bytes.0, "{sharing:?}");
        // Every tensor's description is the same wherever it appears.
        for l in &layers {
            for x in &l.inputs[..usize::from(l.input_count)] {
                if x.id != 0 {
                    assert_eq!(*x, by_id(x.id));
                }
            }
        }
    }

    #[test]
    fn slices_read_only_by_convolutions_become_views_of_their_input() {
        use icefold::format::{Activation, Slice};
        let conv = pointwise_conv();
        let slice = |axis, start, step| Op::Slice(Slice { axis, start, step });
        let relu = Op::Activation(Activation::Relu);
        let desc = |id, dims| TensorDesc {
            dims,
            ..tensor(id, 1)
        };
        // x [2, 2, 6] → h = conv(x) → a = h[.., 0..2] → conv; b = h[.., 2..6] → relu (copies);
        // c = h[.., 1..5 step 2] → conv (copies); r = h[1..2] (a row) → relu (a dense offset
        // view); z = conv(a) + ... each branch ends in the model output through a chain.
        let (x, h) = (desc(0, [2, 2, 6]), desc(1, [2, 2, 6]));
        let (a, b, c, r) = (
            desc(2, [2, 2, 2]),
            desc(3, [2, 2, 4]),
            desc(4, [2, 2, 2]),
            desc(5, [1, 2, 6]),
        );
        let (qa, qb, qc, qr) = (
            desc(6, [2, 2, 2]),
            desc(7, [2, 2, 4]),
            desc(8, [2, 2, 2]),
            desc(9, [1, 2, 6]),
        );
        let mut layers = vec![
            step(conv, &[x], h),
            step(slice(2, 0, 1), &[h], a),
            step(slice(2, 2, 1), &[h], b),
            step(slice(2, 1, 2), &[h], c),
            step(slice(0, 1, 1), &[h], r),
            step(conv, &[a], qa),
            step(relu, &[b], qb),
            step(conv, &[c], qc),
            step(relu, &[r], qr),
        ];
        let mut info = ModelInfo {
            layer_count: layers.len() as u16,
            arena_bytes: 0,
            input: x,
            output: qr,
            input_rank: 3,
            output_rank: 3,
            input_transpose: None,
        };
        replan(&mut info, &mut layers).unwrap();
        let sharing = share_concat_storage(&mut info, &mut layers, true).unwrap();
        let out = |id: u16| layers.iter().find(|l| l.output.id == id).unwrap().output;
        let v = |id: u16| out(id).view.map(|v| (v.channel, v.pixel_stride));
        // a: channels 0..2 of h's 6, read in place by its convolution.
        assert_eq!(v(2), Some((0, 6)));
        assert_eq!(out(2).offset, out(1).offset);
        assert!(layers[1].is_view_slice());
        // b is read by an activation, c has step 2: both copied, elsewhere.
        assert_eq!(v(3), None);
        assert!(!layers[2].is_view_slice() && !layers[3].is_view_slice());
        assert_eq!(v(4), None);
        // r: row 1 of h, dense, 2 · 6 · 4 bytes into it; any reader takes it.
        assert_eq!(v(5), None);
        assert_eq!(out(5).offset, out(1).offset + 48);
        assert!(layers[4].is_view_slice());
        assert_eq!(sharing.slice_views, 2);
        assert_eq!(sharing.copies_avoided, (4 * 2 + 2 * 6) * 4);
        // h stays alive until its last view is read: nothing written after the slices lands
        // on it while a or r is still to be read.
        let h_bytes = out(1).offset..out(1).offset + out(1).byte_len() as u32;
        for l in &layers[5..8] {
            let o = l.output.offset..l.output.offset + l.output.storage_len() as u32;
            assert!(
                o.end <= h_bytes.start || o.start >= h_bytes.end,
                "{l:?} over h"
            );
        }
        // Every tensor's description is the same wherever it appears.
        for l in &layers {
            for d in &l.inputs[..usize::from(l.input_count)] {
                if d.id != 0 {
                    assert_eq!(*d, out(d.id));
                }
            }
        }
    }

    #[test]
    fn conv_and_pool_are_fused_only_over_the_budget() {
        use icefold::format::{Activation, Conv2d, Pool, PoolKind, Span};
        let desc = |id, dims| TensorDesc {
            dims,
            ..tensor(id, 1)
        };
        let (x, conv_out, pooled) = (desc(0, [8, 8, 1]), desc(1, [8, 8, 4]), desc(2, [4, 4, 4]));
        let conv = Op::Conv2d(Conv2d {
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [1, 1, 1, 1],
            groups: 1,
            weights: Span::default(),
            bias: Span::default(),
            pad_values: Span::default(),
            activation: Activation::Relu,
        });
        let pool = Op::Pool(Pool {
            kind: PoolKind::Max,
            kernel: [2, 2],
            stride: [2, 2],
            pad: [0; 4],
            activation: Activation::Identity,
        });
        let unfused = vec![step(conv, &[x], conv_out), step(pool, &[conv_out], pooled)];
        let mut info = ModelInfo {
            layer_count: 2,
            arena_bytes: 0,
            input: x,
            output: pooled,
            input_rank: 3,
            output_rank: 3,
            input_transpose: None,
        };
        replan(&mut info, &mut unfused.clone()).unwrap();
        // 256-byte input and 1,024-byte convolution output live together (written over the
        // input with room for bands of four rows, the output would save nothing: planned apart).
        assert_eq!(info.arena_bytes, 1280);
        let (mut within, mut within_info) = (unfused.clone(), info);
        let fusion = fuse_conv_pool(&mut within_info, &mut within, 1280).unwrap();
        assert!(fusion.fused_convs.is_empty());
        assert_eq!((within, within_info), (unfused.clone(), info));

        let (mut layers, mut fused_info) = (unfused, info);
        let fusion = fuse_conv_pool(&mut fused_info, &mut layers, 1279).unwrap();
        assert_eq!(fusion.fused_convs, [0]);
        assert_eq!(layers.len(), 1);
        let l = &layers[0];
        assert!(matches!(l.op, Op::Conv2dPool(_)));
        assert_eq!((l.inputs[0].id, l.output.id), (0, 2));
        // Input 256 + band of two rows 256 + output 256 bytes.
        let band = l.scratch().unwrap();
        assert_eq!(band.dims, [2, 8, 4]);
        assert_eq!(fused_info.arena_bytes, 768);
        assert_eq!(fusion.arena_bytes, (1280, 768));
        let range = |d: &TensorDesc| (d.offset, d.offset + d.byte_len() as u32);
        let [a, b, c] = [range(&l.inputs[0]), range(&band), range(&l.output)];
        let disjoint = |p: (u32, u32), q: (u32, u32)| p.1 <= q.0 || q.1 <= p.0;
        assert!(disjoint(a, b) && disjoint(b, c) && disjoint(a, c));
        assert_eq!(fused_info.output, l.output);
    }

    fn check_disjoint(lives: &[BufferLife], plan: &ArenaPlan) {
        for i in 0..lives.len() {
            assert!(plan.offsets[i] + lives[i].bytes <= plan.total);
            for j in 0..i {
                if lives[i].overlaps(&lives[j]) {
                    let (a, b) = (plan.offsets[i], plan.offsets[j]);
                    assert!(
                        a + lives[i].bytes <= b || b + lives[j].bytes <= a,
                        "{i} and {j} collide"
                    );
                }
            }
        }
    }
}
