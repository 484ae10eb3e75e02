//! Runs a scenario on a simulated [`Machine`]: starts its processes (an exec'd static
//! program each, with threads and heaps living inside the process), performs the steps in
//! order, says in plain words what each did, records what the pictures need, and checks the
//! expected outcomes.
//!
//! Heaps are `vmspace-heap`'s size-class and chunk heaps over
//! [`ProcessHeapSpace`](vmspace_sim::heap_source::ProcessHeapSpace): their segments and
//! break are mappings of the simulated process and every block a step allocates is touched
//! through the simulated CPU (page by page, as the thread that allocates it), so blocks
//! fault in, count in RSS and use simulated frames. A recursion writes its thread's stack
//! page by page downward, as calls with a frame of that size would.

use super::format::*;
use super::record::Recorder;
use crate::rng::SplitMix64;
use std::alloc::Layout;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use vmspace::space::abi::*;
use vmspace::space::{SpaceConfig, TaskKind};
use vmspace_heap::{ChunkHeap, FitPolicy, HeapStats, SizeClassHeap};
use vmspace_sim::heap_source::{ProcessHeapSpace, SimBrk, SimSegments};
use vmspace_sim::{
    ArchKind, Machine, OverflowPolicy, Pid, ProcessEnd, Stack, StackStyle, Stop, ThreadEnd, Tid,
};

const PAGE: u64 = 4096;
/// Most threads one `spawn` step starts.
const MAX_SPAWN: u64 = 100_000;
/// How a step that cannot run (its thread stopped earlier) starts its one line.
const SKIP: &str = "skipped: ";
/// Most blocks one `leak` step allocates unless told.
const MAX_LEAK: u64 = 1_000_000;

/// A heap of either kind, inside a simulated process.
pub enum HeapImpl {
    SizeClass(SizeClassHeap<SimSegments>),
    Chunk(Box<ChunkHeap<SimBrk>>),
}

impl HeapImpl {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        match self {
            HeapImpl::SizeClass(h) => h.alloc(l),
            HeapImpl::Chunk(h) => h.alloc(l),
        }
    }

    /// Frees a block this heap handed out.
    fn free(&mut self, p: *mut u8) -> Result<(), String> {
        // SAFETY: callers pass blocks of this heap that are live (the engine's block list
        // holds each once and removes it here).
        let r = unsafe {
            match self {
                HeapImpl::SizeClass(h) => h.try_free(p),
                HeapImpl::Chunk(h) => h.try_free(p),
            }
        };
        r.map_err(|e| format!("{e:?}"))
    }

    fn stats(&self) -> HeapStats {
        match self {
            HeapImpl::SizeClass(h) => h.stats(),
            HeapImpl::Chunk(h) => h.stats(),
        }
    }
}

/// A process of the scenario.
pub struct Proc {
    pub name: String,
    pub pid: Pid,
    pub space: ProcessHeapSpace,
    /// Labels of mappings made by `mmap` steps.
    pub labels: Vec<(u64, u64, String)>,
    pub layout: LayoutKind,
    /// The process it was forked from.
    pub parent: Option<String>,
    /// How it ended, once it has.
    pub end: Option<ProcessEnd>,
}

/// A thread of the scenario.
pub struct Th {
    pub name: String,
    pub tid: Tid,
    pub proc: usize,
    /// Bytes of stack in use now (below the top).
    pub depth: u64,
    /// Deepest the stack went.
    pub max_depth: u64,
    /// Depth at which the stack overflowed.
    pub overflow_depth: Option<u64>,
    /// The stack as it was when the thread exited (its mapping is gone since).
    pub stack_at_exit: Option<Stack>,
}

/// A heap of the scenario.
pub struct HeapSt {
    pub name: String,
    pub proc: usize,
    pub kind: HeapKind,
    pub fit: Option<Fit>,
    imp: Option<HeapImpl>,
    /// Live blocks: host pointer and size.
    blocks: Vec<(*mut u8, usize)>,
    pub allocs: u64,
    pub frees: u64,
    /// Why the process refused the heap memory, if it did.
    pub exhausted: Option<String>,
    /// The last statistics (kept once the heap is gone with its process).
    pub stats: HeapStats,
    pub peak_live: usize,
    /// Most a chunk heap's break may grow.
    pub max: u64,
}

impl HeapSt {
    /// Live blocks; once the heap is gone with its process, those it held then (as its
    /// kept statistics are).
    pub fn live_blocks(&self) -> usize {
        if self.alive() {
            self.blocks.len()
        } else {
            (self.allocs - self.frees) as usize
        }
    }

    /// Whether the heap still exists (its process runs).
    pub fn alive(&self) -> bool {
        self.imp.is_some()
    }
}

/// What one step did.
pub struct StepLog {
    pub n: usize,
    pub kind: &'static str,
    pub note: Option<String>,
    pub lines: Vec<String>,
}

/// One checked expectation.
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// A scenario run: the machine, what is on it, and what happened.
pub struct Run {
    pub name: String,
    pub description: Option<String>,
    pub arch: Arch,
    pub ram: u64,
    pub machine: Rc<RefCell<Machine>>,
    pub procs: Vec<Proc>,
    pub threads: Vec<Th>,
    pub heaps: Vec<HeapSt>,
    /// What starting the processes did.
    pub setup: Vec<String>,
    pub steps: Vec<StepLog>,
    pub rec: Recorder,
    pub checks: Vec<Check>,
    clock: u64,
    oom_seen: usize,
}

/// The index of `name` among `names`, or why there is none ("no `what` named ...").
fn named<'a>(
    mut names: impl Iterator<Item = &'a String>,
    name: &str,
    what: &str,
) -> Result<usize, String> {
    names
        .position(|n| n == name)
        .ok_or(format!("no {what} named {name:?}"))
}

/// `n` bytes in the largest unit that keeps it short (`64 KiB`, `3.5 MiB`).
pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        return format!("{n} bytes");
    }
    let t = format!("{v:.1}");
    format!("{} {}", t.strip_suffix(".0").unwrap_or(&t), U[i])
}

/// Checks names and references before anything runs.
fn validate(sc: &Scenario) -> Result<(), String> {
    let mut procs = BTreeSet::new();
    let mut threads = BTreeSet::new();
    let mut heaps = BTreeSet::new();
    let dup = |what: &str, n: &str| format!("{what} name {n:?} is used twice");
    for p in &sc.processes {
        if !procs.insert(p.name.clone()) {
            return Err(dup("process", &p.name));
        }
        let main = p.main.clone().unwrap_or(format!("{}-main", p.name));
        if !threads.insert(main.clone()) {
            return Err(dup("thread", &main));
        }
        for t in &p.threads {
            if !threads.insert(t.name.clone()) {
                return Err(dup("thread", &t.name));
            }
        }
        if p.heaps.iter().filter(|h| h.kind == HeapKind::Chunk).count() > 1 {
            return Err(format!(
                "process {:?}: at most one chunk heap (a process has one program break)",
                p.name
            ));
        }
        for h in &p.heaps {
            if !heaps.insert(h.name.clone()) {
                return Err(dup("heap", &h.name));
            }
            if h.fit.is_some() && h.kind != HeapKind::Chunk {
                return Err(format!("heap {:?}: `fit` is for chunk heaps", h.name));
            }
        }
    }
    let ram = sc.machine.ram.0;
    if ram == 0 || ram % PAGE != 0 || ram > 1 << 30 {
        return Err(format!(
            "machine.ram: {} is not a positive multiple of 4 KiB up to 1 GiB",
            bytes(ram)
        ));
    }
    for (i, s) in sc.steps.iter().enumerate() {
        let bad = |m: String| Err(format!("step {} ({}): {m}", i + 1, s.kind()));
        match s {
            Step::Free(f) if !(0.0..=1.0).contains(&f.fraction) => {
                return bad(format!("fraction {} is not in 0..1", f.fraction))
            }
            Step::Write(w) if !(0.0..=1.0).contains(&w.fraction) => {
                return bad(format!("fraction {} is not in 0..1", w.fraction))
            }
            Step::Recurse(r) if r.frame.0 == 0 => return bad("frame must be positive".into()),
            Step::Touch(t) if t.heap.is_none() && (t.addr.is_none() || t.len.is_none()) => {
                return bad("give `heap`, or `addr` and `len`".into())
            }
            Step::Spawn(s) if s.count.is_none() && !s.until_full => {
                return bad("give `count` or `until_full = true`".into())
            }
            _ => {}
        }
    }
    Ok(())
}

