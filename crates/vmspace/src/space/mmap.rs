//! mmap (2.1, P1–P15, G11): argument checks in Linux's order, placement, replacing what a
//! MAP_FIXED range covers, accounting, merging with neighbours, MAP_POPULATE/MAP_LOCKED.

use super::abi::*;
use super::merge::Proposal;
use super::vma::{flags::*, Backing, Vma};
use super::{AddressSpace, Errno, FileRef, HUGETLB_FILE_BIT, SHMEM_OBJ_BIT};

/// MAX_LFS_FILESIZE.
const MAX_LFS_FILESIZE: u64 = i64::MAX as u64;

impl AddressSpace {
    /// mmap(addr, len, prot, flags, fd, offset). `file` is the open file for non-anonymous
    /// mappings (`None` there means a bad fd: EBADF). Returns the mapped address.
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        file: Option<FileRef>,
        offset: u64,
    ) -> Result<u64, Errno> {
        // sys_mmap (2.1 step 1).
        if !is_page_aligned(offset) {
            return Err(Errno::EINVAL);
        }
        let pgoff = offset >> PAGE_SHIFT;
        let file = if flags & MAP_ANONYMOUS != 0 {
            None
        } else {
            match file {
                Some(f) => Some(f),
                None => return Err(Errno::EBADF),
            }
        };
        if flags & MAP_HUGETLB != 0 {
            if file.is_some() {
                return Err(Errno::EINVAL);
            }
            // ksys_mmap_pgoff: an anonymous hugetlbfs file of the requested huge page size
            // (MAP_HUGE_SHIFT bits; default 2 MiB), length rounded up to it.
            let hsize: u64 = match (flags >> 26) & 0x3f {
                0 | 21 => 2 << 20,
                30 => 1 << 30,
                _ => return Err(Errno::EINVAL),
            };
            let len = len.wrapping_add(hsize - 1) & !(hsize - 1);
            let id = HUGETLB_FILE_BIT | self.new_id();
            let f = FileRef {
                id,
                size: len,
                name: alloc::string::String::from("/anon_hugepage (deleted)"),
                dev: (0, if hsize == 1 << 30 { 0x12 } else { 0x11 }),
                inode: id & 0xffff_ffff,
                writable: true,
                shmem: false,
            };
            self.hugetlb.insert(id, hsize);
            return self.do_mmap(Some(f), addr, len, prot, flags, pgoff);
        }
        self.do_mmap(file, addr, len, prot, flags, pgoff)
    }

    fn do_mmap(
        &mut self,
        file: Option<FileRef>,
        addr: u64,
        len: u64,
        mut prot: u64,
        mut flags: u64,
        mut pgoff: u64,
    ) -> Result<u64, Errno> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        if prot & PROT_READ != 0 && self.cfg.read_implies_exec {
            prot |= PROT_EXEC;
        }
        if flags & MAP_FIXED_NOREPLACE != 0 {
            flags |= MAP_FIXED;
        }
        let mut addr = addr;
        if flags & MAP_FIXED == 0 {
            // round_hint_to_min (2.1 step 5).
            addr &= !(PAGE_SIZE - 1);
            if addr != 0 && addr < self.min_addr() {
                addr = page_align(self.min_addr()).unwrap_or(0);
            }
        }
        let len = match page_align(len) {
            Some(l) if l != 0 => l,
            _ => return Err(Errno::ENOMEM),
        };
        if pgoff.checked_add(len >> PAGE_SHIFT).is_none() {
            return Err(Errno::EOVERFLOW);
        }
        // M-count (2.8): strictly greater.
        if self.map_count() > self.max_map_count() {
            return Err(Errno::ENOMEM);
        }
        let mut vm_flags = (prot & (PROT_READ | PROT_WRITE | PROT_EXEC))
            | if flags & MAP_GROWSDOWN != 0 {
                VM_GROWSDOWN
            } else {
                0
            }
            | if flags & MAP_LOCKED != 0 {
                VM_LOCKED
            } else {
                0
            }
            | if flags & MAP_SYNC != 0 { VM_SYNC } else { 0 }
            | if flags & MAP_STACK != 0 && self.cfg.thp {
                VM_NOHUGEPAGE
            } else {
                0
            }
            | VM_MAYREAD
            | VM_MAYWRITE
            | VM_MAYEXEC;
        let addr = self.get_unmapped_area(file.as_ref(), addr, len, pgoff, flags)?;
        if flags & MAP_FIXED_NOREPLACE != 0 && self.tree.intersecting(addr, addr + len).is_some() {
            return Err(Errno::EEXIST);
        }
        if flags & MAP_LOCKED != 0 && !self.can_do_mlock() {
            return Err(Errno::EPERM);
        }
        if !self.mlock_future_ok(vm_flags, len) {
            return Err(Errno::EAGAIN);
        }
        match &file {
            Some(f) => {
                let max = MAX_LFS_FILESIZE - len;
                if pgoff > max >> PAGE_SHIFT {
                    return Err(Errno::EOVERFLOW);
                }
                let mut ty = flags & MAP_TYPE;
                if ty == MAP_SHARED {
                    flags &= LEGACY_MAP_MASK;
                    ty = MAP_SHARED_VALIDATE;
                }
                match ty {
                    MAP_SHARED_VALIDATE => {
                        if flags & !LEGACY_MAP_MASK != 0 {
                            return Err(Errno::EOPNOTSUPP);
                        }
                        if prot & PROT_WRITE != 0 && !f.writable {
                            return Err(Errno::EACCES);
                        }
                        vm_flags |= VM_SHARED | VM_MAYSHARE;
                        if !f.writable {
                            vm_flags &= !(VM_MAYWRITE | VM_SHARED);
                        }
                    }
                    MAP_PRIVATE => {}
                    _ => return Err(Errno::EINVAL),
                }
                if vm_flags & VM_GROWSDOWN != 0 {
                    return Err(Errno::EINVAL);
                }
            }
            None => match flags & MAP_TYPE {
                MAP_SHARED => {
                    if vm_flags & VM_GROWSDOWN != 0 {
                        return Err(Errno::EINVAL);
                    }
                    pgoff = 0;
                    vm_flags |= VM_SHARED | VM_MAYSHARE;
                }
                MAP_DROPPABLE => {
                    if flags & MAP_LOCKED != 0 || vm_flags & VM_GROWSDOWN != 0 {
                        return Err(Errno::EINVAL);
                    }
                    vm_flags |= VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK | VM_DONTDUMP;
                    pgoff = addr >> PAGE_SHIFT;
                }
                MAP_PRIVATE => pgoff = addr >> PAGE_SHIFT,
                _ => return Err(Errno::EINVAL),
            },
        }
        let hugetlb = file
            .as_ref()
            .is_some_and(|f| self.hugetlb.contains_key(&f.id));
        // hugetlbfs always honours MAP_NORESERVE (strict reservation otherwise).
        if flags & MAP_NORESERVE != 0 && (self.cfg.overcommit_memory != 2 || hugetlb) {
            vm_flags |= VM_NORESERVE;
        }
        if hugetlb {
            vm_flags |= VM_HUGETLB | VM_DONTEXPAND;
        }
        let populate =
            vm_flags & VM_LOCKED != 0 || flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE;
        let start = self.mmap_region(file, addr, len, vm_flags, pgoff)?;
        if populate {
            // mm_populate ignores errors.
            let _ = self.populate(addr, addr + len);
        }
        Ok(start)
    }

    /// mmap_region / __mmap_region: replaces whatever `[addr, addr+len)` covers (P5), checks
    /// RLIMIT_AS/RLIMIT_DATA and the commit charge (2.1 step 15), then merges or inserts.
    pub(crate) fn mmap_region(
        &mut self,
        file: Option<FileRef>,
        addr: u64,
        len: u64,
        mut vm_flags: u64,
        pgoff: u64,
    ) -> Result<u64, Errno> {
        let end = addr + len;
        let pglen = len >> PAGE_SHIFT;
        let gathered = self.gather_munmap(addr, end)?;
        let (mut nr_pages, mut nr_accounted) = (0u64, 0u64);
        for s in &gathered {
            if let Some(v) = self.tree.containing(*s) {
                nr_pages += v.pages();
                if v.flags & VM_ACCOUNT != 0 {
                    nr_accounted += v.pages();
                }
            }
        }
        if !self.may_expand_vm(vm_flags, pglen - nr_pages.min(pglen)) {
            return Err(Errno::ENOMEM);
        }
        if vm_flags & VM_HUGETLB != 0 && vm_flags & VM_NORESERVE == 0 {
            // hugetlbfs_file_mmap cannot reserve huge pages (none on the reference). The
            // replaced range stays unmapped, as Linux leaves a gap on this late failure.
            self.remove_vmas(&gathered);
            return Err(Errno::ENOMEM);
        }
        let mut transferred = false;
        if vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE | VM_HUGETLB) == VM_WRITE {
            let charged = pglen.saturating_sub(nr_accounted);
            if charged > 0 && !self.vm_enough_memory(charged) {
                return Err(Errno::ENOMEM);
            }
            transferred = true;
            vm_flags |= VM_ACCOUNT;
        }
        if transferred {
            // The replaced VMAs' charge now belongs to the new mapping (nr_accounted = 0).
            for s in &gathered {
                self.tree.update(*s, |v| v.flags &= !VM_ACCOUNT);
            }
        }
        self.remove_vmas(&gathered);
        let backing = match &file {
            Some(f) => {
                self.files.insert(f.id, f.clone());
                Backing::File { id: f.id }
            }
            None if vm_flags & VM_SHARED != 0 => {
                let obj = SHMEM_OBJ_BIT | self.new_id();
                self.shmem_size.insert(obj, len);
                Backing::Shmem { obj }
            }
            None => Backing::Anon,
        };
        if vm_flags & VM_LOCKED != 0 && vm_flags & VM_SPECIAL != 0 {
            vm_flags &= !VM_LOCKED_MASK;
        }
        let make = Vma {
            start: addr,
            end,
            flags: vm_flags | VM_SOFTDIRTY,
            pgoff,
            backing: backing.clone(),
            anon_vma: None,
            forked: false,
        };
        let p = Proposal {
            start: addr,
            end,
            flags: vm_flags,
            pgoff,
            backing: &backing,
            anon: None,
            forked: false,
        };
        self.place_new_range(&p, false, make);
        self.acct_map(vm_flags, pglen);
        Ok(addr)
    }

    /// vms_gather_munmap_vmas: splits the VMAs at the edges of `[start, end)` and returns the
    /// starts of the VMAs inside. Errors (U3 map-count, U4 sealed/special) leave any split
    /// already made in place, as Linux does.
    pub(crate) fn gather_munmap(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<alloc::vec::Vec<u64>, Errno> {
        let mut out = alloc::vec::Vec::new();
        let first = match self.tree.intersecting(start, end) {
            Some(v) => v.clone(),
            None => return Ok(out),
        };
        if start > first.start {
            if end < first.end && self.map_count() >= self.max_map_count() {
                return Err(Errno::ENOMEM);
            }
            if first.sealed() {
                return Err(Errno::EPERM);
            }
            self.split_vma(first.start, start)?;
        }
        let mut next = if start > first.start {
            self.tree.intersecting(start, end).cloned()
        } else {
            Some(first)
        };
        while let Some(v) = next.take() {
            if v.sealed() {
                return Err(Errno::EPERM);
            }
            if v.end > end {
                self.split_vma(v.start, end)?;
            }
            out.push(v.start);
            let cursor = v.end.min(end);
            if cursor >= end {
                break;
            }
            next = self.tree.intersecting(cursor, end).cloned();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SpaceConfig, TaskKind};
    use super::*;
    use crate::space::testutil::*;

    #[test]
    fn step_order_of_argument_errors() {
        let mut s = space();
        // 2.1 steps 1, 2, 6, 13.
        assert_eq!(s.mmap(0, 0, RW, PA, None, 1), Err(Errno::EINVAL));
        assert_eq!(
            s.mmap(0, 0x1000, RW, MAP_PRIVATE, None, 0),
            Err(Errno::EBADF)
        );
        assert_eq!(s.mmap(0, 0, RW, PA, None, 0), Err(Errno::EINVAL));
        assert_eq!(s.mmap(0, u64::MAX, RW, PA, None, 0), Err(Errno::ENOMEM));
        assert_eq!(
            s.mmap(0, 0x1000, RW, MAP_ANONYMOUS, None, 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mmap(0, 0x1000, RW, MAP_ANONYMOUS | MAP_SHARED_VALIDATE, None, 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mmap(
                0,
                0x1000,
                RW,
                MAP_ANONYMOUS | MAP_SHARED | MAP_GROWSDOWN,
                None,
                0
            ),
            Err(Errno::EINVAL)
        );
        // Step 10: unaligned MAP_FIXED; beyond TASK_SIZE.
        assert_eq!(
            s.mmap(0x10001, 0x1000, RW, PA | MAP_FIXED, None, 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mmap(0x7fff_ffff_f000, 0x1000, RW, PA | MAP_FIXED, None, 0),
            Err(Errno::ENOMEM)
        );
        // Step 11.
        let a = s
            .mmap(0x2000_0000, 0x2000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(
            s.mmap(a + 0x1000, 0x2000, RW, PA | MAP_FIXED_NOREPLACE, None, 0),
            Err(Errno::EEXIST)
        );
    }

    #[test]
    fn m_count_mmap_allows_one_past_the_limit() {
        // 2.8 M-count (checked on 6.18.44: three non-merging mmaps succeed from 65530 VMAs).
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.max_map_count = 3;
        let mut s = AddressSpace::new(c);
        for i in 0..4u64 {
            let p = if i % 2 == 0 { PROT_READ } else { RW };
            s.mmap(0x2000_0000 + i * 0x2000, 0x1000, p, PA | MAP_FIXED, None, 0)
                .unwrap();
        }
        assert_eq!(s.map_count(), 4);
        assert_eq!(
            s.mmap(0x3000_0000, 0x1000, RW, PA | MAP_FIXED, None, 0),
            Err(Errno::ENOMEM)
        );
    }

    #[test]
    fn g11_fixed_over_middle_remerges() {
        let mut s = space();
        let a = s
            .mmap(0x2000_0000, 0x3000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a + 0x1000, true, 3).unwrap();
        s.mmap(a + 0x1000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(s.map_count(), 1);
        assert_eq!(s.touch(a + 0x1000, false, 0), Ok(Some(0)));
        s.check_invariants().unwrap();
    }

    #[test]
    fn l13_heap_label_needs_strict_overlap() {
        // A .bss VMA ending exactly at start_brk is not [heap] (vma_is_initial_heap).
        let mut s = space();
        s.set_brk(0x60_0000, 0x60_0000);
        s.mmap(0x5f_0000, 0x1_0000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert!(!s.render_maps().contains("[heap]"));
        s.brk(0x60_1000);
        assert_eq!(s.render_maps().matches("[heap]").count(), 1);
    }

    #[test]
    fn hugetlb_without_pages() {
        // Observed on Linux 6.18 with nr_hugepages = 0: only MAP_NORESERVE mappings succeed,
        // 2 MiB aligned and rounded; touching them raises SIGBUS; splits must be aligned.
        let mut s = space();
        let h = MAP_HUGETLB | PA;
        assert_eq!(s.mmap(0, 0x1000, RW, h, None, 0), Err(Errno::ENOMEM));
        let a = s.mmap(0, 0x1000, RW, h | MAP_NORESERVE, None, 0).unwrap();
        assert_eq!(a % (2 << 20), 0);
        assert_eq!(s.find_vma(a).unwrap().len(), 2 << 20);
        assert_eq!(
            s.mmap(
                0x2000_1000,
                0x1000,
                RW,
                h | MAP_NORESERVE | MAP_FIXED,
                None,
                0
            ),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.touch(a, false, 0).unwrap_err().signal,
            super::super::Signal::Bus
        );
        assert_eq!(s.munmap(a, 0x1000), Err(Errno::EINVAL));
        assert_eq!(s.mprotect(a, 0x1000, PROT_READ), Err(Errno::EINVAL));
        assert_eq!(
            s.mremap(a, 2 << 20, 4 << 20, MREMAP_MAYMOVE, 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(s.mlock(a, 2 << 20, 0), Err(Errno::ENOMEM));
        assert!(s.render_maps().contains("/anon_hugepage (deleted)"));
        assert_eq!(
            s.mmap(0, 0x1000, RW, h | MAP_NORESERVE | (5 << 26), None, 0),
            Err(Errno::EINVAL)
        );
    }
}
