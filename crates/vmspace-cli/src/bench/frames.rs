//! `vmspace bench frames`: order-0 allocation and freeing on a fragmented pool of 1,000,000
//! frames, vmspace's buddy allocator against `buddy_system_allocator`'s `FrameAllocator`.
//!
//! Each round builds the pool (RAM 0..640 KiB and 1 MiB up, 1,000,000 frames), allocates every
//! frame, frees a random half, and then times, on that fragmented pool:
//! - `alloc (fragmented)`: a quarter of the pool allocated frame by frame;
//! - `alloc+free same frame`: an allocation freed at once (a short-lived frame), repeated;
//! - `alloc+free random frame`: an allocation plus the free of a random allocated frame,
//!   repeated (the pool stays fragmented);
//! - `free (coalescing)`: every allocated frame freed in random order, which merges the pool
//!   back into its maximal blocks (checked afterwards).
//!
//! Both allocators see the same sequence of random choices.

use super::{median_ns_per_op, scaled, time_ns, Record};
use vmspace::addr::{Frame, FrameRange};
use vmspace::phys::{FrameAllocator, OwnedBuddyAllocator};

const GROUP: &str = "frames";
const ROUNDS: usize = 5;
const CASES: [&str; 4] = [
    "alloc (fragmented)",
    "alloc+free same frame",
    "alloc+free random frame",
    "free (coalescing)",
];

/// An order-0 frame pool under test.
trait Pool {
    const NAME: &'static str;
    fn build(ranges: &[(u64, u64)]) -> Result<Self, String>
    where
        Self: Sized;
    fn alloc(&mut self) -> Result<u64, String>;
    fn free(&mut self, pfn: u64) -> Result<(), String>;
    fn free_frames(&self) -> u64;
}

struct Vmspace(OwnedBuddyAllocator);

impl Pool for Vmspace {
    const NAME: &'static str = "vmspace-buddy";