impl Run {
    /// Starts the scenario's machine and processes (`arch` overrides the file's).
    pub fn start(sc: &Scenario, arch: Option<Arch>) -> Result<Run, String> {
        validate(sc)?;
        let arch = arch.unwrap_or(sc.machine.arch);
        let ram = sc.machine.ram.0;
        let mut m = Machine::new(ram).map_err(|e| format!("machine: {e:?}"))?;
        m.policy = match sc.machine.overflow {
            Overflow::StopThread => OverflowPolicy::StopThread,
            Overflow::KillProcess => OverflowPolicy::KillProcess,
        };
        let mut run = Run {
            name: sc.name.clone(),
            description: sc.description.clone(),
            arch,
            ram,
            machine: Rc::new(RefCell::new(m)),
            procs: Vec::new(),
            threads: Vec::new(),
            heaps: Vec::new(),
            setup: Vec::new(),
            steps: Vec::new(),
            rec: Recorder::default(),
            checks: Vec::new(),
            clock: 0,
            oom_seen: 0,
        };
        for p in &sc.processes {
            run.start_process(p, sc.machine.layout)?;
        }
        run.record_all();
        Ok(run)
    }

    fn arch_kind(&self) -> ArchKind {
        match self.arch {
            Arch::I386 => ArchKind::I386,
            Arch::X86_64 => ArchKind::X86_64,
        }
    }

    fn start_process(&mut self, spec: &ProcessSpec, layout: LayoutKind) -> Result<(), String> {
        let layout = spec.layout.unwrap_or(layout);
        let kind = match self.arch {
            Arch::I386 => TaskKind::I386Native,
            Arch::X86_64 => TaskKind::X86_64,
        };
        let mut cfg = SpaceConfig::linux_default(kind);
        cfg.legacy_layout = layout == LayoutKind::Legacy;
        if let Some(l) = spec.stack_limit {
            cfg.rlimit_stack = l.0;
        }
        let space = crate::layout::exec_space(cfg);
        let brk = space.brk_value();
        let pid = self
            .machine
            .borrow_mut()
            .spawn_from_space(self.arch_kind(), space)
            .map_err(|e| format!("process {:?}: {e:?}", spec.name))?;
        let pi = self.procs.len();
        self.procs.push(Proc {
            name: spec.name.clone(),
            pid,
            space: ProcessHeapSpace::new(self.machine.clone(), pid),
            labels: Vec::new(),
            layout,
            parent: None,
            end: None,
        });
        let main_tid = self.machine.borrow().process(pid).map(|p| p.threads[0]);
        let main = spec.main.clone().unwrap_or(format!("{}-main", spec.name));
        let top = self.stack_of(main_tid.unwrap_or(0)).map(|s| s.top());
        self.setup.push(format!(
            "process {:?} (pid {pid}): a static program, {} layout; program break at {brk:#x}; \
             main thread {main:?} with its stack below {:#x}",
            spec.name,
            match layout {
                LayoutKind::Topdown => "top-down",
                LayoutKind::Legacy => "legacy (bottom-up)",
            },
            top.unwrap_or(0)
        ));
        self.threads.push(Th {
            name: main,
            tid: main_tid.unwrap_or(0),
            proc: pi,
            depth: 0,
            max_depth: 0,
            overflow_depth: None,
            stack_at_exit: None,
        });
        for t in &spec.threads {
            let tid = self.spawn_thread(pi, &t.name, t.stack)?;
            let line = self.describe_stack(tid, &t.name);
            self.setup.push(format!("  {line}"));
        }
        for h in &spec.heaps {
            let mut max = u64::MAX;
            let imp = match h.kind {
                HeapKind::SizeClass => {
                    HeapImpl::SizeClass(SizeClassHeap::new(self.procs[pi].space.segments()))
                }
                HeapKind::Chunk => {
                    let room = {
                        let m = self.machine.borrow();
                        let task = m
                            .process(pid)
                            .map(|p| p.space().layout().task_size)
                            .unwrap_or(0);
                        task.saturating_sub(brk)
                    };
                    max = h.max.map(|s| s.0).unwrap_or(room.min(1 << 32));
                    let src = self.procs[pi]
                        .space
                        .brk(max)
                        .ok_or(format!("heap {:?}: no program break to grow", h.name))?;
                    let fit = match h.fit.unwrap_or(Fit::First) {
                        Fit::First => FitPolicy::First,
                        Fit::Best => FitPolicy::Best,
                        Fit::Worst => FitPolicy::Worst,
                        Fit::Next => FitPolicy::Next,
                    };
                    HeapImpl::Chunk(Box::new(ChunkHeap::new(src, fit)))
                }
            };
            self.setup.push(format!(
                "  heap {:?}: {}",
                h.name,
                match h.kind {
                    HeapKind::SizeClass =>
                        "size-class heap (lookaside lists per size class; 64 KiB segments mmap'd in the process)"
                            .to_string(),
                    HeapKind::Chunk => format!(
                        "chunk heap ({}-fit, boundary tags, coalescing; grows the program break with brk)",
                        match h.fit.unwrap_or(Fit::First) {
                            Fit::First => "first",
                            Fit::Best => "best",
                            Fit::Worst => "worst",
                            Fit::Next => "next",
                        }
                    ),
                }
            ));
            self.heaps.push(HeapSt {
                max,
                name: h.name.clone(),
                proc: pi,
                kind: h.kind,
                fit: h.fit,
                imp: Some(imp),
                blocks: Vec::new(),
                allocs: 0,
                frees: 0,
                exhausted: None,
                stats: HeapStats::default(),
                peak_live: 0,
            });
        }
        Ok(())
    }

    fn stack_of(&self, tid: Tid) -> Option<Stack> {
        self.machine.borrow().thread(tid).map(|t| t.stack)
    }

    fn spawn_thread(&mut self, pi: usize, name: &str, st: StackSpec) -> Result<Tid, String> {
        let style = match st {
            StackSpec::ReserveCommit {
                reserve,
                commit,
                guard_pages,
            } => StackStyle::ReserveCommit {
                reserve: reserve.0,
                commit: commit.0,
                guard_pages,
            },
            StackSpec::Pthread { size, guard } => StackStyle::Pthread {
                size: size.0,
                guard: guard.0,
            },
        };
        let pid = self.procs[pi].pid;
        let tid = self
            .machine
            .borrow_mut()
            .spawn_thread(pid, style)
            .map_err(|e| format!("thread {name:?}: {}", sim_error(&e)))?;
        self.threads.push(Th {
            name: name.to_string(),
            tid,
            proc: pi,
            depth: 0,
            max_depth: 0,
            overflow_depth: None,
            stack_at_exit: None,
        });
        Ok(tid)
    }

    fn describe_stack(&self, tid: Tid, name: &str) -> String {
        match self.stack_of(tid) {
            Some(Stack::Reserved {
                base,
                reserve,
                committed,
                guard_pages,
                ..
            }) => format!(
                "thread {name:?} (tid {tid}): reserve/commit stack {base:#x}-{:#x}: {} reserved, \
                 {} committed, {guard_pages} guard page(s) below",
                base + reserve,
                bytes(reserve),
                bytes(base + reserve - committed)
            ),
            Some(Stack::Pthread { base, size, guard }) => format!(
                "thread {name:?} (tid {tid}): pthread stack {base:#x}-{:#x}: {} with a {} guard",
                base + size,
                bytes(size),
                bytes(guard)
            ),
            Some(Stack::Main { top }) => {
                format!("thread {name:?} (tid {tid}): main stack below {top:#x}")
            }
            None => format!("thread {name:?}: no stack"),
        }
    }

    fn proc_idx(&self, name: &str) -> Result<usize, String> {
        named(self.procs.iter().map(|p| &p.name), name, "process")
    }

    fn thread_idx(&self, name: &str) -> Result<usize, String> {
        named(self.threads.iter().map(|t| &t.name), name, "thread")
    }

