//! mremap (X1–X8, G14): shrink, grow in place (merging with the next VMA), move with
//! MAYMOVE, FIXED, DONTUNMAP, and multi-VMA moves that keep the source's holes (6.17+).

use super::abi::*;
use super::merge::Proposal;
use super::mmu::PageMover;
use super::vma::{flags::*, Backing, Vma};
use super::{AddressSpace, Errno, FileRef};

struct Req {
    addr: u64,
    old_len: u64,
    new_len: u64,
    flags: u64,
    new_addr: u64,
}

impl Req {
    fn implies_new_addr(&self) -> bool {
        self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
    }
}

/// The page mover of one mremap call (`None`: moves are only logged as `MmuEvent::Move`).
type Mover<'a, 'b> = &'a mut Option<PageMover<'b>>;

impl AddressSpace {
    /// mremap(addr, old_len, new_len, flags, new_addr): the final address. Moves are
    /// logged as `MmuEvent::Move` for a page-table backend to follow afterwards.
    pub fn mremap(
        &mut self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    ) -> Result<u64, Errno> {
        self.mremap_with(addr, old_len, new_len, flags, new_addr, &mut None)
    }

    /// [`AddressSpace::mremap`] whose moves run `mover` where Linux moves the page tables
    /// (X7). When the mover cannot place the destination's entries, the call fails with
    /// ENOMEM as copy_vma_and_data's `moved_len < old_len` path does: the source VMA and its
    /// pages stay as they were, the destination VMA is unmapped again; what happened before
    /// the move stays done (a FIXED destination's old mapping is gone, a FIXED shrink's tail
    /// is unmapped, the earlier pieces of a multi-VMA move are moved).
    pub fn mremap_moving(
        &mut self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
        mover: PageMover<'_>,
    ) -> Result<u64, Errno> {
        self.mremap_with(addr, old_len, new_len, flags, new_addr, &mut Some(mover))
    }

    fn mremap_with(
        &mut self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
        mv: Mover<'_, '_>,
    ) -> Result<u64, Errno> {
        let locked = self
            .tree
            .containing(addr)
            .is_some_and(|v| v.flags & VM_LOCKED != 0);
        let na = self.mremap_inner(addr, old_len, new_len, flags, new_addr, mv)?;
        // do_mremap: an mlocked VMA that grew is populated over its new part (mm_populate
        // ignores errors; VM_LOCKONFAULT VMAs are skipped there).
        let (old, new) = (page_align_wrapping(old_len), page_align_wrapping(new_len));
        if locked && new > old {
            let _ = self.populate(na + old, na + new);
        }
        Ok(na)
    }

    fn mremap_inner(
        &mut self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
        mv: Mover<'_, '_>,
    ) -> Result<u64, Errno> {
        let ts = self.layout.task_size;
        let r = Req {
            addr,
            old_len: page_align_wrapping(old_len),
            new_len: page_align_wrapping(new_len),
            flags,
            new_addr,
        };
        // X1: check_mremap_params.
        if flags & !(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP) != 0 {
            return Err(Errno::EINVAL);
        }
        if !is_page_aligned(addr) {
            return Err(Errno::EINVAL);
        }
        if r.new_len == 0 || r.new_len > ts {
            return Err(Errno::EINVAL);
        }
        if r.implies_new_addr() {
            if r.new_addr > ts - r.new_len || !is_page_aligned(r.new_addr) {
                return Err(Errno::EINVAL);
            }
            if flags & MREMAP_MAYMOVE == 0 {
                return Err(Errno::EINVAL);
            }
            if flags & MREMAP_DONTUNMAP != 0 && r.old_len != r.new_len {
                return Err(Errno::EINVAL);
            }
            let old_end = r.addr.wrapping_add(r.old_len);
            let new_end = r.new_addr + r.new_len;
            if r.addr < new_end && r.new_addr < old_end {
                return Err(Errno::EINVAL);
            }
            // X2.
            if self.map_count() + 2 >= self.max_map_count().saturating_sub(3) {
                return Err(Errno::ENOMEM);
            }
        }
        if flags & MREMAP_FIXED != 0 && r.old_len == r.new_len {
            return self.remap_move(r, mv);
        }
        let v = self.tree.containing(addr).cloned();
        let v = self.check_prep_vma(v.as_ref(), &r)?;
        if r.implies_new_addr() {
            return self.mremap_to(r, mv);
        }
        if r.old_len == r.new_len {
            return Ok(addr);
        }
        if r.old_len > r.new_len {
            // X4: shrink in place.
            self.munmap(addr + r.new_len, r.old_len - r.new_len)?;
            return Ok(addr);
        }
        self.expand_vma(v, r, mv)
    }

