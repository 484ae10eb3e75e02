//! `vmspace bench heap`: the heaps of `vmspace-heap` against malloc-style peers.
//!
//! Every allocator runs the same pre-generated workloads through `GlobalAlloc`:
//! - `a-mixed`: 2,000,000 random operations on 20,000 slots (an empty slot is filled with a
//!   block of 8..=4096 bytes, a full one is freed), so about 10,000 objects stay live;
//! - `b-small`: the same with sizes 8..=128;
//! - `c-burst`: allocate 100,000 blocks of 8..=4096 bytes, then free them in order;
//! - `d-threads`: two threads, each allocating batches of 256 blocks (8..=1024 bytes) and
//!   handing them to the other, which frees them (every free is cross-thread).
//!
//! `bare-free-list` is the floor the others are measured against: a free list per 16-byte
//! class over a bump region, no checks, no thread safety (cases a–c only).
//!
//! Each block's first byte is written. `linked_list_allocator` (a first-fit list, several
//! microseconds per operation at 10,000 live blocks) runs the first tenth of the random
//! workloads and of `d-threads`, once; everyone else runs the full count: for a–c on a fresh
//! instance, a warm-up and then five rounds back to back (no idle gaps, in which memory an
//! allocator returns on a timer would go away); for `d-threads` (short, always busy rounds)
//! five rounds interleaved across the allocators, so a burst of load hits them alike. The
//! median is reported. On a loaded machine `VMSPACE_BENCH_HEAP_CPU_TIME=1` times cases a–c
//! by thread CPU time instead of wall-clock.
//!
//! Besides ns/op, a first (untimed) pass on a fresh instance samples each allocator's
//! committed memory and reports `peak_committed` over the workload's `peak_live` requested
//! bytes (cases a–c). Committed memory is what the allocator holds from the system:
//! vmspace's own counters, glibc's `mallinfo2` (arena + mmapped), mimalloc's
//! `mi_process_info` commit (both in a child process), and for the arena-based peers the
//! resident pages of their arena (`mincore`). The arena peers' regions ask for transparent
//! huge pages when timed (as the vmspace host sources do for theirs), and not in the memory
//! pass, where their resident 4 KiB pages are exactly what they touched; likewise the
//! size-class heap's host source, whose counter then matches its resident pages.

use super::{median_ns_per_op, scaled, time_ns, Record};
use crate::rng::XorShift64Star;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::sync_channel;
use vmspace_heap::{FitPolicy, HostBrk, HostSource, LockedChunkHeap, SizeClassHeap};

const GROUP: &str = "heap";
const ROUNDS: usize = 5;
/// Bytes of address space given to the arena-based peers (touched lazily).
const ARENA: usize = 4 << 30;

/// One operation: fill `slot` with `size` bytes, or free it when `size` is 0.
#[derive(Clone, Copy)]
struct Op {
    slot: u32,
    size: u32,
}

/// A pre-generated single-thread workload.
struct Workload {
    ops: Vec<Op>,
    slots: usize,
    peak_live: usize,
}

fn random_workload(ops: u64, slots: usize, lo: usize, hi: usize, seed: u64) -> Workload {
    let mut rng = XorShift64Star(seed);
    let mut size = vec![0u32; slots];
    let (mut live, mut peak) = (0usize, 0usize);
    let mut v = Vec::with_capacity(ops as usize);
    for _ in 0..ops {
        let slot = (rng.next() % slots as u64) as usize;
        if size[slot] == 0 {
            let s = rng.range(lo, hi) as u32;
            size[slot] = s;
            live += s as usize;
            peak = peak.max(live);
            v.push(Op {
                slot: slot as u32,
                size: s,
            });
        } else {
            live -= size[slot] as usize;
            size[slot] = 0;
            v.push(Op {
                slot: slot as u32,
                size: 0,
            });
        }
    }
    Workload {
        ops: v,
        slots,
        peak_live: peak,
    }
}

