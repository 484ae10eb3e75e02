//! madvise: DONTNEED/FREE/REMOVE content effects, the flag-changing advices (merge-or-split
//! like mprotect, G12), guard regions, populate; holes give ENOMEM after processing the rest.

use super::abi::*;
use super::vma::{flags::*, Vma};
use super::{AddressSpace, Errno};

fn valid(adv: i64, ksm: bool, thp: bool) -> bool {
    matches!(
        adv,
        MADV_NORMAL
            | MADV_RANDOM
            | MADV_SEQUENTIAL
            | MADV_WILLNEED
            | MADV_DONTNEED
            | MADV_FREE
            | MADV_REMOVE
            | MADV_DONTFORK
            | MADV_DOFORK
            | MADV_DONTDUMP
            | MADV_DODUMP
            | MADV_WIPEONFORK
            | MADV_KEEPONFORK
            | MADV_COLD
            | MADV_PAGEOUT
            | MADV_POPULATE_READ
            | MADV_POPULATE_WRITE
            | MADV_DONTNEED_LOCKED
            | MADV_GUARD_INSTALL
            | MADV_GUARD_REMOVE
    ) || (ksm && matches!(adv, MADV_MERGEABLE | MADV_UNMERGEABLE))
        || (thp && matches!(adv, MADV_HUGEPAGE | MADV_NOHUGEPAGE | MADV_COLLAPSE))
}

impl AddressSpace {
    /// madvise(addr, len, advice).
    pub fn madvise(&mut self, start: u64, len: u64, adv: i64) -> Result<(), Errno> {
        if !valid(adv, self.cfg.ksm, self.cfg.thp) || !is_page_aligned(start) {
            return Err(Errno::EINVAL);
        }
        let alen = page_align_wrapping(len);
        if len != 0 && alen == 0 {
            return Err(Errno::EINVAL);
        }
        let end = start.wrapping_add(alen);
        if end < start {
            return Err(Errno::EINVAL);
        }
        if end == start {
            return Ok(());
        }
        if matches!(adv, MADV_POPULATE_READ | MADV_POPULATE_WRITE) {
            return self.madvise_populate(start, end, adv == MADV_POPULATE_WRITE);
        }
        let mut unmapped = false;
        let mut cursor = start;
        loop {
            let v = match self.tree.find(cursor) {
                Some(v) => v.clone(),
                None => return Err(Errno::ENOMEM),
            };
            if cursor < v.start {
                unmapped = true;
                cursor = v.start;
                if cursor >= end {
                    break;
                }
            }
            let rend = v.end.min(end);
            let next = self.madvise_vma(&v, cursor, rend, adv)?;
            cursor = next.max(rend);
            if cursor >= end {
                break;
            }
        }
        if unmapped {
            Err(Errno::ENOMEM)
        } else {
            Ok(())
        }
    }

    fn is_discard(adv: i64) -> bool {
        matches!(
            adv,
            MADV_FREE
                | MADV_DONTNEED
                | MADV_DONTNEED_LOCKED
                | MADV_REMOVE
                | MADV_DONTFORK
                | MADV_WIPEONFORK
                | MADV_GUARD_INSTALL
        )
    }