    /// X3: FIXED move of `[addr, addr+len)`, piece by piece, keeping holes.
    fn remap_move(&mut self, r: Req, mv: Mover<'_, '_>) -> Result<u64, Errno> {
        let (start, end) = (r.addr, r.addr.wrapping_add(r.old_len));
        let mut res = Err(Errno::EFAULT);
        let mut seen = false;
        let mut last_end = 0;
        let mut target = r.new_addr;
        let mut cursor = start;
        while let Some(v) = self.tree.intersecting(cursor, end).cloned() {
            let a = v.start.max(start);
            let len = end.min(v.end) - a;
            if !seen && start < v.start {
                return Err(Errno::EFAULT);
            }
            let offset = if seen { v.start - last_end } else { 0 };
            last_end = v.end;
            let piece = Req {
                addr: a,
                old_len: len,
                new_len: len,
                flags: r.flags,
                new_addr: target + offset,
            };
            self.check_prep_vma(Some(&v), &piece)?;
            let got = self.mremap_to(piece, mv)?;
            if !seen {
                res = Ok(got);
            }
            seen = true;
            target = got + len;
            cursor = a + len;
            if cursor >= end {
                break;
            }
        }
        res
    }

    /// check_prep_vma (X4, X5).
    fn check_prep_vma(&self, v: Option<&Vma>, r: &Req) -> Result<Vma, Errno> {
        let v = v.ok_or(Errno::EFAULT)?;
        if v.sealed() {
            return Err(Errno::EPERM);
        }
        // align_hugetlb: hugetlb addresses must be huge-page aligned.
        if v.flags & VM_HUGETLB != 0 {
            let h = self.huge_page_size(v);
            if r.addr & (h - 1) != 0 || (r.implies_new_addr() && r.new_addr & (h - 1) != 0) {
                return Err(Errno::EINVAL);
            }
            // Observed on 6.18: hugetlb mappings cannot grow (EINVAL, not EFAULT).
            if r.new_len > r.old_len {
                return Err(Errno::EINVAL);
            }
        }
        if r.flags & MREMAP_DONTUNMAP != 0 && v.flags & (VM_DONTEXPAND | VM_PFNMAP) != 0 {
            return Err(Errno::EINVAL);
        }
        let expand = r.new_len > r.old_len;
        if !expand && !r.implies_new_addr() {
            return Ok(v.clone());
        }
        if r.old_len == 0 && v.flags & (VM_SHARED | VM_MAYSHARE) == 0 {
            return Err(Errno::EINVAL);
        }
        // A shrink may unmap across VMA boundaries; only the kept part must lie in `v`.
        let old_len = if r.new_len < r.old_len {
            r.new_len
        } else {
            r.old_len
        };
        if old_len > v.end - r.addr {
            return Err(Errno::EFAULT);
        }
        if r.new_len == old_len {
            return Ok(v.clone());
        }
        let pgoff = v.pgoff_of(r.addr);
        if pgoff.checked_add(r.new_len >> PAGE_SHIFT).is_none() {
            return Err(Errno::EINVAL);
        }
        if v.flags & (VM_DONTEXPAND | VM_PFNMAP) != 0 {
            return Err(Errno::EFAULT);
        }
        let delta = r.new_len.saturating_sub(r.old_len);
        if !self.mlock_future_ok(v.flags, delta) {
            return Err(Errno::EAGAIN);
        }
        if !self.may_expand_vm(v.flags, delta >> PAGE_SHIFT) {
            return Err(Errno::ENOMEM);
        }
        Ok(v.clone())
    }

