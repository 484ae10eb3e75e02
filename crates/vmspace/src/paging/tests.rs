//! Unit tests of the walker on both architectures in emulated RAM.

extern crate alloc;
use super::testutil::BitmapFrames;
use super::*;
use crate::addr::{Frame, PhysAddr, VirtAddr};
use crate::arch::{PageFlags, I386, X86_64};
use crate::phys::{EmulatedRam, PhysError};

const K4: u64 = 4 << 10;
const M2: u64 = 2 << 20;
const M4: u64 = 4 << 20;
const G1: u64 = 1 << 30;
const RW: PageFlags = PageFlags::WRITABLE;

/// 64 MiB of RAM at 0; table frames come from the top 4 MiB.
fn setup() -> (EmulatedRam, BitmapFrames) {
    let ram = EmulatedRam::new(PhysAddr::ZERO, 64 << 20).unwrap();
    let frames = BitmapFrames::new(PhysAddr::new(60 << 20), 1024);
    (ram, frames)
}

fn va(x: u64) -> VirtAddr {
    VirtAddr::new(x)
}
fn pa(x: u64) -> PhysAddr {
    PhysAddr::new(x)
}

#[test]
fn x86_64_map_translate_unmap_4k() {
    let (mut ram, mut fr) = setup();
    let free0 = fr.free_frames();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    assert_eq!(pt.table_pages(), 1);
    pt.map(
        &mut ram,
        &mut fr,
        va(0x40_1000),
        pa(0x3000),
        K4,
        RW | PageFlags::USER,
    )
    .unwrap();
    assert_eq!(pt.table_pages(), 4);
    let t = pt.translate(&ram, va(0x40_1abc)).unwrap();
    assert_eq!(t.phys(va(0x40_1abc)), pa(0x3abc));
    assert_eq!(t.size, K4);
    assert_eq!(t.level, 1);
    assert_eq!(t.flags, PageFlags::PRESENT | RW | PageFlags::USER);
    assert_eq!(ram.read_u64(t.entry).unwrap(), t.raw);
    assert_eq!(t.raw, 0x3000 | 0x7);
    assert_eq!(
        pt.translate(&ram, va(0x40_2000)),
        Err(TranslateError::NotMapped(va(0x40_2000)))
    );
    assert_eq!(pt.count_tables(&ram).unwrap(), 4);
    let (frame, flush) = pt.unmap(&mut ram, &mut fr, va(0x40_1000), K4).unwrap();
    assert_eq!(frame, pa(0x3000));
    assert_eq!(flush, Flush::Page(va(0x40_1000)));
    assert_eq!(pt.table_pages(), 1);
    assert_eq!(pt.count_tables(&ram).unwrap(), 1);
    assert_eq!(fr.free_frames(), free0 - 1);
    pt.destroy(&mut ram, &mut fr, |_, _, _| {}).unwrap();
    assert_eq!(fr.free_frames(), free0);
}

#[test]
fn x86_64_large_pages() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    pt.map(&mut ram, &mut fr, va(0x20_0000), pa(0x40_0000), M2, RW)
        .unwrap();
    let t = pt.translate(&ram, va(0x2f_f123)).unwrap();
    assert_eq!(
        (t.size, t.level, t.phys(va(0x2f_f123))),
        (M2, 2, pa(0x4f_f123))
    );
    assert_eq!(t.raw & 0x80, 0x80, "PS set");
    assert_eq!(pt.table_pages(), 3);
    // A 1 GiB page needs 1 GiB of RAM: use a larger emulated RAM lazily zeroed.
    let mut big = EmulatedRam::new(PhysAddr::ZERO, 2 * G1).unwrap();
    let mut fr2 = BitmapFrames::new(pa(G1 + (60 << 20)), 64);
    let mut pt2 = PageTable::new(X86_64, &mut big, &mut fr2).unwrap();
    pt2.map(
        &mut big,
        &mut fr2,
        va(0xffff_ffff_c000_0000),
        pa(0),
        G1,
        RW | PageFlags::GLOBAL,
    )
    .unwrap();
    let t = pt2.translate(&big, va(0xffff_ffff_ffff_ffff)).unwrap();
    assert_eq!((t.size, t.level, t.phys(va(u64::MAX))), (G1, 3, pa(G1 - 1)));
    assert_eq!(
        pt2.unmap(&mut big, &mut fr2, va(0xffff_ffff_c000_0000), M2),
        Err(UnmapError::PartOfLargePage {
            va: va(0xffff_ffff_c000_0000),
            page: va(0xffff_ffff_c000_0000),
            size: G1
        })
    );
    assert!(pt2
        .unmap(&mut big, &mut fr2, va(0xffff_ffff_c000_0000), G1)
        .is_ok());
    assert_eq!(pt2.table_pages(), 1);
}