impl Workload {
    /// The first `n` operations (same generator), with their own peak.
    fn prefix(&self, n: usize) -> Workload {
        let ops = self.ops[..n.min(self.ops.len())].to_vec();
        let mut size = vec![0u32; self.slots];
        let (mut live, mut peak) = (0usize, 0usize);
        for op in &ops {
            let s = &mut size[op.slot as usize];
            if op.size != 0 {
                live += op.size as usize;
                peak = peak.max(live);
            } else {
                live -= *s as usize;
            }
            *s = op.size;
        }
        Workload {
            ops,
            slots: self.slots,
            peak_live: peak,
        }
    }
}

fn burst_workload(n: usize, seed: u64) -> Workload {
    let mut rng = XorShift64Star(seed);
    let mut v = Vec::with_capacity(2 * n);
    let mut live = 0;
    for i in 0..n {
        let s = rng.range(8, 4096) as u32;
        live += s as usize;
        v.push(Op {
            slot: i as u32,
            size: s,
        });
    }
    for i in 0..n {
        v.push(Op {
            slot: i as u32,
            size: 0,
        });
    }
    Workload {
        ops: v,
        slots: n,
        peak_live: live,
    }
}

fn layout(size: usize) -> Layout {
    // sizes are small and nonzero; alignment 8 is what Box<[u64]>-like objects ask
    Layout::from_size_align(size, 8).expect("valid layout")
}

/// Runs `w` on `a`; calls `sample` every `every` operations (0: never). Frees what is left
/// at the end (untimed when timing). Returns the nanoseconds of the operations.
fn replay<A: GlobalAlloc>(a: &A, w: &Workload, every: usize, mut sample: impl FnMut()) -> u128 {
    let mut ptrs = vec![std::ptr::null_mut::<u8>(); w.slots];
    let mut sizes = vec![0u32; w.slots];
    let ns = timed(|| {
        for (i, op) in w.ops.iter().enumerate() {
            let s = op.slot as usize;
            if op.size != 0 {
                // SAFETY: a nonzero layout; the block is written only within its size.
                unsafe {
                    let p = a.alloc(layout(op.size as usize));
                    assert!(!p.is_null(), "allocator out of memory");
                    p.write_volatile(1);
                    ptrs[s] = p;
                }
                sizes[s] = op.size;
            } else {
                // SAFETY: the slot holds a live block of that layout.
                unsafe { a.dealloc(ptrs[s], layout(sizes[s] as usize)) };
            }
            if every != 0 && i % every == 0 {
                sample();
            }
        }
    });
    let mut live = vec![false; w.slots];
    for op in &w.ops {
        live[op.slot as usize] = op.size != 0;
    }
    for (s, l) in live.iter().enumerate() {
        if *l {
            // SAFETY: still live at the end of the workload.
            unsafe { a.dealloc(ptrs[s], layout(sizes[s] as usize)) };
        }
    }
    ns
}

/// Times `f`: wall-clock, or with `VMSPACE_BENCH_HEAP_CPU_TIME=1` this thread's CPU time
/// (steadier on a machine shared with other work; single-thread cases only).
fn timed(f: impl FnOnce()) -> u128 {
    if std::env::var_os("VMSPACE_BENCH_HEAP_CPU_TIME").is_none() {
        return time_ns(f);
    }
    super::os::cpu_time_ns(f)
}

const BATCH: usize = 256;

/// Two threads trading batches of blocks; returns (ns, ops).
fn threads<A: GlobalAlloc + Sync>(a: &A, ops: u64) -> (u128, u64) {
    let batches = (ops as usize / (2 * 2 * BATCH)).max(1);
    let (tx0, rx1) = sync_channel::<Vec<usize>>(4);
    let (tx1, rx0) = sync_channel::<Vec<usize>>(4);
    let work = |seed: u64,
                tx: std::sync::mpsc::SyncSender<Vec<usize>>,
                rx: std::sync::mpsc::Receiver<Vec<usize>>| {
        let mut rng = XorShift64Star(seed);
        let mut spare = vec![Vec::with_capacity(BATCH), Vec::with_capacity(BATCH)];
        for _ in 0..batches {
            let mut out = spare.pop().unwrap_or_else(|| Vec::with_capacity(BATCH));
            out.clear();
            for _ in 0..BATCH {
                let size = rng.range(8, 1024);
                // SAFETY: a nonzero layout; the first byte is ours to write.
                unsafe {
                    let p = a.alloc(layout(size));
                    assert!(!p.is_null());
                    p.write_volatile(1);
                    out.push(p as usize | (size << 48));
                }
            }
            tx.send(out).expect("peer alive");
            let got = rx.recv().expect("peer alive");
            for &x in &got {
                let (p, size) = ((x & ((1 << 48) - 1)) as *mut u8, x >> 48);
                // SAFETY: the peer allocated it with this layout and gave it to us.
                unsafe { a.dealloc(p, layout(size)) };
            }
            spare.push(got);
        }
    };
    let ns = time_ns(|| {
        std::thread::scope(|s| {
            s.spawn(|| work(1, tx0, rx0));
            s.spawn(|| work(2, tx1, rx1));
        });
    });
    (ns, (batches * 2 * 2 * BATCH) as u64)
}

