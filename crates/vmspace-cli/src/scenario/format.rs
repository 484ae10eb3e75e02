//! The scenario file format: TOML read with serde (`toml` crate), documented field by field.
//!
//! A scenario describes a simulated machine, the processes on it (threads with their stacks,
//! heaps), a list of steps that happen in order, and the outcomes expected at the end:
//!
//! ```toml
//! name = "demo"
//! description = "what the scenario shows"
//!
//! [machine]
//! ram = "16 MiB"          # RAM of the simulated machine (a multiple of 4 KiB)
//! arch = "i386"           # i386 (2-level paging, 3G/1G split) or x86_64 (4-level)
//! layout = "topdown"      # topdown (mmap below the stack) or legacy (mmap from TASK_UNMAPPED_BASE up)
//! overflow = "stop-thread" # what a stack overflow ends: stop-thread or kill-process
//!
//! [[process]]
//! name = "app"            # every process, thread and heap has a name unique in the scenario
//! main = "app-main"       # name of the main thread (default "<process>-main")
//! [[process.thread]]
//! name = "worker-1"
//! stack = { style = "reserve-commit", reserve = "256 KiB", commit = "4 KiB", guard_pages = 2 }
//! [[process.heap]]
//! name = "small"
//! kind = "size-class"     # size-class (64 KiB segments by mmap) or chunk (on the break)
//! [[process.heap]]
//! name = "big"
//! kind = "chunk"
//! fit = "best"            # first, best, worst or next (chunk heaps only)
//!
//! [[step]]
//! do = "alloc"            # alloc, free, leak, recurse, touch, write, fork, mmap, spawn, exit
//! note = "what a reader should know about this step"
//! heap = "small"
//! thread = "worker-1"
//! count = 200
//! size = [16, 512]        # one size, or a range [a, b] drawn uniformly
//! seed = 1
//!
//! [expect]
//! stack_overflow = { thread = "worker-2" }
//! oom_killed = "leaker"
//! threads_finished = ["worker-1", "worker-3"]
//! min_cow_copies = 1
//! ```
//!
//! Sizes are a number of bytes or a string with a unit (`"64 KiB"`, `"1M"`, `"0x1000"`).

use serde::{Deserialize, Deserializer};

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, printed in the header.
    pub name: String,
    /// What the scenario shows (printed under the header).
    #[serde(default)]
    pub description: Option<String>,
    /// The simulated machine.
    pub machine: MachineSpec,
    /// The processes started before the first step, in pid order.
    #[serde(rename = "process", default)]
    pub processes: Vec<ProcessSpec>,
    /// The `[[step]]` tables as written (turned into [`Scenario::steps`] by [`parse`]).
    #[serde(rename = "step", default)]
    raw_steps: Vec<toml::Spanned<RawStep>>,
    /// What happens, in order.
    #[serde(skip)]
    pub steps: Vec<Step>,
    /// Outcomes `vmspace run` checks at the end.
    #[serde(default)]
    pub expect: Expect,
}

/// `[machine]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    /// RAM size (a positive multiple of 4 KiB, at most 1 GiB here).
    pub ram: Size,
    /// MMU and task kind.
    #[serde(default)]
    pub arch: Arch,
    /// Address-space layout of every process (unless a process says otherwise).
    #[serde(default)]
    pub layout: LayoutKind,
    /// What a stack overflow ends.
    #[serde(default)]
    pub overflow: Overflow,
}

/// `arch = "i386" | "x86_64"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// 32-bit: 2-level page tables, a native 3G/1G task (TASK_SIZE 0xc0000000).
    #[default]
    I386,
    /// 64-bit: 4-level page tables, 47-bit user half.
    X86_64,
}

/// `layout = "topdown" | "legacy"` (Linux's two mmap layouts, rule L1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutKind {
    /// mmap_base below the stack, mappings placed downward (the default).
    #[default]
    Topdown,
    /// Mappings placed upward from TASK_UNMAPPED_BASE (`setarch -L`): the heap can run into
    /// them.
    Legacy,
}

/// `overflow = "stop-thread" | "kill-process"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Only the overflowing thread stops; the others carry on.
    #[default]
    StopThread,
    /// The whole process ends (what an uncaught SIGSEGV does).
    KillProcess,
}

