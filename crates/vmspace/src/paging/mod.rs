//! Page tables: one generic walker over [`Arch`] that maps, unmaps, reprotects and
//! translates, page by page or by range.
//!
//! A [`PageTable`] is a root table plus a count of table pages; the tables themselves live in
//! physical memory reached through [`PhysMem`], and table frames come from (and return to) a
//! [`FrameAllocator`]. Nothing here allocates on the heap.
//!
//! - Range operations descend each table once per range and iterate the entries inside it,
//!   so mapping 1 GiB of 4 KiB pages reads each upper-level entry once, not 262,144 times.
//! - Unmapping frees every table that becomes empty and clears its entry in the parent;
//!   the root stays. [`PageTable::table_pages`] counts the tables, root included.
//! - Operations that can leave stale translations return a [`Flush`] token.
//! - Errors are typed per operation; a failed call changes nothing (a half-done range map is
//!   rolled back, tables it created are freed).
//! - Intermediate entries are written P | R/W | U/S, so a leaf's flags are the effective
//!   rights of the mapping (the recursive i386 entry is supervisor-only).

mod error;
mod flush;
mod map;
mod protect;
mod share;
mod translate;
mod unmap;
mod walk;

pub use error::{MapError, ProtectError, TranslateError, UnmapError};
#[cfg(feature = "alloc")]
pub use flush::RecordingTlb;
pub use flush::{Flush, NoTlb, Tlb, TlbEvent, FLUSH_CEILING_PAGES};
pub use translate::Translation;
pub use walk::{InvariantError, WalkEvent};