/// The system allocator (glibc malloc) called directly.
struct SystemMalloc;

// SAFETY: malloc/posix_memalign return blocks of the requested size and alignment or null.
unsafe impl GlobalAlloc for SystemMalloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.align() <= 16 {
            // SAFETY: plain malloc.
            unsafe { libc::malloc(l.size()).cast() }
        } else {
            let mut p = std::ptr::null_mut();
            // SAFETY: the alignment is a power of two multiple of the pointer size.
            if unsafe { libc::posix_memalign(&mut p, l.align(), l.size()) } != 0 {
                return std::ptr::null_mut();
            }
            p.cast()
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: `p` came from malloc.
        unsafe { libc::free(p.cast()) }
    }
}

/// An anonymous, lazily committed region for the arena-based peers.
struct Region {
    base: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize, huge: bool) -> Region {
        // SAFETY: a fresh anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of the bench arena failed");
        if huge {
            // Transparent huge pages, as the vmspace host sources ask for their own regions:
            // the peers' arenas get the same advice when timed.
            // SAFETY: advice on our own fresh mapping.
            unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        }
        Region {
            base: p.cast(),
            len,
        }
    }

    /// Resident bytes of the region.
    fn resident(&self) -> usize {
        let pages = self.len / 4096;
        let mut v = vec![0u8; pages];
        // SAFETY: the region is ours and `v` has one byte per page.
        unsafe { libc::mincore(self.base.cast(), self.len, v.as_mut_ptr()) };
        v.iter().filter(|b| **b & 1 != 0).count() * 4096
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the allocator using it is dropped before.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn mallinfo_committed() -> usize {
    // SAFETY: mallinfo2 only reads glibc's counters.
    let m = unsafe { libc::mallinfo2() };
    m.arena + m.hblkhd
}

fn mimalloc_committed() -> usize {
    let mut v = [0usize; 8];
    // SAFETY: every out-pointer points at a distinct usize.
    unsafe {
        let [a, b, c, d, e, f, g, h] = &mut v;
        libmimalloc_sys::mi_process_info(a, b, c, d, e, f, g, h);
    }
    v[5]
}

type Talc = talc::TalcLock<spinning_top::RawSpinlock, talc::source::Claim>;

/// One allocator under test: a fresh instance and a way to read what it has committed.
enum Impl {
    SizeClass(Box<SizeClassHeap<HostSource>>),
    Chunk(Box<LockedChunkHeap<HostBrk>>),
    System,
    Mimalloc,
    LinkedList(Box<linked_list_allocator::LockedHeap>, Region),
    Talc(Box<Talc>, Region),
    Buddy(Box<buddy_system_allocator::LockedHeap<33>>, Region),
    Floor(Box<Floor>, Region),
}

const NAMES: [&str; 11] = [
    "vmspace-size-class",
    "vmspace-chunk-first-fit",
    "vmspace-chunk-best-fit",
    "vmspace-chunk-worst-fit",
    "vmspace-chunk-next-fit",
    "system",
    "mimalloc",
    "linked_list_allocator",
    "talc",
    "buddy_system_allocator",
    "bare-free-list",
];

/// A fresh `name`; `huge`: its arena (if it takes one) asks for transparent huge pages.
fn make(name: &str, huge: bool) -> Impl {
    match name {
        "vmspace-size-class" => Impl::SizeClass(Box::new(SizeClassHeap::new(if huge {
            HostSource::new()
        } else {
            HostSource::small_pages()
        }))),
        "system" => Impl::System,
        "bare-free-list" => {
            let r = Region::new(ARENA, huge);
            let f = Floor {
                st: std::cell::UnsafeCell::new((r.base as usize, [0; 257])),
            };
            Impl::Floor(Box::new(f), r)
        }
        "mimalloc" => Impl::Mimalloc,
        "linked_list_allocator" => {
            let r = Region::new(ARENA, huge);
            // SAFETY: the region is ours, unused, and outlives the heap (dropped after it).
            let h = unsafe { linked_list_allocator::LockedHeap::new(r.base, r.len) };
            Impl::LinkedList(Box::new(h), r)
        }
        "talc" => {
            let r = Region::new(ARENA, huge);
            // SAFETY: as above.
            let t = Talc::new(unsafe { talc::source::Claim::new(r.base, r.len) });
            Impl::Talc(Box::new(t), r)
        }
        "buddy_system_allocator" => {
            let r = Region::new(ARENA, huge);
            let h = buddy_system_allocator::LockedHeap::<33>::new();
            // SAFETY: as above.
            unsafe { h.lock().init(r.base as usize, r.len) };
            Impl::Buddy(Box::new(h), r)
        }
        chunk => {
            let policy = FitPolicy::ALL
                .into_iter()
                .find(|p| chunk == format!("vmspace-chunk-{}-fit", p.name()))
                .expect("known impl name");
            let brk = HostBrk::new(ARENA).expect("reserve the chunk heap's region");
            Impl::Chunk(Box::new(LockedChunkHeap::new(brk, policy)))
        }
    }
}

impl Impl {
    fn committed(&self) -> usize {
        match self {
            Impl::SizeClass(h) => h.stats().committed_bytes,
            Impl::Chunk(h) => h.lock().stats().committed_bytes,
            Impl::System => mallinfo_committed(),
            Impl::Mimalloc => mimalloc_committed(),
            Impl::LinkedList(_, r) | Impl::Talc(_, r) | Impl::Buddy(_, r) | Impl::Floor(_, r) => {
                r.resident()
            }
        }
    }
}

/// Calls `f` with the allocator behind `imp`, monomorphized per allocator type.
macro_rules! with_alloc {
    ($imp:expr, |$a:ident| $body:expr) => {
        match $imp {
            Impl::SizeClass(h) => {
                let $a = &**h;
                $body
            }
            Impl::Chunk(h) => {
                let $a = &**h;
                $body
            }
            Impl::System => {
                let $a = &SystemMalloc;
                $body
            }
            Impl::Mimalloc => {
                let $a = &mimalloc::MiMalloc;
                $body
            }
            Impl::LinkedList(h, _) => {
                let $a = &**h;
                $body
            }
            Impl::Talc(h, _) => {
                let $a = &**h;
                $body
            }
            Impl::Buddy(h, _) => {
                let $a = &**h;
                $body
            }
            Impl::Floor(h, _) => {
                let $a = &**h;
                $body
            }
        }
    };
}

/// Set in a child process that only measures one allocator's memory.
const MEMORY_CHILD: &str = "VMSPACE_BENCH_HEAP_MEMORY_CHILD";

/// Peak committed bytes of `name` over workload `w` of `case`. The process-wide allocators
/// (glibc, mimalloc) are measured in a fresh child process (this program, re-run for that
/// one allocator and case), so memory they kept from earlier cases does not hide the
/// workload's; the others on a fresh instance here.
fn peak_committed(name: &str, case: &str, scale: f64, w: &Workload) -> usize {
    if (name == "system" || name == "mimalloc") && std::env::var_os(MEMORY_CHILD).is_none() {
        let out = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .args(["bench", "heap", "--scale", &scale.to_string()])
                .env("VMSPACE_BENCH_HEAP_IMPLS", name)
                .env("VMSPACE_BENCH_HEAP_CASES", case)
                .env(MEMORY_CHILD, "1")
                .output()
        });
        return out
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().strip_prefix("peak_committed=")?.parse().ok())
            .unwrap_or(0);
    }
    peak_committed_here(name, w)
}

