//! mseal (Linux ≥ 6.10): seals VMAs against munmap, mremap, mprotect, MAP_FIXED over them and
//! discarding madvise on read-only anonymous memory (U4).

use super::abi::*;
use super::vma::flags::*;
use super::{AddressSpace, Errno};

impl AddressSpace {
    /// mseal(addr, len, 0).
    pub fn mseal(&mut self, start: u64, len: u64) -> Result<(), Errno> {
        if !is_page_aligned(start) {
            return Err(Errno::EINVAL);
        }
        let len = match page_align(len) {
            Some(l) => l,
            None => return Err(Errno::EINVAL),
        };
        let end = match start.checked_add(len) {
            Some(e) => e,
            None => return Err(Errno::EINVAL),
        };
        if end == start {
            return Ok(());
        }
        // The whole range must be mapped (no holes).
        let mut c = start;
        while c < end {
            match self.tree.containing(c) {
                Some(v) => c = v.end,
                None => return Err(Errno::ENOMEM),
            }
        }
        let mut c = start;
        while c < end {
            let v = match self.tree.containing(c) {
                Some(v) => v.clone(),
                None => return Err(Errno::ENOMEM),
            };
            let e = v.end.min(end);
            if !v.sealed() {
                let cur = self.modify_flags(v.start, c, e, v.flags | VM_SEALED)?;
                c = self
                    .tree
                    .containing(cur)
                    .map_or(e, |x| x.end.min(end))
                    .max(e);
            } else {
                c = e;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SpaceConfig, TaskKind};
    use super::*;

    #[test]
    fn u4_sealed_refuses_changes() {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
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
        s.mseal(a + 0x1000, 0x1000).unwrap();
        assert_eq!(s.map_count(), 3);
        assert_eq!(s.munmap(a + 0x1000, 0x1000), Err(Errno::EPERM));
        assert_eq!(s.mprotect(a + 0x1000, 0x1000, PROT_NONE), Err(Errno::EPERM));
        assert_eq!(
            s.mremap(a + 0x1000, 0x1000, 0x2000, MREMAP_MAYMOVE, 0),
            Err(Errno::EPERM)
        );
        assert_eq!(
            s.madvise(a + 0x1000, 0x1000, MADV_DONTNEED),
            Err(Errno::EPERM)
        );
        assert_eq!(s.mseal(a + 0x3000, 0x1000), Err(Errno::ENOMEM));
        s.check_invariants().unwrap();
    }
}
