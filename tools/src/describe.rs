//! One description of each runtime op, shared by the reports: `icefold inspect` prints it with
//! the op's weight bytes, `icefold mcu` with its measured cost.

use icefold::format::{Op, PoolKind};

/// Short name of a runtime op (`Conv2d i8 3x3/1 g1`, `MaxPool 2x2/2`), as `icefold inspect` and
/// `icefold mcu` print it.
pub fn op_name(op: &Op) -> String {
    describe(op).0
}

/// Short name of a runtime op and the weight bytes it references.
pub fn describe(op: &Op) -> (String, usize) {
    match op {
        Op::Conv2d(c) => (
            format!(
                "Conv2d {}x{}/{} g{}",
                c.kernel[0],
                c.kernel[1],
                c.stride[1].max(c.stride[0]),
                c.groups
            ),
            (c.weights.len + c.bias.len + c.pad_values.len) as usize,
        ),
        Op::Dense(d) => ("Dense".into(), (d.weights.len + d.bias.len) as usize),
        Op::Pool(p) => (
            format!(
                "{}Pool {}x{}/{}",
                if p.kind == PoolKind::Max {
                    "Max"
                } else {
                    "Avg"
                },
                p.kernel[0],
                p.kernel[1],
                p.stride[1]
            ),
            0,
        ),
        Op::Add { .. } => ("Add".into(), 0),
        Op::Affine(a) => ("Affine".into(), (a.scale.len + a.shift.len) as usize),
        Op::Activation(a) => (format!("{a:?}"), 0),
        Op::Softmax => ("Softmax".into(), 0),
        Op::Transpose(t) => (format!("Transpose {:?}", t.perm), 0),
        Op::Pad(p) => (pad_name("", p.pad, p.interior), 0),
        Op::Conv2dI8(q) => quantized_conv("i8", &q.conv, &q.requant),
        Op::Conv2dI16(q) => quantized_conv("16x8", &q.conv, &q.requant),
        Op::DenseI8(d) => (
            format!("Dense i8{}", dense_layout(d.layout)),
            (d.weights.len + d.bias.len + d.requant.multipliers.len + d.requant.shifts.len)
                as usize,
        ),
        Op::DenseI8Wide(d) => (
            format!("Dense i8→i16{}", dense_layout(d.layout)),
            (d.weights.len + d.bias.len + d.requant.multipliers.len + d.requant.shifts.len)
                as usize,
        ),
        Op::SoftmaxI16 { exp_hi, exp_lo } => {
            ("Softmax i16".into(), (exp_hi.len + exp_lo.len) as usize)
        }
        Op::PoolI8(p) => (
            format!(
                "{}Pool i8 {}x{}/{}",
                if p.pool.kind == PoolKind::Max {
                    "Max"
                } else {
                    "Avg"
                },
                p.pool.kernel[0],
                p.pool.kernel[1],
                p.pool.stride[1]
            ),
            0,
        ),
        Op::AddI8(_) => ("Add i8".into(), 0),
        Op::AffineI8(a) => (
            "Affine i8".into(),
            (a.scale.len + a.offset.len + a.requant.multipliers.len + a.requant.shifts.len)
                as usize,
        ),
        Op::ClampI8(c) => (format!("Clamp i8 [{}, {}]", c.min, c.max), 0),
        Op::LookupI8 { table } => ("Lookup i8 (256)".into(), table.len as usize),
        Op::SoftmaxI8 { exp_table } => ("Softmax i8".into(), exp_table.len as usize),
        Op::PadI8 { pad, interior, .. } => (pad_name(" i8", *pad, *interior), 0),
        Op::Concat(c) => (format!("Concat axis {}", c.axis), 0),
        Op::ConcatI8(c) => (
            format!(
                "Concat i8 axis {} (rescaled inputs: {})",
                c.axis,
                c.rescale.iter().filter(|r| r.is_some()).count()
            ),
            0,
        ),
        Op::Slice(s) => (
            format!("Slice axis {} from {} step {}", s.axis, s.start, s.step),
            0,
        ),
        Op::Gather(g) => (
            format!("Gather axis {} ({} indices)", g.axis, g.indices.len / 2),
            g.indices.len as usize / 2,
        ),
        Op::Mul { .. } => ("Mul".into(), 0),
        Op::MulI8(_) => ("Mul i8".into(), 0),
        Op::PRelu { slope } => ("PReLU per channel".into(), slope.len as usize),
        Op::PReluI8(p) => (
            "PReLU i8 per channel".into(),
            (p.negative.multipliers.len + p.negative.shifts.len) as usize,
        ),
        Op::Conv2dPool(f) => fused(
            describe(&Op::Conv2d(f.conv)),
            describe(&Op::Pool(f.pool)),
            f.band.rows,
        ),
        Op::Conv2dPoolI8(f) => fused(
            describe(&Op::Conv2dI8(f.conv)),
            describe(&Op::PoolI8(f.pool)),
            f.band.rows,
        ),
        Op::Conv2dPoolI16(f) => fused(
            describe(&Op::Conv2dI16(f.conv)),
            describe(&Op::PoolI8(f.pool)),
            f.band.rows,
        ),
        #[allow(unreachable_patterns)]
        _ => ("(unknown op)".into(), 0),
    }
}

/// A fused convolution and pooling: both names, and the band's rows of convolution output.
fn fused((conv, bytes): (String, usize), (pool, _): (String, usize), rows: u16) -> (String, usize) {
    (format!("{conv} + {pool} (fused, band {rows} rows)"), bytes)
}

/// Kind and weight bytes of an integer convolution record (`precision`: "i8" or "16x8").
fn quantized_conv(
    precision: &str,
    c: &icefold::format::Conv2d,
    requant: &icefold::format::ChannelRequant,
) -> (String, usize) {
    (
        format!(
            "Conv2d {precision} {}x{}/{} g{}",
            c.kernel[0],
            c.kernel[1],
            c.stride[1].max(c.stride[0]),
            c.groups
        ),
        (c.weights.len
            + c.bias.len
            + c.pad_values.len
            + requant.multipliers.len
            + requant.shifts.len) as usize,
    )
}

/// "Pad [t, l, b, r]", plus the zero insertion of a transposed convolution when there is one.
fn pad_name(precision: &str, pad: [u16; 4], interior: [u16; 2]) -> String {
    if interior == [0, 0] {
        format!("Pad{precision} {pad:?}")
    } else {
        format!("Pad{precision} {pad:?} interior {interior:?}")
    }
}

/// The suffix naming a dense layer's weight layout where it is not int8 rows.
fn dense_layout(layout: icefold::format::DenseLayout) -> &'static str {
    match layout {
        icefold::format::DenseLayout::RowsI8 => "",
        icefold::format::DenseLayout::QuadsI16 => ", int16 weights",
        icefold::format::DenseLayout::PairsI8 => ", weights in row pairs",
    }
}
