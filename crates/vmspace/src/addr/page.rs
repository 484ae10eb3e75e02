//! Pages and frames of the sizes the supported MMUs map: 4 KiB, 2 MiB, 4 MiB, 1 GiB.

use super::{AddrError, PhysAddr, VirtAddr};
use core::fmt;
use core::marker::PhantomData;

/// A page or frame size.
pub trait PageSize: Copy + Eq + Ord + core::hash::Hash + fmt::Debug + 'static {
    /// Bytes in one page of this size (a power of two).
    const SIZE: u64;
    /// `log2(SIZE)`.
    const SHIFT: u32;
    /// Short name for dumps: "4K", "2M", "4M", "1G".
    const NAME: &'static str;
}

macro_rules! page_size {
    ($(#[$doc:meta])* $name:ident, $shift:expr, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {}
        impl PageSize for $name {
            const SIZE: u64 = 1 << $shift;
            const SHIFT: u32 = $shift;
            const NAME: &'static str = $label;
        }
    };
}

page_size!(
    /// 4 KiB: the base page on i386 and x86-64.
    Size4KiB, 12, "4K"
);
page_size!(
    /// 2 MiB: an x86-64 (or PAE) large page, mapped by a level-2 entry.
    Size2MiB, 21, "2M"
);
page_size!(
    /// 4 MiB: an i386 PSE large page, mapped by a page-directory entry.
    Size4MiB, 22, "4M"
);
page_size!(
    /// 1 GiB: an x86-64 huge page, mapped by a level-3 entry.
    Size1GiB, 30, "1G"
);

macro_rules! page_type {
    ($(#[$doc:meta])* $name:ident, $addr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name<S: PageSize = Size4KiB> {
            start: $addr,
            size: PhantomData<S>,
        }

        impl<S: PageSize> $name<S> {
            /// Bytes in this unit.
            pub const SIZE: u64 = S::SIZE;

            /// The unit that starts at `addr`; `Misaligned` if `addr` is not a boundary.
            pub const fn from_start_address(addr: $addr) -> Result<Self, AddrError> {
                if addr.is_aligned(S::SIZE) {
                    Ok(Self { start: addr, size: PhantomData })
                } else {
                    Err(AddrError::Misaligned { addr: addr.as_u64(), align: S::SIZE })
                }
            }

            /// The unit that contains `addr`.
            pub const fn containing(addr: $addr) -> Self {
                Self { start: addr.align_down(S::SIZE), size: PhantomData }
            }

            /// The unit with number `n` (its start is `n * SIZE`); `Overflow` past 2^64.
            pub const fn from_number(n: u64) -> Result<Self, AddrError> {
                if n > (u64::MAX >> S::SHIFT) {
                    return Err(AddrError::Overflow);
                }
                Ok(Self { start: $addr::new(n << S::SHIFT), size: PhantomData })
            }

            /// First address of the unit.
            pub const fn start_address(self) -> $addr {
                self.start
            }

            /// The unit's number: `start / SIZE`.
            pub const fn number(self) -> u64 {
                self.start.as_u64() >> S::SHIFT
            }

            /// The unit `n` units further on, or `Overflow` past 2^64.
            pub const fn checked_add(self, n: u64) -> Result<Self, AddrError> {
                match self.number().checked_add(n) {
                    Some(m) => Self::from_number(m),
                    None => Err(AddrError::Overflow),
                }
            }

            /// The unit `n` units before, or `Overflow` below zero.
            pub const fn checked_sub(self, n: u64) -> Result<Self, AddrError> {
                match self.number().checked_sub(n) {
                    Some(m) => Self::from_number(m),
                    None => Err(AddrError::Overflow),
                }
            }

            /// Exclusive end address, or `None` for the last unit below 2^64.
            pub const fn end_address(self) -> Option<$addr> {
                self.start.checked_add(S::SIZE)
            }

            /// Whether `addr` lies in this unit.
            pub const fn contains(self, addr: $addr) -> bool {
                addr.as_u64() >= self.start.as_u64()
                    && addr.as_u64() - self.start.as_u64() < S::SIZE
            }
        }

        impl<S: PageSize> fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "[{}]({:#x})"), S::NAME, self.start.as_u64())
            }
        }
    };
}

page_type!(
    /// A virtual page of size `S`, naturally aligned.
    Page,
    VirtAddr
);
page_type!(
    /// A physical frame of size `S`, naturally aligned.
    Frame,
    PhysAddr
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Size4KiB::SIZE, 4096);
        assert_eq!(Size2MiB::SIZE, 2 << 20);
        assert_eq!(Size4MiB::SIZE, 4 << 20);
        assert_eq!(Size1GiB::SIZE, 1 << 30);
    }

    #[test]
    fn page_construction_checks_alignment() {
        let p = Page::<Size4KiB>::from_start_address(VirtAddr::new(0x5000)).unwrap();
        assert_eq!(p.number(), 5);
        assert_eq!(
            Page::<Size2MiB>::from_start_address(VirtAddr::new(0x5000)),
            Err(AddrError::Misaligned {
                addr: 0x5000,
                align: 2 << 20
            })
        );
        assert_eq!(
            Page::<Size4MiB>::containing(VirtAddr::new(0x0080_1234)).start_address(),
            VirtAddr::new(0x0080_0000)
        );
        assert!(
            Frame::<Size4KiB>::containing(PhysAddr::new(0x1fff)).contains(PhysAddr::new(0x1000))
        );
        assert!(
            !Frame::<Size4KiB>::containing(PhysAddr::new(0x1fff)).contains(PhysAddr::new(0x2000))
        );
    }

    #[test]
    fn last_page_has_no_end() {
        let last = Page::<Size4KiB>::containing(VirtAddr::new(u64::MAX));
        assert_eq!(last.start_address(), VirtAddr::new(0xffff_ffff_ffff_f000));
        assert_eq!(last.end_address(), None);
        assert_eq!(last.checked_add(1), Err(AddrError::Overflow));
        assert_eq!(
            Page::<Size4KiB>::from_number(1 << 52),
            Err(AddrError::Overflow)
        );
        assert_eq!(
            Page::<Size4KiB>::containing(VirtAddr::ZERO).checked_sub(1),
            Err(AddrError::Overflow)
        );
        assert!(last.contains(VirtAddr::new(u64::MAX)));
    }
}
