//! The Windows allocation table (W2, W20): reservations by base, each with its
//! AllocationProtect, size and per-page state, protection and guard bit kept as runs; the
//! commit charge and its limit; and the 2-bit-per-64 KiB segment map that follows it.
//!
//! Kept apart from the VMAs because those merge and split freely (section 3): two adjacent
//! reservations may share one `PROT_NONE` VMA, and one reservation may span several VMAs.

use super::{WinProt, GRANULARITY, PAGE};
use crate::range::segment_map::{SegState, SparseSegmentMap, SEGMENT, SPARSE_MAX_BITS};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// One page's entry: committed or reserved, and a committed page's protection (its guard
/// bit included). Reserved pages carry no protection.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageEntry(u16);

const COMMITTED: u16 = 0x8000;

impl PageEntry {
    /// A reserved, uncommitted page.
    pub const RESERVED: PageEntry = PageEntry(0);

    /// A committed page with protection `prot` (validated by the caller).
    pub fn committed(prot: WinProt) -> PageEntry {
        PageEntry(COMMITTED | (prot.bits() & 0x7ff) as u16)
    }

    /// Whether the page is committed.
    pub fn is_committed(self) -> bool {
        self.0 & COMMITTED != 0
    }

    /// The protection (0 for reserved pages).
    pub fn prot(self) -> WinProt {
        WinProt((self.0 & 0x7ff) as u32)
    }

    /// Whether the page carries PAGE_GUARD.
    pub fn is_guard(self) -> bool {
        self.prot().is_guard()
    }

    /// The PROT_* its VMA carries: the base protection of a committed page without
    /// PAGE_GUARD, `PROT_NONE` otherwise (reserved, guard, NOACCESS).
    pub fn linux_prot(self) -> u64 {
        if self.is_committed() && !self.is_guard() {
            self.prot().linux_prot()
        } else {
            0
        }
    }
}

impl fmt::Debug for PageEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_committed() {
            write!(f, "Commit({:?})", self.prot())
        } else {
            f.write_str("Reserve")
        }
    }
}

/// One reservation (an allocation in Windows' words).
#[derive(Clone, PartialEq, Eq)]
pub struct Allocation {
    /// AllocationBase: a multiple of 64 KiB.
    pub base: u64,
    /// Bytes reserved: a multiple of the page size (not of 64 KiB, W4).
    pub size: u64,
    /// AllocationProtect: the protection given at reservation.
    pub alloc_protect: WinProt,
    /// Run starts (page index from `base`) -> the entry of every page up to the next start.
    /// Consecutive runs differ (kept coalesced), so a run is a maximal VirtualQuery region.
    runs: BTreeMap<u64, PageEntry>,
}

impl fmt::Debug for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .field("alloc_protect", &self.alloc_protect)
            .field("runs", &self.runs().collect::<Vec<_>>())
            .finish()
    }
}

impl Allocation {
    /// A reservation of `size` bytes at `base`, every page reserved.
    pub fn new(base: u64, size: u64, alloc_protect: WinProt) -> Allocation {
        let mut runs = BTreeMap::new();
        runs.insert(0, PageEntry::RESERVED);
        Allocation {
            base,
            size,
            alloc_protect,
            runs,
        }
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Number of pages.
    pub fn pages(&self) -> u64 {
        self.size / PAGE
    }

    /// Whether `addr` lies in the reservation.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }

    /// The entry of page `idx` (< [`Self::pages`]).
    pub fn entry(&self, idx: u64) -> PageEntry {
        self.runs
            .range(..=idx)
            .next_back()
            .map_or(PageEntry::RESERVED, |(_, e)| *e)
    }

    /// The run holding page `idx`: `(first, end, entry)` in page indices.
    pub fn run_at(&self, idx: u64) -> (u64, u64, PageEntry) {
        let (first, e) = self
            .runs
            .range(..=idx)
            .next_back()
            .map_or((0, PageEntry::RESERVED), |(k, e)| (*k, *e));
        let end = self
            .runs
            .range(idx + 1..)
            .next()
            .map_or(self.pages(), |(k, _)| *k);
        (first, end, e)
    }

    /// Every run as `(first, end, entry)` in page indices, in order.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64, PageEntry)> + '_ {
        let pages = self.pages();
        let mut it = self.runs.iter().peekable();
        core::iter::from_fn(move || {
            let (k, e) = it.next()?;
            let end = it.peek().map_or(pages, |(n, _)| **n);
            Some((*k, end, *e))
        })
    }

