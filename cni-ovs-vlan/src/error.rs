//! What can go wrong in `berth-ovs-vlan`, each with the CNI code it is
//! answered with (the skel turns it into the error JSON).

use crate::ovsdb::OvsdbError;
use berth_cni::{Code, Failure};

/// An OVS VLAN failure.
#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    /// From the shared library: environment, config, IPAM, netns, links.
    #[error(transparent)]
    Cni(#[from] berth_cni::Error),
    /// OVSDB cannot be reached at `socket_file` (code 11: try again later).
    #[error("socket_file {socket}: OVSDB is not reachable")]
    Unreachable {
        /// `socket_file`.
        socket: String,
        /// Why.
        #[source]
        source: OvsdbError,
    },
    /// OVSDB failed or refused a transaction (code 5).
    #[error(transparent)]
    Ovsdb(#[from] OvsdbError),
    /// `bridge` is not in OVSDB (code 7).
    #[error("bridge {0:?} does not exist in OVSDB")]
    NoBridge(String),
    /// ovs-vswitchd did not catch up with OVSDB in time (code 11).
    #[error("ovs-vswitchd did not apply the change within {secs}s (cur_cfg {cur} < next_cfg {want}); is it running?")]
    NotApplied {
        /// The wait, `ovsTimeoutSeconds`.
        secs: u64,
        /// Its `cur_cfg`.
        cur: i64,
        /// The `next_cfg` waited for.
        want: i64,
    },
    /// ovs-vswitchd took the port but could not make it work (code 5).
    #[error("ovs-vswitchd could not add port {port} to bridge {bridge}: {why}")]
    PortFailed {
        /// The port.
        port: String,
        /// `bridge`.
        bridge: String,
        /// The Interface's `error`, or its `ofport`.
        why: String,
    },
    /// The linux-htb QoS is not on the port's link (code 5).
    #[error("ovs-vswitchd did not install the linux-htb QoS on port {0}")]
    NoHtb(String),
    /// `egressShaping police` that OVS could not apply (code 7).
    #[error("egressShaping police: OVS did not apply ingress_policing_rate on port {0} (this kernel likely lacks act_police); use egressShaping \"tbf\"")]
    NoPolicing(String),
    /// The container's end of the veth is not in its netns (code 5).
    #[error("{0} is not in the container's netns")]
    NotInNetns(String),
    /// `uplink` names no link on the host (code 7).
    #[error("uplink {0:?} is not a link on the host")]
    NoUplink(String),
    /// STATUS: an ADD now would fail (code 50).
    #[error("{0}")]
    NotAvailable(String),
}

berth_cni::wraps_cni_errors!(OvsError);

impl OvsError {
    /// A failure to connect to OVSDB at `socket` is [`OvsError::Unreachable`];
    /// any other is [`OvsError::Ovsdb`].
    pub fn at(socket: &str, e: OvsdbError) -> OvsError {
        match e {
            OvsdbError::Connect { .. } => OvsError::Unreachable {
                socket: socket.to_string(),
                source: e,
            },
            e => OvsError::Ovsdb(e),
        }
    }
}

impl Failure for OvsError {
    fn code(&self) -> Code {
        match self {
            OvsError::Cni(e) => e.code(),
            OvsError::Unreachable { .. } | OvsError::NotApplied { .. } => Code::TryAgainLater,
            OvsError::Ovsdb(_)
            | OvsError::PortFailed { .. }
            | OvsError::NoHtb(_)
            | OvsError::NotInNetns(_) => Code::Io,
            OvsError::NoBridge(_) | OvsError::NoUplink(_) | OvsError::NoPolicing(_) => {
                Code::InvalidConfig
            }
            OvsError::NotAvailable(_) => Code::NotAvailable,
        }
    }

    fn message(&self) -> String {
        match self {
            OvsError::Cni(e) => e.message(),
            e => e.to_string(),
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            OvsError::Cni(e) => e.details(),
            OvsError::Unreachable { source, .. } => Some(source.to_string()),
            _ => None,
        }
    }
}
