//! `vmspace bench frames`: order-0 allocation and freeing on a fragmented pool of 1,000,000
//! frames, vmspace's buddy allocator against `buddy_system_allocator`'s `FrameAllocator`.
//!
//! Each round builds the pool (RAM 0..640 KiB and 1 MiB up, 1,000,000 frames), allocates every
//! frame, frees a random half, and then times, on that fragmented pool:
//! - `alloc (fragmented)`: a quarter of the pool allocated frame by frame;
//! - `alloc+free same frame`: an allocation freed at once (a short-lived frame), repeated;
//! - `alloc+free random frame`: an allocation plus the free of a random allocated frame,
//!   repeated (the pool stays fragmented); the victims are the held frames in shuffled order;
//! - `free (coalescing)`: every allocated frame freed in random order, which merges the pool
//!   back into its maximal blocks (checked afterwards).
//!
//! The same cases run again on a 65,536-frame pool (suffix ` 64Ki`). Both allocators see the
//! same sequence of random choices. `ns_per_op` is the median over rounds of the time the
//! thread ran (the machine is shared; see [`ps_per_op`]); `wall_ns_per_op` the wall-clock one.

use super::{median_ns_per_op, scaled, time_ns, Record};
use crate::rng::SplitMix64;
use vmspace::addr::{Frame, FrameRange};
use vmspace::phys::{FrameAllocator, OwnedBuddyAllocator};

const GROUP: &str = "frames";
const ROUNDS: usize = 7;
const CASES: [&str; 4] = [
    "alloc (fragmented)",
    "alloc+free same frame",
    "alloc+free random frame",
    "free (coalescing)",
];

/// An order-0 frame pool under test.
trait Pool: Sized {
    const NAME: &'static str;
    /// How the pool names a frame.
    type F: Copy;
    fn build(ranges: &[(u64, u64)]) -> Result<Self, String>;
    fn alloc(&mut self) -> Result<Self::F, String>;
    fn free(&mut self, f: Self::F) -> Result<(), String>;
    fn free_frames(&self) -> u64;
}

struct Vmspace(OwnedBuddyAllocator);

impl Pool for Vmspace {
    const NAME: &'static str = "vmspace-buddy";
    type F = Frame;

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
    fn alloc(&mut self) -> Result<Frame, String> {
        self.0.allocate(0).map_err(|e| e.to_string())
    }

    #[inline]
    fn free(&mut self, f: Frame) -> Result<(), String> {
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
    type F = usize;

    fn build(ranges: &[(u64, u64)]) -> Result<Self, String> {
        let mut a = buddy_system_allocator::FrameAllocator::<11>::new();
        let mut total = 0;
        for &(s, n) in ranges {
            let start = usize::try_from(s).map_err(|e| e.to_string())?;
            let end = usize::try_from(s + n).map_err(|e| e.to_string())?;
            a.add_frame(start, end);
            total += n;
        }
        Ok(Bsa(a, total))
    }

    #[inline]
    fn alloc(&mut self) -> Result<usize, String> {
        match self.0.alloc(1) {
            Some(p) => {
                self.1 -= 1;
                Ok(p)
            }
            None => Err("buddy_system_allocator: out of frames".into()),
        }
    }

    #[inline]
    fn free(&mut self, f: usize) -> Result<(), String> {
        self.0.dealloc(f, 1);
        self.1 += 1;
        Ok(())
    }

    fn free_frames(&self) -> u64 {
        self.1
    }
}

/// Builds a pool of `frames` frames (640 KiB of low memory, a hole up to 1 MiB, the rest
/// above), allocates all of it and frees a random half; returns it with the frames still held.
fn fragmented<P: Pool>(frames: u64, rng: &mut SplitMix64) -> Result<(P, Vec<P::F>), String> {
    let low = 160.min(frames);
    let mut p = P::build(&[(0, low), (256, frames - low)])?;
    let mut live = Vec::with_capacity(frames as usize);
    for _ in 0..frames {
        live.push(p.alloc()?);
    }
    rng.shuffle(&mut live);
    for f in live.drain(live.len() / 2..) {
        p.free(f)?;
    }
    Ok((p, live))
}

/// Nanoseconds this thread has run (`CLOCK_THREAD_CPUTIME_ID`), or `None` if the clock is
/// not available.
fn thread_cpu_ns() -> Option<u128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128)
}

