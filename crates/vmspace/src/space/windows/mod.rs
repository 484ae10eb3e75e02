//! Windows reserve/commit on the address space (`docs/linux-mm.md` section 7, W1–W20).
//!
//! A reservation is one private anonymous `PROT_NONE` VMA range (W20: not MAP_NORESERVE, so
//! a commit that makes pages writable is charged by Linux's accounting, G16); committing
//! mprotects pages to their protection; decommitting discards their contents and makes
//! them `PROT_NONE` again; releasing munmaps the whole reservation. Because Linux VMAs merge
//! and split freely (section 3), the Windows state lives in its own allocation table
//! ([`table::WinTable`]): per reservation its 64 KiB-aligned base, size, AllocationProtect
//! and per-page state (reserved / committed), protection and guard bit, kept as runs. The
//! 2-bit-per-64 KiB [`SegmentMap`](crate::range::segment_map) follows the table so the
//! fault path decides committed / reserved / free in O(1).
//!
//! The VMA protection of a page is always its *effective* protection: the base protection
//! of a committed page without PAGE_GUARD, `PROT_NONE` for reserved, guard and NOACCESS
//! pages. So an access the table forbids always faults, and the fault path
//! (`fault/guard.rs`) turns it into STATUS_ACCESS_VIOLATION or a one-shot
//! STATUS_GUARD_PAGE_VIOLATION.
//!
//! Coexistence with Linux calls in the same space:
//!
//! - placement uses the space's own gap search (the VMA tree), so reservations and mmaps
//!   never overlap; a Linux mapping counts as "not free" for W5;
//! - a Linux operation that unmaps or replaces any page of a reservation (munmap, mmap
//!   MAP_FIXED, mremap moving or shrinking it, brk) ends that reservation in the table: the
//!   whole allocation entry goes, its commit charge is returned, and what is still mapped
//!   stays as ordinary Linux VMAs (Windows has no partial release, so a reservation with a
//!   hole has no Windows meaning). Windows calls there then fail with ERROR_INVALID_ADDRESS;
//! - Linux mprotect/madvise/mlock on reservation pages change only the VMAs; the table
//!   still decides state and queries (the effective access is then the VMA's).
//!
//! Every operation checks everything against the table before it changes anything; a Linux
//! step that still fails (the map-count limit on a split, Linux's own overcommit check,
//! a sealed VMA) is rolled back, so a failing call leaves table and VMAs as they were.

pub mod commit;
pub mod decommit;
pub mod protect;
pub mod query;
pub mod release;
pub mod reserve;
pub mod table;

pub use table::{Allocation, PageEntry, WinTable};

use super::Errno;
use core::fmt;

/// Page size (W1).
pub const PAGE: u64 = 4096;
/// Allocation granularity: reservation bases are multiples of it (W1).
pub const GRANULARITY: u64 = 0x1_0000;
/// The lowest address a reservation may start at: the first 64 KiB is never allocatable (W1).
pub const LOWEST_ADDRESS: u64 = GRANULARITY;

/// MEM_COMMIT (W3).
pub const MEM_COMMIT: u32 = 0x1000;
/// MEM_RESERVE (W3).
pub const MEM_RESERVE: u32 = 0x2000;
/// MEM_DECOMMIT (W3).
pub const MEM_DECOMMIT: u32 = 0x4000;
/// MEM_RELEASE (W3).
pub const MEM_RELEASE: u32 = 0x8000;
/// MEM_FREE as VirtualQuery reports it (W3).
pub const MEM_FREE: u32 = 0x1_0000;
/// MEM_RESET (W3); accepted by nothing here.
pub const MEM_RESET: u32 = 0x8_0000;
/// MEM_TOP_DOWN (W3).
pub const MEM_TOP_DOWN: u32 = 0x10_0000;
/// MEM_PRIVATE (W3).
pub const MEM_PRIVATE: u32 = 0x2_0000;
/// MEM_MAPPED: what VirtualQuery says of a shared or file Linux mapping.
pub const MEM_MAPPED: u32 = 0x4_0000;

