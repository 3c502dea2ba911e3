//! `berth-leak-check [--clean] PREFIX`: lists network namespaces, interfaces,
//! cgroups, mounts and processes whose names carry PREFIX and exits 1 if there
//! are any. With `--clean` it then removes them (processes by pid), so a run
//! that was killed before its own teardown does not poison the host.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let clean = args.first().map(|a| a == "--clean").unwrap_or(false);
    if clean {
        args.remove(0);
    }
    let Some(prefix) = args.first().filter(|p| p.len() >= 4).cloned() else {
        eprintln!(
            "usage: berth-leak-check [--clean] PREFIX   (PREFIX: the run prefix, e.g. bt1a2b)"
        );
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
    if clean {
        berth_integration::leaks::clean(&prefix);
        let still = berth_integration::leaks::leftovers(&prefix);
        eprintln!(
            "leak check: cleaned up; {} item(s) could not be removed",
            still.len()
        );
        for l in &still {
            eprintln!("  - {l}");
        }
    }
    std::process::exit(1);
}
