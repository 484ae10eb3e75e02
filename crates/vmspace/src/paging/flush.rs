//! TLB invalidation: the [`Flush`] token every changing operation returns, and the [`Tlb`]
//! that applies it.
//!
//! Mapping a not-present entry needs no invalidation (SDM Vol. 3A 4.10.4.3: no TLB or
//! paging-structure-cache entry is made from an entry with P = 0), so `map` returns none.
//! Unmapping and reprotecting do; freeing a page table is covered by the same `INVLPG`,
//! which also drops the paging-structure caches (SDM 4.10.4.1).

use crate::addr::{VirtAddr, PAGE_SIZE};

/// Above this many pages a range invalidation becomes a full flush, as Linux's
/// `tlb_single_page_flush_ceiling` (33) decides in `flush_tlb_mm_range`.
pub const FLUSH_CEILING_PAGES: u64 = 33;

/// Translations the TLB may still hold after a page-table change. Must be applied with
/// [`Flush::flush`] or explicitly dropped with [`Flush::ignore`].
#[must_use = "the TLB may still hold the old translation: call flush(tlb) or ignore()"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Nothing changed that the TLB could hold.
    Nothing,
    /// The page (of any size) containing this address.
    Page(VirtAddr),
    /// Every page in `[start, start + len)`.
    Range { start: VirtAddr, len: u64 },
    /// Everything (a whole address space changed).
    All,
}

impl Flush {
    /// Applies the invalidation to `tlb`.
    pub fn flush<T: Tlb + ?Sized>(self, tlb: &mut T) {
        match self {
            Flush::Nothing => {}
            Flush::Page(va) => tlb.invalidate_page(va),
            Flush::Range { start, len } => tlb.invalidate_range(start, len),
            Flush::All => tlb.invalidate_all(),
        }
    }

    /// Drops the token on purpose (e.g. the space is not loaded on any CPU).
    pub fn ignore(self) {}

    /// One token covering both (a range spanning both, or everything).
    pub fn merge(self, other: Flush) -> Flush {
        let span = |f: Flush| -> Option<(u128, u128)> {
            match f {
                Flush::Page(va) => {
                    let s = va.align_down(PAGE_SIZE).as_u64() as u128;
                    Some((s, s + PAGE_SIZE as u128))
                }
                Flush::Range { start, len } => {
                    Some((start.as_u64() as u128, start.as_u64() as u128 + len as u128))
                }
                _ => None,
            }
        };
        match (self, other) {
            (Flush::Nothing, x) | (x, Flush::Nothing) => x,
            (Flush::All, _) | (_, Flush::All) => Flush::All,
            (a, b) => match (span(a), span(b)) {
                (Some((s1, e1)), Some((s2, e2))) => {
                    let s = s1.min(s2);
                    let e = e1.max(e2);
                    match u64::try_from(e - s) {
                        Ok(len) => Flush::Range {
                            start: VirtAddr::new(s as u64),
                            len,
                        },
                        Err(_) => Flush::All,
                    }
                }
                _ => Flush::All,
            },
        }
    }

    /// Whether applying this token invalidates the page containing `va`.
    pub fn covers(self, va: VirtAddr) -> bool {
        match self {
            Flush::Nothing => false,
            Flush::Page(p) => p.align_down(PAGE_SIZE) == va.align_down(PAGE_SIZE),
            Flush::Range { start, len } => {
                let s = start.align_down(PAGE_SIZE).as_u64() as u128;
                let v = va.as_u64() as u128;
                v >= s && v < start.as_u64() as u128 + len as u128
            }
            Flush::All => true,
        }
    }
}

/// A translation lookaside buffer that can be told to forget translations.
pub trait Tlb {
    /// Forgets the translation of the page containing `va` (x86: `INVLPG`).
    fn invalidate_page(&mut self, va: VirtAddr);

    /// Forgets every non-global translation (x86: reload CR3).
    fn invalidate_all(&mut self);

