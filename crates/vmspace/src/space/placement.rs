//! get_unmapped_area (P1–P15): hints, MAP_FIXED, top-down and bottom-up search, the
//! top-down→bottom-up fallback, MAP_32BIT, MAP_ABOVE4G and THP 2 MiB alignment.

use super::abi::*;
use super::layout::{MAP_32BIT_BEGIN, MAP_32BIT_END, TASK_SIZE_64};
use super::{AddressSpace, Errno, FileRef, TaskKind};

const PMD_SIZE: u64 = 2 << 20;

impl AddressSpace {
    /// __get_unmapped_area: chooses the address for a mapping of `len` bytes (already page
    /// aligned, non-zero). `file` is `None` for anonymous memory; `pgoff` is in pages.
    pub(crate) fn get_unmapped_area(
        &self,
        file: Option<&FileRef>,
        addr: u64,
        len: u64,
        pgoff: u64,
        flags: u64,
    ) -> Result<u64, Errno> {
        let ts = self.layout.task_size;
        if len > ts {
            return Err(Errno::ENOMEM);
        }
        let pgoff = if file.is_some() { pgoff } else { 0 };
        let huge = file.and_then(|f| self.hugetlb.get(&f.id).copied());
        let got = match file {
            // hugetlb_get_unmapped_area: length and MAP_FIXED address must be huge-page
            // aligned, the hint is rounded up, the search aligns to the huge page.
            Some(_) if huge.is_some() => {
                let h = huge.unwrap_or(PMD_SIZE);
                if len & (h - 1) != 0 || (flags & MAP_FIXED != 0 && addr & (h - 1) != 0) {
                    return Err(Errno::EINVAL);
                }
                let hint = if addr != 0 {
                    addr.checked_add(h - 1).map_or(0, |a| a & !(h - 1))
                } else {
                    0
                };
                self.mm_get_unmapped_area_aligned(hint, len, flags, h - 1)
            }
            // P1: ext4/xfs-like files go through thp_get_unmapped_area (P15); shmem plain.
            Some(f) if !f.shmem => {
                match self.thp_get_unmapped_area(addr, len, pgoff << 12, flags) {
                    Some(a) => Ok(a),
                    None => self.mm_get_unmapped_area(addr, len, flags),
                }
            }
            Some(_) => self.mm_get_unmapped_area(addr, len, flags),
            // P2: anonymous MAP_SHARED goes to shmem (plain with shmem THP "never").
            None if flags & MAP_SHARED != 0 => self.mm_get_unmapped_area(addr, len, flags),
            // P3/P13: private anonymous, no hint, multiple of 2 MiB.
            None if self.cfg.thp && addr == 0 && len % PMD_SIZE == 0 => {
                match self.thp_get_unmapped_area(addr, len, 0, flags) {
                    Some(a) => Ok(a),
                    None => self.mm_get_unmapped_area(addr, len, flags),
                }
            }
            None => self.mm_get_unmapped_area(addr, len, flags),
        }?;
        if got > ts - len {
            return Err(Errno::ENOMEM);
        }
        if !is_page_aligned(got) {
            return Err(Errno::EINVAL);
        }
        // 2.1 step 10: cap_mmap_addr.
        if got < self.cfg.mmap_min_addr && !self.cfg.cap_sys_rawio {
            return Err(Errno::EPERM);
        }
        Ok(got)
    }

    /// __thp_get_unmapped_area (P13–P15): pads the length by 2 MiB and aligns the result so
    /// that file offset `off` and the address agree modulo 2 MiB. `None` = not applicable or
    /// the padded search failed (the caller retries unpadded).
    fn thp_get_unmapped_area(&self, addr: u64, len: u64, off: u64, flags: u64) -> Option<u64> {
        if !self.cfg.thp || self.cfg.kind != TaskKind::X86_64 {
            return None;
        }
        let off_end = off.checked_add(len)?;
        let off_align = off.checked_add(PMD_SIZE - 1)? & !(PMD_SIZE - 1);
        if off_end <= off_align || off_end - off_align < PMD_SIZE {
            return None;
        }
        let len_pad = len.checked_add(PMD_SIZE)?;
        off.checked_add(len_pad)?;
        let ret = self.mm_get_unmapped_area(addr, len_pad, flags).ok()?;
        if ret == addr {
            return Some(addr);
        }
        let off_sub = off.wrapping_sub(ret) & (PMD_SIZE - 1);
        if self.layout.topdown && off_sub == 0 {
            return Some(ret + PMD_SIZE);
        }
        Some(ret + off_sub)
    }

