//! `berth-print-cpus`: prints `std::thread::available_parallelism()`, the way
//! Rust programs size their thread pools (used by the preload tests).

fn main() {
    match std::thread::available_parallelism() {
        Ok(n) => println!("{n}"),
        Err(e) => {
            eprintln!("available_parallelism: {e}");
            std::process::exit(1);
        }
    }
}
