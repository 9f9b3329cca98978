//! ONNX export of a trained [`Net`](super::Net) in inference form, written with `onnx-rs`'s
//! encoder: opset 13, real `BatchNormalization` nodes (one output, no `training_mode`) carrying
//! the running mean and variance, epsilon and momentum, so that `icefold diagnose` can check the
//! statistics, `icefold convert` folds them, and other tools (onnxruntime, netron) read the file.
//!
//! Graph: `input [N, C, L]` → (Conv → BatchNormalization → Relu [→ MaxPool]) ×3 →
//! GlobalAveragePool → Flatten → Gemm → `logits [N, classes]`. The batch axis is symbolic.

use std::path::Path;

use anyhow::Result;
use onnx_rs::ast::{
    Attribute, AttributeType, DataType, Dimension, Graph, Model, Node, OpType, OperatorSetId,
    TensorProto, TensorShape, TensorShapeDimension, TensorTypeProto, TypeProto, TypeValue,
    ValueInfo,
};

use super::net::{NetParams, BN_MOMENTUM};
use crate::io;

/// ONNX opset of the exported file (BatchNormalization-9 semantics in inference form; every op
/// used here is unchanged between 13 and 17).
pub const OPSET: i64 = 13;
/// Name of the graph input.
pub const INPUT_NAME: &str = "input";
/// Name of the graph output.
pub const OUTPUT_NAME: &str = "logits";

/// Which BN statistics the exported file carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistics {
    /// The running statistics collected while training (the correct model).
    Running,
    /// Running mean 0 and variance 1 with the trained weights: the file a training pipeline
    /// writes when BN's update ops never ran (TensorFlow's `UPDATE_OPS`), the seed's bug.
    NeverUpdated,
}

/// The ONNX node names of block `i` (1-based), for messages and tests.
pub fn block_node_names(i: usize) -> [String; 4] {
    [
        format!("conv{i}"),
        format!("bn{i}"),
        format!("relu{i}"),
        format!("pool{i}"),
    ]
}

fn attr_ints(name: &'static str, ints: Vec<i64>) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Ints,
        ints,
        ..Default::default()
    }
}

fn attr_int(name: &'static str, i: i64) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Int,
        i,
        ..Default::default()
    }
}

fn attr_float(name: &'static str, f: f32) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Float,
        f,
        ..Default::default()
    }
}

fn node<'a>(
    op: &'a str,
    name: &'a str,
    input: Vec<&'a str>,
    output: &'a str,
    attribute: Vec<Attribute<'a>>,
) -> Node<'a> {
    Node {
        op_type: OpType::from(op),
        name,
        input,
        output: vec![output],
        attribute,
        ..Default::default()
    }
}

/// A float tensor value with a symbolic batch axis followed by `dims`.
fn batched_value<'a>(name: &'a str, dims: &[usize]) -> ValueInfo<'a> {
    let mut dim = vec![TensorShapeDimension {
        value: Dimension::Param("N"),
        denotation: "",
    }];
    dim.extend(dims.iter().map(|&d| TensorShapeDimension {
        value: Dimension::Value(d as i64),
        denotation: "",
    }));
    ValueInfo {
        name,
        r#type: Some(TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type: DataType::Float,
                shape: Some(TensorShape { dim }),
            })),
            denotation: "",
        }),
        ..Default::default()
    }
}

/// Tensor and value names of one block, owned so the borrowed ONNX structs can point into them.
struct BlockNames {
    nodes: [String; 4],
    weight: String,
    gamma: String,
    beta: String,
    mean: String,
    var: String,
    outs: [String; 4],
}

impl BlockNames {
    fn new(i: usize) -> Self {
        let nodes = block_node_names(i);
        let outs = nodes.clone().map(|n| format!("{n}_out"));
        BlockNames {
            weight: format!("conv{i}.weight"),
            gamma: format!("bn{i}.weight"),
            beta: format!("bn{i}.bias"),
            mean: format!("bn{i}.running_mean"),
            var: format!("bn{i}.running_var"),
            nodes,
            outs,
        }
    }
}

