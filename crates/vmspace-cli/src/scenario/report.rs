//! What a scenario run shows: the story step by step, then the address spaces (maps with
//! resident sizes and what each mapping is), the stacks, the heaps, the fault counters and
//! the expectations; as text for a reader or as one JSON document (`--json`).

use super::engine::{bytes, Run};
use super::format::{Arch, HeapKind};
use serde_json::{json, Value};
use std::fmt::Write as _;
use vmspace_sim::heap_source::RegionKind;
use vmspace_sim::{Stack, ThreadEnd};

const PAGE: u64 = 4096;
/// Most lines of one process's maps in text (the middle is counted).
const MAX_MAPS_ROWS: usize = 60;
/// Most rows of the stack table in text (the rest are counted).
const MAX_STACK_ROWS: usize = 24;

/// One thread's stack as the report shows it.
struct StackRow {
    thread: String,
    process: String,
    style: &'static str,
    range: Option<(u64, u64)>,
    reserved: u64,
    committed_pages: u64,
    resident_pages: u64,
    guard_pages: u64,
    max_depth: u64,
    state: String,
}

fn stack_rows(run: &Run) -> Vec<StackRow> {
    let m = run.machine.borrow();
    let mut rows = Vec::new();
    for (ti, t) in run.threads.iter().enumerate() {
        let Some(th) = m.thread(t.tid) else { continue };
        let stack = t.stack_at_exit.unwrap_or(th.stack);
        let pid = run.procs[t.proc].pid;
        let alive = m.process(pid).is_some() && !matches!(th.ended, Some(ThreadEnd::Exited));
        let resident = |lo: u64, hi: u64| -> u64 {
            if !alive {
                return 0;
            }
            (lo / PAGE..hi / PAGE)
                .filter(|p| m.walk(pid, p * PAGE).is_some())
                .count() as u64
        };
        let row = match stack {
            Stack::Reserved {
                base,
                reserve,
                committed,
                guard_pages,
                overflowed,
            } => StackRow {
                thread: t.name.clone(),
                process: run.procs[t.proc].name.clone(),
                style: "reserve/commit",
                range: Some((base, base + reserve)),
                reserved: reserve,
                committed_pages: (base + reserve - committed) / PAGE,
                resident_pages: resident(base, base + reserve),
                guard_pages: if overflowed { 0 } else { guard_pages },
                max_depth: t.max_depth.max(t.overflow_depth.unwrap_or(0)),
                state: run.thread_state(ti),
            },
            Stack::Pthread { base, size, guard } => StackRow {
                thread: t.name.clone(),
                process: run.procs[t.proc].name.clone(),
                style: "pthread",
                range: Some((base, base + size)),
                reserved: size,
                committed_pages: (size - guard) / PAGE,
                resident_pages: resident(base, base + size),
                guard_pages: guard / PAGE,
                max_depth: t.max_depth.max(t.overflow_depth.unwrap_or(0)),
                state: run.thread_state(ti),
            },
            Stack::Main { top } => {
                let vma = m.process(pid).and_then(|p| {
                    p.space()
                        .vmas()
                        .find(|v| v.end == top)
                        .map(|v| (v.start, v.end))
                });
                let (lo, hi) = vma.unwrap_or((top, top));
                StackRow {
                    thread: t.name.clone(),
                    process: run.procs[t.proc].name.clone(),
                    style: "main (grows down)",
                    range: vma,
                    reserved: m
                        .process(pid)
                        .map(|p| p.space().config().rlimit_stack)
                        .unwrap_or(0),
                    committed_pages: (hi - lo) / PAGE,
                    resident_pages: resident(lo, hi),
                    guard_pages: 0,
                    max_depth: t.max_depth.max(t.overflow_depth.unwrap_or(0)),
                    state: run.thread_state(ti),
                }
            }
        };
        rows.push(row);
    }
    rows
}

/// One line of a process's maps: the /proc/pid/maps text, what the mapping is, its RSS.
struct MapsRow {
    line: String,
    what: Option<String>,
    rss_kb: u64,
}

