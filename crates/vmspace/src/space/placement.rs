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
        let got = match file {
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
        if self.layout.generic {
            if self.layout.topdown {
                self.generic_topdown(addr, len, flags)
            } else {
                self.generic_bottomup(addr, len, flags)
            }
        } else if self.layout.topdown {
            self.arch_topdown(addr, len, flags)
        } else {
            self.arch_bottomup(addr, len, flags)
        }
    }

    /// unmapped_area_topdown (P8): the highest raw gap in `[low, high)` holding `len`; when
    /// the VMA above it is VM_GROWSDOWN and its guard gap reaches into the gap, the search
    /// restarts with `high` lowered to that VMA's `vm_start_gap` (which may also cut off
    /// gaps below other VMAs inside the guard gap, as in Linux).
    pub(crate) fn search_topdown(&self, low: u64, mut high: u64, len: u64) -> Option<u64> {
        loop {
            let gap_end = self.tree.highest_gap_end(low, high, len)?;
            if let Some(next) = self.tree.find(gap_end) {
                let sg = self.vm_start_gap(next);
                if next.flags & super::vma::flags::VM_GROWSDOWN != 0 && sg < gap_end {
                    high = sg;
                    continue;
                }
            }
            return Some(gap_end - len);
        }
    }

    /// unmapped_area (P12): the lowest raw gap in `[low, high)` holding `len`; when the VMA
    /// above is VM_GROWSDOWN and the mapping would reach into its guard gap, the search
    /// restarts above that VMA.
    pub(crate) fn search_bottomup(&self, mut low: u64, high: u64, len: u64) -> Option<u64> {
        loop {
            let gap = self.tree.lowest_gap_start(low, high, len)?;
            if let Some(next) = self.tree.find(gap) {
                if next.flags & super::vma::flags::VM_GROWSDOWN != 0
                    && self.vm_start_gap(next) < (gap + len).saturating_sub(1)
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
    fn arch_topdown(&self, addr0: u64, len: u64, flags: u64) -> Result<u64, Errno> {
        let ts = self.layout.task_size;
        if len > ts {
            return Err(Errno::ENOMEM);
        }
        if flags & MAP_FIXED != 0 {
            return Ok(addr0);
        }
        let is32 = self.layout.is32;
        if !is32 && flags & MAP_32BIT != 0 {
            return self.arch_bottomup(addr0, len, flags);
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
        if let Some(addr) = self.search_topdown(low, self.layout.mmap_base, len) {
            return Ok(addr);
        }
        // P9: fall back to bottom-up, hint included.
        self.arch_bottomup(addr0, len, flags)
    }

    /// arch_get_unmapped_area (bottom-up; P7, P11, P12).
    fn arch_bottomup(&self, addr: u64, len: u64, flags: u64) -> Result<u64, Errno> {
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
        self.search_bottomup(self.low_limit(begin), end, len)
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
    fn generic_topdown(&self, addr: u64, len: u64, flags: u64) -> Result<u64, Errno> {
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
        if let Some(addr) = self.search_topdown(low, self.layout.mmap_base, len) {
            return Ok(addr);
        }
        self.search_bottomup(self.low_limit(self.layout.mmap_legacy_base), mmap_end, len)
            .ok_or(Errno::ENOMEM)
    }

    /// generic_get_unmapped_area (bottom-up), native i386.
    fn generic_bottomup(&self, addr: u64, len: u64, flags: u64) -> Result<u64, Errno> {
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
        self.search_bottomup(self.low_limit(self.layout.mmap_legacy_base), mmap_end, len)
            .ok_or(Errno::ENOMEM)
    }
}
