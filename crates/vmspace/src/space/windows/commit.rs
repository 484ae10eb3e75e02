//! MEM_COMMIT inside a reservation (W6, W8) and the commit charge with its limit (no
//! overcommit); the step every table change ends with: bringing the VMAs in line.

use super::table::{Allocation, PageEntry};
use super::{WinError, WinProt, PAGE};
use crate::space::AddressSpace;

impl AddressSpace {
    /// Commits the pages touching `[addr, addr + size)` with `prot` (W6). They must all be
    /// reserved or committed and lie in one reservation, else ERROR_INVALID_ADDRESS;
    /// already-committed pages are not an error: they keep their contents and take `prot`
    /// (Windows leaves this undocumented; we give the whole range the requested protection).
    /// The newly committed pages are charged before anything changes; over the limit:
    /// ERROR_COMMITMENT_LIMIT. Newly committed pages read zero (W8). Returns the first page.
    pub fn commit(&mut self, addr: u64, size: u64, prot: WinProt) -> Result<u64, WinError> {
        if size == 0 {
            return Err(WinError::InvalidParameter);
        }
        prot.validate()?;
        let (lo, hi) = self.win_span(addr, size)?;
        let (a, plo, phi) = self.win_pages(lo, hi)?;
        self.win_commit_pages(a.base, plo, phi, prot)?;
        Ok(lo)
    }

    /// The pages `[lo, hi)` (as addresses) touching `[addr, addr + size)`; a range that
    /// overflows or ends above the top of the space is ERROR_INVALID_PARAMETER.
    pub(crate) fn win_span(&self, addr: u64, size: u64) -> Result<(u64, u64), WinError> {
        match super::page_span(addr, size) {
            Some((lo, hi)) if hi <= self.win_top() => Ok((lo, hi)),
            _ => Err(WinError::InvalidParameter),
        }
    }

    /// The reservation holding all of `[lo, hi)` (page aligned, non-empty) and the range's
    /// first and end page indexes in it, or ERROR_INVALID_ADDRESS.
    pub(crate) fn win_pages(&self, lo: u64, hi: u64) -> Result<(&Allocation, u64, u64), WinError> {
        match self.win.containing(lo) {
            Some(a) if hi <= a.end() && lo < hi => {
                Ok((a, (lo - a.base) / PAGE, (hi - a.base) / PAGE))
            }
            _ => Err(WinError::InvalidAddress),
        }
    }

    /// Sets the commit limit in pages. Lowering it below the current charge fails nothing
    /// already committed; further commits fail until the charge is below it.
    pub fn set_commit_limit(&mut self, pages: u64) {
        self.win.set_limit(Some(pages));
    }

    /// Goes back to the default commit limit: the configuration's RAM + swap pages.
    pub fn reset_commit_limit(&mut self) {
        self.win.set_limit(None);
    }

    /// The commit limit in pages.
    pub fn commit_limit(&self) -> u64 {
        self.win.limit().unwrap_or(
            self.cfg
                .total_ram_pages
                .saturating_add(self.cfg.total_swap_pages),
        )
    }

    /// Pages committed in reservations (the Windows commit charge, W6).
    pub fn commit_charge(&self) -> u64 {
        self.win.charge()
    }

    /// Whether `pages` more fit under the commit limit.
    pub(crate) fn win_charge_ok(&self, pages: u64) -> bool {
        self.win
            .charge()
            .checked_add(pages)
            .is_some_and(|c| c <= self.commit_limit())
    }

    /// Commits pages `[lo, hi)` of the reservation at `base` with `prot` (validated): charge,
    /// table, VMAs; contents of pages that were not committed are dropped (W8).
    pub(crate) fn win_commit_pages(
        &mut self,
        base: u64,
        lo: u64,
        hi: u64,
        prot: WinProt,
    ) -> Result<(), WinError> {
        let Some(a) = self.win.get(base) else {
            return Err(WinError::InvalidAddress);
        };
        let newly = (hi - lo) - a.committed_in(lo, hi);
        if !self.win_charge_ok(newly) {
            return Err(WinError::CommitmentLimit);
        }
        let fresh: alloc::vec::Vec<(u64, u64)> = a
            .runs_in(lo, hi)
            .filter(|r| !r.2.is_committed())
            .map(|(s, e, _)| (base + s * PAGE, base + e * PAGE))
            .collect();
        let entry = PageEntry::committed(prot);
        self.win_change(base, lo, hi, |_| entry)?;
        self.win.add_charge(newly);
        for (s, e) in fresh {
            // W8: whatever a Linux call may have left there, a fresh commit reads zero.
            self.mem.zap_private(s, e);
        }
        Ok(())
    }

    /// Gives pages `[lo, hi)` of the reservation at `base` the entries `f(old)` and brings
    /// their VMAs to the effective protection; if a Linux step fails, table and VMAs are
    /// put back and the error returned.
    pub(crate) fn win_change(
        &mut self,
        base: u64,
        lo: u64,
        hi: u64,
        f: impl Fn(PageEntry) -> PageEntry,
    ) -> Result<(), WinError> {
        let Some(a) = self.win.get_mut(base) else {
            return Err(WinError::InvalidAddress);
        };
        let old = a.clone();
        a.update(lo, hi, f);
        if let Err(e) = self.win_apply(base, lo, hi) {
            if let Some(a) = self.win.get_mut(base) {
                *a = old;
            }
            let _ = self.win_apply(base, lo, hi);
            self.win.refresh(base + lo * PAGE, base + hi * PAGE);
            return Err(WinError::from_errno(e));
        }
        self.win.refresh(base + lo * PAGE, base + hi * PAGE);
        Ok(())
    }

    /// mprotects the VMAs of pages `[lo, hi)` of the reservation at `base` to their
    /// entries' effective protection (W20). Stops at the first failure.
    pub(crate) fn win_apply(
        &mut self,
        base: u64,
        lo: u64,
        hi: u64,
    ) -> Result<(), crate::space::Errno> {
        let Some(a) = self.win.get(base) else {
            return Ok(());
        };
        let runs: alloc::vec::Vec<(u64, u64, u64)> = a
            .runs_in(lo, hi)
            .map(|(s, e, x)| (base + s * PAGE, base + e * PAGE, x.linux_prot()))
            .collect();
        for (s, e, prot) in runs {
            self.mprotect(s, e - s, prot)?;
        }
        Ok(())
    }
}
