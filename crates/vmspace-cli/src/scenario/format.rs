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
    /// What happens, in order.
    #[serde(rename = "step", default)]
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
/// what happened.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
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
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alloc {
    #[serde(default)]
    pub note: Option<String>,
    pub heap: String,
    /// Thread whose CPU touches the blocks (default: the heap's process's main thread).
    #[serde(default)]
    pub thread: Option<String>,
    pub count: u64,
    pub size: SizeRange,
    /// Seed of the size draws (default 1).
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default)]
    pub touch: TouchMode,
}

/// `do = "free"`: free a random `fraction` (0..=1) of `heap`'s live blocks.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Free {
    #[serde(default)]
    pub note: Option<String>,
    pub heap: String,
    pub fraction: f64,
    #[serde(default = "one")]
    pub seed: u64,
}

/// `do = "leak"`: allocate blocks of `size` from `heap` and never free them, until the heap
/// is refused memory (its mmap or brk fails), the process is OOM-killed, or `max_blocks`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leak {
    #[serde(default)]
    pub note: Option<String>,
    pub heap: String,
    #[serde(default)]
    pub thread: Option<String>,
    pub size: SizeRange,
    #[serde(default = "one")]
    pub seed: u64,
    /// Stop after this many blocks (default 1,000,000).
    #[serde(default)]
    pub max_blocks: Option<u64>,
    #[serde(default)]
    pub touch: TouchMode,
}

/// `do = "recurse"`: a recursion on `thread`'s stack: each call takes `frame` bytes and
/// touches the stack page by page downward, `depth` calls deep (default: until stopped),
/// then returns.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recurse {
    #[serde(default)]
    pub note: Option<String>,
    pub thread: String,
    pub frame: Size,
    #[serde(default)]
    pub depth: Option<u64>,
}

/// `do = "touch"`: `thread` reads or writes every page of `heap`'s live blocks, or of
/// `[addr, addr + len)`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Touch {
    #[serde(default)]
    pub note: Option<String>,
    pub thread: String,
    #[serde(default)]
    pub heap: Option<String>,
    #[serde(default)]
    pub addr: Option<Size>,
    #[serde(default)]
    pub len: Option<Size>,
    #[serde(default)]
    pub write: bool,
}

/// `do = "write"`: `thread` writes to a `fraction` of `heap`'s live blocks (one byte per
/// page). In a forked child, whose memory is the parent's shared copy-on-write, each first
/// write to a page copies it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    #[serde(default)]
    pub note: Option<String>,
    pub thread: String,
    pub heap: String,
    #[serde(default = "all")]
    pub fraction: f64,
    #[serde(default = "one")]
    pub seed: u64,
}

fn all() -> f64 {
    1.0
}

/// `do = "fork"`: `process` forks; the child (named `child`, its thread `"<child>-main"`)
/// shares every private page copy-on-write.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    #[serde(default)]
    pub note: Option<String>,
    pub process: String,
    pub child: String,
}

/// `do = "mmap"`: an anonymous private mapping in `process`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mmap {
    #[serde(default)]
    pub note: Option<String>,
    pub process: String,
    pub len: Size,
    /// MAP_FIXED address (default: where the layout places it).
    #[serde(default)]
    pub at: Option<Size>,
    /// `"rw"` (default), `"r"` or `"none"`.
    #[serde(default)]
    pub prot: Option<String>,
    /// Label shown next to the mapping in the report.
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub touch: TouchMode,
}

/// `do = "spawn"`: start threads `"<name>-1"`, `"<name>-2"`, … in `process` with `stack`:
/// `count` of them, or as many as fit (`until_full = true`, at most 100,000).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spawn {
    #[serde(default)]
    pub note: Option<String>,
    pub process: String,
    pub name: String,
    pub stack: StackSpec,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub until_full: bool,
}

/// `do = "exit"`: `threads` finish normally (their stacks are unmapped).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exit {
    #[serde(default)]
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

/// Parses a scenario; the error names `file`, the line and column, and what was wrong.
pub fn parse(file: &str, text: &str) -> Result<Scenario, String> {
    toml::from_str::<Scenario>(text).map_err(|e| {
        let (line, col) = match e.span() {
            Some(sp) => line_col(text, sp.start),
            None => (1, 1),
        };
        format!("{file}:{line}:{col}: {}", e.message().trim_end())
    })
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
        assert!(e.starts_with("bad.toml:4:") && e.contains("seeed"), "{e}");
    }
}
