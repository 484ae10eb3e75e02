//! `vmspace capacity`: how many threads with 1 MiB stacks fit in a 32-bit space next to a
//! heap of a given size, how large a heap and a single mapping can get, and what the page
//! tables cost — under the legacy and top-down Linux layouts and with Windows-style
//! reserve/commit at 64 KiB granularity.
//!
//! Every number comes from running the model's operations until they are refused, never
//! from a formula: the space is the freshly exec'd static program of `vmspace layout`
//! ([`layout::exec_space`]); the heap is grown with brk() (B5), stacks are placed with
//! hint-less mmap() calls (glibc's MAP_STACK stacks with a PROT_NONE guard page, or
//! MAP_GROWSDOWN stacks that keep `stack_guard_gap` free below them, P8), largest sizes are
//! found by a binary search over lengths, each tried on a copy of the space. Page-table
//! memory is counted by mapping the committed pages into a real page table of the task's
//! MMU (i386 2-level for a native 32-bit kernel, x86-64 4-level for a compat task) and
//! asking the paging layer how many table pages it holds.

use crate::layout::{self, parse_size, size};
use serde::Serialize;
use std::fmt::Write as _;
use vmspace::addr::{Frame, FrameRange, PhysAddr, VirtAddr};
use vmspace::arch::{Arch, PageFlags, I386, X86_64};
use vmspace::paging::PageTable;
use vmspace::phys::{EmulatedRam, OwnedBuddyAllocator};
use vmspace::space::abi::*;
use vmspace::space::kernel::{KernelLayout, KernelSpace};
use vmspace::space::windows::{WinProt, GRANULARITY};
use vmspace::space::{AddressSpace, SpaceConfig, TaskKind};

const PAGE: u64 = 4096;

/// Which kernel the 32-bit task runs on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    /// A native i386 kernel with the 3G/1G split (TASK_SIZE 0xc0000000).
    Native,
    /// An i386 task on a 64-bit kernel (TASK_SIZE 0xffffe000).
    Compat,
    /// Both.
    All,
}

/// Arguments of `vmspace capacity`.
#[derive(clap::Args)]
pub struct CapacityArgs {
    /// Size of the heap the threads must fit next to, e.g. `512M`, `1G`, `0`.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    heap: u64,
    /// Size of each thread's stack, e.g. `1M`, `256K`, `8M`.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    stack: u64,
    /// Which kernel's 32-bit space.
    #[arg(long, value_enum, default_value = "all")]
    kernel: KernelArg,
    /// Print one JSON object per layout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also print the native 32-bit kernel's space (`space::kernel`'s default 3G/1G
    /// layout: per-process and shared regions) above the table.
    #[arg(long)]
    kernel_space: bool,
}

/// How the space is managed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Linux bottom-up mmap from TASK_UNMAPPED_BASE (L1, L5, P11).
    Legacy,
    /// Linux top-down mmap below mmap_base (L4, P8, P9).
    Topdown,
    /// Windows-style reservations at 64 KiB granularity (W1, W4, W17).
    ReserveCommit,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Legacy => "legacy",
            Scheme::Topdown => "topdown",
            Scheme::ReserveCommit => "reserve-commit",
        }
    }
}

