//! The BatchNorm statistics check: are a model's running statistics those of its data?
//!
//! `diagnose` measures every BatchNorm's per-channel input statistics on calibration data and
//! compares them with the stored running statistics; `report` writes the HTML/SVG report;
//! `policy` is the check a conversion runs before folding (refuse, allow or recalibrate).

pub mod diagnose;
pub mod policy;
pub mod report;
