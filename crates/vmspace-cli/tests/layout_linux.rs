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
use std::process::Command;
use vmspace::space::abi::{MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PROT_NONE, PROT_READ};
use vmspace::space::{AddressSpace, ProcStat, SnapshotVma, SpaceConfig, TaskKind};

const PAGE: u64 = 4096;

/// Builds the helper; `None` (with the reason printed) when the toolchain is missing.
fn build(m32: bool) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/layout/growbrk.c");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(if m32 { "growbrk32" } else { "growbrk64" });
    let mut c = Command::new(std::env::var("CC_I386").unwrap_or_else(|_| "gcc".into()));
    if m32 {
        c.arg("-m32");
    }
    c.args(["-static", "-O2", "-o"]).arg(&out).arg(&src);
    match c.output() {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            eprintln!(
                "SKIP layout cross-check ({}): gcc{} -static failed (install gcc-multilib and \
                 the static libc): {}",
                if m32 { "i386" } else { "x86_64" },
                if m32 { " -m32" } else { "" },
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP layout cross-check: gcc not runnable: {e}");
            None
        }
    }
}

struct Run {
    rlimit_stack: u64,
    rlimit_data: u64,
    rlimit_as: u64,
    brk0: u64,
    stat: ProcStat,
    maps: Vec<SnapshotVma>,
    calls: u64,
    final_brk: u64,
    /// `mmap` mode: largest length and where it landed.
    mmap: Option<(u64, u64)>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

fn run(prog: &Path, legacy: bool, mode: Option<&str>) -> Option<Run> {
    let mut c = Command::new("setarch");
    c.arg("-R");
    if legacy {
        c.arg("-L");
    }
    c.arg(prog);
    if let Some(m) = mode {
        c.arg(m);
    }
    let o = match c.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "SKIP layout cross-check: setarch failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("SKIP layout cross-check: setarch not runnable: {e}");
            return None;
        }
    };
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let mut r = Run {
        rlimit_stack: 0,
        rlimit_data: 0,
        rlimit_as: 0,
        brk0: 0,
        stat: ProcStat::default(),
        maps: Vec::new(),
        calls: 0,
        final_brk: 0,
        mmap: None,
    };
    while let Some(l) = lines.next() {
        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
        match k {
            "rlimit_stack" => r.rlimit_stack = v.parse().unwrap(),
            "rlimit_data" => r.rlimit_data = v.parse().unwrap(),
            "rlimit_as" => r.rlimit_as = v.parse().unwrap(),
            "brk0" => r.brk0 = hex(v),
            "calls" => r.calls = v.parse().unwrap(),
            "final" => r.final_brk = hex(v),
            "mmap" => {
                let (len, at) = v.split_once(' ').unwrap();
                r.mmap = Some((hex(len), hex(at)));
            }
            "stat" => {
                r.stat = ProcStat::parse(lines.next().unwrap()).expect("a /proc/self/stat line");
                assert_eq!(lines.next(), Some("end"));
            }
            "maps" => {
                for m in lines.by_ref() {
                    if m == "end" {
                        break;
                    }
                    r.maps
                        .push(SnapshotVma::parse_maps_line(m).expect("a /proc/self/maps line"));
                }
            }
            _ => panic!("unexpected helper output line {l:?}"),
        }
    }
    r.stat.brk = r.brk0;
    Some(r)
}

fn sysctl(name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn meminfo_kb(key: &str) -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The model at the program's starting state, configured as this machine.
fn model_space(kind: TaskKind, legacy: bool, r: &Run, maps: &[SnapshotVma]) -> AddressSpace {
    let mut cfg = SpaceConfig::linux_default(kind);
    cfg.legacy_layout = legacy;
    cfg.mmap_min_addr = sysctl("mmap_min_addr");
    cfg.overcommit_memory = sysctl("overcommit_memory") as u32;
    cfg.overcommit_ratio = sysctl("overcommit_ratio");
    cfg.max_map_count = sysctl("max_map_count");
    cfg.total_ram_pages = meminfo_kb("MemTotal:") / 4;
    cfg.total_swap_pages = meminfo_kb("SwapTotal:") / 4;
    cfg.rlimit_stack = r.rlimit_stack;
    cfg.rlimit_data = r.rlimit_data;
    cfg.rlimit_as = r.rlimit_as;
    let s = AddressSpace::from_snapshot(cfg, maps, &r.stat).unwrap();
    assert_eq!(s.brk_value(), r.brk0);
    s
}

/// The model's side: the same search as growbrk.c's loop.
fn model_final(kind: TaskKind, legacy: bool, r: &Run) -> (u64, u64) {
    let mut s = model_space(kind, legacy, r, &r.maps);
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
    if sysctl("overcommit_memory") == 2 {
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
            r.stat.start_brk,
            r.brk0,
            r.final_brk,
            r.calls,
            model,
            calls
        );
        assert!(r.final_brk > r.brk0, "{name}: the heap did not grow at all");
        assert_eq!(
            model, r.final_brk,
            "{name}: model's largest break differs from Linux's"
        );
        assert_eq!(calls, r.calls, "{name}: the searches diverged");

        // L15/L18: the stack ends at the layout's stack top, and the vDSO block sits where
        // a hint-less mmap of its size lands in the space without it.
        let stack = r.maps.iter().find(|v| v.name == "[stack]").unwrap();
        let s = model_space(kind, legacy, &r, &r.maps);
        assert_eq!(stack.end, s.layout().stack_top, "{name}: stack top");
        let special = |v: &SnapshotVma| v.name.starts_with("[vvar") || v.name == "[vdso]";
        let lo = r
            .maps
            .iter()
            .filter(|v| special(v))
            .map(|v| v.start)
            .min()
            .unwrap();
        let hi = r
            .maps
            .iter()
            .filter(|v| special(v))
            .map(|v| v.end)
            .max()
            .unwrap();
        let rest: Vec<SnapshotVma> = r.maps.iter().filter(|v| !special(v)).cloned().collect();
        let mut bare = model_space(kind, legacy, &r, &rest);
        let at = bare
            .mmap(0, hi - lo, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, None, 0)
            .unwrap();
        assert_eq!(at, lo, "{name}: vDSO placement");

        // The largest single mmap.
        let Some(m) = run(&prog, legacy, Some("mmap")) else {
            return;
        };
        let (len, at) = m.mmap.expect("mmap mode prints its result");
        let s = model_space(kind, legacy, &m, &m.maps);
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