/// The answer for one layout.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `native` (i386 3G/1G kernel) or `compat` (i386 task on a 64-bit kernel).
    pub kernel: &'static str,
    pub layout: Scheme,
    pub task_size: u64,
    /// Placement granularity (4 KiB pages, or 64 KiB for reservations).
    pub granularity: u64,
    /// The heap asked for (`--heap`) and the stack size (`--stack`).
    pub heap: u64,
    pub stack: u64,
    /// Whether a heap of `heap` bytes fits at all.
    pub heap_fits: bool,
    /// Threads whose stacks fit next to that heap: glibc-style MAP_STACK stacks (Linux) or
    /// stack reservations (reserve/commit). 0 if the heap does not fit.
    pub threads: u64,
    /// Same with MAP_GROWSDOWN stacks, each keeping stack_guard_gap free below it (Linux).
    pub threads_growsdown: Option<u64>,
    /// What stopped the stacks: `address space`, `max_map_count` (vm.max_map_count,
    /// 65530: each glibc stack is two VMAs, its guard page and the rest), `commit limit`
    /// (reserve/commit: a stack's top page could not be committed), or `heap` when the
    /// heap did not fit.
    pub threads_limited_by: &'static str,
    /// The largest heap with no thread: brk grown until refused (Linux) or the largest
    /// heap reservation (reserve/commit).
    pub largest_heap: u64,
    /// The largest single mapping (hint-less mmap, or reservation) and where it lands.
    pub largest_mapping: u64,
    pub largest_mapping_at: u64,
    /// Pages committed in the threads-next-to-heap configuration: the whole heap plus one
    /// page at the top of each stack.
    pub committed_pages: u64,
    /// Page-table pages those committed pages need (the root included; the kernel half's
    /// tables are shared with every process and not counted).
    pub page_table_pages: u64,
    pub page_table_bytes: u64,
    /// The MMU whose tables were counted.
    pub paging: &'static str,
    /// Page tables of the kernel half, allocated once and shared by every process (native
    /// i386 only: `vmspace::space::kernel`'s default 3G/1G layout, the kernel's own
    /// directory included); a compat task's kernel lives above 4 GiB.
    pub kernel_half_table_pages: Option<u64>,
}

/// What each row assumes, printed under the table.
pub const ASSUMPTIONS: &str =
    "space: a fresh static program (vmspace layout), 8 MiB RLIMIT_STACK, \
stack_guard_gap 1 MiB, mmap_min_addr 64 KiB; heap grown by brk (reserve-commit: one heap \
reservation) before the stacks are placed one by one until refused; page tables: the heap \
fully committed and one page committed at the top of each stack, counted in the task's \
page-table format (native i386 2-level, compat x86-64 4-level), kernel-half tables not counted";

fn kind_name(k: TaskKind) -> &'static str {
    match k {
        TaskKind::X86_64 => "x86_64",
        TaskKind::Compat32 => "compat",
        TaskKind::I386Native => "native",
    }
}

/// The largest `len` (a multiple of `unit`, at most `max`) for which `fits(len)` gives an
/// address, found by binary search (`fits` must be monotone: if a length fits, every
/// smaller one does). Returns `(len, address)`; `(0, 0)` if nothing fits.
pub fn largest(unit: u64, max: u64, fits: impl Fn(u64) -> Option<u64>) -> (u64, u64) {
    let (mut lo, mut hi) = (0u64, max / unit + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid * unit).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    match lo {
        0 => (0, 0),
        n => (n * unit, fits(n * unit).unwrap_or(0)),
    }
}

/// The largest heap brk() grants from the start of the break (B5): each length tried on a
/// copy of the space.
pub fn largest_brk(s: &AddressSpace) -> (u64, u64) {
    let start = s.start_brk();
    let room = s.layout().task_size.saturating_sub(start);
    largest(PAGE, room, |len| {
        let mut c = s.clone();
        let want = start + len;
        (c.brk(want) == want).then_some(start)
    })
}

/// The largest hint-less anonymous mapping (MAP_NORESERVE: overcommit is no limit).
pub fn largest_mmap(s: &AddressSpace) -> (u64, u64) {
    largest(PAGE, s.layout().task_size, |len| {
        let mut c = s.clone();
        c.mmap(
            0,
            len,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
            None,
            0,
        )
        .ok()
    })
}

/// How a Linux thread stack is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StackKind {
    /// glibc: mmap(MAP_STACK) of the whole size, the lowest page made PROT_NONE.
    MapStack,
    /// mmap(MAP_GROWSDOWN): the VMA grows on faults and keeps stack_guard_gap below it.
    GrowsDown,
}

