//! `vmspace capacity` judged by the real kernel: a static i386 program
//! (`tests/capacity/stacks.c`, built here with `gcc -m32`) dumps its starting state, grows its
//! break by the heap size and maps stacks until Linux refuses, under `setarch -R` (top-down)
//! and `setarch -R -L` (legacy), glibc-style and MAP_GROWSDOWN. The model starts from the same
//! dump (`AddressSpace::from_snapshot`, configured with this machine's sysctls and limits)
//! and runs capacity's own [`place`](super::place): every stack must land where Linux put it,
//! and the count must be the same. Skipped (with the reason) without gcc-multilib or setarch.

use super::{place, StackKind};
use std::path::PathBuf;
use std::process::Command;
use vmspace::space::{AddressSpace, ProcStat, SnapshotVma, SpaceConfig, TaskKind};

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

fn build() -> Option<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/capacity/stacks.c");
    let out = std::env::temp_dir().join(format!("vmspace-capacity-stacks-{}", std::process::id()));
    let cc = std::env::var("CC_I386").unwrap_or_else(|_| "gcc".into());
    match Command::new(cc)
        .args(["-m32", "-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            eprintln!(
                "SKIP capacity cross-check: gcc -m32 -static failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP capacity cross-check: gcc not runnable: {e}");
            None
        }
    }
}

/// What the helper printed.
struct Run {
    rlimits: [u64; 3],
    stat: ProcStat,
    maps: Vec<SnapshotVma>,
    heap_ok: bool,
    stacks: Vec<u64>,
}

fn run(prog: &PathBuf, legacy: bool, heap: u64, stack: u64, mode: &str) -> Option<Run> {
    let mut c = Command::new("setarch");
    c.arg("-R");
    if legacy {
        c.arg("-L");
    }
    let o = match c
        .arg(prog)
        .args([heap.to_string(), stack.to_string(), mode.to_string()])
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "SKIP capacity cross-check: setarch failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("SKIP capacity cross-check: setarch not runnable: {e}");
            return None;
        }
    };
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let mut r = Run {
        rlimits: [0; 3],
        stat: ProcStat::default(),
        maps: Vec::new(),
        heap_ok: false,
        stacks: Vec::new(),
    };
    let mut brk0 = 0;
    let mut done = None;
    while let Some(l) = lines.next() {
        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
        match k {
            "rlimit_stack" => r.rlimits[0] = v.parse().unwrap(),
            "rlimit_data" => r.rlimits[1] = v.parse().unwrap(),
            "rlimit_as" => r.rlimits[2] = v.parse().unwrap(),
            "brk0" => brk0 = hex(v),
            "heap" => r.heap_ok = v == "ok",
            "s" => r.stacks.push(hex(v)),
            "done" => done = Some(v.parse::<usize>().unwrap()),
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
    r.stat.brk = brk0;
    if r.heap_ok {
        assert_eq!(done, Some(r.stacks.len()), "the helper's count");
    }
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

/// The model at the helper's starting state, configured as this machine.
fn model_space(legacy: bool, r: &Run) -> AddressSpace {
    let mut cfg = SpaceConfig::linux_default(TaskKind::Compat32);
    cfg.legacy_layout = legacy;
    cfg.mmap_min_addr = sysctl("mmap_min_addr");
    cfg.overcommit_memory = sysctl("overcommit_memory") as u32;
    cfg.overcommit_ratio = sysctl("overcommit_ratio");
    cfg.max_map_count = sysctl("max_map_count");
    cfg.total_ram_pages = meminfo_kb("MemTotal:") / 4;
    cfg.total_swap_pages = meminfo_kb("SwapTotal:") / 4;
    [cfg.rlimit_stack, cfg.rlimit_data, cfg.rlimit_as] = r.rlimits;
    AddressSpace::from_snapshot(cfg, &r.maps, &r.stat).unwrap()
}

#[test]
fn stacks_next_to_a_heap_land_where_linux_puts_them() {
    if sysctl("overcommit_memory") == 2 {
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
        let s = model_space(legacy, &r);
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