/// `[[process]]`: a freshly exec'd static program (text, data/bss, the break after them, the
/// main stack, the vDSO) with more threads and heaps.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub name: String,
    /// Name of the main thread; default `"<name>-main"`.
    #[serde(default)]
    pub main: Option<String>,
    /// Layout of this process, overriding the machine's.
    #[serde(default)]
    pub layout: Option<LayoutKind>,
    /// RLIMIT_STACK of the main thread's stack (default 8 MiB).
    #[serde(default)]
    pub stack_limit: Option<Size>,
    /// Threads started with the process, after the main thread.
    #[serde(rename = "thread", default)]
    pub threads: Vec<ThreadSpec>,
    /// Heaps of the process.
    #[serde(rename = "heap", default)]
    pub heaps: Vec<HeapSpec>,
}

/// `[[process.thread]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadSpec {
    pub name: String,
    pub stack: StackSpec,
}

/// A thread's user stack.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(tag = "style", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StackSpec {
    /// Windows style (W17–W19): reserve address space, commit the top, guard pages below
    /// the committed part move down as the stack grows, the last page is a hard guard.
    ReserveCommit {
        /// Address space reserved (rounded up to 64 KiB).
        reserve: Size,
        /// Committed at the start (default one page).
        #[serde(default = "Size::page")]
        commit: Size,
        /// Guard pages below the committed part (default 1).
        #[serde(default = "one")]
        guard_pages: u64,
    },
    /// glibc style: one mapping of `size` bytes, the lowest `guard` bytes PROT_NONE.
    Pthread {
        size: Size,
        /// Guard size (default one page).
        #[serde(default = "Size::page")]
        guard: Size,
    },
}

fn one() -> u64 {
    1
}

/// `[[process.heap]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeapSpec {
    pub name: String,
    pub kind: HeapKind,
    /// Fit policy of a chunk heap (default first).
    #[serde(default)]
    pub fit: Option<Fit>,
    /// Most a chunk heap's break may grow (default: as far as the space allows, at most
    /// 1 GiB on 64-bit).
    #[serde(default)]
    pub max: Option<Size>,
}

/// `kind = "size-class" | "chunk"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeapKind {
    /// Lookaside lists per size class over 64 KiB segments, each segment an mmap of the
    /// process; large blocks are mappings of their own.
    SizeClass,
    /// Boundary tags and coalescing, bins and a fit policy, a top chunk grown through brk.
    /// One per process (a process has one break).
    Chunk,
}

/// `fit = "first" | "best" | "worst" | "next"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    First,
    Best,
    Worst,
    Next,
}

/// How much of a block a step touches through the simulated CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchMode {
    /// Every page of the block (it becomes resident).
    #[default]
    All,
    /// Only the first page (a header write).
    First,
    /// Nothing: only address space is used.
    None,
}

/// One `[[step]]`, chosen by `do = "..."`. Every step may carry a `note`, printed before
/// what happened. Fields not given take the defaults documented on each.
#[derive(Clone, Debug)]
pub enum Step {
    Alloc(Alloc),
    Free(Free),
    Leak(Leak),
    Recurse(Recurse),
    Touch(Touch),
    Write(Write),
    Fork(Fork),
    Mmap(Mmap),
    Spawn(Spawn),
    Exit(Exit),
}

/// `do = "alloc"`: allocate `count` blocks from `heap`, each touched by `thread`.
#[derive(Clone, Debug)]
pub struct Alloc {
    pub note: Option<String>,
    pub heap: String,
    /// Thread whose CPU touches the blocks (default: the heap's process's main thread).
    pub thread: Option<String>,
    pub count: u64,
    pub size: SizeRange,
    /// Seed of the size draws (default 1).
    pub seed: u64,
    pub touch: TouchMode,
}

/// `do = "free"`: free a random `fraction` (0..=1) of `heap`'s live blocks.
#[derive(Clone, Debug)]
pub struct Free {
    pub note: Option<String>,
    pub heap: String,
    pub fraction: f64,
    pub seed: u64,
}

