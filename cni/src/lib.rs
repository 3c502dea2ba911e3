//! Shared CNI plumbing for `berth-macvlan` and `berth-ovs-vlan`, after the
//! CNI specification (versions 0.3.0 to 1.1.0):
//!
//! * [`error`]: the error JSON a plugin prints, with the spec's codes;
//! * [`env`]: the `CNI_*` environment, checked per command;
//! * [`types`]: network configuration and results, converted between versions;
//! * [`ipam`]: delegating to the IPAM plugin named by `ipam.type`;
//! * [`netns`]: running code inside a network namespace on its own thread.
//!
//! It also holds the verb dispatcher ([`skel`]), a blocking rtnetlink client
//! ([`netlink`], [`link`], [`ipcfg`], [`tc`]), in-netns bandwidth shaping
//! ([`qos`]), shared bandwidth with guarantees on a link ([`share`], over
//! [`htb`]), the shared capability keys ([`caps`]) and file logging
//! ([`logging`]), used by `berth-macvlan` and `berth-ovs-vlan`.

pub mod arp;
pub mod attachments;
pub mod caps;
pub mod check;
pub mod env;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod htb;
pub mod ipam;
pub mod ipcfg;
pub mod link;
pub mod logging;
pub mod netlink;
pub mod netns;
pub mod qos;
pub mod setup;
pub mod share;
pub mod skel;
pub mod tc;
pub mod types;

pub use error::{CniError, Code, Error, Failure};

/// Every spec version these types read and write.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version results are produced in when the config does not say.
pub const LATEST: &str = "1.1.0";
