//! `X86_64`: 4-level paging (CR4.PAE = 1, EFER.LME = 1) — 4 levels of 512 eight-byte
//! entries, 2 MiB pages in PDEs, 1 GiB pages in PDPTEs, NX in bit 63, 48-bit canonical
//! virtual addresses, MAXPHYADDR 52.
//!
//! Entry formats (SDM Vol. 3A, Tables 4-14 to 4-19): bits 0–8 P, R/W, U/S, PWT, PCD, A, D,
//! PS/PAT, G; 9–11 ignored; physical address in bits 51:12 (51:21 for a 2 MiB page, 51:30
//! for a 1 GiB page, with PAT in bit 12 and the bits between reserved); 52–58 ignored;
//! 59–62 protection key (left zero); 63 XD. PS is reserved in a PML4E.

use super::{leaf_flag_bits, leaf_flags, Arch, Entry, PageFlags, ENTRY_PAGE_SIZE, ENTRY_PRESENT};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};

/// Linux's start of the x86-64 kernel half (the upper canonical half).
pub const KERNEL_START: u64 = 0xFFFF_8000_0000_0000;
/// End of the lower canonical half.
pub const USER_END: u64 = 0x0000_8000_0000_0000;

const ADDR_4K: u64 = 0x000F_FFFF_FFFF_F000;
const ADDR_2M: u64 = 0x000F_FFFF_FFE0_0000;
const ADDR_1G: u64 = 0x000F_FFFF_C000_0000;
const LIN_MASK: u64 = (1 << 48) - 1;

/// x86-64 4-level paging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct X86_64;

impl Arch for X86_64 {
    const NAME: &'static str = "x86_64";
    const LEVELS: u8 = 4;
    const ENTRIES: usize = 512;
    const ENTRY_SIZE: u64 = 8;
    const INDEX_BITS: u32 = 9;
    const VA_BITS: u32 = 48;
    const SUPPORTED_FLAGS: PageFlags = PageFlags::ALL;

    fn can_map_at(level: u8) -> bool {
        (1..=3).contains(&level)
    }