/// `do = "leak"`: allocate blocks of `size` from `heap` and never free them, until the heap
/// is refused memory (its mmap or brk fails), the process is OOM-killed, or `max_blocks`.
#[derive(Clone, Debug)]
pub struct Leak {
    pub note: Option<String>,
    pub heap: String,
    pub thread: Option<String>,
    pub size: SizeRange,
    pub seed: u64,
    /// Stop after this many blocks (default 1,000,000).
    pub max_blocks: Option<u64>,
    pub touch: TouchMode,
}

/// `do = "recurse"`: a recursion on `thread`'s stack: each call takes `frame` bytes and
/// touches the stack page by page downward, `depth` calls deep (default: until stopped),
/// then returns.
#[derive(Clone, Debug)]
pub struct Recurse {
    pub note: Option<String>,
    pub thread: String,
    pub frame: Size,
    pub depth: Option<u64>,
}

/// `do = "touch"`: `thread` reads or writes every page of `heap`'s live blocks, or of
/// `[addr, addr + len)`.
#[derive(Clone, Debug)]
pub struct Touch {
    pub note: Option<String>,
    pub thread: String,
    pub heap: Option<String>,
    pub addr: Option<Size>,
    pub len: Option<Size>,
    pub write: bool,
}

/// `do = "write"`: `thread` writes to a `fraction` of `heap`'s live blocks (one byte per
/// page). In a forked child, whose memory is the parent's shared copy-on-write, each first
/// write to a page copies it.
#[derive(Clone, Debug)]
pub struct Write {
    pub note: Option<String>,
    pub thread: String,
    pub heap: String,
    pub fraction: f64,
    pub seed: u64,
}

/// `do = "fork"`: `process` forks; the child (named `child`, its thread `"<child>-main"`)
/// shares every private page copy-on-write.
#[derive(Clone, Debug)]
pub struct Fork {
    pub note: Option<String>,
    pub process: String,
    pub child: String,
}

/// `do = "mmap"`: an anonymous private mapping in `process`.
#[derive(Clone, Debug)]
pub struct Mmap {
    pub note: Option<String>,
    pub process: String,
    pub len: Size,
    /// MAP_FIXED address (default: where the layout places it).
    pub at: Option<Size>,
    /// `"rw"` (default), `"r"` or `"none"`.
    pub prot: Option<String>,
    /// Label shown next to the mapping in the report.
    pub label: Option<String>,
    pub touch: TouchMode,
}

/// `do = "spawn"`: start threads `"<name>-1"`, `"<name>-2"`, … in `process` with `stack`:
/// `count` of them, or as many as fit (`until_full = true`, at most 100,000).
#[derive(Clone, Debug)]
pub struct Spawn {
    pub note: Option<String>,
    pub process: String,
    pub name: String,
    pub stack: StackSpec,
    pub count: Option<u64>,
    pub until_full: bool,
}

/// `do = "exit"`: `threads` finish normally (their stacks are unmapped).
#[derive(Clone, Debug)]
pub struct Exit {
    pub note: Option<String>,
    pub threads: Vec<String>,
}

impl Step {
    /// The `do` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Alloc(_) => "alloc",
            Step::Free(_) => "free",
            Step::Leak(_) => "leak",
            Step::Recurse(_) => "recurse",
            Step::Touch(_) => "touch",
            Step::Write(_) => "write",
            Step::Fork(_) => "fork",
            Step::Mmap(_) => "mmap",
            Step::Spawn(_) => "spawn",
            Step::Exit(_) => "exit",
        }
    }

    /// The step's note.
    pub fn note(&self) -> Option<&str> {
        match self {
            Step::Alloc(s) => s.note.as_deref(),
            Step::Free(s) => s.note.as_deref(),
            Step::Leak(s) => s.note.as_deref(),
            Step::Recurse(s) => s.note.as_deref(),
            Step::Touch(s) => s.note.as_deref(),
            Step::Write(s) => s.note.as_deref(),
            Step::Fork(s) => s.note.as_deref(),
            Step::Mmap(s) => s.note.as_deref(),
            Step::Spawn(s) => s.note.as_deref(),
            Step::Exit(s) => s.note.as_deref(),
        }
    }
}

