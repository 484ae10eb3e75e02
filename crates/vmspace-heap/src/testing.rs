//! Memory for the unit tests' arenas, and a model driver for their property tests.
//!
//! Without `std` the segment registry serves one 4 GiB window (the first a heap registers a
//! segment in), as a kernel's heap lives in one arena: every size-class heap of the test
//! binary then takes its segments from one pool inside one window, as [`buffer`] hands
//! out. With `std` each buffer is a leaked vector (the registry maps any window).
//! The model driver serves the tests of the kernel configuration (without `std`; with it,
//! `tests/model.rs` drives the heaps).
#![cfg_attr(feature = "std", allow(dead_code))]

extern crate std;
use crate::source::SEGMENT_SIZE;
use core::alloc::Layout;
use std::vec::Vec;

/// Bytes of the pool without `std`: aligned to its own size, so inside one 4 GiB window.
#[cfg(not(feature = "std"))]
const POOL_BYTES: usize = 256 << 20;

/// The pool's base (allocated once, never freed; pages are touched only when used).
#[cfg(not(feature = "std"))]
fn pool() -> usize {
    static BASE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let l = Layout::from_size_align(POOL_BYTES, POOL_BYTES).unwrap();
        // SAFETY: a non-zero size; the block is leaked for the life of the test binary.
        let p = unsafe { std::alloc::alloc(l) };
        assert!(!p.is_null(), "no address space for the test pool");
        p as usize
    })
}

/// The 4 GiB window (address bits 63..32) the pool lies in, which the registry serves.
#[cfg(not(feature = "std"))]
pub(crate) fn pool_window() -> usize {
    pool() >> 32
}

/// A fresh buffer of `bytes` (rounded up to segments), 64 KiB-aligned, for the life of the
/// test binary: from the pool without `std`, a leaked vector with it.
pub(crate) fn buffer(bytes: usize) -> &'static mut [u8] {
    let bytes = bytes.next_multiple_of(SEGMENT_SIZE);
    #[cfg(not(feature = "std"))]
    {
        use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let off = NEXT.fetch_add(bytes, Relaxed);
        assert!(off + bytes <= POOL_BYTES, "the test pool is exhausted");
        // SAFETY: a part of the pool no other caller gets (disjoint offsets), for ever.
        unsafe { core::slice::from_raw_parts_mut((pool() + off) as *mut u8, bytes) }
    }
    #[cfg(feature = "std")]
    {
        let v = std::vec![0u8; bytes + SEGMENT_SIZE].leak();
        let skip = v.as_ptr().align_offset(SEGMENT_SIZE);
        &mut v[skip..skip + bytes]
    }
}

/// An arena of `segments` segments over a [`buffer`], shareable by heaps.
pub(crate) fn arena(segments: usize) -> &'static spin::Mutex<crate::ArenaSource> {
    std::boxed::Box::leak(std::boxed::Box::new(spin::Mutex::new(
        crate::ArenaSource::from_static(buffer(segments * SEGMENT_SIZE)),
    )))
}

/// One step of a model run: allocate (size, log2 alignment), free or resize the `i`-th
/// live block (modulo their number).
#[derive(Debug, Clone)]
pub(crate) enum Op {
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
pub(crate) fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    use proptest::prelude::*;
    let op = prop_oneof![
        5 => (size(), 0u32..=12).prop_map(|(s, a)| Op::Alloc(s, a)),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
    ];
    proptest::collection::vec(op, 1..200)
}

/// What the model drives: a heap's alloc, free, realloc, its own checks and live bytes.
pub(crate) trait ModelHeap {
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

impl<S: crate::SegmentSource> ModelHeap for crate::SizeClassHeap<S> {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        crate::SizeClassHeap::alloc(self, l)
    }
    unsafe fn free(&mut self, p: *mut u8, _l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.try_free(p) }.expect("a live block frees");
    }
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { crate::SizeClassHeap::realloc(self, p, l, new) }
    }
    fn live(&self) -> usize {
        self.stats().live_bytes
    }
}

impl<B: crate::BrkSource> ModelHeap for crate::ChunkHeap<B> {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        crate::ChunkHeap::alloc(self, l)
    }
    unsafe fn free(&mut self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.try_free_sized(p, l.size()) }.expect("a live block frees");
    }
    unsafe fn realloc(&mut self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { crate::ChunkHeap::realloc(self, p, l, new) }
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
pub(crate) fn run<H: ModelHeap>(h: &mut H, ops: &[Op]) {
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

/// Runs `f`, which must panic (a heap's [`crate::report`] without `std`), and returns the
/// panic message.
#[cfg(not(feature = "std"))]
pub(crate) fn panic_message(f: impl FnOnce()) -> std::string::String {
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the heap reports (panics) instead of going on");
    match e.downcast::<std::string::String>() {
        Ok(s) => *s,
        Err(e) => (*e.downcast::<&str>().expect("a text message")).into(),
    }
}