    fn build(ranges: &[(u64, u64)]) -> Result<Self, String> {
        let usable = ranges
            .iter()
            .map(|&(s, n)| {
                let f = Frame::from_number(s).map_err(|e| e.to_string())?;
                FrameRange::new(f, n).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        OwnedBuddyAllocator::new_owned(&usable, &[])
            .map(Vmspace)
            .map_err(|e| e.to_string())
    }

    #[inline]
    fn alloc(&mut self) -> Result<u64, String> {
        match self.0.allocate(0) {
            Ok(f) => Ok(f.number()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[inline]
    fn free(&mut self, pfn: u64) -> Result<(), String> {
        let f = Frame::from_number(pfn).map_err(|e| e.to_string())?;
        self.0.deallocate(f, 0).map_err(|e| e.to_string())
    }

    fn free_frames(&self) -> u64 {
        self.0.stats().free_frames
    }
}

/// `buddy_system_allocator` with the same largest order (10).
struct Bsa(buddy_system_allocator::FrameAllocator<11>, u64);

impl Pool for Bsa {
    const NAME: &'static str = "buddy_system_allocator";

    fn build(ranges: &[(u64, u64)]) -> Result<Self, String> {
        let mut a = buddy_system_allocator::FrameAllocator::<11>::new();
        let mut total = 0;
        for &(s, n) in ranges {
            a.add_frame(s as usize, (s + n) as usize);
            total += n;
        }
        Ok(Bsa(a, total))
    }

    #[inline]
    fn alloc(&mut self) -> Result<u64, String> {
        match self.0.alloc(1) {
            Some(p) => {
                self.1 -= 1;
                Ok(p as u64)
            }
            None => Err("buddy_system_allocator: out of frames".into()),
        }
    }

    #[inline]
    fn free(&mut self, pfn: u64) -> Result<(), String> {
        self.0.dealloc(pfn as usize, 1);
        self.1 += 1;
        Ok(())
    }

    fn free_frames(&self) -> u64 {
        self.1
    }
}

/// splitmix64: a small seeded generator, so both allocators get the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// One round: builds and fragments a pool, returns picoseconds per operation of each case.
fn round<P: Pool>(frames: u64, seed: u64) -> Result<[u128; 4], String> {
    // 640 KiB of low memory, a hole up to 1 MiB, the rest above.
    let low = 160.min(frames);
    let ranges = [(0, low), (256, frames - low)];
    let mut p = P::build(&ranges)?;
    let mut rng = Rng(seed);
    let mut live = Vec::with_capacity(frames as usize);
    for _ in 0..frames {
        live.push(p.alloc()?);
    }
    rng.shuffle(&mut live);
    for pfn in live.drain(live.len() / 2..) {
        p.free(pfn)?;
    }
    let n_alloc = frames / 4;
    let n_pairs = frames / 2;
    let mut err = Ok(());
    let t_alloc = time_ns(|| {
        for _ in 0..n_alloc {
            match p.alloc() {
                Ok(f) => live.push(f),
                Err(e) => {
                    err = Err(e);
                    return;
                }
            }
        }
    });
    err?;
    let mut err = Ok(());
    let t_same = time_ns(|| {
        for _ in 0..n_pairs {
            if let Err(e) = p.alloc().and_then(|f| p.free(f)) {
                err = Err(e);
                return;
            }
        }
    });
    err?;
    let picks: Vec<usize> = (0..n_pairs).map(|_| rng.below(live.len())).collect();
    let mut err = Ok(());
    let t_pairs = time_ns(|| {
        for &i in &picks {
            let r = p.alloc().and_then(|f| {
                let old = std::mem::replace(&mut live[i], f);
                p.free(old)
            });
            if let Err(e) = r {
                err = Err(e);
                return;
            }
        }
    });
    err?;
    rng.shuffle(&mut live);
    let n_free = live.len() as u64;
    let mut err = Ok(());
    let t_free = time_ns(|| {
        for &f in &live {
            if let Err(e) = p.free(f) {
                err = Err(e);
                return;
            }
        }
    });
    err?;
    if p.free_frames() != frames {
        return Err(format!(
            "{}: {} of {frames} frames free after freeing all",
            P::NAME,
            p.free_frames()
        ));
    }
    Ok([
        t_alloc * 1000 / n_alloc.max(1) as u128,
        t_same * 1000 / n_pairs.max(1) as u128,
        t_pairs * 1000 / n_pairs.max(1) as u128,
        t_free * 1000 / n_free.max(1) as u128,
    ])
}

/// Runs the group: every round measures both allocators, one after the other.
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let frames = scaled(1_000_000, scale).max(1024);
    let ops = [
        frames / 4,
        frames / 2,
        frames / 2,
        frames - frames / 2 + frames / 4,
    ];
    let mut ours = Vec::with_capacity(ROUNDS);
    let mut theirs = Vec::with_capacity(ROUNDS);
    for r in 0..ROUNDS {
        let seed = 0x5eed + r as u64;
        ours.push(round::<Vmspace>(frames, seed)?);
        theirs.push(round::<Bsa>(frames, seed)?);
    }
    let mut records = Vec::new();
    for (c, case) in CASES.iter().enumerate() {
        // Rounds report picoseconds per op; median_ns_per_op divides by 1000 "ops".
        let mut a = ours.iter().map(|t| t[c]);
        let mut b = theirs.iter().map(|t| t[c]);
        let ns_ours = median_ns_per_op(ROUNDS, 1000, || a.next().unwrap_or(0));
        let ns_theirs = median_ns_per_op(ROUNDS, 1000, || b.next().unwrap_or(0));
        records.push(
            Record::new(GROUP, case, Vmspace::NAME, ns_ours, ops[c]).with("pool_frames", frames),
        );
        records.push(
            Record::new(GROUP, case, Bsa::NAME, ns_theirs, ops[c])
                .with("pool_frames", frames)
                .with("slowdown_vs_vmspace", ns_theirs / ns_ours),
        );
    }
    Ok(records)
}