/// A Win32 page protection (W2): one base value plus the GUARD / NOCACHE / WRITECOMBINE
/// modifiers. Any `u32` can be held; operations validate it and refuse bad combinations
/// with [`WinError::InvalidParameter`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WinProt(pub u32);

impl WinProt {
    pub const NOACCESS: WinProt = WinProt(0x01);
    pub const READONLY: WinProt = WinProt(0x02);
    pub const READWRITE: WinProt = WinProt(0x04);
    pub const WRITECOPY: WinProt = WinProt(0x08);
    pub const EXECUTE: WinProt = WinProt(0x10);
    pub const EXECUTE_READ: WinProt = WinProt(0x20);
    pub const EXECUTE_READWRITE: WinProt = WinProt(0x40);
    pub const EXECUTE_WRITECOPY: WinProt = WinProt(0x80);
    pub const GUARD: WinProt = WinProt(0x100);
    pub const NOCACHE: WinProt = WinProt(0x200);
    pub const WRITECOMBINE: WinProt = WinProt(0x400);
    /// "No protection": what VirtualQuery reports as Protect of reserved pages.
    pub const NONE: WinProt = WinProt(0);

    const BASE_MASK: u32 = 0xff;
    const MOD_MASK: u32 = 0x700;

    /// The raw value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The base protection without modifiers.
    pub const fn base(self) -> WinProt {
        WinProt(self.0 & Self::BASE_MASK)
    }

    /// Whether PAGE_GUARD is set.
    pub const fn is_guard(self) -> bool {
        self.0 & Self::GUARD.0 != 0
    }

    /// The same protection with PAGE_GUARD set or cleared.
    pub const fn with_guard(self, on: bool) -> WinProt {
        if on {
            WinProt(self.0 | Self::GUARD.0)
        } else {
            WinProt(self.0 & !Self::GUARD.0)
        }
    }

    /// Checks the value as VirtualAlloc/VirtualProtect do for private memory: exactly one
    /// base value, known modifiers only, GUARD/NOCACHE/WRITECOMBINE not with NOACCESS
    /// (W14), NOCACHE and WRITECOMBINE neither together nor with GUARD; WRITECOPY and
    /// EXECUTE_WRITECOPY are not supported for private memory (VirtualAlloc's
    /// documentation; VirtualProtect of private memory is held to the same rule here).
    pub fn validate(self) -> Result<(), WinError> {
        let base = self.0 & Self::BASE_MASK;
        let m = self.0 & Self::MOD_MASK;
        let bad = self.0 & !(Self::BASE_MASK | Self::MOD_MASK) != 0
            || base.count_ones() != 1
            || base & (Self::WRITECOPY.0 | Self::EXECUTE_WRITECOPY.0) != 0
            || (base == Self::NOACCESS.0 && m != 0)
            || m.count_ones() > 1;
        if bad {
            Err(WinError::InvalidParameter)
        } else {
            Ok(())
        }
    }

    /// The Linux PROT_* bits of the base protection (W20).
    pub fn linux_prot(self) -> u64 {
        use super::abi::{PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE};
        match self.0 & Self::BASE_MASK {
            0x02 => PROT_READ,
            0x04 | 0x08 => PROT_READ | PROT_WRITE,
            0x10 => PROT_EXEC,
            0x20 => PROT_READ | PROT_EXEC,
            0x40 | 0x80 => PROT_READ | PROT_WRITE | PROT_EXEC,
            _ => PROT_NONE,
        }
    }

    /// The protection VirtualQuery reports for a Linux VMA with `vm_flags` (R/W/X bits).
    pub fn from_linux(vm_flags: u64) -> WinProt {
        match vm_flags & 7 {
            0 => Self::NOACCESS,
            1 => Self::READONLY,
            2 | 3 => Self::READWRITE,
            4 => Self::EXECUTE,
            5 => Self::EXECUTE_READ,
            _ => Self::EXECUTE_READWRITE,
        }
    }

