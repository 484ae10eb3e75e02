//! munmap (U1–U5): holes are fine, edges split, sealed VMAs refuse, the break is untouched.

use super::abi::*;
use super::{AddressSpace, Errno};

impl AddressSpace {
    /// munmap(addr, len).
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        let ts = self.layout.task_size;
        // U1.
        if !is_page_aligned(addr) || addr > ts || len > ts - addr {
            return Err(Errno::EINVAL);
        }
        let end = addr + page_align_wrapping(len);
        if end == addr {
            return Err(Errno::EINVAL);
        }
        self.do_munmap(addr, end)
    }

    /// do_vmi_align_munmap over a validated, page-aligned range (U2–U4).
    pub(crate) fn do_munmap(&mut self, start: u64, end: u64) -> Result<(), Errno> {
        let gathered = self.gather_munmap(start, end)?;
        self.remove_vmas(&gathered);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{abi::*, SpaceConfig, TaskKind};
    use super::*;
    use crate::space::testutil::*;

    #[test]
    fn u1_argument_errors() {
        let mut s = space();
        assert_eq!(s.munmap(0x10001, 4096), Err(Errno::EINVAL));
        assert_eq!(s.munmap(0x10000, 0), Err(Errno::EINVAL));
        assert_eq!(s.munmap(0x7fff_ffff_f000 + 4096, 4096), Err(Errno::EINVAL));
        assert_eq!(s.munmap(0x10000, u64::MAX), Err(Errno::EINVAL));
        // U2: nothing mapped is fine.
        assert_eq!(s.munmap(0x10000, 4096), Ok(()));
    }

    #[test]
    fn u3_hole_punch_splits_in_three_and_respects_map_count() {
        let mut s = space();
        let a = s.mmap(0, 3 * 4096, RW, PA, None, 0).unwrap();
        s.munmap(a + 4096, 4096).unwrap();
        let v: alloc::vec::Vec<_> = s.vmas().map(|v| (v.start, v.end)).collect();
        assert_eq!(v, [(a, a + 4096), (a + 8192, a + 12288)]);
        s.check_invariants().unwrap();

        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.max_map_count = 1;
        let mut s = AddressSpace::new(c);
        let a = s.mmap(0, 3 * 4096, RW, PA, None, 0).unwrap();
        assert_eq!(s.munmap(a + 4096, 4096), Err(Errno::ENOMEM));
        assert_eq!(s.map_count(), 1);
        // Trimming an edge needs no extra slot.
        assert_eq!(s.munmap(a, 4096), Ok(()));
    }

    #[test]
    fn u2_munmap_across_holes_removes_everything_inside() {
        let mut s = space();
        let a = s
            .mmap(0x1000_0000, 4096, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        let b = s
            .mmap(0x1000_3000, 4096, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!((a, b), (0x1000_0000, 0x1000_3000));
        s.munmap(0x0fff_0000, 0x10_0000).unwrap();
        assert_eq!(s.map_count(), 0);
        assert_eq!(s.accounting().total_vm, 0);
        s.check_invariants().unwrap();
    }
}
