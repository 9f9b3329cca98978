//! ONNX import: an `.onnx` file becomes a [`graph::ImportedGraph`](crate::ir::graph::ImportedGraph).
//!
//! The file is parsed by `onnx-rs` (no hand-decoded protobuf), then:
//! 1. `order`: the nodes the graph output needs are found and sorted topologically (cycles,
//!    dangling inputs and values defined twice are errors; unused nodes are dropped);
//! 2. `support`: every unsupported node and every training-mode BatchNormalization is collected
//!    into one error, so a user sees all problems of a model at once;
//! 3. `nodes`: node by node, constants (initializers, `Constant`, and the shape arithmetic around
//!    `Reshape`, evaluated by `constants` with the batch taken as 1) are resolved, and activation ops
//!    become IR nodes with per-sample shapes, validated against their weights.
//!
//! Supported: default-domain opsets 11..=23; one float32 input whose first axis is the batch
//! (symbolic or fixed) and whose other axes are static; one output. Errors name the node:
//! `node "conv3" (Conv): ...`. Nothing in here panics on malformed files.

mod activations;
mod attr;
mod constants;
mod global_pool;
mod nodes;
mod order;
mod rounding;
mod spatial;
mod support;
mod tensor;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Result};
use onnx_rs::ast::{DataType, Dimension, Model, ValueInfo};

use crate::ir::graph::{Graph, ImportedGraph, Node, Op, Value, ValueId};
use nodes::{NodeImporter, Val};
use tensor::ExternalFiles;

/// Opsets of the default ONNX domain that import accepts. 19 and 20 (the PyTorch dynamo
/// exporter's default) changed nothing the supported ops rely on: AveragePool gained
/// `dilations` (only 1 is accepted), Pad a `wrap` mode (only `constant` is), the rest only types.
/// 21 to 23 (onnx 1.16 to 1.18) changed only element types of the supported ops (checked with
/// `onnx.defs` schema by schema: bfloat16 for Conv, the pools, HardSigmoid, HardSwish, Dropout;
/// int4, float8 and float4 for Reshape, Transpose, Pad, Shape, Constant, Cast and the other layout
/// ops), which import refuses by name where it meets them. 24 changed `Cast` and others again.
pub const SUPPORTED_OPSETS: RangeInclusive<i64> = 11..=23;

/// Stack for the import thread, per byte of model file. `onnx-rs` parses nested messages
/// recursively (about 700 bytes of stack per level, at least ~9 file bytes per level in a large
/// file), so a hostile file of deeply nested messages needs a deep stack. The reservation is
/// virtual memory, committed only as far as a file actually nests.
const IMPORT_STACK_PER_FILE_BYTE: usize = 128;
/// Stack for the import thread independent of the file size; also the smallest we settle for
/// when the OS refuses a larger reservation.
const IMPORT_STACK_BASE: usize = 64 << 20;
/// Upper bound of the stack reservation.
const IMPORT_STACK_MAX: usize = 16 << 30;

