//! Progress on stderr for work that may take more than a second (bench groups, Linux runs).
//!
//! Drawn only when stderr is a terminal, so JSON on stdout, pipes and tests stay clean; the
//! bar clears itself when done. Bench groups report through [`bench_tick`] (a timing taken) and
//! [`bench_step`] (a result recorded), which tick the running group's spinner if there is one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// Whether progress is drawn at all: stderr is a terminal.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with a prefix, elapsed time and a message, ticking on its own.
pub fn spinner(prefix: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, target());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
            .expect("valid template"),
    );
    pb.set_prefix(prefix.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn target() -> ProgressDrawTarget {
    if enabled() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// The running bench group's spinner.
static BENCH: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// The spinner of a running bench group: shown from [`BenchProgress::start`] until dropped.
pub struct BenchProgress(());

impl BenchProgress {
    /// Shows a spinner for a bench group.
    pub fn start(group: String) -> Self {
        let pb = spinner(&format!("bench {group}"));
        pb.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {pos} timings {wide_msg}")
                .expect("valid template"),
        );
        if let Ok(mut b) = BENCH.lock() {
            *b = Some(pb);
        }
        BenchProgress(())
    }
}

impl Drop for BenchProgress {
    fn drop(&mut self) {
        if let Ok(mut b) = BENCH.lock() {
            if let Some(pb) = b.take() {
                pb.finish_and_clear();
            }
        }
    }
}

/// One more timing taken.
pub fn bench_tick() {
    if let Ok(b) = BENCH.lock() {
        if let Some(pb) = b.as_ref() {
            pb.inc(1);
        }
    }
}

/// One more result recorded (`what` names it).
pub fn bench_step(what: &str) {
    if let Ok(b) = BENCH.lock() {
        if let Some(pb) = b.as_ref() {
            pb.set_message(format!("last result: {what}"));
        }
    }
}
