//! Heaps inside a simulated process: a [`SegmentSource`] and a [`BrkSource`] over one
//! process of a [`Machine`], with the heap's bytes in a host mirror (feature `heap`).
//!
//! The heaps of `vmspace-heap` run natively: they read and write their metadata and blocks
//! through host pointers. A [`ProcessHeapSpace`] gives them host memory that mirrors
//! simulated memory of one process, region by region:
//!
//! | heap                  | simulated process                     | host mirror                      |
//! |-----------------------|---------------------------------------|----------------------------------|
//! | segments in           | anonymous `mmap`, trimmed to 64 KiB alignment | a fresh 64 KiB-aligned mapping |
//! | segments out          | `munmap`                              | `munmap`                         |
//! | decommit              | `madvise(MADV_DONTNEED)`              | `MADV_DONTNEED`                  |
//! | break grows / shrinks | `brk`                                 | `mprotect` of a reservation      |
//!
//! so the heap's segments and break are mappings of the process (its maps, its VMA count,
//! its address-space limits), and a refused `mmap` or `brk` in the process is the heap's out
//! of memory. Mappings alone take no frames: a caller that wants a block to be resident
//! touches it through the simulated CPU with [`ProcessHeapSpace::touch`], which stores, on
//! every page of the block, the byte the mirror holds there. The pages then fault in (demand
//! zero, or copy-on-write after a fork), count in the process's RSS and use simulated
//! frames, so a heap that leaks ends in the machine's OOM killer.
//!
//! Host and simulated page offsets agree, and segments are 64 KiB-aligned on both sides, so
//! a heap that finds a block's segment by masking its address works unchanged. Mirrors are
//! sparse: a 64-bit process costs the host only what its heaps map. When the process ends
//! (exit, OOM kill), the source's calls into it fail quietly and the heap's frees only
//! release the host side.

use crate::machine::{Machine, SimError, Stop};
use crate::process::Pid;
use crate::thread::Tid;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::rc::Rc;
use vmspace::space::abi::{MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use vmspace_heap::{BrkSource, SegmentSource, PAGE_SIZE, SEGMENT_SIZE};

const PAGE: u64 = PAGE_SIZE as u64;
const SEG: u64 = SEGMENT_SIZE as u64;

/// What a mirrored region of a process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// A run of segments (or a large block) of a segment heap.
    Segments,
    /// The program break region of a chunk heap, `len` = bytes up to the current break.
    Break,
}

/// One mirrored region, in simulated addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorRegion {
    pub start: u64,
    pub len: u64,
    pub kind: RegionKind,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    /// Simulated start.
    sim: u64,
    /// Bytes mirrored (for the break: the most it may grow to).
    len: u64,
    /// Host address of `sim`.
    host: usize,
    /// The host mapping to release.
    map_base: usize,
    map_len: usize,
    kind: RegionKind,
}

#[derive(Default)]
struct Regions {
    by_sim: BTreeMap<u64, Region>,
    /// Host start -> simulated start.
    by_host: BTreeMap<usize, u64>,
}

impl Regions {
    fn insert(&mut self, r: Region) {
        self.by_host.insert(r.host, r.sim);
        self.by_sim.insert(r.sim, r);
    }

    fn remove_host(&mut self, host: usize) -> Option<Region> {
        let sim = self.by_host.remove(&host)?;
        self.by_sim.remove(&sim)
    }

    fn of_host(&self, p: usize) -> Option<Region> {
        let (_, sim) = self.by_host.range(..=p).next_back()?;
        let r = self.by_sim.get(sim)?;
        (p - r.host < r.len as usize).then_some(*r)
    }
}

struct Inner {
    machine: Rc<RefCell<Machine>>,
    pid: Pid,
    regions: RefCell<Regions>,
    /// Simulated start of the break region, once a break source was taken.
    brk_start: Cell<Option<u64>>,
    /// The break as the heap last set it.
    brk_cur: Cell<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for r in self.regions.get_mut().by_sim.values() {
            host_unmap(r.map_base, r.map_len);
        }
    }
}