    fn heap_idx(&self, name: &str) -> Result<usize, String> {
        named(self.heaps.iter().map(|h| &h.name), name, "heap")
    }

    /// The thread a heap step runs on: `name`, or the heap's process's main thread.
    fn worker(&self, h: usize, name: &Option<String>) -> Result<usize, String> {
        match name {
            Some(n) => self.thread_idx(n),
            None => self
                .threads
                .iter()
                .position(|t| t.proc == self.heaps[h].proc)
                .ok_or("the heap's process has no thread".into()),
        }
    }

    fn running(&self, ti: usize) -> bool {
        self.machine
            .borrow()
            .thread(self.threads[ti].tid)
            .is_some_and(|t| t.ended.is_none())
    }

    /// Runs every step, then checks `expect`; `progress(i)` is called before step `i`.
    pub fn run_steps(
        &mut self,
        sc: &Scenario,
        mut progress: impl FnMut(usize),
    ) -> Result<(), String> {
        for (i, s) in sc.steps.iter().enumerate() {
            progress(i);
            let mut log = StepLog {
                n: i + 1,
                kind: s.kind(),
                note: s.note().map(str::to_string),
                lines: Vec::new(),
            };
            match self.step(s, &mut log.lines) {
                Ok(()) => {}
                // A thread stopped earlier (overflow, OOM kill): the story goes on without it.
                Err(e) if e.starts_with(SKIP) => log.lines.push(e),
                Err(e) => return Err(format!("step {} ({}): {e}", i + 1, s.kind())),
            }
            self.reap(&mut log.lines);
            self.record_all();
            self.steps.push(log);
        }
        self.checks = self.check(&sc.expect)?;
        Ok(())
    }

    fn step(&mut self, s: &Step, out: &mut Vec<String>) -> Result<(), String> {
        match s {
            Step::Alloc(a) => self.do_alloc(a, out),
            Step::Free(f) => self.do_free(f, out),
            Step::Leak(l) => self.do_leak(l, out),
            Step::Recurse(r) => self.do_recurse(r, out),
            Step::Touch(t) => self.do_touch(t, out),
            Step::Write(w) => self.do_write(w, out),
            Step::Fork(f) => self.do_fork(f, out),
            Step::Mmap(m) => self.do_mmap(m, out),
            Step::Spawn(s) => self.do_spawn(s, out),
            Step::Exit(e) => self.do_exit(e, out),
        }
    }

    /// Allocates one block of `size` from heap `h` and touches it as thread `ti`; the error
    /// says in words why allocating stops (the heap was refused memory, or the thread
    /// stopped).
    fn alloc_one(
        &mut self,
        h: usize,
        ti: usize,
        size: u64,
        touch: TouchMode,
    ) -> Result<(), String> {
        let Some(imp) = self.heaps[h].imp.as_mut() else {
            return Err(self.stop_text(ti, Stop::NotRunning));
        };
        let Ok(l) = Layout::from_size_align(size as usize, 16) else {
            return Err(self.refusal(h, size));
        };
        let p = imp.alloc(l);
        self.clock += 1;
        if p.is_null() {
            return Err(self.refusal(h, size));
        }
        let heap = &mut self.heaps[h];
        heap.blocks.push((p, size as usize));
        heap.allocs += 1;
        let len = match touch {
            TouchMode::All => size as usize,
            TouchMode::First => 1,
            TouchMode::None => 0,
        };
        let space = self.procs[heap.proc].space.clone();
        match space.touch(self.threads[ti].tid, p, len) {
            Ok(_) => Ok(()),
            Err(s) => Err(self.stop_text(ti, s)),
        }
    }

    fn heap_stats(&mut self, h: usize) -> HeapStats {
        let heap = &mut self.heaps[h];
        if let Some(imp) = &heap.imp {
            heap.stats = imp.stats();
            heap.peak_live = heap.peak_live.max(heap.stats.live_bytes);
        }
        heap.stats
    }

    /// `Ok` if thread `ti` runs; else an error starting with [`SKIP`]: the step is skipped.
    fn check_thread(&self, ti: usize) -> Result<(), String> {
        if self.running(ti) {
            Ok(())
        } else {
            Err(format!(
                "{SKIP}thread {:?} is not running ({})",
                self.threads[ti].name,
                self.thread_state(ti)
            ))
        }
    }

    fn do_alloc(&mut self, a: &Alloc, out: &mut Vec<String>) -> Result<(), String> {
        let h = self.heap_idx(&a.heap)?;
        let ti = self.worker(h, &a.thread)?;
        if !self.heaps[h].alive() {
            out.push(format!("heap {:?} is gone with its process", a.heap));
            return Ok(());
        }
        self.check_thread(ti)?;
        let faults0 = self.machine.borrow().counters().demand_zero;
        let mut rng = SplitMix64::seeded(a.seed);
        let mut done = 0;
        let mut bytes_sum = 0;
        let mut stop = None;
        for _ in 0..a.count {
            let n = rng.range(a.size.lo, a.size.hi);
            if let Err(why) = self.alloc_one(h, ti, n, a.touch) {
                stop = Some(why);
                break;
            }
            done += 1;
            bytes_sum += n;
            if done % 8 == 0 {
                self.record_heap(h);
            }
        }
        let st = self.heap_stats(h);
        self.record_heap(h);
        let faults = self.machine.borrow().counters().demand_zero - faults0;
        out.push(format!(
            "{} allocates {done} blocks of {}..{} bytes ({} in all) from heap {:?}; \
             {faults} pages faulted in (demand-zero)",
            self.threads[ti].name,
            a.size.lo,
            a.size.hi,
            bytes(bytes_sum),
            a.heap
        ));
        out.push(self.heap_line(h, &st));
        if let Some(s) = stop {
            out.push(s);
        }
        Ok(())
    }

    fn heap_line(&self, h: usize, st: &HeapStats) -> String {
        let heap = &self.heaps[h];
        format!(
            "heap {:?}: {} live in {} blocks, {} committed{}, fragmentation {:.0}%",
            heap.name,
            bytes(st.live_bytes as u64),
            heap.blocks.len(),
            bytes(st.committed_bytes as u64),
            if heap.kind == HeapKind::SizeClass {
                format!(" in {} segment(s)", st.segments)
            } else {
                String::new()
            },
            st.fragmentation * 100.0
        )
    }

    /// Why heap `h`'s process refused it memory, in words; marks it exhausted.
    fn refusal(&mut self, h: usize, request: u64) -> String {
        let heap = &self.heaps[h];
        let pid = self.procs[heap.proc].pid;
        let why = {
            let m = self.machine.borrow();
            let Some(p) = m.process(pid) else {
                return format!("heap {:?}: its process is gone", heap.name);
            };
            let sp = p.space();
            match heap.kind {
                HeapKind::Chunk => {
                    let brk = sp.brk_value();
                    let above = sp.vmas().find(|v| v.start >= brk);
                    let used = brk - sp.start_brk();
                    match above {
                        _ if used.saturating_add(request).saturating_add(1 << 16) > heap.max => {
                            format!(
                                "the break grew {} and the heap's limit is {}",
                                bytes(used),
                                bytes(heap.max)
                            )
                        }
                        Some(v) => format!(
                            "brk refused: the break at {brk:#x} cannot grow into the mapping at \
                             {:#x}{} ({} of heap on the break)",
                            v.start,
                            self.label_of(heap.proc, v.start)
                                .or_else(|| {
                                    sp.maps_lines()
                                        .into_iter()
                                        .find(|l| l.start == v.start && !l.name.is_empty())
                                        .map(|l| l.name)
                                })
                                .map(|l| format!(" ({l})"))
                                .unwrap_or_default(),
                            bytes(brk - sp.start_brk())
                        ),
                        None => format!("brk refused at {brk:#x}"),
                    }
                }
                HeapKind::SizeClass => {
                    let mapped: u64 = sp.vmas().map(|v| v.end - v.start).sum();
                    format!(
                        "mmap refused: no room left for another segment ({} of {} mapped)",
                        bytes(mapped),
                        bytes(sp.layout().task_size)
                    )
                }
            }
        };
        let text = format!("heap {:?} is out of memory: {why}", heap.name);
        self.heaps[h].exhausted = Some(why);
        text
    }

