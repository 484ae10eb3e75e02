//! Unmapping: one page, or every page in a range; tables that become empty are freed
//! (except the tables below shared root entries).

use super::{read_entry, table_is_empty, write_entry, Flush, PageTable, Slot, UnmapError};
use crate::addr::{Frame, Page, PageSize, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{Arch, Entry};
use crate::phys::{FrameAllocator, PhysMem};

impl<A: Arch> PageTable<A> {
    /// Unmaps the page of `size` bytes at `va` and returns the frame it mapped.
    ///
    /// `NotMapped` if nothing maps `va`; `PartOfLargePage` if a larger page maps it;
    /// `NotLargePage` if `size` is large but smaller pages map it. Tables left empty are freed
    /// up to (not including) the root.
    pub fn unmap<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: VirtAddr,
        size: u64,
    ) -> Result<(PhysAddr, Flush), UnmapError> {
        let want = A::level_for_size(size).ok_or(UnmapError::UnsupportedPageSize(size))?;
        let (lin, _) = self.region(va, size, size, false)?;
        let (level, raw, path) = self.descend(mem, lin, want)?;
        let addr = match A::decode(level, raw) {
            Entry::Page { addr, size: s, .. } if level == want => {
                debug_assert_eq!(s, size);
                addr
            }
            Entry::Page { size: s, .. } => {
                return Err(UnmapError::PartOfLargePage {
                    va,
                    page: A::from_linear(lin & !(s - 1)),
                    size: s,
                })
            }
            Entry::Table { .. } => return Err(UnmapError::NotLargePage(va)),
            Entry::Empty | Entry::NotPresent(_) => return Err(UnmapError::NotMapped(va)),
        };
        let (table, idx) = path[want as usize];
        write_entry::<A, M>(mem, table, idx, 0)?;
        // Tables below a shared root entry stay, empty or not: other hierarchies use them.
        let keep = self.shared_at(lin);
        for l in (want + 1..=A::LEVELS).filter(|_| !keep) {
            let (child, child_idx) = path[l as usize - 1];
            if !table_is_empty::<A, M>(mem, child, child_idx, child_idx)? {
                break;
            }
            let (parent, pidx) = path[l as usize];
            write_entry::<A, M>(mem, parent, pidx, 0)?;
            self.free_table(frames, child)?;
        }
        Ok((addr, Flush::Page(va)))
    }

    /// [`PageTable::unmap`] of a typed page; returns the frame it mapped.
    pub fn unmap_page<S: PageSize, M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        page: Page<S>,
    ) -> Result<(Frame<S>, Flush), UnmapError> {
        let (pa, flush) = self.unmap(mem, frames, page.start_address(), S::SIZE)?;
        Ok((Frame::containing(pa), flush))
    }

    /// Unmaps every page in `[va, va + len)` (4 KiB-aligned), of whatever size, calling
    /// `on_unmap(page, frame, size)` for each, and frees the tables left empty. Each table is
    /// descended once.
    ///
    /// Holes are skipped. If the range covers only part of a large page, nothing is changed
    /// and `PartOfLargePage` is returned. The token covers the range (`Nothing` if no page
    /// was mapped).
    pub fn unmap_range<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: VirtAddr,
        len: u64,
        mut on_unmap: C,
    ) -> Result<Flush, UnmapError> {
        let (start, end) = self.region(va, len, PAGE_SIZE, false)?;
        if start == end {
            return Ok(Flush::Nothing);
        }
        if let Some((page, size)) = self.cut_large_page(mem, start, end)? {
            return Err(UnmapError::PartOfLargePage {
                va: A::from_linear(page.max(start)),
                page: A::from_linear(page),
                size,
            });
        }
        let mut any = false;
        let root = self.root;
        self.unmap_in(
            mem,
            frames,
            root,
            A::LEVELS,
            start,
            end,
            &mut |v: VirtAddr, p: PhysAddr, s: u64| {
                any = true;
                on_unmap(v, p, s)
            },
        )?;
        Ok(if any {
            Flush::Range { start: va, len }
        } else {
            Flush::Nothing
        })
    }

    /// A large page that `[start, end)` covers only partly (at either end), as
    /// `(linear start, size)`.
    pub(crate) fn cut_large_page<M: PhysMem>(
        &self,
        mem: &M,
        start: u64,
        end: u64,
    ) -> Result<Option<(u64, u64)>, crate::phys::PhysError> {
        for lin in [start, end - PAGE_SIZE] {
            let (level, raw, _) = self.descend(mem, lin, 1)?;
            if let Entry::Page { size, .. } = A::decode(level, raw) {
                let page = lin & !(size - 1);
                if page < start || page + size > end {
                    return Ok(Some((page, size)));
                }
            }
        }
        Ok(None)
    }

    /// Unmaps `[start, end)` below `table` at `level`; frees child tables left empty.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn unmap_in<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        on_unmap: &mut C,
    ) -> Result<(), UnmapError> {
        for slot in super::slots::<A>(level, start, end) {
            let Slot {
                lin,
                entry_start,
                next,
                idx,
                ..
            } = slot;
            let raw = read_entry::<A, M>(mem, table, idx)?;
            match A::decode(level, raw) {
                Entry::Empty => {}
                Entry::NotPresent(_) => write_entry::<A, M>(mem, table, idx, 0)?,
                Entry::Page { addr, size, .. } => {
                    if !slot.whole() {
                        return Err(UnmapError::PartOfLargePage {
                            va: A::from_linear(lin),
                            page: A::from_linear(entry_start),
                            size,
                        });
                    }
                    write_entry::<A, M>(mem, table, idx, 0)?;
                    on_unmap(A::from_linear(entry_start), addr, size);
                }
                Entry::Table { addr: child, .. } => {
                    self.unmap_in(mem, frames, child, level - 1, lin, next, on_unmap)?;
                    let whole = slot.whole();
                    if self.shared_at(lin) {
                        // Shared tables outlive their pages (see `share.rs`).
                    } else if whole
                        || table_is_empty::<A, M>(
                            mem,
                            child,
                            A::index(lin, level - 1),
                            A::index(next - 1, level - 1),
                        )?
                    {
                        write_entry::<A, M>(mem, table, idx, 0)?;
                        self.free_table(frames, child)?;
                    }
                }
            }
        }
        Ok(())
    }
}
