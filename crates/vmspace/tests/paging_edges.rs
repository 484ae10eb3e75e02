//! Property tests of bad and edge input: arbitrary addresses, lengths and page sizes (top of
//! the address space, zero lengths, misalignment, non-canonical, frames past RAM) never
//! panic; a failing call changes nothing; and the walker's table frames, taken from the buddy
//! allocator, all come back.

use proptest::prelude::*;
use vmspace::addr::{Frame, FrameRange, PhysAddr, VirtAddr};
use vmspace::arch::{Arch, PageFlags, I386, X86_64};
use vmspace::paging::PageTable;
use vmspace::phys::{EmulatedRam, OwnedBuddyAllocator};

const RAM: u64 = 64 << 20;

fn setup<A: Arch>(arch: A) -> (PageTable<A>, EmulatedRam, OwnedBuddyAllocator) {
    let mut ram = EmulatedRam::new(PhysAddr::ZERO, RAM).unwrap();
    let all = FrameRange::new(Frame::from_number(0).unwrap(), RAM / 4096).unwrap();
    // Data frames are the low 32 MiB; tables come from the upper half.
    let low = FrameRange::new(Frame::from_number(0).unwrap(), (RAM / 2) / 4096).unwrap();
    let mut fr = OwnedBuddyAllocator::new_owned(&[all], &[low]).unwrap();
    let pt = PageTable::new(arch, &mut ram, &mut fr).unwrap();
    (pt, ram, fr)
}

/// Addresses that like edges: the top, the canonical boundary, 4 GiB, small, or anything.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(0xFFFF_FFFF_FFFF_F000),
        Just(0xFFFF_FFFF_FFE0_0000),
        Just(0x7FFF_FFFF_F000),
        Just(0x8000_0000_0000),
        Just(0xFFFF_8000_0000_0000),
        Just(0xFFFF_F000),
        Just(0xFFC0_0000),
        Just(0x1_0000_0000),
        (0u64..64).prop_map(|i| i << 21),
        any::<u64>(),
    ]
}

fn len() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(4096),
        Just(2 << 20),
        Just(4 << 20),
        Just(1 << 30),
        Just(u64::MAX),
        (0u64..64).prop_map(|n| n << 12),
        any::<u64>()
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(4096u64),
        Just(2 << 20),
        Just(4 << 20),
        Just(1 << 30),
        Just(1 << 39),
        any::<u64>()
    ]
}

#[derive(Clone, Debug)]
enum Call {
    Map(u64, u64, u64),
    MapRange(u64, u64, u64, u64),
    Unmap(u64, u64),
    UnmapRange(u64, u64),
    Protect(u64, u64),
    ProtectRange(u64, u64),
    Translate(u64),
    TranslateRange(u64, u64),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (addr(), addr(), size()).prop_map(|(v, p, s)| Call::Map(v, p % (RAM / 2 + 4096), s)),
        (addr(), addr(), len(), size()).prop_map(|(v, p, l, s)| Call::MapRange(
            v,
            p % (RAM / 2 + 4096),
            l,
            s
        )),
        (addr(), size()).prop_map(|(v, s)| Call::Unmap(v, s)),
        (addr(), len()).prop_map(|(v, l)| Call::UnmapRange(v, l)),
        (addr(), size()).prop_map(|(v, s)| Call::Protect(v, s)),
        (addr(), len()).prop_map(|(v, l)| Call::ProtectRange(v, l)),
        addr().prop_map(Call::Translate),
        (addr(), len()).prop_map(|(v, l)| Call::TranslateRange(v, l)),
    ]
}

/// A fingerprint of every mapping: (page, frame, size, flags) in order.
fn mappings<A: Arch>(pt: &PageTable<A>, ram: &EmulatedRam) -> Vec<(u64, u64, u64, PageFlags)> {
    let mut v = Vec::new();
    let user = pt.arch().user_range();
    let kernel = pt.arch().kernel_range();
    for r in [user, kernel] {
        pt.translate_range(ram, r.start(), r.len(), |t| {
            v.push((t.page.as_u64(), t.frame.as_u64(), t.size, t.flags))
        })
        .unwrap();
    }
    v
}

fn run<A: Arch>(arch: A, calls: &[Call]) {
    let (mut pt, mut ram, mut fr) = setup(arch);
    let free0 = fr.stats().free_frames;
    let f = PageFlags::WRITABLE;
    for c in calls {
        let before = (pt.table_pages(), fr.stats().free_frames);
        let snap = mappings(&pt, &ram);
        let failed = match *c {
            Call::Map(v, p, s) => pt
                .map(&mut ram, &mut fr, VirtAddr::new(v), PhysAddr::new(p), s, f)
                .is_err(),
            Call::MapRange(v, p, l, s) => pt
                .map_range(
                    &mut ram,
                    &mut fr,
                    VirtAddr::new(v),
                    PhysAddr::new(p),
                    l,
                    s,
                    f,
                )
                .is_err(),
            Call::Unmap(v, s) => pt
                .unmap(&mut ram, &mut fr, VirtAddr::new(v), s)
                .map(|r| r.1.ignore())
                .is_err(),
            Call::UnmapRange(v, l) => pt
                .unmap_range(&mut ram, &mut fr, VirtAddr::new(v), l, |_, _, _| {})
                .map(|x| x.ignore())
                .is_err(),
            Call::Protect(v, s) => pt
                .protect(&mut ram, VirtAddr::new(v), s, PageFlags::USER)
                .map(|x| x.ignore())
                .is_err(),
            Call::ProtectRange(v, l) => pt
                .protect_range(&mut ram, VirtAddr::new(v), l, PageFlags::USER)
                .map(|x| x.ignore())
                .is_err(),
            Call::Translate(v) => {
                let _ = pt.translate(&ram, VirtAddr::new(v));
                true
            }
            Call::TranslateRange(v, l) => {
                let _ = pt.translate_range(&ram, VirtAddr::new(v), l, |_| {});
                true
            }
        };
        if failed {
            assert_eq!(
                (pt.table_pages(), fr.stats().free_frames),
                before,
                "{c:?} failed but changed counts"
            );
            assert_eq!(
                mappings(&pt, &ram),
                snap,
                "{c:?} failed but changed mappings"
            );
        }
        assert_eq!(pt.count_tables(&ram).unwrap(), pt.table_pages());
        pt.check_invariants(&ram).unwrap();
    }
    pt.destroy(&mut ram, &mut fr, |_, _, _| {}).unwrap();
    assert_eq!(
        fr.stats().free_frames,
        free0 + 1,
        "every table frame, root included, is back"
    );
    fr.check_invariants().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn x86_64_edges(calls in prop::collection::vec(call(), 1..24)) {
        run(X86_64, &calls);
    }

    #[test]
    fn i386_edges(calls in prop::collection::vec(call(), 1..24)) {
        run(I386::new(), &calls);
    }
}
