//! A vmem resource arena (Bonwick & Adams, "Magazines and Vmem", USENIX 2001).
//!
//! An [`Arena`] hands out integer ranges (virtual addresses, IDs) in multiples of its quantum
//! from spans it is given ([`Arena::add_span`]) or imports from a parent [`Source`] (returned
//! to the parent as soon as wholly free). What a caller must know:
//!
//! - **Policies** ([`Policy`]): free segments are on 512 lists, eight size classes per power
//!   of two. Instant-fit takes a segment of the first power of two at or above the next power of
//!   two ≥ size that has one (the most recently freed list of it first) — two bit scans,
//!   constant time, and the segment always fits; best-fit returns the smallest fitting free segment, scanning only the first
//!   list with a fit; next-fit walks the segment list from a rotor (the last allocation) in
//!   address order, which suits IDs. Constrained requests ([`Constraints`]: alignment, phase,
//!   no-cross boundary, min/max address) scan the free lists from the request's list up, first
//!   fit (best fit for [`Policy::BestFit`]).
//! - **Boundary tags live outside the managed range**, in a tag [`Store`]; allocated segments
//!   are found in O(1) on free through an open (chained) hash, resized by doubling in place.
//!   Tags and buckets come from the stores given at construction: fixed slices are the
//!   bootstrap reserve (no heap, the arena never recurses into itself to get tags); `Vec`s
//!   grow from the heap. Every operation first makes sure the tags it can need exist (2 for an
//!   allocation, 4 with an import, 2 for a span), so a failure — [`ArenaError::NoTags`] or any
//!   other — leaves the arena unchanged.
//! - **Quantum caches** ([`Arena::set_qcache_max`]): unconstrained requests of up to
//!   `qcache_max` bytes are served from per-size magazines of segments that stay allocated in
//!   the arena; [`Arena::purge_qcaches`] returns them.
//! - **Errors** are typed ([`ArenaError`]); a free is checked against the allocated segment
//!   (never allocated, already free, wrong size).

use super::qcache::QCache;
use super::store::Store;
use super::tags::{Kind, Tag, MAX_TAGS, NIL};

/// Why an arena operation failed; the arena is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaError {
    /// A size of zero.
    ZeroSize,
    /// An address, size, alignment or phase that is not a multiple of the quantum, or an
    /// alignment that is not a power of two.
    Misaligned,
    /// Constraints that contradict each other (phase ≥ alignment, no-cross boundary not a power
    /// of two or smaller than the size, min address above max address).
    BadConstraint,
    /// The range would run past the top of the address space (2^64).
    Overflow,
    /// No free segment satisfies the request, and the parent gave none.
    NoSpace,
    /// The tag or bucket store is full and cannot grow.
    NoTags,
    /// `add_span` of a range overlapping an existing span.
    SpanOverlap,
    /// A free of a range that is not an allocated segment (outside every span, or not starting
    /// at an allocated segment's base).
    NotAllocated,
    /// A free of a range that is already free (freed twice, or never handed out).
    DoubleFree,
    /// A free of an allocated segment with the wrong size; `allocated` is its real size.
    WrongSize {
        /// The size the segment was allocated with.
        allocated: u64,
    },
}

/// How an arena picks a free segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Constant time: the first segment of the smallest power-of-two list guaranteed to fit.
    InstantFit,
    /// The smallest free segment that fits.
    BestFit,
    /// The first fitting free segment after the previous allocation, in address order.
    NextFit,
}

/// Constraints of [`Arena::xalloc`]: `start ≡ phase (mod align)`, `[start, start+size)` does
/// not cross a multiple of `nocross` (0 = no such boundary), `start ≥ minaddr` and
/// `start + size - 1 ≤ maxaddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Constraints {
    /// Power-of-two alignment (0 = the quantum).
    pub align: u64,
    /// Offset from the alignment (< align).
    pub phase: u64,
    /// Power-of-two boundary the segment must not cross (0 = none).
    pub nocross: u64,
    /// Lowest allowed start.
    pub minaddr: u64,
    /// Highest allowed last address (inclusive).
    pub maxaddr: u64,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            align: 0,
            phase: 0,
            nocross: 0,
            minaddr: 0,
            maxaddr: u64::MAX,
        }
    }
}

impl Constraints {
    fn is_plain(&self, quantum: u64) -> bool {
        self.align <= quantum
            && self.phase == 0
            && self.nocross == 0
            && self.minaddr == 0
            && self.maxaddr == u64::MAX
    }
}

/// Where an arena imports spans from: a parent arena, or nothing ([`NoParent`]).
pub trait Source {
    /// Allocates `size` bytes aligned to `align` (0 = the source's quantum).
    fn import(&mut self, size: u64, align: u64) -> Result<u64, ArenaError>;
    /// Gives back a range obtained from `import`.
    fn release(&mut self, base: u64, size: u64);
}

