//! The runtime library's error type.

use std::path::PathBuf;

/// Everything that can stop `berth-runtime` from handing a container on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `runtime.toml` (or a sysctl policy file) is malformed.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, from the parser.
        message: String,
    },
    /// The bundle's `config.json` is not usable JSON or not an OCI spec object.
    #[error("{path}: invalid config.json: {message}")]
    Spec {
        /// The `config.json` path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A sysctl was refused by policy.
    #[error("sysctl {key} {reason}")]
    Sysctl {
        /// The sysctl key as the container gave it.
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// An annotation has a value Berth cannot use.
    #[error("annotation {key}={value:?}: {reason}")]
    Annotation {
        /// The annotation key.
        key: String,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The CPU request cannot be placed on this host.
    #[error("cpus: {0}")]
    Plan(#[from] crate::cpus::plan::PlanError),
    /// The CPU ledger refused an operation (no allocation, an update in progress).
    #[error("cpus: {0}")]
    Cpu(String),
    /// No delegate runtime could be found or run.
    #[error("delegate runtime: {0}")]
    Delegate(String),
    /// A container id runc would refuse.
    #[error("invalid container id {0:?}: only letters, digits, '_', '+', '-' and '.' are allowed")]
    ContainerId(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The runtime library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