#[test]
fn overlapping_maps_are_refused() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    pt.map(&mut ram, &mut fr, va(0x1000), pa(0x1000), K4, RW)
        .unwrap();
    assert_eq!(
        pt.map(&mut ram, &mut fr, va(0x1000), pa(0x2000), K4, RW),
        Err(MapError::AlreadyMapped(va(0x1000)))
    );
    assert_eq!(
        pt.map(&mut ram, &mut fr, va(0), pa(0), M2, RW),
        Err(MapError::TableInTheWay(va(0)))
    );
    pt.map(&mut ram, &mut fr, va(M2), pa(M2), M2, RW).unwrap();
    assert_eq!(
        pt.map(&mut ram, &mut fr, va(M2 + 0x5000), pa(0), K4, RW),
        Err(MapError::AlreadyMapped(va(M2 + 0x5000)))
    );
    let before = pt.table_pages();
    assert_eq!(
        pt.map_range(&mut ram, &mut fr, va(0x10_0000), pa(0), 0x20_0000, K4, RW),
        Err(MapError::AlreadyMapped(va(M2)))
    );
    // The part mapped before the conflict is rolled back.
    assert_eq!(pt.table_pages(), before);
    assert!(pt.translate(&ram, va(0x10_0000)).is_err());
    assert!(pt.translate(&ram, va(0x1000)).is_ok());
}

