//! `berth-nri`: Berth's CPU split and CPU-count injection as a containerd
//! NRI plugin. [`wire`] and [`plugin`] speak NRI (multiplexed ttrpc over a
//! unix socket) for any handler; [`berth`] is Berth's.

pub mod berth;
pub mod kubelet;
pub mod plugin;
pub mod proto;
pub mod wire;
