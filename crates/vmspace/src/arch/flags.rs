//! `PageFlags`: the access and caching bits of a mapping, independent of the level it sits at.
//!
//! The bit positions are those of an Intel 4 KiB page-table entry (SDM Vol. 3A, Tables 4-6
//! and 4-19), so a 4 KiB leaf encodes as `frame | flags`. At large-page levels bit 7 is PS
//! and the PAT bit moves to bit 12; the `arch` encoders do that translation.

use core::fmt;
use core::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not, Sub};

/// Access, caching and software bits of one mapping (a set of the constants below).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(transparent)]
pub struct PageFlags(u64);

impl PageFlags {
    /// P (bit 0): the entry maps something. The walker sets it on every entry it writes.
    pub const PRESENT: Self = Self(1 << 0);
    /// R/W (bit 1): writes allowed.
    pub const WRITABLE: Self = Self(1 << 1);
    /// U/S (bit 2): user-mode (CPL 3) accesses allowed.
    pub const USER: Self = Self(1 << 2);
    /// PWT (bit 3): write-through caching.
    pub const WRITE_THROUGH: Self = Self(1 << 3);
    /// PCD (bit 4): caching disabled.
    pub const NO_CACHE: Self = Self(1 << 4);
    /// A (bit 5): set by the CPU on access.
    pub const ACCESSED: Self = Self(1 << 5);
    /// D (bit 6): set by the CPU on write.
    pub const DIRTY: Self = Self(1 << 6);
    /// PAT (bit 7 of a 4 KiB PTE, bit 12 of a large-page entry): selects the PAT entry.
    pub const PAT: Self = Self(1 << 7);
    /// G (bit 8): global translation, kept in the TLB across CR3 loads (with CR4.PGE).
    pub const GLOBAL: Self = Self(1 << 8);
    /// Bit 9, ignored by the CPU: free for software.
    pub const AVL0: Self = Self(1 << 9);
    /// Bit 10, ignored by the CPU: free for software.
    pub const AVL1: Self = Self(1 << 10);
    /// Bit 11, ignored by the CPU: free for software.
    pub const AVL2: Self = Self(1 << 11);
    /// XD/NX (bit 63, x86-64 with EFER.NXE): instruction fetches not allowed.
    pub const NO_EXECUTE: Self = Self(1 << 63);

    /// Every flag defined above.
    pub const ALL: Self = Self(0x8000_0000_0000_0fff);

    const NAMES: [(Self, &'static str); 13] = [
        (Self::PRESENT, "PRESENT"),
        (Self::WRITABLE, "WRITABLE"),
        (Self::USER, "USER"),
        (Self::WRITE_THROUGH, "WRITE_THROUGH"),
        (Self::NO_CACHE, "NO_CACHE"),
        (Self::ACCESSED, "ACCESSED"),
        (Self::DIRTY, "DIRTY"),
        (Self::PAT, "PAT"),
        (Self::GLOBAL, "GLOBAL"),
        (Self::AVL0, "AVL0"),
        (Self::AVL1, "AVL1"),
        (Self::AVL2, "AVL2"),
        (Self::NO_EXECUTE, "NO_EXECUTE"),
    ];

    /// No flag.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The raw bits (Intel 4 KiB PTE positions).
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The flags among `bits`; other bits are dropped.
    pub const fn from_bits_truncate(bits: u64) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// The flags of `bits`, or `None` if a bit is not a flag.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `self ∪ other`.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// `self ∩ other`.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// `self \ other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for PageFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl BitOrAssign for PageFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for PageFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        self.intersection(rhs)
    }
}

impl BitAndAssign for PageFlags {
    fn bitand_assign(&mut self, rhs: Self) {
        self.0 &= rhs.0;
    }
}

impl Sub for PageFlags {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        self.difference(rhs)
    }
}

impl Not for PageFlags {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0 & Self::ALL.0)
    }
}

impl fmt::Debug for PageFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("PageFlags(empty)");
        }
        f.write_str("PageFlags(")?;
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let rw = PageFlags::PRESENT | PageFlags::WRITABLE;
        assert!(rw.contains(PageFlags::WRITABLE));
        assert!(!rw.contains(PageFlags::USER));
        assert_eq!((rw - PageFlags::WRITABLE), PageFlags::PRESENT);
        assert_eq!(!PageFlags::ALL, PageFlags::empty());
        assert_eq!(PageFlags::from_bits(1 << 12), None);
        assert_eq!(
            PageFlags::from_bits_truncate(0xffff_ffff_ffff_ffff),
            PageFlags::ALL
        );
        assert_eq!(PageFlags::NO_EXECUTE.bits(), 1 << 63);
        extern crate alloc;
        assert_eq!(
            alloc::format!("{:?}", PageFlags::USER | PageFlags::NO_EXECUTE),
            "PageFlags(USER | NO_EXECUTE)"
        );
    }
}
