//! Errors a heap detects on free: double frees, foreign and interior pointers, corrupted lists.
//!
//! The `try_free` operations return them; the allocator adapters (which cannot return an
//! error) hand them to [`report`], which prints the message and aborts with `std`, or panics
//! without it — never continuing on a corrupted heap.

use core::fmt;

/// What went wrong with a pointer given back to a heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapErrorKind {
    /// The block was already free.
    DoubleFree,
    /// The pointer does not lie in memory this heap manages.
    ForeignPointer,
    /// The pointer lies inside the heap's memory but not at the start of an allocated block.
    NotABlock,
    /// A free-list or boundary-tag check failed: the heap's metadata was overwritten.
    Corrupted,
}

/// An error detected by a heap, with the address it concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapError {
    /// What was detected.
    pub kind: HeapErrorKind,
    /// The pointer given back, or the corrupted location.
    pub addr: usize,
}

impl HeapError {
    pub(crate) fn new(kind: HeapErrorKind, addr: usize) -> Self {
        HeapError { kind, addr }
    }
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            HeapErrorKind::DoubleFree => "double free of",
            HeapErrorKind::ForeignPointer => "free of a pointer this heap never handed out:",
            HeapErrorKind::NotABlock => "free of a pointer that is not the start of a live block:",
            HeapErrorKind::Corrupted => "heap metadata corrupted at",
        };
        write!(f, "vmspace-heap: {what} {:#x}", self.addr)
    }
}

/// Reports a heap error that cannot be returned (from `GlobalAlloc::dealloc`) and stops.
#[cold]
#[inline(never)]
pub fn report(err: HeapError) -> ! {
    #[cfg(feature = "std")]
    {
        // Format on the stack: the allocator may be the one that is broken.
        struct Buf {
            b: [u8; 160],
            n: usize,
        }
        impl fmt::Write for Buf {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let k = s.len().min(self.b.len() - self.n);
                self.b[self.n..self.n + k].copy_from_slice(&s.as_bytes()[..k]);
                self.n += k;
                Ok(())
            }
        }
        let mut buf = Buf { b: [0; 160], n: 0 };
        let _ = fmt::write(&mut buf, format_args!("{err}\n"));
        // SAFETY: writes our own stack buffer to stderr.
        unsafe { libc::write(2, buf.b.as_ptr().cast(), buf.n) };
        std::process::abort()
    }
    #[cfg(not(feature = "std"))]
    panic!("{err}")
}