    /// mm_get_unmapped_area: the layout's arch routine (P4).
    pub(crate) fn mm_get_unmapped_area(
        &self,
        addr: u64,
        len: u64,
        flags: u64,
    ) -> Result<u64, Errno> {
        self.mm_get_unmapped_area_aligned(addr, len, flags, 0)
    }

    /// mm_get_unmapped_area with vm_unmapped_area's `align_mask` (hugetlbfs files).
    fn mm_get_unmapped_area_aligned(
        &self,
        addr: u64,
        len: u64,
        flags: u64,
        align: u64,
    ) -> Result<u64, Errno> {
        if self.layout.generic {
            if self.layout.topdown {
                self.generic_topdown(addr, len, flags, align)
            } else {
                self.generic_bottomup(addr, len, flags, align)
            }
        } else if self.layout.topdown {
            self.arch_topdown(addr, len, flags, align)
        } else {
            self.arch_bottomup(addr, len, flags, align)
        }
    }

    /// unmapped_area_topdown (P8): the highest raw gap in `[low, high)` holding `len`; when
    /// the VMA above it is VM_GROWSDOWN and its guard gap reaches into the gap, the search
    /// restarts with `high` lowered to that VMA's `vm_start_gap` (which may also cut off
    /// gaps below other VMAs inside the guard gap, as in Linux).
    pub(crate) fn search_topdown(
        &self,
        low: u64,
        mut high: u64,
        len: u64,
        align: u64,
    ) -> Option<u64> {
        let length = len.checked_add(align)?;
        loop {
            let gap_end = self.tree.highest_gap_end(low, high, length)?;
            if let Some(next) = self.tree.find(gap_end) {
                let sg = self.vm_start_gap(next);
                if next.flags & super::vma::flags::VM_GROWSDOWN != 0 && sg < gap_end {
                    high = sg;
                    continue;
                }
            }
            let gap = gap_end - len;
            return Some(gap - (gap & align));
        }
    }

    /// unmapped_area (P12): the lowest raw gap in `[low, high)` holding `len`; when the VMA
    /// above is VM_GROWSDOWN and the mapping would reach into its guard gap, the search
    /// restarts above that VMA.
    pub(crate) fn search_bottomup(
        &self,
        mut low: u64,
        high: u64,
        len: u64,
        align: u64,
    ) -> Option<u64> {
        let length = len.checked_add(align)?;
        loop {
            let start = self.tree.lowest_gap_start(low, high, length)?;
            let gap = start + (start.wrapping_neg() & align);
            if let Some(next) = self.tree.find(start) {
                if next.flags & super::vma::flags::VM_GROWSDOWN != 0
                    && self.vm_start_gap(next) < (gap + length).saturating_sub(1)
                {
                    low = next.end;
                    continue;
                }
            }
            return Some(gap);
        }
    }

    fn low_limit(&self, low: u64) -> u64 {
        low.max(self.min_addr())
    }

    /// The hint is free, including the guard gap below a VM_GROWSDOWN VMA (P6 (b)).
    fn hint_fits(&self, addr: u64, len: u64) -> bool {
        match self.tree.find(addr) {
            None => true,
            Some(v) => addr
                .checked_add(len)
                .is_some_and(|e| e <= self.vm_start_gap(v)),
        }
    }

    /// arch_get_unmapped_area_topdown (arch/x86/kernel/sys_x86_64.c; P6, P8, P9).
    fn arch_topdown(&self, addr0: u64, len: u64, flags: u64, align: u64) -> Result<u64, Errno> {
        let ts = self.layout.task_size;
        if len > ts {
            return Err(Errno::ENOMEM);
        }
        if flags & MAP_FIXED != 0 {
            return Ok(addr0);
        }
        let is32 = self.layout.is32;
        if !is32 && flags & MAP_32BIT != 0 {
            return self.arch_bottomup(addr0, len, flags, align);
        }
        if addr0 != 0 {
            let addr = addr0 & !(PAGE_SIZE - 1);
            // mmap_address_hint_valid: fits below TASK_SIZE, same side of the 47-bit window.
            let valid = ts - len >= addr && ((addr > TASK_SIZE_64) == (addr + len > TASK_SIZE_64));
            if valid && self.hint_fits(addr, len) {
                return Ok(addr);
            }
        }
        let low = if !is32 && flags & MAP_ABOVE4G != 0 {
            1 << 32
        } else {
            PAGE_SIZE
        };
        let low = self.low_limit(low);
        if let Some(addr) = self.search_topdown(low, self.layout.mmap_base, len, align) {
            return Ok(addr);
        }
        // P9: fall back to bottom-up, hint included.
        self.arch_bottomup(addr0, len, flags, align)
    }

