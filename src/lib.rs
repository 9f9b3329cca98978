//! icefold runtime.
#![no_std]
#![deny(unsafe_code)]

pub mod format;