/// The memory of one simulated process as seen by heaps: hands out
/// [`segments`](Self::segments) and the [`break`](Self::brk), translates host pointers to
/// simulated addresses and touches blocks through the simulated CPU. A cheap handle: clones
/// share the same mirror.
#[derive(Clone)]
pub struct ProcessHeapSpace {
    inner: Rc<Inner>,
}

impl ProcessHeapSpace {
    /// Heaps for process `pid` of `machine`.
    pub fn new(machine: Rc<RefCell<Machine>>, pid: Pid) -> Self {
        ProcessHeapSpace {
            inner: Rc::new(Inner {
                machine,
                pid,
                regions: RefCell::default(),
                brk_start: Cell::new(None),
                brk_cur: Cell::new(0),
            }),
        }
    }

    /// The process.
    pub fn pid(&self) -> Pid {
        self.inner.pid
    }

    /// A segment source mapping segments in the process.
    pub fn segments(&self) -> SimSegments {
        SimSegments {
            space: self.clone(),
        }
    }

    /// A break source growing the process's program break from where it is now, by at most
    /// `max` bytes (host address space reserved for the mirror; nothing is committed until
    /// the break grows). `None` when a break source was already taken (a process has one
    /// break), the process is gone, or the host refuses the reservation.
    pub fn brk(&self, max: u64) -> Option<SimBrk> {
        if self.inner.brk_start.get().is_some() {
            return None;
        }
        let start = {
            let m = self.inner.machine.borrow();
            m.process(self.inner.pid)?.space().brk_value()
        };
        if start == 0 {
            return None;
        }
        let off = (start % PAGE) as usize;
        let max = usize::try_from(max).ok()?;
        let map_len = max.checked_add(off)?.checked_next_multiple_of(PAGE_SIZE)?;
        let map_base = host_map(map_len, libc::PROT_NONE)?;
        let host = map_base + off;
        if host % 16 != 0 {
            host_unmap(map_base, map_len);
            return None;
        }
        self.inner.regions.borrow_mut().insert(Region {
            sim: start,
            len: max as u64,
            host,
            map_base,
            map_len,
            kind: RegionKind::Break,
        });
        self.inner.brk_start.set(Some(start));
        self.inner.brk_cur.set(start);
        Some(SimBrk {
            space: self.clone(),
            start,
            max: max as u64,
        })
    }

    /// Bytes of `r` that are accessible now: a run of segments whole, the break region up to
    /// the page holding the current break.
    fn live_len(&self, r: &Region) -> u64 {
        match r.kind {
            RegionKind::Segments => r.len,
            RegionKind::Break => self.inner.brk_cur.get().next_multiple_of(PAGE) - r.sim,
        }
    }

    /// The simulated address of host pointer `p`, if it lies in memory a heap holds (a run
    /// of segments, or the break region below the current break's page end).
    pub fn sim_addr(&self, p: *const u8) -> Option<u64> {
        let r = self.inner.regions.borrow().of_host(p as usize)?;
        let off = (p as usize - r.host) as u64;
        (off < self.live_len(&r)).then_some(r.sim + off)
    }

    /// The host address of simulated address `a`, under the same conditions.
    pub fn host_addr(&self, a: u64) -> Option<*mut u8> {
        let regs = self.inner.regions.borrow();
        let (_, r) = regs.by_sim.range(..=a).next_back()?;
        (a - r.sim < self.live_len(r)).then(|| (r.host + (a - r.sim) as usize) as *mut u8)
    }