    /// arch_get_unmapped_area (bottom-up; P7, P11, P12).
    fn arch_bottomup(&self, addr: u64, len: u64, flags: u64, align: u64) -> Result<u64, Errno> {
        if flags & MAP_FIXED != 0 {
            return Ok(addr);
        }
        let (begin, end) = if !self.layout.is32 && flags & MAP_32BIT != 0 {
            (MAP_32BIT_BEGIN, MAP_32BIT_END)
        } else {
            (self.layout.mmap_legacy_base, self.layout.task_size)
        };
        if len > end {
            return Err(Errno::ENOMEM);
        }
        if addr != 0 {
            if let Some(a) = page_align(addr) {
                if end - len >= a && self.hint_fits(a, len) {
                    return Ok(a);
                }
            }
        }
        self.search_bottomup(self.low_limit(begin), end, len, align)
            .ok_or(Errno::ENOMEM)
    }

    fn generic_hint(&self, addr: u64, len: u64, mmap_end: u64) -> Option<u64> {
        if addr == 0 {
            return None;
        }
        let a = page_align(addr)?;
        (mmap_end - len >= a && a >= self.min_addr() && self.hint_fits(a, len)).then_some(a)
    }

    /// generic_get_unmapped_area_topdown (mm/mmap.c), used by native i386 kernels.
    fn generic_topdown(&self, addr: u64, len: u64, flags: u64, align: u64) -> Result<u64, Errno> {
        let mmap_end = self.layout.task_size;
        if len > mmap_end.saturating_sub(self.min_addr()) {
            return Err(Errno::ENOMEM);
        }
        if flags & MAP_FIXED != 0 {
            return Ok(addr);
        }
        if let Some(a) = self.generic_hint(addr, len, mmap_end) {
            return Ok(a);
        }
        let low = self.low_limit(PAGE_SIZE);
        if let Some(addr) = self.search_topdown(low, self.layout.mmap_base, len, align) {
            return Ok(addr);
        }
        self.search_bottomup(
            self.low_limit(self.layout.mmap_legacy_base),
            mmap_end,
            len,
            align,
        )
        .ok_or(Errno::ENOMEM)
    }

    /// generic_get_unmapped_area (bottom-up), native i386.
    fn generic_bottomup(&self, addr: u64, len: u64, flags: u64, align: u64) -> Result<u64, Errno> {
        let mmap_end = self.layout.task_size;
        if len > mmap_end.saturating_sub(self.min_addr()) {
            return Err(Errno::ENOMEM);
        }
        if flags & MAP_FIXED != 0 {
            return Ok(addr);
        }
        if let Some(a) = self.generic_hint(addr, len, mmap_end) {
            return Ok(a);
        }
        self.search_bottomup(
            self.low_limit(self.layout.mmap_legacy_base),
            mmap_end,
            len,
            align,
        )
        .ok_or(Errno::ENOMEM)
    }
}

#[cfg(test)]
mod tests {
    use super::super::vma::flags::VM_GROWSDOWN;
    use super::super::{SpaceConfig, TaskKind};
    use super::*;
    use crate::space::testutil::*;

    fn space() -> AddressSpace {
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.mmap_min_addr = 4096;
        AddressSpace::new(c)
    }