/// Imports an ONNX model file. External tensor data (`location`, `offset`, `length`; PyTorch
/// writes `<model>.onnx.data`) is read relative to the model's directory.
pub fn import_file(path: &Path) -> Result<ImportedGraph> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow!("cannot read the ONNX model {}: {e}", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    import_bytes(&bytes, Some(dir)).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// Imports an ONNX model from memory. `base_dir` is where external tensor data files are looked
/// up; with `None`, a model with external data is an error.
pub fn import_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<ImportedGraph> {
    if bytes.is_empty() {
        bail!("the file is empty (0 bytes): an interrupted download or export? export the model again");
    }
    let mut stack = IMPORT_STACK_BASE
        .saturating_add(bytes.len().saturating_mul(IMPORT_STACK_PER_FILE_BYTE))
        .min(IMPORT_STACK_MAX);
    std::thread::scope(|scope| {
        let worker = loop {
            let spawned = std::thread::Builder::new()
                .name("onnx-import".into())
                .stack_size(stack)
                .spawn_scoped(scope, || import(bytes, base_dir));
            match spawned {
                Ok(worker) => break worker,
                // The OS may refuse a large reservation (overcommit limits): take what it gives.
                Err(_) if stack > IMPORT_STACK_BASE => stack /= 2,
                Err(e) => bail!("cannot start the import thread: {e}"),
            }
        };
        worker.join().unwrap_or_else(|_| {
            Err(anyhow!(
                "internal error: the ONNX importer panicked on this model; please report it"
            ))
        })
    })
}

fn import(bytes: &[u8], base_dir: Option<&Path>) -> Result<ImportedGraph> {
    let model = onnx_rs::parse(bytes).map_err(|e| {
        anyhow!("not a readable ONNX model ({e}); is the file a complete .onnx export (not truncated, not another format)?")
    })?;
    let opset = default_opset(&model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the ONNX model contains no graph"))?;

    let mut initializers = HashSet::new();
    for t in &graph.initializer {
        ensure!(
            initializers.insert(t.name()),
            "initializer {:?} is defined twice",
            t.name()
        );
    }
    // keep_initializers_as_inputs lists the weights as graph inputs too; they are not inputs.
    let inputs: Vec<&ValueInfo<'_>> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name).collect();
        bail!(
            "the model has {} inputs {names:?}; icefold supports exactly one",
            names.len()
        );
    };
    let [output] = graph.output.as_slice() else {
        let names: Vec<&str> = graph.output.iter().map(|o| o.name).collect();
        bail!(
            "the model has {} outputs {names:?}; icefold supports exactly one",
            names.len()
        );
    };
    let (input_value, fixed_batch) = input_value(input)?;

    let mut sources = initializers.clone();
    sources.insert(input.name);
    let order = order::needed_in_order(&graph.node, &sources, output.name)?;
    support::check(&graph.node, &order, input.name)?;

    let mut readers: HashMap<String, usize> = HashMap::new();
    for &i in &order {
        for &name in graph.node[i].input.iter().filter(|n| !n.is_empty()) {
            *readers.entry(name.to_string()).or_default() += 1;
        }
    }
    *readers.entry(output.name.to_string()).or_default() += 1;

    let mut ext = ExternalFiles::new(base_dir);
    let mut weights = Vec::new();
    for t in graph
        .initializer
        .iter()
        .filter(|t| readers.contains_key(t.name()))
    {
        let c = tensor::decode(t, &mut ext)
            .map_err(|e| anyhow!("initializer {:?}: {e:#}", t.name()))?;
        weights.push((t.name().to_string(), c));
    }
    let mut importer = NodeImporter::new(input_value, &mut ext, opset, fixed_batch, readers);
    for (name, c) in weights {
        importer.env.insert(name, Val::Const(c));
    }
    for &i in &order {
        let origin = order::origin(&graph.node[i], i);
        importer
            .import_node(&graph.node[i], &origin)
            .map_err(|e| anyhow!("{origin}: {e:#}"))?;
    }
    let out = match importer.env.get(output.name) {
        Some(Val::Act(v)) => *v,
        Some(Val::Const(_)) => bail!(
            "the graph output {:?} is a constant; it does not depend on the input",
            output.name
        ),
        None => bail!("the graph output {:?} is not produced", output.name),
    };
    Ok(prune(importer.values, importer.nodes, out, opset))
}

/// Version of the default-domain opset, checked against [`SUPPORTED_OPSETS`].
fn default_opset(model: &Model<'_>) -> Result<i64> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain, "" | "ai.onnx"))
        .map(|o| o.version)
        .ok_or_else(|| anyhow!("the model imports no opset of the default ONNX domain"))?;
    ensure!(
        SUPPORTED_OPSETS.contains(&opset),
        "opset {opset} is not supported (supported: {}..={}); re-export with e.g. \
         `torch.onnx.export(..., opset_version=17)`, or convert the file with \
         `onnx.version_converter.convert_version(model, 17)`",
        SUPPORTED_OPSETS.start(),
        SUPPORTED_OPSETS.end()
    );
    Ok(opset)
}

/// The graph input as an IR value (float32, batch first, static per-sample shape), and the
/// batch size if the file fixes it.
fn input_value(vi: &ValueInfo<'_>) -> Result<(Value, Option<i64>)> {
    let name = vi.name;
    match vi.tensor_elem_type() {
        Some(DataType::Float) => {}
        Some(other) => {
            bail!("the input {name:?} has element type {other:?}; icefold needs float32")
        }
        None => bail!("the input {name:?} is not a typed tensor; icefold needs a float32 tensor"),
    }
    let dims = &vi
        .tensor_shape()
        .ok_or_else(|| anyhow!("the input {name:?} has no shape"))?
        .dim;
    ensure!(
        dims.len() >= 2,
        "the input {name:?} has rank {}; icefold needs a batch axis followed by at least one feature axis",
        dims.len()
    );
    let shape = dims[1..]
        .iter()
        .enumerate()
        .map(|(k, d)| match d.value {
            Dimension::Value(v) if v > 0 => usize::try_from(v).map_err(|_| anyhow!("bad dimension {v}")),
            _ => bail!(
                "axis {} of the input {name:?} is not a fixed size ({:?}); only the batch (axis 0) may be \
                 dynamic: export with a fixed input size (dynamic_axes only for the batch)",
                k + 1,
                d.value
            ),
        })
        .collect::<Result<Vec<_>>>()?;
    tensor::element_count(&shape, 1 << 28)?;
    let fixed_batch = match dims[0].value {
        Dimension::Value(b) if b > 1 => Some(b),
        _ => None,
    };
    let value = Value {
        name: name.to_string(),
        shape,
    };
    Ok((value, fixed_batch))
}

/// Keeps the nodes the output depends on and renumbers the values densely.
fn prune(values: Vec<Value>, nodes: Vec<Node<Op>>, output: ValueId, opset: i64) -> ImportedGraph {
    let mut live = vec![false; values.len()];
    live[0] = true;
    live[output] = true;
    for node in nodes.iter().rev() {
        if live[node.output] {
            for &i in &node.inputs {
                live[i] = true;
            }
        }
    }
    let mut new_id = vec![usize::MAX; values.len()];
    let mut kept = Vec::new();
    for (id, value) in values.into_iter().enumerate() {
        if live[id] {
            new_id[id] = kept.len();
            kept.push(value);
        }
    }
    let nodes = nodes
        .into_iter()
        .filter(|n| live[n.output])
        .map(|mut n| {
            n.inputs.iter_mut().for_each(|i| *i = new_id[*i]);
            n.output = new_id[n.output];
            n
        })
        .collect();
    Graph {
        values: kept,
        nodes,
        input: 0,
        output: new_id[output],
        opset,
    }
}
