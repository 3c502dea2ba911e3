//! The library behind `berth-runtime`, a runc-compatible OCI runtime.
//!
//! [`runtime::Runtime`] is the core: on `create` and `run` it loads the
//! [`bundle`] once and rewrites its `config.json` through the stages of
//! [`rewrite`] (sysctl policy, the CPU split of [`cpus`], CPU-count
//! injection, and on the built-in backend cgroup placement); it records the
//! container ([`records`]); then it runs the verb on the container's
//! [`backend`]: a runc-compatible binary, or youki's libcontainer in-process
//! ([`builtin`]). Errors are written the way runc writes them ([`logging`])
//! so engines show them.

pub mod atomic;
pub mod backend;
pub mod builtin;
pub mod bundle;
pub mod cgroup_path;
pub mod config;
pub mod cpus;
pub mod cpuview;
pub mod debug_stop;
pub mod error;
pub mod fast;
pub mod logging;
pub mod marks;
pub mod operation;
pub mod records;
pub mod rewrite;
pub mod runtime;
pub mod spec;

pub use error::{Error, Result};

/// The runtime-spec version Berth reports (as runc 1.1 does).
pub const SPEC_VERSION: &str = "1.0.2-dev";