    /// The runs clipped to pages `[lo, hi)`.
    pub fn runs_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, u64, PageEntry)> + '_ {
        let from = self.runs.range(..=lo).next_back().map_or(0, |(k, _)| *k);
        let pages = self.pages();
        let mut it = self.runs.range(from..).peekable();
        core::iter::from_fn(move || {
            let (k, e) = it.next()?;
            let end = it.peek().map_or(pages, |(n, _)| **n);
            Some((*k, end, *e))
        })
        .take_while(move |(a, _, _)| *a < hi)
        .filter(move |(a, b, _)| *a < hi && *b > lo)
        .map(move |(a, b, e)| (a.max(lo), b.min(hi), e))
    }

    /// Committed pages among `[lo, hi)`.
    pub fn committed_in(&self, lo: u64, hi: u64) -> u64 {
        self.runs_in(lo, hi)
            .filter(|r| r.2.is_committed())
            .map(|(a, b, _)| b - a)
            .sum()
    }

    /// Committed pages.
    pub fn committed_pages(&self) -> u64 {
        self.committed_in(0, self.pages())
    }

    /// Gives every page of `[lo, hi)` the entry `f(old)`, keeping runs coalesced.
    pub(crate) fn update(&mut self, lo: u64, hi: u64, f: impl Fn(PageEntry) -> PageEntry) {
        let hi = hi.min(self.pages());
        if lo >= hi {
            return;
        }
        if hi < self.pages() && !self.runs.contains_key(&hi) {
            let e = self.entry(hi);
            self.runs.insert(hi, e);
        }
        if !self.runs.contains_key(&lo) {
            let e = self.entry(lo);
            self.runs.insert(lo, e);
        }
        for (_, e) in self.runs.range_mut(lo..hi) {
            *e = f(*e);
        }
        // Coalesce the boundaries from the run before `lo` to the run at `hi`.
        let from = self.runs.range(..lo).next_back().map_or(lo, |(k, _)| *k);
        let keys: Vec<u64> = self.runs.range(from..=hi).map(|(k, _)| *k).collect();
        let mut prev: Option<PageEntry> = None;
        for k in keys {
            let e = self.runs[&k];
            if prev == Some(e) {
                self.runs.remove(&k);
            } else {
                prev = Some(e);
            }
        }
    }

    /// The segment-map state of the 64 KiB segment at `seg` (which this reservation meets):
    /// Committed when all 16 pages are committed without PAGE_GUARD, Reserved when all are
    /// reserved, Mixed otherwise (including a segment the reservation ends inside, W4).
    fn seg_state(&self, seg: u64) -> SegState {
        let lo = (seg.max(self.base) - self.base) / PAGE;
        let hi = ((seg + SEGMENT).min(self.end()) - self.base) / PAGE;
        if seg < self.base || seg + SEGMENT > self.end() {
            return SegState::Mixed;
        }
        let mut all_plain = true;
        let mut all_reserved = true;
        for (_, _, e) in self.runs_in(lo, hi) {
            all_plain &= e.is_committed() && !e.is_guard();
            all_reserved &= !e.is_committed();
        }
        if all_plain {
            SegState::Committed
        } else if all_reserved {
            SegState::Reserved
        } else {
            SegState::Mixed
        }
    }
}

/// What the fault path needs to know of a page (see [`WinTable::page`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WinPage {
    /// Not in any reservation: Linux rules apply.
    Outside,
    /// Committed without PAGE_GUARD in a wholly committed segment: the VMA decides.
    Plain,
    /// Reserved (not committed).
    Reserved,
    /// Committed with this protection (maybe with PAGE_GUARD).
    Committed(WinProt),
}

/// The allocation table of one address space.
#[derive(Clone, Default)]
pub struct WinTable {
    allocs: BTreeMap<u64, Allocation>,
    /// Made on the first reservation (a 47-bit space's top array is 256 KiB).
    segs: Option<SparseSegmentMap>,
    /// Committed pages over all reservations (W6).
    charge: u64,
    /// `None`: the configured RAM + swap.
    limit: Option<u64>,
}

impl fmt::Debug for WinTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WinTable")
            .field("allocs", &self.allocs.values().collect::<Vec<_>>())
            .field("charge", &self.charge)
            .field("limit", &self.limit)
            .finish()
    }
}

