//! Architectures: what differs per MMU — address width and canonical rule, the user/kernel
//! split, and the page-table format (levels, entries, index bits, large pages, entry bits).
//!
//! Levels are numbered from the leaf: level 1 is the table of 4 KiB PTEs, level
//! [`Arch::LEVELS`] is the root that CR3 points at. An entry at level `l` spans
//! `1 << Arch::level_shift(l)` bytes of virtual address space.
//!
//! Internally the walker works on *linear* addresses `[0, 2^VA_BITS)`: the virtual address
//! with the sign-extension bits stripped ([`Arch::to_linear`]), so that every range end fits
//! in a `u64` and indices are plain shifts.
//!
//! Encodings are bit-exact to the Intel SDM Vol. 3A chapter 4 (32-bit paging: Tables 4-4 to
//! 4-6; 4-level paging: Tables 4-14 to 4-19): the bootable kernel loads these tables into CR3.

mod flags;
pub mod i386;
pub mod x86_64;

pub use flags::PageFlags;
pub use i386::I386;
pub use x86_64::X86_64;

use crate::addr::{PhysAddr, VirtAddr, VirtRange, PAGE_SHIFT};

/// Bit 0 of every entry: present.
pub const ENTRY_PRESENT: u64 = 1 << 0;
/// Bit 7 of a PDE/PDPTE: the entry maps a large page (PS).
pub const ENTRY_PAGE_SIZE: u64 = 1 << 7;
/// Bit 12 of a large-page entry: PAT.
pub const ENTRY_PAT_LARGE: u64 = 1 << 12;

/// What one page-table entry holds, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// All bits zero: nothing mapped, nothing stored.
    Empty,
    /// P = 0 but other bits set (the CPU ignores them; software may use them).
    NotPresent(u64),
    /// A present entry that points to the table of the next-lower level.
    Table { addr: PhysAddr, flags: PageFlags },
    /// A present entry that maps a page: 4 KiB at level 1, a large page above (PS = 1).
    Page {
        addr: PhysAddr,
        flags: PageFlags,
        size: u64,
    },
}

/// An MMU's page-table format and address-space shape.
///
/// Associated constants describe the fixed format; methods taking `&self` describe choices
/// made per instance (the i386 recursive slot). Encoders assume their inputs were validated
/// by the walker (aligned, below [`Arch::phys_limit`]); they never panic, they mask.
pub trait Arch: Copy + core::fmt::Debug {
    /// Name for dumps: "i386", "x86_64".
    const NAME: &'static str;
    /// Number of table levels (2 or 4).
    const LEVELS: u8;
    /// Entries per table.
    const ENTRIES: usize;
    /// Bytes per entry (4 or 8).
    const ENTRY_SIZE: u64;
    /// Index bits per level (`log2(ENTRIES)`).
    const INDEX_BITS: u32;
    /// Implemented virtual-address bits (32, or 48 for 4-level paging).
    const VA_BITS: u32;
    /// The [`PageFlags`] a leaf can express; others are dropped on encode, as Linux drops
    /// `_PAGE_NX` from `__supported_pte_mask` when the MMU has no NX bit.
    const SUPPORTED_FLAGS: PageFlags;

    /// Bit position of the lowest virtual-address bit indexed at `level` (1 = leaf table).
    #[inline]
    fn level_shift(level: u8) -> u32 {
        PAGE_SHIFT + Self::INDEX_BITS * (level as u32 - 1)
    }

    /// Bytes spanned by one entry at `level`.
    #[inline]
    fn level_span(level: u8) -> u64 {
        1u64 << Self::level_shift(level)
    }

    /// Index of the entry covering linear address `lin` in a table of `level`.
    #[inline]
    fn index(lin: u64, level: u8) -> usize {
        ((lin >> Self::level_shift(level)) as usize) & (Self::ENTRIES - 1)
    }

    /// Whether an entry at `level` may map a page directly (level 1 always; large-page
    /// levels as the MMU allows).
    fn can_map_at(level: u8) -> bool;

