//! The segment map: 2 bits per 64 KiB segment saying free, reserved, committed or mixed.
//!
//! A [`SegmentMap`] covers `[base, base + segments * 64 KiB)` with caller storage (any
//! `AsRef<[u64]> + AsMut<[u64]>`: a fixed array, a `&mut [u64]`, a `Vec`); a whole 4 GiB
//! space is 65,536 segments = 16 KiB ([`Map32`] is that as a fixed array, no heap). Looking
//! up an address is O(1) (a shift and a mask); range operations work a 64-bit word (32
//! segments) at a time. For 64-bit spaces, [`SparseSegmentMap`] (feature `alloc`) is two
//! levels: a top array indexed by the 4 GiB chunk, allocating a 16 KiB leaf on first write;
//! it covers address widths up to [`SPARSE_MAX_BITS`] (the top array of a 48-bit space is
//! 32,768 pointers); wider spaces are refused with [`SegError::OutOfRange`].

/// Bytes per segment.
pub const SEGMENT: u64 = 64 * 1024;
const SEG_SHIFT: u32 = 16;
const PER_WORD: u64 = 32;

/// The state of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SegState {
    /// Nothing reserved.
    Free = 0,
    /// Reserved, no page committed.
    Reserved = 1,
    /// Reserved and every page committed.
    Committed = 2,
    /// Reserved, some pages committed: the page table decides.
    Mixed = 3,
}

impl SegState {
    fn from_bits(b: u64) -> SegState {
        match b & 3 {
            0 => SegState::Free,
            1 => SegState::Reserved,
            2 => SegState::Committed,
            _ => SegState::Mixed,
        }
    }

    /// The 2-bit pattern repeated over a word.
    fn splat(self) -> u64 {
        (self as u64) * 0x5555_5555_5555_5555
    }
}

/// Why a segment-map operation failed; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegError {
    /// The address or range lies (partly) outside the map.
    OutOfRange,
    /// A range start or length not a multiple of 64 KiB.
    Misaligned,
    /// A zero-length range.
    ZeroLength,
}

/// A flat segment map over caller storage.
#[derive(Clone, Debug)]
pub struct SegmentMap<S> {
    base: u64,
    segments: u64,
    words: S,
}

/// The segment map of a whole 4 GiB (32-bit) space: 16 KiB, no heap.
pub type Map32 = SegmentMap<[u64; 2048]>;

