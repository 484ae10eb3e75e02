//! brk (B1–B8): grow by extending the VMA ending at the old break or creating one, shrink by
//! unmapping; every failure returns the old break.

use super::abi::*;
use super::merge::Proposal;
use super::vma::{flags::*, Backing, Vma};
use super::AddressSpace;

impl AddressSpace {
    /// brk(target): the new break on success, the old one on any failure (B7).
    pub fn brk(&mut self, target: u64) -> u64 {
        let origbrk = self.brk;
        match self.do_brk(target) {
            Some(()) => target,
            None => {
                self.brk = origbrk;
                origbrk
            }
        }
    }

    fn do_brk(&mut self, brk: u64) -> Option<()> {
        // B1 (CONFIG_COMPAT_BRK is off on the reference: min_brk = start_brk).
        if brk < self.start_brk {
            return None;
        }
        // B2.
        if self.cfg.rlimit_data != u64::MAX
            && (brk.wrapping_sub(self.start_brk))
                .wrapping_add(self.end_data.wrapping_sub(self.start_data))
                > self.cfg.rlimit_data
        {
            return None;
        }
        let newbrk = page_align_wrapping(brk);
        let oldbrk = page_align_wrapping(self.brk);
        // B3.
        if oldbrk == newbrk {
            self.brk = brk;
            return Some(());
        }
        // B4: shrink.
        if brk <= self.brk {
            let v = self.tree.intersecting(newbrk, oldbrk)?;
            if v.start >= oldbrk {
                return None;
            }
            self.brk = brk;
            return self.do_munmap(newbrk, oldbrk).ok();
        }
        // B5 (a): check_brk_limits -> get_unmapped_area(MAP_FIXED) and the mlock limit.
        let len = newbrk.wrapping_sub(oldbrk);
        let ts = self.layout.task_size;
        if len > ts || oldbrk > ts - len {
            return None;
        }
        if oldbrk < self.cfg.mmap_min_addr && !self.cfg.cap_sys_rawio {
            return None;
        }
        // B5 (b): one free page must remain below the next VMA (its guard gap included).
        let limit = newbrk.wrapping_add(PAGE_SIZE).wrapping_add(self.guard());
        if let Some(next) = self.tree.intersecting(oldbrk, limit.max(newbrk)) {
            if newbrk + PAGE_SIZE > self.vm_start_gap(next) {
                return None;
            }
        }
        // brkvma: the VMA below oldbrk, at or above start_brk.
        let brkvma = self
            .tree
            .prev_before(oldbrk)
            .filter(|v| v.end > self.start_brk && v.end <= oldbrk)
            .cloned();
        self.do_brk_flags(brkvma, oldbrk, len)?;
        self.brk = brk;
        Some(())
    }

    /// do_brk_flags (B5 (c), B6).
    fn do_brk_flags(&mut self, brkvma: Option<Vma>, addr: u64, len: u64) -> Option<()> {
        let mut flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_ACCOUNT;
        if self.cfg.read_implies_exec {
            flags |= VM_EXEC;
        }
        let pages = len >> PAGE_SHIFT;
        if !self.may_expand_vm(flags, pages) {
            return None;
        }
        if self.map_count() > self.max_map_count() {
            return None;
        }
        if !self.vm_enough_memory(pages) {
            return None;
        }
        let make = Vma {
            start: addr,
            end: addr + len,
            flags: flags | VM_SOFTDIRTY,
            pgoff: addr >> PAGE_SHIFT,
            backing: Backing::Anon,
            anon_vma: None,
            forked: false,
        };
        match brkvma.filter(|v| v.end == addr) {
            Some(_) => {
                let p = Proposal {
                    start: addr,
                    end: addr + len,
                    flags,
                    pgoff: addr >> PAGE_SHIFT,
                    backing: &Backing::Anon,
                    anon: None,
                    forked: false,
                };
                self.place_new_range(&p, true, make);
            }
            None => self.tree.insert(make),
        }
        self.acct_map(flags, pages);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{abi::*, SpaceConfig, TaskKind};
    use super::*;

    fn space() -> AddressSpace {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
        s.set_brk(0x5555_5555_9000, 0x5555_5555_9000);
        s
    }

    #[test]
    fn b3_b6_grow_extend_and_query() {
        let mut s = space();
        assert_eq!(s.brk(0), 0x5555_5555_9000);
        assert_eq!(s.brk(0x5555_5555_9010), 0x5555_5555_9010);
        assert_eq!(s.map_count(), 1);
        assert_eq!(s.brk(0x5555_5557_a000), 0x5555_5557_a000);
        assert_eq!(s.map_count(), 1);
        let v = s.find_vma(0x5555_5555_9000).unwrap();
        assert_eq!((v.start, v.end), (0x5555_5555_9000, 0x5555_5557_a000));
        assert!(s.render_maps().contains("[heap]"));
        s.check_invariants().unwrap();
    }

    #[test]
    fn b1_b4_shrink_and_below_start() {
        let mut s = space();
        s.brk(0x5555_5556_0000);
        assert_eq!(s.brk(0x5555_5555_8000), 0x5555_5556_0000);
        assert_eq!(s.brk(0x5555_5555_b000), 0x5555_5555_b000);
        let v = s.find_vma(0x5555_5555_9000).unwrap();
        assert_eq!(v.end, 0x5555_5555_b000);
        assert!(s.find_vma(0x5555_5555_b000).is_none());
    }

    #[test]
    fn b5_keeps_one_page_below_next_vma() {
        let mut s = space();
        s.mmap(
            0x5555_5560_0000,
            0x1000,
            PROT_READ,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
            None,
            0,
        )
        .unwrap();
        assert_eq!(s.brk(0x5555_5560_0000), 0x5555_5555_9000);
        assert_eq!(s.brk(0x5555_555f_f001), 0x5555_5555_9000);
        assert_eq!(s.brk(0x5555_555f_f000), 0x5555_555f_f000);
    }
}