/// `[expect]`: outcomes checked at the end; `vmspace run` exits 1 naming each that failed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// This thread was stopped by a stack overflow.
    #[serde(default)]
    pub stack_overflow: Option<ThreadRef>,
    /// Each of these threads was stopped by a stack overflow.
    #[serde(default)]
    pub stack_overflows: Vec<String>,
    /// The OOM killer ended this process.
    #[serde(default)]
    pub oom_killed: Option<String>,
    /// Exactly this many OOM kills happened.
    #[serde(default)]
    pub oom_kills: Option<u64>,
    /// These threads were never stopped (they ran every step asked of them, or exited
    /// normally).
    #[serde(default)]
    pub threads_finished: Vec<String>,
    /// At least this many copy-on-write copies.
    #[serde(default)]
    pub min_cow_copies: Option<u64>,
    /// These heaps were refused memory by their process (mmap or brk failed).
    #[serde(default)]
    pub heap_exhausted: Vec<String>,
    /// At least `count` threads are running in `process` at the end.
    #[serde(default)]
    pub min_threads: Option<ThreadCount>,
    /// At most `count` threads are running in `process` at the end.
    #[serde(default)]
    pub max_threads: Option<ThreadCount>,
    /// These processes are still running at the end.
    #[serde(default)]
    pub processes_alive: Vec<String>,
}

/// `{ thread = "name" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadRef {
    pub thread: String,
}

/// `{ process = "name", count = N }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadCount {
    pub process: String,
    pub count: u64,
}

/// A byte count: an integer, or a string with a unit (`"64 KiB"`, `"8M"`, `"0x1000"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    fn page() -> Size {
        Size(4096)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: a number of bytes or a string like \"64 KiB\"",
            )
        })? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => crate::layout::parse_size(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One size or a range `[a, b]` (inclusive) drawn uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    pub lo: u64,
    pub hi: u64,
}

impl<'de> Deserialize<'de> for SizeRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(Size),
            Two([Size; 2]),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size or a range [a, b] of sizes (numbers or strings like \"4 KiB\")",
            )
        })? {
            Raw::One(s) if s.0 > 0 => Ok(SizeRange { lo: s.0, hi: s.0 }),
            Raw::Two([a, b]) if a.0 > 0 && a.0 <= b.0 => Ok(SizeRange { lo: a.0, hi: b.0 }),
            _ => Err(serde::de::Error::custom(
                "sizes must be positive and a range [a, b] must have a <= b",
            )),
        }
    }
}

/// `do = "..."`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StepKind {
    Alloc,
    Free,
    Leak,
    Recurse,
    Touch,
    Write,
    Fork,
    Mmap,
    Spawn,
    Exit,
}

/// A `[[step]]` table as written: every field any step has, so that a wrong value is
/// reported at its own line and column; [`RawStep::into_step`] checks which fields the
/// step's kind takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "do")]
    kind: StepKind,
    note: Option<String>,
    heap: Option<String>,
    thread: Option<String>,
    count: Option<u64>,
    size: Option<SizeRange>,
    seed: Option<u64>,
    touch: Option<TouchMode>,
    fraction: Option<f64>,
    max_blocks: Option<u64>,
    frame: Option<Size>,
    depth: Option<u64>,
    addr: Option<Size>,
    len: Option<Size>,
    write: Option<bool>,
    process: Option<String>,
    child: Option<String>,
    at: Option<Size>,
    prot: Option<String>,
    label: Option<String>,
    name: Option<String>,
    stack: Option<StackSpec>,
    until_full: Option<bool>,
    threads: Option<Vec<String>>,
}