impl Map32 {
    /// A map of `[0, 4 GiB)`, all free.
    pub const fn new_4gib() -> Self {
        SegmentMap {
            base: 0,
            segments: 65536,
            words: [0; 2048],
        }
    }
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> SegmentMap<S> {
    /// A map of `segments` segments from `base` (64 KiB-aligned) over `words`, which must hold
    /// `ceil(segments / 32)` words; all set to free.
    pub fn new(base: u64, segments: u64, mut words: S) -> Result<Self, SegError> {
        if base % SEGMENT != 0 {
            return Err(SegError::Misaligned);
        }
        let need = segments.div_ceil(PER_WORD);
        if (words.as_ref().len() as u64) < need
            || (base as u128 + ((segments as u128) << SEG_SHIFT)) > 1u128 << 64
        {
            return Err(SegError::OutOfRange);
        }
        words.as_mut()[..need as usize].fill(0);
        Ok(SegmentMap {
            base,
            segments,
            words,
        })
    }

    /// First address covered.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Number of segments covered.
    pub fn segments(&self) -> u64 {
        self.segments
    }

    fn index(&self, addr: u64) -> Option<u64> {
        let off = addr.checked_sub(self.base)? >> SEG_SHIFT;
        (off < self.segments).then_some(off)
    }

    /// The state of the segment holding `addr`, in O(1); `None` outside the map.
    pub fn get(&self, addr: u64) -> Option<SegState> {
        let i = self.index(addr)?;
        let w = self.words.as_ref()[(i / PER_WORD) as usize];
        Some(SegState::from_bits(w >> ((i % PER_WORD) * 2)))
    }

    /// Segment indices `[first, first + n)` of a 64 KiB-aligned range.
    fn seg_range(&self, start: u64, len: u64) -> Result<(u64, u64), SegError> {
        if len == 0 {
            return Err(SegError::ZeroLength);
        }
        if start % SEGMENT != 0 || len % SEGMENT != 0 {
            return Err(SegError::Misaligned);
        }
        let first = self.index(start).ok_or(SegError::OutOfRange)?;
        let n = len >> SEG_SHIFT;
        if n > self.segments - first {
            return Err(SegError::OutOfRange);
        }
        Ok((first, n))
    }

    /// Calls `f(word index, mask)` for each word the segments `[first, first+n)` touch.
    fn for_words(first: u64, n: u64, mut f: impl FnMut(usize, u64)) {
        let mut i = first;
        let end = first + n;
        while i < end {
            let w = i / PER_WORD;
            let lo = i % PER_WORD;
            let hi = (end - w * PER_WORD).min(PER_WORD);
            let bits = (hi - lo) * 2;
            let mask = if bits == 64 {
                !0
            } else {
                ((1u64 << bits) - 1) << (lo * 2)
            };
            f(w as usize, mask);
            i = (w + 1) * PER_WORD;
        }
    }

    /// Sets every segment of `[start, start+len)` to `state`.
    pub fn set_range(&mut self, start: u64, len: u64, state: SegState) -> Result<(), SegError> {
        let (first, n) = self.seg_range(start, len)?;
        let pat = state.splat();
        let words = self.words.as_mut();
        Self::for_words(first, n, |w, mask| {
            words[w] = (words[w] & !mask) | (pat & mask);
        });
        Ok(())
    }

    /// Whether every segment of `[start, start+len)` is in `state`.
    pub fn all(&self, start: u64, len: u64, state: SegState) -> Result<bool, SegError> {
        let (first, n) = self.seg_range(start, len)?;
        let pat = state.splat();
        let words = self.words.as_ref();
        let mut ok = true;
        Self::for_words(first, n, |w, mask| ok &= (words[w] ^ pat) & mask == 0);
        Ok(ok)
    }

    /// Number of segments of `[start, start+len)` in `state`.
    pub fn count(&self, start: u64, len: u64, state: SegState) -> Result<u64, SegError> {
        let (first, n) = self.seg_range(start, len)?;
        let pat = state.splat();
        let words = self.words.as_ref();
        let mut c = 0u64;
        Self::for_words(first, n, |w, mask| {
            // A segment matches when both of its bits equal the pattern.
            let x = !(words[w] ^ pat) & mask;
            c += (x & (x >> 1) & 0x5555_5555_5555_5555).count_ones() as u64;
        });
        Ok(c)
    }

    /// The lowest address of `n_segs` consecutive segments in `state` at or above `from`
    /// (clamped to the map), or `None`.
    pub fn find_run(&self, from: u64, n_segs: u64, state: SegState) -> Option<u64> {
        if n_segs == 0 {
            return None;
        }
        let mut i = match self.index(from) {
            Some(i) => i,
            None if from < self.base => 0,
            None => return None,
        };
        let mut run = 0u64;
        while i < self.segments {
            let w = self.words.as_ref()[(i / PER_WORD) as usize];
            if i % PER_WORD == 0 && w == state.splat() && self.segments - i >= PER_WORD {
                run += PER_WORD;
                i += PER_WORD;
            } else {
                if SegState::from_bits(w >> ((i % PER_WORD) * 2)) == state {
                    run += 1;
                } else {
                    run = 0;
                }
                i += 1;
            }
            if run >= n_segs {
                return Some(self.base + ((i - run) << SEG_SHIFT));
            }
        }
        None
    }
}

/// Widest address space a [`SparseSegmentMap`] covers.
pub const SPARSE_MAX_BITS: u32 = 48;

/// A two-level segment map of a 64-bit space: a top array of 4 GiB leaves made on first write.
#[cfg(feature = "alloc")]
#[derive(Clone)]
pub struct SparseSegmentMap {
    bits: u32,
    top: alloc::vec::Vec<Option<alloc::boxed::Box<Map32>>>,
}

#[cfg(feature = "alloc")]
impl SparseSegmentMap {
    /// A map of `[0, 2^bits)`, all free; `bits` from 32 to [`SPARSE_MAX_BITS`].
    pub fn new(bits: u32) -> Result<Self, SegError> {
        if !(32..=SPARSE_MAX_BITS).contains(&bits) {
            return Err(SegError::OutOfRange);
        }
        let mut top = alloc::vec::Vec::new();
        top.resize_with(1usize << (bits - 32), || None);
        Ok(SparseSegmentMap { bits, top })
    }

