//! `berth-log-appender`: Berth non-blocking log forwarder to Kafka.
//!
//! Not landed yet (issue #8). The binary exists so the workspace and packaging
//! have their final names; it refuses to run rather than pretend to work.

fn main() {
    eprintln!("berth-log-appender: not implemented yet (see issue #8)");
    std::process::exit(1);
}
