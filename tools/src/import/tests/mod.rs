//! Unit tests: small models built with `onnx_rs`'s encoder, one concern per test, plus a walk
//! over the committed PyTorch fixtures.

use std::path::{Path, PathBuf};

use onnx_rs::ast::{
    Attribute, AttributeType, DataLocation, DataType, Dimension, Graph as OGraph, Model,
    Node as ONode, OpType, OperatorSetId, StringStringEntry, TensorProto, TensorShape,
    TensorShapeDimension, TensorTypeProto, TypeProto, TypeValue, ValueInfo,
};

use super::{import, import_bytes, import_file};
use crate::ir::graph::{Activation, FrozenOp, ImportedGraph, Op, PoolKind};

mod activations_pooling;
mod bias_scale;
mod concat_split;
mod conv_batchnorm;
mod dense;
mod elementwise_layout;
mod fixtures;
mod gating;
mod int8;
mod keras;
mod malformed;
mod same_padding;
mod structure;

// ---- builders ----

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn attr_i(name: &'static str, i: i64) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Int,
        i,
        ..Default::default()
    }
}
fn attr_is(name: &'static str, ints: &[i64]) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Ints,
        ints: ints.to_vec(),
        ..Default::default()
    }
}
fn attr_f(name: &'static str, f: f32) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Float,
        f,
        ..Default::default()
    }
}
fn attr_s(name: &'static str, s: &'static str) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::String,
        s: s.as_bytes(),
        ..Default::default()
    }
}
fn attr_t(name: &'static str, t: TensorProto<'static>) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Tensor,
        t: Some(t),
        ..Default::default()
    }
}

fn node(
    op: &'static str,
    name: &'static str,
    input: &[&'static str],
    output: &[&'static str],
    attribute: Vec<Attribute<'static>>,
) -> ONode<'static> {
    ONode {
        op_type: OpType::from(op),
        name,
        input: input.to_vec(),
        output: output.to_vec(),
        attribute,
        ..Default::default()
    }
}

fn f32t(name: &'static str, dims: &[i64], data: Vec<f32>) -> TensorProto<'static> {
    TensorProto::from_f32(name, dims.to_vec(), data)
}
fn i64t(name: &'static str, dims: &[i64], data: Vec<i64>) -> TensorProto<'static> {
    TensorProto::from_i64(name, dims.to_vec(), data)
}
/// A float tensor filled with `0.1, 0.2, ...` (distinct, finite values).
fn ramp(name: &'static str, dims: &[i64]) -> TensorProto<'static> {
    let n: i64 = dims.iter().product();
    f32t(name, dims, (0..n).map(|i| 0.1 * (i + 1) as f32).collect())
}

/// A float32 value info; `-1` is the symbolic batch.
fn value_info(name: &'static str, dims: &[i64], elem_type: DataType) -> ValueInfo<'static> {
    let dim = dims
        .iter()
        .map(|&d| TensorShapeDimension {
            value: if d < 0 {
                Dimension::Param("N")
            } else {
                Dimension::Value(d)
            },
            denotation: "",
        })
        .collect();
    ValueInfo {
        name,
        r#type: Some(TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type,
                shape: Some(TensorShape { dim }),
            })),
            denotation: "",
        }),
        ..Default::default()
    }
}

/// A model with input "x" of `input_dims` (batch -1) and output "y".
struct Builder {
    opset: i64,
    input: Vec<i64>,
    nodes: Vec<ONode<'static>>,
    inits: Vec<TensorProto<'static>>,
    extra_inputs: Vec<ValueInfo<'static>>,
    outputs: Vec<&'static str>,
}

impl Builder {
    fn new(opset: i64, input: &[i64]) -> Self {
        Builder {
            opset,
            input: input.to_vec(),
            nodes: vec![],
            inits: vec![],
            extra_inputs: vec![],
            outputs: vec!["y"],
        }
    }
    fn node(mut self, n: ONode<'static>) -> Self {
        self.nodes.push(n);
        self
    }
    fn init(mut self, t: TensorProto<'static>) -> Self {
        self.inits.push(t);
        self
    }
    fn model(&self) -> Model<'static> {
        let mut input = vec![value_info("x", &self.input, DataType::Float)];
        input.extend(self.extra_inputs.iter().cloned());
        Model {
            ir_version: 8,
            opset_import: vec![OperatorSetId {
                domain: "",
                version: self.opset,
            }],
            graph: Some(OGraph {
                name: "test",
                node: self.nodes.clone(),
                initializer: self.inits.clone(),
                input,
                output: self
                    .outputs
                    .iter()
                    .map(|&o| value_info(o, &[], DataType::Float))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    fn bytes(&self) -> Vec<u8> {
        onnx_rs::encode(&self.model())
    }
    fn import(&self) -> anyhow::Result<ImportedGraph> {
        import(&self.bytes(), None)
    }
    fn ok(&self) -> ImportedGraph {
        match self.import() {
            Ok(g) => g,
            Err(e) => panic!("import failed: {e:#}"),
        }
    }
    fn err(&self) -> String {
        match self.import() {
            Ok(g) => panic!("import unexpectedly succeeded: {g:?}"),
            Err(e) => format!("{e:#}"),
        }
    }
}

fn frozen(g: &ImportedGraph, k: usize) -> &FrozenOp {
    match &g.nodes[k].op {
        Op::Frozen(f) => f,
        other => panic!("node {k} is {other:?}"),
    }
}
fn out_shape(g: &ImportedGraph) -> Vec<usize> {
    g.values[g.output].shape.clone()
}
fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}:\n{msg}");
    }
}

/// `b` with BatchNormalization parameters for `c` channels.
fn bn_params(b: Builder, c: i64) -> Builder {
    b.init(ramp("g", &[c]))
        .init(ramp("be", &[c]))
        .init(ramp("m", &[c]))
        .init(ramp("v", &[c]))
}
