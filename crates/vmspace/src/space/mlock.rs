//! mlock, mlock2(MLOCK_ONFAULT), munlock: RLIMIT_MEMLOCK, VM_LOCKED/VM_LOCKONFAULT with
//! merge-or-split, holes give ENOMEM, locking populates (assigning anon_vmas, G8).

use super::abi::*;
use super::vma::flags::*;
use super::{AddressSpace, Errno};

impl AddressSpace {
    /// mlock (flags 0) or mlock2 (flags may hold MLOCK_ONFAULT).
    pub fn mlock(&mut self, start: u64, len: u64, flags: u64) -> Result<(), Errno> {
        if flags & !MLOCK_ONFAULT != 0 {
            return Err(Errno::EINVAL);
        }
        let vmf = if flags & MLOCK_ONFAULT != 0 {
            VM_LOCKED | VM_LOCKONFAULT
        } else {
            VM_LOCKED
        };
        if !self.can_do_mlock() {
            return Err(Errno::EPERM);
        }
        let len = page_align_wrapping(len.wrapping_add(start & 0xfff));
        let start = start & !0xfff;
        let limit = if self.cfg.rlimit_memlock == u64::MAX {
            u64::MAX
        } else {
            self.cfg.rlimit_memlock >> 12
        };
        let mut locked = (len >> 12).saturating_add(self.acct.locked_vm);
        if locked > limit && !self.cfg.cap_ipc_lock {
            locked = locked.saturating_sub(self.count_locked(start, len));
        }
        if locked > limit && !self.cfg.cap_ipc_lock {
            return Err(Errno::ENOMEM);
        }
        self.apply_vma_lock_flags(start, len, vmf)?;
        // __mm_populate runs for mlock2(MLOCK_ONFAULT) too; it skips VM_LOCKONFAULT VMAs but
        // not the ones mlock leaves unlocked (hugetlb, special).
        {
            let end = start.wrapping_add(len);
            if end > start {
                // __mlock_posix_error_return: EFAULT -> ENOMEM, ENOMEM -> EAGAIN.
                match self.populate(start, end) {
                    Err(Errno::EFAULT) => return Err(Errno::ENOMEM),
                    Err(Errno::ENOMEM) => return Err(Errno::EAGAIN),
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
            }
        }
        Ok(())
    }

    /// munlock.
    pub fn munlock(&mut self, start: u64, len: u64) -> Result<(), Errno> {
        let len = page_align_wrapping(len.wrapping_add(start & 0xfff));
        let start = start & !0xfff;
        self.apply_vma_lock_flags(start, len, 0)
    }

    fn count_locked(&self, start: u64, len: u64) -> u64 {
        let end = start.saturating_add(len);
        let mut n = 0;
        let mut c = start;
        while let Some(v) = self.tree.intersecting(c, end) {
            if v.flags & VM_LOCKED != 0 {
                n += (v.end.min(end) - v.start.max(start)) >> 12;
            }
            c = v.end;
        }
        n
    }

    fn apply_vma_lock_flags(&mut self, start: u64, len: u64, lf: u64) -> Result<(), Errno> {
        let end = start.wrapping_add(len);
        if end < start {
            return Err(Errno::EINVAL);
        }
        if end == start {
            return Ok(());
        }
        let first = self.tree.containing(start).cloned().ok_or(Errno::ENOMEM)?;
        let mut tmp = first.start;
        let mut nstart = start;
        let mut cursor = start;
        while let Some(v) = self.tree.intersecting(cursor, end).cloned() {
            if v.start != tmp {
                return Err(Errno::ENOMEM);
            }
            let newflags = (v.flags & !VM_LOCKED_MASK) | lf;
            tmp = v.end.min(end);
            let cur = self.mlock_fixup(&v, nstart, tmp, newflags)?;
            tmp = self.tree.containing(cur).map_or(tmp, |x| x.end.min(end));
            nstart = tmp;
            cursor = tmp;
            if tmp >= end {
                break;
            }
        }
        if tmp < end {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    fn mlock_fixup(&mut self, v: &super::Vma, s: u64, e: u64, newflags: u64) -> Result<u64, Errno> {
        let old = v.flags;
        if newflags == old
            || v.flags & VM_SPECIAL != 0
            || v.flags & (VM_HUGETLB | VM_DROPPABLE) != 0
        {
            return Ok(v.start);
        }
        let cur = self.modify_flags(v.start, s, e, newflags)?;
        let pages = (e - s) >> 12;
        if newflags & VM_LOCKED == 0 {
            self.acct.locked_vm = self.acct.locked_vm.saturating_sub(pages);
        } else if old & VM_LOCKED == 0 {
            self.acct.locked_vm += pages;
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SpaceConfig, TaskKind};
    use super::*;

    #[test]
    fn mlock_splits_counts_and_rejects_bad_flags() {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
        let a = s
            .mmap(
                0x1000_0000,
                0x3000,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                None,
                0,
            )
            .unwrap();
        assert_eq!(s.mlock(a, 0x1000, 2), Err(Errno::EINVAL));
        s.mlock(a + 0x1000, 0x1000, MLOCK_ONFAULT).unwrap();
        assert_eq!(s.map_count(), 3);
        assert_eq!(s.accounting().locked_vm, 1);
        s.munlock(a, 0x3000).unwrap();
        assert_eq!(s.map_count(), 1);
        assert_eq!(s.accounting().locked_vm, 0);
        assert_eq!(s.mlock(a + 0x3000, 0x1000, 0), Err(Errno::ENOMEM));
    }

    #[test]
    fn memlock_limit_without_cap() {
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.cap_ipc_lock = false;
        c.rlimit_memlock = 0x1000;
        let mut s = AddressSpace::new(c);
        let a = s
            .mmap(
                0x1000_0000,
                0x3000,
                PROT_READ,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                None,
                0,
            )
            .unwrap();
        assert_eq!(s.mlock(a, 0x2000, 0), Err(Errno::ENOMEM));
        assert_eq!(s.mlock(a, 0x1000, 0), Ok(()));
    }
}
