//! Stage 2, reserved: the CPU split (exclusive cores plus a shared fragment
//! core, issue #4) will decide `linux.resources.cpu` here, before the
//! CPU-count injection reads it. Until it lands this stage changes nothing and
//! records nothing.

use super::Context;
use crate::error::Result;
use serde_json::Value;

/// Applies the CPU split. Not implemented yet: returns `Ok(None)`, no change.
pub fn apply(_spec: &mut Value, _ctx: &Context<'_>) -> Result<Option<Value>> {
    Ok(None)
}