/// The maps of every running process: (process name, pid, rows).
fn maps(run: &Run) -> Vec<(String, u32, Vec<MapsRow>)> {
    let m = run.machine.borrow();
    let mut out = Vec::new();
    for (pi, p) in run.procs.iter().enumerate() {
        let Ok(smaps) = m.smaps(p.pid) else { continue };
        let rows = smaps
            .iter()
            .map(|e| {
                let line = format!(
                    "{:08x}-{:08x} {} {}",
                    e.start,
                    e.end,
                    String::from_utf8_lossy(&e.perms),
                    e.name
                );
                // What the mapping is: a label of its first, last or middle page.
                let mid = (e.start + (e.end - e.start) / 2) & !(PAGE - 1);
                let what = run
                    .label_of(pi, e.start)
                    .or_else(|| run.label_of(pi, e.end - 1))
                    .or_else(|| run.label_of(pi, mid));
                MapsRow {
                    line: line.trim_end().to_string(),
                    what,
                    rss_kb: e.rss_kb,
                }
            })
            .collect();
        out.push((p.name.clone(), p.pid, rows));
    }
    out
}

/// The report as text.
pub fn text(run: &Run) -> String {
    let mut s = String::new();
    let bits = if run.arch == Arch::I386 {
        "32-bit i386"
    } else {
        "64-bit x86-64"
    };
    let _ = writeln!(
        s,
        "vmspace {}: a simulated {bits} machine with {} of RAM",
        run.name,
        bytes(run.ram)
    );
    if let Some(d) = &run.description {
        for l in d.trim().lines() {
            let _ = writeln!(s, "  {}", l.trim());
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Start");
    for l in &run.setup {
        let _ = writeln!(s, "   {l}");
    }
    for st in &run.steps {
        let _ = writeln!(s);
        match &st.note {
            Some(n) => {
                let _ = writeln!(s, "{:>2}. {}", st.n, n.trim());
            }
            None => {
                let _ = writeln!(s, "{:>2}. ({})", st.n, st.kind);
            }
        }
        for l in &st.lines {
            let _ = writeln!(s, "    - {l}");
        }
    }
    // Address spaces.
    for (name, pid, lines) in maps(run) {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Address space of {name:?} (pid {pid}), as /proc/{pid}/maps with resident sizes"
        );
        let w = lines.iter().map(|l| l.line.len()).max().unwrap_or(0);
        let n = lines.len();
        for (i, r) in lines.into_iter().enumerate() {
            // Very long maps (hundreds of stacks): the first and last lines; --json has all.
            if n > MAX_MAPS_ROWS && i >= MAX_MAPS_ROWS / 2 && i < n - MAX_MAPS_ROWS / 4 {
                if i == MAX_MAPS_ROWS / 2 {
                    let _ = writeln!(
                        s,
                        "  … {} more mappings (--json lists them all)",
                        n - MAX_MAPS_ROWS / 2 - MAX_MAPS_ROWS / 4
                    );
                }
                continue;
            }
            let _ = writeln!(
                s,
                "  {:<w$}  {:>8}  {}",
                r.line,
                format!("{} kB", r.rss_kb),
                r.what.unwrap_or_default()
            );
        }
    }
    // Stacks.
    let rows = stack_rows(run);
    let _ = writeln!(s);
    let _ = writeln!(s, "Stacks (committed = pages usable without a fault refusing them; resident = pages with a frame)");
    let _ = writeln!(
        s,
        "  {:<14} {:<10} {:<18} {:>10} {:>9} {:>8} {:>6} {:>10}  state",
        "thread", "process", "style", "reserved", "committed", "resident", "guard", "max depth"
    );
    for r in rows.iter().take(MAX_STACK_ROWS) {
        let _ = writeln!(
            s,
            "  {:<14} {:<10} {:<18} {:>10} {:>9} {:>8} {:>6} {:>10}  {}",
            r.thread,
            r.process,
            r.style,
            // A main stack whose process is gone has no limit left to show.
            if r.reserved == 0 {
                "-".to_string()
            } else {
                bytes(r.reserved)
            },
            format!("{} pg", r.committed_pages),
            format!("{} pg", r.resident_pages),
            format!("{} pg", r.guard_pages),
            bytes(r.max_depth),
            r.state
        );
    }
    if rows.len() > MAX_STACK_ROWS {
        let _ = writeln!(s, "  … and {} more", rows.len() - MAX_STACK_ROWS);
    }
    // Heaps.
    if !run.heaps.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Heaps (committed = held from the process; resident = pages with a frame; fragmentation = 1 - live / committed)"
        );
        let _ = writeln!(
            s,
            "  {:<10} {:<10} {:<16} {:>10} {:>10} {:>10} {:>8} {:>7} {:>8} {:>8} {:>6}",
            "heap",
            "process",
            "kind",
            "live",
            "committed",
            "resident",
            "segments",
            "blocks",
            "allocs",
            "frees",
            "frag"
        );
        for h in &run.heaps {
            let _ = writeln!(
                s,
                "  {:<10} {:<10} {:<16} {:>10} {:>10} {:>10} {:>8} {:>7} {:>8} {:>8} {:>5.0}%{}",
                h.name,
                run.procs[h.proc].name,
                kind_name(h.kind, h.fit),
                bytes(h.stats.live_bytes as u64),
                bytes(h.stats.committed_bytes as u64),
                bytes(heap_resident(run, h) * PAGE),
                // A chunk heap grows the break and has no segments.
                if h.kind == HeapKind::Chunk {
                    "-".to_string()
                } else {
                    h.stats.segments.to_string()
                },
                h.live_blocks(),
                h.allocs,
                h.frees,
                h.stats.fragmentation * 100.0,
                if h.alive() {
                    ""
                } else {
                    "  (gone with its process: live, committed and blocks as it ended)"
                }
            );
        }
    }
    // Counters.
    let m = run.machine.borrow();
    let c = m.counters();
    let _ = writeln!(s);
    let _ = writeln!(s, "Faults and events");
    for (k, v, what) in counter_rows(c) {
        let _ = writeln!(s, "  {k:<18} {v:>8}  {what}");
    }
    let _ = writeln!(
        s,
        "  {:<18} {:>8}  of {} frames ({} free)",
        "frames used",
        m.frames_used(),
        m.ram_frames(),
        m.frames_free()
    );
    for r in m.oom_reports() {
        let _ = writeln!(s, "  {r}");
    }
    drop(m);
    if !run.checks.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Expected outcomes");
        for c in &run.checks {
            let _ = writeln!(
                s,
                "  [{}] {} — {}",
                if c.ok { "ok" } else { "FAILED" },
                c.what,
                c.detail
            );
        }
    }
    s
}