    fn level_name(level: u8) -> &'static str {
        // Linux names with 4-level paging (the p4d is folded into the pgd).
        match level {
            1 => "pte",
            2 => "pmd",
            3 => "pud",
            _ => "pgd",
        }
    }

    fn to_linear(va: VirtAddr) -> Option<u64> {
        if va.is_canonical(48) {
            Some(va.as_u64() & LIN_MASK)
        } else {
            None
        }
    }

    fn from_linear(lin: u64) -> VirtAddr {
        VirtAddr::canonicalize(lin & LIN_MASK, 48)
    }

    fn user_range(&self) -> VirtRange {
        match VirtRange::new(VirtAddr::ZERO, USER_END) {
            Ok(r) => r,
            Err(_) => unreachable!("constant range"),
        }
    }

    fn kernel_range(&self) -> VirtRange {
        match VirtRange::new(VirtAddr::new(KERNEL_START), 0u64.wrapping_sub(KERNEL_START)) {
            Ok(r) => r,
            Err(_) => unreachable!("constant range"),
        }
    }

    fn phys_limit(_level: u8, _leaf: bool) -> u64 {
        1 << 52
    }

    fn encode_table(addr: PhysAddr, user: bool) -> u64 {
        let us = if user { PageFlags::USER.bits() } else { 0 };
        (addr.as_u64() & ADDR_4K) | ENTRY_PRESENT | PageFlags::WRITABLE.bits() | us
    }

    fn encode_page(level: u8, addr: PhysAddr, flags: PageFlags) -> u64 {
        let mask = match level {
            1 => ADDR_4K,
            2 => ADDR_2M,
            _ => ADDR_1G,
        };
        (addr.as_u64() & mask) | leaf_flag_bits(level, flags & Self::SUPPORTED_FLAGS)
    }

    fn decode(level: u8, raw: u64) -> Entry {
        if raw == 0 {
            return Entry::Empty;
        }
        if raw & ENTRY_PRESENT == 0 {
            return Entry::NotPresent(raw);
        }
        match level {
            1 => Entry::Page {
                addr: PhysAddr::new(raw & ADDR_4K),
                flags: leaf_flags(1, raw),
                size: 1 << 12,
            },
            2 | 3 if raw & ENTRY_PAGE_SIZE != 0 => {
                let (mask, size) = if level == 2 {
                    (ADDR_2M, 1 << 21)
                } else {
                    (ADDR_1G, 1 << 30)
                };
                Entry::Page {
                    addr: PhysAddr::new(raw & mask),
                    flags: leaf_flags(level, raw),
                    size,
                }
            }
            _ => Entry::Table {
                addr: PhysAddr::new(raw & ADDR_4K),
                flags: PageFlags::from_bits_truncate(raw & (0x17F | (1 << 63))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        assert_eq!(X86_64::level_span(2), 2 << 20);
        assert_eq!(X86_64::level_span(3), 1 << 30);
        assert_eq!(X86_64::level_span(4), 1 << 39);
        assert_eq!(X86_64::level_for_size(1 << 30), Some(3));
        assert_eq!(X86_64::level_for_size(4 << 20), None);
        assert_eq!(X86_64::level_for_size(1 << 39), None, "no 512 GiB pages");
        assert_eq!(X86_64::index(0xFFFF_8000_0000_0000 & LIN_MASK, 4), 256);
        assert_eq!(X86_64::to_linear(VirtAddr::new(0x8000_0000_0000)), None);
        assert_eq!(
            X86_64::from_linear(0xFFFF_FFFF_F000),
            VirtAddr::new(0xFFFF_FFFF_FFFF_F000)
        );
    }

    #[test]
    fn pte_bits_match_the_sdm() {
        // Table 4-19: NX is bit 63, PAT bit 7, address bits 51:12.
        let f = PageFlags::WRITABLE | PageFlags::USER | PageFlags::PAT | PageFlags::NO_EXECUTE;
        let raw = X86_64::encode_page(1, PhysAddr::new(0x000F_0000_1234_5000), f);
        assert_eq!(raw, 0x8000_0000_0000_0000 | 0x000F_0000_1234_5000 | 0x87);
        assert_eq!(
            X86_64::decode(1, raw),
            Entry::Page {
                addr: PhysAddr::new(0x000F_0000_1234_5000),
                flags: f | PageFlags::PRESENT,
                size: 4096
            }
        );
    }

    #[test]
    fn large_page_bits_match_the_sdm() {
        // Table 4-18 (2 MiB PDE) and 4-16 (1 GiB PDPTE): PS bit 7, PAT bit 12.
        let f = PageFlags::WRITABLE | PageFlags::GLOBAL | PageFlags::PAT;
        let raw = X86_64::encode_page(2, PhysAddr::new(0x4020_0000), f);
        assert_eq!(raw, 0x4020_0000 | 0x1000 | 0x100 | 0x80 | 0x3);
        let raw1g = X86_64::encode_page(3, PhysAddr::new(0x80_4000_0000), PageFlags::NO_EXECUTE);
        assert_eq!(raw1g, (1 << 63) | 0x80_4000_0000 | 0x81);
        assert!(matches!(
            X86_64::decode(3, raw1g),
            Entry::Page { size, addr, .. } if size == 1 << 30 && addr.as_u64() == 0x80_4000_0000
        ));
        assert_eq!(
            X86_64::decode(2, raw),
            Entry::Page {
                addr: PhysAddr::new(0x4020_0000),
                flags: f | PageFlags::PRESENT,
                size: 2 << 20
            }
        );
        // PS is reserved in a PML4E: level 4 always points to a table.
        assert!(matches!(X86_64::decode(4, 0x1083), Entry::Table { .. }));
    }

    #[test]
    fn reprotect_keeps_address_and_accessed_dirty() {
        let raw = X86_64::encode_page(
            2,
            PhysAddr::new(0x20_0000),
            PageFlags::WRITABLE | PageFlags::ACCESSED | PageFlags::DIRTY,
        );
        let new = X86_64::reprotect(2, raw, PageFlags::NO_EXECUTE);
        assert_eq!(new, (1 << 63) | 0x20_0000 | 0x80 | 0x60 | 0x1);
    }

    #[test]
    fn table_entry() {
        assert_eq!(X86_64::encode_table(PhysAddr::new(0x5000), true), 0x5007);
    }
}
