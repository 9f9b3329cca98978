//! Which nodes the graph output needs, and in which order to run them.
//!
//! ONNX requires nodes to be topologically sorted, but hand-edited and some converted models are
//! not; sorting costs little and a cycle or a dangling input becomes a clear error instead of a
//! confusing one later.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{bail, Result};
use onnx_rs::ast::Node;

use crate::ir::graph::Origin;

/// The name and op type of node `index`; unnamed nodes get one from op type and position.
pub(super) fn origin(node: &Node<'_>, index: usize) -> Origin {
    let op_type = node.op_type.as_str().to_string();
    let name = if node.name.is_empty() {
        format!("{op_type}_{index}")
    } else {
        node.name.to_string()
    };
    Origin { name, op_type }
}

/// Indices of the nodes needed to compute `output`, in an order where every node comes after the
/// producers of its inputs (file order where the file is already sorted).
///
/// `sources` are the names available without any node: the graph input and the initializers.
pub(super) fn needed_in_order(
    nodes: &[Node<'_>],
    sources: &HashSet<&str>,
    output: &str,
) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for &name in node.output.iter().filter(|n| !n.is_empty()) {
            if sources.contains(name) {
                bail!(
                    "{} writes {name:?}, which is already the graph input or an initializer; \
                     every value must have one definition",
                    origin(node, i)
                );
            }
            if let Some(&j) = producer.get(name) {
                bail!(
                    "value {name:?} is produced twice, by {} and by {}; every value must have one definition",
                    origin(&nodes[j], j),
                    origin(node, i)
                );
            }
            producer.insert(name, i);
        }
    }

    // Walk back from the output (iteratively: deep graphs must not overflow the stack).
    let mut needed = BTreeSet::new();
    let mut stack = Vec::new();
    match producer.get(output) {
        Some(&i) => stack.push(i),
        None if sources.contains(output) => {}
        None => bail!("the graph output {output:?} is not produced by any node"),
    }
    while let Some(i) = stack.pop() {
        if !needed.insert(i) {
            continue;
        }
        for &name in nodes[i].input.iter().filter(|n| !n.is_empty()) {
            match producer.get(name) {
                Some(&j) => stack.push(j),
                None if sources.contains(name) => {}
                None => bail!(
                    "{}: input {name:?} is not produced by any node and is not an initializer or the \
                     graph input (a truncated or hand-edited model?)",
                    origin(&nodes[i], i)
                ),
            }
        }
    }

    // Kahn's algorithm; the ready set is ordered so file order wins among ready nodes.
    let mut waiting: HashMap<usize, usize> = HashMap::new();
    let mut users: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in &needed {
        let deps: Vec<usize> = nodes[i]
            .input
            .iter()
            .filter_map(|name| producer.get(name).copied())
            .collect();
        waiting.insert(i, deps.len());
        for j in deps {
            users.entry(j).or_default().push(i);
        }
    }
    let mut ready: BTreeSet<usize> = needed.iter().copied().filter(|i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(needed.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in users.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(w) = waiting.get_mut(&u) {
                *w -= 1;
                if *w == 0 {
                    ready.insert(u);
                }
            }
        }
    }
    if order.len() < needed.len() {
        let done: HashSet<usize> = order.iter().copied().collect();
        let stuck: Vec<String> = needed
            .iter()
            .filter(|i| !done.contains(i))
            .take(5)
            .map(|&i| origin(&nodes[i], i).to_string())
            .collect();
        bail!("the graph has a cycle through {}", stuck.join(", "));
    }
    Ok(order)
}
