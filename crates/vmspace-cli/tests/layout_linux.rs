//! The largest heap, Linux versus the model (B1–B7, L1–L5, L18): a static program
//! (`tests/layout/growbrk.c`, built here with gcc) dumps its rlimits, break, /proc/self/stat
//! and /proc/self/maps, then grows its break with the raw brk syscall until refused, under
//! `setarch -R` (top-down) and `setarch -R -L` (legacy). The model starts from the same dump
//! (`AddressSpace::from_snapshot`), runs the same search, and must reach the same break.
//! The same program with the argument `mmap` finds the largest single anonymous mmap
//! (MAP_NORESERVE) by a binary search; the model must find the same length at the same
//! address. The vDSO block must sit where the model's own placement puts it (L18).
//! rlimits, vm.mmap_min_addr, overcommit and RAM size are this machine's.

use std::path::{Path, PathBuf};
use vmspace::space::abi::{MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PROT_NONE, PROT_READ};
use vmspace::space::{SnapshotVma, TaskKind};

#[path = "support/start_state.rs"]
mod start_state;
use start_state::{hex, StartState};

const PAGE: u64 = 4096;

const WHAT: &str = "layout cross-check";

/// Builds the helper; `None` (with the reason printed) when the toolchain is missing.
fn build(m32: bool) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/layout/growbrk.c");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(if m32 { "growbrk32" } else { "growbrk64" });
    start_state::build_static(WHAT, &src, &out, m32).then_some(out)
}

struct Run {
    start: StartState,
    calls: u64,
    final_brk: u64,
    /// `mmap` mode: largest length and where it landed.
    mmap: Option<(u64, u64)>,
}

fn run(prog: &Path, legacy: bool, mode: Option<&str>) -> Option<Run> {
    let args: Vec<String> = mode.into_iter().map(String::from).collect();
    let text = start_state::run_setarch(WHAT, prog, legacy, &args)?;
    let (start, rest) = start_state::parse(&text);
    let mut r = Run {
        start,
        calls: 0,
        final_brk: 0,
        mmap: None,
    };
    for (k, v) in rest {
        match k {
            "calls" => r.calls = v.parse().unwrap(),
            "final" => r.final_brk = hex(v),
            "mmap" => {
                let (len, at) = v.split_once(' ').unwrap();
                r.mmap = Some((hex(len), hex(at)));
            }
            _ => panic!("unexpected helper output line {k} {v}"),
        }
    }
    Some(r)
}

/// The model's side: the same search as growbrk.c's loop.
fn model_final(kind: TaskKind, legacy: bool, r: &Run) -> (u64, u64) {
    let mut s = r.start.model_space(kind, legacy, &r.start.maps);
    let bits = if kind == TaskKind::X86_64 { 64 } else { 32 };
    let mask = if bits == 32 { 0xffff_ffff } else { u64::MAX };
    let mut cur = s.brk_value();
    let mut step = 1u64 << (bits - 2);
    let mut calls = 0;
    while step >= PAGE {
        let want = cur.wrapping_add(step) & mask;
        calls += 1;
        if want > cur && s.brk(want) == want {
            cur = want;
        } else {
            step >>= 1;
        }
    }
    (cur, calls)
}

fn check(m32: bool) {
    if start_state::sysctl("overcommit_memory") == 2 {
        eprintln!(
            "SKIP layout cross-check: vm.overcommit_memory=2 limits brk by the whole system's \
             Committed_AS, which the model cannot see"
        );
        return;
    }
    let Some(prog) = build(m32) else { return };
    let kind = if m32 {
        TaskKind::Compat32
    } else {
        TaskKind::X86_64
    };
    for legacy in [false, true] {
        let Some(r) = run(&prog, legacy, None) else {
            return;
        };
        let (model, calls) = model_final(kind, legacy, &r);
        let name = if legacy { "legacy" } else { "topdown" };
        eprintln!(
            "{} {name}: start_brk {:#x} brk0 {:#x}: Linux final break {:#x} ({} calls), model {:#x} ({} calls)",
            if m32 { "i386" } else { "x86_64" },
            r.start.stat.start_brk,
            r.start.brk0,
            r.final_brk,
            r.calls,
            model,
            calls
        );
        assert!(
            r.final_brk > r.start.brk0,
            "{name}: the heap did not grow at all"
        );
        assert_eq!(
            model, r.final_brk,
            "{name}: model's largest break differs from Linux's"
        );
        assert_eq!(calls, r.calls, "{name}: the searches diverged");

        // L15/L18: the stack ends at the layout's stack top, and the vDSO block sits where
        // a hint-less mmap of its size lands in the space without it.
        let stack = r.start.maps.iter().find(|v| v.name == "[stack]").unwrap();
        let s = r.start.model_space(kind, legacy, &r.start.maps);
        assert_eq!(stack.end, s.layout().stack_top, "{name}: stack top");
        let special = |v: &SnapshotVma| v.name.starts_with("[vvar") || v.name == "[vdso]";
        let lo = r
            .start
            .maps
            .iter()
            .filter(|v| special(v))
            .map(|v| v.start)
            .min()
            .unwrap();
        let hi = r
            .start
            .maps
            .iter()
            .filter(|v| special(v))
            .map(|v| v.end)
            .max()
            .unwrap();
        let rest: Vec<SnapshotVma> = r
            .start
            .maps
            .iter()
            .filter(|v| !special(v))
            .cloned()
            .collect();
        let mut bare = r.start.model_space(kind, legacy, &rest);
        let at = bare
            .mmap(0, hi - lo, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, None, 0)
            .unwrap();
        assert_eq!(at, lo, "{name}: vDSO placement");

        // The largest single mmap.
        let Some(m) = run(&prog, legacy, Some("mmap")) else {
            return;
        };
        let (len, at) = m.mmap.expect("mmap mode prints its result");
        let s = m.start.model_space(kind, legacy, &m.start.maps);
        let try_len = |pages: u64| {
            s.clone()
                .mmap(
                    0,
                    pages * PAGE,
                    PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                    None,
                    0,
                )
                .ok()
        };
        let (mut lo, mut hi) = (0u64, (if m32 { 1u64 << 32 } else { 1 << 47 }) / PAGE + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if try_len(mid).is_some() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let model_at = try_len(lo).unwrap_or(0);
        eprintln!(
            "{} {name}: largest mmap Linux {len:#x} at {at:#x}, model {:#x} at {model_at:#x}",
            if m32 { "i386" } else { "x86_64" },
            lo * PAGE
        );
        assert_eq!((lo * PAGE, model_at), (len, at), "{name}: largest mmap");
    }
}

#[test]
fn largest_heap_and_mmap_i386_match_linux() {
    check(true);
}

#[test]
fn largest_heap_and_mmap_x86_64_match_linux() {
    check(false);
}
