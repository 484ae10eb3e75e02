//! Translation: which frame and flags map a virtual address, for one address or a range.

use super::{entry_addr, read_entry, PageTable, Slot, TranslateError};
use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::{Arch, Entry, PageFlags};
use crate::phys::PhysMem;

/// How one page is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// First virtual address of the page (of `size` bytes).
    pub page: VirtAddr,
    /// First physical address of the frame.
    pub frame: PhysAddr,
    /// Page size in bytes.
    pub size: u64,
    /// Level of the leaf entry (1 = 4 KiB PTE).
    pub level: u8,
    /// The leaf's flags: the effective rights (intermediate entries grant everything).
    pub flags: PageFlags,
    /// The raw leaf entry.
    pub raw: u64,
    /// Physical address of the leaf entry.
    pub entry: PhysAddr,
}

impl Translation {
    /// The physical address `va` translates to (`va` must lie in the page).
    pub fn phys(&self, va: VirtAddr) -> PhysAddr {
        let off = va.as_u64().wrapping_sub(self.page.as_u64()) & (self.size - 1);
        PhysAddr::new(self.frame.as_u64() + off)
    }
}

impl<A: Arch> PageTable<A> {
    /// The mapping of `va`, as the MMU would find it (the recursive window included).
    pub fn translate<M: PhysMem>(
        &self,
        mem: &M,
        va: VirtAddr,
    ) -> Result<Translation, TranslateError> {
        let lin = A::to_linear(va).ok_or(TranslateError::NonCanonical(va))?;
        let (level, raw, path) = self.descend(mem, lin, 1)?;
        match A::decode(level, raw) {
            Entry::Page { addr, flags, size } => {
                let (table, idx) = path[level as usize];
                Ok(Translation {
                    page: A::from_linear(lin & !(size - 1)),
                    frame: addr,
                    size,
                    level,
                    flags,
                    raw,
                    entry: entry_addr::<A>(table, idx),
                })
            }
            _ => Err(TranslateError::NotMapped(va)),
        }
    }

    /// Calls `visit` with every page mapped in `[va, va + len)` in address order (pages that
    /// the range only touches included), descending each table once.
    pub fn translate_range<M: PhysMem, V: FnMut(Translation)>(
        &self,
        mem: &M,
        va: VirtAddr,
        len: u64,
        mut visit: V,
    ) -> Result<(), TranslateError> {
        let (start, end) = self.region(va, len, 1, true)?;
        if start < end {
            self.translate_in(mem, self.root, A::LEVELS, start, end, &mut visit)?;
        }
        Ok(())
    }

    fn translate_in<M: PhysMem, V: FnMut(Translation)>(
        &self,
        mem: &M,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        visit: &mut V,
    ) -> Result<(), TranslateError> {
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
                Entry::Page { addr, flags, size } => visit(Translation {
                    page: A::from_linear(entry_start),
                    frame: addr,
                    size,
                    level,
                    flags,
                    raw,
                    entry: entry_addr::<A>(table, idx),
                }),
                Entry::Table { addr, .. } => {
                    self.translate_in(mem, addr, level - 1, lin, next, visit)?
                }
                Entry::Empty | Entry::NotPresent(_) => {}
            }
        }
        Ok(())
    }
}