#[test]
fn bad_input_is_a_typed_error() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    let e = pt.map(&mut ram, &mut fr, va(0x1234), pa(0), K4, RW);
    assert_eq!(
        e,
        Err(MapError::Misaligned {
            addr: 0x1234,
            align: K4
        })
    );
    let e = pt.map(&mut ram, &mut fr, va(0x1000), pa(0x10), K4, RW);
    assert_eq!(
        e,
        Err(MapError::Misaligned {
            addr: 0x10,
            align: K4
        })
    );
    let e = pt.map_range(&mut ram, &mut fr, va(0x1000), pa(0), 0x1800, K4, RW);
    assert_eq!(
        e,
        Err(MapError::Misaligned {
            addr: 0x1800,
            align: K4
        })
    );
    let e = pt.map(&mut ram, &mut fr, va(0x8000_0000_0000), pa(0), K4, RW);
    assert_eq!(e, Err(MapError::NonCanonical(va(0x8000_0000_0000))));
    let e = pt.map_range(
        &mut ram,
        &mut fr,
        va(0x7fff_ffff_f000),
        pa(0),
        0x2000,
        K4,
        RW,
    );
    assert_eq!(e, Err(MapError::NonCanonical(va(0x8000_0000_0000))));
    let e = pt.map_range(
        &mut ram,
        &mut fr,
        va(0xffff_ffff_ffff_f000),
        pa(0),
        0x2000,
        K4,
        RW,
    );
    assert_eq!(e, Err(MapError::Wraps));
    let e = pt.map_range(
        &mut ram,
        &mut fr,
        va(0x1000),
        pa(u64::MAX - 0xfff),
        0x2000,
        K4,
        RW,
    );
    assert_eq!(e, Err(MapError::Wraps));
    let e = pt.map(&mut ram, &mut fr, va(0x1000), pa(64 << 20), K4, RW);
    assert_eq!(e, Err(MapError::FrameOutOfRange(pa(64 << 20))));
    let e = pt.map(&mut ram, &mut fr, va(0), pa(0), M4, RW);
    assert_eq!(e, Err(MapError::UnsupportedPageSize(M4)));
    assert_eq!(
        pt.unmap(&mut ram, &mut fr, va(0x1000), K4),
        Err(UnmapError::NotMapped(va(0x1000)))
    );
    assert_eq!(
        pt.protect(&mut ram, va(0x1000), K4, RW),
        Err(ProtectError::NotMapped(va(0x1000)))
    );
    assert_eq!(
        pt.translate(&ram, va(0x8000_0000_0000)),
        Err(TranslateError::NonCanonical(va(0x8000_0000_0000)))
    );
    // Zero-length ranges are no-ops.
    assert_eq!(
        pt.map_range(&mut ram, &mut fr, va(0x1000), pa(0), 0, K4, RW),
        Ok(())
    );
    assert_eq!(
        pt.unmap_range(&mut ram, &mut fr, va(0x1000), 0, |_, _, _| {}),
        Ok(Flush::Nothing)
    );
    assert_eq!(pt.table_pages(), 1);
    // The very top of the space: a range that ends at 2^64.
    pt.map_range(
        &mut ram,
        &mut fr,
        va(0xffff_ffff_ffe0_0000),
        pa(0),
        M2,
        K4,
        RW,
    )
    .unwrap();
    assert_eq!(
        pt.translate(&ram, va(u64::MAX)).unwrap().phys(va(u64::MAX)),
        pa(M2 - 1)
    );
    let mut n = 0;
    let f = pt
        .unmap_range(
            &mut ram,
            &mut fr,
            va(0xffff_ffff_ff00_0000),
            0x100_0000,
            |_, _, _| n += 1,
        )
        .unwrap();
    assert_eq!(n, 512);
    assert!(f.covers(va(u64::MAX)));
    assert_eq!(pt.table_pages(), 1);
}

#[test]
fn out_of_frames_changes_nothing() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    pt.map(&mut ram, &mut fr, va(0x1000), pa(0x1000), K4, RW)
        .unwrap();
    let free = fr.free_frames();
    for budget in 0..3 {
        fr.budget = Some(budget);
        // Needs a PDPT, a PD and a PT under a fresh PML4 slot.
        assert_eq!(
            pt.map(&mut ram, &mut fr, va(0x80_0000_0000), pa(0), K4, RW),
            Err(MapError::OutOfFrames)
        );
        assert_eq!(fr.free_frames(), free);
        assert_eq!(pt.table_pages(), 4);
    }
    // A range that needs 3 PTs under an existing PD: fails at the 3rd, unmaps the first two.
    fr.budget = Some(2);
    assert_eq!(
        pt.map_range(&mut ram, &mut fr, va(0x20_0000), pa(0), 3 * M2, K4, RW),
        Err(MapError::OutOfFrames)
    );
    assert_eq!(fr.free_frames(), free);
    assert_eq!(pt.table_pages(), 4);
    assert_eq!(pt.count_tables(&ram).unwrap(), 4);
    assert!(pt.translate(&ram, va(0x20_0000)).is_err());
    // ... and across upper levels: fresh PDPT + PD + PTs.
    fr.budget = Some(4);
    assert_eq!(
        pt.map_range(
            &mut ram,
            &mut fr,
            va(0x100_0000_0000),
            pa(0),
            3 * M2,
            K4,
            RW
        ),
        Err(MapError::OutOfFrames)
    );
    assert_eq!(fr.free_frames(), free);
    assert_eq!(pt.count_tables(&ram).unwrap(), 4);
    fr.budget = None;
    pt.map_range(
        &mut ram,
        &mut fr,
        va(0x100_0000_0000),
        pa(0),
        3 * M2,
        K4,
        RW,
    )
    .unwrap();
    assert_eq!(pt.table_pages(), 4 + 2 + 3);
}

