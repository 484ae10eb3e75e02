//! mprotect (R1–R5, G12, G16, G17): per-VMA walk with merge-or-split, no rollback.

use super::abi::*;
use super::vma::flags::*;
use super::{AddressSpace, Errno};

impl AddressSpace {
    /// mprotect(addr, len, prot).
    pub fn mprotect(&mut self, start: u64, len: u64, prot: u64) -> Result<(), Errno> {
        let grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP);
        let mut prot = prot & !(PROT_GROWSDOWN | PROT_GROWSUP);
        // R1.
        if grows == PROT_GROWSDOWN | PROT_GROWSUP {
            return Err(Errno::EINVAL);
        }
        if !is_page_aligned(start) {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let end = start.wrapping_add(page_align_wrapping(len));
        if end <= start {
            return Err(Errno::ENOMEM);
        }
        if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM) != 0 {
            return Err(Errno::EINVAL);
        }
        let reqprot = prot;
        let rier = self.cfg.read_implies_exec && prot & PROT_READ != 0;
        // R2.
        let first = match self.tree.intersecting(start, end) {
            Some(v) => v.clone(),
            None => return Err(Errno::ENOMEM),
        };
        let mut start = start;
        if grows & PROT_GROWSDOWN != 0 {
            if first.start >= end {
                return Err(Errno::ENOMEM);
            }
            start = first.start;
            if first.flags & VM_GROWSDOWN == 0 {
                return Err(Errno::EINVAL);
            }
        } else {
            if first.start > start {
                return Err(Errno::ENOMEM);
            }
            if grows & PROT_GROWSUP != 0 {
                return Err(Errno::EINVAL);
            }
        }
        // R3/R4: walk.
        let mut nstart = start;
        let mut tmp = first.start;
        let mut cursor = start;
        while let Some(v) = self.tree.intersecting(cursor, end) {
            let v = v.clone();
            if v.start != tmp {
                return Err(Errno::ENOMEM);
            }
            if rier && v.flags & VM_MAYEXEC != 0 {
                prot |= PROT_EXEC;
            }
            let newflags = (prot & VM_ACCESS_FLAGS) | (v.flags & !VM_ACCESS_FLAGS);
            if (newflags & !(newflags >> 4)) & VM_ACCESS_FLAGS != 0 {
                return Err(Errno::EACCES);
            }
            tmp = v.end.min(end);
            let cur = self.mprotect_fixup(&v, nstart, tmp, newflags)?;
            tmp = self
                .tree
                .containing(cur)
                .map(|x| x.end.min(end))
                .unwrap_or(tmp);
            nstart = tmp;
            cursor = tmp;
            prot = reqprot;
            if tmp >= end {
                break;
            }
        }
        if tmp < end {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// mprotect_fixup: sealed check, VM_ACCOUNT charging on becoming writable (G16) and
    /// release on becoming read-only while never written (G17), then merge-or-split.
    /// Returns the start of the VMA now holding `[start, end)`.
    fn mprotect_fixup(
        &mut self,
        v: &super::Vma,
        start: u64,
        end: u64,
        mut newflags: u64,
    ) -> Result<u64, Errno> {
        if v.sealed() {
            return Err(Errno::EPERM);
        }
        let oldflags = v.flags;
        if newflags == oldflags {
            return Ok(v.start);
        }
        let nrpages = (end - start) >> PAGE_SHIFT;
        let mut charged = 0;
        if newflags & VM_WRITE != 0 {
            if !self.may_expand_vm(newflags, nrpages) && self.may_expand_vm(oldflags, nrpages) {
                return Err(Errno::ENOMEM);
            }
            if oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE) == 0 {
                if !self.vm_enough_memory(nrpages) {
                    return Err(Errno::ENOMEM);
                }
                charged = nrpages;
                newflags |= VM_ACCOUNT;
            }
        } else if oldflags & VM_ACCOUNT != 0 && v.is_anonymous() && v.anon_vma.is_none() {
            newflags &= !VM_ACCOUNT;
        }
        let cur = match self.modify_flags(v.start, start, end, newflags) {
            Ok(c) => c,
            Err(e) => {
                self.vm_unacct(charged);
                return Err(e);
            }
        };
        if oldflags & VM_ACCOUNT != 0 && newflags & VM_ACCOUNT == 0 {
            self.vm_unacct(nrpages);
        }
        self.vm_stat_account(oldflags, nrpages, true);
        self.vm_stat_account(newflags, nrpages, false);
        if oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED) == VM_LOCKED && newflags & VM_WRITE != 0 {
            let _ = self.populate(start, end);
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::super::abi::*;
    use super::*;
    use crate::space::testutil::*;

    fn layout(s: &AddressSpace) -> alloc::vec::Vec<(u64, u64, [u8; 4])> {
        s.vmas().map(|v| (v.start, v.end, v.perms())).collect()
    }

    #[test]
    fn r1_argument_errors() {
        let mut s = space();
        let a = s.mmap(0, 4096, RW, PA, None, 0).unwrap();
        assert_eq!(
            s.mprotect(a, 4096, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP),
            Err(Errno::EINVAL)
        );
        assert_eq!(s.mprotect(a + 1, 4096, PROT_READ), Err(Errno::EINVAL));
        assert_eq!(s.mprotect(a + 1, 0, PROT_READ), Err(Errno::EINVAL));
        assert_eq!(s.mprotect(a, 0, 0x1000), Ok(()));
        assert_eq!(s.mprotect(a, u64::MAX, PROT_READ), Err(Errno::ENOMEM));
        assert_eq!(s.mprotect(a, 4096, 0x10), Err(Errno::EINVAL));
    }

    #[test]
    fn r2_r4_hole_gives_enomem_after_changing_earlier_vmas() {
        let mut s = space();
        s.mmap(0x1000_0000, 0x2000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(0x1000_3000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(
            s.mprotect(0x1000_1000, 0x3000, PROT_READ),
            Err(Errno::ENOMEM)
        );
        assert_eq!(
            layout(&s),
            [
                (0x1000_0000, 0x1000_1000, *b"rw-p"),
                (0x1000_1000, 0x1000_2000, *b"r--p"),
                (0x1000_3000, 0x1000_4000, *b"rw-p")
            ]
        );
        // Hole at the start: nothing changes.
        assert_eq!(
            s.mprotect(0x0fff_f000, 0x2000, PROT_NONE),
            Err(Errno::ENOMEM)
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn g12_middle_splits_in_three_and_merges_back() {
        let mut s = space();
        let a = s.mmap(0, 0x3000, RW, PA, None, 0).unwrap();
        s.mprotect(a + 0x1000, 0x1000, PROT_READ).unwrap();
        assert_eq!(s.map_count(), 3);
        s.mprotect(a + 0x1000, 0x1000, RW).unwrap();
        assert_eq!(s.map_count(), 1);
        s.check_invariants().unwrap();
        s.check_merged().unwrap();
    }

    #[test]
    fn g18c_g18d_vm_account_decides_merge() {
        // (d): B unfaulted, mprotect(B, READ) drops VM_ACCOUNT -> merges with fresh PROT_READ A.
        let mut s = space();
        let a = s
            .mmap(0x2000_0000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(a + 0x1000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(s.map_count(), 2);
        s.mprotect(a + 0x1000, 0x1000, PROT_READ).unwrap();
        assert_eq!(s.map_count(), 1);
        // (c): B written first keeps VM_ACCOUNT -> two VMAs.
        let mut s = space();
        s.mmap(a, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(a + 0x1000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a + 0x1000, true, 1).unwrap();
        s.mprotect(a + 0x1000, 0x1000, PROT_READ).unwrap();
        assert_eq!(s.map_count(), 2);
    }

    #[test]
    fn r3_eacces_without_may_bit() {
        let mut s = space();
        let f = super::super::FileRef {
            id: 7,
            size: 0x10000,
            name: "/f".into(),
            dev: (0, 1),
            inode: 5,
            writable: false,
            shmem: true,
        };
        let a = s
            .mmap(0, 0x1000, PROT_READ, MAP_SHARED, Some(f), 0)
            .unwrap();
        assert_eq!(s.mprotect(a, 0x1000, RW), Err(Errno::EACCES));
    }
}
