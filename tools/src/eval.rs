//! Reference interpreter of the host IR (with and without BatchNorm).
