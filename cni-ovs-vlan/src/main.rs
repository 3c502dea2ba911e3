//! `berth-ovs-vlan`: a CNI 1.1 plugin attaching containers to an Open
//! vSwitch bridge on a VLAN (access or trunk) with QoS both ways, speaking
//! OVSDB (RFC 7047) directly. See the README for its keys.

mod conf;
mod ovsdb;
mod plugin;
mod port;

fn main() {
    std::process::exit(berth_cni::skel::run(&plugin::OvsVlan));
}
