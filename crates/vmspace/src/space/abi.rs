//! Linux x86 ABI constants for the address-space syscalls (mman.h), as raw integers.
//!
//! Callers pass these through unchanged so unknown bits reach the model as they would the kernel.

pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;

pub const PROT_NONE: u64 = 0;
pub const PROT_READ: u64 = 0x1;
pub const PROT_WRITE: u64 = 0x2;
pub const PROT_EXEC: u64 = 0x4;
pub const PROT_SEM: u64 = 0x8;
pub const PROT_GROWSDOWN: u64 = 0x0100_0000;
pub const PROT_GROWSUP: u64 = 0x0200_0000;

pub const MAP_SHARED: u64 = 0x01;
pub const MAP_PRIVATE: u64 = 0x02;
pub const MAP_SHARED_VALIDATE: u64 = 0x03;
pub const MAP_DROPPABLE: u64 = 0x08;
pub const MAP_TYPE: u64 = 0x0f;
pub const MAP_FIXED: u64 = 0x10;
pub const MAP_ANONYMOUS: u64 = 0x20;
pub const MAP_32BIT: u64 = 0x40;
pub const MAP_ABOVE4G: u64 = 0x80;
pub const MAP_GROWSDOWN: u64 = 0x100;
pub const MAP_DENYWRITE: u64 = 0x800;
pub const MAP_EXECUTABLE: u64 = 0x1000;
pub const MAP_LOCKED: u64 = 0x2000;
pub const MAP_NORESERVE: u64 = 0x4000;
pub const MAP_POPULATE: u64 = 0x8000;
pub const MAP_NONBLOCK: u64 = 0x10000;
pub const MAP_STACK: u64 = 0x20000;
pub const MAP_HUGETLB: u64 = 0x40000;
pub const MAP_SYNC: u64 = 0x80000;
pub const MAP_FIXED_NOREPLACE: u64 = 0x100000;
pub const MAP_UNINITIALIZED: u64 = 0x4000000;
/// Flags `MAP_SHARED` silently accepts (include/linux/mman.h LEGACY_MAP_MASK).
pub const LEGACY_MAP_MASK: u64 = MAP_SHARED
    | MAP_PRIVATE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | MAP_UNINITIALIZED
    | MAP_GROWSDOWN
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB;

pub const MREMAP_MAYMOVE: u64 = 1;
pub const MREMAP_FIXED: u64 = 2;
pub const MREMAP_DONTUNMAP: u64 = 4;

pub const MLOCK_ONFAULT: u64 = 1;

pub const MADV_NORMAL: i64 = 0;
pub const MADV_RANDOM: i64 = 1;
pub const MADV_SEQUENTIAL: i64 = 2;
pub const MADV_WILLNEED: i64 = 3;
pub const MADV_DONTNEED: i64 = 4;
pub const MADV_FREE: i64 = 8;
pub const MADV_REMOVE: i64 = 9;
pub const MADV_DONTFORK: i64 = 10;
pub const MADV_DOFORK: i64 = 11;
pub const MADV_MERGEABLE: i64 = 12;
pub const MADV_UNMERGEABLE: i64 = 13;
pub const MADV_HUGEPAGE: i64 = 14;
pub const MADV_NOHUGEPAGE: i64 = 15;
pub const MADV_DONTDUMP: i64 = 16;
pub const MADV_DODUMP: i64 = 17;
pub const MADV_WIPEONFORK: i64 = 18;
pub const MADV_KEEPONFORK: i64 = 19;
pub const MADV_COLD: i64 = 20;
pub const MADV_PAGEOUT: i64 = 21;
pub const MADV_POPULATE_READ: i64 = 22;
pub const MADV_POPULATE_WRITE: i64 = 23;
pub const MADV_DONTNEED_LOCKED: i64 = 24;
pub const MADV_COLLAPSE: i64 = 25;
pub const MADV_HWPOISON: i64 = 100;
pub const MADV_SOFT_OFFLINE: i64 = 101;
pub const MADV_GUARD_INSTALL: i64 = 102;
pub const MADV_GUARD_REMOVE: i64 = 103;

/// Rounds up to a page; `None` when that wraps past 2^64.
pub fn page_align(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

/// Rounds up to a page with the kernel's wrapping arithmetic (PAGE_ALIGN).
pub fn page_align_wrapping(x: u64) -> u64 {
    x.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Whether `x` is page aligned.
pub fn is_page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}