    /// What a stopped access means, in words.
    fn stop_text(&self, ti: usize, s: Stop) -> String {
        let t = &self.threads[ti];
        match s {
            Stop::OomKilled => format!(
                "OUT OF MEMORY: no free frame for {}'s page; the OOM killer ended process {:?} itself",
                t.name, self.procs[t.proc].name
            ),
            Stop::OutOfMemory => "OUT OF MEMORY: no frame left and nothing to kill".into(),
            Stop::StackOverflow { addr } => {
                let why = match self.stack_of(t.tid) {
                    Some(Stack::Reserved { base, reserve, .. }) => format!(
                        "the guard reached the last page of its {} reservation ({base:#x}), \
                         the hard guard",
                        bytes(reserve)
                    ),
                    Some(Stack::Pthread { base, guard, .. }) => {
                        format!("it ran into its {} guard at {base:#x}", bytes(guard))
                    }
                    Some(Stack::Main { .. }) => {
                        "the stack could not grow further (RLIMIT_STACK or a mapping below)".into()
                    }
                    None => String::new(),
                };
                format!("STACK OVERFLOW in {} at {addr:#x}: {why}", t.name)
            }
            Stop::Signal(f) => format!("{} got {:?} ({:?}) at {:#x}", t.name, f.signal, f.code, f.addr),
            Stop::NotRunning => format!("{} is not running", t.name),
            other => format!("{} stopped: {other:?}", t.name),
        }
    }

    fn do_free(&mut self, f: &Free, out: &mut Vec<String>) -> Result<(), String> {
        let h = self.heap_idx(&f.heap)?;
        if !self.heaps[h].alive() {
            out.push(format!("heap {:?} is gone with its process", f.heap));
            return Ok(());
        }
        let mut rng = SplitMix64::seeded(f.seed);
        let blocks = std::mem::take(&mut self.heaps[h].blocks);
        let mut keep = Vec::with_capacity(blocks.len());
        let mut freed = 0;
        for (p, n) in blocks {
            if rng.unit() < f.fraction {
                if let Some(imp) = self.heaps[h].imp.as_mut() {
                    imp.free(p)
                        .map_err(|e| format!("heap {:?} refused a free: {e}", f.heap))?;
                }
                freed += 1;
                self.clock += 1;
                if freed % 8 == 0 {
                    self.record_heap(h);
                }
            } else {
                keep.push((p, n));
            }
        }
        self.heaps[h].blocks = keep;
        self.heaps[h].frees += freed;
        let st = self.heap_stats(h);
        self.record_heap(h);
        out.push(format!(
            "{freed} blocks of heap {:?} freed (every block with probability {})",
            f.heap, f.fraction
        ));
        out.push(self.heap_line(h, &st));
        Ok(())
    }

    fn do_leak(&mut self, l: &Leak, out: &mut Vec<String>) -> Result<(), String> {
        let h = self.heap_idx(&l.heap)?;
        let ti = self.worker(h, &l.thread)?;
        if !self.heaps[h].alive() {
            out.push(format!("heap {:?} is gone with its process", l.heap));
            return Ok(());
        }
        self.check_thread(ti)?;
        let pi = self.heaps[h].proc;
        let pid = self.procs[pi].pid;
        let mut rng = SplitMix64::seeded(l.seed);
        let mut n = 0u64;
        let mut total = 0;
        let mut end = None;
        let max = l.max_blocks.unwrap_or(MAX_LEAK);
        // Resident pages at the peak: sampled after every block, and if the OOM killer ended
        // the process, what it had when it was killed.
        let rss = |run: &Self| {
            let m = run.machine.borrow();
            m.process(pid).map(|p| p.rss().total()).unwrap_or(0)
        };
        let reports0 = self.machine.borrow().oom_reports().len();
        let mut peak = rss(self);
        while n < max {
            let size = rng.range(l.size.lo, l.size.hi);
            let got = self.alloc_one(h, ti, size, l.touch);
            peak = peak.max(rss(self));
            if let Err(why) = got {
                end = Some(why);
                break;
            }
            n += 1;
            total += size;
            // Another process may have been the OOM killer's choice.
            if self.machine.borrow().oom_reports().len() > self.oom_seen {
                self.reap(out);
            }
            if n % 16 == 0 {
                self.heap_stats(h);
                self.record_heap(h);
            }
        }
        let killed = self.machine.borrow().oom_reports()[reports0..]
            .iter()
            .filter(|r| r.victim == pid)
            .map(|r| r.victim_rss.total())
            .max();
        peak = peak.max(killed.unwrap_or(0));
        self.heap_stats(h);
        self.record_heap(h);
        out.push(format!(
            "{} leaks {n} blocks of {} from heap {:?} ({} never freed; the process had {} \
             resident at its peak)",
            self.threads[ti].name,
            if l.size.lo == l.size.hi {
                bytes(l.size.lo)
            } else {
                format!("{}..{}", bytes(l.size.lo), bytes(l.size.hi))
            },
            l.heap,
            bytes(total),
            bytes(peak * PAGE)
        ));
        match end {
            Some(e) => out.push(e),
            None => out.push(format!("stopped after {max} blocks")),
        }
        Ok(())
    }