/// Pages of heap `h`'s segments or break that have a frame in its process.
fn heap_resident(run: &Run, h: &super::engine::HeapSt) -> u64 {
    if !h.alive() {
        return 0;
    }
    let p = &run.procs[h.proc];
    let m = run.machine.borrow();
    p.space
        .regions()
        .iter()
        .filter(|r| {
            matches!(
                (r.kind, h.kind),
                (RegionKind::Segments, HeapKind::SizeClass) | (RegionKind::Break, HeapKind::Chunk)
            )
        })
        .map(|r| {
            (r.start / PAGE..(r.start + r.len).div_ceil(PAGE))
                .filter(|pg| m.walk(p.pid, pg * PAGE).is_some())
                .count() as u64
        })
        .sum()
}

fn kind_name(k: HeapKind, fit: Option<super::format::Fit>) -> String {
    match k {
        HeapKind::SizeClass => "size-class".into(),
        HeapKind::Chunk => format!(
            "chunk {}-fit",
            format!("{:?}", fit.unwrap_or(super::format::Fit::First)).to_lowercase()
        ),
    }
}

fn counter_rows(c: &vmspace_sim::Counters) -> Vec<(&'static str, u64, &'static str)> {
    vec![
        (
            "demand-zero",
            c.demand_zero,
            "first writes that got a fresh zeroed frame",
        ),
        (
            "zero-page maps",
            c.zero_page_maps,
            "first reads that mapped the shared zero page",
        ),
        (
            "cow copies",
            c.cow_copies,
            "writes to a shared page after fork that copied it",
        ),
        (
            "cow reuses",
            c.cow_reuses,
            "writes to a page no longer shared: made writable in place",
        ),
        (
            "guard commits",
            c.guard_commits,
            "reserve/commit stack pages committed by a guard-page touch",
        ),
        (
            "stack growths",
            c.stack_growths,
            "faults that grew a main stack VMA",
        ),
        (
            "stack overflows",
            c.stack_overflows,
            "threads stopped by a stack overflow",
        ),
        (
            "guard exceptions",
            c.guard_page_violations,
            "guard-page exceptions raised in reservations (each commits a page or overflows)",
        ),
        (
            "access violations",
            c.access_violations,
            "touches of reserved, uncommitted memory",
        ),
        (
            "segv",
            c.segv_maperr + c.segv_accerr,
            "SIGSEGV raised (no mapping or no permission)",
        ),
        (
            "out of memory",
            c.out_of_memory,
            "faults that found no free frame",
        ),
        (
            "oom kills",
            c.oom_kills,
            "processes ended by the OOM killer",
        ),
        ("faults", c.faults(), "page faults handled in all"),
        ("tlb hits", c.tlb_hits, "accesses translated by the TLB"),
        (
            "tlb misses",
            c.tlb_misses,
            "accesses that walked the page tables",
        ),
    ]
}