/// Times `f`, which may fail; returns picoseconds per op of thread CPU time (wall-clock time
/// if that clock is missing) and of wall-clock time.
///
/// The timed loops last about a millisecond at 1,000,000 frames, so on a shared machine a
/// single preemption can multiply their wall-clock time; the time the thread actually ran
/// does not count the other processes' turns.
fn ps_per_op(ops: u64, f: impl FnOnce() -> Result<(), String>) -> Result<[u128; 2], String> {
    let mut r = Ok(());
    let cpu0 = thread_cpu_ns();
    let wall = time_ns(|| r = f());
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => wall,
    };
    r?;
    let per = |t: u128| t * 1000 / ops.max(1) as u128;
    Ok([per(cpu), per(wall)])
}

/// One round: returns picoseconds per operation of each case (thread CPU, wall-clock).
fn round<P: Pool>(frames: u64, seed: u64) -> Result<[[u128; 2]; 4], String> {
    let mut rng = SplitMix64(seed);
    let (mut p, mut live) = fragmented::<P>(frames, &mut rng)?;
    let n_alloc = frames / 4;
    let n_pairs = frames / 2;
    let t_alloc = ps_per_op(n_alloc, || {
        for _ in 0..n_alloc {
            live.push(p.alloc()?);
        }
        Ok(())
    })?;
    let t_same = ps_per_op(n_pairs, || {
        for _ in 0..n_pairs {
            let f = p.alloc()?;
            p.free(f)?;
        }
        Ok(())
    })?;
    // The victims are a random sample of the allocated frames: the held frames shuffled and
    // walked in order, so that the harness reads its own array sequentially and the time is
    // the allocators' (a random index into the 6 MB array cost a cache miss per pair, as
    // much as either allocator's work).
    rng.shuffle(&mut live);
    let t_pairs = ps_per_op(n_pairs, || {
        for slot in live.iter_mut().take(n_pairs as usize) {
            let f = p.alloc()?;
            p.free(std::mem::replace(slot, f))?;
        }
        Ok(())
    })?;
    rng.shuffle(&mut live);
    let t_free = ps_per_op(live.len() as u64, || {
        live.iter().try_for_each(|&f| p.free(f))
    })?;
    check_all_free(&p, frames)?;
    Ok([t_alloc, t_same, t_pairs, t_free])
}

fn check_all_free<P: Pool>(p: &P, frames: u64) -> Result<(), String> {
    if p.free_frames() == frames {
        Ok(())
    } else {
        Err(format!(
            "{}: {} of {frames} frames free after freeing all",
            P::NAME,
            p.free_frames()
        ))
    }
}

/// Runs the group: the 1,000,000-frame pool, then a 65,536-frame pool, on which both
/// allocators' state fits in a core's L2 cache (vmspace's bitmaps do at 1,000,000 frames too,
/// 0.5 MiB; the peer's B-trees do not).
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    measure(scaled(1_000_000, scale).max(1024), ROUNDS, "", &mut records)?;
    measure(
        scaled(65_536, scale).max(1024),
        3 * ROUNDS,
        " 64Ki",
        &mut records,
    )?;
    Ok(records)
}

/// Measures every case on pools of `frames` frames; every round measures both allocators,
/// one after the other.
fn measure(
    frames: u64,
    rounds: usize,
    suffix: &str,
    records: &mut Vec<Record>,
) -> Result<(), String> {
    let ops = [
        frames / 4,
        frames / 2,
        frames / 2,
        frames - frames / 2 + frames / 4,
    ];
    let mut ours = Vec::with_capacity(rounds);
    let mut theirs = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let seed = 0x5eed + r as u64;
        ours.push(round::<Vmspace>(frames, seed)?);
        theirs.push(round::<Bsa>(frames, seed)?);
    }
    for (c, case) in CASES.iter().enumerate() {
        let case = format!("{case}{suffix}");
        // Rounds report picoseconds per op; median_ns_per_op divides by 1000 "ops".
        let median = |all: &[[[u128; 2]; 4]], clock: usize| {
            let mut it = all.iter().map(|t| t[c][clock]);
            median_ns_per_op(rounds, 1000, || it.next().unwrap_or(0))
        };
        let (ns_ours, ns_theirs) = (median(&ours, 0), median(&theirs, 0));
        records.push(
            Record::new(GROUP, &case, Vmspace::NAME, ns_ours, ops[c])
                .with("pool_frames", frames)
                .with("wall_ns_per_op", median(&ours, 1)),
        );
        records.push(
            Record::new(GROUP, &case, Bsa::NAME, ns_theirs, ops[c])
                .with("pool_frames", frames)
                .with("wall_ns_per_op", median(&theirs, 1))
                .with("slowdown_vs_vmspace", ns_theirs / ns_ours),
        );
    }
    Ok(())
}