    fn do_recurse(&mut self, r: &Recurse, out: &mut Vec<String>) -> Result<(), String> {
        let ti = self.thread_idx(&r.thread)?;
        self.check_thread(ti)?;
        let tid = self.threads[ti].tid;
        let stack = self.stack_of(tid).ok_or("thread without a stack")?;
        let top = stack.top();
        let frame = r.frame.0;
        let start_depth = self.threads[ti].depth;
        let guard0 = self.machine.borrow().counters().guard_commits;
        let grow0 = self.machine.borrow().counters().stack_growths;
        // The lowest page this recursion has written; pages are written as the stack
        // pointer first enters them.
        let mut low = (top - start_depth).next_multiple_of(PAGE);
        let mut calls = 0u64;
        let mut stop = None;
        let limit = r.depth.unwrap_or(u64::MAX);
        'calls: while calls < limit {
            let depth = self.threads[ti].depth + frame;
            let Some(sp) = top.checked_sub(depth) else {
                stop = Some("the stack pointer would wrap below address 0".to_string());
                break;
            };
            while low > sp {
                low -= PAGE;
                let at = low.max(sp);
                let r = self.machine.borrow_mut().store(tid, at, calls as u8);
                self.clock += 1;
                if let Err(s) = r {
                    let t = &mut self.threads[ti];
                    t.overflow_depth = Some(top - at);
                    stop = Some(self.stop_text(ti, s));
                    self.rec.stack(&self.threads[ti].name, self.clock, top - at);
                    break 'calls;
                }
                self.rec.stack(&self.threads[ti].name, self.clock, top - at);
            }
            calls += 1;
            let t = &mut self.threads[ti];
            t.depth = depth;
            t.max_depth = t.max_depth.max(depth);
        }
        let reached = self.threads[ti]
            .max_depth
            .max(self.threads[ti].overflow_depth.unwrap_or(0));
        let guard = self.machine.borrow().counters().guard_commits - guard0;
        let grown = self.machine.borrow().counters().stack_growths - grow0;
        let how = match stack {
            Stack::Reserved { .. } => format!(
                "each touch of the guard page committed it and moved the guard down ({guard} guard commits)"
            ),
            Stack::Main { .. } => format!("the stack VMA grew on {grown} faults"),
            Stack::Pthread { .. } => "its pages faulted in on demand".to_string(),
        };
        out.push(format!(
            "{} recurses with {}-byte frames: {calls} calls, the stack reached {} below its top; {how}",
            self.threads[ti].name,
            frame,
            bytes(reached)
        ));
        match stop {
            Some(s) => {
                out.push(s);
                if !self.running(ti) {
                    let others: Vec<&str> = self
                        .threads
                        .iter()
                        .enumerate()
                        .filter(|(j, t)| t.proc == self.threads[ti].proc && self.running(*j))
                        .map(|(_, t)| t.name.as_str())
                        .collect();
                    out.push(format!(
                        "{} is stopped; {} other thread(s) of process {:?} carry on ({})",
                        self.threads[ti].name,
                        others.len(),
                        self.procs[self.threads[ti].proc].name,
                        others.join(", ")
                    ));
                }
            }
            None => {
                self.threads[ti].depth = start_depth;
                self.clock += 1;
                self.rec
                    .stack(&self.threads[ti].name, self.clock, start_depth);
                out.push(format!(
                    "the calls return; the stack pointer is back at {} below the top (committed pages stay committed)",
                    bytes(start_depth)
                ));
            }
        }
        Ok(())
    }

    fn do_touch(&mut self, t: &Touch, out: &mut Vec<String>) -> Result<(), String> {
        let ti = self.thread_idx(&t.thread)?;
        self.check_thread(ti)?;
        let tid = self.threads[ti].tid;
        let mut ranges = Vec::new();
        if let Some(hn) = &t.heap {
            let h = self.heap_idx(hn)?;
            let sp = &self.procs[self.heaps[h].proc].space;
            for &(p, n) in &self.heaps[h].blocks {
                if let Some(a) = sp.sim_addr(p) {
                    ranges.push((a, n as u64));
                }
            }
        } else if let (Some(a), Some(l)) = (t.addr, t.len) {
            ranges.push((a.0, l.0));
        }
        let c0 = *self.machine.borrow().counters();
        let mut pages = 0;
        let mut stop = None;
        'all: for (a, len) in ranges {
            let mut x = a;
            while x < a + len.max(1) {
                let r = if t.write {
                    self.machine.borrow_mut().store(tid, x, 1)
                } else {
                    self.machine.borrow_mut().load(tid, x).map(|_| ())
                };
                self.clock += 1;
                pages += 1;
                if let Err(s) = r {
                    stop = Some(self.stop_text(ti, s));
                    break 'all;
                }
                x = (x & !(PAGE - 1)) + PAGE;
            }
        }
        let c = *self.machine.borrow().counters();
        out.push(format!(
            "{} {} {pages} page(s): {} demand-zero, {} zero-page, {} copy-on-write faults",
            self.threads[ti].name,
            if t.write { "writes" } else { "reads" },
            c.demand_zero - c0.demand_zero,
            c.zero_page_maps - c0.zero_page_maps,
            c.cow_copies + c.cow_reuses - c0.cow_copies - c0.cow_reuses
        ));
        if let Some(s) = stop {
            out.push(s);
        }
        Ok(())
    }

    fn do_write(&mut self, w: &Write, out: &mut Vec<String>) -> Result<(), String> {
        let ti = self.thread_idx(&w.thread)?;
        self.check_thread(ti)?;
        let h = self.heap_idx(&w.heap)?;
        let tid = self.threads[ti].tid;
        let mut rng = SplitMix64::seeded(w.seed);
        let sp = self.procs[self.heaps[h].proc].space.clone();
        let mut pages = BTreeSet::new();
        for &(p, n) in &self.heaps[h].blocks {
            if rng.unit() < w.fraction {
                if let Some(a) = sp.sim_addr(p) {
                    pages
                        .extend((a / PAGE..(a + n.max(1) as u64).div_ceil(PAGE)).map(|p| p * PAGE));
                }
            }
        }
        let c0 = *self.machine.borrow().counters();
        let mut stop = None;
        for &a in &pages {
            self.clock += 1;
            if let Err(s) = self.machine.borrow_mut().store(tid, a, 0x5a) {
                stop = Some(self.stop_text(ti, s));
                break;
            }
        }
        let c = *self.machine.borrow().counters();
        out.push(format!(
            "{} writes to {} page(s) of heap {:?}'s blocks: {} copy-on-write copies, {} reused in place, {} demand-zero",
            self.threads[ti].name,
            pages.len(),
            w.heap,
            c.cow_copies - c0.cow_copies,
            c.cow_reuses - c0.cow_reuses,
            c.demand_zero - c0.demand_zero
        ));
        if let Some(s) = stop {
            out.push(s);
        }
        Ok(())
    }

    fn do_fork(&mut self, f: &Fork, out: &mut Vec<String>) -> Result<(), String> {
        let pi = self.proc_idx(&f.process)?;
        if self.procs.iter().any(|p| p.name == f.child) {
            return Err(format!("process name {:?} is used twice", f.child));
        }
        let pid = self.procs[pi].pid;
        let r = self.machine.borrow_mut().fork(pid);
        let cpid = match r {
            Ok(c) => c,
            Err(e) => {
                out.push(format!("fork of {:?} failed: {}", f.process, sim_error(&e)));
                return Ok(());
            }
        };
        let (shared, ctid) = {
            let m = self.machine.borrow();
            (
                m.process(pid).map(|p| p.rss().anon).unwrap_or(0),
                m.process(cpid).map(|p| p.threads[0]).unwrap_or(0),
            )
        };
        let labels = self.procs[pi].labels.clone();
        let layout = self.procs[pi].layout;
        self.procs.push(Proc {
            name: f.child.clone(),
            pid: cpid,
            space: ProcessHeapSpace::new(self.machine.clone(), cpid),
            labels,
            layout,
            parent: Some(f.process.clone()),
            end: None,
        });
        let tname = format!("{}-main", f.child);
        self.threads.push(Th {
            name: tname.clone(),
            tid: ctid,
            proc: self.procs.len() - 1,
            depth: 0,
            max_depth: 0,
            overflow_depth: None,
            stack_at_exit: None,
        });
        out.push(format!(
            "{:?} forks: child {:?} (pid {cpid}, thread {tname:?}); its {shared} private pages \
             are now shared copy-on-write, read-only in both page tables",
            f.process, f.child
        ));
        Ok(())
    }

    fn do_mmap(&mut self, mm: &Mmap, out: &mut Vec<String>) -> Result<(), String> {
        let pi = self.proc_idx(&mm.process)?;
        let prot = match mm.prot.as_deref().unwrap_or("rw") {
            "rw" => PROT_READ | PROT_WRITE,
            "r" => PROT_READ,
            "none" => PROT_NONE,
            p => return Err(format!("prot {p:?}: use \"rw\", \"r\" or \"none\"")),
        };
        let mut flags = MAP_PRIVATE | MAP_ANONYMOUS;
        if mm.at.is_some() {
            flags |= MAP_FIXED;
        }
        let pid = self.procs[pi].pid;
        let len = mm.len.0;
        let r = self.machine.borrow_mut().mmap(
            pid,
            mm.at.map(|a| a.0).unwrap_or(0),
            len,
            prot,
            flags,
            None,
            0,
        );
        let label = mm.label.clone().unwrap_or("mapping".into());
        match r {
            Ok(a) => {
                self.procs[pi]
                    .labels
                    .push((a, a + len.next_multiple_of(PAGE), label.clone()));
                let mut pages = 0;
                let n = match mm.touch {
                    TouchMode::All => len.div_ceil(PAGE),
                    TouchMode::First => 1,
                    TouchMode::None => 0,
                };
                for i in 0..n {
                    if self
                        .machine
                        .borrow_mut()
                        .touch(pid, a + i * PAGE, prot & PROT_WRITE != 0, 1)
                        .is_err()
                    {
                        break;
                    }
                    pages += 1;
                }
                out.push(format!(
                    "{:?} maps {} ({label}) at {a:#x}-{:#x}; {pages} page(s) touched",
                    mm.process,
                    bytes(len),
                    a + len
                ));
            }
            Err(e) => out.push(format!(
                "{:?}: mmap of {} ({label}) refused: {}",
                mm.process,
                bytes(len),
                sim_error(&e)
            )),
        }
        Ok(())
    }

    fn do_spawn(&mut self, s: &Spawn, out: &mut Vec<String>) -> Result<(), String> {
        let pi = self.proc_idx(&s.process)?;
        let want = if s.until_full {
            s.count.unwrap_or(MAX_SPAWN).min(MAX_SPAWN)
        } else {
            s.count.unwrap_or(0)
        };
        let first = self.threads.len();
        let mut started = 0;
        let mut why = None;
        for i in 1..=want {
            let name = format!("{}-{i}", s.name);
            if self.threads.iter().any(|t| t.name == name) {
                return Err(format!("thread name {name:?} is used twice"));
            }
            match self.spawn_thread(pi, &name, s.stack) {
                Ok(_) => started += 1,
                Err(e) => {
                    why = Some(e);
                    break;
                }
            }
        }
        if let Some(t) = self.threads.get(first) {
            out.push(format!(
                "{started} threads started in {:?}, e.g. {}",
                s.process,
                self.describe_stack(t.tid, &t.name)
            ));
        } else {
            out.push(format!("no thread started in {:?}", s.process));
        }
        if let Some(e) = why {
            out.push(format!("thread {} did not fit: {e}", started + 1));
        }
        let pid = self.procs[pi].pid;
        let m = self.machine.borrow();
        if let Some(p) = m.process(pid) {
            let sp = p.space();
            let mapped: u64 = sp.vmas().map(|v| v.end - v.start).sum();
            out.push(format!(
                "{:?} now has {} threads, {} VMAs, {} of its {} address space mapped, {} page-table pages",
                s.process,
                p.threads.len(),
                sp.vmas().count(),
                bytes(mapped),
                bytes(sp.layout().task_size),
                p.table_pages()
            ));
        }
        Ok(())
    }

    fn do_exit(&mut self, e: &Exit, out: &mut Vec<String>) -> Result<(), String> {
        for n in &e.threads {
            let ti = self.thread_idx(n)?;
            let tid = self.threads[ti].tid;
            if !self.running(ti) {
                out.push(format!("{n} is not running ({})", self.thread_state(ti)));
                continue;
            }
            self.threads[ti].stack_at_exit = self.stack_of(tid);
            self.machine
                .borrow_mut()
                .exit_thread(tid)
                .map_err(|e| sim_error(&e))?;
            out.push(format!(
                "{n} finishes its work and exits; its stack is unmapped"
            ));
        }
        Ok(())
    }

    /// Notices processes that ended (OOM kill, overflow policy), reports OOM kills, and
    /// drops the heaps of ended processes.
    fn reap(&mut self, out: &mut Vec<String>) {
        let reports: Vec<_> = {
            let m = self.machine.borrow();
            m.oom_reports()[self.oom_seen..].to_vec()
        };
        self.oom_seen += reports.len();
        for r in reports {
            let name = |pid| {
                self.procs
                    .iter()
                    .find(|p| p.pid == pid)
                    .map(|p| p.name.clone())
                    .unwrap_or(format!("pid {pid}"))
            };
            out.push(format!(
                "OOM killer: a fault of {:?} at {:#x} found no free frame; it chose process {:?} \
                 (pid {}, {} resident, {} points, the largest) and killed it; {} frames free after",
                name(r.faulting),
                r.addr,
                name(r.victim),
                r.victim,
                bytes(r.victim_rss.total() * PAGE),
                r.points,
                r.frames_free_after
            ));
        }
        for pi in 0..self.procs.len() {
            if self.procs[pi].end.is_some() {
                continue;
            }
            let end = self.machine.borrow().process_end(self.procs[pi].pid);
            if let Some(end) = end {
                self.procs[pi].end = Some(end);
                for h in 0..self.heaps.len() {
                    if self.heaps[h].proc == pi {
                        self.heap_stats(h);
                        self.record_heap(h);
                        // The heap goes with its process: only the host mirror is left
                        // to release.
                        let imp = self.heaps[h].imp.take();
                        drop(imp);
                        self.heaps[h].blocks.clear();
                    }
                }
                out.push(format!(
                    "process {:?} has ended ({}); its memory is back in the free pool",
                    self.procs[pi].name,
                    match end {
                        ProcessEnd::Exited => "exited",
                        ProcessEnd::OomKilled => "killed by the OOM killer",
                        ProcessEnd::StackOverflow => "a stack overflow killed it",
                    }
                ));
            }
        }
    }

    fn record_heap(&mut self, h: usize) {
        let st = self.heap_stats(h);
        if self.heaps[h].alive() {
            self.rec
                .heap(&self.heaps[h].name, self.clock, st.fragmentation * 100.0);
        }
    }

    fn record_all(&mut self) {
        for h in 0..self.heaps.len() {
            self.record_heap(h);
        }
    }

    /// The label of the region holding `a` in process `pi` (heap segments, break, stack,
    /// mmap labels).
    pub fn label_of(&self, pi: usize, a: u64) -> Option<String> {
        for &(s, e, ref l) in &self.procs[pi].labels {
            if a >= s && a < e {
                return Some(l.clone());
            }
        }
        for h in self.heaps.iter().filter(|h| h.proc == pi) {
            for r in self.procs[pi].space.regions() {
                if a >= r.start && a < r.start + r.len.max(1) && h.alive() {
                    let kind_ok = matches!(
                        (h.kind, r.kind),
                        (
                            HeapKind::SizeClass,
                            vmspace_sim::heap_source::RegionKind::Segments
                        ) | (HeapKind::Chunk, vmspace_sim::heap_source::RegionKind::Break)
                    );
                    if kind_ok {
                        return Some(format!("heap {}", h.name));
                    }
                }
            }
        }
        let m = self.machine.borrow();
        for t in self.threads.iter().filter(|t| t.proc == pi) {
            let Some(th) = m.thread(t.tid) else { continue };
            if matches!(th.ended, Some(ThreadEnd::Exited)) {
                continue;
            }
            let (lo, hi) = match th.stack {
                Stack::Reserved { base, reserve, .. } => (base, base + reserve),
                Stack::Pthread { base, size, .. } => (base, base + size),
                Stack::Main { top } => (top.saturating_sub(1), top),
            };
            if a >= lo && a < hi {
                return Some(format!("stack of {}", t.name));
            }
        }
        // The program image: executable mappings below the break, and the data/bss mapping
        // that ends where the break starts.
        if let Some(pr) = m.process(self.procs[pi].pid) {
            let space = pr.space();
            if let Some(v) = space.find_vma(a).filter(|v| v.start <= a) {
                let exec = v.flags & vmspace::space::vma::flags::VM_EXEC != 0;
                if exec && v.end <= space.start_brk() {
                    return Some("program text".into());
                }
                if v.end == space.start_brk() {
                    return Some("program data and bss".into());
                }
            }
        }
        drop(m);
        // A forked child has its parent's mappings at the same addresses.
        let parent = self.procs[pi].parent.as_ref()?;
        let pp = self.procs.iter().position(|p| &p.name == parent)?;
        self.label_of(pp, a)
            .map(|l| format!("{l} (copy-on-write copy)"))
    }

    /// How thread `ti` stands, in words.
    pub fn thread_state(&self, ti: usize) -> String {
        let m = self.machine.borrow();
        match m.thread(self.threads[ti].tid).and_then(|t| t.ended) {
            None => "running".into(),
            Some(ThreadEnd::Exited) => "finished".into(),
            Some(ThreadEnd::StackOverflow { addr }) => {
                format!("stopped: stack overflow at {addr:#x}")
            }
            Some(ThreadEnd::ProcessEnded(ProcessEnd::OomKilled)) => {
                "ended: process OOM-killed".into()
            }
            Some(ThreadEnd::ProcessEnded(e)) => format!("ended with its process ({e:?})"),
        }
    }

    /// Checks the expected outcomes.
    fn check(&self, e: &Expect) -> Result<Vec<Check>, String> {
        let mut out = Vec::new();
        let m = self.machine.borrow();
        let mut push =
            |what: String, ok: bool, detail: String| out.push(Check { what, ok, detail });
        let overflows = e
            .stack_overflow
            .iter()
            .map(|t| ("stack_overflow", &t.thread))
            .chain(e.stack_overflows.iter().map(|t| ("stack_overflows", t)));
        for (key, name) in overflows {
            let ti = self
                .thread_idx(name)
                .map_err(|e| format!("expect.{key}: {e}"))?;
            let end = m.thread(self.threads[ti].tid).and_then(|t| t.ended);
            let ok = matches!(end, Some(ThreadEnd::StackOverflow { .. }));
            let t = &self.threads[ti];
            push(
                format!("{key}: thread {name:?} stopped by a stack overflow"),
                ok,
                format!(
                    "{name:?} is {}; its stack reached {}",
                    self.thread_state(ti),
                    bytes(t.max_depth.max(t.overflow_depth.unwrap_or(0)))
                ),
            );
        }
        if let Some(p) = &e.oom_killed {
            let pi = self
                .proc_idx(p)
                .map_err(|e| format!("expect.oom_killed: {e}"))?;
            let pid = self.procs[pi].pid;
            let named = m.oom_reports().iter().any(|r| r.victim == pid);
            let ok = named && m.process_end(pid) == Some(ProcessEnd::OomKilled);
            let victims: Vec<String> = m
                .oom_reports()
                .iter()
                .map(|r| {
                    self.procs
                        .iter()
                        .find(|p| p.pid == r.victim)
                        .map_or(format!("pid {}", r.victim), |p| format!("{:?}", p.name))
                })
                .collect();
            push(
                format!("oom_killed: the OOM killer ended {p:?}"),
                ok,
                if victims.is_empty() {
                    "the OOM killer never ran".into()
                } else {
                    format!("OOM victims: {}", victims.join(", "))
                },
            );
        }
        if let Some(n) = e.oom_kills {
            let got = m.counters().oom_kills;
            push(
                format!("oom_kills = {n}"),
                got == n,
                format!("{got} OOM kill(s)"),
            );
        }
        for t in &e.threads_finished {
            let ti = self
                .thread_idx(t)
                .map_err(|e| format!("expect.threads_finished: {e}"))?;
            let end = m.thread(self.threads[ti].tid).and_then(|t| t.ended);
            let ok = matches!(end, None | Some(ThreadEnd::Exited));
            push(
                format!("threads_finished: {t:?} was never stopped"),
                ok,
                format!("{t:?} is {}", self.thread_state(ti)),
            );
        }
        if let Some(n) = e.min_cow_copies {
            let got = m.counters().cow_copies;
            push(
                format!("min_cow_copies = {n}"),
                got >= n,
                format!("{got} copy-on-write copies"),
            );
        }
        for h in &e.heap_exhausted {
            let hi = self
                .heap_idx(h)
                .map_err(|e| format!("expect.heap_exhausted: {e}"))?;
            let ex = &self.heaps[hi].exhausted;
            push(
                format!("heap_exhausted: heap {h:?} was refused memory"),
                ex.is_some(),
                ex.clone().unwrap_or("it never was".into()),
            );
        }
        for (what, c, at_least) in [
            ("min_threads", &e.min_threads, true),
            ("max_threads", &e.max_threads, false),
        ] {
            if let Some(c) = c {
                let pi = self
                    .proc_idx(&c.process)
                    .map_err(|e| format!("expect.{what}: {e}"))?;
                let n = self
                    .threads
                    .iter()
                    .filter(|t| t.proc == pi)
                    .filter(|t| m.thread(t.tid).is_some_and(|t| t.ended.is_none()))
                    .count() as u64;
                let ok = if at_least { n >= c.count } else { n <= c.count };
                push(
                    format!(
                        "{what}: {:?} runs {} {} threads",
                        c.process,
                        if at_least { "at least" } else { "at most" },
                        c.count
                    ),
                    ok,
                    format!("{n} threads running"),
                );
            }
        }
        for p in &e.processes_alive {
            let pi = self
                .proc_idx(p)
                .map_err(|e| format!("expect.processes_alive: {e}"))?;
            let alive = m.process(self.procs[pi].pid).is_some();
            push(
                format!("processes_alive: {p:?} is running"),
                alive,
                format!("{p:?} {}", if alive { "is running" } else { "has ended" }),
            );
        }
        Ok(out)
    }

    /// Whether every expectation held.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// A machine error in words.
