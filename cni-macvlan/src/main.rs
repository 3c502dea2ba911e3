//! `berth-macvlan`: Berth CNI macvlan plugin with bandwidth QoS.
//!
//! Not landed yet (issue #6). The binary exists so the workspace and packaging
//! have their final names; it refuses to run rather than pretend to work.

fn main() {
    eprintln!("berth-macvlan: not implemented yet (see issue #6)");
    std::process::exit(1);
}
