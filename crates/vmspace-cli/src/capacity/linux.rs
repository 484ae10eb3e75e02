//! `vmspace capacity` judged by the real kernel: a static i386 program
//! (`tests/capacity/stacks.c`, built here with `gcc -m32`) dumps its starting state, grows its
//! break by the heap size and maps stacks until Linux refuses, under `setarch -R` (top-down)
//! and `setarch -R -L` (legacy), glibc-style and MAP_GROWSDOWN. The model starts from the same
//! dump (`AddressSpace::from_snapshot`, configured with this machine's sysctls and limits)
//! and runs capacity's own [`place`](super::place): every stack must land where Linux put it,
//! and the count must be the same. Skipped (with the reason) without gcc-multilib or setarch.

use super::{place, StackKind};
use std::path::{Path, PathBuf};
use vmspace::space::TaskKind;

#[path = "../../tests/support/start_state.rs"]
mod start_state;
use start_state::{hex, StartState};

const WHAT: &str = "capacity cross-check";

fn build() -> Option<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/capacity/stacks.c");
    let out = std::env::temp_dir().join(format!("vmspace-capacity-stacks-{}", std::process::id()));
    start_state::build_static(WHAT, &src, &out, true).then_some(out)
}

/// What the helper printed.
struct Run {
    start: StartState,
    heap_ok: bool,
    stacks: Vec<u64>,
}

fn run(prog: &Path, legacy: bool, heap: u64, stack: u64, mode: &str) -> Option<Run> {
    let args = [heap.to_string(), stack.to_string(), mode.to_string()];
    let text = start_state::run_setarch(WHAT, prog, legacy, &args)?;
    let (start, rest) = start_state::parse(&text);
    let mut r = Run {
        start,
        heap_ok: false,
        stacks: Vec::new(),
    };
    let mut done = None;
    for (k, v) in rest {
        match k {
            "heap" => r.heap_ok = v == "ok",
            "s" => r.stacks.push(hex(v)),
            "done" => done = Some(v.parse::<usize>().unwrap()),
            _ => panic!("unexpected helper output line {k} {v}"),
        }
    }
    if r.heap_ok {
        assert_eq!(done, Some(r.stacks.len()), "the helper's count");
    }
    Some(r)
}

#[test]
fn stacks_next_to_a_heap_land_where_linux_puts_them() {
    if start_state::sysctl("overcommit_memory") == 2 {
        eprintln!("SKIP capacity cross-check: overcommit mode 2 depends on the whole system");
        return;
    }
    let Some(prog) = build() else { return };
    const MIB: u64 = 1 << 20;
    for (legacy, heap, stack, mode) in [
        (false, 512 * MIB, MIB, "stack"),
        (false, 512 * MIB, MIB, "growsdown"),
        (true, 512 * MIB, MIB, "stack"),
        (true, 512 * MIB, MIB, "growsdown"),
        (false, 3 << 30, 256 << 10, "stack"),
        (true, 2 << 30, MIB, "stack"),
    ] {
        let Some(r) = run(&prog, legacy, heap, stack, mode) else {
            let _ = std::fs::remove_file(&prog);
            return;
        };
        let s = r
            .start
            .model_space(TaskKind::Compat32, legacy, &r.start.maps);
        let kind = if mode == "growsdown" {
            StackKind::GrowsDown
        } else {
            StackKind::MapStack
        };
        let model = place(&s, heap, stack, kind);
        let name = format!(
            "{} heap {heap:#x} stack {stack:#x} {mode}",
            if legacy { "legacy" } else { "topdown" }
        );
        eprintln!(
            "{name}: Linux {} stacks (heap {}), model {:?}",
            r.stacks.len(),
            if r.heap_ok { "ok" } else { "refused" },
            model.as_ref().map(|(_, b)| b.len())
        );
        assert_eq!(model.is_some(), r.heap_ok, "{name}: heap");
        if let Some((_, bases)) = model {
            if let Some(i) = (0..bases.len().min(r.stacks.len())).find(|&i| bases[i] != r.stacks[i])
            {
                panic!(
                    "{name}: stack {i} at {:#x} in the model, {:#x} on Linux",
                    bases[i], r.stacks[i]
                );
            }
            assert_eq!(bases.len(), r.stacks.len(), "{name}: count");
        }
    }
    let _ = std::fs::remove_file(&prog);
}
