//! The model the heaps are property-tested against: random sequences of alloc, free and
//! realloc with random sizes and alignments; every block is filled with its own byte pattern
//! and checked before it is freed, moved, or at the end, so overlapping blocks are caught.
//!
//! One file for two crates: `tests/model.rs` (the heaps with `std`) and the crate's unit
//! tests (`src/testing.rs`, the kernel configuration without `std`), which name the crate
//! `vmspace_heap` too.

extern crate std;
use core::alloc::Layout;
use std::vec::Vec;

/// One step of a model run: allocate (size, log2 alignment), free or resize the `i`-th
/// live block (modulo their number).
#[derive(Debug, Clone)]
pub enum Op {
    Alloc(usize, u32),
    Free(usize),
    Realloc(usize, usize),
}

/// Request sizes: mostly small, some beyond the size classes.
fn size() -> impl proptest::strategy::Strategy<Value = usize> {
    use proptest::prelude::*;
    prop_oneof![
        4 => 1usize..=64,
        4 => 65usize..=8192,
        1 => 8193usize..=150_000,
    ]
}

/// Random runs of up to 200 operations.
pub fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    use proptest::prelude::*;
    let op = prop_oneof![
        5 => (size(), 0u32..=12).prop_map(|(s, a)| Op::Alloc(s, a)),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
    ];
    proptest::collection::vec(op, 1..200)
}

/// What the model drives: a heap's alloc, free, realloc, its own checks and live bytes.
pub trait ModelHeap {
    fn alloc(&mut self, l: Layout) -> *mut u8;
    /// # Safety
    /// `p` is a live block allocated with `l`.
    unsafe fn free(&mut self, p: *mut u8, l: Layout);
    /// # Safety
    /// `p` is a live block allocated with `l`.
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8;
    fn check(&self) {}
    fn live(&self) -> usize;
}

impl<S: vmspace_heap::SegmentSource> ModelHeap for vmspace_heap::SizeClassHeap<S> {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        vmspace_heap::SizeClassHeap::alloc(self, l)
    }
    unsafe fn free(&mut self, p: *mut u8, _l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.try_free(p) }.expect("a live block frees");
    }
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { vmspace_heap::SizeClassHeap::realloc(self, p, l, new) }
    }
    fn live(&self) -> usize {
        self.stats().live_bytes
    }
}

impl<B: vmspace_heap::BrkSource> ModelHeap for vmspace_heap::ChunkHeap<B> {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        vmspace_heap::ChunkHeap::alloc(self, l)
    }
    unsafe fn free(&mut self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.try_free_sized(p, l.size()) }.expect("a live block frees");
    }
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { vmspace_heap::ChunkHeap::realloc(self, p, l, new) }
    }
    fn check(&self) {
        self.check_invariants().expect("chunk heap invariants");
    }
    fn live(&self) -> usize {
        self.stats().live_bytes
    }
}

/// A live block of the model: where, how big, and the byte it is filled with.
struct Live {
    p: *mut u8,
    size: usize,
    align: usize,
    pat: u8,
}

fn fill(b: &Live) {
    // SAFETY: a live block of `size` bytes.
    unsafe { core::ptr::write_bytes(b.p, b.pat, b.size) };
}

fn verify(b: &Live, len: usize) {
    // SAFETY: a live block of at least `len` bytes, filled before.
    let s = unsafe { core::slice::from_raw_parts(b.p, len) };
    if let Some(i) = s.iter().position(|&x| x != b.pat) {
        panic!("block {:p} (size {}) byte {i} overwritten", b.p, b.size);
    }
}

/// Runs `ops` on `h`: every block filled with its own byte and checked before it is freed,
/// moved, or at the end (so overlapping blocks are caught); everything freed at the end,
/// with no live bytes left.
pub fn run<H: ModelHeap>(h: &mut H, ops: &[Op]) {
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
                // SAFETY: a live block with its layout.
                unsafe { h.free(b.p, Layout::from_size_align(b.size, b.align).unwrap()) };
            }
            Op::Realloc(i, new) if !live.is_empty() => {
                let i = i % live.len();
                let b = &mut live[i];
                verify(b, b.size);
                let l = Layout::from_size_align(b.size, b.align).unwrap();
                // SAFETY: a live block with its layout.
                let q = unsafe { h.realloc(b.p, l, new) };
                assert!(!q.is_null());
                assert_eq!(q as usize % b.align, 0);
                b.p = q;
                verify(b, b.size.min(new));
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
        // SAFETY: a live block with its layout.
        unsafe { h.free(b.p, Layout::from_size_align(b.size, b.align).unwrap()) };
    }
    h.check();
    assert_eq!(h.live(), 0);
}
