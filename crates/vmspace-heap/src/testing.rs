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
#[cfg(not(feature = "std"))]
use core::alloc::Layout;

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

/// The model driver, shared with `tests/model.rs` (one file, two crates); with `std` that
/// test drives the heaps.
#[cfg(not(feature = "std"))]
#[path = "../tests/support/model.rs"]
mod model;
#[cfg(not(feature = "std"))]
pub(crate) use model::{ops, run};

/// What [`two_threads`] asks of a heap shared by two threads.
#[cfg(not(feature = "std"))]
pub(crate) struct Traffic<'a> {
    /// Allocates a block (null: out of memory, which fails the test).
    pub alloc: &'a (dyn Fn(Layout) -> *mut u8 + Sync),
    /// Frees a live block with its layout.
    pub free: &'a (dyn Fn(*mut u8, Layout) + Sync),
    /// Resizes a live block, if the heap is to be tested on that too.
    pub realloc: Option<&'a (dyn Fn(*mut u8, Layout, usize) -> *mut u8 + Sync)>,
    /// Most bytes of the common request, and of the one in 64 that is large.
    pub small: usize,
    pub large: usize,
    /// Requests are aligned to `1 << 0..=max_align_log2`.
    pub max_align_log2: u32,
}

/// Two threads allocating, filling, checking and freeing 20,000 blocks each; a quarter go
/// to the other thread (through a channel), which checks and frees them. Every block is
/// checked before it is freed or after it is resized, so a block handed out twice, or
/// contents lost by a resize, fail the test. Everything is freed at the end.
#[cfg(not(feature = "std"))]
pub(crate) fn two_threads(t: &Traffic) {
    type Block = (usize, Layout, u8);
    let (tx0, rx0) = std::sync::mpsc::channel::<Block>();
    let (tx1, rx1) = std::sync::mpsc::channel::<Block>();
    let check = |(p, l, pat): Block| {
        // SAFETY: a live block of `l.size()` bytes, filled with `pat`.
        let s = unsafe { core::slice::from_raw_parts(p as *const u8, l.size()) };
        assert!(s.iter().all(|&b| b == pat), "block {p:#x} overwritten");
    };
    let check_free = |b: Block| {
        check(b);
        (t.free)(b.0 as *mut u8, b.1);
    };
    let work =
        |seed: u64, tx: std::sync::mpsc::Sender<Block>, rx: std::sync::mpsc::Receiver<Block>| {
            let mut x = seed;
            let mut mine: std::vec::Vec<Block> = std::vec::Vec::new();
            for i in 0..20_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let size = if x % 64 == 0 {
                    (x >> 8) as usize % t.large + 1
                } else {
                    (x >> 8) as usize % t.small + 1
                };
                let align = 1usize << ((x >> 40) % (t.max_align_log2 as u64 + 1));
                let l = Layout::from_size_align(size, align).unwrap();
                let p = (t.alloc)(l);
                assert!(!p.is_null(), "out of memory for {l:?}");
                assert_eq!(p as usize % align, 0, "misaligned {l:?}");
                let pat = (i as u8) | 1;
                // SAFETY: a fresh block of `size` bytes.
                unsafe { p.write_bytes(pat, size) };
                let b = (p as usize, l, pat);
                match ((x >> 32) % 4, t.realloc) {
                    (0, _) => tx.send(b).unwrap(),
                    (1, Some(realloc)) if !mine.is_empty() => {
                        // resize one of ours: contents kept up to the smaller size
                        let j = (x >> 20) as usize % mine.len();
                        let (q, ol, opat) = mine[j];
                        check(mine[j]);
                        let r = realloc(q as *mut u8, ol, size);
                        assert!(!r.is_null());
                        assert_eq!(r as usize % ol.align(), 0);
                        check((
                            r as usize,
                            Layout::from_size_align(ol.size().min(size), 1).unwrap(),
                            opat,
                        ));
                        // SAFETY: the resized block has `size` bytes.
                        unsafe { r.write_bytes(opat, size) };
                        mine[j] = (
                            r as usize,
                            Layout::from_size_align(size, ol.align()).unwrap(),
                            opat,
                        );
                        mine.push(b);
                    }
                    // free one of ours, half the time or when 512 are live
                    (k, _) if !mine.is_empty() && (k != 3 || mine.len() >= 512) => {
                        let j = (x >> 20) as usize % mine.len();
                        check_free(mine.swap_remove(j));
                        mine.push(b);
                    }
                    _ => mine.push(b),
                }
                while let Ok(b) = rx.try_recv() {
                    check_free(b);
                }
            }
            drop(tx);
            for b in rx {
                check_free(b);
            }
            for b in mine {
                check_free(b);
            }
        };
    std::thread::scope(|s| {
        s.spawn(|| work(0x9e37_79b9_7f4a_7c15, tx0, rx1));
        s.spawn(|| work(0x2545_f491_4f6c_dd1d, tx1, rx0));
    });
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
