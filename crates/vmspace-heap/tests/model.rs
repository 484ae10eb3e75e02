//! Property tests against a model: random sequences of alloc, free and realloc with random
//! sizes and alignments on each heap; every block is filled with its own byte pattern and
//! checked before it is freed, moved, or at the end, so overlapping blocks are caught.
//! This test binary runs with the size-class heap as its global allocator.

use proptest::prelude::*;
use std::alloc::Layout;
use vmspace_heap::{
    ArenaBrk, ArenaSource, ChunkHeap, FitPolicy, HeapErrorKind, HostSource, SizeClassHeap,
};

#[global_allocator]
static GLOBAL: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize, u32),
    Free(usize),
    Realloc(usize, usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1usize..=64,
        4 => 65usize..=8192,
        1 => 8193usize..=150_000,
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        5 => (size(), 0u32..=12).prop_map(|(s, a)| Op::Alloc(s, a)),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
    ];
    prop::collection::vec(op, 1..200)
}

/// The interface the model drives.
trait Heap {
    fn alloc(&mut self, l: Layout) -> *mut u8;
    unsafe fn free(&mut self, p: *mut u8, l: Layout);
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8;
    fn check(&self) {}
    fn live(&self) -> usize;
}

impl<S: vmspace_heap::SegmentSource> Heap for SizeClassHeap<S> {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        SizeClassHeap::alloc(self, l)
    }
    unsafe fn free(&mut self, p: *mut u8, _l: Layout) {
        unsafe { self.try_free(p) }.expect("a live block frees");
    }
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        unsafe { SizeClassHeap::realloc(self, p, l, new) }
    }
    fn live(&self) -> usize {
        self.stats().live_bytes
    }
}

impl<B: vmspace_heap::BrkSource> Heap for ChunkHeap<B> {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        ChunkHeap::alloc(self, l)
    }
    unsafe fn free(&mut self, p: *mut u8, l: Layout) {
        unsafe { self.try_free_sized(p, l.size()) }.expect("a live block frees");
    }
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        unsafe { ChunkHeap::realloc(self, p, l, new) }
    }
    fn check(&self) {
        self.check_invariants().expect("chunk heap invariants");
    }
    fn live(&self) -> usize {
        self.stats().live_bytes
    }
}

struct Live {
    p: *mut u8,
    size: usize,
    align: usize,
    pat: u8,
}

fn fill(b: &Live) {
    unsafe { std::ptr::write_bytes(b.p, b.pat, b.size) };
}

fn verify(b: &Live, len: usize) {
    let s = unsafe { std::slice::from_raw_parts(b.p, len) };
    if let Some(i) = s.iter().position(|&x| x != b.pat) {
        panic!("block {:p} (size {}) byte {i} overwritten", b.p, b.size);
    }
}

fn run<H: Heap>(h: &mut H, ops: &[Op]) {
    let mut live: Vec<Live> = Vec::new();
    let mut pat = 0u8;
    for op in ops {
        match *op {
            Op::Alloc(size, a) => {
                let align = 1usize << a;
                let l = Layout::from_size_align(size, align).unwrap();
                let p = h.alloc(l);
                assert!(!p.is_null(), "out of memory for {l:?}");
                assert_eq!(p as usize % align, 0, "misaligned {l:?}");
                pat = pat.wrapping_add(1);
                let b = Live {
                    p,
                    size,
                    align,
                    pat,
                };
                fill(&b);
                live.push(b);
            }
            Op::Free(i) if !live.is_empty() => {
                let b = live.swap_remove(i % live.len());
                verify(&b, b.size);
                unsafe { h.free(b.p, Layout::from_size_align(b.size, b.align).unwrap()) };
            }
            Op::Realloc(i, new) if !live.is_empty() => {
                let i = i % live.len();
                let b = &mut live[i];
                verify(b, b.size);
                let l = Layout::from_size_align(b.size, b.align).unwrap();
                let q = unsafe { h.realloc(b.p, l, new) };
                assert!(!q.is_null());
                assert_eq!(q as usize % b.align, 0);
                b.p = q;
                let keep = b.size.min(new);
                verify(b, keep);
                b.size = new;
                pat = pat.wrapping_add(1);
                b.pat = pat;
                fill(b);
            }
            _ => {}
        }
        h.check();
    }
    assert!(h.live() >= live.iter().map(|b| b.size).sum::<usize>());
    for b in live.drain(..) {
        verify(&b, b.size);
        unsafe { h.free(b.p, Layout::from_size_align(b.size, b.align).unwrap()) };
    }
    h.check();
    assert_eq!(h.live(), 0);
}

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