use crate::addr::{Frame, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{Arch, Entry};
use crate::phys::{FrameAllocator, PhysError, PhysMem};
use error::RegionError;

/// The deepest paging supported by the walker's fixed-size paths (5-level paging).
pub const MAX_LEVELS: usize = 5;

/// `path[level] = (table, index)` of a descent.
pub(crate) type Path = [(PhysAddr, usize); MAX_LEVELS + 1];

/// A page-table hierarchy of architecture `A`, rooted in one physical frame.
#[derive(Debug)]
pub struct PageTable<A: Arch> {
    arch: A,
    root: PhysAddr,
    table_pages: u64,
    /// Bit `i` set: root entry `i` points at a table shared with other hierarchies (see
    /// `share.rs`). Root tables have at most 1024 entries.
    shared: [u64; 16],
}

impl<A: Arch> PageTable<A> {
    /// A new, empty hierarchy: allocates and zeroes the root (and installs the recursive
    /// entry if `arch` has one).
    pub fn new<M: PhysMem, F: FrameAllocator>(
        arch: A,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<Self, MapError> {
        const { assert!(A::LEVELS >= 1 && A::LEVELS as usize <= MAX_LEVELS) };
        let mut pt = PageTable {
            arch,
            root: PhysAddr::ZERO,
            table_pages: 0,
            shared: [0; 16],
        };
        let root = pt.alloc_table(mem, frames)?;
        pt.root = root;
        if let Some(slot) = arch.recursive_slot() {
            if let Err(e) = write_entry::<A, M>(mem, root, slot, A::encode_table(root, false)) {
                let _ = pt.free_table(frames, root);
                return Err(MapError::Phys(e));
            }
        }
        Ok(pt)
    }

    /// Adopts an existing hierarchy (e.g. the one CR3 points at) holding `table_pages`
    /// tables. The walker trusts its contents: decoding never fails, but frees go to
    /// whichever allocator the caller passes.
    pub fn from_root(arch: A, root: Frame, table_pages: u64) -> Self {
        const { assert!(A::LEVELS >= 1 && A::LEVELS as usize <= MAX_LEVELS) };
        PageTable {
            arch,
            root: root.start_address(),
            table_pages,
            shared: [0; 16],
        }
    }

    /// The architecture instance.
    pub fn arch(&self) -> &A {
        &self.arch
    }

    /// The root table's frame (what CR3 holds).
    pub fn root(&self) -> Frame {
        Frame::containing(self.root)
    }

    /// Table pages in use, root included.
    pub fn table_pages(&self) -> u64 {
        self.table_pages
    }

    /// Unmaps everything outside the recursive window and the shared root entries (calling
    /// `on_unmap(va, frame, size)` for each page) and frees every table it owns, the root
    /// last. Shared root entries are cleared without touching what is below them.
    pub fn destroy<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        mut self,
        mem: &mut M,
        frames: &mut F,
        mut on_unmap: C,
    ) -> Result<(), UnmapError> {
        let top = A::LEVELS;
        let span = A::level_span(top);
        for idx in 0..A::ENTRIES {
            if Some(idx) == self.arch.recursive_slot() || self.is_shared_root_entry(idx) {
                write_entry::<A, M>(mem, self.root, idx, 0)?;
                continue;
            }
            let start = idx as u64 * span;
            self.unmap_in(
                mem,
                frames,
                self.root,
                top,
                start,
                start + span,
                &mut on_unmap,
            )?;
        }
        self.free_table(frames, self.root)?;
        Ok(())
    }

    /// Checks `[va, va + len)` for an operation on pages of `align` bytes and returns it as
    /// a linear range.
    pub(crate) fn region(
        &self,
        va: VirtAddr,
        len: u64,
        align: u64,
        allow_window: bool,
    ) -> Result<(u64, u64), RegionError> {
        if !va.is_aligned(align) {
            return Err(RegionError::Misaligned {
                addr: va.as_u64(),
                align,
            });
        }
        if len % align != 0 {
            return Err(RegionError::Misaligned { addr: len, align });
        }
        if va.as_u64() as u128 + len as u128 > 1u128 << 64 {
            return Err(RegionError::Wraps);
        }
        let s = A::to_linear(va).ok_or(RegionError::NonCanonical(va))?;
        if len == 0 {
            return Ok((s, s));
        }
        let last = va.as_u64() + (len - 1);
        match A::to_linear(VirtAddr::new(last)) {
            Some(l) if l >= s && l - s == len - 1 => {}
            _ => {
                // The range runs past the end of the space or into the non-canonical hole:
                // report its first untranslatable address.
                let first_bad = [1u64 << (A::VA_BITS - 1), 1u64 << A::VA_BITS.min(63)]
                    .into_iter()
                    .find(|&c| {
                        c > va.as_u64() && c <= last && A::to_linear(VirtAddr::new(c)).is_none()
                    })
                    .unwrap_or(last);
                return Err(RegionError::NonCanonical(VirtAddr::new(first_bad)));
            }
        }
        let end = s + len;
        if !allow_window {
            if let Some((ws, we)) = self.window() {
                if s < we && ws < end {
                    return Err(RegionError::Reserved(A::from_linear(s.max(ws))));
                }
            }
        }
        Ok((s, end))
    }

    /// The linear range of the recursive window, if any.
    pub(crate) fn window(&self) -> Option<(u64, u64)> {
        let slot = self.arch.recursive_slot()? as u64;
        let span = A::level_span(A::LEVELS);
        Some((slot * span, (slot + 1) * span))
    }

    /// Checks that `[pa, pa + len)` is memory the MMU can map at `level`.
    pub(crate) fn check_frames<M: PhysMem>(
        mem: &M,
        pa: PhysAddr,
        len: u64,
        align: u64,
        level: u8,
    ) -> Result<(), MapError> {
        if !pa.is_aligned(align) {
            return Err(MapError::Misaligned {
                addr: pa.as_u64(),
                align,
            });
        }
        let end = pa.as_u64().checked_add(len).ok_or(MapError::Wraps)?;
        if end > A::phys_limit(level, true) {
            return Err(MapError::FrameOutOfRange(pa));
        }
        if len > 0 {
            let mut b = [0u8; 1];
            if mem.read(pa, &mut b).is_err() {
                return Err(MapError::FrameOutOfRange(pa));
            }
            if mem.read(PhysAddr::new(end - 1), &mut b).is_err() {
                return Err(MapError::FrameOutOfRange(PhysAddr::new(end - 1)));
            }
        }
        Ok(())
    }

    /// Allocates and zeroes a table page and counts it.
    pub(crate) fn alloc_table<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<PhysAddr, MapError> {
        let frame = match frames.allocate_frame() {
            Ok(f) => f,
            Err(PhysError::OutOfMemory { .. }) => return Err(MapError::OutOfFrames),
            Err(e) => return Err(MapError::Phys(e)),
        };
        let addr = frame.start_address();
        if addr.as_u64() + PAGE_SIZE > A::phys_limit(A::LEVELS, false) {
            let _ = frames.deallocate_frame(frame);
            return Err(MapError::FrameOutOfRange(addr));
        }
        if let Err(e) = mem.zero_frame(frame) {
            let _ = frames.deallocate_frame(frame);
            return Err(MapError::Phys(e));
        }
        self.table_pages += 1;
        Ok(addr)
    }

    /// [`PageTable::alloc_table`] for a table below the root entry covering `lin`: a table
    /// below a shared root entry belongs to the shared tables and is not counted here.
    pub(crate) fn alloc_table_at<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        lin: u64,
    ) -> Result<PhysAddr, MapError> {
        let t = self.alloc_table(mem, frames)?;
        if self.shared_at(lin) {
            self.table_pages -= 1;
        }
        Ok(t)
    }

    /// [`PageTable::free_table`] of a table below the root entry covering `lin` (uncounted
    /// if that entry is shared).
    pub(crate) fn free_table_at<F: FrameAllocator>(
        &mut self,
        frames: &mut F,
        table: PhysAddr,
        lin: u64,
    ) -> Result<(), PhysError> {
        if self.shared_at(lin) {
            frames.deallocate_frame(Frame::containing(table))
        } else {
            self.free_table(frames, table)
        }
    }

    /// Returns a table page to the allocator and uncounts it.
    pub(crate) fn free_table<F: FrameAllocator>(
        &mut self,
        frames: &mut F,
        table: PhysAddr,
    ) -> Result<(), PhysError> {
        frames.deallocate_frame(Frame::containing(table))?;
        self.table_pages = self.table_pages.saturating_sub(1);
        Ok(())
    }

    /// Descends from the root towards `lin`, stopping at `stop` or at the first entry that
    /// is not a table. Returns the level reached, its entry, and `path[l] = (table, index)`
    /// for every level visited.
    pub(crate) fn descend<M: PhysMem>(
        &self,
        mem: &M,
        lin: u64,
        stop: u8,
    ) -> Result<(u8, u64, Path), PhysError> {
        let mut path = [(PhysAddr::ZERO, 0usize); MAX_LEVELS + 1];
        let mut table = self.root;
        let mut level = A::LEVELS;
        loop {
            let idx = A::index(lin, level);
            let raw = read_entry::<A, M>(mem, table, idx)?;
            path[level as usize] = (table, idx);
            if level == stop || level == 1 {
                return Ok((level, raw, path));
            }
            match A::decode(level, raw) {
                Entry::Table { addr, .. } => {
                    table = addr;
                    level -= 1;
                }
                _ => return Ok((level, raw, path)),
            }
        }
    }
}