    /// Touches `[p, p + len)` through the simulated CPU as thread `tid`: one store per page,
    /// of the byte the mirror holds at that address, so the pages fault in as a program
    /// writing the block would make them. Returns the pages touched, or why an access
    /// stopped (e.g. [`Stop::OomKilled`] when the OOM killer ended this process).
    pub fn touch(&self, tid: Tid, p: *const u8, len: usize) -> Result<u64, Stop> {
        if len == 0 {
            return Ok(0);
        }
        let start = self.sim_addr(p).ok_or(Stop::Internal)?;
        let end = start.checked_add(len as u64).ok_or(Stop::Internal)?;
        let mut a = start;
        let mut pages = 0;
        while a < end {
            let h = self.host_addr(a).ok_or(Stop::Internal)?;
            // SAFETY: `host_addr` only translates into accessible host pages of our own
            // mappings (read-write runs of segments, the break region below its end).
            let byte = unsafe { h.read() };
            self.inner.machine.borrow_mut().store(tid, a, byte)?;
            pages += 1;
            a = (a & !(PAGE - 1)) + PAGE;
        }
        Ok(pages)
    }

    /// The mirrored regions in address order (segments as mapped, the break up to where it
    /// is now).
    pub fn regions(&self) -> Vec<MirrorRegion> {
        let cur = self.inner.brk_cur.get();
        self.inner
            .regions
            .borrow()
            .by_sim
            .values()
            .map(|r| MirrorRegion {
                start: r.sim,
                len: match r.kind {
                    RegionKind::Segments => r.len,
                    RegionKind::Break => cur - r.sim,
                },
                kind: r.kind,
            })
            .collect()
    }

    fn machine(&self) -> std::cell::RefMut<'_, Machine> {
        self.inner.machine.borrow_mut()
    }
}

/// Segments as anonymous mappings of a simulated process ([`ProcessHeapSpace::segments`]).
pub struct SimSegments {
    space: ProcessHeapSpace,
}