/// Places stacks of `size` bytes one after the other until mmap refuses; returns their
/// bases in placement order.
pub fn fill_stacks(s: &mut AddressSpace, size: u64, kind: StackKind) -> Vec<u64> {
    let mut bases = Vec::new();
    let flags = MAP_PRIVATE
        | MAP_ANONYMOUS
        | match kind {
            StackKind::MapStack => MAP_STACK,
            StackKind::GrowsDown => MAP_GROWSDOWN,
        };
    while let Ok(base) = s.mmap(0, size, PROT_READ | PROT_WRITE, flags, None, 0) {
        // glibc's guard page at the low end (inside the stack size); if it cannot be made
        // (the split needs a map-count slot) pthread_create unmaps the stack and fails.
        if kind == StackKind::MapStack && size > PAGE && s.mprotect(base, PAGE, PROT_NONE).is_err()
        {
            let _ = s.munmap(base, size);
            break;
        }
        bases.push(base);
    }
    bases
}

/// Why the last placement was refused: the map count at its limit (M-count: the next mmap
/// that does not merge, or the guard page's split, is refused) or the address space.
fn limited_by(s: &AddressSpace) -> &'static str {
    if s.map_count() + 2 > s.config().max_map_count {
        "max_map_count"
    } else {
        "address space"
    }
}

/// Grows the break of `base` by `heap` bytes (none if 0) and then places stacks of `stack`
/// bytes until refused ([`fill_stacks`]): the space after, and the stack bases; `None` if
/// brk refuses the heap.
pub fn place(
    base: &AddressSpace,
    heap: u64,
    stack: u64,
    kind: StackKind,
) -> Option<(AddressSpace, Vec<u64>)> {
    let mut s = base.clone();
    if heap > 0 {
        let want = s.brk_value().checked_add(heap)?;
        if s.brk(want) != want {
            return None;
        }
    }
    let bases = fill_stacks(&mut s, stack, kind);
    Some((s, bases))
}

/// Table pages (root included) a page table of `arch` holds once every page in `pages`
/// is mapped (all onto one frame: only the tables matter).
pub fn table_pages<A: Arch>(arch: A, pages: impl Iterator<Item = u64>) -> u64 {
    const RAM: u64 = 16 << 20;
    let mut ram = EmulatedRam::new(PhysAddr::ZERO, RAM).expect("16 MiB of emulated RAM");
    let all = FrameRange::new(Frame::from_number(0).expect("frame 0"), RAM / PAGE)
        .expect("a frame range");
    let mut frames = OwnedBuddyAllocator::new_owned(&[all], &[]).expect("a frame allocator");
    let mut pt = PageTable::new(arch, &mut ram, &mut frames).expect("a root table");
    let data = PhysAddr::new(RAM - PAGE);
    let flags = PageFlags::PRESENT | PageFlags::WRITABLE | PageFlags::USER;
    for p in pages {
        pt.map(&mut ram, &mut frames, VirtAddr::new(p), data, PAGE, flags)
            .expect("a user page below 4 GiB maps");
    }
    pt.table_pages()
}

/// Table pages the shared kernel half of the default 3G/1G kernel space costs, counted by
/// building it ([`KernelSpace::new`]): one table per kernel directory entry and the kernel's
/// own directory.
pub fn kernel_half_tables() -> u64 {
    const RAM: u64 = 8 << 20;
    let mut ram = EmulatedRam::new(PhysAddr::ZERO, RAM).expect("8 MiB of emulated RAM");
    let all = FrameRange::new(Frame::from_number(0).expect("frame 0"), RAM / PAGE)
        .expect("a frame range");
    let mut frames = OwnedBuddyAllocator::new_owned(&[all], &[]).expect("a frame allocator");
    let k = KernelSpace::new(KernelLayout::default(), &mut ram, &mut frames)
        .expect("the default kernel space fits in 8 MiB");
    k.shared_tables() + k.page_table().table_pages()
}

fn count_tables(kind: TaskKind, pages: impl Iterator<Item = u64>) -> (u64, &'static str) {
    match kind {
        TaskKind::I386Native => (
            table_pages(I386::without_recursive_mapping(), pages),
            "i386 2-level",
        ),
        _ => (table_pages(X86_64, pages), "x86-64 4-level"),
    }
}

fn config(kind: TaskKind, legacy: bool) -> SpaceConfig {
    let mut c = SpaceConfig::linux_default(kind);
    c.legacy_layout = legacy;
    c
}

