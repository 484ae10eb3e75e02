//! Many heaps in one arena: each keeps its blocks apart, reports its own statistics, and
//! gives every segment back when destroyed, in any order.
//! This test binary runs with the size-class heap as its global allocator.

use std::alloc::Layout;
use vmspace_heap::{ArenaSource, ChunkHeap, FitPolicy, HostSource, SegmentBrk, SizeClassHeap};

#[global_allocator]
static GLOBAL: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());

fn arena(bytes: usize) -> &'static spin::Mutex<ArenaSource> {
    let buf = vec![0u8; bytes].leak();
    Box::leak(Box::new(spin::Mutex::new(ArenaSource::from_static(buf))))
}

#[test]
fn forty_heaps_share_an_arena_and_destroying_them_returns_every_segment() {
    let a = arena(200 << 20);
    let mut size_class: Vec<SizeClassHeap<&spin::Mutex<ArenaSource>>> =
        (0..20).map(|_| SizeClassHeap::new(a)).collect();
    let mut chunk: Vec<ChunkHeap<SegmentBrk<&spin::Mutex<ArenaSource>>>> = (0..20)
        .map(|i| ChunkHeap::new(SegmentBrk::new(a, 2 << 20).unwrap(), FitPolicy::ALL[i % 4]))
        .collect();
    let mut blocks: Vec<(usize, usize, *mut u8, usize)> = Vec::new();
    for round in 0..200usize {
        for (i, h) in size_class.iter().enumerate() {
            let n = 1 + (round * 37 + i * 101) % 6000;
            let p = h.alloc(Layout::from_size_align(n, 8).unwrap());
            unsafe { p.write_bytes(i as u8, n) };
            blocks.push((0, i, p, n));
        }
        for (i, h) in chunk.iter_mut().enumerate() {
            let n = 1 + (round * 53 + i * 31) % 3000;
            let p = h.alloc(Layout::from_size_align(n, 8).unwrap());
            assert!(!p.is_null());
            unsafe { p.write_bytes(100 + i as u8, n) };
            blocks.push((1, i, p, n));
        }
    }
    for &(kind, i, p, n) in &blocks {
        let want = if kind == 0 { i as u8 } else { 100 + i as u8 };
        assert!(unsafe { std::slice::from_raw_parts(p, n) }
            .iter()
            .all(|&b| b == want));
    }
    // a block belongs to its own heap only
    let (_, _, p0, _) = blocks[0];
    assert!(unsafe { size_class[1].try_free(p0) }.is_err());
    for (i, h) in size_class.iter().enumerate() {
        let st = h.stats();
        let mine: usize = blocks
            .iter()
            .filter(|b| b.0 == 0 && b.1 == i)
            .map(|b| b.3)
            .sum();
        assert!(
            st.live_bytes >= mine && st.committed_bytes >= st.live_bytes,
            "{st:?}"
        );
        assert!(st.segments >= 1 && st.fragmentation < 1.0);
    }
    for (i, h) in chunk.iter().enumerate() {
        let mine: usize = blocks
            .iter()
            .filter(|b| b.0 == 1 && b.1 == i)
            .map(|b| b.3)
            .sum();
        assert!(h.stats().live_bytes >= mine);
        h.check_invariants().unwrap();
    }
    let held = a.lock().in_use();
    assert!(held >= 40, "{held}");
    // destroy every other heap first, then the rest, without freeing their blocks
    let mut k = 0;
    size_class.retain(|_| {
        k += 1;
        k % 2 == 0
    });
    chunk.truncate(7);
    let after_some = a.lock().in_use();
    assert!(after_some < held);
    drop(size_class);
    drop(chunk);
    assert_eq!(a.lock().in_use(), 0, "every segment went back");
}
