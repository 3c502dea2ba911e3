//! Teardown of shared, once-per-run fixtures at process exit.
//!
//! Per-test fixtures clean up in `Drop`. Shared daemons live in statics, whose
//! destructors Rust never runs, so they register a closure here instead; all
//! closures run in reverse order from an `atexit` handler, which libtest's exit
//! path (success or failure) reaches.

use std::sync::{Mutex, Once};

type Action = Box<dyn FnOnce() + Send>;

static ACTIONS: Mutex<Vec<(String, Action)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

extern "C" fn run_all() {
    run_now();
}

/// Registers `action` (described by `what`) to run when the process exits.
pub fn at_exit(what: impl Into<String>, action: impl FnOnce() + Send + 'static) {
    HOOK.call_once(|| {
        // SAFETY: registering a plain extern "C" function without captured state.
        let rc = unsafe { libc::atexit(run_all) };
        assert_eq!(rc, 0, "atexit failed");
    });
    ACTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((what.into(), Box::new(action)));
}

/// Runs every registered action now, newest first. Safe to call twice.
pub fn run_now() {
    loop {
        let next = ACTIONS.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some((what, action)) = next else { break };
        eprintln!("harness: tearing down {what}");
        action();
    }
}

/// For binaries (which abort on panic, skipping exit handlers): runs the
/// teardown from the panic hook, after the usual panic message.
pub fn tear_down_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        run_now();
    }));
}
