//! MEM_DECOMMIT (W10): committed pages of one reservation go back to reserved; their
//! contents are discarded (zero on the next commit, W8) and their VMAs become PROT_NONE.

use super::table::PageEntry;
use super::{WinError, PAGE};
use crate::space::AddressSpace;

impl AddressSpace {
    /// VirtualFree(addr, size, MEM_DECOMMIT): the pages touching `[addr, addr + size)`, or
    /// with `size == 0` and `addr` the allocation base, the whole reservation. The range
    /// must lie within one reservation (ERROR_INVALID_ADDRESS); reserved pages in it are
    /// fine. `size == 0` with another address: ERROR_INVALID_PARAMETER. Returns the charge.
    pub fn decommit(&mut self, addr: u64, size: u64) -> Result<(), WinError> {
        let (lo, hi) = if size == 0 {
            match self.win.get(addr) {
                Some(a) => (a.base, a.end()),
                None if self.win.containing(addr).is_some() => {
                    return Err(WinError::InvalidParameter)
                }
                None => return Err(WinError::InvalidAddress),
            }
        } else {
            self.win_span(addr, size)?
        };
        let (a, plo, phi) = self.win_pages(lo, hi)?;
        let base = a.base;
        let freed = a.committed_in(plo, phi);
        let zap: alloc::vec::Vec<(u64, u64)> = a
            .runs_in(plo, phi)
            .filter(|r| r.2.is_committed())
            .map(|(s, e, _)| (base + s * PAGE, base + e * PAGE))
            .collect();
        self.win_change(base, plo, phi, |_| PageEntry::RESERVED)?;
        self.win.sub_charge(freed);
        for (s, e) in zap {
            self.mem.zap_private(s, e);
        }
        Ok(())
    }
}