/// The row for a Linux layout.
pub fn linux_row(kind: TaskKind, legacy: bool, heap: u64, stack: u64) -> Row {
    linux_row_with(config(kind, legacy), heap, stack)
}

/// [`linux_row`] for any configuration (limits, sysctls).
pub fn linux_row_with(cfg: SpaceConfig, heap: u64, stack: u64) -> Row {
    let (kind, legacy) = (cfg.kind, cfg.legacy_layout);
    let base = layout::exec_space(cfg);
    let (largest_heap, _) = largest_brk(&base);
    let (largest_mapping, largest_mapping_at) = largest_mmap(&base);
    let start = base.brk_value();
    let stack = stack.max(PAGE).next_multiple_of(PAGE);
    let mut limit = "heap";
    let (heap_fits, threads, threads_gd, committed, tables, paging) =
        match place(&base, heap, stack, StackKind::MapStack) {
            Some((s, bases)) => {
                limit = limited_by(&s);
                let gd = place(&base, heap, stack, StackKind::GrowsDown)
                    .map_or(0, |(_, b)| b.len() as u64);
                let heap_pages = (start..start + heap).step_by(PAGE as usize);
                let tops = bases.iter().map(|b| b + stack - PAGE);
                let committed = heap.div_ceil(PAGE) + bases.len() as u64;
                let (t, paging) = count_tables(kind, heap_pages.chain(tops));
                (true, bases.len() as u64, Some(gd), committed, t, paging)
            }
            None => (
                false,
                0,
                Some(0),
                0,
                0,
                count_tables(kind, std::iter::empty()).1,
            ),
        };
    Row {
        kernel: kind_name(kind),
        layout: if legacy {
            Scheme::Legacy
        } else {
            Scheme::Topdown
        },
        task_size: base.layout().task_size,
        granularity: PAGE,
        heap,
        stack,
        heap_fits,
        threads,
        threads_growsdown: threads_gd,
        threads_limited_by: limit,
        largest_heap,
        largest_mapping,
        largest_mapping_at,
        committed_pages: committed,
        page_table_pages: tables,
        page_table_bytes: tables * PAGE,
        paging,
        kernel_half_table_pages: (kind == TaskKind::I386Native).then(kernel_half_tables),
    }
}

/// The largest single reservation (bottom-up, W4), each size tried on a copy of the space.
pub fn largest_reserve(s: &AddressSpace) -> (u64, u64) {
    largest(PAGE, s.layout().task_size, |len| {
        let mut c = s.clone();
        c.reserve(None, len, false).ok()
    })
}

/// Reserves stacks of `size` bytes one after the other until refused and commits the top
/// page of each (W17); returns their bases and whether the commit limit (not the address
/// space) stopped them.
pub fn fill_reserved_stacks(s: &mut AddressSpace, size: u64) -> (Vec<u64>, bool) {
    let mut bases = Vec::new();
    while let Ok(base) = s.reserve(None, size, false) {
        // The committed top page; a refused commit (commit limit) ends the count too.
        if s.commit(base + size - PAGE, PAGE, WinProt::READWRITE)
            .is_err()
        {
            let _ = s.release(base, 0);
            return (bases, true);
        }
        bases.push(base);
    }
    (bases, false)
}

/// The row for reserve/commit at 64 KiB granularity in the same exec'd space (top-down
/// Linux layout underneath): the heap is one reservation of `heap` bytes, committed whole
/// (HeapCreate with an initial size), the stacks reservations of `stack` bytes with their
/// top page committed.
pub fn reserve_row(kind: TaskKind, heap: u64, stack: u64) -> Row {
    reserve_row_with(config(kind, false), heap, stack)
}

