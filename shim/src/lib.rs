//! The library behind `berth-runtime`, a runc-compatible OCI runtime.
//!
//! On `create` and `run` it rewrites the bundle's `config.json` through the
//! stages of [`rewrite`] (sysctl policy, the CPU split, CPU-count injection),
//! then hands every verb to a real runtime chosen by [`delegate`]. Errors are
//! written the way runc writes them ([`logging`]) so engines show them.

pub mod atomic;
pub mod config;
pub mod cpus;
pub mod delegate;
pub mod error;
pub mod logging;
pub mod rewrite;
pub mod spec;

pub use error::{Error, Result};