    /// Whether the base protection lets a read (`0`), write (`1`) or execute (`8`) through
    /// (W13, with DEP: a fetch needs an EXECUTE value). PAGE_EXECUTE pages are readable, as
    /// x86 cannot map execute-only pages.
    pub fn allows(self, kind: u32) -> bool {
        let b = self.0 & Self::BASE_MASK;
        match kind {
            1 => matches!(b, 0x04 | 0x08 | 0x40 | 0x80),
            8 => matches!(b, 0x10 | 0x20 | 0x40 | 0x80),
            _ => b != 0 && b != Self::NOACCESS.0,
        }
    }
}

impl fmt::Debug for WinProt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u32, &str); 11] = [
            (0x01, "NOACCESS"),
            (0x02, "READONLY"),
            (0x04, "READWRITE"),
            (0x08, "WRITECOPY"),
            (0x10, "EXECUTE"),
            (0x20, "EXECUTE_READ"),
            (0x40, "EXECUTE_READWRITE"),
            (0x80, "EXECUTE_WRITECOPY"),
            (0x100, "GUARD"),
            (0x200, "NOCACHE"),
            (0x400, "WRITECOMBINE"),
        ];
        if self.0 == 0 {
            return f.write_str("0");
        }
        let mut first = true;
        let mut rest = self.0;
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !bit;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

impl core::ops::BitOr for WinProt {
    type Output = WinProt;
    fn bitor(self, o: WinProt) -> WinProt {
        WinProt(self.0 | o.0)
    }
}

/// flAllocationType of VirtualAlloc: MEM_RESERVE, MEM_COMMIT, MEM_TOP_DOWN (W3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct AllocKind(pub u32);

impl AllocKind {
    pub const COMMIT: AllocKind = AllocKind(MEM_COMMIT);
    pub const RESERVE: AllocKind = AllocKind(MEM_RESERVE);
    pub const TOP_DOWN: AllocKind = AllocKind(MEM_TOP_DOWN);

    /// Whether every bit of `o` is set.
    pub const fn contains(self, o: AllocKind) -> bool {
        self.0 & o.0 == o.0
    }
}

impl core::ops::BitOr for AllocKind {
    type Output = AllocKind;
    fn bitor(self, o: AllocKind) -> AllocKind {
        AllocKind(self.0 | o.0)
    }
}

/// The state of a page (W2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemState {
    Free,
    Reserve,
    Commit,
}

impl MemState {
    /// MEM_FREE / MEM_RESERVE / MEM_COMMIT (W3).
    pub const fn code(self) -> u32 {
        match self {
            MemState::Free => MEM_FREE,
            MemState::Reserve => MEM_RESERVE,
            MemState::Commit => MEM_COMMIT,
        }
    }
}

/// What VirtualQuery returns (MEMORY_BASIC_INFORMATION, W12).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RegionInfo {
    /// The queried address rounded down to its page.
    pub base_address: u64,
    /// The reservation's base (0 for free regions; a Linux VMA's start for Linux mappings).
    pub allocation_base: u64,
    /// The protection given at reservation (0 for free regions).
    pub allocation_protect: WinProt,
    /// Bytes from `base_address` in the maximal run of pages with the same state,
    /// protection and allocation.
    pub region_size: u64,
    pub state: MemState,
    /// The pages' protection: 0 for reserved pages, PAGE_NOACCESS for free ones.
    pub protect: WinProt,
    /// MEM_PRIVATE for reservations and private Linux mappings, MEM_MAPPED for shared or
    /// file Linux mappings, 0 for free regions.
    pub mem_type: u32,
}

