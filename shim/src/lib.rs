//! The library behind `berth-runtime`, a runc-compatible OCI runtime.
//!
//! On `create` and `run` it rewrites the bundle's `config.json` through the
//! stages of [`rewrite`] (sysctl policy, the CPU split, CPU-count injection),
//! then hands every verb to a real runtime chosen by [`delegate`], or runs it
//! in-process on youki's libcontainer ([`builtin`]). Errors are
//! written the way runc writes them ([`logging`]) so engines show them.

pub mod atomic;
pub mod builtin;
pub mod cgroup_path;
pub mod cli;
pub mod config;
pub mod cpus;
pub mod delegate;
pub mod error;
pub mod logging;
pub mod marks;
pub mod rewrite;
pub mod spec;

pub use error::{Error, Result};

/// The runtime-spec version Berth reports (as runc 1.1 does).
pub const SPEC_VERSION: &str = "1.0.2-dev";
