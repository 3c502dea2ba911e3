//! `berth-ovs-vlan`: a CNI 1.1 plugin attaching containers to an Open
//! vSwitch bridge on a VLAN (access or trunk) with QoS both ways, speaking
//! OVSDB (RFC 7047) directly. See the README for its keys.

mod conf;
mod error;
mod ovsdb;
mod plugin;
mod port;

fn main() {
    std::process::exit(berth_cni::skel::run(&plugin::OvsVlan));
}

#[cfg(test)]
mod fuzz {
    #[test]
    fn stdin_and_cni_args_never_panic() {
        berth_cni::fuzzing::never_panics(
            &crate::plugin::OvsVlan,
            "berth-ovs-vlan",
            &[
                "bridge",
                "vlan",
                "trunk",
                "mtu",
                "mac",
                "socket_file",
                "ovsTimeoutSeconds",
                "egressShaping",
                "bandwidth",
                "ipam",
                "dns",
                "prevResult",
                "runtimeConfig",
            ],
        );
    }
}