impl RawStep {
    /// The fields given, by name.
    fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! f {
            ($($n:ident),*) => { $( if self.$n.is_some() { v.push(stringify!($n)); } )* };
        }
        f!(
            heap, thread, count, size, seed, touch, fraction, max_blocks, frame, depth, addr, len,
            write, process, child, at, prot, label, name, stack, until_full, threads
        );
        v
    }

    /// The step, or what is wrong with it.
    fn into_step(self) -> Result<Step, String> {
        let (kind, takes): (&str, &[&str]) = match self.kind {
            StepKind::Alloc => (
                "alloc",
                &["heap", "thread", "count", "size", "seed", "touch"],
            ),
            StepKind::Free => ("free", &["heap", "fraction", "seed"]),
            StepKind::Leak => (
                "leak",
                &["heap", "thread", "size", "seed", "max_blocks", "touch"],
            ),
            StepKind::Recurse => ("recurse", &["thread", "frame", "depth"]),
            StepKind::Touch => ("touch", &["thread", "heap", "addr", "len", "write"]),
            StepKind::Write => ("write", &["thread", "heap", "fraction", "seed"]),
            StepKind::Fork => ("fork", &["process", "child"]),
            StepKind::Mmap => ("mmap", &["process", "len", "at", "prot", "label", "touch"]),
            StepKind::Spawn => (
                "spawn",
                &["process", "name", "stack", "count", "until_full"],
            ),
            StepKind::Exit => ("exit", &["threads"]),
        };
        if let Some(f) = self.given().into_iter().find(|f| !takes.contains(f)) {
            return Err(format!(
                "do = \"{kind}\" takes no `{f}` (its fields: note, {})",
                takes.join(", ")
            ));
        }
        let need = |f: &str| format!("do = \"{kind}\" needs `{f}`");
        let seed = self.seed.unwrap_or(1);
        let note = self.note;
        Ok(match self.kind {
            StepKind::Alloc => Step::Alloc(Alloc {
                note,
                heap: self.heap.ok_or(need("heap"))?,
                thread: self.thread,
                count: self.count.ok_or(need("count"))?,
                size: self.size.ok_or(need("size"))?,
                seed,
                touch: self.touch.unwrap_or_default(),
            }),
            StepKind::Free => Step::Free(Free {
                note,
                heap: self.heap.ok_or(need("heap"))?,
                fraction: self.fraction.ok_or(need("fraction"))?,
                seed,
            }),
            StepKind::Leak => Step::Leak(Leak {
                note,
                heap: self.heap.ok_or(need("heap"))?,
                thread: self.thread,
                size: self.size.ok_or(need("size"))?,
                seed,
                max_blocks: self.max_blocks,
                touch: self.touch.unwrap_or_default(),
            }),
            StepKind::Recurse => Step::Recurse(Recurse {
                note,
                thread: self.thread.ok_or(need("thread"))?,
                frame: self.frame.ok_or(need("frame"))?,
                depth: self.depth,
            }),
            StepKind::Touch => Step::Touch(Touch {
                note,
                thread: self.thread.ok_or(need("thread"))?,
                heap: self.heap,
                addr: self.addr,
                len: self.len,
                write: self.write.unwrap_or(false),
            }),
            StepKind::Write => Step::Write(Write {
                note,
                thread: self.thread.ok_or(need("thread"))?,
                heap: self.heap.ok_or(need("heap"))?,
                fraction: self.fraction.unwrap_or(1.0),
                seed,
            }),
            StepKind::Fork => Step::Fork(Fork {
                note,
                process: self.process.ok_or(need("process"))?,
                child: self.child.ok_or(need("child"))?,
            }),
            StepKind::Mmap => Step::Mmap(Mmap {
                note,
                process: self.process.ok_or(need("process"))?,
                len: self.len.ok_or(need("len"))?,
                at: self.at,
                prot: self.prot,
                label: self.label,
                touch: self.touch.unwrap_or_default(),
            }),
            StepKind::Spawn => Step::Spawn(Spawn {
                note,
                process: self.process.ok_or(need("process"))?,
                name: self.name.ok_or(need("name"))?,
                stack: self.stack.ok_or(need("stack"))?,
                count: self.count,
                until_full: self.until_full.unwrap_or(false),
            }),
            StepKind::Exit => Step::Exit(Exit {
                note,
                threads: self.threads.ok_or(need("threads"))?,
            }),
        })
    }
}