/// The report as one JSON document.
pub fn json(run: &Run) -> Value {
    let m = run.machine.borrow();
    let c = *m.counters();
    let oom: Vec<Value> = m
        .oom_reports()
        .iter()
        .map(|r| {
            let name = run
                .procs
                .iter()
                .find(|p| p.pid == r.victim)
                .map(|p| p.name.clone());
            json!({
                "victim": name, "victim_pid": r.victim, "faulting_pid": r.faulting,
                "addr": r.addr, "victim_rss_pages": r.victim_rss.total(), "points": r.points,
                "frames_free_after": r.frames_free_after, "message": r.to_string(),
            })
        })
        .collect();
    let processes: Vec<Value> = run
        .procs
        .iter()
        .map(|p| {
            let live = m.process(p.pid);
            json!({
                "name": p.name, "pid": p.pid, "parent": p.parent,
                "state": match p.end { None => "running".to_string(), Some(e) => format!("{e:?}") },
                "rss_pages": live.map(|q| q.rss().total()),
                "vmas": live.map(|q| q.space().vmas().count()),
            })
        })
        .collect();
    let frames = (m.frames_used(), m.ram_frames(), m.frames_free());
    drop(m);
    let stacks: Vec<Value> = stack_rows(run)
        .into_iter()
        .map(|r| {
            json!({
                "thread": r.thread, "process": r.process, "style": r.style,
                "start": r.range.map(|x| x.0), "end": r.range.map(|x| x.1),
                "reserved": r.reserved, "committed_pages": r.committed_pages,
                "resident_pages": r.resident_pages, "guard_pages": r.guard_pages,
                "max_depth": r.max_depth, "state": r.state,
            })
        })
        .collect();
    let heaps: Vec<Value> = run
        .heaps
        .iter()
        .map(|h| {
            json!({
                "name": h.name, "process": run.procs[h.proc].name,
                "kind": kind_name(h.kind, h.fit), "live_bytes": h.stats.live_bytes,
                "committed_bytes": h.stats.committed_bytes, "segments": h.stats.segments,
                "resident_pages": heap_resident(run, h),
                "fragmentation": h.stats.fragmentation, "blocks": h.live_blocks(),
                "allocs": h.allocs, "frees": h.frees, "peak_live_bytes": h.peak_live,
                "exhausted": h.exhausted, "alive": h.alive(),
            })
        })
        .collect();
    let maps: Vec<Value> = maps(run)
        .into_iter()
        .map(|(name, pid, lines)| {
            json!({
                "process": name, "pid": pid,
                "lines": lines.into_iter().map(|r| json!({"line": r.line, "what": r.what, "rss_kb": r.rss_kb})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "scenario": run.name,
        "arch": match run.arch { Arch::I386 => "i386", Arch::X86_64 => "x86_64" },
        "ram": run.ram,
        "setup": run.setup,
        "steps": run.steps.iter().map(|s| json!({"n": s.n, "do": s.kind, "note": s.note, "events": s.lines})).collect::<Vec<_>>(),
        "processes": processes,
        "maps": maps,
        "stacks": stacks,
        "heaps": heaps,
        "counters": {
            "demand_zero": c.demand_zero, "zero_page_maps": c.zero_page_maps,
            "cow_copies": c.cow_copies, "cow_reuses": c.cow_reuses,
            "guard_commits": c.guard_commits, "stack_growths": c.stack_growths,
            "stack_overflows": c.stack_overflows, "segv": c.segv_maperr + c.segv_accerr,
            "guard_page_violations": c.guard_page_violations, "access_violations": c.access_violations,
            "out_of_memory": c.out_of_memory, "oom_kills": c.oom_kills, "faults": c.faults(),
            "tlb_hits": c.tlb_hits, "tlb_misses": c.tlb_misses,
            "frames_used": frames.0, "frames": frames.1, "frames_free": frames.2,
        },
        "oom": oom,
        "expectations": run.checks.iter().map(|c| json!({"what": c.what, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
        "ok": run.ok(),
    })
}
