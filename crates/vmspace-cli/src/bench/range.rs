//! `vmspace bench range`: alloc+free of address ranges with N live segments — the vmem arena's
//! three policies against the linear-scan `free-list` and `range-alloc` crates and a
//! `BTreeMap` best-fit, all at every size, 1,000,000 included.
//!
//! State: N + N/4 segments of 1–16 pages allocated from one span in address order, then every
//! fifth one freed (ascending), leaving N live segments and N/4 holes (`holes` in the record).
//! One hole per four live segments lies between the steady states that the churn below
//! reaches from any start: 0.06 holes per live segment for best-fit, 0.39–0.50 for
//! instant-fit and next-fit. Every allocation of the setup comes from the one free range at
//! the top, so it is O(1) for the linear-scan crates too; each hole they free costs a scan of
//! the holes below it (their free lists are sorted vectors, and `free-list` also checks every
//! entry for overlap), so their setup is Θ(holes²) — 20–30 s of CPU each at 1,000,000 live
//! segments (`setup_s` wall clock, `setup_cpu_s` thread CPU). No order avoids that: an insert
//! into a sorted vector either scans or shifts every entry on one side of it.
//!
//! One op frees a uniformly random live segment and allocates a new one of a random size (the
//! same seeded sequence for every impl). Ops that take long are measured fewer times
//! (`reduced_ops`, with the count in `ops`). Each peer's record carries `ratio_to_instant_fit`
//! (its ns/op over instant-fit's in the same case) and `cpu_ratio_to_instant_fit` (the same
//! with thread CPU time, which preemption on a loaded machine does not inflate), also printed
//! on stderr.
//!
//! That pattern's records have case `N/random-free` (`pattern: "random-free"`). The records
//! with case `N` (`pattern: "alloc-free-pair"`) measure alloc+free itself on the same state:
//! allocate a segment of a random size and free it at once, as Bonwick & Adams measured
//! vmem. They show the algorithm's own cost with N live segments, without the cache misses
//! of reaching a random old segment's metadata (at 1,000,000 segments those dominate the
//! random-free pattern: about four dependent reads of 150–300 ns each on this machine, see
//! docs/range.md).

use super::os::thread_cpu_ns;
use super::{median_ns_per_op, scaled, time_ns, Record};
use crate::rng::XorShift64Star;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use vmspace::range::{HeapArena, NoParent, Policy};

const PAGE: u64 = 4096;
const BASE: u64 = 1 << 40;
const SPAN: u64 = 1 << 40;
const ROUNDS: usize = 5;

/// A range allocator under test.
trait RangeAlloc {
    fn alloc(&mut self, size: u64) -> u64;
    fn free(&mut self, start: u64, size: u64);
}

struct Vmem(HeapArena);

impl RangeAlloc for Vmem {
    fn alloc(&mut self, size: u64) -> u64 {
        self.0.alloc(size).expect("arena has space")
    }
    fn free(&mut self, start: u64, size: u64) {
        self.0.free(start, size).expect("valid free")
    }
}

struct FreeListCrate(free_list::FreeList<16>);

impl RangeAlloc for FreeListCrate {
    fn alloc(&mut self, size: u64) -> u64 {
        let layout = free_list::PageLayout::from_size(size as usize).expect("page multiple");
        self.0
            .allocate(layout)
            .expect("free-list has space")
            .start() as u64
    }
    fn free(&mut self, start: u64, size: u64) {
        let r: free_list::PageRange = (start as usize..(start + size) as usize)
            .try_into()
            .expect("page range");
        // SAFETY: the range was handed out by this free list and is not used after the free
        // (the benchmark never touches the memory: these are bare numbers).
        unsafe { self.0.deallocate(r) }.expect("no overlap");
    }
}

struct RangeAllocCrate(range_alloc::RangeAllocator<u64>);

impl RangeAlloc for RangeAllocCrate {
    fn alloc(&mut self, size: u64) -> u64 {
        self.0
            .allocate_range(size)
            .expect("range-alloc has space")
            .start
    }
    fn free(&mut self, start: u64, size: u64) {
        self.0.free_range(start..start + size)
    }
}

/// Best fit over a `BTreeSet` of (size, start) with a by-start map for coalescing.
struct BTreeBestFit {
    by_size: BTreeSet<(u64, u64)>,
    by_start: BTreeMap<u64, u64>,
}

impl BTreeBestFit {
    fn new(start: u64, size: u64) -> Self {
        let mut b = BTreeBestFit {
            by_size: BTreeSet::new(),
            by_start: BTreeMap::new(),
        };
        b.insert(start, size);
        b
    }
    fn insert(&mut self, start: u64, size: u64) {
        self.by_size.insert((size, start));
        self.by_start.insert(start, size);
    }
    fn remove(&mut self, start: u64, size: u64) {
        self.by_size.remove(&(size, start));
        self.by_start.remove(&start);
    }
}