impl SimSegments {
    /// Maps `len` bytes at a 64 KiB-aligned address of the process: an over-sized anonymous
    /// mapping trimmed at both ends, as a host source does with its own `mmap`.
    fn map_aligned(&self, len: u64) -> Result<u64, SimError> {
        let pid = self.space.pid();
        let mut m = self.space.machine();
        let total = len.checked_add(SEG - PAGE).ok_or(SimError::OutOfMemory)?;
        let a = m.mmap(
            pid,
            0,
            total,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            None,
            0,
        )?;
        let start = a.next_multiple_of(SEG);
        let r = (|| {
            if start > a {
                m.munmap(pid, a, start - a)?;
            }
            if a + total > start + len {
                m.munmap(pid, start + len, a + total - (start + len))?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = m.munmap(pid, a, total);
            return Err(e);
        }
        Ok(start)
    }
}

// SAFETY: each run is a fresh host mapping of `count * SEGMENT_SIZE` read-write bytes,
// aligned to SEGMENT_SIZE, registered until `free_segments` unmaps it; the simulated side is
// a fresh mapping of the process at a 64 KiB-aligned address.
unsafe impl SegmentSource for SimSegments {
    fn alloc_segments(&mut self, count: usize) -> Option<NonNull<u8>> {
        let len = count.checked_mul(SEGMENT_SIZE)?;
        let sim = self.map_aligned(len as u64).ok()?;
        let map_len = len.checked_add(SEGMENT_SIZE)?;
        let Some(map_base) = host_map(map_len, libc::PROT_READ | libc::PROT_WRITE) else {
            let _ = self
                .space
                .machine()
                .munmap(self.space.pid(), sim, len as u64);
            return None;
        };
        let host = map_base.next_multiple_of(SEGMENT_SIZE);
        self.space.inner.regions.borrow_mut().insert(Region {
            sim,
            len: len as u64,
            host,
            map_base,
            map_len,
            kind: RegionKind::Segments,
        });
        NonNull::new(host as *mut u8)
    }

    unsafe fn free_segments(&mut self, base: NonNull<u8>, count: usize) {
        let r = self
            .space
            .inner
            .regions
            .borrow_mut()
            .remove_host(base.as_ptr() as usize);
        let Some(r) = r else {
            return;
        };
        debug_assert_eq!(r.len, (count * SEGMENT_SIZE) as u64);
        // The process may have ended (OOM kill): then only the host side is left.
        let _ = self.space.machine().munmap(self.space.pid(), r.sim, r.len);
        host_unmap(r.map_base, r.map_len);
    }

    unsafe fn decommit(&mut self, ptr: NonNull<u8>, len: usize) {
        let Some(sim) = self.space.sim_addr(ptr.as_ptr()) else {
            return;
        };
        let _ = self
            .space
            .machine()
            .madvise(self.space.pid(), sim, len as u64, MADV_DONTNEED);
        // SAFETY: inside a live host mapping of ours (the caller's contract).
        unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
    }
}

/// The program break of a simulated process as a chunk heap's region
/// ([`ProcessHeapSpace::brk`]).
pub struct SimBrk {
    space: ProcessHeapSpace,
    start: u64,
    max: u64,
}

impl SimBrk {
    /// Where the break started.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The break now.
    pub fn current(&self) -> u64 {
        self.space.inner.brk_cur.get()
    }

    fn host(&self, sim: u64) -> usize {
        let off = (self.start % PAGE) as usize;
        let regs = self.space.inner.regions.borrow();
        let r = regs
            .by_sim
            .get(&self.start)
            .map(|r| r.map_base)
            .unwrap_or(0);
        r + off + (sim - self.start) as usize
    }
}

// SAFETY: the break grows contiguously (brk extends the heap VMA at the old break, and a
// refused brk is a `None`); the host pages up to the new break are made read-write in our
// reservation before the old end is returned; the host address of the start is 16-aligned.
unsafe impl BrkSource for SimBrk {
    fn grow(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        let old = self.current();
        let new = old.checked_add(bytes as u64)?;
        if new - self.start > self.max {
            return None;
        }
        let got = self.space.machine().brk(self.space.pid(), new).ok()?;
        if got != new {
            return None;
        }
        let lo = self.host(old) & !(PAGE_SIZE - 1);
        let hi = self.host(new).next_multiple_of(PAGE_SIZE);
        // SAFETY: `[lo, hi)` lies in our reservation (new - start <= max).
        let ok = unsafe {
            libc::mprotect(
                lo as *mut libc::c_void,
                hi - lo,
                libc::PROT_READ | libc::PROT_WRITE,
            ) == 0
        };
        if !ok {
            let _ = self.space.machine().brk(self.space.pid(), old);
            return None;
        }
        self.space.inner.brk_cur.set(new);
        NonNull::new(self.host(old) as *mut u8)
    }

    unsafe fn shrink(&mut self, bytes: usize) {
        let old = self.current();
        let new = old.saturating_sub(bytes as u64).max(self.start);
        // A process that ended has no break left to move; the host side still shrinks.
        let _ = self.space.machine().brk(self.space.pid(), new);
        self.space.inner.brk_cur.set(new);
        let lo = self.host(new).next_multiple_of(PAGE_SIZE);
        let hi = self.host(old).next_multiple_of(PAGE_SIZE);
        if hi > lo {
            // SAFETY: whole pages of our reservation above the new break; nothing uses them
            // (the caller's contract).
            unsafe {
                let p = lo as *mut libc::c_void;
                libc::madvise(p, hi - lo, libc::MADV_DONTNEED);
                libc::mprotect(p, hi - lo, libc::PROT_NONE);
            }
        }
    }
}

/// A fresh private anonymous host mapping (`MAP_NORESERVE`: only touched pages cost).
fn host_map(len: usize, prot: libc::c_int) -> Option<usize> {
    // SAFETY: a new mapping at an address the host chooses; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

fn host_unmap(base: usize, len: usize) {
    // SAFETY: a mapping made by `host_map` that nothing uses any more.
    unsafe { libc::munmap(base as *mut libc::c_void, len) };
}