/// No parent: imports always fail with [`ArenaError::NoSpace`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoParent;

impl Source for NoParent {
    fn import(&mut self, _size: u64, _align: u64) -> Result<u64, ArenaError> {
        Err(ArenaError::NoSpace)
    }
    fn release(&mut self, _base: u64, _size: u64) {}
}

impl<S: Source + ?Sized> Source for &mut S {
    fn import(&mut self, size: u64, align: u64) -> Result<u64, ArenaError> {
        (**self).import(size, align)
    }
    fn release(&mut self, base: u64, size: u64) {
        (**self).release(base, size)
    }
}

/// A segment as seen by [`Arena::segments`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Span marker (direct or imported), free or allocated segment.
    pub kind: Kind,
}

/// A vmem arena over tag store `T`, bucket store `H` and parent `P`.
pub struct Arena<T: Store<Tag>, H: Store<u32>, P: Source = NoParent> {
    tags: T,
    buckets: H,
    parent: P,
    quantum: u64,
    qshift: u32,
    import_quantum: u64,
    policy: Policy,
    seg_head: u32,
    seg_tail: u32,
    span_head: u32,
    free_heads: [u32; LISTS],
    sub_map: [u8; 64],
    recent: [u8; 64],
    free_map: u64,
    pool: u32,
    pool_count: usize,
    hw: usize,
    nbuckets: usize,
    nalloc: usize,
    rotor: u32,
    imported: usize,
    span_bytes: u128,
    alloc_bytes: u128,
    qc: QCache,
}

/// An arena whose tags and buckets live on the heap.
#[cfg(feature = "alloc")]
pub type HeapArena<P = NoParent> = Arena<alloc::vec::Vec<Tag>, alloc::vec::Vec<u32>, P>;

#[cfg(feature = "alloc")]
impl<P: Source> Arena<alloc::vec::Vec<Tag>, alloc::vec::Vec<u32>, P> {
    /// An empty heap-backed arena.
    pub fn on_heap(quantum: u64, policy: Policy, parent: P) -> Result<Self, ArenaError> {
        Arena::new(
            alloc::vec::Vec::new(),
            alloc::vec::Vec::new(),
            quantum,
            policy,
            parent,
        )
    }
}

/// A hash chain position: bucket, predecessor on the chain ([`NIL`] at the head), tag.
#[derive(Clone, Copy)]
struct HashPos {
    b: usize,
    p: u32,
    i: u32,
}

/// Free lists per power of two: a second level of size classes (as in TLSF) so that best fit
/// scans only segments within an eighth of a power of two of each other.
const SUB: usize = 8;
/// Free lists in all.
const LISTS: usize = 64 * SUB;

fn mix(x: u64) -> u64 {
    let m = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    m ^ (m >> 29) ^ (m >> 43)
}

impl<T: Store<Tag>, H: Store<u32>, P: Source> Arena<T, H, P> {
    /// An empty arena with the given stores, quantum (a power of two), default policy and
    /// parent. Fails with `Misaligned` for a bad quantum, `NoTags` if `buckets` has no slot.
    pub fn new(
        tags: T,
        mut buckets: H,
        quantum: u64,
        policy: Policy,
        parent: P,
    ) -> Result<Self, ArenaError> {
        if !quantum.is_power_of_two() {
            return Err(ArenaError::Misaligned);
        }
        if !buckets.grow(16, NIL) && buckets.slots().is_empty() {
            return Err(ArenaError::NoTags);
        }
        let n = buckets.slots().len();
        let nbuckets = 1usize << (usize::BITS - 1 - n.leading_zeros());
        buckets.slots_mut()[..nbuckets].fill(NIL);
        Ok(Arena {
            tags,
            buckets,
            parent,
            quantum,
            qshift: quantum.trailing_zeros(),
            import_quantum: quantum,
            policy,
            seg_head: NIL,
            seg_tail: NIL,
            span_head: NIL,
            free_heads: [NIL; LISTS],
            sub_map: [0; 64],
            recent: [0; 64],
            free_map: 0,
            pool: NIL,
            pool_count: 0,
            hw: 0,
            nbuckets,
            nalloc: 0,
            rotor: NIL,
            imported: 0,
            span_bytes: 0,
            alloc_bytes: 0,
            qc: QCache::new(),
        })
    }

    /// The quantum.
    pub fn quantum(&self) -> u64 {
        self.quantum
    }

    /// The default policy of [`Arena::alloc`].
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The parent.
    pub fn parent(&self) -> &P {
        &self.parent
    }

    /// Imports from the parent are rounded up to this (a multiple of the quantum).
    pub fn set_import_quantum(&mut self, q: u64) -> Result<(), ArenaError> {
        if q == 0 || q % self.quantum != 0 {
            return Err(ArenaError::Misaligned);
        }
        self.import_quantum = q;
        Ok(())
    }

