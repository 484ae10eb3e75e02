//! Typed addresses, pages, frames, ranges and sizes.
//!
//! Every layer above speaks in these types. Arithmetic is checked: nothing wraps silently at
//! the top of a 32-bit or 64-bit space. Which addresses are *valid* depends on the MMU (a
//! 32-bit space ends at 4 GiB, an x86-64 address must be canonical); `VirtAddr` itself holds
//! any `u64`, and the `arch` layer says which of them an architecture accepts.
//!
//! Glossary:
//! - *page*: a naturally aligned block of virtual addresses of one [`PageSize`].
//! - *frame*: a naturally aligned block of physical memory of one [`PageSize`].
//! - *range*: a start plus a count of units; its exclusive end may be the very top of the
//!   64-bit space (2^64), which no `u64` can hold, so ranges store a count, not an end.

mod page;
mod range;

pub use page::{Frame, Page, PageSize, Size1GiB, Size2MiB, Size4KiB, Size4MiB};
pub use range::{FrameRange, PageRange, VirtRange};

use core::fmt;

/// Bytes in a 4 KiB page, the base unit of every supported MMU.
pub const PAGE_SIZE: u64 = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// An address or range that cannot be used as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrError {
    /// The address is not aligned to the required boundary.
    Misaligned { addr: u64, align: u64 },
    /// The arithmetic would pass the top (or bottom) of the address space.
    Overflow,
    /// An x86-64 virtual address whose bits 63..47 are not all equal to bit 47.
    NonCanonical(u64),
    /// The address is outside what the architecture or the caller allows.
    OutOfRange(u64),
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrError::Misaligned { addr, align } => {
                write!(f, "address {addr:#x} is not aligned to {align:#x}")
            }
            AddrError::Overflow => f.write_str("address arithmetic passes the end of the space"),
            AddrError::NonCanonical(a) => write!(f, "address {a:#x} is not canonical"),
            AddrError::OutOfRange(a) => write!(f, "address {a:#x} is out of range"),
        }
    }
}

/// Rounds `v` down to a multiple of `align` (a power of two).
#[inline]
pub const fn align_down(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    v & !(align - 1)
}

/// Rounds `v` up to a multiple of `align` (a power of two); `None` if that passes 2^64.
#[inline]
pub const fn align_up(v: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    match v.checked_add(align - 1) {
        Some(x) => Some(x & !(align - 1)),
        None => None,
    }
}

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The address zero.
            pub const ZERO: Self = Self(0);

            /// Wraps a raw address; validity for an architecture is checked by `arch`.
            #[inline]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw value.
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// `self + bytes`, or `None` if that passes 2^64.
            #[inline]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - bytes`, or `None` below zero.
            #[inline]
            pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
                match self.0.checked_sub(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// Bytes from `earlier` to `self`, or `None` if `earlier` is above `self`.
            #[inline]
            pub const fn checked_offset_from(self, earlier: Self) -> Option<u64> {
                self.0.checked_sub(earlier.0)
            }

            /// Rounds down to `align` (a power of two).
            #[inline]
            pub const fn align_down(self, align: u64) -> Self {
                Self(align_down(self.0, align))
            }

            /// Rounds up to `align` (a power of two); `None` if that passes 2^64.
            #[inline]
            pub const fn align_up(self, align: u64) -> Option<Self> {
                match align_up(self.0, align) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align` (a power of two).
            #[inline]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }

            /// The offset inside its 4 KiB page.
            #[inline]
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// A virtual address: any `u64`; `arch` decides which ones an MMU accepts.
    VirtAddr,
    "VirtAddr"
);
address_type!(
    /// A physical address: any `u64`; `phys` and `arch` bound it by RAM and address width.
    PhysAddr,
    "PhysAddr"
);

impl VirtAddr {
    /// Whether this is a canonical x86-64 address for `bits` implemented address bits
    /// (48 for 4-level paging): bits 63..bits-1 all equal.
    #[inline]
    pub const fn is_canonical(self, bits: u32) -> bool {
        let shift = 64 - bits;
        (((self.0 << shift) as i64) >> shift) as u64 == self.0
    }

    /// Sign-extends bit `bits-1` into the upper bits (the canonical form of an index-built
    /// address).
    #[inline]
    pub const fn canonicalize(raw: u64, bits: u32) -> Self {
        let shift = 64 - bits;
        Self((((raw << shift) as i64) >> shift) as u64)
    }

    /// Checks that the address is canonical for `bits` address bits.
    pub const fn try_canonical(raw: u64, bits: u32) -> Result<Self, AddrError> {
        let a = Self(raw);
        if a.is_canonical(bits) {
            Ok(a)
        } else {
            Err(AddrError::NonCanonical(raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_helpers_do_not_wrap() {
        assert_eq!(align_up(0, 4096), Some(0));
        assert_eq!(align_up(1, 4096), Some(4096));
        assert_eq!(align_up(u64::MAX - 4095, 4096), Some(u64::MAX - 4095));
        assert_eq!(align_up(u64::MAX - 4094, 4096), None);
        assert_eq!(align_down(u64::MAX, 4096), u64::MAX - 4095);
        assert_eq!(VirtAddr::new(u64::MAX).align_up(4096), None);
    }

    #[test]
    fn checked_arithmetic_stops_at_the_edges() {
        let top = VirtAddr::new(u64::MAX);
        assert_eq!(top.checked_add(1), None);
        assert_eq!(VirtAddr::ZERO.checked_sub(1), None);
        assert_eq!(
            VirtAddr::new(0x1000).checked_offset_from(VirtAddr::new(0x2000)),
            None
        );
        assert_eq!(
            VirtAddr::new(0x3000).checked_offset_from(VirtAddr::new(0x1000)),
            Some(0x2000)
        );
    }

    #[test]
    fn canonical_addresses() {
        assert!(VirtAddr::new(0x7fff_ffff_f000).is_canonical(48));
        assert!(!VirtAddr::new(0x8000_0000_0000).is_canonical(48));
        assert!(VirtAddr::new(0xffff_8000_0000_0000).is_canonical(48));
        assert!(!VirtAddr::new(0xfff0_8000_0000_0000).is_canonical(48));
        assert_eq!(
            VirtAddr::canonicalize(0x8000_0000_0000, 48),
            VirtAddr::new(0xffff_8000_0000_0000)
        );
        assert_eq!(
            VirtAddr::try_canonical(0x1_0000_0000_0000, 48),
            Err(AddrError::NonCanonical(0x1_0000_0000_0000))
        );
    }

    #[test]
    fn formatting() {
        extern crate alloc;
        use alloc::format;
        assert_eq!(format!("{:?}", VirtAddr::new(0x1000)), "VirtAddr(0x1000)");
        assert_eq!(format!("{}", PhysAddr::new(0xabc)), "0xabc");
        assert_eq!(format!("{:x}", PhysAddr::new(0xabc)), "abc");
    }
}