/// Peak committed bytes of a fresh `name` over `w`, sampled every few operations.
fn peak_committed_here(name: &str, w: &Workload) -> usize {
    // 4 KiB pages here: resident pages then count what the allocator touched.
    let imp = make(name, false);
    let every = match imp {
        Impl::LinkedList(..) | Impl::Talc(..) | Impl::Buddy(..) => 16384,
        _ => 512,
    };
    let base = imp.committed();
    let mut peak = base;
    with_alloc!(&imp, |a| replay(a, w, every, || peak =
        peak.max(imp.committed())));
    peak = peak.max(imp.committed());
    peak.saturating_sub(base)
}

/// Whether `name` passes the comma-separated filter in environment variable `var` (unset:
/// everything runs). `VMSPACE_BENCH_HEAP_IMPLS` and `VMSPACE_BENCH_HEAP_CASES` narrow a run
/// for profiling.
fn selected(var: &str, name: &str) -> bool {
    std::env::var(var).map_or(true, |v| v.split(',').any(|x| x == name))
}

/// Runs the heap group.
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let ops = scaled(2_000_000, scale);
    let burst = scaled(100_000, scale) as usize;
    let cases = [
        (
            "a-mixed",
            random_workload(ops, 20_000, 8, 4096, 0x1234_5678),
        ),
        ("b-small", random_workload(ops, 20_000, 8, 128, 0x9abc_def0)),
        ("c-burst", burst_workload(burst, 0x0bad_cafe)),
    ];
    let mut records = Vec::new();
    let names: Vec<&str> = NAMES
        .into_iter()
        .filter(|n| selected("VMSPACE_BENCH_HEAP_IMPLS", n))
        .collect();
    let rounds_of = |name: &str| {
        if name == "linked_list_allocator" {
            1
        } else {
            ROUNDS
        }
    };
    let threads_ops = |name: &str| {
        if name == "linked_list_allocator" {
            ops / 10
        } else {
            ops
        }
    };
    if std::env::var_os(MEMORY_CHILD).is_some() {
        for (case, w) in &cases {
            if let (true, Some(name)) = (selected("VMSPACE_BENCH_HEAP_CASES", case), names.first())
            {
                println!("peak_committed={}", peak_committed_here(name, w));
                std::process::exit(0);
            }
        }
        std::process::exit(1);
    }
    for (case, full) in &cases {
        if !selected("VMSPACE_BENCH_HEAP_CASES", case) {
            continue;
        }
        // The first-fit list allocator is O(free blocks) per operation (microseconds here):
        // it runs the first tenth of the random workloads, once, so the group ends in time.
        let short = full.prefix(full.ops.len() / 10);
        let work = |name: &str| {
            if name == "linked_list_allocator" && *case != "c-burst" {
                &short
            } else {
                full
            }
        };
        let committed: Vec<usize> = names
            .iter()
            .map(|n| peak_committed(n, case, scale, work(n)))
            .collect();
        // Each allocator runs its warm-up and rounds back to back on a fresh instance, as a
        // program would: no idle gaps in which memory returned on a timer goes away.
        let mut samples = vec![Vec::new(); names.len()];
        for (i, name) in names.iter().enumerate() {
            let imp = make(name, true);
            if rounds_of(name) > 1 {
                with_alloc!(&imp, |a| replay(a, work(name), 0, || ())); // warm-up
            }
            for _ in 0..rounds_of(name) {
                samples[i].push(with_alloc!(&imp, |a| replay(a, work(name), 0, || ())));
            }
        }
        for (i, name) in names.iter().enumerate() {
            let w = work(name);
            let mut it = samples[i].iter().copied();
            let ns = median_ns_per_op(samples[i].len(), w.ops.len() as u64, || {
                it.next().unwrap_or(0)
            });
            let c = committed[i];
            records.push(
                Record::new(GROUP, case, name, ns, w.ops.len() as u64)
                    .with("peak_committed", c)
                    .with("peak_live", w.peak_live)
                    .with(
                        "committed_over_live",
                        (c as f64 / w.peak_live as f64 * 1000.0).round() / 1000.0,
                    ),
            );
        }
    }
    if selected("VMSPACE_BENCH_HEAP_CASES", "d-threads") {
        // Short rounds: interleaved across the impls, so a burst of load on the machine
        // hits them alike (every round here is busy throughout; no idle-time effects).
        // The floor is single-threaded.
        let names: Vec<&str> = names
            .into_iter()
            .filter(|n| *n != "bare-free-list")
            .collect();
        let imps: Vec<Impl> = names.iter().map(|n| make(n, true)).collect();
        for imp in &imps {
            with_alloc!(imp, |a| threads(a, ops / 20)); // warm-up
        }
        let mut samples = vec![Vec::new(); names.len()];
        let mut totals = vec![1u64; names.len()];
        for r in 0..ROUNDS {
            for (i, imp) in imps.iter().enumerate() {
                if r < rounds_of(names[i]) {
                    let (ns, n) = with_alloc!(imp, |a| threads(a, threads_ops(names[i])));
                    totals[i] = n;
                    samples[i].push(ns);
                }
            }
        }
        for (i, name) in names.iter().enumerate() {
            let mut it = samples[i].iter().copied();
            let ns = median_ns_per_op(samples[i].len(), totals[i], || it.next().unwrap_or(0));
            records.push(Record::new(GROUP, "d-threads", name, ns, totals[i]));
        }
    }
    Ok(records)
}