/// [`reserve_row`] for any configuration (RAM and swap set the commit limit).
pub fn reserve_row_with(cfg: SpaceConfig, heap: u64, stack: u64) -> Row {
    let kind = cfg.kind;
    let base = layout::exec_space(cfg);
    // A heap is one reservation: the largest heap is the largest single reservation.
    let (largest_heap, largest_mapping_at) = largest_reserve(&base);
    let largest_mapping = largest_heap;
    let stack = stack.max(PAGE).next_multiple_of(PAGE);
    let mut s = base.clone();
    let heap_at = if heap == 0 {
        Some(None)
    } else {
        s.reserve(None, heap, false)
            .ok()
            .filter(|&h| s.commit(h, heap, WinProt::READWRITE).is_ok())
            .map(Some)
    };
    let mut limit = "heap";
    let (heap_fits, threads, committed, tables, paging) = match heap_at {
        Some(h) => {
            let (bases, commit_refused) = fill_reserved_stacks(&mut s, stack);
            limit = if commit_refused {
                "commit limit"
            } else {
                limited_by(&s)
            };
            let heap_pages = h
                .map(|h| (h..h + heap).step_by(PAGE as usize))
                .into_iter()
                .flatten();
            let tops = bases.iter().map(|b| b + stack - PAGE);
            let committed = heap.div_ceil(PAGE) + bases.len() as u64;
            let (t, paging) = count_tables(kind, heap_pages.chain(tops));
            (true, bases.len() as u64, committed, t, paging)
        }
        None => (false, 0, 0, 0, count_tables(kind, std::iter::empty()).1),
    };
    Row {
        kernel: kind_name(kind),
        layout: Scheme::ReserveCommit,
        task_size: base.layout().task_size,
        granularity: GRANULARITY,
        heap,
        stack,
        heap_fits,
        threads,
        threads_growsdown: None,
        threads_limited_by: limit,
        largest_heap,
        largest_mapping,
        largest_mapping_at,
        committed_pages: committed,
        page_table_pages: tables,
        page_table_bytes: tables * PAGE,
        paging,
        kernel_half_table_pages: (kind == TaskKind::I386Native).then(kernel_half_tables),
    }
}

/// Every row asked for.
pub fn rows(kernel: KernelArg, heap: u64, stack: u64) -> Vec<Row> {
    let kinds: &[TaskKind] = match kernel {
        KernelArg::Native => &[TaskKind::I386Native],
        KernelArg::Compat => &[TaskKind::Compat32],
        KernelArg::All => &[TaskKind::I386Native, TaskKind::Compat32],
    };
    let mut out = Vec::new();
    for &k in kinds {
        for legacy in [true, false] {
            out.push(linux_row(k, legacy, heap, stack));
        }
        out.push(reserve_row(k, heap, stack));
    }
    out
}

fn render(rows: &[Row], heap: u64, stack: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "32-bit address space capacity: threads with {} stacks next to a {} heap",
        size(stack),
        size(heap)
    );
    let _ = writeln!(
        o,
        "{:<7} {:<15} {:>8} {:>11} {:>13} {:>16} {:>11} {:>9}  threads limited by",
        "kernel",
        "layout",
        "threads",
        "growsdown",
        "largest heap",
        "largest mapping",
        "page tables",
        "tables"
    );
    for r in rows {
        let threads = if r.heap_fits {
            r.threads.to_string()
        } else {
            "no heap".into()
        };
        let gd = match r.threads_growsdown {
            Some(n) if r.heap_fits => n.to_string(),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:<7} {:<15} {:>8} {:>11} {:>13} {:>16} {:>11} {:>9}  {}",
            r.kernel,
            r.layout.name(),
            threads,
            gd,
            size(r.largest_heap),
            size(r.largest_mapping),
            size(r.page_table_bytes),
            r.page_table_pages,
            r.threads_limited_by
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "threads: MAP_STACK stacks (glibc, guard page inside); growsdown: MAP_GROWSDOWN stacks \
         (1 MiB stack_guard_gap kept below each); reserve-commit: {} reservations",
        size(stack)
    );
    if let Some(k) = rows.iter().find_map(|r| r.kernel_half_table_pages) {
        let _ = writeln!(
            o,
            "native kernel half (space::kernel, 3G/1G): {k} page tables = {}, allocated once \
             and shared by every process (not in the per-process column)",
            size(k * PAGE)
        );
    }
    let _ = writeln!(o, "assumed: {ASSUMPTIONS}");
    o
}

