//! Hierarchical bitmaps in caller-provided words: a leaf bit per item plus a 64-ary summary
//! (a bit per leaf word that is not zero, a bit per summary word that is not zero, … up to a
//! single word), so that the lowest set bit is found in O(log64 n) steps — a trailing-zero
//! count per level, four levels for 2^20 bits — and setting or clearing a bit touches the
//! levels above only when a word turns zero or non-zero.
//!
//! A [`Bitmap`] only says where its words lie in a `[u64]`; the words belong to the caller
//! (the buddy allocator keeps all its bitmaps in one slice). Leaf words may be strided so that
//! other per-item words sit next to them in the same cache line.

/// Most levels (leaves included) a bitmap of up to 2^32 bits needs: 2^26 leaf words, then
/// 2^20, 2^14, 2^8, 4 and 1 summary words.
pub(crate) const MAX_LEVELS: usize = 6;

/// Number of 64-bit words that hold `bits` bits; at least one, so that every bitmap has a
/// top word.
pub(crate) const fn words_for(bits: u64) -> u64 {
    if bits == 0 {
        1
    } else {
        bits.div_ceil(64)
    }
}

/// Distance between consecutive leaf words: each leaf word is followed by one word of
/// another bitmap over the same items (the buddy allocator's ALLOCATED words).
pub(crate) const STRIDE: usize = 2;

/// Where one hierarchical bitmap lives in a word slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bitmap {
    /// Index of leaf word 0.
    base: usize,
    /// Number of leaf words.
    leaves: usize,
    /// Number of summary levels above the leaves.
    nup: usize,
    /// Index of word 0 of each summary level, the one just above the leaves first.
    up: [usize; MAX_LEVELS - 1],
}

impl Bitmap {
    /// A bitmap of `leaves` leaf words at `base + i * STRIDE`, whose summary levels are placed
    /// contiguously from `*next` on (which is advanced past them).
    pub(crate) fn new(base: usize, leaves: usize, next: &mut usize) -> Self {
        let mut b = Bitmap {
            base,
            leaves,
            nup: 0,
            up: [0; MAX_LEVELS - 1],
        };
        let mut n = leaves;
        while n > 1 && b.nup < MAX_LEVELS - 1 {
            n = n.div_ceil(64);
            b.up[b.nup] = *next;
            *next += n;
            b.nup += 1;
        }
        b
    }

    /// Summary words a bitmap of `leaves` leaf words needs.
    pub(crate) fn summary_words(leaves: u64) -> u64 {
        let (mut n, mut total) = (leaves, 0);
        while n > 1 {
            n = n.div_ceil(64);
            total += n;
        }
        total
    }

    /// Index of word 0 of summary level `level` (0: the one above the leaves).
    #[cfg(test)]
    pub(crate) fn summary_base(&self, level: usize) -> usize {
        self.up[level]
    }

    /// Number of leaf words.
    pub(crate) fn leaves(&self) -> usize {
        self.leaves
    }

    /// Index of leaf word `g` in the slice.
    #[inline(always)]
    pub(crate) fn leaf(&self, g: usize) -> usize {
        self.base + g * STRIDE
    }

    /// Whether bit `bit` is set.
    #[inline(always)]
    pub(crate) fn test(&self, m: &[u64], bit: usize) -> bool {
        m[self.leaf(bit / 64)] & (1 << (bit % 64)) != 0
    }

    /// Sets bit `bit`, which must be clear.
    #[inline(always)]
    pub(crate) fn set(&self, m: &mut [u64], bit: usize) {
        let i = self.leaf(bit / 64);
        let w = m[i];
        m[i] = w | 1 << (bit % 64);
        if w == 0 {
            self.mark(m, bit / 64);
        }
    }

    /// Records in the summaries that leaf word `g` turned non-zero.
    #[inline]
    pub(crate) fn mark(&self, m: &mut [u64], mut g: usize) {
        for &base in &self.up[..self.nup] {
            let i = base + g / 64;
            let w = m[i];
            m[i] = w | 1 << (g % 64);
            if w != 0 {
                return;
            }
            g /= 64;
        }
    }

    /// Clears bit `bit`, which must be set.
    #[inline(always)]
    pub(crate) fn clear(&self, m: &mut [u64], bit: usize) {
        let i = self.leaf(bit / 64);
        let w = m[i] & !(1 << (bit % 64));
        m[i] = w;
        if w == 0 {
            self.unmark(m, bit / 64);
        }
    }

    /// Records in the summaries that leaf word `g` turned zero.
    #[inline]
    pub(crate) fn unmark(&self, m: &mut [u64], mut g: usize) {
        for &base in &self.up[..self.nup] {
            let i = base + g / 64;
            let w = m[i] & !(1 << (g % 64));
            m[i] = w;
            if w != 0 {
                return;
            }
            g /= 64;
        }
    }

    /// Index of the lowest non-zero leaf word, read off the summaries top-down; 0 when the
    /// bitmap is empty (the caller knows it is not).
    #[inline]
    pub(crate) fn first_leaf(&self, m: &[u64]) -> usize {
        let mut g = 0;
        for &base in self.up[..self.nup].iter().rev() {
            let w = m[base + g];
            g = g * 64 + w.trailing_zeros() as usize;
        }
        g
    }

