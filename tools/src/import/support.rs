//! The up-front check: which needed nodes icefold cannot import, and which BatchNormalization
//! nodes were exported in training mode. Both are collected over the whole graph so that one
//! error lists every problem, instead of making the user fix and re-run one node at a time.

use std::collections::HashSet;

use anyhow::{anyhow, Result};
use onnx_rs::ast::{Node, OpType};

use super::attr::Attrs;
use super::order::origin;

/// Ops that may read activations (lowered to IR nodes).
const ACTIVATION_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "PRelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Transpose",
    "Pad",
    "Softmax",
    "Shape",
    "Concat",
    "Slice",
    "Split",
];

/// Ops evaluated at import when every input is a constant (shape arithmetic).
const CONSTANT_OPS: &[&str] = &[
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Cast",
    "ConstantOfShape",
    "Reshape",
    "Transpose",
    "Identity",
    "Flatten",
    "Dropout",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sqrt",
    "Neg",
    "Ceil",
    "Floor",
    "Clip",
];

/// Ops where only input 0 may be an activation; the others are weights or parameters.
const FIRST_INPUT_ONLY: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Gemm",
    "MatMul",
    "Clip",
    "PRelu",
    "Pad",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "ReduceMean",
    "Dropout",
    "Slice",
    "Split",
];

/// Checks the needed nodes (in order) and returns one error describing every unsupported node and
/// every training-mode BatchNormalization, or `Ok` if there is none.
pub(super) fn check(nodes: &[Node<'_>], order: &[usize], input: &str) -> Result<()> {
    // Which values depend on the graph input (activations); Shape cuts the dependency because
    // per-sample shapes are static.
    let mut activations: HashSet<&str> = HashSet::from([input]);
    let mut unsupported = Vec::new();
    let mut training = Vec::new();
    for &i in order {
        let node = &nodes[i];
        let reads: Vec<bool> = node
            .input
            .iter()
            .map(|n| !n.is_empty() && activations.contains(n))
            .collect();
        if reads.iter().any(|&a| a) && node.op_type != OpType::Shape {
            activations.extend(node.output.iter().copied().filter(|n| !n.is_empty()));
        }
        if let Some(reason) = unsupported_reason(node, &reads) {
            let at = format!("{} at position {i}", origin(node, i));
            unsupported.push(if reason.is_empty() {
                at
            } else {
                format!("{at}: {reason}")
            });
        }
        if node.op_type == OpType::BatchNormalization {
            if let Some(why) = training_mode(node) {
                training.push(format!("{} at position {i} ({why})", origin(node, i)));
            }
        }
    }
    let mut parts = Vec::new();
    if !unsupported.is_empty() {
        parts.push(format!(
            "{} node(s) use operators icefold cannot import:\n  - {}\n(supported: {}; and constant shape \
             arithmetic: {})",
            unsupported.len(),
            unsupported.join("\n  - "),
            ACTIVATION_OPS.join(", "),
            CONSTANT_OPS.join(", "),
        ));
    }
    if !training.is_empty() {
        parts.push(format!(
            "{} BatchNormalization node(s) were exported in training mode:\n  - {}\nIn training mode BN \
             normalizes with the statistics of the current batch (results depend on what else is in the \
             batch; a batch of one is garbage), and icefold folds the frozen running statistics instead. \
             Fix: export the model in eval mode. PyTorch: call `model.eval()` and then \
             `torch.onnx.export(model, ..., training=torch.onnx.TrainingMode.EVAL)` (or \
             TrainingMode.PRESERVE on a model in eval() mode). Keras/TensorFlow: call the model with \
             `training=False` when tracing or converting it (e.g. for tf2onnx).",
            training.len(),
            training.join("\n  - "),
        ));
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", parts.join("\n")))
    }
}

/// Why a node cannot be imported (empty string: the op itself is unsupported), or `None`.
fn unsupported_reason(node: &Node<'_>, reads: &[bool]) -> Option<String> {
    if !matches!(node.domain, "" | "ai.onnx") {
        return Some(format!(
            "operator domain {:?} is not supported (only the default ONNX domain)",
            node.domain
        ));
    }
    let op = node.op_type.as_str();
    let any_activation = reads.iter().any(|&a| a);
    if !any_activation {
        return (!CONSTANT_OPS.contains(&op)).then(|| {
            if ACTIVATION_OPS.contains(&op) {
                "all of its inputs are constants; icefold evaluates only shape arithmetic at import"
                    .to_string()
            } else {
                String::new()
            }
        });
    }
    if !ACTIVATION_OPS.contains(&op) {
        return Some(if CONSTANT_OPS.contains(&op) {
            "supported only on constants (shape arithmetic), but here it reads an activation"
                .to_string()
        } else {
            String::new()
        });
    }
    if FIRST_INPUT_ONLY.contains(&op) && reads.iter().skip(1).any(|&a| a) {
        return Some(
            "only input 0 may be an activation; weights and parameters must be initializers or constants"
                .to_string(),
        );
    }
    if matches!(op, "Sub" | "Div") && reads.iter().filter(|&&a| a).count() > 1 {
        return Some(format!(
            "{op} of two activations is not supported (only Add and Mul combine activations); \
             rewrite it in the model (a - b as a + (-1 * b)) or keep it outside the exported graph"
        ));
    }
    None
}

/// Why a BatchNormalization node is in training mode, or `None` for the inference form.
fn training_mode(node: &Node<'_>) -> Option<String> {
    if Attrs::new(node).int("training_mode", 0).unwrap_or(0) != 0 {
        return Some("training_mode=1".to_string());
    }
    // Before opset 14 the training form is recognised by its extra outputs (running and saved
    // mean/variance); the inference form has only Y.
    let outputs = node.output.iter().filter(|n| !n.is_empty()).count();
    (outputs > 1)
        .then(|| format!("{outputs} outputs: the running/saved statistics of training mode"))
}