/// Runs `vmspace capacity`.
pub fn run(args: CapacityArgs) -> Result<(), String> {
    if args.stack == 0 {
        return Err("--stack must be at least one page".into());
    }
    if args.heap >= 1 << 32 || args.stack >= 1 << 32 {
        return Err("--heap and --stack must fit in a 32-bit space".into());
    }
    let rows = rows(args.kernel, args.heap, args.stack);
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
        }
    } else {
        if args.kernel_space {
            println!("{}", KernelLayout::default());
        }
        print!("{}", render(&rows, args.heap, args.stack));
    }
    Ok(())
}

#[cfg(test)]
mod linux;

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Native i386 3G/1G, legacy layout, 512 MiB heap, 1 MiB stacks, derived by hand:
    /// text 0x08048000, start_brk 0x080ce000, the vDSO block (8 pages) at
    /// TASK_UNMAPPED_BASE 0x40000000 (L5, L18), the main stack [0xbffdf000, 0xc0000000)
    /// with its 1 MiB guard gap from 0xbfedf000 (L17, P8).
    #[test]
    fn native_legacy_by_hand() {
        let r = linux_row(TaskKind::I386Native, true, 512 * MIB, MIB);
        // B5: the break stops one page below the vDSO block.
        assert_eq!(r.largest_heap, 0x3fff_f000 - 0x080c_e000);
        // P11/P12: bottom-up from the vDSO's end up to the main stack's guard gap.
        assert_eq!(r.largest_mapping, 0xbfed_f000 - 0x4000_8000);
        assert_eq!(r.largest_mapping_at, 0x4000_8000);
        // The stacks fill the same range, 1 MiB each: floor(0x7fed7000 / 1 MiB).
        assert!(r.heap_fits);
        assert_eq!(r.threads, 2046);
        // Bottom-up, a GROWSDOWN stack's own gap may overlap the stack below it.
        assert_eq!(r.threads_growsdown, Some(2046));
        // Tables: the directory, PDEs 32..=160 for the heap [0x080ce000, 0x280ce000), and
        // PDEs 256..=767 for the stack tops 0x40107000..=0xbfe07000.
        assert_eq!(r.page_table_pages, 1 + 129 + 512);
        assert_eq!(r.committed_pages, 512 * 256 + 2046);
        assert_eq!(r.paging, "i386 2-level");
        assert_eq!(r.threads_limited_by, "address space");
        // PDE 0 (low memory), PDEs 768..=1022 (1023 is the recursive slot), the directory.
        assert_eq!(r.kernel_half_table_pages, Some(257));
    }

    /// glibc stacks are two VMAs each (guard page + stack) that merge with nothing, so a
    /// map-count limit stops them before the address space: with vm.max_map_count 1000 and
    /// the exec'd space's 6 VMAs (text, data, stack, vvar, vvar_vclock, vdso), stack k+1
    /// needs 6 + 2k + 1 < 1000 for its guard split (M-count): 497 stacks.
    #[test]
    fn small_map_count_limits_the_threads() {
        let mut cfg = config(TaskKind::I386Native, false);
        cfg.max_map_count = 1000;
        let r = linux_row_with(cfg, 0, 68 << 10);
        assert_eq!(r.threads, 497);
        assert_eq!(r.threads_limited_by, "max_map_count");
    }

    /// Same space, top-down: stacks come down from mmap_base 0xb8000000 (L4) under the
    /// vDSO to the heap's end (1152 GROWSDOWN stacks, each keeping 1 MiB below it: 2 MiB
    /// apiece), then below the text (64), then bottom-up above mmap_base (P9, 126).
    #[test]
    fn native_topdown_growsdown_by_hand() {
        let r = linux_row(TaskKind::I386Native, false, 512 * MIB, MIB);
        assert_eq!(r.threads_growsdown, Some(1152 + 64 + 126));
        // MAP_STACK stacks pack: 2303 + 128 + 126.
        assert_eq!(r.threads, 2303 + 128 + 126);
        assert_eq!(r.largest_heap, 0xb7ff_7000 - 0x080c_e000);
    }

    /// Reserve/commit at 64 KiB granularity: the heap reservation lands at 0x080d0000 (the
    /// first 64 KiB boundary after the data), 1 MiB stacks fill [0x10000, 0x08048000) (128),
    /// the rest under the vDSO (2303) and above mmap_base (126). 68 KiB stacks waste the
    /// rest of their last 64 KiB block: one every 128 KiB below the text (1026).
    #[test]
    fn reserve_commit_by_hand() {
        let r = reserve_row(TaskKind::I386Native, 512 * MIB, MIB);
        assert_eq!(r.granularity, 64 << 10);
        assert_eq!(r.threads, 128 + 2303 + 126);
        // 68 KiB stacks below the text, placed bottom-up one by one.
        let mut s = layout::exec_space(config(TaskKind::I386Native, false));
        let mut first = Vec::new();
        while let Ok(b) = s.reserve(None, 68 << 10, false) {
            if b >= 0x0804_8000 {
                break;
            }
            first.push(b);
        }
        assert_eq!(first.len(), 1026);
        assert_eq!(first[0], 0x1_0000);
        assert!(first.windows(2).all(|w| w[1] - w[0] == 128 << 10));
        // With a 2.5 GiB heap taking most of the space (fewer stacks to place), 64 KiB
        // granularity fits fewer 68 KiB stacks than page-granular mmap.
        let big = 10 << 28;
        let small = reserve_row(TaskKind::I386Native, big, 68 << 10);
        let linux = linux_row(TaskKind::I386Native, false, big, 68 << 10);
        assert!(small.heap_fits && linux.heap_fits);
        assert!(
            small.threads < linux.threads,
            "{} vs {}",
            small.threads,
            linux.threads
        );
    }

    /// No overcommit with reserve/commit (W6): with RAM + swap of 1000 pages, a 2 MiB heap
    /// committed whole (512 pages) leaves room for 488 stacks' top pages.
    #[test]
    fn the_commit_limit_stops_reserve_commit_stacks() {
        let mut cfg = config(TaskKind::I386Native, false);
        cfg.total_ram_pages = 1000;
        cfg.total_swap_pages = 0;
        let r = reserve_row_with(cfg, 2 * MIB, MIB);
        assert_eq!(r.threads, 488);
        assert_eq!(r.threads_limited_by, "commit limit");
        assert_eq!(r.committed_pages, 1000);
    }

    /// Each stack is one reservation whose only committed page is the top one (W12: the
    /// query's maximal runs).
    #[test]
    fn reserved_stacks_are_reserved_with_the_top_page_committed() {
        use vmspace::space::windows::MemState;
        let mut s = layout::exec_space(config(TaskKind::I386Native, false));
        s.reserve(None, 10 << 28, false).unwrap();
        let (bases, commit_refused) = fill_reserved_stacks(&mut s, MIB);
        assert!(!commit_refused);
        assert!(bases.len() > 100);
        for &b in &bases {
            let q = s.virtual_query(b).unwrap();
            assert_eq!(
                (q.allocation_base, q.state, q.region_size),
                (b, MemState::Reserve, MIB - PAGE)
            );
            let t = s.virtual_query(b + MIB - PAGE).unwrap();
            assert_eq!(
                (t.allocation_base, t.state, t.region_size),
                (b, MemState::Commit, PAGE)
            );
        }
    }

    #[test]
    fn a_heap_that_does_not_fit_leaves_no_thread() {
        let r = linux_row(TaskKind::I386Native, true, 1 << 30, MIB);
        assert!(!r.heap_fits);
        assert_eq!(r.threads, 0);
        let r = reserve_row(TaskKind::I386Native, 3 << 30, MIB);
        assert!(!r.heap_fits);
    }

    #[test]
    fn largest_is_a_binary_search_for_the_edge() {
        assert_eq!(
            largest(PAGE, 1 << 20, |l| (l <= 5 * PAGE).then_some(7)),
            (5 * PAGE, 7)
        );
        assert_eq!(largest(PAGE, 1 << 20, |_| None), (0, 0));
        assert_eq!(largest(PAGE, 1 << 20, |_| Some(1)), (1 << 20, 1));
    }
}
