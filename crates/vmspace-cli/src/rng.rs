//! The small seeded generators the benchmarks and scenarios draw from, so a run is the same
//! every time and every allocator under test gets the same choices. Two algorithms, kept
//! apart because recorded figures and example outputs depend on their exact sequences.

/// splitmix64 (Steele, Lea & Flood), seeded with the raw state.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// A generator whose state is `seed` mixed with the golden-ratio increment, so small
    /// seeds (0, 1, 2 …) start far apart.
    pub fn seeded(seed: u64) -> Self {
        SplitMix64(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next word.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// A fraction in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// xorshift64* (Vigna), seeded with a nonzero state.
pub struct XorShift64Star(pub u64);

impl XorShift64Star {
    /// The next word.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}
