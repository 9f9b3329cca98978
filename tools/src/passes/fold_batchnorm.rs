//! Folding BatchNorm into neighbouring layers.