#[test]
fn ranges_cutting_large_pages_are_refused() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    pt.map_range(&mut ram, &mut fr, va(M2), pa(M2), 2 * M2, M2, RW)
        .unwrap();
    pt.map_range(&mut ram, &mut fr, va(0x1000), pa(0x1000), 0x3000, K4, RW)
        .unwrap();
    let e = pt.unmap_range(&mut ram, &mut fr, va(0x1000), M2 + 0x1000, |_, _, _| {});
    assert_eq!(
        e,
        Err(UnmapError::PartOfLargePage {
            va: va(M2),
            page: va(M2),
            size: M2
        })
    );
    let e = pt.protect_range(&mut ram, va(M2 + 0x1000), M2, PageFlags::empty());
    assert_eq!(
        e,
        Err(ProtectError::PartOfLargePage {
            va: va(M2 + 0x1000),
            page: va(M2),
            size: M2
        })
    );
    assert!(pt.translate(&ram, va(0x1000)).is_ok());
    assert_eq!(
        pt.translate(&ram, va(M2)).unwrap().flags,
        PageFlags::PRESENT | RW
    );
    // A whole-page range works and mixes sizes.
    let mut seen = alloc::vec::Vec::new();
    let f = pt
        .unmap_range(&mut ram, &mut fr, va(0), 3 * M2, |v, p, s| {
            seen.push((v, p, s))
        })
        .unwrap();
    assert_eq!(
        f,
        Flush::Range {
            start: va(0),
            len: 3 * M2
        }
    );
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[3], (va(M2), pa(M2), M2));
    assert_eq!(pt.table_pages(), 1);
}

#[test]
fn protect_keeps_frame_and_accessed_dirty() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    pt.map_range(
        &mut ram,
        &mut fr,
        va(0x10_0000),
        pa(0x20_0000),
        0x4000,
        K4,
        RW | PageFlags::USER,
    )
    .unwrap();
    // The CPU sets A and D on the second page.
    let t = pt.translate(&ram, va(0x10_1000)).unwrap();
    ram.write_u64(t.entry, t.raw | 0x60).unwrap();
    let f = pt
        .protect_range(
            &mut ram,
            va(0x10_0000),
            0x4000,
            PageFlags::USER | PageFlags::NO_EXECUTE,
        )
        .unwrap();
    let mut tlb = RecordingTlb::default();
    f.flush(&mut tlb);
    assert!(tlb.covers(va(0x10_3000)));
    let t = pt.translate(&ram, va(0x10_1000)).unwrap();
    assert_eq!(t.frame, pa(0x20_1000));
    assert_eq!(
        t.flags,
        PageFlags::PRESENT
            | PageFlags::USER
            | PageFlags::NO_EXECUTE
            | PageFlags::ACCESSED
            | PageFlags::DIRTY
    );
    let f = pt
        .protect(
            &mut ram,
            va(0x10_0000),
            K4,
            PageFlags::USER | PageFlags::NO_EXECUTE,
        )
        .unwrap();
    assert_eq!(f, Flush::Nothing, "no change, nothing to flush");
    let f = pt.protect(&mut ram, va(0x10_0000), K4, RW).unwrap();
    assert_eq!(f, Flush::Page(va(0x10_0000)));
    assert_eq!(
        pt.protect(&mut ram, va(0), M2, RW),
        Err(ProtectError::NotLargePage(va(0)))
    );
    let f = pt
        .protect_range(&mut ram, va(0x40_0000), 0x1000, RW)
        .unwrap();
    assert_eq!(f, Flush::Nothing, "hole");
}

