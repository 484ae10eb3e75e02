//! The page-fault handler: demand-zero, copy-on-write, shared and file pages, stack growth,
//! classification into SIGSEGV/SIGBUS, out of memory; and [`Mm`], an address space with its
//! page table kept in step with its VMAs.
//!
//! A fault is resolved over three things: the VMAs of an [`AddressSpace`], a
//! [`PageTable`](crate::paging::PageTable) and a [`Phys`] context (physical memory, a
//! reference-counting frame allocator, the shared zero page and the page cache of shared
//! objects). Rules from `docs/linux-mm.md` section 6:
//!
//! - routing and access checks (F1–F3, 6.4) in [`classify`],
//! - stack growth (S1–S4) in [`stack`],
//! - first touch of private anonymous memory (A2, A3) in [`demand_zero`],
//! - write to a present read-only page (A4) in [`cow`],
//! - pages of files and shared memory in [`shared`],
//! - Windows reservations: access violations and one-shot guard pages in [`guard`].
//!
//! Every path either completes or leaves frames and tables as they were: a frame allocated
//! for a fault that then fails is returned before the error is. Nothing panics.
//!
//! Reference counts: an anonymous frame's count is the number of entries mapping it; a page
//! cache frame's is one (the cache) plus its mappings; the zero page is never counted.
//! Entry software bits: [`ANON`] marks a private frame owned by its mappings, [`SHMEM`] a
//! shared-memory page cache frame (for the RSS split).

pub mod classify;
pub mod cow;
pub mod demand_zero;
pub mod guard;
pub mod mm;
pub mod pte;
pub mod shared;
pub mod stack;

pub use classify::Access;
pub use guard::{ExceptionCode, WinException};
pub use mm::{Mm, Rss, Starved, VmaRss};

use crate::addr::Frame;
use crate::arch::PageFlags;
use crate::paging::MapError;
use crate::phys::{BuddyAllocator, FrameAllocator, PhysError, PhysMem};
use crate::space::Fault;
use alloc::collections::BTreeMap;
use core::fmt;
use core::ops::DerefMut;

/// Entry software bit: a private (anonymous or copied) frame, counted as `Anonymous`.
pub const ANON: PageFlags = PageFlags::AVL0;
/// Entry software bit: a shared-memory (shmem) page cache frame.
pub const SHMEM: PageFlags = PageFlags::AVL1;

/// A frame allocator whose blocks carry reference counts (the buddy allocator's).
pub trait RefFrames: FrameAllocator {
    /// Adds an owner of allocated frame `f`; returns the new count.
    fn inc_ref(&mut self, f: Frame) -> Result<u32, PhysError>;
    /// Drops an owner, freeing the frame when it was the last; `true` if freed.
    fn put(&mut self, f: Frame) -> Result<bool, PhysError>;
    /// Owners of allocated frame `f`.
    fn ref_count(&self, f: Frame) -> Result<u32, PhysError>;
    /// Frames free for allocation.
    fn free_frames(&self) -> u64;
}

impl<M: DerefMut<Target = [u64]>> RefFrames for BuddyAllocator<M> {
    fn inc_ref(&mut self, f: Frame) -> Result<u32, PhysError> {
        BuddyAllocator::inc_ref(self, f)
    }
    fn put(&mut self, f: Frame) -> Result<bool, PhysError> {
        BuddyAllocator::put(self, f).map(|o| o.is_some())
    }
    fn ref_count(&self, f: Frame) -> Result<u32, PhysError> {
        BuddyAllocator::ref_count(self, f)
    }
    fn free_frames(&self) -> u64 {
        self.stats().free_frames
    }
}

/// How a fault was resolved (what the simulator counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolved {
    /// A2: read of an untouched private anonymous page mapped the shared zero page.
    ZeroPage,
    /// A3: write to an untouched private anonymous page allocated a zeroed frame.
    DemandZero,
    /// A4: write to the mapped zero page allocated a zeroed frame.
    CowZero,
    /// A4: write to a shared private frame copied it.
    CowCopy,
    /// A4: write to a private frame no one else maps made it writable in place.
    CowReuse,
    /// A page of a file or shared memory was mapped (read, or write to a shared mapping).
    PageCache,
    /// Write to a private file page copied it out of the page cache.
    FileCopy,
    /// The entry already allowed the access (a stale TLB entry, or another thread won).
    Spurious,
    /// The entry's rights were re-derived from its VMA (e.g. after a protection change).
    Upgrade,
}

/// Why a fault could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// The access raises a signal (SIGSEGV MAPERR/ACCERR, SIGBUS), as Linux would.
    Signal(Fault),
    /// No frame was left for the page or a page table; nothing was changed.
    OutOfMemory { addr: u64 },
    /// Physical memory or the page table misbehaved (a bug or corrupted tables).
    Internal(InternalError),
    /// A Windows exception in a reservation: access violation (W13) or a one-shot guard
    /// page (W15); see [`guard`].
    Exception(WinException),
}

/// A failure below the fault handler that no valid state produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InternalError {
    Phys(PhysError),
    Map(MapError),
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::Signal(s) => {
                write!(f, "{} {} at {:#x}", s.signal.name(), s.code.name(), s.addr)
            }
            FaultError::OutOfMemory { addr } => write!(f, "out of memory at {addr:#x}"),
            FaultError::Internal(e) => write!(f, "internal error: {e:?}"),
            FaultError::Exception(e) => write!(f, "{e}"),
        }
    }
}

impl From<PhysError> for FaultError {
    fn from(e: PhysError) -> Self {
        match e {
            PhysError::OutOfMemory { .. } => FaultError::OutOfMemory { addr: 0 },
            e => FaultError::Internal(InternalError::Phys(e)),
        }
    }
}