    /// The state of the segment holding `addr` in O(1); `None` outside the map.
    pub fn get(&self, addr: u64) -> Option<SegState> {
        if self.bits < 64 && addr >> self.bits != 0 {
            return None;
        }
        match &self.top[(addr >> 32) as usize] {
            Some(leaf) => leaf.get(addr & 0xFFFF_FFFF),
            None => Some(SegState::Free),
        }
    }

    fn check(&self, start: u64, len: u64) -> Result<(), SegError> {
        if len == 0 {
            return Err(SegError::ZeroLength);
        }
        if start % SEGMENT != 0 || len % SEGMENT != 0 {
            return Err(SegError::Misaligned);
        }
        if start as u128 + len as u128 > 1u128 << self.bits {
            return Err(SegError::OutOfRange);
        }
        Ok(())
    }

    /// Splits `[start, start+len)` into per-leaf pieces `(leaf, offset, len)`.
    fn pieces(start: u64, len: u64) -> impl Iterator<Item = (usize, u64, u64)> {
        let end = start as u128 + len as u128;
        let mut at = start as u128;
        core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let leaf_end = ((at >> 32) + 1) << 32;
            let stop = leaf_end.min(end);
            let piece = (
                (at >> 32) as usize,
                (at & 0xFFFF_FFFF) as u64,
                (stop - at) as u64,
            );
            at = stop;
            Some(piece)
        })
    }

    /// Sets every segment of `[start, start+len)` to `state`.
    pub fn set_range(&mut self, start: u64, len: u64, state: SegState) -> Result<(), SegError> {
        self.check(start, len)?;
        for (leaf, off, n) in Self::pieces(start, len) {
            let slot = &mut self.top[leaf];
            if slot.is_none() {
                if state == SegState::Free {
                    continue;
                }
                *slot = Some(alloc::boxed::Box::new(Map32::new_4gib()));
            }
            if let Some(m) = slot.as_mut() {
                m.set_range(off, n, state)?;
            }
        }
        Ok(())
    }

    /// Whether every segment of `[start, start+len)` is in `state`.
    pub fn all(&self, start: u64, len: u64, state: SegState) -> Result<bool, SegError> {
        self.check(start, len)?;
        for (leaf, off, n) in Self::pieces(start, len) {
            let ok = match &self.top[leaf] {
                Some(m) => m.all(off, n, state)?,
                None => state == SegState::Free,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Number of leaves allocated (16 KiB each).
    pub fn leaves(&self) -> usize {
        self.top.iter().filter(|l| l.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const S: u64 = SEGMENT;

    #[test]
    fn whole_4gib_space_is_16_kib() {
        let m = Map32::new_4gib();
        assert_eq!(core::mem::size_of_val(&m.words), 16 * 1024);
        assert_eq!(m.get(0), Some(SegState::Free));
        assert_eq!(m.get(u32::MAX as u64), Some(SegState::Free));
        assert_eq!(m.get(1 << 32), None);
    }

    #[test]
    fn set_and_lookup() {
        let mut m = Map32::new_4gib();
        m.set_range(0x1000_0000, 3 * S, SegState::Reserved).unwrap();
        m.set_range(0x1001_0000, S, SegState::Committed).unwrap();
        assert_eq!(m.get(0x0FFF_FFFF), Some(SegState::Free));
        assert_eq!(m.get(0x1000_0000), Some(SegState::Reserved));
        assert_eq!(m.get(0x1001_FFFF), Some(SegState::Committed));
        assert_eq!(m.get(0x1002_0000), Some(SegState::Reserved));
        assert_eq!(m.get(0x1003_0000), Some(SegState::Free));
        assert_eq!(m.count(0x1000_0000, 4 * S, SegState::Reserved), Ok(2));
        assert!(m.all(0x1000_0000, S, SegState::Reserved).unwrap());
        assert!(!m.all(0x1000_0000, 2 * S, SegState::Reserved).unwrap());
        // The top segment of the space.
        m.set_range(0xFFFF_0000, S, SegState::Mixed).unwrap();
        assert_eq!(m.get(0xFFFF_FFFF), Some(SegState::Mixed));
    }

    #[test]
    fn bad_ranges_are_typed_and_change_nothing() {
        let mut m = Map32::new_4gib();
        let before = m.words;
        assert_eq!(
            m.set_range(0, 0, SegState::Reserved),
            Err(SegError::ZeroLength)
        );
        assert_eq!(
            m.set_range(0x1000, S, SegState::Reserved),
            Err(SegError::Misaligned)
        );
        assert_eq!(
            m.set_range(0, S + 1, SegState::Reserved),
            Err(SegError::Misaligned)
        );
        assert_eq!(
            m.set_range(0xFFFF_0000, 2 * S, SegState::Reserved),
            Err(SegError::OutOfRange)
        );
        assert_eq!(
            m.set_range(1 << 32, S, SegState::Reserved),
            Err(SegError::OutOfRange)
        );
        assert_eq!(
            m.set_range(0, u64::MAX - S + 1, SegState::Reserved),
            Err(SegError::OutOfRange)
        );
        assert_eq!(m.words, before);
        let mut w = [0u64; 1];
        assert_eq!(
            SegmentMap::new(0, 33, &mut w[..]).err(),
            Some(SegError::OutOfRange)
        );
        assert_eq!(
            SegmentMap::new(0x8000, 1, &mut w[..]).err(),
            Some(SegError::Misaligned)
        );
        assert_eq!(
            SegmentMap::new(u64::MAX - S + 1, 2, &mut w[..]).err(),
            Some(SegError::OutOfRange)
        );
        let top = SegmentMap::new(u64::MAX - S + 1, 1, &mut w[..]).unwrap();
        assert_eq!(top.get(u64::MAX), Some(SegState::Free));
    }

    #[test]
    fn sparse_map_covers_48_bits_with_leaves_on_demand() {
        let mut m = SparseSegmentMap::new(48).unwrap();
        assert!(SparseSegmentMap::new(49).is_err());
        assert_eq!(m.get(0x7FFF_FFFF_0000), Some(SegState::Free));
        assert_eq!(m.get(1 << 48), None);
        m.set_range(0x7FFF_FFFF_0000, S, SegState::Committed)
            .unwrap();
        assert_eq!(m.get(0x7FFF_FFFF_FFFF), Some(SegState::Committed));
        // A range across a 4 GiB leaf boundary.
        m.set_range(0x1_FFFF_0000, 2 * S, SegState::Reserved)
            .unwrap();
        assert_eq!(m.get(0x1_FFFF_0000), Some(SegState::Reserved));
        assert_eq!(m.get(0x2_0000_0000), Some(SegState::Reserved));
        assert_eq!(m.get(0x2_0001_0000), Some(SegState::Free));
        assert!(m.all(0x1_FFFF_0000, 2 * S, SegState::Reserved).unwrap());
        assert!(m.all(0x3_0000_0000, 1 << 33, SegState::Free).unwrap());
        assert_eq!(m.leaves(), 3);
        assert_eq!(
            m.set_range(0xFFFF_FFFF_0000, 2 * S, SegState::Reserved),
            Err(SegError::OutOfRange)
        );
    }

    proptest! {
        #[test]
        fn flat_map_matches_a_vec_model(
            ops in prop::collection::vec((0u64..200, 1u64..80, 0u8..4), 1..60),
            from in 0u64..200, run in 1u64..40, want in 0u8..4,
        ) {
            let n = 200u64;
            let base = 0x4000_0000u64;
            let mut words = [0u64; 7];
            let mut m = SegmentMap::new(base, n, &mut words[..]).unwrap();
            let mut model = vec![SegState::Free; n as usize];
            let st = |k: u8| [SegState::Free, SegState::Reserved, SegState::Committed, SegState::Mixed][k as usize];
            for &(first, len, k) in &ops {
                let r = m.set_range(base + first * S, len * S, st(k));
                if first + len <= n {
                    prop_assert!(r.is_ok());
                    for s in &mut model[first as usize..(first + len) as usize] { *s = st(k); }
                } else {
                    prop_assert_eq!(r, Err(SegError::OutOfRange));
                }
            }
            for i in 0..n {
                prop_assert_eq!(m.get(base + i * S + 0x1234), Some(model[i as usize]));
            }
            let (f, l) = (from.min(n - 1), run.min(n - from.min(n - 1)));
            let slice: Vec<_> = model[f as usize..(f + l) as usize].to_vec();
            prop_assert_eq!(m.count(base + f * S, l * S, st(want)).unwrap(), slice.iter().filter(|&&s| s == st(want)).count() as u64);
            prop_assert_eq!(m.all(base + f * S, l * S, st(want)).unwrap(), slice.iter().all(|&s| s == st(want)));
            let expect = (f..n).find(|&i| i + run <= n && model[i as usize..(i + run) as usize].iter().all(|&s| s == st(want)));
            prop_assert_eq!(m.find_run(base + f * S, run, st(want)), expect.map(|i| base + i * S));
        }
    }
}
