//! Windows faults in reservations: access violations (W13) and one-shot guard pages (W15).
//!
//! Before the Linux fault path runs, [`check`] asks the allocation table about the faulting
//! page — in O(1) through the segment map for free, wholly reserved and wholly committed
//! segments, by a table lookup for mixed ones:
//!
//! - outside any reservation: Linux rules (a SIGSEGV there stays a SIGSEGV);
//! - reserved, or committed with a protection that refuses the access (NOACCESS, a write
//!   to a read-only page, a fetch from a non-execute page): STATUS_ACCESS_VIOLATION;
//! - committed with PAGE_GUARD: the access does not happen; the guard bit of that one page
//!   is cleared (its VMA and entry take the base protection) and
//!   STATUS_GUARD_PAGE_VIOLATION is raised. A retry behaves per the base protection.
//! - otherwise the Linux path resolves it (demand-zero, W8); instruction fetches always
//!   consult the table (DEP, W13), as the Linux path maps a page for a first fetch from a
//!   non-execute VMA and refuses only the retry; a signal it still raises
//!   (e.g. a Linux mprotect made the VMA stricter) is reported as an access violation.
//!
//! Guard pages inside a thread's own stack are consumed by the stack-growth logic of
//! whoever runs threads (the simulator, W16), which sees the guard-page exception first.

use super::classify::Access;
use super::{FaultError, Mm, Phys, RefFrames};
use crate::arch::Arch;
use crate::paging::Tlb;
use crate::phys::PhysMem;
use crate::space::windows::table::WinPage;
use crate::space::{Fault, Signal};
use core::fmt;

/// A Windows exception code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExceptionCode {
    /// STATUS_ACCESS_VIOLATION 0xC0000005 (W13).
    AccessViolation,
    /// STATUS_GUARD_PAGE_VIOLATION 0x80000001 (W15).
    GuardPage,
    /// STATUS_STACK_OVERFLOW 0xC00000FD (W19).
    StackOverflow,
}

impl ExceptionCode {
    /// The NTSTATUS value.
    pub const fn code(self) -> u32 {
        match self {
            ExceptionCode::AccessViolation => 0xC000_0005,
            ExceptionCode::GuardPage => 0x8000_0001,
            ExceptionCode::StackOverflow => 0xC000_00FD,
        }
    }
}

/// A Windows exception raised by an access: its code, the address and the access kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WinException {
    pub code: ExceptionCode,
    pub addr: u64,
    pub access: Access,
}

impl WinException {
    /// An exception of `code` for `access` at `addr`.
    pub fn new(code: ExceptionCode, addr: u64, access: Access) -> WinException {
        WinException { code, addr, access }
    }

    /// `ExceptionInformation[0]` of an access violation: 0 read, 1 write, 8 execute (W13).
    pub fn info0(&self) -> u64 {
        access_kind(self.access) as u64
    }

    /// How Windows would see a Linux signal raised for `access`: any SIGSEGV is an access
    /// violation; SIGBUS has no Windows counterpart here (`None`).
    pub fn from_signal(f: Fault, access: Access) -> Option<WinException> {
        (f.signal == Signal::Segv)
            .then(|| WinException::new(ExceptionCode::AccessViolation, f.addr, access))
    }
}

impl fmt::Display for WinException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exception {:#010x} ({:?}, info {}) at {:#x}",
            self.code.code(),
            self.code,
            self.info0(),
            self.addr
        )
    }
}

/// 0 read, 1 write, 8 execute.
pub fn access_kind(a: Access) -> u32 {
    match a {
        Access::Read => 0,
        Access::Write => 1,
        Access::Fetch => 8,
    }
}

/// An access violation at `addr`.
pub fn access_violation(addr: u64, access: Access) -> FaultError {
    FaultError::Exception(WinException::new(
        ExceptionCode::AccessViolation,
        addr,
        access,
    ))
}

/// The table's verdict on a fault at `addr`: `Ok(false)` outside reservations (Linux
/// rules), `Ok(true)` inside a reservation on a page the Linux path may resolve, or the
/// exception (after clearing the guard bit for a guard page).
pub fn check<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    tlb: &mut dyn Tlb,
    addr: u64,
    access: Access,
) -> Result<bool, FaultError> {
    let t = mm.space.win_table();
    let page = match t.page(addr) {
        // DEP: the VMA alone would let a first fetch from a non-execute page map it (Linux
        // refuses only the retry); the table answers at once.
        WinPage::Plain if access == Access::Fetch => t.page_exact(addr),
        p => p,
    };
    match page {
        WinPage::Outside => Ok(false),
        WinPage::Plain => Ok(true),
        WinPage::Reserved => Err(access_violation(addr, access)),
        WinPage::Committed(prot) if prot.is_guard() => {
            let page = addr & !0xfff;
            mm.space.win_clear_guard(page);
            mm.reprotect(phys, tlb, page, page + 4096);
            Err(FaultError::Exception(WinException::new(
                ExceptionCode::GuardPage,
                addr,
                access,
            )))
        }
        WinPage::Committed(prot) if !prot.allows(access_kind(access)) => {
            Err(access_violation(addr, access))
        }
        WinPage::Committed(_) => Ok(true),
    }
}

/// Turns what the Linux path raised inside a reservation into an access violation.
pub(crate) fn in_reservation(r: FaultError, addr: u64, access: Access) -> FaultError {
    match r {
        FaultError::Signal(f) if f.signal == Signal::Segv => access_violation(addr, access),
        e => e,
    }
}

#[cfg(test)]
mod tests;
