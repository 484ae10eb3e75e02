//! VirtualProtect (W11, W14) and the clearing of a guard bit by a guard-page fault (W15).

use super::{WinError, WinProt, PAGE};
use crate::space::AddressSpace;

impl AddressSpace {
    /// VirtualProtect(addr, size, prot): the pages touching `[addr, addr + size)` must all
    /// be committed and in one reservation (ERROR_INVALID_ADDRESS); `prot` must be valid
    /// (PAGE_GUARD not with PAGE_NOACCESS, W14: ERROR_INVALID_PARAMETER), zero `size` is
    /// ERROR_INVALID_PARAMETER. Returns the old protection of the first page (W11), guard
    /// bit included.
    pub fn virtual_protect(
        &mut self,
        addr: u64,
        size: u64,
        prot: WinProt,
    ) -> Result<WinProt, WinError> {
        if size == 0 {
            return Err(WinError::InvalidParameter);
        }
        prot.validate()?;
        let (lo, hi) = self.win_span(addr, size)?;
        let (a, plo, phi) = self.win_pages(lo, hi)?;
        let base = a.base;
        if a.committed_in(plo, phi) != phi - plo {
            return Err(WinError::InvalidAddress);
        }
        let old = a.entry(plo).prot();
        let entry = super::PageEntry::committed(prot);
        self.win_change(base, plo, phi, |_| entry)?;
        Ok(old)
    }

    /// W15: clears PAGE_GUARD on the committed page holding `addr` and gives its VMA the base
    /// protection. Returns the protection left, or `None` if the page carried no guard bit.
    pub fn win_clear_guard(&mut self, addr: u64) -> Option<WinProt> {
        let a = self.win.containing(addr)?;
        let base = a.base;
        let idx = (addr - base) / PAGE;
        let e = a.entry(idx);
        if !e.is_committed() || !e.is_guard() {
            return None;
        }
        let cleared = e.prot().with_guard(false);
        let entry = super::PageEntry::committed(cleared);
        // A failed mprotect (the map-count limit) leaves the page guarded and PROT_NONE;
        // the fault is then raised again on retry, which is what a caller sees anyway.
        self.win_change(base, idx, idx + 1, |_| entry).ok()?;
        Some(cleared)
    }
}