pub fn sim_error(e: &vmspace_sim::SimError) -> String {
    match e {
        vmspace_sim::SimError::Errno(e) => format!("{e:?} (the system call failed)"),
        vmspace_sim::SimError::OutOfMemory => "no free frame".into(),
        vmspace_sim::SimError::OomKilled => {
            "out of frames; the OOM killer ended the calling process".into()
        }
        other => format!("{other:?}"),
    }
}

/// Runs a scenario (without progress reports).
#[cfg(test)]
pub fn run(sc: &Scenario, arch: Option<Arch>) -> Result<Run, String> {
    run_with_progress(sc, arch, |_| {})
}

/// Runs a scenario, calling `progress(i)` before step `i`.
pub fn run_with_progress(
    sc: &Scenario,
    arch: Option<Arch>,
    progress: impl FnMut(usize),
) -> Result<Run, String> {
    let mut r = Run::start(sc, arch)?;
    r.run_steps(sc, progress)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::format::parse;

    fn go(body: &str) -> Run {
        let text = format!("name = \"t\"\n[machine]\nram = \"8 MiB\"\n{body}");
        let sc = parse("t.toml", &text).unwrap();
        let r = run(&sc, None).unwrap();
        r.machine.borrow().check().unwrap();
        r
    }

    fn go_err(body: &str) -> String {
        let text = format!("name = \"t\"\n[machine]\nram = \"8 MiB\"\n{body}");
        let sc = parse("t.toml", &text).unwrap();
        match run(&sc, None) {
            Ok(_) => panic!("ran"),
            Err(e) => e,
        }
    }

    fn end_of(r: &Run, name: &str) -> Option<ThreadEnd> {
        let t = r.threads.iter().find(|t| t.name == name).unwrap();
        r.machine.borrow().thread(t.tid).unwrap().ended
    }

    #[test]
    fn a_pthread_stack_overflows_into_its_guard() {
        let r = go(r#"
[[process]]
name = "p"
[[process.thread]]
name = "t"
stack = { style = "pthread", size = "64 KiB", guard = "8 KiB" }
[[step]]
do = "recurse"
thread = "t"
frame = 1000
[expect]
stack_overflow = { thread = "t" }
threads_finished = ["p-main"]
"#);
        assert!(r.ok());
        let t = &r.threads[1];
        // It stopped in the guard: 56 KiB usable above it.
        let depth = t.overflow_depth.unwrap();
        assert!(depth > 56 << 10 && depth <= 64 << 10, "{depth}");
        assert!(matches!(
            end_of(&r, "t"),
            Some(ThreadEnd::StackOverflow { .. })
        ));
    }

    #[test]
    fn the_main_stack_grows_to_rlimit_stack_then_overflows() {
        let r = go(r#"
[[process]]
name = "p"
stack_limit = "256 KiB"
[[step]]
do = "recurse"
thread = "p-main"
frame = 4096
"#);
        let t = &r.threads[0];
        let depth = t.overflow_depth.unwrap();
        assert!(depth > 240 << 10 && depth <= 260 << 10, "{depth}");
        assert!(r.machine.borrow().counters().stack_growths > 0);
    }

    #[test]
    fn kill_process_policy_ends_the_whole_process() {
        for (policy, killed) in [("stop-thread", false), ("kill-process", true)] {
            let text = format!(
                "name = \"t\"\n[machine]\nram = \"8 MiB\"\noverflow = \"{policy}\"\n\
                 [[process]]\nname = \"p\"\n[[process.thread]]\nname = \"t\"\n\
                 stack = {{ style = \"reserve-commit\", reserve = \"64 KiB\" }}\n\
                 [[process.heap]]\nname = \"h\"\nkind = \"chunk\"\n\
                 [[step]]\ndo = \"alloc\"\nheap = \"h\"\ncount = 4\nsize = 100\n\
                 [[step]]\ndo = \"recurse\"\nthread = \"t\"\nframe = 512\n"
            );
            let sc = parse("t.toml", &text).unwrap();
            let r = run(&sc, None).unwrap();
            let want = killed.then_some(ProcessEnd::StackOverflow);
            assert_eq!(r.procs[0].end, want, "{policy}");
            assert_eq!(r.heaps[0].alive(), !killed);
            r.machine.borrow().check().unwrap();
        }
    }

    #[test]
    fn spawn_exit_touch_and_mmap_do_what_they_say() {
        let r = go(r#"
[[process]]
name = "p"
[[step]]
do = "spawn"
process = "p"
name = "w"
stack = { style = "pthread", size = "128 KiB" }
count = 5
[[step]]
do = "exit"
threads = ["w-2", "w-4"]
[[step]]
do = "mmap"
process = "p"
len = "64 KiB"
at = 0x20000000
label = "table"
touch = "none"
[[step]]
do = "touch"
thread = "w-1"
addr = 0x20000000
len = "64 KiB"
[expect]
threads_finished = ["w-1", "w-2", "w-3", "w-4", "w-5"]
min_threads = { process = "p", count = 4 }
max_threads = { process = "p", count = 4 }
"#);
        assert!(
            r.ok(),
            "{:?}",
            r.checks.iter().map(|c| &c.detail).collect::<Vec<_>>()
        );
        let m = r.machine.borrow();
        // Reads of untouched anonymous memory map the shared zero page (A2).
        assert_eq!(m.counters().zero_page_maps, 16);
        let pid = r.procs[0].pid;
        let p = m.process(pid).unwrap();
        let exited = r.threads.iter().find(|t| t.name == "w-2").unwrap();
        let Some(Stack::Pthread { base, .. }) = exited.stack_at_exit else {
            panic!()
        };
        assert!(p.space().find_vma(base + 8192).is_none(), "stack unmapped");
        drop(m);
        assert_eq!(r.label_of(0, 0x2000_8000).as_deref(), Some("table"));
    }

    #[test]
    fn a_refused_spawn_and_an_unknown_name_are_reported() {
        // Three 1 GiB stacks cannot fit in a 3 GiB i386 user space next to the program.
        let r = go(r#"
[[process]]
name = "p"
[[step]]
do = "spawn"
process = "p"
name = "big"
stack = { style = "pthread", size = "1 GiB" }
until_full = true
[expect]
max_threads = { process = "p", count = 3 }
"#);
        assert!(r.ok());
        assert!(r.steps[0].lines.iter().any(|l| l.contains("did not fit")));
        let e = go_err("[[process]]\nname = \"p\"\n[[step]]\ndo = \"alloc\"\nheap = \"nope\"\ncount = 1\nsize = 8\n");
        assert!(e.contains("no heap named \"nope\""), "{e}");
        let e = go_err("[[process]]\nname = \"p\"\n[[process]]\nname = \"p\"\n");
        assert!(e.contains("process name \"p\" is used twice"), "{e}");
        let e = go_err(
            "[[process]]\nname = \"p\"\n[[process.heap]]\nname = \"a\"\nkind = \"chunk\"\n\
             [[process.heap]]\nname = \"b\"\nkind = \"chunk\"\n",
        );
        assert!(e.contains("at most one chunk heap"), "{e}");
    }

    #[test]
    fn steps_of_a_stopped_thread_are_skipped_and_the_story_goes_on() {
        let r = go(r#"
[[process]]
name = "p"
[[process.heap]]
name = "h"
kind = "chunk"
[[process]]
name = "q"
[[process.heap]]
name = "g"
kind = "size-class"
[[step]]
do = "leak"
heap = "h"
size = "64 KiB"
[[step]]
do = "recurse"
thread = "p-main"
frame = 100
depth = 3
[[step]]
do = "alloc"
heap = "g"
count = 10
size = 1000
[expect]
oom_killed = "p"
processes_alive = ["q"]
"#);
        assert!(r.ok());
        assert!(r.steps[1].lines[0].starts_with("skipped: thread \"p-main\" is not running"));
        assert_eq!(r.heaps[1].live_blocks(), 10);
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let body = r#"
[[process]]
name = "p"
[[process.heap]]
name = "h"
kind = "size-class"
[[step]]
do = "alloc"
heap = "h"
count = 300
size = [8, 3000]
seed = 42
[[step]]
do = "free"
heap = "h"
fraction = 0.3
seed = 43
"#;
        let a = go(body);
        let b = go(body);
        assert_eq!(a.steps[0].lines, b.steps[0].lines);
        assert_eq!(a.heaps[0].stats, b.heaps[0].stats);
        assert_eq!(a.heaps[0].frees, b.heaps[0].frees);
        assert!(a.heaps[0].frees > 50 && a.heaps[0].frees < 130);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::scenario::format::parse;
    use proptest::prelude::*;

    /// One random step over the fixed cast below, as TOML.
    fn step() -> impl Strategy<Value = String> {
        let heap = prop_oneof![Just("sc"), Just("ch"), Just("sc2")];
        let thread = prop_oneof![
            Just("p-main"),
            Just("w1"),
            Just("w2"),
            Just("q-main"),
            Just("c-main")
        ];
        prop_oneof![
            (heap.clone(), thread.clone(), 0u64..40, 1u64..5000, 0u64..5000, any::<u64>()).prop_map(
                |(h, t, n, a, b, seed)| format!(
                    "do = \"alloc\"\nheap = \"{h}\"\nthread = \"{t}\"\ncount = {n}\nsize = [{a}, {}]\nseed = {seed}\n",
                    a + b
                )
            ),
            (heap.clone(), 0.0f64..=1.0, any::<u64>()).prop_map(|(h, f, s)| format!(
                "do = \"free\"\nheap = \"{h}\"\nfraction = {f}\nseed = {s}\n"
            )),
            (heap.clone(), 1u64..300_000, 1u64..64).prop_map(|(h, n, m)| format!(
                "do = \"leak\"\nheap = \"{h}\"\nsize = {n}\nmax_blocks = {m}\n"
            )),
            (thread.clone(), 1u64..9000, prop::option::of(0u64..300)).prop_map(|(t, f, d)| {
                let d = d.map(|d| format!("depth = {d}\n")).unwrap_or_default();
                format!("do = \"recurse\"\nthread = \"{t}\"\nframe = {f}\n{d}")
            }),
            (thread.clone(), heap.clone(), 0.0f64..=1.0).prop_map(|(t, h, f)| format!(
                "do = \"write\"\nthread = \"{t}\"\nheap = \"{h}\"\nfraction = {f}\n"
            )),
            (thread.clone(), heap.clone(), any::<bool>()).prop_map(|(t, h, w)| format!(
                "do = \"touch\"\nthread = \"{t}\"\nheap = \"{h}\"\nwrite = {w}\n"
            )),
            Just("do = \"fork\"\nprocess = \"p\"\nchild = \"c\"\n".to_string()),
            (0u64..(1 << 33), any::<bool>()).prop_map(|(l, fixed)| format!(
                "do = \"mmap\"\nprocess = \"q\"\nlen = {l}\n{}",
                if fixed { "at = 0x30000000\n" } else { "" }
            )),
            (1u64..8, 1u64..20).prop_map(|(n, k)| format!(
                "do = \"spawn\"\nprocess = \"q\"\nname = \"s\"\ncount = {n}\nstack = {{ style = \"reserve-commit\", reserve = {}, guard_pages = 1 }}\n",
                k * 65536
            )),
            thread.prop_map(|t| format!("do = \"exit\"\nthreads = [\"{t}\"]\n")),
        ]
    }

    const CAST: &str = r#"
[[process]]
name = "p"
[[process.thread]]
name = "w1"
stack = { style = "reserve-commit", reserve = "128 KiB", guard_pages = 2 }
[[process.thread]]
name = "w2"
stack = { style = "pthread", size = "64 KiB" }
[[process.heap]]
name = "sc"
kind = "size-class"
[[process.heap]]
name = "ch"
kind = "chunk"
fit = "next"
[[process]]
name = "q"
[[process.heap]]
name = "sc2"
kind = "size-class"
"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any sequence of steps either runs or stops with an error message (a thread that is
        /// not running, a name that does not exist yet); it never panics, and the machine's
        /// frame, refcount and RSS invariants hold at the end.
        #[test]
        fn any_story_runs_without_breaking_the_machine(
            x86 in any::<bool>(),
            steps in prop::collection::vec(step(), 0..14),
        ) {
            let mut text = format!(
                "name = \"p\"\n[machine]\nram = \"6 MiB\"\narch = \"{}\"\n{CAST}",
                if x86 { "x86_64" } else { "i386" }
            );
            for s in &steps {
                text.push_str("[[step]]\n");
                text.push_str(s);
            }
            let sc = parse("p.toml", &text).unwrap();
            let mut r = Run::start(&sc, None).unwrap();
            match r.run_steps(&sc, |_| {}) {
                Ok(()) => {}
                Err(e) => prop_assert!(
                    e.contains("no thread named") || e.contains("used twice"),
                    "{e}"
                ),
            }
            let _ = super::super::report::text(&r);
            let _ = super::super::report::json(&r);
            let _ = super::super::record::figure(&r);
            let m = r.machine.borrow();
            prop_assert!(m.check().is_ok(), "{:?}", m.check());
        }
    }
}
