//! Shared helpers for the integration tests: fixture discovery and comparison metrics.