    /// Enables quantum caches for sizes up to `max` (a multiple of the quantum, at most
    /// [`super::qcache::QC_CLASSES`] quanta; 0 disables). Purges the current caches first.
    pub fn set_qcache_max(&mut self, max: u64) -> Result<(), ArenaError> {
        if max % self.quantum != 0 || max / self.quantum > super::qcache::QC_CLASSES as u64 {
            return Err(ArenaError::Misaligned);
        }
        self.purge_qcaches();
        self.qc.classes = (max / self.quantum) as usize;
        Ok(())
    }

    /// Bytes in spans.
    pub fn span_bytes(&self) -> u128 {
        self.span_bytes
    }

    /// Bytes allocated, including segments held by the quantum caches.
    pub fn allocated_bytes(&self) -> u128 {
        self.alloc_bytes
    }

    /// Bytes held by the quantum caches.
    pub fn cached_bytes(&self) -> u128 {
        self.qc.bytes(self.quantum)
    }

    /// Number of allocated segments (including those in quantum caches).
    pub fn allocated_segments(&self) -> usize {
        self.nalloc
    }

    /// Whether `x` is not a multiple of the quantum.
    #[inline]
    fn unaligned(&self, x: u64) -> bool {
        x & (self.quantum - 1) != 0
    }

    fn t(&self, i: u32) -> &Tag {
        &self.tags.slots()[i as usize]
    }

    fn tm(&mut self, i: u32) -> &mut Tag {
        &mut self.tags.slots_mut()[i as usize]
    }

    // ---- tag pool ----

    fn ensure_tags(&mut self, k: usize) -> Result<(), ArenaError> {
        // Slots past MAX_TAGS (a store may grow beyond it) are never used: their index would
        // not fit the tag links.
        let len = self.tags.slots().len().min(MAX_TAGS);
        let avail = self.pool_count + (len - self.hw);
        if avail >= k {
            return Ok(());
        }
        let need = len + (k - avail);
        if need > MAX_TAGS || !self.tags.grow(need, Tag::EMPTY) {
            return Err(ArenaError::NoTags);
        }
        Ok(())
    }

    fn new_tag(&mut self, tag: Tag) -> u32 {
        let i = if self.pool != NIL {
            let i = self.pool;
            self.pool = self.t(i).link_next;
            self.pool_count -= 1;
            i
        } else {
            self.hw += 1;
            (self.hw - 1) as u32
        };
        *self.tm(i) = tag;
        i
    }

    /// Returns tag `i` to the pool; `heir` takes over the rotor if it pointed at `i`.
    fn drop_tag(&mut self, i: u32, heir: u32) {
        if self.rotor == i {
            self.rotor = heir;
        }
        let pool = self.pool;
        let mut t = Tag::EMPTY;
        t.link_next = pool;
        *self.tm(i) = t;
        self.pool = i;
        self.pool_count += 1;
    }

    // ---- segment list ----

    fn seg_insert_after(&mut self, at: u32, i: u32) {
        let next = if at == NIL {
            self.seg_head
        } else {
            self.t(at).next()
        };
        self.tm(i).prev = at;
        self.tm(i).set_next(next);
        if at == NIL {
            self.seg_head = i;
        } else {
            self.tm(at).set_next(i);
        }
        if next == NIL {
            self.seg_tail = i;
        } else {
            self.tm(next).prev = i;
        }
    }

    fn seg_unlink(&mut self, i: u32) {
        let (prev, next) = (self.t(i).prev, self.t(i).next());
        if prev == NIL {
            self.seg_head = next;
        } else {
            self.tm(prev).set_next(next);
        }
        if next == NIL {
            self.seg_tail = prev;
        } else {
            self.tm(next).prev = prev;
        }
    }

    // ---- free lists ----

    /// The free list of `size`: `SUB * l + s` for a size of [2^l, 2^(l+1)) whose three bits
    /// below the top one are `s`.
    #[inline]
    fn list_of(size: u64) -> usize {
        let l = 63 - size.leading_zeros() as usize;
        let s = ((size as u128) << 3 >> l) as usize & (SUB - 1);
        l * SUB + s
    }

    /// The smallest size list `k` can hold.
    fn list_min(k: usize) -> u64 {
        let (l, s) = (k / SUB, (k % SUB) as u64);
        if l >= 3 {
            (8 + s) << (l - 3)
        } else {
            (8 + s + (1 << (3 - l)) - 1) >> (3 - l)
        }
    }

    /// The first non-empty free list at or above list `k`: two bit scans.
    fn next_list(&self, k: usize) -> Option<usize> {
        let l = k / SUB;
        if l >= 64 {
            return None;
        }
        let m = self.sub_map[l] as u32 & (!0u32 << (k % SUB));
        if m != 0 {
            return Some(l * SUB + m.trailing_zeros() as usize);
        }
        self.first_list_from_level(l + 1)
    }

