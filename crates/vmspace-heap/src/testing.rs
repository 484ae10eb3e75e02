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