/// Physical address of entry `idx` of `table`.
#[inline]
pub(crate) fn entry_addr<A: Arch>(table: PhysAddr, idx: usize) -> PhysAddr {
    PhysAddr::new(table.as_u64() + idx as u64 * A::ENTRY_SIZE)
}

/// One entry of a table at `level` that a linear range touches.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    /// First address of the range inside this entry.
    pub lin: u64,
    /// First address the entry covers.
    pub entry_start: u64,
    /// End of the range inside this entry (exclusive).
    pub next: u64,
    /// Bytes one entry at this level covers.
    pub span: u64,
    /// Index of the entry in its table.
    pub idx: usize,
}

impl Slot {
    /// Whether the range covers the entry's whole span.
    #[inline]
    pub fn whole(&self) -> bool {
        self.lin == self.entry_start && self.next == self.entry_start + self.span
    }
}

/// The entries of a table at `level` that `[start, end)` touches, in order: the range walks
/// each table once, entry by entry.
#[inline]
pub(crate) fn slots<A: Arch>(level: u8, start: u64, end: u64) -> impl Iterator<Item = Slot> {
    let shift = A::level_shift(level);
    let span = 1u64 << shift;
    let mut lin = start;
    core::iter::from_fn(move || {
        if lin >= end {
            return None;
        }
        let entry_start = (lin >> shift) << shift;
        let next = (entry_start + span).min(end);
        let slot = Slot {
            lin,
            entry_start,
            next,
            span,
            idx: A::index(lin, level),
        };
        lin = next;
        Some(slot)
    })
}

/// Reads entry `idx` of `table`.
#[inline]
pub(crate) fn read_entry<A: Arch, M: PhysMem>(
    mem: &M,
    table: PhysAddr,
    idx: usize,
) -> Result<u64, PhysError> {
    let at = entry_addr::<A>(table, idx);
    if A::ENTRY_SIZE == 4 {
        mem.read_u32(at).map(u64::from)
    } else {
        mem.read_u64(at)
    }
}

/// Writes entry `idx` of `table`.
#[inline]
pub(crate) fn write_entry<A: Arch, M: PhysMem>(
    mem: &mut M,
    table: PhysAddr,
    idx: usize,
    raw: u64,
) -> Result<(), PhysError> {
    let at = entry_addr::<A>(table, idx);
    if A::ENTRY_SIZE == 4 {
        mem.write_u32(at, raw as u32)
    } else {
        mem.write_u64(at, raw)
    }
}

/// Whether every entry of `table` is zero. Entries `lo..=hi` were just changed, so their
/// neighbours are looked at first: page-by-page unmapping in either direction finds a
/// live neighbour after one read instead of scanning the table.
pub(crate) fn table_is_empty<A: Arch, M: PhysMem>(
    mem: &M,
    table: PhysAddr,
    lo: usize,
    hi: usize,
) -> Result<bool, PhysError> {
    if hi + 1 < A::ENTRIES && read_entry::<A, M>(mem, table, hi + 1)? != 0 {
        return Ok(false);
    }
    if lo > 0 && read_entry::<A, M>(mem, table, lo - 1)? != 0 {
        return Ok(false);
    }
    for i in 0..A::ENTRIES {
        if read_entry::<A, M>(mem, table, i)? != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