impl RangeAlloc for BTreeBestFit {
    fn alloc(&mut self, size: u64) -> u64 {
        let &(fsize, fstart) = self
            .by_size
            .range((size, 0)..)
            .next()
            .expect("btree has space");
        self.remove(fstart, fsize);
        if fsize > size {
            self.insert(fstart + size, fsize - size);
        }
        fstart
    }
    fn free(&mut self, mut start: u64, mut size: u64) {
        if let Some((&ps, &pl)) = self.by_start.range(..start).next_back() {
            if ps + pl == start {
                self.remove(ps, pl);
                start = ps;
                size += pl;
            }
        }
        if let Some(&nl) = self.by_start.get(&(start + size)) {
            self.remove(start + size, nl);
            size += nl;
        }
        self.insert(start, size);
    }
}

/// Segment sizes of 1–16 pages.
fn size(rng: &mut XorShift64Star) -> u64 {
    (rng.next() % 16 + 1) * PAGE
}

/// Holes left between `n` live segments.
fn holes(n: usize) -> usize {
    n / 4
}

/// Builds the state of `n` live segments and `holes(n)` holes; returns the live segments and
/// the setup time in seconds.
fn setup(a: &mut dyn RangeAlloc, n: usize, rng: &mut XorShift64Star) -> (Vec<(u64, u64)>, f64) {
    let t = Instant::now();
    let h = holes(n);
    let all: Vec<(u64, u64)> = (0..n + h)
        .map(|_| {
            let s = size(rng);
            (a.alloc(s), s)
        })
        .collect();
    let mut live = Vec::with_capacity(n);
    for (i, &(s, l)) in all.iter().enumerate() {
        if i % 5 == 4 && i / 5 < h {
            a.free(s, l);
        } else {
            live.push((s, l));
        }
    }
    debug_assert_eq!(live.len(), n);
    (live, t.elapsed().as_secs_f64())
}

/// One op per iteration: free a random live segment, allocate a new one in its slot. Returns
/// wall-clock ns; adds the thread's CPU ns to `cpu`.
fn churn_cpu(
    a: &mut dyn RangeAlloc,
    live: &mut [(u64, u64)],
    ops: u64,
    rng: &mut XorShift64Star,
    cpu: &mut Vec<f64>,
) -> u128 {
    let c0 = thread_cpu_ns();
    let wall = churn(a, live, ops, rng);
    cpu.push((thread_cpu_ns() - c0) as f64 / ops.max(1) as f64);
    wall
}

fn churn(
    a: &mut dyn RangeAlloc,
    live: &mut [(u64, u64)],
    ops: u64,
    rng: &mut XorShift64Star,
) -> u128 {
    time_ns(|| {
        for _ in 0..ops {
            let i = (rng.next() % live.len() as u64) as usize;
            let (s, l) = live[i];
            a.free(s, l);
            let size = size(rng);
            live[i] = (a.alloc(size), size);
        }
    })
}

/// One op per iteration: allocate a segment of a random size and free it at once. Returns
/// wall-clock ns; adds the thread's CPU ns to `cpu`.
fn pairs_cpu(
    a: &mut dyn RangeAlloc,
    ops: u64,
    rng: &mut XorShift64Star,
    cpu: &mut Vec<f64>,
) -> u128 {
    let c0 = thread_cpu_ns();
    let wall = time_ns(|| {
        for _ in 0..ops {
            let size = size(rng);
            let s = a.alloc(size);
            a.free(s, size);
        }
    });
    cpu.push((thread_cpu_ns() - c0) as f64 / ops.max(1) as f64);
    wall
}

/// The median of `xs`.
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|x, y| x.total_cmp(y));
    xs[xs.len() / 2]
}

/// Adds the ratios to instant-fit (the first impl measured in a case, whose wall-clock and
/// CPU ns `base` keeps) to `r`; returns it with the ratio in words for stderr.
fn against_instant_fit(
    r: Record,
    base: &mut Option<(f64, f64)>,
    ns: f64,
    cpu_ns: f64,
) -> (Record, String) {
    match *base {
        None => {
            *base = Some((ns, cpu_ns));
            (r, String::new())
        }
        Some((b, cpu_b)) => {
            let (x, xc) = (ns / b, cpu_ns / cpu_b);
            let r = r
                .with("ratio_to_instant_fit", (x * 100.0).round() / 100.0)
                .with("cpu_ratio_to_instant_fit", (xc * 100.0).round() / 100.0);
            (r, format!(", {x:.1}x instant-fit (cpu {xc:.1}x)"))
        }
    }
}