    /// mremap_to (X7): unmap the destination, shrink, then move.
    fn mremap_to(&mut self, mut r: Req, mv: Mover<'_, '_>) -> Result<u64, Errno> {
        if r.flags & MREMAP_FIXED != 0 {
            self.munmap(r.new_addr, r.new_len)?;
            if self.tree.containing(r.addr).is_none() {
                return Err(Errno::EFAULT);
            }
        }
        if r.old_len > r.new_len {
            self.munmap(r.addr + r.new_len, r.old_len - r.new_len)?;
            r.old_len = r.new_len;
        }
        let v = self.tree.containing(r.addr).cloned().ok_or(Errno::EFAULT)?;
        if r.flags & MREMAP_DONTUNMAP != 0 && !self.may_expand_vm(v.flags, r.old_len >> PAGE_SHIFT)
        {
            return Err(Errno::ENOMEM);
        }
        let new_addr = self.new_addr_for(&v, &r)?;
        self.move_vma(v, r, new_addr, mv)
    }

    /// expand_vma (X6): in place when the range ends the VMA and the space above is free,
    /// else move with MAYMOVE, else ENOMEM.
    fn expand_vma(&mut self, v: Vma, r: Req, mv: Mover<'_, '_>) -> Result<u64, Errno> {
        let delta = r.new_len - r.old_len;
        if r.addr.wrapping_add(r.old_len) == v.end && self.vma_expandable(&v, delta) {
            let pages = delta >> PAGE_SHIFT;
            if v.flags & VM_ACCOUNT != 0 && !self.vm_enough_memory(pages) {
                return Err(Errno::ENOMEM);
            }
            if v.flags & VM_SPECIAL != 0 {
                if v.flags & VM_ACCOUNT != 0 {
                    self.vm_unacct(pages);
                }
                return Err(Errno::ENOMEM);
            }
            let p = Proposal {
                start: v.end,
                end: v.end + delta,
                flags: v.flags,
                pgoff: v.pgoff.wrapping_add(v.pages()),
                backing: &v.backing,
                anon: v.anon_vma,
                forked: v.forked,
            };
            let make = Vma {
                start: v.end,
                end: v.end + delta,
                ..v.clone()
            };
            self.place_new_range(&p, false, make);
            self.vm_stat_account(v.flags, pages, false);
            if v.flags & VM_LOCKED != 0 {
                self.acct.locked_vm += pages;
            }
            return Ok(r.addr);
        }
        if r.flags & MREMAP_MAYMOVE == 0 {
            return Err(Errno::ENOMEM);
        }
        let new_addr = self.new_addr_for(&v, &r)?;
        self.move_vma(v, r, new_addr, mv)
    }

    fn vma_expandable(&self, v: &Vma, delta: u64) -> bool {
        let end = match v.end.checked_add(delta) {
            Some(e) => e,
            None => return false,
        };
        if self.tree.intersecting(v.end, end).is_some() {
            return false;
        }
        let len = end - v.start;
        let ts = self.layout.task_size;
        !(len > ts
            || v.start > ts - len
            || (v.start < self.cfg.mmap_min_addr && !self.cfg.cap_sys_rawio))
    }

