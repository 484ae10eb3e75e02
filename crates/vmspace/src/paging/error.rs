//! Typed errors of the page-table operations, one enum per operation.
//!
//! Every error leaves the tables exactly as they were before the call (a failed range map
//! is rolled back), except [`PhysError`]s raised by a backend that fails on memory the walker
//! already used, which mean the tables themselves are not in readable memory.

use crate::addr::{PhysAddr, VirtAddr};
use crate::phys::PhysError;
use core::fmt;

/// Why an address range cannot be operated on (shared by all operations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionError {
    Misaligned { addr: u64, align: u64 },
    Wraps,
    NonCanonical(VirtAddr),
    Reserved(VirtAddr),
}

/// Why [`PageTable::map`](super::PageTable::map) or `map_range` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A virtual or physical address or a length is not a multiple of the page size.
    Misaligned { addr: u64, align: u64 },
    /// `va + len` or `pa + len` passes the top of the address space.
    Wraps,
    /// The MMU cannot translate this address (non-canonical x86-64, above 4 GiB on i386).
    NonCanonical(VirtAddr),
    /// The MMU has no pages of this size.
    UnsupportedPageSize(u64),
    /// The address lies in the recursive page-table window.
    Reserved(VirtAddr),
    /// The physical range is not memory (beyond the MMU's physical width or outside RAM);
    /// also a table frame from the allocator that the MMU cannot point to.
    FrameOutOfRange(PhysAddr),
    /// A present page (of any size) already maps this address.
    AlreadyMapped(VirtAddr),
    /// A large page was asked where a page table (with small pages under it) is present.
    TableInTheWay(VirtAddr),
    /// The frame allocator has no frame left for a page table; nothing was changed.
    OutOfFrames,
    /// Physical memory could not be accessed.
    Phys(PhysError),
}

/// Why [`PageTable::unmap`](super::PageTable::unmap) or `unmap_range` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// An address or a length is not a multiple of the page size.
    Misaligned { addr: u64, align: u64 },
    /// `va + len` passes the top of the address space.
    Wraps,
    /// The MMU cannot translate this address.
    NonCanonical(VirtAddr),
    /// The MMU has no pages of this size.
    UnsupportedPageSize(u64),
    /// The address lies in the recursive page-table window.
    Reserved(VirtAddr),
    /// Nothing is mapped at this address (single-page operation).
    NotMapped(VirtAddr),
    /// The address or range covers only part of the large page at `page` of `size` bytes.
    PartOfLargePage {
        va: VirtAddr,
        page: VirtAddr,
        size: u64,
    },
    /// A large page was named but the address is mapped by smaller pages.
    NotLargePage(VirtAddr),
    /// Physical memory could not be accessed or a table frame could not be freed.
    Phys(PhysError),
}

/// Why [`PageTable::protect`](super::PageTable::protect) or `protect_range` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtectError {
    /// An address or a length is not a multiple of the page size.
    Misaligned { addr: u64, align: u64 },
    /// `va + len` passes the top of the address space.
    Wraps,
    /// The MMU cannot translate this address.
    NonCanonical(VirtAddr),
    /// The MMU has no pages of this size.
    UnsupportedPageSize(u64),
    /// The address lies in the recursive page-table window.
    Reserved(VirtAddr),
    /// Nothing is mapped at this address (single-page operation).
    NotMapped(VirtAddr),
    /// The address or range covers only part of the large page at `page` of `size` bytes.
    PartOfLargePage {
        va: VirtAddr,
        page: VirtAddr,
        size: u64,
    },
    /// A large page was named but the address is mapped by smaller pages.
    NotLargePage(VirtAddr),
    /// Physical memory could not be accessed.
    Phys(PhysError),
}

