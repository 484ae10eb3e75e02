//! Where an arena keeps its boundary tags and hash buckets: caller storage or the heap.
//!
//! An arena never stores anything inside the range it manages. Its tags and hash buckets live
//! in a [`Store`]: a fixed slice (`&mut [T]`) is the bootstrap reserve of an arena made before
//! any heap exists — it can never grow, so the caller sizes it for the most segments it will
//! hold; a `Vec<T>` (feature `alloc`) grows by doubling once a heap exists. Growth happens only
//! at the start of an operation, before anything is changed, so a store that cannot grow makes
//! the operation fail with [`super::ArenaError::NoTags`] and leaves the arena as it was.

/// Growable or fixed storage of `T` slots.
pub trait Store<T: Copy> {
    /// The slots in use.
    fn slots(&self) -> &[T];
    /// The slots in use, mutably.
    fn slots_mut(&mut self) -> &mut [T];
    /// Makes at least `min_len` slots usable, new ones set to `fill`; false if it cannot.
    fn grow(&mut self, min_len: usize, fill: T) -> bool;
}

impl<T: Copy> Store<T> for &mut [T] {
    fn slots(&self) -> &[T] {
        self
    }
    fn slots_mut(&mut self) -> &mut [T] {
        self
    }
    fn grow(&mut self, min_len: usize, _fill: T) -> bool {
        min_len <= self.len()
    }
}

#[cfg(feature = "alloc")]
impl<T: Copy> Store<T> for alloc::vec::Vec<T> {
    fn slots(&self) -> &[T] {
        self
    }
    fn slots_mut(&mut self) -> &mut [T] {
        self
    }
    fn grow(&mut self, min_len: usize, fill: T) -> bool {
        if min_len > self.len() {
            let new_len = min_len.max(self.len().saturating_mul(2)).max(16);
            if self.try_reserve_exact(new_len - self.len()).is_err() {
                return false;
            }
            self.resize(new_len, fill);
        }
        true
    }
}
