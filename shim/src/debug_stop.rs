//! A test hook of debug builds only: `BERTH_DEBUG_STOP_AT=<step>` makes the
//! runtime stop itself (SIGSTOP) at that step, so a test can kill it with -9
//! exactly there and check that the next ledger transaction recovers. Release
//! builds compile it to nothing.

/// The steps, in the order a container meets them.
pub const STEPS: &[&str] = &[
    "create:planned",
    "create:rewritten",
    "create:recorded",
    "update:planned",
    "update:applied",
    "delete:deleted",
];

/// Stops this process if `BERTH_DEBUG_STOP_AT` names `step` (debug builds).
#[inline]
pub fn at(step: &'static str) {
    debug_assert!(STEPS.contains(&step), "unknown debug stop {step}");
    #[cfg(debug_assertions)]
    if std::env::var_os("BERTH_DEBUG_STOP_AT").is_some_and(|v| v == step) {
        tracing::warn!(step, "stopping for a test (BERTH_DEBUG_STOP_AT)");
        // SAFETY: raise has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
}