    /// madvise_vma_behavior for `[s, e)` inside `v`; returns the end processed.
    fn madvise_vma(&mut self, v: &Vma, s: u64, e: u64, adv: i64) -> Result<u64, Errno> {
        // mseal: discarding advice on sealed read-only anonymous memory.
        if v.sealed()
            && Self::is_discard(adv)
            && !v.has_file()
            && v.flags & VM_SHARED == 0
            && v.flags & VM_WRITE == 0
        {
            return Err(Errno::EPERM);
        }
        let mut nf = v.flags;
        match adv {
            MADV_REMOVE => {
                if v.flags & VM_LOCKED != 0 {
                    return Err(Errno::EINVAL);
                }
                let obj = v.object().ok_or(Errno::EINVAL)?;
                if v.flags & VM_SHARED == 0 {
                    return Err(Errno::EACCES);
                }
                let first = v.pgoff_of(s);
                self.mem.punch(obj, first, (e - s) >> 12);
                self.mem.zap_private(s, e);
                return Ok(e);
            }
            MADV_WILLNEED => return Ok(e),
            MADV_COLD | MADV_PAGEOUT => {
                if v.flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB) != 0 {
                    return Err(Errno::EINVAL);
                }
                return Ok(e);
            }
            MADV_DONTNEED | MADV_DONTNEED_LOCKED | MADV_FREE => {
                let mut forbidden = VM_PFNMAP;
                if adv != MADV_DONTNEED_LOCKED {
                    forbidden |= VM_LOCKED;
                }
                if v.flags & forbidden != 0 {
                    return Err(Errno::EINVAL);
                }
                if adv == MADV_FREE {
                    if !v.is_anonymous() {
                        return Err(Errno::EINVAL);
                    }
                    // Lazily freed: without memory pressure the contents stay.
                    return Ok(e);
                }
                self.mem.zap_private(s, e);
                // A zap covering a whole 2 MiB block clears its PMD (a collapsed THP) or, with
                // CONFIG_PT_RECLAIM, frees its emptied PTE table.
                self.mem.reclaim_tables(s, e);
                return Ok(e);
            }
            MADV_COLLAPSE => {
                // madvise_collapse: thp_vma_allowable_order(TVA_FORCED_COLLAPSE) first, then
                // success only if every PMD block in [round_up(s), round_down(e)) collapsed
                // (an empty list counts, a negative one does not). Observed on the reference
                // (THP "madvise", shmem "never"): private and shared anonymous memory pass the
                // first check, blocks without a page table (never touched) do not collapse.
                let pmd = 2u64 << 20;
                let hstart = s.div_ceil(pmd) * pmd;
                let hend = e & !(pmd - 1);
                let allowed = (matches!(v.backing, super::Backing::Shmem { .. })
                    || (v.is_anonymous() && v.flags & VM_MAYSHARE == 0))
                    && v.flags & (VM_NOHUGEPAGE | VM_SPECIAL | VM_HUGETLB) == 0;
                if !allowed || hstart > hend {
                    // hstart > hend (s and e inside one unaligned block): the kernel compares
                    // a wrapped block count with 0 collapsed and fails with SCAN_FAIL.
                    return Err(Errno::EINVAL);
                }
                // A block without a page table is SCAN_PMD_NULL; one with a table collapses
                // (MADV_COLLAPSE ignores max_ptes_none). For shmem, thp_vma_suitable_order
                // also wants the file offset aligned like the address (SCAN_ADDRESS_RANGE).
                let file_aligned =
                    v.is_anonymous() || ((v.start >> 12).wrapping_sub(v.pgoff)) % (pmd >> 12) == 0;
                // Blocks that collapse stay collapsed when another one fails (madvise_collapse
                // goes on after SCAN_PMD_NULL): each becomes one resident huge page, which the
                // page-table backend sees as the whole block populated.
                let mut failed = false;
                let mut b = hstart;
                while b < hend {
                    if !self.mem.has_table(b) || !file_aligned {
                        failed = true;
                    } else {
                        self.mem.log.push(super::mmu::MmuEvent::Populate {
                            start: b,
                            end: b + pmd,
                            write: v.flags & (VM_WRITE | VM_SHARED) == VM_WRITE,
                        });
                    }
                    b += pmd;
                }
                if failed {
                    return Err(Errno::EINVAL);
                }
                return Ok(e);
            }
            MADV_GUARD_INSTALL | MADV_GUARD_REMOVE => {
                if v.flags & (VM_SPECIAL | VM_HUGETLB) != 0
                    || (adv == MADV_GUARD_INSTALL && v.flags & VM_LOCKED != 0)
                {
                    return Err(Errno::EINVAL);
                }
                let mut p = s;
                while p < e {
                    self.mem.set_guard(p, adv == MADV_GUARD_INSTALL);
                    if adv == MADV_GUARD_INSTALL {
                        self.mem.zap_private(p, p + 4096);
                    }
                    p += 4096;
                }
                return Ok(e);
            }
            MADV_NORMAL => nf &= !(VM_RAND_READ | VM_SEQ_READ),
            MADV_SEQUENTIAL => nf = (nf & !VM_RAND_READ) | VM_SEQ_READ,
            MADV_RANDOM => nf = (nf & !VM_SEQ_READ) | VM_RAND_READ,
            MADV_DONTFORK => nf |= VM_DONTCOPY,
            MADV_DOFORK => {
                if nf & VM_IO != 0 {
                    return Err(Errno::EINVAL);
                }
                nf &= !VM_DONTCOPY;
            }
            MADV_WIPEONFORK => {
                if v.has_file() || nf & VM_SHARED != 0 {
                    return Err(Errno::EINVAL);
                }
                nf |= VM_WIPEONFORK;
            }
            MADV_KEEPONFORK => {
                if nf & VM_DROPPABLE != 0 {
                    return Err(Errno::EINVAL);
                }
                nf &= !VM_WIPEONFORK;
            }
            MADV_DONTDUMP => nf |= VM_DONTDUMP,
            MADV_DODUMP => {
                if nf & VM_SPECIAL != 0 || nf & VM_DROPPABLE != 0 {
                    return Err(Errno::EINVAL);
                }
                nf &= !VM_DONTDUMP;
            }
            MADV_MERGEABLE => {
                if nf
                    & (VM_MERGEABLE
                        | VM_SHARED
                        | VM_MAYSHARE
                        | VM_PFNMAP
                        | VM_IO
                        | VM_DONTEXPAND
                        | VM_HUGETLB
                        | VM_MIXEDMAP
                        | VM_DROPPABLE)
                    == 0
                {
                    nf |= VM_MERGEABLE;
                }
            }
            MADV_UNMERGEABLE => nf &= !VM_MERGEABLE,
            MADV_HUGEPAGE => nf = (nf & !VM_NOHUGEPAGE) | VM_HUGEPAGE,
            MADV_NOHUGEPAGE => nf = (nf & !VM_HUGEPAGE) | VM_NOHUGEPAGE,
            _ => return Err(Errno::EINVAL),
        }
        if nf == v.flags {
            return Ok(e);
        }
        match self.modify_flags(v.start, s, e, nf) {
            Ok(cur) => Ok(self.tree.containing(cur).map_or(e, |x| x.end.min(e))),
            // madvise reports a failed split as EAGAIN.
            Err(Errno::ENOMEM) => Err(Errno::EAGAIN),
            Err(x) => Err(x),
        }
    }

    /// MADV_POPULATE_READ/WRITE (FOLL_MADV_POPULATE): fault every page in; a hole gives
    /// ENOMEM, a VMA that forbids the access (or VM_IO/VM_PFNMAP) EINVAL, a fault that would
    /// signal (beyond EOF) EFAULT. Pages before the failure stay populated.
    fn madvise_populate(&mut self, start: u64, end: u64, write: bool) -> Result<(), Errno> {
        let mut cursor = start;
        while cursor < end {
            let v = match self.tree.containing(cursor) {
                Some(v) => v.clone(),
                None => return Err(Errno::ENOMEM),
            };
            if v.flags & (VM_IO | VM_PFNMAP) != 0 {
                return Err(Errno::EINVAL);
            }
            let ok = if write {
                v.flags & VM_WRITE != 0
            } else {
                v.flags & VM_READ != 0
            };
            if !ok {
                return Err(Errno::EINVAL);
            }
            let e = v.end.min(end);
            // A guard-region page or a page beyond EOF faults (EFAULT); pages before it
            // are populated.
            let guard = self.mem.first_guard(cursor, e);
            let mut beyond = guard.is_some();
            let mut first_ok = guard != Some(cursor);
            if v.object().is_some() {
                let eof_page = self.object_size(&v.backing).div_ceil(4096);
                beyond |= v.pgoff_of(e - 4096) >= eof_page;
                first_ok &= v.pgoff_of(cursor) < eof_page;
            }
            if write && v.flags & VM_SHARED == 0 && first_ok {
                self.anon_vma_prepare(v.start);
            }
            if !beyond {
                self.mem.note_tables(cursor, e);
            } else if first_ok {
                self.mem.note_tables(cursor, cursor + 4096);
            }
            // The pages faulted in: up to the guard page or the first page beyond EOF.
            let mut stop = guard.unwrap_or(e);
            if v.object().is_some() {
                let eof_page = self.object_size(&v.backing).div_ceil(4096);
                let eof = v
                    .start
                    .saturating_add(eof_page.saturating_sub(v.pgoff).saturating_mul(4096));
                stop = stop.min(eof.max(cursor));
            }
            if stop > cursor {
                self.mem.log.push(super::mmu::MmuEvent::Populate {
                    start: cursor,
                    end: stop,
                    write,
                });
            }
            if beyond {
                return Err(Errno::EFAULT);
            }
            cursor = e;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SpaceConfig, TaskKind};
    use super::*;

    const RW: u64 = PROT_READ | PROT_WRITE;
    const PA: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

    #[test]
    fn collapse_needs_a_page_table_per_block() {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
        let a = s
            .mmap(0x4000_0000, 4 << 20, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(s.madvise(a, 4 << 20, MADV_COLLAPSE), Err(Errno::EINVAL));
        assert_eq!(s.madvise(a, 0x1000, MADV_COLLAPSE), Ok(()));
        assert_eq!(
            s.madvise(a + 0x1000, 0x1000, MADV_COLLAPSE),
            Err(Errno::EINVAL)
        );
        s.touch(a, false, 0).unwrap();
        assert_eq!(s.madvise(a, 4 << 20, MADV_COLLAPSE), Err(Errno::EINVAL));
        s.touch(a + (3 << 20), true, 1).unwrap();
        assert_eq!(s.madvise(a, 4 << 20, MADV_COLLAPSE), Ok(()));
        // Unmapping the whole block frees its table (free_pgtables); a new mapping has none.
        s.munmap(a + (2 << 20), 2 << 20).unwrap();
        s.mmap(a + (2 << 20), 2 << 20, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(s.madvise(a, 4 << 20, MADV_COLLAPSE), Err(Errno::EINVAL));
    }

    #[test]
    fn dontneed_zeroes_and_holes_enomem() {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
        let a = s
            .mmap(0x1000_0000, 0x2000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a + 0x1000, true, 7).unwrap();
        s.madvise(a + 0x1000, 0x1000, MADV_DONTNEED).unwrap();
        assert_eq!(s.touch(a + 0x1000, false, 0), Ok(Some(0)));
        assert_eq!(s.madvise(a, 0x4000, MADV_DONTNEED), Err(Errno::ENOMEM));
        assert_eq!(s.madvise(a + 1, 0x1000, MADV_DONTNEED), Err(Errno::EINVAL));
        assert_eq!(s.madvise(a, 0x1000, 999), Err(Errno::EINVAL));
        assert_eq!(s.madvise(a, 0, MADV_DONTNEED), Ok(()));
    }

    #[test]
    fn populate_errors() {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
        let a = s
            .mmap(0x1000_0000, 0x2000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(
            s.madvise(a, 0x2000, MADV_POPULATE_WRITE),
            Err(Errno::EINVAL)
        );
        assert_eq!(s.madvise(a, 0x3000, MADV_POPULATE_READ), Err(Errno::ENOMEM));
        s.mprotect(a, 0x2000, RW).unwrap();
        assert_eq!(s.madvise(a, 0x2000, MADV_POPULATE_WRITE), Ok(()));
        assert!(s.find_vma(a).unwrap().anon_vma.is_some());
    }

    #[test]
    fn flag_advice_splits_like_mprotect() {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
        let a = s
            .mmap(0x1000_0000, 0x3000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.madvise(a + 0x1000, 0x1000, MADV_DONTFORK).unwrap();
        assert_eq!(s.map_count(), 3);
        s.madvise(a + 0x1000, 0x1000, MADV_DOFORK).unwrap();
        assert_eq!(s.map_count(), 1);
        s.check_merged().unwrap();
    }
}