/// Parses a scenario; the error names `file`, the line and column, and what was wrong.
pub fn parse(file: &str, text: &str) -> Result<Scenario, String> {
    let at = |offset: usize, msg: &str| {
        let (line, col) = line_col(text, offset);
        format!("{file}:{line}:{col}: {}", msg.trim_end())
    };
    let mut sc = toml::from_str::<Scenario>(text)
        .map_err(|e| at(e.span().map_or(0, |s| s.start), e.message()))?;
    for raw in std::mem::take(&mut sc.raw_steps) {
        let start = raw.span().start;
        let step = raw.into_inner().into_step().map_err(|e| at(start, &e))?;
        sc.steps.push(step);
    }
    Ok(sc)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "name = \"t\"\n[machine]\nram = \"4 MiB\"\n";

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let s = parse("t.toml", MIN).unwrap();
        assert_eq!(s.machine.ram, Size(4 << 20));
        assert_eq!(s.machine.arch, Arch::I386);
        assert_eq!(s.machine.layout, LayoutKind::Topdown);
        assert!(s.processes.is_empty() && s.steps.is_empty());
    }

    #[test]
    fn steps_stacks_and_sizes_parse() {
        let t = format!(
            "{MIN}[[process]]\nname = \"p\"\n[[process.thread]]\nname = \"w\"\n\
             stack = {{ style = \"reserve-commit\", reserve = \"1M\", guard_pages = 2 }}\n\
             [[step]]\ndo = \"alloc\"\nheap = \"h\"\ncount = 3\nsize = [16, \"1 KiB\"]\n\
             [[step]]\ndo = \"recurse\"\nthread = \"w\"\nframe = 512\n\
             [expect]\nstack_overflow = {{ thread = \"w\" }}\n"
        );
        let s = parse("t.toml", &t).unwrap();
        match s.processes[0].threads[0].stack {
            StackSpec::ReserveCommit {
                reserve,
                commit,
                guard_pages,
            } => {
                assert_eq!((reserve.0, commit.0, guard_pages), (1 << 20, 4096, 2));
            }
            _ => panic!(),
        }
        match &s.steps[0] {
            Step::Alloc(a) => assert_eq!(a.size, SizeRange { lo: 16, hi: 1024 }),
            _ => panic!(),
        }
        assert_eq!(s.steps[1].kind(), "recurse");
        assert_eq!(s.expect.stack_overflow.unwrap().thread, "w");
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let e = parse(
            "bad.toml",
            "name = \"t\"\n[machine]\nram = 4096\narch = \"mips\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("bad.toml:4:8:"), "{e}");
        assert!(e.contains("mips") && e.contains("i386"), "{e}");
        let e = parse("bad.toml", "name = \"t\"\n[machine]\nram = \"4 XB\"\n").unwrap_err();
        assert!(e.starts_with("bad.toml:3:7:") && e.contains("unit"), "{e}");
        let e = parse("bad.toml", "name = \"t\"\n[machine]\nram = 1\nrom = 2\n").unwrap_err();
        assert!(e.starts_with("bad.toml:4:1:") && e.contains("rom"), "{e}");
        let e = parse("bad.toml", "name = \"t\"\n[machine\n").unwrap_err();
        assert!(e.starts_with("bad.toml:2:"), "{e}");
        let t = format!("{MIN}[[step]]\ndo = \"jump\"\n");
        let e = parse("bad.toml", &t).unwrap_err();
        assert!(e.starts_with("bad.toml:5:6:") && e.contains("jump"), "{e}");
        let t = format!("{MIN}[[step]]\ndo = \"free\"\nheap = \"h\"\nfraction = 0.5\nseeed = 2\n");
        let e = parse("bad.toml", &t).unwrap_err();
        assert!(e.starts_with("bad.toml:8:1:") && e.contains("seeed"), "{e}");
        // A wrong value inside a step is reported where it is.
        let t = format!("{MIN}[[step]]\ndo = \"alloc\"\nheap = \"h\"\ncount = \"many\"\n");
        let e = parse("bad.toml", &t).unwrap_err();
        assert!(
            e.starts_with("bad.toml:7:9:") && e.contains("invalid type"),
            "{e}"
        );
        // A field the step's kind does not take, or one it needs, at the step.
        let t = format!("{MIN}[[step]]\ndo = \"fork\"\nprocess = \"p\"\nfraction = 0.5\n");
        let e = parse("bad.toml", &t).unwrap_err();
        assert!(
            e.starts_with("bad.toml:4:") && e.contains("takes no `fraction`"),
            "{e}"
        );
        let t = format!("{MIN}[[step]]\ndo = \"fork\"\nprocess = \"p\"\n");
        let e = parse("bad.toml", &t).unwrap_err();
        assert!(
            e.starts_with("bad.toml:4:") && e.contains("needs `child`"),
            "{e}"
        );
    }
}
