//! `berth-macvlan`: a CNI 1.1 macvlan plugin with bandwidth QoS shaped
//! inside the container's network namespace. See the README for its keys.

mod conf;
mod plugin;

fn main() {
    std::process::exit(berth_cni::skel::run(&plugin::Macvlan));
}