    /// vrm_set_new_addr: get_unmapped_area for the destination (anon moves follow P3/P8).
    fn new_addr_for(&self, v: &Vma, r: &Req) -> Result<u64, Errno> {
        let pgoff = v.pgoff_of(r.addr);
        let hint = if r.implies_new_addr() { r.new_addr } else { 0 };
        let mut map_flags = 0;
        if r.flags & MREMAP_FIXED != 0 {
            map_flags |= MAP_FIXED;
        }
        if v.flags & VM_MAYSHARE != 0 {
            map_flags |= MAP_SHARED;
        }
        let file = match &v.backing {
            Backing::File { id } => self.files.get(id).cloned(),
            Backing::Shmem { obj } => Some(FileRef {
                id: *obj,
                size: 0,
                name: alloc::string::String::new(),
                dev: (0, 1),
                inode: 0,
                writable: true,
                shmem: true,
            }),
            _ => None,
        };
        self.get_unmapped_area(file.as_ref(), hint, r.new_len, pgoff, map_flags)
    }

    /// move_vma: create the destination (merging, G14), move contents, unmap or keep the
    /// source (DONTUNMAP leaves it mapped, empty and unlocked). If `mv` cannot move the
    /// entries, the destination is unmapped instead of the source and the result is ENOMEM.
    fn move_vma(&mut self, v: Vma, r: Req, new_addr: u64, mv: Mover<'_, '_>) -> Result<u64, Errno> {
        if self.map_count() >= self.max_map_count().saturating_sub(3) {
            return Err(Errno::ENOMEM);
        }
        let old_end = r.addr + r.old_len;
        if v.is_special_mapping() && (v.start != r.addr || v.end != old_end) {
            return Err(Errno::EINVAL);
        }
        let dontunmap = r.flags & MREMAP_DONTUNMAP != 0;
        let mut charged = 0;
        if v.flags & VM_ACCOUNT != 0 {
            charged = if dontunmap {
                r.new_len
            } else {
                r.new_len.saturating_sub(r.old_len)
            } >> PAGE_SHIFT;
            if !self.vm_enough_memory(charged) {
                return Err(Errno::ENOMEM);
            }
        }
        let mut pgoff = v.pgoff_of(r.addr);
        if v.is_anonymous() && v.anon_vma.is_none() {
            pgoff = new_addr >> PAGE_SHIFT;
        }
        let new_end = new_addr + r.new_len;
        let p = Proposal {
            start: new_addr,
            end: new_end,
            flags: v.flags,
            pgoff,
            backing: &v.backing,
            anon: v.anon_vma,
            forked: false,
        };
        let make = Vma {
            start: new_addr,
            end: new_end,
            pgoff,
            ..v.clone()
        };
        self.place_new_range(&p, false, make);
        let moved = r.old_len.min(r.new_len);
        // copy_vma_and_data: move_page_tables, all or (when a destination table cannot be
        // allocated, after moving back what it moved) nothing.
        let mut log_move = true;
        if let (Some(mover), true) = (mv.as_mut(), moved > 0) {
            self.mem.drop_private(new_addr, new_addr + moved);
            let pending = self.take_mmu_events();
            if !mover(pending, r.addr, new_addr, moved) {
                return Err(self.undo_move(&v, new_addr, new_end, dontunmap));
            }
            log_move = false;
        }
        let mark = self.mem.log.len();
        self.mem.move_private(r.addr, new_addr, moved);
        if !log_move {
            self.mem.log.truncate(mark);
        }
        self.mem.move_tables(r.addr, new_addr, moved);
        self.vm_stat_account(v.flags, r.new_len >> PAGE_SHIFT, false);
        if v.flags & VM_LOCKED != 0 {
            self.acct.locked_vm += r.new_len >> PAGE_SHIFT;
        }
        if dontunmap {
            // dontunmap_complete: the source loses VM_LOCKED* (6.18 keeps VM_ACCOUNT); when the
            // whole VMA moved (and did not merge into the destination) its anon_vma is
            // unlinked, so it merges and moves like a never-written VMA again (G14, G17).
            if let Some(src) = self.tree.containing(r.addr).map(|x| (x.start, x.end)) {
                let whole = src == (r.addr, old_end);
                self.tree.update(src.0, |x| {
                    x.flags &= !VM_LOCKED_MASK;
                    if whole {
                        x.anon_vma = None;
                        x.forked = false;
                    }
                });
            }
            let _ = charged;
        } else if r.old_len == 0 {
            // Duplicating shared memory (old_len 0): unmap_source_vma's do_munmap of zero bytes
            // fails with EINVAL, which mremap ignores, so the source stays whole.
        } else {
            // The source's charge moves with it: unmapping must not release it.
            self.unmap_source(r.addr, old_end, true);
        }
        Ok(new_addr)
    }