    #[test]
    fn p13_p14_thp_alignment_of_2mib_multiples() {
        // linux-mm.md P14 worked example.
        let mut s = space();
        assert_eq!(s.mmap(0, 2 << 20, RW, PA, None, 0), Ok(0x7fff_f7c0_0000));
        assert_eq!(s.mmap(0, 2 << 20, RW, PA, None, 0), Ok(0x7fff_f7a0_0000));
        assert_eq!(s.map_count(), 1);
        // Not a multiple of 2 MiB: plain top-down placement.
        let a = s.mmap(0, (2 << 20) + 4096, RW, PA, None, 0).unwrap();
        assert_eq!(a, 0x7fff_f7a0_0000 - (2 << 20) - 4096);
        // Compat tasks never align (P13).
        let mut c = SpaceConfig::linux_default(TaskKind::Compat32);
        c.mmap_min_addr = 4096;
        let mut s = AddressSpace::new(c);
        assert_eq!(
            s.mmap(0, 2 << 20, RW, PA, None, 0),
            Ok(0xf7ff_e000 - (2 << 20))
        );
    }

    #[test]
    fn step5_hint_rounding_uses_lsm_min_addr() {
        // vm.mmap_min_addr 4096 but CONFIG_LSM_MMAP_MIN_ADDR 65536: a hint of 0x1000 becomes
        // 0x10000 (round_hint_to_min), while MAP_FIXED at 0x1000 is allowed with
        // CAP_SYS_RAWIO (2.1 steps 5 and 10).
        let mut s = space();
        assert_eq!(s.mmap(0x1000, 0x1000, RW, PA, None, 0), Ok(0x10000));
        assert_eq!(
            s.mmap(0x1000, 0x1000, RW, PA | MAP_FIXED, None, 0),
            Ok(0x1000)
        );
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.cap_sys_rawio = false;
        let mut s = AddressSpace::new(c);
        assert_eq!(
            s.mmap(0x1000, 0x1000, RW, PA | MAP_FIXED, None, 0),
            Err(Errno::EPERM)
        );
    }

    #[test]
    fn p6_hint_rejected_inside_guard_gap() {
        let mut s = space();
        let g = s
            .mmap(
                0x4000_0000,
                0x1000,
                RW,
                PA | MAP_FIXED | MAP_GROWSDOWN,
                None,
                0,
            )
            .unwrap();
        assert!(s.find_vma(g).unwrap().flags & VM_GROWSDOWN != 0);
        // Ends exactly at the guard gap: accepted. One page into it: ignored (top-down).
        assert_eq!(
            s.mmap(g - (1 << 20) - 0x1000, 0x1000, RW, PA, None, 0),
            Ok(g - (1 << 20) - 0x1000)
        );
        let got = s
            .mmap(g - (1 << 20), 0x1000, PROT_READ, PA, None, 0)
            .unwrap();
        assert_eq!(got, 0x7fff_f7ff_f000 - 0x1000);
    }

    #[test]
    fn p8_guard_retry_cuts_gaps_below_vmas_inside_the_guard() {
        // Checked on Linux 6.18: a VMA W inside the 1 MiB guard gap of a GROWSDOWN VMA G. The
        // highest gap (between W and G) is too small once the guard is applied, so the
        // search restarts below vm_start_gap(G) — which also cuts the gap right below W.
        let mut s = space();
        let top = 0x7fff_f7ff_f000u64;
        let g = top - 0x1000;
        s.mmap(g, 0x1000, RW, PA | MAP_FIXED | MAP_GROWSDOWN, None, 0)
            .unwrap();
        let w = g - (1 << 20) + 0x1000;
        s.mmap(w, 0x1000, PROT_WRITE, PA | MAP_FIXED, None, 0)
            .unwrap();
        assert_eq!(
            s.mmap(0, 0x2000, RW, PA, None, 0),
            Ok(g - (1 << 20) - 0x2000)
        );
    }

    #[test]
    fn p9_p11_fallback_and_map_32bit() {
        let mut s = space();
        assert_eq!(
            s.mmap(0, 0x1000, RW, PA | MAP_32BIT, None, 0),
            Ok(0x4000_0000)
        );
        assert_eq!(
            s.mmap(0, 0x1000, RW, PA | MAP_32BIT, None, 0),
            Ok(0x4000_1000)
        );
        // P9: with everything below mmap_base taken, top-down fails and bottom-up from the
        // legacy base finds the area above mmap_base.
        let base = s.layout().mmap_base;
        s.mmap(
            0x10000,
            base - 0x10000,
            PROT_NONE,
            PA | MAP_FIXED | MAP_NORESERVE,
            None,
            0,
        )
        .unwrap();
        assert_eq!(s.mmap(0, 0x1000, RW, PA, None, 0), Ok(base));
    }
}
