//! Import-time evaluation of `Ceil`, `Floor` and `Clip` on constants: the "same" padding
//! arithmetic of timm's `Conv2dSame` / `MaxPool2dSame` (`clamp((ceil(x / s) - 1) * s + (k - 1) * d
//! + 1 - x, min=0)` on the input size `x`), which the exporter writes as `Div`, `Ceil`, `Clip`,
//! `Cast` around the `Pad` of the activation.

use anyhow::{ensure, Result};

use super::attr::Attrs;
use super::tensor::{Const, Data};

/// `Ceil` (`up`) or `Floor` of a constant: integers are already whole.
pub(super) fn round(c: &Const, up: bool) -> Const {
    match &c.data {
        Data::Int(_) => c.clone(),
        Data::Float(v) => Const::float(
            c.shape.clone(),
            v.iter()
                .map(|x| if up { x.ceil() } else { x.floor() })
                .collect(),
        ),
    }
}

/// `Clip(x, min, max)` of a constant: bounds from inputs 1 and 2 (opset 11+) or the `min` / `max`
/// attributes (older exports); an absent bound does not clip. Integers stay integers.
pub(super) fn clip(
    x: &Const,
    min: Option<&Const>,
    max: Option<&Const>,
    attrs: &Attrs<'_, '_>,
) -> Result<Const> {
    let bound = |c: Option<&Const>, name: &str, default: f64| -> Result<f64> {
        let v = match c {
            Some(c) => c.scalar_f64(name)?,
            None if attrs.has(name) => attrs.float(name, 0.0)? as f64,
            None => default,
        };
        ensure!(!v.is_nan(), "Clip {name} is NaN");
        Ok(v)
    };
    let lo = bound(min, "min", f64::NEG_INFINITY)?;
    let hi = bound(max, "max", f64::INFINITY)?;
    ensure!(lo <= hi, "Clip min {lo} is above max {hi}");
    Ok(match &x.data {
        Data::Int(v) => {
            // Integer bounds of an integer tensor; a fractional bound rounds inward.
            let (lo, hi) = (lo.ceil(), hi.floor());
            let clamp = |&a: &i64| {
                let a = a as f64;
                a.max(lo).min(hi) as i64
            };
            Const::int(x.shape.clone(), v.iter().map(clamp).collect())
        }
        Data::Float(v) => Const::float(
            x.shape.clone(),
            v.iter().map(|a| a.max(lo).min(hi)).collect(),
        ),
    })
}