    /// The set bits from `from` on, lowest first.
    pub(crate) fn iter_from<'a>(
        &self,
        m: &'a [u64],
        from: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        let bm = *self;
        let mut g = from / 64;
        let mut w = if g < bm.leaves {
            m[bm.leaf(g)] & (u64::MAX << (from % 64))
        } else {
            0
        };
        core::iter::from_fn(move || loop {
            if w != 0 {
                let bit = g * 64 + w.trailing_zeros() as usize;
                w &= w - 1;
                return Some(bit);
            }
            g += 1;
            if g >= bm.leaves {
                return None;
            }
            w = m[bm.leaf(g)];
        })
    }

    /// Whether every summary word is zero.
    pub(crate) fn summaries_zero(&self, m: &[u64]) -> bool {
        let mut below = self.leaves;
        (0..self.nup).all(|l| {
            below = below.div_ceil(64);
            m[self.up[l]..self.up[l] + below].iter().all(|&w| w == 0)
        })
    }

    /// Checks that every summary bit says exactly whether the word below it is non-zero, and
    /// that summary bits past the last word below are clear.
    pub(crate) fn check_summaries(&self, m: &[u64]) -> Result<(), &'static str> {
        let mut below = self.leaves;
        for l in 0..self.nup {
            let words = below.div_ceil(64);
            for j in 0..words {
                let w = m[self.up[l] + j];
                for bit in 0..64 {
                    let child = j * 64 + bit;
                    let nonzero = child < below
                        && if l == 0 {
                            m[self.leaf(child)] != 0
                        } else {
                            m[self.up[l - 1] + child] != 0
                        };
                    if (w >> bit) & 1 != u64::from(nonzero) {
                        return Err("summary bit disagrees with the word below it");
                    }
                }
            }
            below = words;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn bitmap(bits: usize, other: u64) -> (Bitmap, Vec<u64>) {
        let leaves = words_for(bits as u64) as usize;
        let mut next = leaves * STRIDE;
        let b = Bitmap::new(0, leaves, &mut next);
        assert_eq!(
            next,
            leaves * STRIDE + Bitmap::summary_words(leaves as u64) as usize
        );
        let mut m = vec![0; next];
        // The interleaved words of the other bitmap must not disturb this one.
        for g in 0..leaves {
            m[b.leaf(g) + 1] = other;
        }
        (b, m)
    }

    #[test]
    fn levels_grow_by_64() {
        assert_eq!(Bitmap::summary_words(1), 0);
        assert_eq!(Bitmap::summary_words(64), 1);
        assert_eq!(Bitmap::summary_words(65), 2 + 1);
        assert_eq!(Bitmap::summary_words(1 << 14), 256 + 4 + 1);
        // 2^32 bits need the full height.
        let mut next = 0;
        let b = Bitmap::new(0, 1 << 26, &mut next);
        assert_eq!(b.nup, MAX_LEVELS - 1);
    }

    #[test]
    fn lowest_set_bit_follows_sets_and_clears() {
        for other in [0, u64::MAX] {
            let (b, mut m) = bitmap(300_000, other);
            let bits = [299_999, 70_000, 4097, 4096, 64, 63, 0];
            for &x in &bits {
                b.set(&mut m, x);
                b.check_summaries(&m).unwrap();
                assert_eq!(b.first_leaf(&m), x / 64);
            }
            for &x in bits.iter().rev() {
                assert!(b.test(&m, x));
                let lowest = b.iter_from(&m, 0).next().unwrap();
                assert_eq!(lowest, x);
                assert_eq!(b.first_leaf(&m), x / 64);
                b.clear(&mut m, x);
                b.check_summaries(&m).unwrap();
            }
            assert!((0..b.leaves()).all(|g| m[b.leaf(g)] == 0));
            assert!(m[b.leaves() * STRIDE..].iter().all(|&w| w == 0));
        }
    }

    #[test]
    fn iteration_is_in_order_from_any_start() {
        let (b, mut m) = bitmap(1000, u64::MAX);
        let bits = [1, 5, 63, 64, 700, 999];
        for &x in &bits {
            b.set(&mut m, x);
        }
        assert_eq!(b.iter_from(&m, 0).collect::<Vec<_>>(), bits);
        assert_eq!(b.iter_from(&m, 6).collect::<Vec<_>>(), [63, 64, 700, 999]);
        assert_eq!(b.iter_from(&m, 1000).count(), 0);
        assert_eq!(b.iter_from(&m, 1 << 20).count(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Random sets and clears against a set: membership, the lowest set bit, iteration
        /// and the summaries agree after every step.
        #[test]
        fn matches_a_set_model(
            bits in 1usize..200_000,
            ops in proptest::collection::vec((proptest::bool::ANY, 0usize..200_000), 1..200),
        ) {
            use std::collections::BTreeSet;
            let (b, mut m) = bitmap(bits, u64::MAX);
            let mut model = BTreeSet::new();
            for (set, x) in ops {
                let x = x % bits;
                match (set, model.contains(&x)) {
                    (true, false) => {
                        b.set(&mut m, x);
                        model.insert(x);
                    }
                    (false, true) => {
                        b.clear(&mut m, x);
                        model.remove(&x);
                    }
                    _ => {}
                }
                proptest::prop_assert_eq!(b.test(&m, x), model.contains(&x));
                proptest::prop_assert!(b.check_summaries(&m).is_ok());
                if let Some(&lowest) = model.iter().next() {
                    proptest::prop_assert_eq!(b.first_leaf(&m), lowest / 64);
                }
                let got: Vec<usize> = b.iter_from(&m, x).collect();
                let want: Vec<usize> = model.range(x..).copied().collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn summary_check_catches_a_stale_bit() {
        let (b, mut m) = bitmap(10_000, 0);
        b.set(&mut m, 5000);
        b.check_summaries(&m).unwrap();
        m[b.leaf(5000 / 64)] = 0;
        assert!(b.check_summaries(&m).is_err());
    }
}
