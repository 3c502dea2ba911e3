//! `berth-cni-gc`: CNI 1.1 GC for hosts whose engine never calls it
//! (containerd does not, go-cni #131; CRI-O only at startup).
//!
//! 1. [`cri`]: the live pod sandboxes, from the engine's CRI API (or
//!    [`podman`]: its running containers). A sandbox whose network
//!    namespace was deleted behind the engine's back is not live. An engine
//!    that cannot be reached means no GC at all.
//! 2. [`cache`]: each sandbox's attachments (network, container ID,
//!    interface), from libcni's result cache, which the engine writes after
//!    every ADD and removes at DEL.
//! 3. [`gc`]: GC on every plugin of every CNI 1.1 conflist in the
//!    configuration directory, with `cni.dev/valid-attachments` the live
//!    sandboxes' attachments of that network, plus every attachment cached
//!    less than the grace period ago (a sandbox being created is not listed
//!    yet).

pub mod cache;
pub mod cri;
pub mod gc;
pub mod podman;

/// Why GC did not run, or not everywhere.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The engine could not be asked: no GC, never "everything is stale".
    #[error("cannot list the live sandboxes from {socket}: {why}; no GC was run")]
    Engine {
        /// The CRI socket.
        socket: String,
        /// What failed.
        why: String,
    },
    /// The attachments of live sandboxes cannot be known.
    #[error("{0}; no GC was run")]
    Unmapped(String),
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Logs to stderr at the level `BERTH_LOG` names (default `info`): what
/// both command-line tools do first.
pub fn init_logging() {
    let filter = std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
}