fn make(name: &str) -> Box<dyn RangeAlloc> {
    let arena = |p| {
        let mut a = HeapArena::on_heap(PAGE, p, NoParent).expect("page quantum");
        a.add_span(BASE, SPAN).expect("span");
        Box::new(Vmem(a)) as Box<dyn RangeAlloc>
    };
    match name {
        "vmspace-instant-fit" => arena(Policy::InstantFit),
        "vmspace-best-fit" => arena(Policy::BestFit),
        "vmspace-next-fit" => arena(Policy::NextFit),
        "free-list" => {
            let mut f = free_list::FreeList::<16>::new();
            let r: free_list::PageRange = (BASE as usize..(BASE + SPAN) as usize)
                .try_into()
                .expect("page range");
            // SAFETY: the span is a bare number range nobody uses.
            unsafe { f.deallocate(r) }.expect("empty list");
            Box::new(FreeListCrate(f))
        }
        "range-alloc" => Box::new(RangeAllocCrate(range_alloc::RangeAllocator::new(
            BASE..BASE + SPAN,
        ))),
        _ => Box::new(BTreeBestFit::new(BASE, SPAN)),
    }
}

const IMPLS: [&str; 6] = [
    "vmspace-instant-fit",
    "vmspace-best-fit",
    "vmspace-next-fit",
    "free-list",
    "range-alloc",
    "btreemap-best-fit",
];

/// Runs the group.
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let full_ops = scaled(200_000, scale);
    let sizes: Vec<usize> = [10usize, 10_000, 100_000, 1_000_000]
        .into_iter()
        .map(|n| {
            if scale < 1.0 {
                ((n as f64 * scale) as usize).max(10)
            } else {
                n
            }
        })
        .collect();
    for &n in &sizes {
        let mut instant_ns = None;
        let mut pair_ns = None;
        for name in IMPLS {
            let mut rng = XorShift64Star(0x9E37_79B9_7F4A_7C15 ^ n as u64);
            let mut a = make(name);
            let c0 = thread_cpu_ns();
            let (mut live, setup_s) = setup(a.as_mut(), n, &mut rng);
            let setup_cpu_s = (thread_cpu_ns() - c0) as f64 / 1e9;
            // Calibrate on doubling batches until one takes 30 ms; keep rounds near 0.3 s.
            let mut batch = 8u64;
            let probe = loop {
                let t = churn(a.as_mut(), &mut live, batch, &mut rng);
                if t > 30_000_000 || batch >= full_ops {
                    break t as f64 / batch as f64;
                }
                batch *= 2;
            };
            let ops = full_ops.min(((3e8 / probe.max(1.0)) as u64).max(8));
            let mut cpu = Vec::new();
            let ns = median_ns_per_op(ROUNDS, ops, || {
                churn_cpu(a.as_mut(), &mut live, ops, &mut rng, &mut cpu)
            });
            let cpu_ns = median(&mut cpu);
            let mut r = Record::new("range", &format!("{n}/random-free"), name, ns, ops)
                .with("holes", holes(n))
                .with("cpu_ns_per_op", (cpu_ns * 10.0).round() / 10.0)
                .with("setup_s", (setup_s * 1000.0).round() / 1000.0)
                .with("setup_cpu_s", (setup_cpu_s * 1000.0).round() / 1000.0);
            if ops < full_ops {
                r = r.with("reduced_ops", true);
            }
            let (r, ratio) = against_instant_fit(r, &mut instant_ns, ns, cpu_ns);
            eprintln!(
                "range {n}/random-free {name}: {ns:.1} ns/op{ratio}, cpu {cpu_ns:.1} ({ops} ops, setup {setup_s:.2} s, cpu {setup_cpu_s:.2} s)"
            );
            out.push(r.with("pattern", "random-free"));

            // The same state, alloc+free pairs (see the module comment).
            let mut cpu = Vec::new();
            let mut probe_cpu = Vec::new();
            let probe = pairs_cpu(a.as_mut(), 64, &mut rng, &mut probe_cpu) as f64 / 64.0;
            let pair_ops = full_ops.min(((3e8 / probe.max(1.0)) as u64).max(8));
            let ns = median_ns_per_op(ROUNDS, pair_ops, || {
                pairs_cpu(a.as_mut(), pair_ops, &mut rng, &mut cpu)
            });
            let cpu_ns = median(&mut cpu);
            let r = Record::new("range", &n.to_string(), name, ns, pair_ops)
                .with("pattern", "alloc-free-pair")
                .with("holes", holes(n))
                .with("cpu_ns_per_op", (cpu_ns * 10.0).round() / 10.0);
            let (r, ratio) = against_instant_fit(r, &mut pair_ns, ns, cpu_ns);
            eprintln!("range {n} {name}: {ns:.1} ns/op{ratio}, cpu {cpu_ns:.1} ({pair_ops} ops)");
            out.push(r);
        }
    }
    Ok(out)
}
