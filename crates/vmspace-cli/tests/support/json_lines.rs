//! Runs the `vmspace` binary and reads its `--json` output: one object per line.

use std::process::Command;

/// The records `vmspace ARGS` prints (it must succeed, and every line must be a JSON object).
pub fn records(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .output()
        .expect("run vmspace");
    assert!(
        out.status.success(),
        "vmspace {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}
