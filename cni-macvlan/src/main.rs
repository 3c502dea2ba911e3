//! `berth-macvlan`: a CNI 1.1 macvlan plugin with bandwidth QoS shaped
//! inside the container's network namespace. See the README for its keys.

mod conf;
mod error;
mod plugin;

fn main() {
    std::process::exit(berth_cni::skel::run(&plugin::Macvlan));
}

#[cfg(test)]
mod fuzz {
    #[test]
    fn stdin_and_cni_args_never_panic() {
        berth_cni::fuzzing::never_panics(
            &crate::plugin::Macvlan,
            "berth-macvlan",
            &[
                "master",
                "mode",
                "mtu",
                "mac",
                "linkInContainer",
                "bandwidth",
                "ipam",
                "dns",
                "prevResult",
                "runtimeConfig",
            ],
        );
    }
}