#[test]
fn i386_pse_and_no_nx() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(I386::without_recursive_mapping(), &mut ram, &mut fr).unwrap();
    pt.map(
        &mut ram,
        &mut fr,
        va(0xC000_0000),
        pa(0),
        M4,
        RW | PageFlags::GLOBAL | PageFlags::NO_EXECUTE,
    )
    .unwrap();
    let t = pt.translate(&ram, va(0xC012_3456)).unwrap();
    assert_eq!(
        (t.size, t.level, t.phys(va(0xC012_3456))),
        (M4, 2, pa(0x12_3456))
    );
    assert_eq!(
        t.flags,
        PageFlags::PRESENT | RW | PageFlags::GLOBAL,
        "no NX in 32-bit paging"
    );
    assert_eq!(t.raw, 0x183);
    assert_eq!(ram.read_u32(t.entry).unwrap() as u64, t.raw);
    assert_eq!(pt.table_pages(), 1);
    // 4 GiB is the end of the space; the last page can be mapped without a recursive slot.
    pt.map(&mut ram, &mut fr, va(0xFFFF_F000), pa(0x5000), K4, RW)
        .unwrap();
    assert_eq!(
        pt.translate(&ram, va(0xFFFF_FFFF))
            .unwrap()
            .phys(va(0xFFFF_FFFF)),
        pa(0x5fff)
    );
    assert_eq!(
        pt.map(&mut ram, &mut fr, va(0x1_0000_0000), pa(0), K4, RW),
        Err(MapError::NonCanonical(va(0x1_0000_0000)))
    );
    assert_eq!(
        pt.map_range(&mut ram, &mut fr, va(0xFFFF_F000), pa(0), 0x2000, K4, RW),
        Err(MapError::NonCanonical(va(0x1_0000_0000)))
    );
    assert_eq!(
        pt.map(&mut ram, &mut fr, va(0), pa(0), M2, RW),
        Err(MapError::UnsupportedPageSize(M2))
    );
    // 4 KiB frames above 4 GiB cannot be expressed.
    assert_eq!(
        pt.map(&mut ram, &mut fr, va(0), pa(1 << 32), K4, RW),
        Err(MapError::FrameOutOfRange(pa(1 << 32)))
    );
}

/// Builds an i386 space with the recursive slot and checks, for every mapped page, that
/// the PTE read through the recursive window (translated by the walker itself) is the
/// entry the walker found, and likewise the PDE through the directory window.
fn recursive_window_proof(arch: I386) {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(arch, &mut ram, &mut fr).unwrap();
    let u = PageFlags::USER | RW;
    pt.map_range(
        &mut ram,
        &mut fr,
        va(0x0804_8000),
        pa(0x10_0000),
        0x5000,
        K4,
        u,
    )
    .unwrap();
    pt.map_range(
        &mut ram,
        &mut fr,
        va(0xBFFF_0000),
        pa(0x20_0000),
        0x1_0000,
        K4,
        u,
    )
    .unwrap();
    pt.map_range(
        &mut ram,
        &mut fr,
        va(0xC000_0000),
        pa(0),
        2 * M4,
        M4,
        RW | PageFlags::GLOBAL,
    )
    .unwrap();
    pt.map(&mut ram, &mut fr, va(0xC080_0000), pa(0x30_0000), K4, RW)
        .unwrap();
    let (ws, _) = pt.window().unwrap();
    assert_eq!(
        pt.map(&mut ram, &mut fr, va(ws + 0x3000), pa(0), K4, RW),
        Err(MapError::Reserved(va(ws + 0x3000)))
    );
    let mut checked = 0;
    let mut vas = alloc::vec::Vec::new();
    pt.translate_range(&ram, va(0), 1 << 32, |t| {
        if !(t.page.as_u64() >= ws && t.page.as_u64() < ws + M4) {
            vas.push((t.page, t.size));
        }
    })
    .unwrap();
    assert_eq!(vas.len(), 5 + 16 + 2 + 1);
    for &(v, size) in &vas {
        let t = pt.translate(&ram, v).unwrap();
        // PDE through the directory window.
        let pde_va = arch.pde_window_address(v).unwrap();
        let w = pt.translate(&ram, pde_va).unwrap();
        let (pde_at, pde_raw) = pt.entry(&ram, v, 2).unwrap().unwrap();
        assert_eq!(w.phys(pde_va), pde_at);
        assert_eq!(ram.read_u32(w.phys(pde_va)).unwrap() as u64, pde_raw);
        // The window pages are supervisor-only, so user code cannot read page tables.
        assert!(!w.flags.contains(PageFlags::USER));
        if size == K4 {
            let pte_va = arch.pte_window_address(v).unwrap();
            let w = pt.translate(&ram, pte_va).unwrap();
            assert_eq!(w.phys(pte_va), t.entry);
            assert_eq!(ram.read_u32(w.phys(pte_va)).unwrap() as u64, t.raw);
        } else {
            assert_eq!(pde_raw, t.raw, "a 4 MiB page's leaf is its PDE");
        }
        checked += 1;
    }
    assert_eq!(checked, 24);
    // The directory maps itself at (slot << 22) + (slot << 12).
    let self_va = arch.pde_window_address(va(0)).unwrap();
    assert_eq!(
        pt.translate(&ram, self_va).unwrap().frame,
        pt.root().start_address()
    );
    // Tearing down everything outside the window leaves the root only.
    pt.unmap_range(&mut ram, &mut fr, va(0), ws, |_, _, _| {})
        .unwrap()
        .ignore();
    let top = ws + M4;
    if top < 1 << 32 {
        pt.unmap_range(&mut ram, &mut fr, va(top), (1 << 32) - top, |_, _, _| {})
            .unwrap()
            .ignore();
    }
    assert_eq!(pt.table_pages(), 1);
}