/// Global key of a page cache object: files by their id, shared anonymous objects by a
/// machine-wide id (space-local shmem ids are mapped per [`Mm`]).
pub type ObjKey = u64;

/// Physical memory as the fault handler needs it: bytes, reference-counted frames, the
/// zero page, and the page cache of shared objects.
pub struct Phys<M: PhysMem, F: RefFrames> {
    pub mem: M,
    pub frames: F,
    zero: Frame,
    /// (object, page index) -> frame; each entry holds one reference.
    cache: BTreeMap<(ObjKey, u64), Frame>,
    /// Shared anonymous objects: how many address spaces hold each.
    shm_users: BTreeMap<ObjKey, u32>,
    next_shm: u64,
}

/// First machine-wide id given to a shared anonymous object: above the vDSO key and the
/// callers' (small) file ids, below the ids snapshots invent for files (bit 62).
const SHM_KEY_BASE: u64 = 1 << 61;

impl<M: PhysMem, F: RefFrames> Phys<M, F> {
    /// Takes `mem` and `frames` and sets aside one zeroed frame as the shared zero page.
    pub fn new(mut mem: M, mut frames: F) -> Result<Self, PhysError> {
        let zero = frames.allocate_zeroed(&mut mem, 0)?;
        Ok(Phys {
            mem,
            frames,
            zero,
            cache: BTreeMap::new(),
            shm_users: BTreeMap::new(),
            next_shm: SHM_KEY_BASE,
        })
    }

    /// The shared zero page (A2).
    pub fn zero_page(&self) -> Frame {
        self.zero
    }

    /// Frames held by the page cache.
    pub fn cache_pages(&self) -> u64 {
        self.cache.len() as u64
    }

    /// The page cache frame of `(obj, idx)`, if present.
    pub fn cached(&self, obj: ObjKey, idx: u64) -> Option<Frame> {
        self.cache.get(&(obj, idx)).copied()
    }

    /// Every page cache entry.
    pub fn cache_entries(&self) -> impl Iterator<Item = (ObjKey, u64, Frame)> + '_ {
        self.cache.iter().map(|(&(o, i), &f)| (o, i, f))
    }

    /// A zeroed frame, or `OutOfMemory`.
    pub(crate) fn alloc_zeroed(&mut self, addr: u64) -> Result<Frame, FaultError> {
        self.frames
            .allocate_zeroed(&mut self.mem, 0)
            .map_err(|e| oom_at(e, addr))
    }

    /// A frame holding a copy of `from`, or `OutOfMemory`.
    pub(crate) fn alloc_copy(&mut self, from: Frame, addr: u64) -> Result<Frame, FaultError> {
        let f = self.frames.allocate_frame().map_err(|e| oom_at(e, addr))?;
        if let Err(e) = self.mem.copy_frame(from, f) {
            let _ = self.frames.deallocate_frame(f);
            return Err(e.into());
        }
        Ok(f)
    }

    /// Drops one mapping's reference to `f` (the zero page is not counted).
    pub(crate) fn release(&mut self, f: Frame) -> Result<(), PhysError> {
        if f != self.zero {
            self.frames.put(f)?;
        }
        Ok(())
    }

    /// The page cache frame of `(obj, idx)`, created zeroed if missing.
    pub(crate) fn cache_page(
        &mut self,
        obj: ObjKey,
        idx: u64,
        addr: u64,
    ) -> Result<Frame, FaultError> {
        if let Some(f) = self.cache.get(&(obj, idx)) {
            return Ok(*f);
        }
        let f = self.alloc_zeroed(addr)?;
        self.cache.insert((obj, idx), f);
        Ok(f)
    }

    /// Drops the cache's reference to pages `first..first + count` of `obj` (MADV_REMOVE,
    /// or the last user of a shared object went away).
    pub fn evict(&mut self, obj: ObjKey, first: u64, count: u64) {
        let end = first.saturating_add(count);
        let keys: alloc::vec::Vec<(u64, u64)> = self
            .cache
            .range((obj, first)..(obj, end))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(f) = self.cache.remove(&k) {
                let _ = self.frames.put(f);
            }
        }
    }

    /// Drops every cached page of file `id` that no mapping holds any more would keep: the
    /// cache's own reference goes (files the simulator closes).
    pub fn drop_object(&mut self, obj: ObjKey) {
        self.evict(obj, 0, u64::MAX);
    }

    pub(crate) fn new_shm(&mut self) -> ObjKey {
        let k = self.next_shm;
        self.next_shm += 1;
        self.shm_users.insert(k, 1);
        k
    }

    pub(crate) fn shm_get(&mut self, k: ObjKey) {
        *self.shm_users.entry(k).or_insert(0) += 1;
    }

    pub(crate) fn shm_put(&mut self, k: ObjKey) {
        let gone = match self.shm_users.get_mut(&k) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if gone {
            self.shm_users.remove(&k);
            self.drop_object(k);
        }
    }
}

fn oom_at(e: PhysError, addr: u64) -> FaultError {
    match e {
        PhysError::OutOfMemory { .. } => FaultError::OutOfMemory { addr },
        e => FaultError::Internal(InternalError::Phys(e)),
    }
}

pub(crate) fn map_err_at(e: MapError, addr: u64) -> FaultError {
    match e {
        MapError::OutOfFrames => FaultError::OutOfMemory { addr },
        MapError::Phys(PhysError::OutOfMemory { .. }) => FaultError::OutOfMemory { addr },
        e => FaultError::Internal(InternalError::Map(e)),
    }
}

#[cfg(test)]
mod tests;
