//! Builders for test models and blobs (tests only).

extern crate std;

use std::vec::Vec;

use crate::format::header::field;
use crate::format::*;

/// A 4-aligned byte buffer (backed by u32 words).
pub struct Blob {
    words: Vec<u32>,
    len: usize,
}

impl Blob {
    pub fn zeroed(len: usize) -> Blob {
        Blob {
            words: std::vec![0; len.div_ceil(4) + 1],
            len,
        }
    }
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
    /// Same bytes, one longer (for the length check).
    pub fn with_extra_byte(&self) -> Blob {
        let mut b = Blob::zeroed(self.len + 1);
        b.bytes_mut()[..self.len].copy_from_slice(self.bytes());
        b
    }
}

/// Recomputes the CRC after a test edited the payload, so the edit reaches the deeper checks.
pub fn fix_crc(bytes: &mut [u8]) {
    let crc = CRC.checksum(&bytes[HEADER_LEN..]);
    bytes[field::CRC].copy_from_slice(&crc.to_le_bytes());
}

/// Writes a blob around arbitrary meta bytes (for records `emit` would never produce).
pub fn assemble(meta: &[u8], weights: &[u8]) -> Blob {
    let at = weights_offset(meta.len());
    let mut blob = Blob::zeroed(at + weights.len());
    let b = blob.bytes_mut();
    let header = Header {
        magic: MAGIC,
        version: FORMAT_VERSION,
        flags: 0,
        meta_len: meta.len() as u32,
        weights_len: weights.len() as u32,
        crc: 0,
        reserved: 0,
    };
    b[..HEADER_LEN].copy_from_slice(&header.write());
    b[HEADER_LEN..HEADER_LEN + meta.len()].copy_from_slice(meta);
    b[at..].copy_from_slice(weights);
    fix_crc(b);
    blob
}

pub fn postcard_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = std::vec![0u8; 1024];
    let n = postcard::to_slice(value, &mut buf).unwrap().len();
    buf.truncate(n);
    buf
}

/// `d` as a view at `offset`: channels from `channel` of pixels `pixel_stride` elements apart.
pub fn view(d: TensorDesc, offset: u32, channel: u16, pixel_stride: u16) -> TensorDesc {
    TensorDesc {
        offset,
        view: Some(View {
            channel,
            pixel_stride,
        }),
        ..d
    }
}

pub const fn desc(id: u16, offset: u32, dims: [u16; 3]) -> TensorDesc {
    TensorDesc {
        view: None,
        id,
        offset,
        dims,
        dtype: DType::F32,
        quant: None,
    }
}

pub fn layer(op: Op, input: TensorDesc, output: TensorDesc) -> Layer {
    Layer {
        op,
        inputs: [input, input],
        input_count: 1,
        output,
    }
}

pub fn layer2(op: Op, a: TensorDesc, b: TensorDesc, output: TensorDesc) -> Layer {
    Layer {
        op,
        inputs: [a, b],
        input_count: 2,
        output,
    }
}

/// A model under construction: layers, weights, boundary tensors.
#[derive(Clone)]
pub struct Spec {
    pub info: ModelInfo,
    pub layers: Vec<Layer>,
    pub weights: Vec<u8>,
}