/// The network as ONNX bytes with BN statistics chosen by `stats`.
pub fn onnx_bytes(p: &NetParams, stats: Statistics) -> Vec<u8> {
    let names: Vec<BlockNames> = (1..=p.blocks.len()).map(BlockNames::new).collect();
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut x: &str = INPUT_NAME;
    for (b, n) in p.blocks.iter().zip(&names) {
        let c = b.out_channels;
        let (mean, var) = match stats {
            Statistics::Running => (b.running_mean.clone(), b.running_var.clone()),
            Statistics::NeverUpdated => (vec![0.0; c], vec![1.0; c]),
        };
        inits.push(TensorProto::from_f32(
            &n.weight,
            vec![c as i64, b.in_channels as i64, b.kernel as i64],
            b.weight.clone(),
        ));
        inits.push(TensorProto::from_f32(
            &n.gamma,
            vec![c as i64],
            b.gamma.clone(),
        ));
        inits.push(TensorProto::from_f32(
            &n.beta,
            vec![c as i64],
            b.beta.clone(),
        ));
        inits.push(TensorProto::from_f32(&n.mean, vec![c as i64], mean));
        inits.push(TensorProto::from_f32(&n.var, vec![c as i64], var));
        let pad = b.padding as i64;
        nodes.push(node(
            "Conv",
            &n.nodes[0],
            vec![x, &n.weight],
            &n.outs[0],
            vec![
                attr_ints("kernel_shape", vec![b.kernel as i64]),
                attr_ints("pads", vec![pad, pad]),
                attr_ints("strides", vec![1]),
                attr_ints("dilations", vec![1]),
                attr_int("group", 1),
            ],
        ));
        nodes.push(node(
            "BatchNormalization",
            &n.nodes[1],
            vec![&n.outs[0], &n.gamma, &n.beta, &n.mean, &n.var],
            &n.outs[1],
            vec![
                attr_float("epsilon", b.eps as f32),
                // ONNX weights the old running value by `momentum`: PyTorch's 0.1 is ONNX's 0.9.
                attr_float("momentum", (1.0 - BN_MOMENTUM) as f32),
            ],
        ));
        nodes.push(node(
            "Relu",
            &n.nodes[2],
            vec![&n.outs[1]],
            &n.outs[2],
            vec![],
        ));
        x = &n.outs[2];
        if b.pool {
            nodes.push(node(
                "MaxPool",
                &n.nodes[3],
                vec![x],
                &n.outs[3],
                vec![
                    attr_ints("kernel_shape", vec![2]),
                    attr_ints("strides", vec![2]),
                ],
            ));
            x = &n.outs[3];
        }
    }
    let width = p
        .blocks
        .last()
        .map_or(p.shape.in_channels, |b| b.out_channels);
    let classes = p.shape.classes;
    nodes.push(node("GlobalAveragePool", "gap", vec![x], "gap_out", vec![]));
    nodes.push(node(
        "Flatten",
        "flatten",
        vec!["gap_out"],
        "flatten_out",
        vec![attr_int("axis", 1)],
    ));
    inits.push(TensorProto::from_f32(
        "fc.weight",
        vec![classes as i64, width as i64],
        p.fc_weight.clone(),
    ));
    inits.push(TensorProto::from_f32(
        "fc.bias",
        vec![classes as i64],
        p.fc_bias.clone(),
    ));
    nodes.push(node(
        "Gemm",
        "fc",
        vec!["flatten_out", "fc.weight", "fc.bias"],
        OUTPUT_NAME,
        vec![attr_int("transB", 1)],
    ));

    let doc = match stats {
        Statistics::Running => "icefold train: conv+BN gesture classifier (running BN statistics)",
        Statistics::NeverUpdated => {
            "icefold train: conv+BN gesture classifier with NEVER-UPDATED BN statistics \
             (mean 0, var 1), written on purpose to reproduce a broken export"
        }
    };
    let model = Model {
        ir_version: 8,
        opset_import: vec![OperatorSetId {
            domain: "",
            version: OPSET,
        }],
        producer_name: "icefold-train",
        producer_version: env!("CARGO_PKG_VERSION"),
        doc_string: doc,
        graph: Some(Graph {
            name: "icefold_train",
            node: nodes,
            initializer: inits,
            input: vec![batched_value(
                INPUT_NAME,
                &[p.shape.in_channels, p.shape.length],
            )],
            output: vec![batched_value(OUTPUT_NAME, &[classes])],
            ..Default::default()
        }),
        ..Default::default()
    };
    onnx_rs::encode(&model)
}

/// Writes the network as ONNX atomically, never over one of `inputs`.
pub fn write_onnx(path: &Path, p: &NetParams, stats: Statistics, inputs: &[&Path]) -> Result<()> {
    io::write_atomic(path, &onnx_bytes(p, stats), inputs)
}
