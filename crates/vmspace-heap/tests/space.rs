//! Heaps inside a simulated 32-bit address space: a size-class heap (segments as mappings)
//! and a chunk heap (on the program break) share one `AddressSpace`; their memory shows in
//! its /proc/pid/maps rendering while they live and is gone when they are destroyed.

use std::alloc::Layout;
use vmspace::space::{AddressSpace, SpaceConfig, TaskKind};
use vmspace_heap::space::SimSpace;
use vmspace_heap::{ChunkHeap, FitPolicy, SizeClassHeap, SEGMENT_SIZE};

#[global_allocator]
static GLOBAL: SizeClassHeap<vmspace_heap::HostSource> =
    SizeClassHeap::new(vmspace_heap::HostSource::new());

/// Start of the program break: after a small i386 executable.
const START_BRK: u64 = 0x0806_0000;

fn space() -> SimSpace<AddressSpace> {
    let mut m = AddressSpace::new(SpaceConfig::linux_default(TaskKind::Compat32));
    m.set_brk(START_BRK, START_BRK);
    SimSpace::new(m).expect("a 32-bit space is mirrored")
}

/// The maps lines as (start, end, name).
fn maps(s: &SimSpace<AddressSpace>) -> Vec<(u64, u64, String)> {
    s.with(|m| m.render_maps())
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next().unwrap().split_once('-').unwrap();
            let name = f.nth(4).unwrap_or("").to_string();
            (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
                name,
            )
        })
        .collect()
}

fn mapped(lines: &[(u64, u64, String)], a: u64, len: u64) -> bool {
    lines.iter().any(|&(s, e, _)| s <= a && a + len <= e)
}

#[test]
fn a_size_class_heap_and_a_chunk_heap_live_in_one_simulated_space() {
    let sp = space();
    let sizes = [8usize, 24, 100, 500, 3000, 8000, 70_000, 300_000];
    let sc = SizeClassHeap::new(sp.source());
    let mut ch = ChunkHeap::new(sp.brk_source().unwrap(), FitPolicy::Best);
    let mut blocks = Vec::new();
    for round in 0..40u8 {
        for &n in &sizes {
            let l = Layout::from_size_align(n, 8).unwrap();
            let a = sc.alloc(l);
            let b = ch.alloc(l);
            assert!(!a.is_null() && !b.is_null());
            unsafe {
                a.write_bytes(round, n);
                b.write_bytes(!round, n);
            }
            blocks.push((a, b, n, round));
        }
    }
    let lines = maps(&sp);
    let text = sp.with(|m| m.render_maps());
    for &(a, b, n, round) in &blocks {
        // Simulated addresses are 32-bit, inside mappings of the model.
        let sa = sp.sim(a).unwrap();
        let sb = sp.sim(b).unwrap();
        assert!(sa < 1 << 32 && sb < 1 << 32);
        let seg = sa & !(SEGMENT_SIZE as u64 - 1);
        assert!(
            mapped(&lines, seg, SEGMENT_SIZE as u64),
            "{seg:#x} not in\n{text}"
        );
        assert!(mapped(&lines, sb, n as u64), "{sb:#x} not in\n{text}");
        // The chunk heap's blocks are on the break: the [heap] line.
        assert!(sb >= START_BRK);
        unsafe {
            assert!(std::slice::from_raw_parts(a, n).iter().all(|&x| x == round));
            assert!(std::slice::from_raw_parts(b, n)
                .iter()
                .all(|&x| x == !round));
        }
    }
    assert!(
        lines.iter().any(|l| l.2 == "[heap]" && l.0 == START_BRK),
        "{text}"
    );
    // Freeing everything gives the large blocks' mappings back at once.
    for &(a, b, _, _) in &blocks {
        unsafe {
            sc.try_free(a).unwrap();
            ch.try_free(b).unwrap();
        }
    }
    assert_eq!(sc.stats().live_bytes, 0);
    drop(sc);
    drop(ch);
    let after = sp.with(|m| m.render_maps());
    assert_eq!(after, "", "mappings left after both heaps were destroyed");
    assert_eq!(sp.with(|m| m.brk_value()), START_BRK);
}

