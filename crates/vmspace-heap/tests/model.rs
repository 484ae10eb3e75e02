//! Property tests against a model (`support/model.rs`): random sequences of alloc, free and
//! realloc with random sizes and alignments on each heap; every block is filled with its own
//! byte pattern and checked before it is freed, moved, or at the end, so overlapping blocks
//! are caught.
//! This test binary runs with the size-class heap as its global allocator.

use proptest::prelude::*;
use std::alloc::Layout;
use vmspace_heap::{
    ArenaBrk, ArenaSource, ChunkHeap, FitPolicy, HeapErrorKind, HostSource, SizeClassHeap,
};

#[global_allocator]
static GLOBAL: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());

#[path = "support/model.rs"]
mod model;
use model::{ops, run};

fn arena(bytes: usize) -> &'static spin::Mutex<ArenaSource> {
    let buf = vec![0u8; bytes].leak();
    Box::leak(Box::new(spin::Mutex::new(ArenaSource::from_static(buf))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn size_class_heap_on_an_arena_matches_the_model(ops in ops()) {
        let a = arena(64 << 20);
        {
            let mut h = SizeClassHeap::new(a);
            run(&mut h, &ops);
        }
        // destroying the heap gave every segment back
        prop_assert_eq!(a.lock().in_use(), 0);
    }

    #[test]
    fn size_class_heap_on_the_host_matches_the_model(ops in ops()) {
        let mut h = SizeClassHeap::new(HostSource::new());
        run(&mut h, &ops);
    }

    #[test]
    fn chunk_heap_matches_the_model_under_every_policy(ops in ops(), p in 0usize..4) {
        let buf = vec![0u8; 64 << 20].leak();
        let mut h = ChunkHeap::new(ArenaBrk::from_static(buf), FitPolicy::ALL[p]);
        run(&mut h, &ops);
    }

    #[test]
    fn bad_frees_never_corrupt_the_size_class_heap(sizes in prop::collection::vec(1usize..5000, 1..50), off in 1usize..64) {
        let h = SizeClassHeap::new(arena(16 << 20));
        let ptrs: Vec<*mut u8> = sizes.iter().map(|&s| h.alloc(Layout::from_size_align(s, 8).unwrap())).collect();
        for (&p, &s) in ptrs.iter().zip(&sizes) {
            if off < s {
                let e = unsafe { h.try_free(p.add(off)) }.unwrap_err();
                prop_assert_eq!(e.kind, HeapErrorKind::NotABlock);
            }
        }
        for &p in &ptrs {
            unsafe { h.try_free(p) }.unwrap();
            let e = unsafe { h.try_free(p) }.unwrap_err();
            prop_assert_eq!(e.kind, HeapErrorKind::DoubleFree);
        }
        prop_assert_eq!(h.stats().live_bytes, 0);
        }
}
