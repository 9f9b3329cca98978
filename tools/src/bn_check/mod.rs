//! The BatchNorm statistics check: are a model's running statistics those of its data?
//!
//! `diagnose` measures every BatchNorm's per-channel input statistics on calibration data and
//! compares them with the stored running statistics; `report` writes the HTML/SVG report.

pub mod diagnose;
pub mod report;
