//! Test-support library for Berth's integration tests.
//!
//! Every fixture here starts or creates a *real* thing (dockerd, containerd,
//! podman, network namespaces, veth pairs, an Open vSwitch instance on the
//! userspace datapath, a Kafka-protocol broker) and removes it again: per-test
//! fixtures in `Drop` (so also when a test panics), shared daemons at process
//! exit through [`cleanup`]. Every name carries the run-unique prefix from
//! [`names`], so [`leaks`] can prove afterwards that nothing was left behind.
//!
//! Integration tests run as root (network namespaces, cgroups, mounts).

#[cfg(feature = "kafka")]
pub mod appender;
pub mod artifacts;
pub mod berth;
#[cfg(feature = "kafka")]
pub mod broker;
pub mod cleanup;
pub mod cmd;
pub mod cni;
pub mod deps;
pub mod engines;
pub mod images;
pub mod leaks;
pub mod names;
pub mod net;
pub mod ovs;
pub mod process;
pub mod programs;
pub mod vm;

/// Fails the calling test unless it runs as root, with a message saying why.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "integration tests need root (namespaces, cgroups, mounts); run them via scripts/test as root"
    );
}