/// The floor: a bare single-threaded free list per 16-byte class over a bump region, with no
/// checks and the class taken from the layout, never from the pointer. What the workload
/// itself costs plus the least an allocator can do; single-thread cases only.
struct Floor {
    st: std::cell::UnsafeCell<(usize, [usize; 257])>,
}

// SAFETY: never shared: the bench runs it only in the single-thread cases (a–c), never
// in `d-threads`.
unsafe impl Sync for Floor {}

// SAFETY: blocks come from a private bump region and are handed out once until freed.
unsafe impl GlobalAlloc for Floor {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let c = (l.size() + 15) >> 4;
        // SAFETY: single-threaded use; free-list links live in freed blocks.
        unsafe {
            let st = &mut *self.st.get();
            let h = st.1[c];
            if h != 0 {
                st.1[c] = *(h as *const usize);
                return h as *mut u8;
            }
            let p = st.0;
            st.0 += c << 4;
            p as *mut u8
        }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let c = (l.size() + 15) >> 4;
        // SAFETY: as above.
        unsafe {
            let st = &mut *self.st.get();
            *(p as *mut usize) = st.1[c];
            st.1[c] = p as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_keep_about_the_intended_number_of_objects_live() {
        let w = random_workload(200_000, 20_000, 8, 4096, 7);
        let mut live = vec![false; w.slots];
        let mut n = 0i64;
        for op in &w.ops {
            let l = &mut live[op.slot as usize];
            assert_eq!(*l, op.size == 0, "a free only of a live slot");
            n += if op.size != 0 { 1 } else { -1 };
            *l = op.size != 0;
        }
        assert!((8_000..=12_000).contains(&n), "{n}");
        assert!(w.peak_live > 8_000 * 1_500);
    }

    #[test]
    fn every_impl_runs_every_case_at_small_scale() {
        let w = random_workload(5_000, 500, 8, 4096, 3);
        let c = burst_workload(500, 4);
        for name in NAMES {
            let imp = make(name, true);
            with_alloc!(&imp, |a| {
                replay(a, &w, 0, || ());
                replay(a, &c, 0, || ());
                if name != "bare-free-list" {
                    threads(a, 4 * BATCH as u64);
                }
            });
            // process-wide allocators may reuse what they already hold (hence the child
            // process in the real run); fresh instances must show the burst
            // (arena peers count resident pages: a block's untouched pages are not)
            let min = if name.starts_with("vmspace") {
                c.peak_live
            } else {
                1
            };
            if name != "system" && name != "mimalloc" {
                assert!(peak_committed_here(name, &c) >= min, "{name}");
            }
        }
    }
}
