//! MEM_RELEASE (W9): the whole reservation goes, by its base; VirtualFree's flag checks.

use super::{WinError, MEM_DECOMMIT, MEM_RELEASE};
use crate::space::AddressSpace;

impl AddressSpace {
    /// VirtualFree(base, size, MEM_RELEASE): `size` must be 0 (else
    /// ERROR_INVALID_PARAMETER) and `base` the AllocationBase of a reservation (else
    /// ERROR_INVALID_ADDRESS). Every page goes (committed ones are decommitted and their
    /// charge returned); the VMAs are unmapped.
    pub fn release(&mut self, base: u64, size: u64) -> Result<(), WinError> {
        if size != 0 {
            return Err(WinError::InvalidParameter);
        }
        let a = match self.win.remove(base) {
            Some(a) => a,
            None => return Err(WinError::InvalidAddress),
        };
        let charge = a.committed_pages();
        if let Err(e) = self.do_munmap(a.base, a.end()) {
            self.win.restore(a);
            return Err(WinError::from_errno(e));
        }
        self.win.sub_charge(charge);
        Ok(())
    }

    /// VirtualFree(addr, size, free_type): exactly one of MEM_DECOMMIT (W10) and
    /// MEM_RELEASE (W9); both, neither or other bits: ERROR_INVALID_PARAMETER.
    pub fn virtual_free(&mut self, addr: u64, size: u64, free_type: u32) -> Result<(), WinError> {
        match free_type {
            MEM_DECOMMIT => self.decommit(addr, size),
            MEM_RELEASE => self.release(addr, size),
            _ => Err(WinError::InvalidParameter),
        }
    }

    /// Ends every reservation meeting `[start, end)`, which a Linux operation is unmapping or
    /// replacing: the entries go and their charge is returned (see the module docs).
    pub(crate) fn win_forget(&mut self, start: u64, end: u64) {
        for base in self.win.bases_meeting(start, end) {
            if let Some(a) = self.win.remove(base) {
                self.win.sub_charge(a.committed_pages());
            }
        }
    }
}