impl Spec {
    pub fn new(arena_bytes: u32, input: TensorDesc, output: TensorDesc) -> Spec {
        let info = ModelInfo {
            layer_count: 0,
            arena_bytes,
            input,
            output,
            input_rank: 3,
            output_rank: 1,
            input_transpose: None,
        };
        Spec {
            info,
            layers: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Appends f32 values to the weights section.
    pub fn f32s(&mut self, values: &[f32]) -> Span {
        let offset = self.weights.len() as u32;
        self.weights
            .extend(values.iter().flat_map(|v| v.to_le_bytes()));
        Span {
            offset,
            len: values.len() as u32 * 4,
        }
    }

    pub fn push(&mut self, layer: Layer) -> &mut Spec {
        self.layers.push(layer);
        self
    }

    pub fn blob(&self) -> Blob {
        let mut info = self.info;
        info.layer_count = self.layers.len() as u16;
        let len = emitted_len(&info, &self.layers, self.weights.len()).unwrap();
        let mut blob = Blob::zeroed(len);
        assert_eq!(
            emit(&info, &self.layers, &self.weights, blob.bytes_mut()),
            Ok(len)
        );
        blob
    }

    /// The f32 values of a span.
    pub fn span_f32(&self, span: Span) -> Vec<f32> {
        self.weights[span.offset as usize..(span.offset + span.len) as usize]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

// Tensors of the `tiny` model. Arena plan (bytes):
//   x   [4,4,2]   0..128   model input, read by L0
//   t1  [4,4,3] 128..320   L0 conv 3x3 pad 1 (pad values), relu
//   t2  [2,2,3]   0..48    L1 max pool 2x2 s2; read by L2 and L4 (residual)
//   t3  [2,2,3]  48..96    L2 affine
//   t4  [2,2,3]  96..144   L3 relu (does not read t2: a clobber test moves it onto t2)
//   t5  [2,2,3] 144..192   L4 add(t2, t4)
//   t6  [3,2,2] 192..240   L5 transpose [2,0,1]
//   t7  [4,3,2]   0..96    L6 pad [1,0,0,1] with 0.5
//   t8  [4,3,2]  96..192   L7 sigmoid
//   t9  [1,1,5]   0..20    L8 dense 24 -> 5
//   t10 [1,1,5]  32..52    L9 softmax, model output
pub const X: TensorDesc = TensorDesc {
    view: None,
    id: 0,
    offset: 0,
    dims: [4, 4, 2],
    dtype: DType::F32,
    quant: None,
};
pub const T1: TensorDesc = TensorDesc {
    view: None,
    id: 1,
    offset: 128,
    dims: [4, 4, 3],
    dtype: DType::F32,
    quant: None,
};
pub const T2: TensorDesc = TensorDesc {
    view: None,
    id: 2,
    offset: 0,
    dims: [2, 2, 3],
    dtype: DType::F32,
    quant: None,
};
pub const T3: TensorDesc = TensorDesc {
    view: None,
    id: 3,
    offset: 48,
    dims: [2, 2, 3],
    dtype: DType::F32,
    quant: None,
};
pub const T4: TensorDesc = TensorDesc {
    view: None,
    id: 4,
    offset: 96,
    dims: [2, 2, 3],
    dtype: DType::F32,
    quant: None,
};
pub const T5: TensorDesc = TensorDesc {
    view: None,
    id: 5,
    offset: 144,
    dims: [2, 2, 3],
    dtype: DType::F32,
    quant: None,
};
pub const T6: TensorDesc = TensorDesc {
    view: None,
    id: 6,
    offset: 192,
    dims: [3, 2, 2],
    dtype: DType::F32,
    quant: None,
};
pub const T7: TensorDesc = TensorDesc {
    view: None,
    id: 7,
    offset: 0,
    dims: [4, 3, 2],
    dtype: DType::F32,
    quant: None,
};
pub const T8: TensorDesc = TensorDesc {
    view: None,
    id: 8,
    offset: 96,
    dims: [4, 3, 2],
    dtype: DType::F32,
    quant: None,
};
pub const T9: TensorDesc = TensorDesc {
    view: None,
    id: 9,
    offset: 0,
    dims: [1, 1, 5],
    dtype: DType::F32,
    quant: None,
};
pub const T10: TensorDesc = TensorDesc {
    view: None,
    id: 10,
    offset: 32,
    dims: [1, 1, 5],
    dtype: DType::F32,
    quant: None,
};

/// A ten-layer model that uses every operation.
pub fn tiny() -> Spec {
    let mut m = Spec::new(320, X, T10);
    let conv = Conv2d {
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [1, 1, 1, 1],
        groups: 1,
        weights: m.f32s(&values(3 * 3 * 3 * 2, 1)),
        bias: m.f32s(&[0.1, -0.2, 0.3]),
        pad_values: m.f32s(&[0.25, -0.5]),
        activation: Activation::Relu,
    };
    let pool = Pool {
        kind: PoolKind::Max,
        kernel: [2, 2],
        stride: [2, 2],
        pad: [0; 4],
        activation: Activation::Identity,
    };
    let affine = Affine {
        scale: m.f32s(&[1.5, -1.0, 0.5]),
        shift: m.f32s(&[0.0, 0.25, -0.25]),
        activation: Activation::Identity,
    };
    let dense = Dense {
        weights: m.f32s(&values(5 * 24, 2)),
        bias: m.f32s(&values(5, 3)),
        activation: Activation::LeakyRelu { alpha: 0.1 },
    };
    m.push(layer(Op::Conv2d(conv), X, T1))
        .push(layer(Op::Pool(pool), T1, T2))
        .push(layer(Op::Affine(affine), T2, T3))
        .push(layer(Op::Activation(Activation::Relu), T3, T4))
        .push(layer2(
            Op::Add {
                activation: Activation::Clip { lo: -1.0, hi: 1.0 },
            },
            T2,
            T4,
            T5,
        ))
        .push(layer(Op::Transpose(Transpose { perm: [2, 0, 1] }), T5, T6))
        .push(layer(
            Op::Pad(Pad {
                pad: [1, 0, 0, 1],
                interior: [0, 0],
                value: 0.5,
            }),
            T6,
            T7,
        ))
        .push(layer(Op::Activation(Activation::Sigmoid), T7, T8))
        .push(layer(Op::Dense(dense), T8, T9))
        .push(layer(Op::Softmax, T9, T10));
    m
}
