//! What can go wrong in `berth-macvlan`, each with the CNI code it is
//! answered with (the skel turns it into the error JSON).

use berth_cni::netlink::NetlinkError;
use berth_cni::{Code, Failure};
use std::path::PathBuf;

/// A macvlan failure.
#[derive(Debug, thiserror::Error)]
pub enum MacvlanError {
    /// From the shared library: environment, config, IPAM, netns, links.
    #[error(transparent)]
    Cni(#[from] berth_cni::Error),
    /// `CNI_NETNS` names no namespace (code 5).
    #[error("CNI_NETNS {} does not exist", .0.display())]
    NoNetns(PathBuf),
    /// The master is not there (code 7; 50 from STATUS).
    #[error("master {name:?} not found{}", if *.in_container { " in the container's netns" } else { "" })]
    NoMaster {
        /// `master`.
        name: String,
        /// `linkInContainer`.
        in_container: bool,
    },
    /// No `master`, and no default route to take one from (code 7).
    #[error("master is not set and there is no default route to take it from")]
    NoDefaultRoute,
    /// The default route's link went away while looking (code 5).
    #[error("default route link #{0} vanished")]
    DefaultRouteVanished(u32),
    /// `mtu` above the master's (code 7).
    #[error("mtu {mtu} is larger than master {master}'s MTU {master_mtu}")]
    MtuAboveMaster {
        /// `mtu`.
        mtu: u32,
        /// The master's name.
        master: String,
        /// The master's MTU.
        master_mtu: u32,
    },
    /// `mac` is taken on the master (code 7).
    #[error("mac: the address is already used on master {master}")]
    MacInUse {
        /// The master's name.
        master: String,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
    /// `mode passthru` on a master that has a macvlan already (code 7).
    #[error(
        "mode passthru: master {master} already has a macvlan (passthru takes the whole master)"
    )]
    PassthruTaken {
        /// The master's name.
        master: String,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
    /// The new link is not where it was made (code 5).
    #[error("new macvlan {0} is not in the netns")]
    LinkLost(String),
    /// STATUS: an ADD now would fail or leave the container without network (code 50).
    #[error("{0}")]
    NotAvailable(String),
}

berth_cni::wraps_cni_errors!(MacvlanError);

impl Failure for MacvlanError {
    fn code(&self) -> Code {
        match self {
            MacvlanError::Cni(e) => e.code(),
            MacvlanError::NoNetns(_)
            | MacvlanError::DefaultRouteVanished(_)
            | MacvlanError::LinkLost(_) => Code::Io,
            MacvlanError::NoMaster { .. }
            | MacvlanError::NoDefaultRoute
            | MacvlanError::MtuAboveMaster { .. }
            | MacvlanError::MacInUse { .. }
            | MacvlanError::PassthruTaken { .. } => Code::InvalidConfig,
            MacvlanError::NotAvailable(_) => Code::NotAvailable,
        }
    }

    fn message(&self) -> String {
        match self {
            MacvlanError::Cni(e) => e.message(),
            e => e.to_string(),
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            MacvlanError::Cni(e) => e.details(),
            MacvlanError::MacInUse { source, .. } | MacvlanError::PassthruTaken { source, .. } => {
                Some(source.to_string())
            }
            _ => None,
        }
    }
}
