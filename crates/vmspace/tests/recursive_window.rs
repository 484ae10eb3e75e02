//! The i386 recursive window, on random spaces: for every mapped page, the entry read
//! through the window address (translated by the walker itself, as the MMU would) is the
//! entry the walker found — the PTE at `(slot << 22) + (va >> 12) * 4`, the PDE at
//! `(slot << 22) + (slot << 12) + (va >> 22) * 4`.

use proptest::prelude::*;
use vmspace::addr::{Frame, FrameRange, PhysAddr, VirtAddr};
use vmspace::arch::{PageFlags, I386};
use vmspace::paging::PageTable;
use vmspace::phys::{EmulatedRam, OwnedBuddyAllocator, PhysMem};

const RAM: u64 = 256 << 20;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn window_entries_are_the_walkers_entries(
        slot in prop_oneof![Just(1023u16), 0u16..1024],
        maps in prop::collection::vec((0u64..1024, 0u64..1024, any::<bool>(), 1u64..40, any::<u64>()), 1..40),
    ) {
        let arch = I386::with_recursive_slot(slot).unwrap();
        let mut ram = EmulatedRam::new(PhysAddr::ZERO, RAM).unwrap();
        let all = FrameRange::new(Frame::from_number(0).unwrap(), RAM / 4096).unwrap();
        let low = FrameRange::new(Frame::from_number(0).unwrap(), (RAM / 2) / 4096).unwrap();
        let mut fr = OwnedBuddyAllocator::new_owned(&[all], &[low]).unwrap();
        let mut pt = PageTable::new(arch, &mut ram, &mut fr).unwrap();
        for &(pde, pte, large, n, bits) in &maps {
            let flags = PageFlags::from_bits_truncate(bits);
            let pa = (bits >> 40) % (RAM / 2 / (4 << 20)) * (4 << 20);
            let r = if large {
                pt.map_range(&mut ram, &mut fr, VirtAddr::new(pde << 22), PhysAddr::new(pa), (n % 3 + 1) << 22, 4 << 20, flags)
            } else {
                pt.map_range(&mut ram, &mut fr, VirtAddr::new((pde << 22) | (pte << 12)), PhysAddr::new(pa), n << 12, 4096, flags)
            };
            let _ = r; // clashes, the window and the top of the space are refused; fine here
        }
        let mut pages = Vec::new();
        pt.translate_range(&ram, VirtAddr::ZERO, 1 << 32, |t| pages.push(t)).unwrap();
        let (ws, we) = ((slot as u64) << 22, ((slot as u64) + 1) << 22);
        for t in pages.iter().filter(|t| t.page.as_u64() < ws || t.page.as_u64() >= we) {
            let va = t.page;
            let pde_va = arch.pde_window_address(va).unwrap();
            let w = pt.translate(&ram, pde_va).unwrap();
            let (pde_at, pde_raw) = pt.entry(&ram, va, 2).unwrap().unwrap();
            prop_assert_eq!(w.phys(pde_va), pde_at);
            prop_assert_eq!(ram.read_u32(w.phys(pde_va)).unwrap() as u64, pde_raw);
            prop_assert!(!w.flags.contains(PageFlags::USER), "page tables are supervisor-only");
            if t.size == 4096 {
                let pte_va = arch.pte_window_address(va).unwrap();
                let w = pt.translate(&ram, pte_va).unwrap();
                prop_assert_eq!(w.phys(pte_va), t.entry);
                prop_assert_eq!(ram.read_u32(w.phys(pte_va)).unwrap() as u64, t.raw);
            } else {
                prop_assert_eq!(pde_raw, t.raw);
            }
        }
        // The window shows one 4 KiB page per present directory entry, the self-entry too.
        let root = pt.root().start_address();
        let present: Vec<u64> = (0..1024u64)
            .filter(|&i| ram.read_u32(PhysAddr::new(root.as_u64() + i * 4)).unwrap() & 1 == 1)
            .collect();
        let shown: Vec<u64> = pages
            .iter()
            .filter(|t| t.page.as_u64() >= ws && t.page.as_u64() < we)
            .map(|t| (t.page.as_u64() - ws) >> 12)
            .collect();
        prop_assert_eq!(shown, present);
        pt.check_invariants(&ram).unwrap();
    }
}