impl PartialEq for WinTable {
    /// Equal reservations, charge and limit (the segment map follows the reservations).
    fn eq(&self, o: &WinTable) -> bool {
        self.allocs == o.allocs && self.charge == o.charge && self.limit == o.limit
    }
}

impl WinTable {
    /// No reservation at all (the fault path's first, cheapest test).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.allocs.is_empty()
    }

    /// Every reservation in address order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.allocs.values()
    }

    /// The reservation holding `addr`.
    pub fn containing(&self, addr: u64) -> Option<&Allocation> {
        self.allocs
            .range(..=addr)
            .next_back()
            .map(|(_, a)| a)
            .filter(|a| a.contains(addr))
    }

    /// The reservation with base `base`.
    pub fn get(&self, base: u64) -> Option<&Allocation> {
        self.allocs.get(&base)
    }

    pub(crate) fn get_mut(&mut self, base: u64) -> Option<&mut Allocation> {
        self.allocs.get_mut(&base)
    }

    /// The first reservation ending above `addr`.
    pub fn first_above(&self, addr: u64) -> Option<&Allocation> {
        if let Some(a) = self.containing(addr) {
            return Some(a);
        }
        self.allocs.range(addr..).next().map(|(_, a)| a)
    }

    /// The last reservation starting at or below `addr`.
    pub fn last_below(&self, addr: u64) -> Option<&Allocation> {
        self.allocs.range(..=addr).next_back().map(|(_, a)| a)
    }

    /// Whether any reservation meets `[start, end)`.
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        self.first_above(start).is_some_and(|a| a.base < end)
    }

    /// Committed pages (the commit charge, W6).
    pub fn charge(&self) -> u64 {
        self.charge
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    pub(crate) fn set_limit(&mut self, pages: Option<u64>) {
        self.limit = pages;
    }

    pub(crate) fn add_charge(&mut self, pages: u64) {
        self.charge += pages;
    }

    pub(crate) fn sub_charge(&mut self, pages: u64) {
        self.charge = self.charge.saturating_sub(pages);
    }

    /// Enters `a` (its range must be free in the table) and marks its segments; `bits` is the
    /// address width for the segment map.
    pub(crate) fn insert(&mut self, a: Allocation, bits: u32) {
        let (s, e) = (a.base, a.end());
        if self.segs.is_none() && bits <= SPARSE_MAX_BITS {
            self.segs = SparseSegmentMap::new(bits.max(32)).ok();
        }
        self.allocs.insert(a.base, a);
        self.refresh(s, e);
    }

    /// Takes the reservation at `base` out (its charge stays with the caller to return).
    pub(crate) fn remove(&mut self, base: u64) -> Option<Allocation> {
        let a = self.allocs.remove(&base)?;
        self.refresh(a.base, a.end());
        Some(a)
    }

    /// Puts a reservation back as it was (rollback of a failed release).
    pub(crate) fn restore(&mut self, a: Allocation) {
        let (s, e) = (a.base, a.end());
        self.allocs.insert(a.base, a);
        self.refresh(s, e);
    }

    /// Recomputes the segment-map states of the segments meeting `[start, end)`: gaps
    /// between reservations become Free, segments wholly inside one run take its state in
    /// one `set_range`, only segments a run boundary (or a reservation's end) crosses are
    /// looked at page by page. A 1 TiB reservation costs a few word fills, not 16M lookups.
    pub(crate) fn refresh(&mut self, start: u64, end: u64) {
        if self.segs.is_none() || end <= start {
            return;
        }
        let mask = GRANULARITY - 1;
        let s0 = start & !mask;
        let e0 = end.saturating_add(mask) & !mask;
        let mut sets: Vec<(u64, u64, SegState)> = Vec::new();
        let mut cursor = s0;
        let mut at = s0;
        while let Some(a) = self.first_above(at) {
            if a.base >= e0 {
                break;
            }
            if a.base > cursor {
                sets.push((cursor, a.base, SegState::Free));
            }
            let lo = s0.max(a.base);
            let hi = e0.min(a.end().saturating_add(mask) & !mask);
            let mut seg = lo;
            while seg < hi {
                let (_, re, e) = a.run_at((seg - a.base) / PAGE);
                let run_end = a.base + re * PAGE;
                let full_end = (run_end & !mask).min(hi);
                if full_end > seg {
                    let st = if !e.is_committed() {
                        SegState::Reserved
                    } else if e.is_guard() {
                        SegState::Mixed
                    } else {
                        SegState::Committed
                    };
                    sets.push((seg, full_end, st));
                    seg = full_end;
                } else {
                    sets.push((seg, seg + SEGMENT, a.seg_state(seg)));
                    seg += SEGMENT;
                }
            }
            cursor = hi;
            at = a.end();
        }
        if cursor < e0 {
            sets.push((cursor, e0, SegState::Free));
        }
        if let Some(segs) = self.segs.as_mut() {
            for (s, e, st) in sets {
                let _ = segs.set_range(s, e - s, st);
            }
        }
    }

    /// The segment-map state of the segment holding `addr` (Free without a map).
    #[inline]
    pub fn segment(&self, addr: u64) -> SegState {
        match &self.segs {
            Some(m) => m.get(addr).unwrap_or(SegState::Free),
            None if self.containing(addr).is_some() => SegState::Mixed,
            None => SegState::Free,
        }
    }

    /// What a fault at `addr` meets: O(1) through the segment map for free, wholly
    /// reserved and wholly committed segments; a table lookup for mixed ones.
    #[inline]
    pub fn page(&self, addr: u64) -> WinPage {
        match self.segment(addr) {
            SegState::Free => WinPage::Outside,
            SegState::Reserved => WinPage::Reserved,
            SegState::Committed => WinPage::Plain,
            SegState::Mixed => self.page_exact(addr),
        }
    }

    /// What [`Self::page`] says, from the table alone (never [`WinPage::Plain`]).
    pub fn page_exact(&self, addr: u64) -> WinPage {
        match self.containing(addr) {
            None => WinPage::Outside,
            Some(a) => {
                let e = a.entry((addr - a.base) / PAGE);
                if e.is_committed() {
                    WinPage::Committed(e.prot())
                } else {
                    WinPage::Reserved
                }
            }
        }
    }

    /// Reservations meeting `[start, end)`, by base.
    pub(crate) fn bases_meeting(&self, start: u64, end: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = start;
        while let Some(a) = self.first_above(at) {
            if a.base >= end {
                break;
            }
            out.push(a.base);
            at = a.end();
        }
        out
    }

    /// Checks the table: bases 64 KiB aligned, sizes page multiples, no overlap, runs
    /// coalesced and inside their reservation, charge = committed pages, segment map in
    /// step.
    pub fn check(&self) -> Result<(), alloc::string::String> {
        let mut prev_end = 0;
        let mut committed = 0;
        for (k, a) in &self.allocs {
            if *k != a.base || a.base % GRANULARITY != 0 || a.size == 0 || a.size % PAGE != 0 {
                return Err(alloc::format!("bad reservation {a:?}"));
            }
            if a.base < prev_end {
                return Err(alloc::format!("reservation {:#x} overlaps", a.base));
            }
            prev_end = a.end();
            let mut prev = None;
            for (first, end, e) in a.runs() {
                if first >= end || prev == Some(e) {
                    return Err(alloc::format!("runs not coalesced in {a:?}"));
                }
                prev = Some(e);
            }
            if a.runs.keys().next() != Some(&0) {
                return Err(alloc::format!("first run missing in {a:?}"));
            }
            committed += a.committed_pages();
            if self.segs.is_some() {
                let mut seg = a.base;
                while seg < a.end() {
                    if self.segment(seg) != a.seg_state(seg) {
                        return Err(alloc::format!("segment map stale at {seg:#x}"));
                    }
                    seg += SEGMENT;
                }
            }
        }
        if committed != self.charge {
            return Err(alloc::format!(
                "charge {} but {} pages committed",
                self.charge,
                committed
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_keeps_runs_coalesced() {
        let mut a = Allocation::new(0x10000, 16 * PAGE, WinProt::READWRITE);
        let rw = PageEntry::committed(WinProt::READWRITE);
        a.update(2, 5, |_| rw);
        a.update(5, 8, |_| rw);
        assert_eq!(
            a.runs().collect::<Vec<_>>(),
            [
                (0, 2, PageEntry::RESERVED),
                (2, 8, rw),
                (8, 16, PageEntry::RESERVED)
            ]
        );
        a.update(0, 16, |_| PageEntry::RESERVED);
        assert_eq!(a.runs().count(), 1);
        assert_eq!(a.run_at(9), (0, 16, PageEntry::RESERVED));
    }
}
