//! Ranges of bytes, pages and frames, stored as start + count so a range may end at 2^64.

use super::page::{Frame, Page, PageSize, Size4KiB};
use super::{AddrError, PhysAddr, VirtAddr};
use core::fmt;

/// Whether `[start, start + len)` fits below 2^64 (`len` may reach exactly to 2^64).
#[inline]
const fn fits(start: u64, len: u128) -> bool {
    start as u128 + len <= 1u128 << 64
}

/// A half-open range of virtual bytes `[start, start + len)`; the end may be 2^64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtRange {
    start: VirtAddr,
    len: u64,
}

impl VirtRange {
    /// `[start, start + len)`; `Overflow` if it would pass 2^64.
    pub const fn new(start: VirtAddr, len: u64) -> Result<Self, AddrError> {
        if fits(start.as_u64(), len as u128) {
            Ok(Self { start, len })
        } else {
            Err(AddrError::Overflow)
        }
    }

    /// `[start, end)` with `end >= start`; `Overflow` otherwise.
    pub const fn from_bounds(start: VirtAddr, end: VirtAddr) -> Result<Self, AddrError> {
        match end.checked_offset_from(start) {
            Some(len) => Ok(Self { start, len }),
            None => Err(AddrError::Overflow),
        }
    }

    /// First byte.
    pub const fn start(self) -> VirtAddr {
        self.start
    }

    /// Length in bytes.
    pub const fn len(self) -> u64 {
        self.len
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(self) -> bool {
        self.len == 0
    }

    /// Exclusive end, or `None` when the range ends at 2^64.
    pub const fn end(self) -> Option<VirtAddr> {
        self.start.checked_add(self.len)
    }

    /// Exclusive end as a 128-bit number (always representable).
    pub const fn end_u128(self) -> u128 {
        self.start.as_u64() as u128 + self.len as u128
    }

    /// Whether `addr` lies inside.
    pub const fn contains(self, addr: VirtAddr) -> bool {
        addr.as_u64() >= self.start.as_u64() && addr.as_u64() - self.start.as_u64() < self.len
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(self, other: VirtRange) -> bool {
        (self.start.as_u64() as u128) < other.end_u128()
            && (other.start.as_u64() as u128) < self.end_u128()
    }

    /// The 4 KiB pages touched by the range (start rounded down, end rounded up).
    pub fn pages(self) -> PageRange<Size4KiB> {
        let first = Page::containing(self.start);
        let end = self.end_u128();
        let first_n = first.number() as u128;
        let end_n = end.div_ceil(Size4KiB::SIZE as u128);
        PageRange {
            start: first,
            count: (end_n - first_n) as u64,
        }
    }
}

impl fmt::Debug for VirtRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.as_u64(), self.end_u128())
    }
}

macro_rules! unit_range {
    ($(#[$doc:meta])* $name:ident, $unit:ident, $addr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<S: PageSize = Size4KiB> {
            start: $unit<S>,
            count: u64,
        }

        impl<S: PageSize> $name<S> {
            /// `count` units from `start`; `Overflow` if that would pass 2^64.
            pub const fn new(start: $unit<S>, count: u64) -> Result<Self, AddrError> {
                if fits(start.start_address().as_u64(), count as u128 * S::SIZE as u128) {
                    Ok(Self { start, count })
                } else {
                    Err(AddrError::Overflow)
                }
            }

            /// The units covering `[start, start + len)`: `start` must be aligned to the
            /// unit and `len` a multiple of it.
            pub const fn from_start_len(start: $addr, len: u64) -> Result<Self, AddrError> {
                let first = match $unit::<S>::from_start_address(start) {
                    Ok(p) => p,
                    Err(e) => return Err(e),
                };
                if len % S::SIZE != 0 {
                    return Err(AddrError::Misaligned { addr: len, align: S::SIZE });
                }
                Self::new(first, len >> S::SHIFT)
            }

            /// The first unit.
            pub const fn start(self) -> $unit<S> {
                self.start
            }

            /// How many units.
            pub const fn count(self) -> u64 {
                self.count
            }

            /// Whether the range holds no unit.
            pub const fn is_empty(self) -> bool {
                self.count == 0
            }

            /// Length in bytes as a 128-bit number (a range of every page is 2^64 bytes).
            pub const fn len_bytes(self) -> u128 {
                self.count as u128 * S::SIZE as u128
            }

            /// Exclusive end address, or `None` when the range ends at 2^64.
            pub const fn end_address(self) -> Option<$addr> {
                let end = self.start.start_address().as_u64() as u128 + self.len_bytes();
                if end > u64::MAX as u128 {
                    None
                } else {
                    Some($addr::new(end as u64))
                }
            }

            /// The last unit, or `None` for an empty range.
            pub const fn last(self) -> Option<$unit<S>> {
                if self.count == 0 {
                    None
                } else {
                    match self.start.checked_add(self.count - 1) {
                        Ok(p) => Some(p),
                        Err(_) => None,
                    }
                }
            }

            /// Whether `unit` lies in the range.
            pub const fn contains(self, unit: $unit<S>) -> bool {
                unit.number() >= self.start.number()
                    && unit.number() - self.start.number() < self.count
            }

            /// Iterates the units in order.
            pub fn iter(self) -> impl DoubleEndedIterator<Item = $unit<S>> {
                let first = self.start.number();
                // Every unit number below first + count exists by construction.
                (0..self.count).map(move |i| match $unit::from_number(first + i) {
                    Ok(u) => u,
                    Err(_) => unreachable!("range constructed within 2^64"),
                })
            }
        }

        impl<S: PageSize> fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let start = self.start.start_address().as_u64();
                write!(
                    f,
                    concat!(stringify!($name), "[{}]({:#x}..{:#x})"),
                    S::NAME,
                    start,
                    start as u128 + self.len_bytes()
                )
            }
        }
    };
}

