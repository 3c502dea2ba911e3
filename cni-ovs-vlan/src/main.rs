//! `berth-ovs-vlan`: Berth CNI Open vSwitch VLAN plugin with QoS.
//!
//! Not landed yet (issue #7). The binary exists so the workspace and packaging
//! have their final names; it refuses to run rather than pretend to work.

fn main() {
    eprintln!("berth-ovs-vlan: not implemented yet (see issue #7)");
    std::process::exit(1);
}
