//! `I386`: 32-bit paging (CR4.PAE = 0, CR4.PSE = 1) — 2 levels of 1024 four-byte entries,
//! 4 MiB PSE pages (with PSE-36 physical bits 39:32), and a recursively mapped page
//! directory.
//!
//! With the recursive slot `s` (default 1023) the page directory's entry `s` points at the
//! directory itself, so in the running space the PTE of `va` is visible at
//! `(s << 22) + (va >> 12) * 4` and its PDE at `(s << 22) + (s << 12) + (va >> 22) * 4`
//! (0xFFC00000 and 0xFFFFF000 for slot 1023). The walker never maps into that 4 MiB window.
//!
//! Entry formats (SDM Vol. 3A, Tables 4-4 to 4-6): bits 0–8 P, R/W, U/S, PWT, PCD, A, D,
//! PS/PAT, G; 9–11 ignored; a 4 KiB PTE or a PDE pointing to a table holds physical bits
//! 31:12 in bits 31:12; a 4 MiB PDE holds PAT in bit 12, physical bits 39:32 in bits 20:13,
//! bit 21 reserved, physical bits 31:22 in bits 31:22. There is no NX bit.

use super::{leaf_flag_bits, leaf_flags, Arch, Entry, PageFlags, ENTRY_PAGE_SIZE, ENTRY_PRESENT};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};

/// Linux's default `PAGE_OFFSET` on i386 (CONFIG_VMSPLIT_3G): the kernel half starts here.
pub const PAGE_OFFSET: u64 = 0xC000_0000;
/// The default recursive slot: the last page-directory entry.
pub const DEFAULT_RECURSIVE_SLOT: u16 = 1023;

const ADDR_4K: u64 = 0xFFFF_F000;
const ADDR_4M_LOW: u64 = 0xFFC0_0000;
const ADDR_4M_HIGH_BITS: u64 = 0x001F_E000; // bits 20:13 hold physical bits 39:32

/// 32-bit x86 paging with PSE, optionally with a recursive page-directory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct I386 {
    recursive_slot: Option<u16>,
}

impl Default for I386 {
    /// Recursive slot 1023.
    fn default() -> Self {
        I386 {
            recursive_slot: Some(DEFAULT_RECURSIVE_SLOT),
        }
    }
}

impl I386 {
    /// The recursive mapping in slot 1023.
    pub const fn new() -> Self {
        I386 {
            recursive_slot: Some(DEFAULT_RECURSIVE_SLOT),
        }
    }

    /// The recursive mapping in `slot`; `None` if `slot` is not below 1024.
    pub const fn with_recursive_slot(slot: u16) -> Option<Self> {
        if slot < 1024 {
            Some(I386 {
                recursive_slot: Some(slot),
            })
        } else {
            None
        }
    }

    /// No recursive mapping: all 4 GiB can be mapped.
    pub const fn without_recursive_mapping() -> Self {
        I386 {
            recursive_slot: None,
        }
    }

    /// Where the PTE of `va` is visible through the recursive window, if there is one and
    /// `va` is a 32-bit address.
    pub fn pte_window_address(&self, va: VirtAddr) -> Option<VirtAddr> {
        let slot = self.recursive_slot? as u64;
        let va = va.as_u64();
        if va >> 32 != 0 {
            return None;
        }
        Some(VirtAddr::new((slot << 22) + (va >> 12) * 4))
    }

    /// Where the PDE of `va` is visible through the recursive window (the directory itself
    /// appears at `(slot << 22) + (slot << 12)`).
    pub fn pde_window_address(&self, va: VirtAddr) -> Option<VirtAddr> {
        let slot = self.recursive_slot? as u64;
        let va = va.as_u64();
        if va >> 32 != 0 {
            return None;
        }
        Some(VirtAddr::new((slot << 22) + (slot << 12) + (va >> 22) * 4))
    }
}

impl Arch for I386 {
    const NAME: &'static str = "i386";
    const LEVELS: u8 = 2;
    const ENTRIES: usize = 1024;
    const ENTRY_SIZE: u64 = 4;
    const INDEX_BITS: u32 = 10;
    const VA_BITS: u32 = 32;
    const SUPPORTED_FLAGS: PageFlags = PageFlags::ALL.difference(PageFlags::NO_EXECUTE);

    fn can_map_at(level: u8) -> bool {
        level == 1 || level == 2
    }