unit_range!(
    /// A run of consecutive virtual pages.
    PageRange,
    Page,
    VirtAddr
);
unit_range!(
    /// A run of consecutive physical frames.
    FrameRange,
    Frame,
    PhysAddr
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Size2MiB;

    #[test]
    fn virt_range_to_the_very_top() {
        let r = VirtRange::new(VirtAddr::new(0xffff_ffff_ffff_f000), 0x1000).unwrap();
        assert_eq!(r.end(), None);
        assert_eq!(r.end_u128(), 1 << 64);
        assert!(VirtRange::new(VirtAddr::new(0xffff_ffff_ffff_f000), 0x1001).is_err());
        assert_eq!(r.pages().count(), 1);
        assert!(r.contains(VirtAddr::new(u64::MAX)));
    }

    #[test]
    fn virt_range_pages_rounds_outward() {
        let r = VirtRange::new(VirtAddr::new(0x1fff), 2).unwrap();
        let p = r.pages();
        assert_eq!(p.start().start_address(), VirtAddr::new(0x1000));
        assert_eq!(p.count(), 2);
        assert!(VirtRange::new(VirtAddr::new(5), 0).unwrap().is_empty());
        assert_eq!(
            VirtRange::new(VirtAddr::new(0x1000), 0)
                .unwrap()
                .pages()
                .count(),
            0
        );
    }

    #[test]
    fn overlap() {
        let a = VirtRange::new(VirtAddr::new(0x1000), 0x2000).unwrap();
        let b = VirtRange::new(VirtAddr::new(0x2fff), 1).unwrap();
        let c = VirtRange::new(VirtAddr::new(0x3000), 1).unwrap();
        assert!(a.overlaps(b));
        assert!(!a.overlaps(c));
        assert!(VirtRange::from_bounds(VirtAddr::new(2), VirtAddr::new(1)).is_err());
    }

    #[test]
    fn page_ranges() {
        let r = PageRange::<Size2MiB>::from_start_len(VirtAddr::new(0x4000_0000), 6 << 20).unwrap();
        assert_eq!(r.count(), 3);
        assert_eq!(r.iter().count(), 3);
        assert_eq!(
            r.last().unwrap().start_address(),
            VirtAddr::new(0x4040_0000)
        );
        assert_eq!(r.end_address(), Some(VirtAddr::new(0x4060_0000)));
        assert!(PageRange::<Size2MiB>::from_start_len(VirtAddr::new(0x1000), 2 << 20).is_err());
        assert!(PageRange::<Size4KiB>::from_start_len(VirtAddr::new(0), 4097).is_err());
        let all = PageRange::<Size4KiB>::new(Page::containing(VirtAddr::ZERO), 1 << 52).unwrap();
        assert_eq!(all.end_address(), None);
        assert_eq!(all.len_bytes(), 1 << 64);
        assert!(
            PageRange::<Size4KiB>::new(Page::containing(VirtAddr::new(0x1000)), 1 << 52).is_err()
        );
        let empty = FrameRange::<Size4KiB>::new(Frame::containing(PhysAddr::new(0)), 0).unwrap();
        assert!(empty.last().is_none());
    }
}