#[test]
fn i386_recursive_window_default_slot() {
    recursive_window_proof(I386::new());
    assert_eq!(I386::new().pte_window_address(va(0)), Some(va(0xFFC0_0000)));
    assert_eq!(I386::new().pde_window_address(va(0)), Some(va(0xFFFF_F000)));
}

#[test]
fn i386_recursive_window_other_slot() {
    recursive_window_proof(I386::with_recursive_slot(1000).unwrap());
}

#[test]
fn table_frames_must_be_addressable() {
    // An allocator handing out frames above 4 GiB cannot give i386 tables.
    let mut ram = EmulatedRam::new(PhysAddr::new(1 << 32), 1 << 20).unwrap();
    let mut fr = BitmapFrames::new(PhysAddr::new(1 << 32), 256);
    assert_eq!(
        PageTable::new(I386::new(), &mut ram, &mut fr).map(|_| ()),
        Err(MapError::FrameOutOfRange(pa(1 << 32)))
    );
    assert_eq!(fr.free_frames(), 256);
    // Frames the allocator hands out but RAM does not hold: a Phys error, nothing leaks.
    let mut small = EmulatedRam::new(PhysAddr::ZERO, 1 << 20).unwrap();
    let mut far = BitmapFrames::new(PhysAddr::new(2 << 20), 4);
    assert!(matches!(
        PageTable::new(X86_64, &mut small, &mut far),
        Err(MapError::Phys(PhysError::OutOfRange { .. }))
    ));
    assert_eq!(far.free_frames(), 4);
}

#[test]
fn page_at_a_time_unmap_frees_tables_in_either_order() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    let n = 1200u64;
    for i in 0..n {
        pt.map(
            &mut ram,
            &mut fr,
            va(0x7f00_0000_0000 + i * K4),
            pa(i * K4),
            K4,
            RW,
        )
        .unwrap();
    }
    assert_eq!(pt.table_pages(), 1 + 1 + 1 + 3);
    for i in (0..n).rev().step_by(2) {
        pt.unmap(&mut ram, &mut fr, va(0x7f00_0000_0000 + i * K4), K4)
            .unwrap()
            .1
            .ignore();
    }
    for i in (0..n).step_by(2) {
        pt.unmap(&mut ram, &mut fr, va(0x7f00_0000_0000 + i * K4), K4)
            .unwrap()
            .1
            .ignore();
    }
    assert_eq!(pt.table_pages(), 1);
    assert_eq!(pt.count_tables(&ram).unwrap(), 1);
}