/// Why a Windows memory call failed; nothing was changed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum WinError {
    /// ERROR_ACCESS_DENIED (5): a Linux-sealed VMA (mseal) refused the change.
    AccessDenied,
    /// ERROR_NOT_ENOUGH_MEMORY (8): no free range fits, or a Linux limit (map count,
    /// RLIMIT_AS, Linux's own overcommit check) refused.
    NotEnoughMemory,
    /// ERROR_INVALID_PARAMETER (87): a bad size, protection, flag combination or an
    /// address outside the user range.
    InvalidParameter,
    /// ERROR_INVALID_ADDRESS (487): the range is not (wholly) free for a reservation, or
    /// not within one reservation, or not the allocation base, or not committed.
    InvalidAddress,
    /// ERROR_COMMITMENT_LIMIT (1455): the commit charge would exceed the limit (W6).
    CommitmentLimit,
}

impl WinError {
    /// The Win32 error code (GetLastError).
    pub const fn code(&self) -> u32 {
        match self {
            WinError::AccessDenied => 5,
            WinError::NotEnoughMemory => 8,
            WinError::InvalidParameter => 87,
            WinError::InvalidAddress => 487,
            WinError::CommitmentLimit => 1455,
        }
    }

    /// The error a failed Linux step maps to.
    pub(crate) fn from_errno(e: Errno) -> WinError {
        match e {
            Errno::EPERM | Errno::EACCES => WinError::AccessDenied,
            Errno::EEXIST => WinError::InvalidAddress,
            Errno::EINVAL => WinError::InvalidParameter,
            _ => WinError::NotEnoughMemory,
        }
    }
}

impl fmt::Display for WinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            WinError::AccessDenied => "ERROR_ACCESS_DENIED",
            WinError::NotEnoughMemory => "ERROR_NOT_ENOUGH_MEMORY",
            WinError::InvalidParameter => "ERROR_INVALID_PARAMETER",
            WinError::InvalidAddress => "ERROR_INVALID_ADDRESS",
            WinError::CommitmentLimit => "ERROR_COMMITMENT_LIMIT",
        };
        write!(f, "{name} ({})", self.code())
    }
}

impl super::AddressSpace {
    /// The Windows allocation table.
    pub fn win_table(&self) -> &WinTable {
        &self.win
    }

    /// Checks the table ([`WinTable::check`]) and that every reservation page lies in a
    /// private anonymous VMA.
    pub fn win_check(&self) -> Result<(), alloc::string::String> {
        self.win.check()?;
        for a in self.win.allocations() {
            let mut at = a.base;
            while at < a.end() {
                match self.tree.containing(at) {
                    Some(v) if v.is_anonymous() && v.flags & super::vma::flags::VM_SHARED == 0 => {
                        at = v.end
                    }
                    _ => {
                        return Err(alloc::format!(
                            "reservation page {at:#x} not in a private anonymous VMA"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that every reservation page's VMA carries the page's effective protection
    /// (W20), which holds unless a Linux mprotect changed reservation pages.
    pub fn win_check_prot(&self) -> Result<(), alloc::string::String> {
        use super::vma::flags::VM_ACCESS_FLAGS;
        for a in self.win.allocations() {
            for (s, e, entry) in a.runs() {
                let (mut at, end) = (a.base + s * PAGE, a.base + e * PAGE);
                while at < end {
                    let v = self
                        .tree
                        .containing(at)
                        .ok_or_else(|| alloc::format!("no VMA at {at:#x}"))?;
                    if v.flags & VM_ACCESS_FLAGS != entry.linux_prot() {
                        return Err(alloc::format!(
                            "VMA at {at:#x} has {:#x}, page {entry:?} wants {:#x}",
                            v.flags & VM_ACCESS_FLAGS,
                            entry.linux_prot()
                        ));
                    }
                    at = v.end;
                }
            }
        }
        Ok(())
    }
}

/// Pages `[lo, hi)` (as addresses) touching the byte range `[addr, addr + size)`, or
/// `None` when the end overflows the 64-bit space.
pub(crate) fn page_span(addr: u64, size: u64) -> Option<(u64, u64)> {
    let end = addr.checked_add(size)?.checked_add(PAGE - 1)? & !(PAGE - 1);
    Some((addr & !(PAGE - 1), end))
}

#[cfg(test)]
mod tests;
