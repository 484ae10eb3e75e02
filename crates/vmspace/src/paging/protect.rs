//! Reprotecting: replacing the access flags of one page or of every page in a range.

use super::{read_entry, write_entry, Flush, PageTable, ProtectError, Slot};
use crate::addr::{Page, PageSize, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{Arch, Entry, PageFlags};
use crate::phys::PhysMem;

impl<A: Arch> PageTable<A> {
    /// Gives the page of `size` bytes at `va` the flags `flags` (P implied; the accessed and
    /// dirty bits the CPU set are kept, as Linux's `pte_modify` keeps them).
    ///
    /// Errors as [`PageTable::unmap`]: `NotMapped`, `PartOfLargePage`, `NotLargePage`.
    pub fn protect<M: PhysMem>(
        &mut self,
        mem: &mut M,
        va: VirtAddr,
        size: u64,
        flags: PageFlags,
    ) -> Result<Flush, ProtectError> {
        let want = A::level_for_size(size).ok_or(ProtectError::UnsupportedPageSize(size))?;
        let (lin, _) = self.region(va, size, size, false)?;
        let (level, raw, path) = self.descend(mem, lin, want)?;
        match A::decode(level, raw) {
            Entry::Page { .. } if level == want => {}
            Entry::Page { size: s, .. } => {
                return Err(ProtectError::PartOfLargePage {
                    va,
                    page: A::from_linear(lin & !(s - 1)),
                    size: s,
                })
            }
            Entry::Table { .. } => return Err(ProtectError::NotLargePage(va)),
            Entry::Empty | Entry::NotPresent(_) => return Err(ProtectError::NotMapped(va)),
        }
        let (table, idx) = path[want as usize];
        let new = A::reprotect(level, raw, flags);
        if new == raw {
            return Ok(Flush::Nothing);
        }
        write_entry::<A, M>(mem, table, idx, new)?;
        Ok(Flush::Page(va))
    }

    /// [`PageTable::protect`] of a typed page.
    pub fn protect_page<S: PageSize, M: PhysMem>(
        &mut self,
        mem: &mut M,
        page: Page<S>,
        flags: PageFlags,
    ) -> Result<Flush, ProtectError> {
        self.protect(mem, page.start_address(), S::SIZE, flags)
    }

    /// Gives every mapped page in `[va, va + len)` (4 KiB-aligned) the flags `flags`,
    /// descending each table once. Holes are skipped.
    ///
    /// If the range covers only part of a large page, nothing is changed and
    /// `PartOfLargePage` is returned. The token covers the range (`Nothing` if no entry
    /// changed).
    pub fn protect_range<M: PhysMem>(
        &mut self,
        mem: &mut M,
        va: VirtAddr,
        len: u64,
        flags: PageFlags,
    ) -> Result<Flush, ProtectError> {
        let (start, end) = self.region(va, len, PAGE_SIZE, false)?;
        if start == end {
            return Ok(Flush::Nothing);
        }
        if let Some((page, size)) = self.cut_large_page(mem, start, end)? {
            return Err(ProtectError::PartOfLargePage {
                va: A::from_linear(page.max(start)),
                page: A::from_linear(page),
                size,
            });
        }
        let mut changed = false;
        self.protect_in(mem, self.root, A::LEVELS, start, end, flags, &mut changed)?;
        Ok(if changed {
            Flush::Range { start: va, len }
        } else {
            Flush::Nothing
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn protect_in<M: PhysMem>(
        &self,
        mem: &mut M,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        flags: PageFlags,
        changed: &mut bool,
    ) -> Result<(), ProtectError> {
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
                Entry::Empty | Entry::NotPresent(_) => {}
                Entry::Page { size, .. } => {
                    if !slot.whole() {
                        return Err(ProtectError::PartOfLargePage {
                            va: A::from_linear(lin),
                            page: A::from_linear(entry_start),
                            size,
                        });
                    }
                    let new = A::reprotect(level, raw, flags);
                    if new != raw {
                        write_entry::<A, M>(mem, table, idx, new)?;
                        *changed = true;
                    }
                }
                Entry::Table { addr, .. } => {
                    self.protect_in(mem, addr, level - 1, lin, next, flags, changed)?;
                }
            }
        }
        Ok(())
    }
}