    fn level_name(level: u8) -> &'static str {
        // Linux folds p4d, pud and pmd into the pgd on 2-level i386.
        match level {
            1 => "pte",
            _ => "pgd",
        }
    }

    fn to_linear(va: VirtAddr) -> Option<u64> {
        if va.as_u64() >> 32 == 0 {
            Some(va.as_u64())
        } else {
            None
        }
    }

    fn from_linear(lin: u64) -> VirtAddr {
        VirtAddr::new(lin & 0xFFFF_FFFF)
    }

    fn user_range(&self) -> VirtRange {
        match VirtRange::new(VirtAddr::ZERO, PAGE_OFFSET) {
            Ok(r) => r,
            Err(_) => unreachable!("constant range"),
        }
    }

    fn kernel_range(&self) -> VirtRange {
        match VirtRange::new(VirtAddr::new(PAGE_OFFSET), (1 << 32) - PAGE_OFFSET) {
            Ok(r) => r,
            Err(_) => unreachable!("constant range"),
        }
    }

    fn recursive_slot(&self) -> Option<usize> {
        self.recursive_slot.map(usize::from)
    }

    fn phys_limit(level: u8, leaf: bool) -> u64 {
        if leaf && level == 2 {
            1 << 40 // PSE-36: a 4 MiB page may lie below 2^40
        } else {
            1 << 32
        }
    }

    fn encode_table(addr: PhysAddr, user: bool) -> u64 {
        let us = if user { PageFlags::USER.bits() } else { 0 };
        (addr.as_u64() & ADDR_4K) | ENTRY_PRESENT | PageFlags::WRITABLE.bits() | us
    }

    fn encode_page(level: u8, addr: PhysAddr, flags: PageFlags) -> u64 {
        let bits = leaf_flag_bits(level, flags & Self::SUPPORTED_FLAGS);
        let a = addr.as_u64();
        if level == 1 {
            (a & ADDR_4K) | bits
        } else {
            (a & ADDR_4M_LOW) | (((a >> 32) & 0xFF) << 13) | bits
        }
    }

    fn decode(level: u8, raw: u64) -> Entry {
        let raw = raw & 0xFFFF_FFFF;
        if raw == 0 {
            return Entry::Empty;
        }
        if raw & ENTRY_PRESENT == 0 {
            return Entry::NotPresent(raw);
        }
        if level == 1 {
            Entry::Page {
                addr: PhysAddr::new(raw & ADDR_4K),
                flags: leaf_flags(1, raw),
                size: 1 << 12,
            }
        } else if raw & ENTRY_PAGE_SIZE != 0 {
            let addr = (raw & ADDR_4M_LOW) | (((raw & ADDR_4M_HIGH_BITS) >> 13) << 32);
            Entry::Page {
                addr: PhysAddr::new(addr),
                flags: leaf_flags(2, raw),
                size: 1 << 22,
            }
        } else {
            Entry::Table {
                addr: PhysAddr::new(raw & ADDR_4K),
                flags: PageFlags::from_bits_truncate(raw & 0x17F),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        assert_eq!(I386::level_span(1), 4096);
        assert_eq!(I386::level_span(2), 4 << 20);
        assert_eq!(I386::level_for_size(4 << 20), Some(2));
        assert_eq!(I386::level_for_size(2 << 20), None);
        assert_eq!(I386::index(0xFFC0_1000, 2), 1023);
        assert_eq!(I386::index(0xFFC0_1000, 1), 1);
        assert_eq!(I386::to_linear(VirtAddr::new(1 << 32)), None);
    }

    #[test]
    fn pte_bits_match_the_sdm() {
        // Table 4-6: frame 0x12345000, P R/W U/S PWT PCD A D PAT G, bit 9 for software.
        let f = PageFlags::WRITABLE
            | PageFlags::USER
            | PageFlags::WRITE_THROUGH
            | PageFlags::NO_CACHE
            | PageFlags::ACCESSED
            | PageFlags::DIRTY
            | PageFlags::PAT
            | PageFlags::GLOBAL
            | PageFlags::AVL0
            | PageFlags::NO_EXECUTE; // dropped: no NX in 32-bit paging
        let raw = I386::encode_page(1, PhysAddr::new(0x1234_5000), f);
        assert_eq!(raw, 0x1234_53FF);
        assert_eq!(
            I386::decode(1, raw),
            Entry::Page {
                addr: PhysAddr::new(0x1234_5000),
                flags: (f - PageFlags::NO_EXECUTE) | PageFlags::PRESENT,
                size: 4096
            }
        );
    }

    #[test]
    fn pse_pde_bits_match_the_sdm() {
        // Table 4-4: 4 MiB page at physical 0xAB_C040_0000 (PSE-36), PAT moves to bit 12.
        let raw = I386::encode_page(
            2,
            PhysAddr::new(0xAB_C040_0000),
            PageFlags::WRITABLE | PageFlags::PAT | PageFlags::GLOBAL,
        );
        assert_eq!(
            raw,
            0xC040_0000 | (0xAB << 13) | 0x1000 | 0x100 | 0x80 | 0x2 | 0x1
        );
        assert_eq!(raw & (1 << 21), 0, "bit 21 is reserved");
        match I386::decode(2, raw) {
            Entry::Page { addr, flags, size } => {
                assert_eq!(addr, PhysAddr::new(0xAB_C040_0000));
                assert_eq!(
                    flags,
                    PageFlags::PRESENT | PageFlags::WRITABLE | PageFlags::PAT | PageFlags::GLOBAL
                );
                assert_eq!(size, 4 << 20);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn table_pde_bits() {
        let raw = I386::encode_table(PhysAddr::new(0x0030_0000), true);
        assert_eq!(raw, 0x0030_0007);
        assert_eq!(
            I386::encode_table(PhysAddr::new(0x0030_0000), false),
            0x0030_0003
        );
        assert!(
            matches!(I386::decode(2, raw), Entry::Table { addr, .. } if addr.as_u64() == 0x30_0000)
        );
        assert_eq!(I386::decode(2, 0), Entry::Empty);
        assert_eq!(I386::decode(1, 0x600), Entry::NotPresent(0x600));
    }

    #[test]
    fn recursive_windows() {
        let a = I386::new();
        assert_eq!(
            a.pte_window_address(VirtAddr::new(0x0804_8000)),
            Some(VirtAddr::new(0xFFC0_0000 + (0x0804_8000 >> 12) * 4))
        );
        assert_eq!(
            a.pde_window_address(VirtAddr::new(0xC000_0000)),
            Some(VirtAddr::new(0xFFFF_F000 + 768 * 4))
        );
        let b = I386::with_recursive_slot(768).unwrap();
        assert_eq!(
            b.pde_window_address(VirtAddr::ZERO),
            Some(VirtAddr::new((768 << 22) + (768 << 12)))
        );
        assert!(I386::with_recursive_slot(1024).is_none());
        assert_eq!(
            I386::without_recursive_mapping().pte_window_address(VirtAddr::ZERO),
            None
        );
    }
}
