//! The Rust half of `start_state.h`, shared by the Linux cross-checks of `vmspace layout`
//! (tests/layout_linux.rs) and `vmspace capacity` (src/capacity/linux.rs): build a static
//! helper program, run it under `setarch -R` (`-L` for the legacy layout), and read the
//! starting state it reports before it acts. Each check skips (saying why) when gcc, the
//! static libc or setarch is missing.

use std::path::Path;
use std::process::Command;
use vmspace::space::{AddressSpace, ProcStat, SnapshotVma, SpaceConfig, TaskKind};

/// A hex number the helper printed.
pub fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// Builds `src` as a static program at `out` (`-m32` for i386; `$CC_I386` or gcc). False,
/// with the reason printed, when that cannot be done here.
pub fn build_static(what: &str, src: &Path, out: &Path, m32: bool) -> bool {
    let mut c = Command::new(std::env::var("CC_I386").unwrap_or_else(|_| "gcc".into()));
    if m32 {
        c.arg("-m32");
    }
    c.args(["-static", "-O2", "-o"]).arg(out).arg(src);
    match c.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "SKIP {what}: gcc{} -static failed (install gcc-multilib and the static libc): {}",
                if m32 { " -m32" } else { "" },
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("SKIP {what}: gcc not runnable: {e}");
            false
        }
    }
}

/// Runs `prog args` with ASLR off (`setarch -R`, plus `-L` for the legacy layout); its
/// standard output, or `None` with the reason printed.
pub fn run_setarch(what: &str, prog: &Path, legacy: bool, args: &[String]) -> Option<String> {
    let mut c = Command::new("setarch");
    c.arg("-R");
    if legacy {
        c.arg("-L");
    }
    match c.arg(prog).args(args).output() {
        Ok(o) if o.status.success() => Some(String::from_utf8(o.stdout).unwrap()),
        Ok(o) => {
            eprintln!(
                "SKIP {what}: setarch failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP {what}: setarch not runnable: {e}");
            None
        }
    }
}

/// What the helper reported before it acted.
pub struct StartState {
    pub rlimit_stack: u64,
    pub rlimit_data: u64,
    pub rlimit_as: u64,
    /// The break exec left (also in `stat.brk`).
    pub brk0: u64,
    pub stat: ProcStat,
    pub maps: Vec<SnapshotVma>,
}

impl StartState {
    /// The model at this starting state with the mappings `maps` (usually `self.maps`),
    /// configured as this machine (its vm sysctls, RAM and swap) with the helper's rlimits, in
    /// the given layout. Its break is the helper's.
    pub fn model_space(&self, kind: TaskKind, legacy: bool, maps: &[SnapshotVma]) -> AddressSpace {
        let mut cfg = SpaceConfig::linux_default(kind);
        cfg.legacy_layout = legacy;
        cfg.mmap_min_addr = sysctl("mmap_min_addr");
        cfg.overcommit_memory = sysctl("overcommit_memory") as u32;
        cfg.overcommit_ratio = sysctl("overcommit_ratio");
        cfg.max_map_count = sysctl("max_map_count");
        cfg.total_ram_pages = meminfo_kb("MemTotal:") / 4;
        cfg.total_swap_pages = meminfo_kb("SwapTotal:") / 4;
        cfg.rlimit_stack = self.rlimit_stack;
        cfg.rlimit_data = self.rlimit_data;
        cfg.rlimit_as = self.rlimit_as;
        let s = AddressSpace::from_snapshot(cfg, maps, &self.stat).unwrap();
        assert_eq!(
            s.brk_value(),
            self.brk0,
            "the model's break is the helper's"
        );
        s
    }
}

/// `/proc/sys/vm/NAME` on this machine.
pub fn sysctl(name: &str) -> u64 {
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

/// Reads the starting state from the helper's output; returns it with the program's own
/// lines after it, split at the first space into (key, value), in order.
pub fn parse(text: &str) -> (StartState, Vec<(&str, &str)>) {
    let mut s = StartState {
        rlimit_stack: 0,
        rlimit_data: 0,
        rlimit_as: 0,
        brk0: 0,
        stat: ProcStat::default(),
        maps: Vec::new(),
    };
    let mut rest = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
        match k {
            "rlimit_stack" => s.rlimit_stack = v.parse().unwrap(),
            "rlimit_data" => s.rlimit_data = v.parse().unwrap(),
            "rlimit_as" => s.rlimit_as = v.parse().unwrap(),
            "brk0" => s.brk0 = hex(v),
            "stat" => {
                s.stat = ProcStat::parse(lines.next().unwrap()).expect("a /proc/self/stat line");
                assert_eq!(lines.next(), Some("end"));
            }
            "maps" => {
                for m in lines.by_ref().take_while(|m| *m != "end") {
                    s.maps
                        .push(SnapshotVma::parse_maps_line(m).expect("a /proc/self/maps line"));
                }
            }
            _ => rest.push((k, v)),
        }
    }
    s.stat.brk = s.brk0;
    (s, rest)
}
