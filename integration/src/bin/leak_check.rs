//! `berth-leak-check PREFIX`: lists namespaces, interfaces, cgroups, mounts and
//! processes whose names carry PREFIX, and exits 1 if there are any.

fn main() {
    let Some(prefix) = std::env::args().nth(1).filter(|p| p.len() >= 4) else {
        eprintln!("usage: berth-leak-check PREFIX   (PREFIX: the run prefix, e.g. bt1a2b)");
        std::process::exit(2);
    };
    let left = berth_integration::leaks::leftovers(&prefix);
    if left.is_empty() {
        println!("leak check: nothing with prefix {prefix} left on the host");
        return;
    }
    eprintln!("leak check: the test run left these behind:");
    for l in &left {
        eprintln!("  - {l}");
    }
    std::process::exit(1);
}