#[test]
fn walk_reports_every_entry() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(I386::new(), &mut ram, &mut fr).unwrap();
    pt.map(&mut ram, &mut fr, va(0x1000), pa(0x1000), K4, RW)
        .unwrap();
    let mut n = [0u64; 3];
    pt.walk(&ram, |e| n[e.level as usize] += 1).unwrap();
    // The root's 1024 entries; the PT of 0x1000 and the root seen again through slot 1023.
    assert_eq!(n[2], 1024);
    assert_eq!(n[1], 2048);
}

#[test]
fn invariant_check_catches_corruption() {
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(I386::new(), &mut ram, &mut fr).unwrap();
    pt.map(&mut ram, &mut fr, va(0xC000_0000), pa(0), M4, RW)
        .unwrap();
    pt.map(&mut ram, &mut fr, va(0x1000), pa(0x1000), K4, RW)
        .unwrap();
    pt.check_invariants(&ram).unwrap();
    // Bit 21 of a 4 MiB PDE is reserved.
    let (at, raw) = pt.entry(&ram, va(0xC000_0000), 2).unwrap().unwrap();
    ram.write_u32(at, (raw | 1 << 21) as u32).unwrap();
    assert!(matches!(
        pt.check_invariants(&ram),
        Err(InvariantError::ReservedBits { level: 2, .. })
    ));
    ram.write_u32(at, raw as u32).unwrap();
    // A PTE cleared behind the walker's back leaves an empty table.
    let t = pt.translate(&ram, va(0x1000)).unwrap();
    ram.write_u32(t.entry, 0).unwrap();
    assert!(matches!(
        pt.check_invariants(&ram),
        Err(InvariantError::EmptyTable { level: 1, .. })
    ));
    // The recursive entry must point at the root, supervisor-only.
    let root = pt.root().start_address();
    ram.write_u32(
        PhysAddr::new(root.as_u64() + 1023 * 4),
        (root.as_u64() | 7) as u32,
    )
    .unwrap();
    assert!(matches!(
        pt.check_invariants(&ram),
        Err(InvariantError::RecursiveSlot { .. })
    ));
}

#[test]
fn typed_pages() {
    use crate::addr::{Page, PageRange, Size2MiB, Size4KiB, Size4MiB};
    let (mut ram, mut fr) = setup();
    let mut pt = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
    let p = Page::<Size2MiB>::from_start_address(va(0x4000_0000)).unwrap();
    let f = Frame::<Size2MiB>::from_start_address(pa(M2)).unwrap();
    pt.map_page(&mut ram, &mut fr, p, f, RW).unwrap();
    pt.protect_page(&mut ram, p, PageFlags::empty())
        .unwrap()
        .ignore();
    assert_eq!(
        pt.translate(&ram, va(0x4000_0000)).unwrap().flags,
        PageFlags::PRESENT
    );
    let (back, flush) = pt.unmap_page(&mut ram, &mut fr, p).unwrap();
    assert_eq!((back, flush), (f, Flush::Page(va(0x4000_0000))));
    let r = PageRange::<Size4KiB>::from_start_len(va(0x1000), 0x3000).unwrap();
    pt.map_pages(&mut ram, &mut fr, r, Frame::containing(pa(0x8000)), RW)
        .unwrap();
    assert_eq!(pt.translate(&ram, va(0x3000)).unwrap().frame, pa(0xa000));
    // A size the MMU lacks is an error, not a panic.
    let p4 = Page::<Size4MiB>::from_start_address(va(0)).unwrap();
    assert_eq!(
        pt.map_page(&mut ram, &mut fr, p4, Frame::containing(pa(0)), RW),
        Err(MapError::UnsupportedPageSize(M4))
    );
}