/// Why [`PageTable::translate`](super::PageTable::translate) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// The MMU cannot translate this address.
    NonCanonical(VirtAddr),
    /// `va + len` passes the top of the address space.
    Wraps,
    /// No present page maps this address.
    NotMapped(VirtAddr),
    /// Physical memory could not be accessed.
    Phys(PhysError),
}

macro_rules! region_into {
    ($err:ident) => {
        impl From<RegionError> for $err {
            fn from(e: RegionError) -> Self {
                match e {
                    RegionError::Misaligned { addr, align } => $err::Misaligned { addr, align },
                    RegionError::Wraps => $err::Wraps,
                    RegionError::NonCanonical(v) => $err::NonCanonical(v),
                    RegionError::Reserved(v) => $err::Reserved(v),
                }
            }
        }
        impl From<PhysError> for $err {
            fn from(e: PhysError) -> Self {
                $err::Phys(e)
            }
        }
    };
}
region_into!(MapError);
region_into!(UnmapError);
region_into!(ProtectError);

impl From<RegionError> for TranslateError {
    fn from(e: RegionError) -> Self {
        match e {
            RegionError::NonCanonical(v) | RegionError::Reserved(v) => {
                TranslateError::NonCanonical(v)
            }
            RegionError::Wraps | RegionError::Misaligned { .. } => TranslateError::Wraps,
        }
    }
}

impl From<PhysError> for TranslateError {
    fn from(e: PhysError) -> Self {
        TranslateError::Phys(e)
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::Misaligned { addr, align } => {
                write!(f, "{addr:#x} is not aligned to the page size {align:#x}")
            }
            MapError::Wraps => f.write_str("the range passes the top of the address space"),
            MapError::NonCanonical(v) => write!(f, "{v} is not a translatable address"),
            MapError::UnsupportedPageSize(s) => write!(f, "no pages of {s:#x} bytes"),
            MapError::Reserved(v) => write!(f, "{v} lies in the recursive page-table window"),
            MapError::FrameOutOfRange(p) => write!(f, "physical {p} is not mappable memory"),
            MapError::AlreadyMapped(v) => write!(f, "{v} is already mapped"),
            MapError::TableInTheWay(v) => {
                write!(
                    f,
                    "{v} is mapped by smaller pages; a large page cannot go there"
                )
            }
            MapError::OutOfFrames => f.write_str("no frame left for a page table"),
            MapError::Phys(e) => write!(f, "physical memory: {e}"),
        }
    }
}

macro_rules! display_unmap_like {
    ($err:ident, $verb:literal) => {
        impl fmt::Display for $err {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match *self {
                    $err::Misaligned { addr, align } => {
                        write!(f, "{addr:#x} is not aligned to the page size {align:#x}")
                    }
                    $err::Wraps => f.write_str("the range passes the top of the address space"),
                    $err::NonCanonical(v) => write!(f, "{v} is not a translatable address"),
                    $err::UnsupportedPageSize(s) => write!(f, "no pages of {s:#x} bytes"),
                    $err::Reserved(v) => {
                        write!(f, "{v} lies in the recursive page-table window")
                    }
                    $err::NotMapped(v) => write!(f, "{v} is not mapped"),
                    $err::PartOfLargePage { va, page, size } => write!(
                        f,
                        concat!("cannot ", $verb, " {} : part of the {:#x}-byte page at {}"),
                        va, size, page
                    ),
                    $err::NotLargePage(v) => write!(f, "{v} is mapped by smaller pages"),
                    $err::Phys(e) => write!(f, "physical memory: {e}"),
                }
            }
        }
    };
}
display_unmap_like!(UnmapError, "unmap");
display_unmap_like!(ProtectError, "protect");

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TranslateError::NonCanonical(v) => write!(f, "{v} is not a translatable address"),
            TranslateError::Wraps => f.write_str("the range passes the top of the address space"),
            TranslateError::NotMapped(v) => write!(f, "{v} is not mapped"),
            TranslateError::Phys(e) => write!(f, "physical memory: {e}"),
        }
    }
}