    /// Forgets `[start, start + len)`: page by page up to [`FLUSH_CEILING_PAGES`], else all.
    fn invalidate_range(&mut self, start: VirtAddr, len: u64) {
        let pages = len.div_ceil(PAGE_SIZE);
        if pages > FLUSH_CEILING_PAGES {
            self.invalidate_all();
            return;
        }
        let mut va = start.align_down(PAGE_SIZE);
        for _ in 0..pages {
            self.invalidate_page(va);
            match va.checked_add(PAGE_SIZE) {
                Some(n) => va = n,
                None => break,
            }
        }
    }
}

/// A TLB that holds nothing (emulated RAM without a CPU): every invalidation is a no-op.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTlb;

impl Tlb for NoTlb {
    fn invalidate_page(&mut self, _va: VirtAddr) {}
    fn invalidate_all(&mut self) {}
    fn invalidate_range(&mut self, _start: VirtAddr, _len: u64) {}
}

/// One invalidation a [`RecordingTlb`] received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbEvent {
    Page(VirtAddr),
    Range { start: VirtAddr, len: u64 },
    All,
}

/// A TLB that records what it was told, for tests.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub struct RecordingTlb {
    /// Invalidations in the order received.
    pub events: alloc::vec::Vec<TlbEvent>,
}

#[cfg(feature = "alloc")]
impl RecordingTlb {
    /// Whether some recorded invalidation covers the page containing `va`.
    pub fn covers(&self, va: VirtAddr) -> bool {
        self.events.iter().any(|e| {
            let f = match *e {
                TlbEvent::Page(p) => Flush::Page(p),
                TlbEvent::Range { start, len } => Flush::Range { start, len },
                TlbEvent::All => Flush::All,
            };
            f.covers(va)
        })
    }
}

#[cfg(feature = "alloc")]
impl Tlb for RecordingTlb {
    fn invalidate_page(&mut self, va: VirtAddr) {
        self.events.push(TlbEvent::Page(va));
    }
    fn invalidate_all(&mut self) {
        self.events.push(TlbEvent::All);
    }
    fn invalidate_range(&mut self, start: VirtAddr, len: u64) {
        self.events.push(TlbEvent::Range { start, len });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        pages: u64,
        alls: u64,
    }
    impl Tlb for Counting {
        fn invalidate_page(&mut self, _va: VirtAddr) {
            self.pages += 1;
        }
        fn invalidate_all(&mut self) {
            self.alls += 1;
        }
    }

    #[test]
    fn range_falls_back_to_full_flush_above_the_ceiling() {
        let mut t = Counting { pages: 0, alls: 0 };
        Flush::Range {
            start: VirtAddr::new(0x1000),
            len: 33 * PAGE_SIZE,
        }
        .flush(&mut t);
        assert_eq!((t.pages, t.alls), (33, 0));
        Flush::Range {
            start: VirtAddr::new(0x1000),
            len: 34 * PAGE_SIZE,
        }
        .flush(&mut t);
        assert_eq!((t.pages, t.alls), (33, 1));
        // The last page of the 64-bit space does not wrap.
        Flush::Range {
            start: VirtAddr::new(0xffff_ffff_ffff_f000),
            len: PAGE_SIZE,
        }
        .flush(&mut t);
        assert_eq!(t.pages, 34);
    }

    #[test]
    fn merge_and_cover() {
        let a = Flush::Page(VirtAddr::new(0x5000));
        let b = Flush::Page(VirtAddr::new(0x9000));
        let m = a.merge(b);
        assert_eq!(
            m,
            Flush::Range {
                start: VirtAddr::new(0x5000),
                len: 0x5000
            }
        );
        assert!(m.covers(VirtAddr::new(0x9fff)));
        assert!(!m.covers(VirtAddr::new(0xa000)));
        assert_eq!(Flush::Nothing.merge(a), a);
        assert_eq!(a.merge(Flush::All), Flush::All);
        let mut r = RecordingTlb::default();
        m.flush(&mut r);
        assert!(r.covers(VirtAddr::new(0x6000)));
        assert!(!r.covers(VirtAddr::new(0x4000)));
    }
}
