//! Typed access to node attributes, with ONNX defaults and type checks.

use anyhow::{anyhow, bail, Result};
use onnx_rs::ast::{Attribute, AttributeType, Node, TensorProto};

/// Attribute reader for one node.
pub(super) struct Attrs<'n, 'a> {
    node: &'n Node<'a>,
}

/// Largest value accepted for sizes from attributes (kernels, strides, pads, ...): far beyond
/// any real model, small enough that shape arithmetic cannot overflow.
pub(super) const MAX_ATTR_SIZE: i64 = 1 << 20;

impl<'n, 'a> Attrs<'n, 'a> {
    pub fn new(node: &'n Node<'a>) -> Self {
        Attrs { node }
    }

    fn get(&self, name: &str, ty: AttributeType) -> Result<Option<&'n Attribute<'a>>> {
        match self.node.attribute.iter().find(|a| a.name == name) {
            // Some writers leave the type unset; then trust the field the caller asks for.
            Some(a) if a.r#type == ty || a.r#type == AttributeType::Undefined => Ok(Some(a)),
            Some(a) => bail!(
                "attribute {name:?} has type {:?}, expected {ty:?}",
                a.r#type
            ),
            None => Ok(None),
        }
    }

    /// True if the node has the attribute at all.
    pub fn has(&self, name: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name == name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.get(name, AttributeType::Int)?.map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .get(name, AttributeType::Float)?
            .map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.get(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self
            .get(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        self.get(name, AttributeType::String)?
            .map(|a| {
                std::str::from_utf8(a.s)
                    .map(str::to_string)
                    .map_err(|_| anyhow!("attribute {name:?} is not valid UTF-8"))
            })
            .transpose()
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'n TensorProto<'a>>> {
        Ok(self
            .get(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref()))
    }

    /// A list of sizes (kernel, strides, dilations) of exactly `len` entries, each in
    /// `min..=MAX_ATTR_SIZE`; `default` when absent.
    pub fn sizes(&self, name: &str, len: usize, min: i64, default: usize) -> Result<Vec<usize>> {
        match self.ints(name)? {
            None => Ok(vec![default; len]),
            Some(v) => {
                if v.len() != len {
                    bail!("attribute {name} {v:?} must have {len} entries");
                }
                v.iter()
                    .map(|&x| {
                        if (min..=MAX_ATTR_SIZE).contains(&x) {
                            Ok(x as usize)
                        } else {
                            bail!("attribute {name} {v:?}: {x} is out of range (must be {min}..={MAX_ATTR_SIZE})")
                        }
                    })
                    .collect()
            }
        }
    }
}