    /// Instant fit's list: of the first power of two ≥ 2^`l` with a free segment, the list
    /// that had the latest insertion if it still has a segment (its head is then the most
    /// recently freed segment of that power of two, likely still in cache, as with a single
    /// LIFO list per power of two), else its lowest non-empty list.
    fn instant_list(&self, l: usize) -> Option<usize> {
        let l = self.first_level_from(l)?;
        let r = self.recent[l] as usize;
        if self.sub_map[l] & (1 << r) != 0 {
            return Some(l * SUB + r);
        }
        Some(l * SUB + self.sub_map[l].trailing_zeros() as usize)
    }

    /// The first non-empty free list of a power of two ≥ 2^`l`.
    fn first_list_from_level(&self, l: usize) -> Option<usize> {
        let l = self.first_level_from(l)?;
        Some(l * SUB + self.sub_map[l].trailing_zeros() as usize)
    }

    /// The first power of two ≥ 2^`l` with a free segment (one bit test of `free_map`).
    #[inline]
    fn first_level_from(&self, l: usize) -> Option<usize> {
        let m = if l < 64 {
            self.free_map & (!0u64 << l)
        } else {
            0
        };
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    fn free_insert(&mut self, i: u32) {
        self.free_insert_at(i, Self::list_of(self.t(i).size));
    }

    /// Puts free segment `i` at the head of list `k` (its list).
    #[inline]
    fn free_insert_at(&mut self, i: u32, k: usize) {
        let head = self.free_heads[k];
        self.tm(i).link_prev = NIL;
        self.tm(i).link_next = head;
        if head != NIL {
            self.tm(head).link_prev = i;
        }
        self.free_heads[k] = i;
        self.recent[k / SUB] = (k % SUB) as u8;
        self.sub_map[k / SUB] |= 1 << (k % SUB);
        self.free_map |= 1 << (k / SUB);
    }

    fn free_remove(&mut self, i: u32) {
        self.free_remove_from(i, Self::list_of(self.t(i).size));
    }

    /// Takes free segment `i` off list `k` (its list).
    #[inline]
    fn free_remove_from(&mut self, i: u32, k: usize) {
        let Tag {
            link_prev,
            link_next,
            ..
        } = *self.t(i);
        if link_prev == NIL {
            self.free_heads[k] = link_next;
            if link_next == NIL {
                self.sub_map[k / SUB] &= !(1 << (k % SUB));
                if self.sub_map[k / SUB] == 0 {
                    self.free_map &= !(1 << (k / SUB));
                }
            }
        } else {
            self.tm(link_prev).link_next = link_next;
        }
        if link_next != NIL {
            self.tm(link_next).link_prev = link_prev;
        }
    }

    // ---- hash of allocated segments ----

    fn bucket(&self, start: u64) -> usize {
        mix(start >> self.qshift) as usize & (self.nbuckets - 1)
    }

    fn hash_insert(&mut self, i: u32) {
        let b = self.bucket(self.t(i).start);
        let head = self.buckets.slots()[b];
        self.tm(i).link_next = head;
        self.buckets.slots_mut()[b] = i;
        self.nalloc += 1;
        if self.nalloc > self.nbuckets {
            self.hash_grow();
        }
    }

    /// Doubles the bucket count in place: chain `b` splits into `b` and `b + old`.
    fn hash_grow(&mut self) {
        let old = self.nbuckets;
        if old > usize::MAX / 4 || !self.buckets.grow(old * 2, NIL) {
            return;
        }
        self.nbuckets = old * 2;
        for b in 0..old {
            let mut i = self.buckets.slots()[b];
            let (mut lo, mut hi) = (NIL, NIL);
            while i != NIL {
                let next = self.t(i).link_next;
                if self.bucket(self.t(i).start) == b {
                    self.tm(i).link_next = lo;
                    lo = i;
                } else {
                    self.tm(i).link_next = hi;
                    hi = i;
                }
                i = next;
            }
            self.buckets.slots_mut()[b] = lo;
            self.buckets.slots_mut()[b + old] = hi;
        }
    }

    /// Where the allocated segment starting at `start` is: its bucket, its predecessor on
    /// the chain and itself ([`NIL`] if none), so that removing it walks the chain once.
    fn hash_find(&self, start: u64) -> HashPos {
        let b = self.bucket(start);
        let mut p = NIL;
        let mut i = self.buckets.slots()[b];
        while i != NIL {
            let t = self.t(i);
            if t.start == start {
                break;
            }
            p = i;
            i = t.link_next;
        }
        HashPos { b, p, i }
    }

    fn hash_remove(&mut self, h: HashPos) {
        let next = self.t(h.i).link_next;
        if h.p == NIL {
            self.buckets.slots_mut()[h.b] = next;
        } else {
            self.tm(h.p).link_next = next;
        }
        self.nalloc -= 1;
    }

    // ---- spans ----

    fn check_range(&self, base: u64, size: u64) -> Result<(), ArenaError> {
        if size == 0 {
            return Err(ArenaError::ZeroSize);
        }
        if self.unaligned(base | size) {
            return Err(ArenaError::Misaligned);
        }
        if base.checked_add(size - 1).is_none() {
            return Err(ArenaError::Overflow);
        }
        Ok(())
    }

    fn overlaps_span(&self, base: u64, size: u64) -> bool {
        let end = base as u128 + size as u128;
        let mut s = self.span_head;
        while s != NIL {
            let t = self.t(s);
            if (base as u128) < t.end() && (t.start as u128) < end {
                return true;
            }
            s = t.link_next;
        }
        false
    }

    /// Adds `[base, base+size)` as a span of free space. Errors: `ZeroSize`, `Misaligned`,
    /// `Overflow`, `SpanOverlap`, `NoTags`.
    pub fn add_span(&mut self, base: u64, size: u64) -> Result<(), ArenaError> {
        self.check_range(base, size)?;
        if self.overlaps_span(base, size) {
            return Err(ArenaError::SpanOverlap);
        }
        self.ensure_tags(2)?;
        self.push_span(base, size, Kind::Span);
        Ok(())
    }

    fn push_span(&mut self, base: u64, size: u64, kind: Kind) -> u32 {
        let span = self.new_tag(Tag::new(base, size, kind));
        let tail = self.seg_tail;
        self.seg_insert_after(tail, span);
        let head = self.span_head;
        self.tm(span).link_prev = NIL;
        self.tm(span).link_next = head;
        if head != NIL {
            self.tm(head).link_prev = span;
        }
        self.span_head = span;
        self.imported += (kind == Kind::Imported) as usize;
        let seg = self.new_tag(Tag::new(base, size, Kind::Free));
        self.seg_insert_after(span, seg);
        self.free_insert(seg);
        self.span_bytes += size as u128;
        seg
    }

    /// Removes span marker `span` whose only segment `seg` is free and covers it.
    fn pop_span(&mut self, span: u32, seg: u32) {
        let Tag {
            start,
            size,
            link_prev,
            link_next,
            ..
        } = *self.t(span);
        let kind = self.t(span).kind();
        self.imported -= (kind == Kind::Imported) as usize;
        self.seg_unlink(seg);
        self.seg_unlink(span);
        if link_prev == NIL {
            self.span_head = link_next;
        } else {
            self.tm(link_prev).link_next = link_next;
        }
        if link_next != NIL {
            self.tm(link_next).link_prev = link_prev;
        }
        self.drop_tag(seg, NIL);
        self.drop_tag(span, NIL);
        self.span_bytes -= size as u128;
        let _ = start;
    }

    // ---- allocation ----

    /// Allocates `size` bytes with the arena's policy and no constraints.
    pub fn alloc(&mut self, size: u64) -> Result<u64, ArenaError> {
        // Instant fit without constraints: one bit scan, and the head segment starts where the
        // allocation does, so only a right remainder can need a tag.
        if self.policy == Policy::InstantFit
            && size != 0
            && !self.unaligned(size)
            && !self.qc.serves(size, self.qshift)
        {
            let ceil = 63 - size.leading_zeros() as usize + !size.is_power_of_two() as usize;
            if let Some(k) = self.instant_list(ceil) {
                let t = self.free_heads[k];
                let seg = *self.t(t);
                self.ensure_tags((seg.size > size) as usize)?;
                return Ok(self.carve(t, seg.start, size));
            }
        }
        self.xalloc(size, Constraints::default(), self.policy)
    }

    /// Allocates `size` bytes under `c` with `policy`; imports from the parent if no free
    /// segment fits. Errors: `ZeroSize`, `Misaligned`, `BadConstraint`, `NoSpace`, `NoTags`.
    pub fn xalloc(&mut self, size: u64, c: Constraints, policy: Policy) -> Result<u64, ArenaError> {
        let c = self.normalize(size, c)?;
        if self.qc.serves(size, self.qshift) && c.is_plain(self.quantum) {
            return self.qc_alloc(size);
        }
        self.xalloc_raw(size, &c, policy)
    }

    fn normalize(&self, size: u64, mut c: Constraints) -> Result<Constraints, ArenaError> {
        let q = self.quantum;
        if size == 0 {
            return Err(ArenaError::ZeroSize);
        }
        if c.align == 0 {
            c.align = q;
        }
        if !c.align.is_power_of_two() || self.unaligned(size | c.align | c.phase) {
            return Err(ArenaError::Misaligned);
        }
        if c.phase >= c.align
            || (c.nocross != 0 && (!c.nocross.is_power_of_two() || c.nocross < size))
            || c.minaddr > c.maxaddr
        {
            return Err(ArenaError::BadConstraint);
        }
        if size - 1 > c.maxaddr - c.minaddr {
            return Err(ArenaError::NoSpace);
        }
        Ok(c)
    }

    fn xalloc_raw(
        &mut self,
        size: u64,
        c: &Constraints,
        policy: Policy,
    ) -> Result<u64, ArenaError> {
        if let Some((t, start)) = self.find(size, c, policy) {
            // Tags for the free remainders left and right of the allocation.
            let seg = self.t(t);
            let need =
                (start > seg.start) as usize + (seg.end() > start as u128 + size as u128) as usize;
            self.ensure_tags(need)?;
            return Ok(self.carve(t, start, size));
        }
        // Import a span from the parent large enough whatever its alignment, then retry.
        self.ensure_tags(4)?;
        let slack = c.align.max(self.quantum) - self.quantum;
        let need = size
            .checked_add(slack)
            .and_then(|n| n.checked_next_multiple_of(self.import_quantum))
            .ok_or(ArenaError::NoSpace)?;
        let base = self.parent.import(need, 0)?;
        if self.unaligned(base)
            || base.checked_add(need - 1).is_none()
            || self.overlaps_span(base, need)
        {
            self.parent.release(base, need);
            return Err(ArenaError::NoSpace);
        }
        let seg = self.push_span(base, need, Kind::Imported);
        match self.fit(self.t(seg).start, self.t(seg).end(), size, c) {
            Some(start) => Ok(self.carve(seg, start, size)),
            None => {
                let span = self.t(seg).prev;
                self.free_remove(seg);
                self.pop_span(span, seg);
                self.parent.release(base, need);
                Err(ArenaError::NoSpace)
            }
        }
    }

    /// The start of the lowest fitting `[start, start+size)` inside `[s, e)` under `c`.
    fn fit(&self, s: u64, e: u128, size: u64, c: &Constraints) -> Option<u64> {
        let lo = s.max(c.minaddr) as u128;
        let hi = e.min(c.maxaddr as u128 + 1);
        let mask = c.align as u128 - 1;
        let size = size as u128;
        let phase = c.phase as u128;
        let mut start = lo + (phase.wrapping_sub(lo) & mask);
        if c.nocross != 0 {
            let n = c.nocross as u128;
            if start / n != (start + size - 1) / n {
                let b = (start / n + 1) * n;
                start = b + (phase.wrapping_sub(b) & mask);
                if start / n != (start + size - 1) / n {
                    return None;
                }
            }
        }
        (start + size <= hi).then_some(start as u64)
    }

    fn find(&self, size: u64, c: &Constraints, policy: Policy) -> Option<(u32, u64)> {
        let plain = c.is_plain(self.quantum);
        if policy == Policy::NextFit {
            return self.find_next(size, c);
        }
        if policy == Policy::InstantFit && plain {
            let ceil = 63 - size.leading_zeros() as usize + !size.is_power_of_two() as usize;
            if let Some(k) = self.instant_list(ceil) {
                let i = self.free_heads[k];
                return Some((i, self.t(i).start));
            }
        }
        // Scan from the list of `size` up; lists above the first with a fit hold only larger
        // segments, so the smallest fit in that list is the global best fit (and a fit of the
        // list's smallest size, or of `size` itself, ends the scan).
        let mut next = self.next_list(Self::list_of(size));
        while let Some(k) = next {
            let least = Self::list_min(k).max(size);
            let mut best: Option<(u32, u64, u64)> = None;
            let mut i = self.free_heads[k];
            while i != NIL {
                let t = self.t(i);
                if let Some(start) = self.fit(t.start, t.end(), size, c) {
                    if policy != Policy::BestFit || t.size == least {
                        return Some((i, start));
                    }
                    if best.is_none_or(|(_, _, sz)| t.size < sz) {
                        best = Some((i, start, t.size));
                    }
                }
                i = t.link_next;
            }
            if let Some((i, start, _)) = best {
                return Some((i, start));
            }
            next = self.next_list(k + 1);
        }
        None
    }

    fn find_next(&self, size: u64, c: &Constraints) -> Option<(u32, u64)> {
        let first = if self.rotor == NIL {
            self.seg_head
        } else {
            self.rotor
        };
        if first == NIL {
            return None;
        }
        let mut i = first;
        loop {
            let t = self.t(i);
            if t.is(Kind::Free) && t.size >= size {
                if let Some(start) = self.fit(t.start, t.end(), size, c) {
                    return Some((i, start));
                }
            }
            i = if t.next() == NIL {
                self.seg_head
            } else {
                t.next()
            };
            if i == first {
                return None;
            }
        }
    }

    /// Allocates `[start, start+size)` from free segment `t`; needs 2 tags available.
    fn carve(&mut self, t: u32, start: u64, size: u64) -> u64 {
        let seg = *self.t(t);
        let left = start - seg.start;
        let right = (seg.end() - (start as u128 + size as u128)) as u64;
        // A left remainder still in the same list keeps its place (no neighbour to touch).
        // (Keeping a right remainder in place the same way, with a new tag for the allocated
        // part, measured more cache misses per op at 1,000,000 segments: it touches the left
        // neighbour instead, and splits the allocated tag from its neighbours' tags.)
        let k = Self::list_of(seg.size);
        let kl = if left > 0 { Self::list_of(left) } else { LISTS };
        let keep_left = kl == k;
        if !keep_left {
            self.free_remove_from(t, k);
        }
        let a = if left > 0 {
            self.tm(t).size = left;
            if !keep_left {
                self.free_insert_at(t, kl);
            }
            let a = self.new_tag(Tag::EMPTY);
            self.seg_insert_after(t, a);
            a
        } else {
            t
        };
        {
            let at = self.tm(a);
            at.start = start;
            at.size = size;
            at.set_kind(Kind::Alloc);
        }
        if right > 0 {
            let r = self.new_tag(Tag::new(start + size, right, Kind::Free));
            self.seg_insert_after(a, r);
            self.free_insert(r);
        }
        self.hash_insert(a);
        self.rotor = a;
        self.alloc_bytes += size as u128;
        start
    }

    // ---- free ----

    /// Frees `[base, base+size)`, which must be exactly one allocated segment. Errors:
    /// `ZeroSize`, `Misaligned`, `Overflow`, `NotAllocated`, `DoubleFree`, `WrongSize`.
    pub fn free(&mut self, base: u64, size: u64) -> Result<(), ArenaError> {
        self.check_range(base, size)?;
        let h = self.hash_find(base);
        let i = h.i;
        if i == NIL {
            return Err(self.classify_bad_free(base, size));
        }
        let allocated = self.t(i).size;
        if allocated != size {
            return Err(ArenaError::WrongSize { allocated });
        }
        if self.qc.serves(size, self.qshift) {
            let class = self.qc.class(size, self.qshift);
            if self.qc.contains(class, base) {
                return Err(ArenaError::DoubleFree);
            }
            if self.qc.push(class, base) {
                return Ok(());
            }
        }
        self.free_raw(h);
        Ok(())
    }

    fn classify_bad_free(&self, base: u64, size: u64) -> ArenaError {
        let end = base as u128 + size as u128;
        let mut i = self.seg_head;
        while i != NIL {
            let t = self.t(i);
            if t.is(Kind::Free) && t.start <= base && end <= t.end() {
                return ArenaError::DoubleFree;
            }
            i = t.next();
        }
        ArenaError::NotAllocated
    }

    fn free_raw(&mut self, h: HashPos) {
        let i = h.i;
        self.hash_remove(h);
        let (prev, next, size) = (self.t(i).prev, self.t(i).next(), self.t(i).size);
        self.alloc_bytes -= size as u128;
        self.tm(i).set_kind(Kind::Free);
        // Both neighbours are read at once (independent cache misses); the merged segment
        // keeps the tag of a free left neighbour, which stays on its free list when the list
        // does not change: one list move at most, sparing the misses of unlinking and
        // relinking its list neighbours.
        let prev_free = prev != NIL && self.t(prev).is(Kind::Free);
        let next_free = next != NIL && self.t(next).is(Kind::Free);
        let keep = if prev_free { prev } else { i };
        let mut by = 0;
        if next_free {
            by += self.t(next).size;
            self.free_remove(next);
            self.seg_unlink(next);
            self.drop_tag(next, keep);
        }
        if prev_free {
            by += size;
            self.seg_unlink(i);
            self.drop_tag(i, prev);
        }
        self.grow_free(keep, by, prev_free);
        let span = self.t(keep).prev;
        let t = *self.t(keep);
        if self.imported > 0
            && self.t(span).is(Kind::Imported)
            && self.t(span).start == t.start
            && self.t(span).size == t.size
        {
            let st = *self.t(span);
            self.free_remove(keep);
            self.pop_span(span, keep);
            self.parent.release(st.start, st.size);
        }
    }

    /// Adds `by` bytes to free segment `i` and leaves it on the right free list (`listed`:
    /// whether it is on one now).
    fn grow_free(&mut self, i: u32, by: u64, listed: bool) {
        let old = self.t(i).size;
        let (k, kn) = (Self::list_of(old), Self::list_of(old + by));
        let moves = k != kn;
        if listed && moves {
            self.free_remove_from(i, k);
        }
        self.tm(i).size = old + by;
        if !listed || moves {
            self.free_insert_at(i, kn);
        }
    }

    // ---- quantum caches ----

    fn qc_alloc(&mut self, size: u64) -> Result<u64, ArenaError> {
        let class = self.qc.class(size, self.qshift);
        if let Some(a) = self.qc.pop(class) {
            return Ok(a);
        }
        let c = Constraints {
            align: self.quantum,
            ..Constraints::default()
        };
        let a = self.xalloc_raw(size, &c, Policy::InstantFit)?;
        // Fill half a magazine so the next requests of this size hit the cache.
        for _ in 0..super::qcache::QC_MAG / 2 {
            match self.xalloc_raw(size, &c, Policy::InstantFit) {
                Ok(b) => {
                    self.qc.push(class, b);
                }
                Err(_) => break,
            }
        }
        Ok(a)
    }

    /// Frees every segment held by the quantum caches back to the arena.
    pub fn purge_qcaches(&mut self) {
        for class in 0..super::qcache::QC_CLASSES {
            while let Some(a) = self.qc.pop(class) {
                let h = self.hash_find(a);
                debug_assert!(h.i != NIL);
                if h.i != NIL {
                    self.free_raw(h);
                }
            }
        }
    }

    // ---- inspection ----

    /// Every span marker and segment in segment-list order (each span followed by its
    /// segments in address order).
    pub fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        let mut i = self.seg_head;
        core::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let t = self.t(i);
            i = t.next();
            Some(Segment {
                start: t.start,
                size: t.size,
                kind: t.kind(),
            })
        })
    }
}

