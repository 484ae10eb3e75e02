//! Mapping: one page, or a run of pages onto physically contiguous frames.

use super::{read_entry, table_is_empty, write_entry, MapError, PageTable, MAX_LEVELS};
use crate::addr::{Frame, Page, PageRange, PageSize, PhysAddr, VirtAddr};
use crate::arch::{Arch, Entry, PageFlags};
use crate::phys::{FrameAllocator, PhysMem};

/// What a range map carries down the levels.
struct MapCtx {
    /// Linear address mapped to `pa`.
    base: u64,
    pa: u64,
    leaf: u8,
    flags: PageFlags,
    /// Linear address up to which leaves were written (for rollback and error reports).
    progress: u64,
}

impl<A: Arch> PageTable<A> {
    /// Maps the page of `size` bytes at `va` to the frame at `pa` with `flags` (P is implied;
    /// flags the MMU lacks, like NX on i386, are dropped).
    ///
    /// Creates missing tables. Fails with `AlreadyMapped` if a page of any size maps `va`,
    /// `TableInTheWay` if a large page is asked where small pages are mapped, `OutOfFrames`
    /// (nothing created stays) when no frame is left for a table. No TLB flush is needed.
    pub fn map<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: VirtAddr,
        pa: PhysAddr,
        size: u64,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        let leaf = A::level_for_size(size).ok_or(MapError::UnsupportedPageSize(size))?;
        let (lin, _) = self.region(va, size, size, false)?;
        Self::check_frames(mem, pa, size, size, leaf)?;
        // Tables created on the way down, to undo if a later allocation fails.
        let mut created = [(PhysAddr::ZERO, 0usize, PhysAddr::ZERO); MAX_LEVELS];
        let mut n = 0;
        let mut table = self.root;
        let mut level = A::LEVELS;
        while level > leaf {
            let idx = A::index(lin, level);
            match A::decode(level, read_entry::<A, M>(mem, table, idx)?) {
                Entry::Table { addr, .. } => table = addr,
                Entry::Page { .. } => return Err(MapError::AlreadyMapped(va)),
                Entry::Empty | Entry::NotPresent(_) => {
                    let child = match self.alloc_table_at(mem, frames, lin) {
                        Ok(c) => c,
                        Err(e) => {
                            self.undo_created(mem, frames, lin, &created[..n]);
                            return Err(e);
                        }
                    };
                    write_entry::<A, M>(mem, table, idx, A::encode_table(child, true))?;
                    created[n] = (table, idx, child);
                    n += 1;
                    table = child;
                }
            }
            level -= 1;
        }
        let idx = A::index(lin, leaf);
        match A::decode(leaf, read_entry::<A, M>(mem, table, idx)?) {
            Entry::Table { .. } => Err(MapError::TableInTheWay(va)),
            Entry::Page { .. } => Err(MapError::AlreadyMapped(va)),
            Entry::Empty | Entry::NotPresent(_) => {
                write_entry::<A, M>(mem, table, idx, A::encode_page(leaf, pa, flags))?;
                Ok(())
            }
        }
    }

    /// [`PageTable::map`] with typed page and frame (alignment is then given).
    pub fn map_page<S: PageSize, M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        page: Page<S>,
        frame: Frame<S>,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        let (va, pa) = (page.start_address(), frame.start_address());
        self.map(mem, frames, va, pa, S::SIZE, flags)
    }

    /// [`PageTable::map_range`] of typed pages onto the frames from `first` on.
    pub fn map_pages<S: PageSize, M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        pages: PageRange<S>,
        first: Frame<S>,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        let len = u64::try_from(pages.len_bytes()).map_err(|_| MapError::Wraps)?;
        let (va, pa) = (pages.start().start_address(), first.start_address());
        self.map_range(mem, frames, va, pa, len, S::SIZE, flags)
    }

    /// Maps `len` bytes at `va` onto the physically contiguous `[pa, pa + len)` in pages of
    /// `size` bytes, descending each table once and filling its entries in one pass.
    ///
    /// All or nothing: on any error (`AlreadyMapped` at the first mapped page met,
    /// `TableInTheWay`, `OutOfFrames`…) the pages mapped so far are unmapped and the tables
    /// created are freed. `len == 0` does nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn map_range<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: VirtAddr,
        pa: PhysAddr,
        len: u64,
        size: u64,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        let leaf = A::level_for_size(size).ok_or(MapError::UnsupportedPageSize(size))?;
        let (start, end) = self.region(va, len, size, false)?;
        if start == end {
            return Ok(());
        }
        Self::check_frames(mem, pa, len, size, leaf)?;
        let mut ctx = MapCtx {
            base: start,
            pa: pa.as_u64(),
            leaf,
            flags,
            progress: start,
        };
        let root = self.root;
        match self.map_in(mem, frames, root, A::LEVELS, start, end, false, &mut ctx) {
            Ok(()) => Ok(()),
            Err(e) => {
                if ctx.progress > start {
                    // Every page in [start, progress) was mapped by this call: unmapping
                    // it restores the tables and frees those this call created.
                    let _ = self.unmap_in(
                        mem,
                        frames,
                        root,
                        A::LEVELS,
                        start,
                        ctx.progress,
                        &mut |_, _, _| {},
                    );
                }
                Err(e)
            }
        }
    }

    /// Maps `[start, end)` (linear, inside `table`'s span) below `table` at `level`;
    /// `fresh` when `table` was created by this call (all zeros).
    #[allow(clippy::too_many_arguments)]
    fn map_in<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        fresh: bool,
        ctx: &mut MapCtx,
    ) -> Result<(), MapError> {
        let shift = A::level_shift(level);
        let mut lin = start;
        if level == ctx.leaf {
            let span = 1u64 << shift;
            let mut idx = A::index(lin, level);
            while lin < end {
                // A table created by this call is all zeros: nothing to check.
                let raw = if fresh {
                    0
                } else {
                    read_entry::<A, M>(mem, table, idx)?
                };
                match A::decode(level, raw) {
                    Entry::Empty | Entry::NotPresent(_) => {}
                    Entry::Table { .. } => {
                        ctx.progress = lin;
                        return Err(MapError::TableInTheWay(A::from_linear(lin)));
                    }
                    Entry::Page { .. } => {
                        ctx.progress = lin;
                        return Err(MapError::AlreadyMapped(A::from_linear(lin)));
                    }
                }
                let pa = PhysAddr::new(ctx.pa + (lin - ctx.base));
                write_entry::<A, M>(mem, table, idx, A::encode_page(level, pa, ctx.flags))?;
                lin += span;
                idx += 1;
            }
            ctx.progress = end;
            return Ok(());
        }
        while lin < end {
            let next = (((lin >> shift) + 1) << shift).min(end);
            let idx = A::index(lin, level);
            let raw = read_entry::<A, M>(mem, table, idx)?;
            let (child, created) = match A::decode(level, raw) {
                Entry::Table { addr, .. } => (addr, false),
                Entry::Page { .. } => {
                    ctx.progress = lin;
                    return Err(MapError::AlreadyMapped(A::from_linear(lin)));
                }
                Entry::Empty | Entry::NotPresent(_) => {
                    let child = match self.alloc_table_at(mem, frames, lin) {
                        Ok(c) => c,
                        Err(e) => {
                            ctx.progress = lin;
                            return Err(e);
                        }
                    };
                    write_entry::<A, M>(mem, table, idx, A::encode_table(child, true))?;
                    (child, true)
                }
            };
            if let Err(e) = self.map_in(mem, frames, child, level - 1, lin, next, created, ctx) {
                // A table made here that received nothing would leak: free it now; one that
                // did receive pages is freed by the caller's rollback.
                if created && table_is_empty::<A, M>(mem, child, 0, 0)? {
                    write_entry::<A, M>(mem, table, idx, 0)?;
                    self.free_table_at(frames, child, lin)?;
                }
                return Err(e);
            }
            lin = next;
        }
        Ok(())
    }

    /// Clears the entries of tables created by a failed single-page map, deepest first.
    fn undo_created<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        lin: u64,
        created: &[(PhysAddr, usize, PhysAddr)],
    ) {
        for &(parent, idx, child) in created.iter().rev() {
            let _ = write_entry::<A, M>(mem, parent, idx, 0);
            let _ = self.free_table_at(frames, child, lin);
        }
    }
}