    /// The level whose leaf entries map pages of `size` bytes, if the MMU has such pages.
    fn level_for_size(size: u64) -> Option<u8> {
        (1..=Self::LEVELS).find(|&l| Self::can_map_at(l) && Self::level_span(l) == size)
    }

    /// Linux's name for the entries of `level` in page-table dumps ("pte", "pmd", "pgd"…).
    fn level_name(level: u8) -> &'static str;

    /// The linear address of `va`, or `None` if the MMU cannot translate it (above 4 GiB on
    /// i386, non-canonical on x86-64).
    fn to_linear(va: VirtAddr) -> Option<u64>;

    /// The virtual address of linear address `lin` (sign-extended on x86-64).
    fn from_linear(lin: u64) -> VirtAddr;

    /// The user half of the address space (Linux `[0, TASK_SIZE)` up to `PAGE_OFFSET`).
    fn user_range(&self) -> VirtRange;

    /// The kernel half (from Linux's `PAGE_OFFSET` to the top).
    fn kernel_range(&self) -> VirtRange;

    /// The root slot that points back at the root itself (the recursive mapping), if any.
    /// The walker installs it when it creates a root and refuses to map in its window.
    fn recursive_slot(&self) -> Option<usize> {
        None
    }

    /// Exclusive upper bound on the physical address of a page mapped at `level`, or of a
    /// table pointed to by an entry (`level` = the level of the entry holding it).
    fn phys_limit(level: u8, leaf: bool) -> u64;

    /// The entry at `level` pointing at the table `addr`. `user` sets U/S: the walker's
    /// tables grant P, R/W and U/S so the leaf alone decides access (SDM 4.6: rights are the
    /// intersection over all levels); the recursive entry is supervisor-only.
    fn encode_table(addr: PhysAddr, user: bool) -> u64;

    /// The leaf entry at `level` mapping the page at `addr` with `flags` (P is forced,
    /// unsupported flags dropped, PS set above level 1, PAT moved to bit 12 above level 1).
    fn encode_page(level: u8, addr: PhysAddr, flags: PageFlags) -> u64;

    /// Decodes an entry read from a table of `level`.
    fn decode(level: u8, raw: u64) -> Entry;

    /// The entry at `level` with its access flags replaced by `flags`, keeping the address,
    /// PS and the accessed/dirty bits the CPU set (Linux `pte_modify` keeps A and D).
    fn reprotect(level: u8, raw: u64, flags: PageFlags) -> u64 {
        match Self::decode(level, raw) {
            Entry::Page {
                addr, flags: old, ..
            } => {
                let keep = old & (PageFlags::ACCESSED | PageFlags::DIRTY);
                Self::encode_page(level, addr, flags | keep)
            }
            _ => raw,
        }
    }
}

/// Flag bits of a 4 KiB PTE in the flags' own positions, for encoders: bits 0..=11 and 63.
pub(crate) const PTE_FLAG_BITS: u64 = PageFlags::ALL.bits();

/// Encodes the low flag bits of a leaf at a level: PS and PAT-at-12 above level 1.
#[inline]
pub(crate) fn leaf_flag_bits(level: u8, flags: PageFlags) -> u64 {
    let f = (flags | PageFlags::PRESENT).bits();
    if level == 1 {
        f
    } else {
        let pat = if f & PageFlags::PAT.bits() != 0 {
            ENTRY_PAT_LARGE
        } else {
            0
        };
        (f & !PageFlags::PAT.bits()) | ENTRY_PAGE_SIZE | pat
    }
}

/// Decodes the low flag bits of a leaf: inverse of [`leaf_flag_bits`].
#[inline]
pub(crate) fn leaf_flags(level: u8, raw: u64) -> PageFlags {
    if level == 1 {
        PageFlags::from_bits_truncate(raw & PTE_FLAG_BITS)
    } else {
        let mut f = raw & PTE_FLAG_BITS & !ENTRY_PAGE_SIZE;
        if raw & ENTRY_PAT_LARGE != 0 {
            f |= PageFlags::PAT.bits();
        }
        PageFlags::from_bits_truncate(f)
    }
}