impl<T: Store<Tag>, H: Store<u32>, P: Source> Source for Arena<T, H, P> {
    fn import(&mut self, size: u64, align: u64) -> Result<u64, ArenaError> {
        let policy = self.policy;
        self.xalloc(
            size,
            Constraints {
                align,
                ..Constraints::default()
            },
            policy,
        )
    }
    fn release(&mut self, base: u64, size: u64) {
        let _ = self.free(base, size);
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use std::vec::Vec;

    type A = HeapArena;

    #[test]
    fn size_classes_partition_the_sizes_in_order() {
        let mut sizes: Vec<u64> = (1..=4096).collect();
        for l in 12..64 {
            for d in [0u64, 1, 2, 3] {
                sizes.push((1u64 << l) - d);
                sizes.push((1u64 << l) + d);
                sizes.push(((1u64 << l) | (1u64 << (l - 1))) + d);
            }
        }
        sizes.push(u64::MAX);
        sizes.sort_unstable();
        sizes.dedup();
        let mut prev = 0;
        for &x in &sizes {
            let k = A::list_of(x);
            assert!(k >= prev && k < LISTS, "{x}: list {k} after {prev}");
            prev = k;
            assert!(A::list_min(k) <= x, "{x} below its list's least size");
            if k + 1 < LISTS {
                assert!(A::list_min(k + 1) > x, "{x} belongs in a later list");
            }
            // A list holds sizes of one power of two, within an eighth of it.
            assert_eq!(k / SUB, 63 - x.leading_zeros() as usize);
        }
        // Every list's least size is in it (below 8 bytes some lists hold no size at all).
        for k in 3 * SUB..LISTS {
            let m = A::list_min(k);
            assert_eq!(A::list_of(m), k, "list {k}: least size {m}");
        }
    }

    #[test]
    fn instant_fit_prefers_the_latest_freed_list_of_its_power_of_two() {
        let mut a = A::on_heap(1, Policy::InstantFit, NoParent).unwrap();
        // Free 9 and 15 bytes: both of [8, 16), different lists; 15 came last.
        a.add_span(0, 9).unwrap();
        a.add_span(100, 15).unwrap();
        assert_eq!(a.alloc(5), Ok(100));
        // The 10 left at 105 went in last.
        assert_eq!(a.alloc(5), Ok(105));
        // Its list is empty now (5 left, in [4, 8)): the lowest list of [8, 16) serves.
        assert_eq!(a.alloc(5), Ok(0));
        assert_eq!(a.alloc(5), Ok(110));
    }

    #[test]
    fn next_list_skips_empty_lists_and_levels() {
        let mut a = A::on_heap(1, Policy::BestFit, NoParent).unwrap();
        assert_eq!(a.next_list(0), None);
        // Free segments of 9 and 1,000 bytes, each in its span.
        a.add_span(0, 9).unwrap();
        a.add_span(1 << 20, 1000).unwrap();
        let (k9, k1000) = (A::list_of(9), A::list_of(1000));
        assert_eq!(a.next_list(0), Some(k9));
        assert_eq!(a.next_list(k9), Some(k9));
        assert_eq!(a.next_list(k9 + 1), Some(k1000));
        assert_eq!(a.next_list(k1000 + 1), None);
        assert_eq!(a.first_list_from_level(4), Some(k1000));
        assert_eq!(a.first_list_from_level(64), None);
        // Best fit of 8 bytes takes the 9-byte segment, then the 1,000 one.
        assert_eq!(a.alloc(8), Ok(0));
        assert_eq!(a.alloc(2), Ok(1 << 20));
    }
}
