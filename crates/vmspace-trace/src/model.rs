//! The model backend (wired to `vmspace::space` once it lands).

use crate::doc::ResultDoc;
use crate::run::RunOutput;
use crate::trace::Trace;

/// Replays `trace` in the model, starting from `start`'s before state.
pub fn run(
    _trace: &Trace,
    _start: &ResultDoc,
    _smaps: bool,
) -> Result<(ResultDoc, RunOutput), String> {
    Err("the model backend is not available in this build yet (vmspace::space missing)".into())
}
