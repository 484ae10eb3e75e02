//! Differential test of the x86-64 entry encoding against an independent implementation:
//! the `x86_64` crate's `PageTableEntry`, which Rust kernels load into CR3 today.

use proptest::prelude::*;
use vmspace::addr::PhysAddr;
use vmspace::arch::{Arch, Entry, PageFlags, X86_64};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::PageTableFlags as F;

/// The crate's flags for ours (bit positions are the SDM's in both).
fn theirs(f: PageFlags) -> F {
    let mut t = F::empty();
    let pairs = [
        (PageFlags::PRESENT, F::PRESENT),
        (PageFlags::WRITABLE, F::WRITABLE),
        (PageFlags::USER, F::USER_ACCESSIBLE),
        (PageFlags::WRITE_THROUGH, F::WRITE_THROUGH),
        (PageFlags::NO_CACHE, F::NO_CACHE),
        (PageFlags::ACCESSED, F::ACCESSED),
        (PageFlags::DIRTY, F::DIRTY),
        (PageFlags::GLOBAL, F::GLOBAL),
        (PageFlags::AVL0, F::BIT_9),
        (PageFlags::AVL1, F::BIT_10),
        (PageFlags::AVL2, F::BIT_11),
        (PageFlags::NO_EXECUTE, F::NO_EXECUTE),
    ];
    for (ours, th) in pairs {
        if f.contains(ours) {
            t |= th;
        }
    }
    t
}

fn raw(e: &PageTableEntry) -> u64 {
    e.addr().as_u64() | e.flags().bits()
}

proptest! {
    #[test]
    fn pte_matches_the_x86_64_crate(frame in 0u64..(1 << 40), bits in any::<u64>()) {
        let pa = frame << 12;
        // 4 KiB PTE: bit 7 is PAT, which the crate calls HUGE_PAGE (same bit).
        let flags = PageFlags::from_bits_truncate(bits) | PageFlags::PRESENT;
        let mut e = PageTableEntry::new();
        let mut t = theirs(flags);
        if flags.contains(PageFlags::PAT) {
            t |= F::HUGE_PAGE;
        }
        e.set_addr(x86_64::PhysAddr::new(pa), t);
        prop_assert_eq!(X86_64::encode_page(1, PhysAddr::new(pa), flags), raw(&e));
        prop_assert_eq!(
            X86_64::decode(1, raw(&e)),
            Entry::Page { addr: PhysAddr::new(pa), flags, size: 4096 }
        );
    }

    #[test]
    fn large_pages_match_the_x86_64_crate(frame in 0u64..(1 << 31), bits in any::<u64>(), gib in any::<bool>()) {
        let (level, size) = if gib { (3u8, 1u64 << 30) } else { (2, 2 << 20) };
        let pa = (frame << 21) & !(size - 1) & ((1 << 52) - 1);
        // PAT of a large page lives in bit 12, which the crate treats as an address bit.
        let flags = (PageFlags::from_bits_truncate(bits) - PageFlags::PAT) | PageFlags::PRESENT;
        let mut e = PageTableEntry::new();
        e.set_addr(x86_64::PhysAddr::new(pa), theirs(flags) | F::HUGE_PAGE);
        prop_assert_eq!(X86_64::encode_page(level, PhysAddr::new(pa), flags), raw(&e));
        prop_assert_eq!(
            X86_64::decode(level, raw(&e)),
            Entry::Page { addr: PhysAddr::new(pa), flags, size }
        );
        // With PAT: the crate's view is address bit 12 set.
        let with_pat = X86_64::encode_page(level, PhysAddr::new(pa), flags | PageFlags::PAT);
        prop_assert_eq!(with_pat, raw(&e) | (1 << 12));
    }

    #[test]
    fn table_entries_match_the_x86_64_crate(frame in 0u64..(1 << 40), user in any::<bool>()) {
        let pa = frame << 12;
        let mut e = PageTableEntry::new();
        let mut t = F::PRESENT | F::WRITABLE;
        if user {
            t |= F::USER_ACCESSIBLE;
        }
        e.set_addr(x86_64::PhysAddr::new(pa), t);
        prop_assert_eq!(X86_64::encode_table(PhysAddr::new(pa), user), raw(&e));
    }
}