    /// move_vma after move_page_tables failed (copy_vma_and_data's error path): the
    /// destination `[new_addr, new_end)` takes the source's place in vrm_stat_account and
    /// unmap_source_vma, so it goes while the source stays whole, its entries untouched.
    /// unmap_source_vma clears VM_ACCOUNT on the VMA it unmaps unless DONTUNMAP, so the
    /// destination's pages keep their commit charge (the growth charged for the move is not
    /// given back, as in 6.x; with DONTUNMAP the whole new charge is released).
    fn undo_move(&mut self, v: &Vma, new_addr: u64, new_end: u64, dontunmap: bool) -> Errno {
        let pages = (new_end - new_addr) >> PAGE_SHIFT;
        self.vm_stat_account(v.flags, pages, false);
        if v.flags & VM_LOCKED != 0 {
            self.acct.locked_vm += pages;
        }
        self.unmap_source(new_addr, new_end, !dontunmap);
        Errno::ENOMEM
    }

    /// unmap_source_vma: unmaps `[start, end)`; with `keep_charge` (an accountable move)
    /// the commit charge of its VM_ACCOUNT pages is kept.
    fn unmap_source(&mut self, start: u64, end: u64, keep_charge: bool) {
        let mut acct = 0;
        let mut c = start;
        while let Some(x) = self.tree.intersecting(c, end) {
            if !keep_charge {
                break;
            }
            if x.flags & VM_ACCOUNT != 0 {
                acct += (x.end.min(end) - x.start.max(start)) >> PAGE_SHIFT;
            }
            c = x.end;
        }
        if self.do_munmap(start, end).is_ok() {
            self.acct.committed += acct;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::testutil::*;

    #[test]
    fn x1_parameter_errors() {
        let mut s = space();
        let a = s.mmap(0, 0x2000, RW, PA, None, 0).unwrap();
        assert_eq!(s.mremap(a, 0x1000, 0x1000, 8, 0), Err(Errno::EINVAL));
        assert_eq!(s.mremap(a + 1, 0x1000, 0x1000, 0, 0), Err(Errno::EINVAL));
        assert_eq!(s.mremap(a, 0x1000, 0, 0, 0), Err(Errno::EINVAL));
        assert_eq!(
            s.mremap(a, 0x1000, 0x1000, MREMAP_FIXED, a + 0x10000),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mremap(
                a,
                0x1000,
                0x2000,
                MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
                a + 0x10000
            ),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mremap(a, 0x2000, 0x2000, MREMAP_MAYMOVE | MREMAP_FIXED, a + 0x1000),
            Err(Errno::EINVAL)
        );
        // X4: unmapped address.
        assert_eq!(s.mremap(0x10000, 0x1000, 0x2000, 0, 0), Err(Errno::EFAULT));
    }

    #[test]
    fn x6_grow_in_place_and_move_keeps_contents() {
        let mut s = space();
        let a = s
            .mmap(0x1000_0000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a, true, 5).unwrap();
        assert_eq!(s.mremap(a, 0x1000, 0x3000, 0, 0), Ok(a));
        assert_eq!(s.find_vma(a).unwrap().end, a + 0x3000);
        s.mmap(a + 0x3000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(s.mremap(a, 0x3000, 0x5000, 0, 0), Err(Errno::ENOMEM));
        let b = s.mremap(a, 0x3000, 0x5000, MREMAP_MAYMOVE, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.touch(b, false, 0), Ok(Some(5)));
        assert_eq!(
            s.touch(a, false, 0).unwrap_err().code,
            super::super::FaultCode::SegvMaperr
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn x7_dontunmap_leaves_empty_source() {
        let mut s = space();
        let a = s
            .mmap(0x1000_0000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a, true, 5).unwrap();
        let b = s
            .mremap(
                a,
                0x1000,
                0x1000,
                MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
                0x2000_0000,
            )
            .unwrap();
        assert_eq!(b, 0x2000_0000);
        assert_eq!(s.touch(a, false, 0), Ok(Some(0)));
        assert_eq!(s.touch(b, false, 0), Ok(Some(5)));
    }

    #[test]
    fn x7_whole_dontunmap_unlinks_source_anon_vma_g17() {
        let mut s = space();
        let a = s
            .mmap(0x1000_0000, 0x4000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a, true, 9).unwrap();
        let flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
        s.mremap(a, 0x4000, 0x4000, flags, 0x2000_0000).unwrap();
        let src = s.find_vma(a).unwrap();
        assert_eq!((src.start, src.end, src.anon_vma), (a, a + 0x4000, None));
        // Never written again: read-only drops VM_ACCOUNT and merges with a fresh r/o neighbour.
        s.mmap(a + 0x4000, 0x2000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mprotect(a + 0x2000, 0x2000, PROT_READ).unwrap();
        let v = s.find_vma(a + 0x3000).unwrap();
        assert_eq!((v.start, v.end), (a + 0x2000, a + 0x6000));
        // A partial DONTUNMAP keeps the source's anon_vma.
        let b = s
            .mmap(0x3000_0000, 0x4000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(b + 0x3000, true, 4).unwrap();
        s.mremap(b, 0x2000, 0x2000, flags, 0x4000_0000).unwrap();
        assert!(s.find_vma(b).unwrap().anon_vma.is_some());
        s.check_invariants().unwrap();
    }

    #[test]
    fn x5_duplicate_shared_leaves_source_whole() {
        let mut s = space();
        let a = s
            .mmap(0, 0x8000, RW, MAP_SHARED | MAP_ANONYMOUS, None, 0)
            .unwrap();
        s.touch(a + 0x5000, true, 55).unwrap();
        let d = s.mremap(a + 0x5000, 0, 0x2000, MREMAP_MAYMOVE, 0).unwrap();
        let src = s.find_vma(a + 0x5000).unwrap();
        assert_eq!((src.start, src.end), (a, a + 0x8000));
        assert_eq!(s.find_vma(d).unwrap().pgoff, 5);
        assert_eq!(s.touch(d, false, 0), Ok(Some(55)));
        s.check_invariants().unwrap();
    }

    #[test]
    fn x4_fixed_shrink_may_unmap_across_vmas() {
        // The shrunk-away tail may cross VMA boundaries; only the kept part must be in one VMA.
        let mut s = space();
        s.mmap(0x1000_0000, 0x2000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(0x1000_2000, 0x2000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        let got = s
            .mremap(
                0x1000_0000,
                0x4000,
                0x1000,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                0x2000_0000,
            )
            .unwrap();
        assert_eq!(got, 0x2000_0000);
        assert_eq!(s.map_count(), 1);
        assert_eq!(
            s.mremap(
                0x2000_0000,
                0x3000,
                0x2000,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                0x3000_0000
            ),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn x7_refused_move_unmaps_the_destination_and_keeps_the_source() {
        use crate::space::mmu::MmuEvent;
        use alloc::vec::Vec;
        let mut s = space();
        s.set_mmu_log(true);
        let a = s
            .mmap(0x1000_0000, 0x2000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(0x1000_2000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(0x5000_0000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a + 0x1000, true, 7).unwrap();
        let vmas: Vec<Vma> = s.vmas().cloned().collect();
        let acct = s.accounting().clone();
        let _ = s.take_mmu_events();
        // A FIXED move over the mapping at 0x5000_0000: the mover sees the destination's
        // unmapping first, then the move it is asked to make, and refuses it.
        let mut calls = Vec::new();
        let mut refuse = |ev: Vec<MmuEvent>, old: u64, new: u64, len: u64| {
            calls.push((ev, old, new, len));
            false
        };
        let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
        let r = s.mremap_moving(a, 0x2000, 0x2000, flags, 0x5000_0000, &mut refuse);
        assert_eq!(r, Err(Errno::ENOMEM));
        assert_eq!(calls.len(), 1);
        let (ev, old, new, len) = &calls[0];
        assert_eq!((*old, *new, *len), (a, 0x5000_0000, 0x2000));
        assert!(ev.contains(&MmuEvent::Zap {
            start: 0x5000_0000,
            end: 0x5000_1000
        }));
        // The destination's old mapping stays unmapped; the source is as it was.
        let now: Vec<Vma> = s.vmas().cloned().collect();
        assert_eq!(now[..], vmas[..2]);
        assert_eq!(s.touch(a + 0x1000, false, 0), Ok(Some(7)));
        assert!(!s
            .take_mmu_events()
            .iter()
            .any(|e| matches!(e, MmuEvent::Move { .. })));
        assert_eq!(s.accounting().total_vm, acct.total_vm - 1);
        assert_eq!(s.accounting().committed, acct.committed - 1);
        s.check_invariants().unwrap();
        // A growth that has to move keeps the growth's charge when refused (unmap_source_vma
        // clears VM_ACCOUNT on the destination); DONTUNMAP gives its charge back.
        let acct = s.accounting().clone();
        let r = s.mremap_moving(a, 0x2000, 0x4000, MREMAP_MAYMOVE, 0, &mut |_, _, _, _| {
            false
        });
        assert_eq!(r, Err(Errno::ENOMEM));
        assert_eq!(s.accounting().committed, acct.committed + 2);
        assert_eq!(s.accounting().total_vm, acct.total_vm);
        let acct = s.accounting().clone();
        let flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
        let r = s.mremap_moving(a, 0x2000, 0x2000, flags, 0x6000_0000, &mut |_, _, _, _| {
            false
        });
        assert_eq!(r, Err(Errno::ENOMEM));
        assert_eq!(s.accounting(), &acct);
        let now: Vec<Vma> = s.vmas().cloned().collect();
        assert_eq!(now[..], vmas[..2]);
        s.check_invariants().unwrap();
        // Accepted: the move happens and no `Move` is left for a backend to replay.
        let b = s
            .mremap_moving(
                a,
                0x2000,
                0x2000,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                0x7000_0000,
                &mut |_, _, _, _| true,
            )
            .unwrap();
        assert_eq!(s.touch(b + 0x1000, false, 0), Ok(Some(7)));
        assert!(!s.take_mmu_events().iter().any(|e| matches!(
            e,
            MmuEvent::Move { .. }
                | MmuEvent::Zap {
                    start: 0x7000_0000,
                    ..
                }
        )));
        s.check_invariants().unwrap();
    }

    #[test]
    fn x3_multi_vma_move_keeps_holes() {
        let mut s = space();
        s.mmap(0x1000_0000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(0x1000_2000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        let got = s
            .mremap(
                0x1000_0000,
                0x3000,
                0x3000,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                0x3000_0000,
            )
            .unwrap();
        assert_eq!(got, 0x3000_0000);
        assert!(s.find_vma(0x3000_0000).is_some());
        assert!(s.find_vma(0x3000_1000).is_none());
        assert!(s.find_vma(0x3000_2000).is_some());
        assert!(s.find_vma(0x1000_0000).is_none());
        s.check_invariants().unwrap();
    }
}
