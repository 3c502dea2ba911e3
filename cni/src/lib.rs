//! Shared CNI plumbing for `berth-macvlan` and `berth-ovs-vlan`.
//!
//! Not landed yet: the spec types, netns handling and IPAM delegation arrive with
//! issue #6. This crate deliberately exports nothing until then.