#[test]
fn many_heaps_in_one_space_return_every_mapping_in_any_order() {
    let sp = space();
    let heaps: Vec<_> = (0..6).map(|_| SizeClassHeap::new(sp.source())).collect();
    let mut live = Vec::new();
    for (i, h) in heaps.iter().enumerate() {
        for k in 0..200 {
            let n = 16 + (k * 37 + i * 101) % 20_000;
            let p = h.alloc(Layout::from_size_align(n, 16).unwrap());
            assert!(!p.is_null());
            live.push((i, p));
        }
    }
    let before = sp.with(|m| m.map_count());
    assert!(before > 0);
    // A block of one heap is foreign to the others.
    let (i0, p0) = live[0];
    let other = &heaps[(i0 + 1) % heaps.len()];
    assert_eq!(
        unsafe { other.try_free(p0) }.unwrap_err().kind,
        vmspace_heap::HeapErrorKind::ForeignPointer
    );
    let mut heaps: Vec<_> = heaps.into_iter().map(Some).collect();
    for i in [3, 0, 5, 1, 4, 2] {
        heaps[i] = None;
    }
    assert_eq!(sp.with(|m| m.render_maps()), "");
}

#[test]
fn decommitted_pages_read_back_zero_and_the_space_rejects_64_bit_models() {
    use vmspace_heap::SegmentSource;
    let sp = space();
    let mut src = sp.source();
    let seg = src.alloc_segments(2).unwrap();
    unsafe {
        seg.as_ptr().write_bytes(0x5a, 2 * SEGMENT_SIZE);
        let page = std::ptr::NonNull::new(seg.as_ptr().add(SEGMENT_SIZE)).unwrap();
        src.decommit(page, 4096);
        assert_eq!(*page.as_ptr(), 0);
        assert_eq!(*seg.as_ptr(), 0x5a);
        src.free_segments(seg, 2);
    }
    assert_eq!(sp.with(|m| m.map_count()), 0);
    let big = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
    assert!(SimSpace::new(big).is_none());
}

#[test]
fn many_chunk_heaps_share_a_space_through_segment_runs_and_give_them_all_back() {
    use vmspace_heap::SegmentBrk;
    let sp = space();
    // Five chunk heaps, each on its own run of segments of the space (the break is one
    // per space), under every fit policy.
    let mut heaps: Vec<_> = (0..5)
        .map(|i| {
            let brk = SegmentBrk::new(sp.source(), 4 << 20).expect("a run of segments");
            Some(ChunkHeap::new(brk, FitPolicy::ALL[i % 4]))
        })
        .collect();
    let mut blocks = Vec::new();
    for (i, h) in heaps.iter_mut().enumerate() {
        let h = h.as_mut().unwrap();
        for k in 0..300 {
            let n = 16 + (k * 53 + i * 977) % 9000;
            let p = h.alloc(Layout::from_size_align(n, 16).unwrap());
            assert!(!p.is_null());
            unsafe { p.write_bytes(i as u8, n) };
            blocks.push((i, p, n));
        }
        h.check_invariants().unwrap();
    }
    let lines = maps(&sp);
    for &(i, p, n) in &blocks {
        let a = sp.sim(p).unwrap();
        assert!(mapped(&lines, a, n as u64));
        assert!(unsafe { std::slice::from_raw_parts(p, n) }
            .iter()
            .all(|&x| x == i as u8));
    }
    // Free every other block, check, then destroy the heaps out of order.
    for &(i, p, _) in blocks.iter().step_by(2) {
        unsafe { heaps[i].as_mut().unwrap().try_free(p).unwrap() };
    }
    for h in heaps.iter().flatten() {
        h.check_invariants().unwrap();
    }
    for i in [2, 4, 0, 3, 1] {
        heaps[i] = None;
    }
    assert_eq!(sp.with(|m| m.render_maps()), "");
}
