//! The VMA set: a B-tree keyed by start, augmented with the largest free gap per subtree.
//!
//! Shaped like Linux's maple tree: wide nodes (up to [`B`] entries) whose search data sit in
//! contiguous arrays — per entry the start, the end, the gap-adjusted start (`vm_start_gap`,
//! P6) and, in inner nodes, the largest gap between two consecutive VMAs inside the child —
//! while the VMAs themselves live apart in a slab indexed by slot. A lookup at 65,000 VMAs
//! reads 4 nodes instead of ~22 binary-tree nodes. Lookup, insert, remove and the
//! top-down / bottom-up gap searches (P8, P12) are O(log n); all leaves are at one depth and
//! every node but the root holds at least [`MIN`] entries. Gaps below a VM_GROWSDOWN VMA are
//! measured up to its start minus the stack guard gap, so the searches never place a mapping
//! inside a guard gap. Callers keep VMAs non-overlapping; the tree keeps them sorted. Within
//! one split or merge a caller may let two VMAs overlap for a moment (grow first, then shrink
//! or remove: `insert`, `update` and `remove` go by start only), which spares the gap rescans
//! a transient hole would cost; lookups must wait until the overlap is gone.

use super::vma::{start_gap, Backing, Vma};
use alloc::string::String;
use alloc::vec::Vec;

/// Most entries in a node.
#[cfg(not(test))]
pub const B: usize = 32;
/// Unit tests use narrow nodes so that even small spaces exercise splits, merges and
/// redistribution across several levels (the integration tests run the real width).
#[cfg(test)]
pub const B: usize = 6;
/// Fewest entries in a node other than the root.
pub const MIN: usize = B / 2 - 1;
/// Deepest possible tree: MIN^(MAX_DEPTH-1) far exceeds any map count.
const MAX_DEPTH: usize = 24;
const NIL: u32 = u32::MAX;

/// One node. In a leaf, entry `i` is a VMA (`ptr` = its slab slot); in an inner node, entry `i`
/// summarises child `ptr[i]`: its first start, its first gap-adjusted start, its last end and
/// the largest gap between consecutive VMAs inside it.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Node {
    start: [u64; B],
    end: [u64; B],
    sg: [u64; B],
    gap: [u64; B],
    ptr: [u32; B],
    /// The largest gap inside this subtree (kept up to date incrementally).
    max_gap: u64,
    len: u16,
    leaf: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    start: u64,
    end: u64,
    sg: u64,
    gap: u64,
    ptr: u32,
}

impl Node {
    fn new(leaf: bool) -> Self {
        Node {
            start: [0; B],
            end: [0; B],
            sg: [0; B],
            gap: [0; B],
            ptr: [NIL; B],
            max_gap: 0,
            len: 0,
            leaf,
        }
    }

    fn n(&self) -> usize {
        self.len as usize
    }

    fn get(&self, i: usize) -> Entry {
        Entry {
            start: self.start[i],
            end: self.end[i],
            sg: self.sg[i],
            gap: self.gap[i],
            ptr: self.ptr[i],
        }
    }

    fn set(&mut self, i: usize, e: Entry) {
        self.start[i] = e.start;
        self.end[i] = e.end;
        self.sg[i] = e.sg;
        self.gap[i] = e.gap;
        self.ptr[i] = e.ptr;
    }

    /// The free gap between entries `j - 1` and `j` (0 when either is missing).
    fn between(&self, j: usize) -> u64 {
        if j == 0 || j >= self.n() {
            return 0;
        }
        self.sg[j].saturating_sub(self.end[j - 1])
    }

    /// The gap terms entry `i` takes part in: its child's gap and the gaps on both sides.
    fn terms(&self, i: usize) -> u64 {
        let own = if i < self.n() { self.gap[i] } else { 0 };
        own.max(self.between(i)).max(self.between(i + 1))
    }

    /// Updates `max_gap` after a local change: `lost` is whether a replaced term may have
    /// been the maximum, `new` the largest new term. Only a lost maximum costs a rescan.
    fn settle(&mut self, lost: bool, new: u64) {
        if lost && new < self.max_gap {
            self.max_gap = self.scan_max_gap();
        } else {
            self.max_gap = self.max_gap.max(new);
        }
    }

    /// Replaces entry `i`, keeping `max_gap`.
    fn replace(&mut self, i: usize, e: Entry) {
        let lost = self.terms(i) == self.max_gap;
        self.set(i, e);
        let new = self.terms(i);
        self.settle(lost, new);
    }

    /// Inserts `e` at `pos`; the node must not be full.
    fn insert(&mut self, pos: usize, e: Entry) {
        let n = self.n();
        debug_assert!(n < B && pos <= n);
        let lost = self.between(pos) == self.max_gap;
        self.start.copy_within(pos..n, pos + 1);
        self.end.copy_within(pos..n, pos + 1);
        self.sg.copy_within(pos..n, pos + 1);
        self.gap.copy_within(pos..n, pos + 1);
        self.ptr.copy_within(pos..n, pos + 1);
        self.set(pos, e);
        self.len += 1;
        let new = self.terms(pos);
        self.settle(lost, new);
    }

    fn remove(&mut self, pos: usize) -> Entry {
        let n = self.n();
        let e = self.get(pos);
        let lost = self.terms(pos) == self.max_gap;
        self.start.copy_within(pos + 1..n, pos);
        self.end.copy_within(pos + 1..n, pos);
        self.sg.copy_within(pos + 1..n, pos);
        self.gap.copy_within(pos + 1..n, pos);
        self.ptr.copy_within(pos + 1..n, pos);
        self.len -= 1;
        let new = self.between(pos);
        self.settle(lost, new);
        e
    }

    /// The largest gap inside this node's subtree, recomputed from its entries.
    fn scan_max_gap(&self) -> u64 {
        let n = self.n();
        let mut g = 0;
        for i in 0..n {
            g = g.max(self.gap[i]);
        }
        for i in 1..n {
            g = g.max(self.sg[i].saturating_sub(self.end[i - 1]));
        }
        g
    }

    /// The index of the last entry whose start is `<= key` (0 when none is).
    fn route(&self, key: u64) -> usize {
        count_le(&self.start, self.n(), key).max(1) - 1
    }

    /// The index of the entry whose start is exactly `key`.
    fn position(&self, key: u64) -> Option<usize> {
        let i = count_le(&self.start, self.n(), key);
        (i > 0 && self.start[i - 1] == key).then(|| i - 1)
    }
}

/// How many of the first `n` (sorted) values are `<= key`. A linear scan: on these short
/// arrays it beats a binary search, whose branches mispredict (measured 2x slower).
#[inline]
fn count_le(a: &[u64; B], n: usize, key: u64) -> usize {
    let mut i = 0;
    while i < n && a[i] <= key {
        i += 1;
    }
    i
}

/// The augmented VMA tree.
#[derive(Clone, Debug)]
pub struct VmaTree {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    /// VMA payloads by slot; a free slot holds an empty range.
    vmas: Vec<Vma>,
    free_slots: Vec<u32>,
    root: u32,
    len: usize,
    guard: u64,
    /// Slot of the last VMA `find` returned (like the old per-mm vmacache). Always safe to
    /// consult: a freed slot holds an empty range, a reused slot a live VMA.
    last: core::cell::Cell<u32>,
}

fn empty_vma() -> Vma {
    Vma {
        start: 0,
        end: 0,
        flags: 0,
        pgoff: 0,
        backing: Backing::Anon,
        anon_vma: None,
        forked: false,
    }
}

impl VmaTree {
    /// An empty tree; `guard` is stack_guard_gap (bytes kept free below VM_GROWSDOWN VMAs).
    pub fn new(guard: u64) -> Self {
        VmaTree {
            nodes: alloc::vec![Node::new(true)],
            free_nodes: Vec::new(),
            vmas: Vec::new(),
            free_slots: Vec::new(),
            root: 0,
            len: 0,
            guard,
            last: core::cell::Cell::new(NIL),
        }
    }

    /// Number of VMAs (mm->map_count).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    fn node_mut(&mut self, i: u32) -> &mut Node {
        &mut self.nodes[i as usize]
    }

    fn sg(&self, v: &Vma) -> u64 {
        start_gap(v.start, v.flags, self.guard)
    }

    fn alloc_node(&mut self, leaf: bool) -> u32 {
        if let Some(i) = self.free_nodes.pop() {
            let n = self.node_mut(i);
            n.len = 0;
            n.max_gap = 0;
            n.leaf = leaf;
            i
        } else {
            self.nodes.push(Node::new(leaf));
            (self.nodes.len() - 1) as u32
        }
    }

    fn alloc_slot(&mut self, vma: Vma) -> u32 {
        if let Some(i) = self.free_slots.pop() {
            self.vmas[i as usize] = vma;
            i
        } else {
            self.vmas.push(vma);
            (self.vmas.len() - 1) as u32
        }
    }

    /// The entry summarising node `c` in its parent.
    fn summary(&self, c: u32) -> Entry {
        let n = self.node(c);
        let k = n.n() - 1;
        Entry {
            start: n.start[0],
            end: n.end[k],
            sg: n.sg[0],
            gap: n.max_gap,
            ptr: c,
        }
    }

    /// Recomputes entry `i` of `parent` from its child; returns whether it changed.
    fn refresh(&mut self, parent: u32, i: usize) -> bool {
        let c = self.node(parent).ptr[i];
        let e = self.summary(c);
        let p = self.node_mut(parent);
        if (p.start[i], p.end[i], p.sg[i], p.gap[i]) == (e.start, e.end, e.sg, e.gap) {
            return false;
        }
        p.replace(i, e);
        true
    }

    /// Splits full node `c` in half; returns the new right half.
    fn split_node(&mut self, c: u32) -> u32 {
        let leaf = self.node(c).leaf;
        let r = self.alloc_node(leaf);
        let (lo, hi) = (self.node(c).clone(), self.node_mut(r));
        let mid = lo.n() / 2;
        for i in mid..lo.n() {
            hi.set(i - mid, lo.get(i));
        }
        hi.len = (lo.n() - mid) as u16;
        hi.max_gap = hi.scan_max_gap();
        let c = self.node_mut(c);
        c.len = mid as u16;
        c.max_gap = c.scan_max_gap();
        r
    }

    /// Inserts a VMA. The caller guarantees it overlaps no VMA in the tree.
    pub fn insert(&mut self, vma: Vma) {
        debug_assert!(vma.start < vma.end);
        let e = Entry {
            start: vma.start,
            end: vma.end,
            sg: self.sg(&vma),
            gap: 0,
            ptr: 0,
        };
        let slot = self.alloc_slot(vma);
        let e = Entry { ptr: slot, ..e };
        if let Some(right) = self.insert_at(self.root, e) {
            let old = self.root;
            let root = self.alloc_node(false);
            let (a, b) = (self.summary(old), self.summary(right));
            let n = self.node_mut(root);
            n.set(0, a);
            n.set(1, b);
            n.len = 2;
            n.max_gap = n.scan_max_gap();
            self.root = root;
        }
        self.len += 1;
    }

    /// Inserts `e` below node `t`; returns a new right sibling when `t` had to split.
    fn insert_at(&mut self, t: u32, e: Entry) -> Option<u32> {
        let n = self.node(t);
        if n.leaf {
            let pos = count_le(&n.start, n.n(), e.start.wrapping_sub(1));
            let pos = if e.start == 0 { 0 } else { pos };
            if n.n() < B {
                self.node_mut(t).insert(pos, e);
                return None;
            }
            let r = self.split_node(t);
            let mid = self.node(t).n();
            if pos <= mid {
                self.node_mut(t).insert(pos, e);
            } else {
                self.node_mut(r).insert(pos - mid, e);
            }
            return Some(r);
        }
        let i = n.route(e.start);
        let child = n.ptr[i];
        let split = self.insert_at(child, e);
        self.refresh(t, i);
        let s = split?;
        let se = self.summary(s);
        if self.node(t).n() < B {
            self.node_mut(t).insert(i + 1, se);
            return None;
        }
        let r = self.split_node(t);
        let mid = self.node(t).n();
        if i < mid {
            self.node_mut(t).insert(i + 1, se);
        } else {
            self.node_mut(r).insert(i + 1 - mid, se);
        }
        Some(r)
    }

    /// Removes and returns the VMA starting exactly at `start`.
    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        let slot = self.remove_at(self.root, start)?;
        let root = self.node(self.root);
        if !root.leaf && root.n() == 1 {
            let old = self.root;
            self.root = root.ptr[0];
            self.free_nodes.push(old);
        }
        self.len -= 1;
        self.free_slots.push(slot);
        Some(core::mem::replace(
            &mut self.vmas[slot as usize],
            empty_vma(),
        ))
    }

    fn remove_at(&mut self, t: u32, key: u64) -> Option<u32> {
        let n = self.node(t);
        if n.leaf {
            let pos = n.position(key)?;
            return Some(self.node_mut(t).remove(pos).ptr);
        }
        let i = n.route(key);
        let child = n.ptr[i];
        let slot = self.remove_at(child, key)?;
        if self.node(child).n() < MIN {
            self.rebalance(t, i);
        } else {
            self.refresh(t, i);
        }
        Some(slot)
    }

    /// Fixes child `i` of `t`, which fell below MIN entries, by merging it with a sibling or
    /// taking entries from one.
    fn rebalance(&mut self, t: u32, i: usize) {
        let pn = self.node(t).n();
        if pn < 2 {
            if self.node(self.node(t).ptr[i]).n() > 0 {
                self.refresh(t, i);
            }
            return;
        }
        let li = if i > 0 { i - 1 } else { i };
        let (a, b) = (self.node(t).ptr[li], self.node(t).ptr[li + 1]);
        let (na, nb) = (self.node(a).n(), self.node(b).n());
        if na + nb <= B {
            let bn = self.node(b).clone();
            let an = self.node_mut(a);
            for j in 0..nb {
                an.set(na + j, bn.get(j));
            }
            an.len = (na + nb) as u16;
            an.max_gap = an.scan_max_gap();
            self.node_mut(t).remove(li + 1);
            self.free_nodes.push(b);
            self.refresh(t, li);
            return;
        }
        // Redistribute evenly.
        let total = na + nb;
        let want_a = total / 2;
        if na < want_a {
            let k = want_a - na;
            let bn = self.node(b).clone();
            {
                let an = self.node_mut(a);
                for j in 0..k {
                    an.set(na + j, bn.get(j));
                }
                an.len = want_a as u16;
                an.max_gap = an.scan_max_gap();
            }
            let bm = self.node_mut(b);
            for j in k..nb {
                bm.set(j - k, bn.get(j));
            }
            bm.len = (nb - k) as u16;
            bm.max_gap = bm.scan_max_gap();
        } else {
            let k = na - want_a;
            let an = self.node(a).clone();
            let bm = self.node_mut(b);
            for j in (0..nb).rev() {
                bm.set(j + k, bm.get(j));
            }
            for j in 0..k {
                bm.set(j, an.get(want_a + j));
            }
            bm.len = (nb + k) as u16;
            bm.max_gap = bm.scan_max_gap();
            let am = self.node_mut(a);
            am.len = want_a as u16;
            am.max_gap = am.scan_max_gap();
        }
        self.refresh(t, li);
        self.refresh(t, li + 1);
    }

    /// Applies `f` to the VMA whose key is `key` below node `t` and refreshes the search data
    /// on the way back up, stopping where nothing changed. `None` when there is no such VMA,
    /// else whether `t`'s summary may have changed.
    fn update_at<F: FnMut(&mut Vma)>(&mut self, t: u32, key: u64, f: &mut F) -> Option<bool> {
        let n = self.node(t);
        if n.leaf {
            let j = n.position(key)?;
            let slot = n.ptr[j];
            let v = &mut self.vmas[slot as usize];
            f(v);
            let e = Entry {
                start: v.start,
                end: v.end,
                sg: start_gap(v.start, v.flags, self.guard),
                gap: 0,
                ptr: slot,
            };
            let n = self.node_mut(t);
            if (n.start[j], n.end[j], n.sg[j]) == (e.start, e.end, e.sg) {
                return Some(false);
            }
            n.replace(j, e);
            return Some(true);
        }
        let i = n.route(key);
        let c = n.ptr[i];
        let changed = self.update_at(c, key, f)?;
        Some(changed && self.refresh(t, i))
    }

    /// Changes the VMA starting at `start` in place. `f` may move its start/end as long as the
    /// VMA stays between its neighbours. Returns whether the VMA existed.
    pub fn update(&mut self, start: u64, mut f: impl FnMut(&mut Vma)) -> bool {
        // Fast path: the cached slot (find fills it) is the VMA and its range and
        // gap-adjusted start stay the same: no search data changes.
        let c = self.last.get();
        if c != NIL && self.vmas[c as usize].start == start && start < self.vmas[c as usize].end {
            let (end, sg) = {
                let v = &self.vmas[c as usize];
                (v.end, self.sg(v))
            };
            let v = &mut self.vmas[c as usize];
            f(v);
            if v.start == start && v.end == end && start_gap(v.start, v.flags, self.guard) == sg {
                return true;
            }
            // The range moved: refresh the search data along the path to it.
            self.update_at(self.root, start, &mut |_: &mut Vma| {});
            return true;
        }
        self.update_at(self.root, start, &mut f).is_some()
    }

    /// find_vma: the first VMA with `end > addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        let c = self.last.get();
        if c != NIL {
            let v = &self.vmas[c as usize];
            if v.start <= addr && addr < v.end {
                return Some(v);
            }
        }
        let mut t = self.root;
        loop {
            let n = self.node(t);
            let k = n.n();
            // Ends are sorted too (VMAs do not overlap).
            let i = count_le(&n.end, k, addr);
            if i == k {
                return None;
            }
            if n.leaf {
                let slot = n.ptr[i];
                self.last.set(slot);
                return Some(&self.vmas[slot as usize]);
            }
            t = n.ptr[i];
        }
    }

    /// The VMA containing `addr`.
    pub fn containing(&self, addr: u64) -> Option<&Vma> {
        self.find(addr).filter(|v| v.start <= addr)
    }

    /// The first VMA intersecting `[start, end)`.
    pub fn intersecting(&self, start: u64, end: u64) -> Option<&Vma> {
        self.find(start).filter(|v| v.start < end)
    }

    /// The first VMA starting strictly after `start`.
    pub fn next_after(&self, start: u64) -> Option<&Vma> {
        let v = self.find(start)?;
        if v.start > start {
            return Some(v);
        }
        let end = v.end;
        self.find(end)
    }

    /// The last VMA starting strictly before `addr`.
    pub fn prev_before(&self, addr: u64) -> Option<&Vma> {
        let mut t = self.root;
        loop {
            let n = self.node(t);
            let k = n.n();
            if k == 0 || n.start[0] >= addr {
                return None;
            }
            let i = count_le(&n.start, k, addr - 1) - 1;
            if n.leaf {
                return Some(&self.vmas[n.ptr[i] as usize]);
            }
            t = n.ptr[i];
        }
    }

    /// `(prev_before(key), next_after(key))` with one descent when both lie in the leaf that
    /// `key` routes to (the common case in splits and merges).
    pub fn neighbours(&self, key: u64) -> (Option<&Vma>, Option<&Vma>) {
        let mut t = self.root;
        loop {
            let n = self.node(t);
            if !n.leaf {
                t = n.ptr[n.route(key)];
                continue;
            }
            let k = n.n();
            let i = count_le(&n.start, k, key);
            // Entries [0, i) start at or below key; [i, k) above it.
            let below = if i > 0 && n.start[i - 1] == key {
                i - 1
            } else {
                i
            };
            let prev = if below > 0 {
                Some(&self.vmas[n.ptr[below - 1] as usize])
            } else {
                self.prev_before(key)
            };
            let next = if i < k {
                Some(&self.vmas[n.ptr[i] as usize])
            } else {
                self.next_after(key)
            };
            return (prev, next);
        }
    }

    /// The lowest VMA.
    pub fn first(&self) -> Option<&Vma> {
        let mut t = self.root;
        loop {
            let n = self.node(t);
            if n.n() == 0 {
                return None;
            }
            if n.leaf {
                return Some(&self.vmas[n.ptr[0] as usize]);
            }
            t = n.ptr[0];
        }
    }

    /// The highest VMA.
    pub fn last(&self) -> Option<&Vma> {
        let mut t = self.root;
        loop {
            let n = self.node(t);
            if n.n() == 0 {
                return None;
            }
            let k = n.n() - 1;
            if n.leaf {
                return Some(&self.vmas[n.ptr[k] as usize]);
            }
            t = n.ptr[k];
        }
    }

    /// All VMAs in address order.
    pub fn iter(&self) -> Iter<'_> {
        let mut it = Iter {
            tree: self,
            stack: [(NIL, 0); MAX_DEPTH],
            depth: 0,
        };
        if self.len > 0 {
            it.stack[0] = (self.root, 0);
            it.depth = 1;
        }
        it
    }

    fn fit_top(a: u64, b: u64, low: u64, high: u64, len: u64) -> Option<u64> {
        let lo = a.max(low);
        let hi = b.min(high);
        (hi > lo && hi - lo >= len).then_some(hi)
    }

    fn fit_bottom(a: u64, b: u64, low: u64, high: u64, len: u64) -> Option<u64> {
        let lo = a.max(low);
        let hi = b.min(high);
        (hi > lo && hi - lo >= len).then_some(lo)
    }

    /// Whether entry `i` of `n` (an inner node) may hold a fitting gap inside its child.
    fn child_may_fit(n: &Node, i: usize, low: u64, high: u64, len: u64) -> bool {
        n.gap[i] >= len && n.sg[i] < high && n.end[i] > low
    }

    /// The highest fitting gap strictly inside the subtree of node `t`.
    fn search_high(&self, t: u32, low: u64, high: u64, len: u64) -> Option<u64> {
        let n = self.node(t);
        let k = n.n();
        for i in (0..k).rev() {
            if i + 1 < k {
                if let Some(x) = Self::fit_top(n.end[i], n.sg[i + 1], low, high, len) {
                    return Some(x);
                }
            }
            if !n.leaf && Self::child_may_fit(n, i, low, high, len) {
                if let Some(x) = self.search_high(n.ptr[i], low, high, len) {
                    return Some(x);
                }
            }
        }
        None
    }

    /// The lowest fitting gap strictly inside the subtree of node `t`.
    fn search_low(&self, t: u32, low: u64, high: u64, len: u64) -> Option<u64> {
        let n = self.node(t);
        let k = n.n();
        for i in 0..k {
            if !n.leaf && Self::child_may_fit(n, i, low, high, len) {
                if let Some(x) = self.search_low(n.ptr[i], low, high, len) {
                    return Some(x);
                }
            }
            if i + 1 < k {
                if n.end[i] >= high {
                    return None;
                }
                if let Some(x) = Self::fit_bottom(n.end[i], n.sg[i + 1], low, high, len) {
                    return Some(x);
                }
            }
        }
        None
    }

    /// Top-down search (P8): the end of the highest free interval, clipped to `[low, high)`,
    /// that holds `len` bytes; the mapping goes at `result - len`. Free intervals end at the
    /// next VMA's gap-adjusted start.
    pub fn highest_gap_end(&self, low: u64, high: u64, len: u64) -> Option<u64> {
        if len == 0 || high <= low {
            return None;
        }
        if self.len == 0 {
            return Self::fit_top(0, u64::MAX, low, high, len);
        }
        let root = self.summary(self.root);
        if let Some(x) = Self::fit_top(root.end, u64::MAX, low, high, len) {
            return Some(x);
        }
        if root.gap >= len {
            if let Some(x) = self.search_high(self.root, low, high, len) {
                return Some(x);
            }
        }
        Self::fit_top(0, root.sg, low, high, len)
    }

    /// Bottom-up search (P12): the start of the lowest free interval, clipped to
    /// `[low, high)`, that holds `len` bytes.
    pub fn lowest_gap_start(&self, low: u64, high: u64, len: u64) -> Option<u64> {
        if len == 0 || high <= low {
            return None;
        }
        if self.len == 0 {
            return Self::fit_bottom(0, u64::MAX, low, high, len);
        }
        let root = self.summary(self.root);
        if let Some(x) = Self::fit_bottom(0, root.sg, low, high, len) {
            return Some(x);
        }
        if root.gap >= len {
            if let Some(x) = self.search_low(self.root, low, high, len) {
                return Some(x);
            }
        }
        Self::fit_bottom(root.end, u64::MAX, low, high, len)
    }

    /// Verifies the B-tree structure (one leaf depth, node fill between MIN and B, sorted
    /// entries, inner entries equal to their child's summary, leaf entries equal to their
    /// VMA), the VMAs (page aligned, non-empty, non-overlapping) and the count.
    pub fn check(&self) -> Result<(), String> {
        let mut count = 0usize;
        let mut leaf_depth = None;
        self.check_at(self.root, 0, true, &mut count, &mut leaf_depth)?;
        if count != self.len {
            return Err(alloc::format!("len {} but {} VMAs", self.len, count));
        }
        let mut prev_end = 0u64;
        for (i, v) in self.iter().enumerate() {
            if v.start >= v.end || v.start & 0xfff != 0 || v.end & 0xfff != 0 {
                return Err(alloc::format!("bad vma {:#x}-{:#x}", v.start, v.end));
            }
            if i > 0 && v.start < prev_end {
                return Err(alloc::format!("overlap at {:#x}", v.start));
            }
            prev_end = v.end;
        }
        Ok(())
    }

    fn check_at(
        &self,
        t: u32,
        depth: usize,
        is_root: bool,
        count: &mut usize,
        leaf_depth: &mut Option<usize>,
    ) -> Result<(), String> {
        let n = self.node(t);
        let k = n.n();
        if k > B || (!is_root && k < MIN) || (is_root && !n.leaf && k < 2) {
            return Err(alloc::format!("node {t} holds {k} entries"));
        }
        if depth >= MAX_DEPTH {
            return Err(String::from("tree too deep"));
        }
        if n.max_gap != n.scan_max_gap() {
            return Err(alloc::format!("node {t} keeps max gap {:#x}", n.max_gap));
        }
        for i in 1..k {
            if n.start[i] <= n.start[i - 1] || n.end[i] <= n.end[i - 1] {
                return Err(alloc::format!("node {t} entries out of order at {i}"));
            }
        }
        if n.leaf {
            match leaf_depth {
                Some(d) if *d != depth => {
                    return Err(alloc::format!("leaves at depths {d} and {depth}"));
                }
                _ => *leaf_depth = Some(depth),
            }
            for i in 0..k {
                let v = &self.vmas[n.ptr[i] as usize];
                if (n.start[i], n.end[i], n.sg[i], n.gap[i]) != (v.start, v.end, self.sg(v), 0) {
                    return Err(alloc::format!("stale leaf entry for {:#x}", v.start));
                }
            }
            *count += k;
            return Ok(());
        }
        for i in 0..k {
            let c = n.ptr[i];
            self.check_at(c, depth + 1, false, count, leaf_depth)?;
            let s = self.summary(c);
            if (n.start[i], n.end[i], n.sg[i], n.gap[i]) != (s.start, s.end, s.sg, s.gap) {
                return Err(alloc::format!(
                    "augment mismatch at {:#x}: stored ({:#x},{:#x},{:#x}) real ({:#x},{:#x},{:#x})",
                    n.start[i],
                    n.sg[i],
                    n.end[i],
                    n.gap[i],
                    s.sg,
                    s.end,
                    s.gap
                ));
            }
        }
        Ok(())
    }
}

/// In-order iterator over a [`VmaTree`].
pub struct Iter<'a> {
    tree: &'a VmaTree,
    stack: [(u32, u16); MAX_DEPTH],
    depth: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Vma;
    fn next(&mut self) -> Option<&'a Vma> {
        loop {
            if self.depth == 0 {
                return None;
            }
            let (t, i) = self.stack[self.depth - 1];
            let n = self.tree.node(t);
            if i as usize >= n.n() {
                self.depth -= 1;
                continue;
            }
            self.stack[self.depth - 1].1 += 1;
            if n.leaf {
                return Some(&self.tree.vmas[n.ptr[i as usize] as usize]);
            }
            self.stack[self.depth] = (n.ptr[i as usize], 0);
            self.depth += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::vma::{flags::*, Backing};
    use super::*;
    use proptest::prelude::*;

    const G: u64 = 1 << 20;

    fn v(start: u64, end: u64, gd: bool) -> Vma {
        Vma {
            start,
            end,
            flags: VM_READ | if gd { VM_GROWSDOWN } else { 0 },
            pgoff: start >> 12,
            backing: Backing::Anon,
            anon_vma: None,
            forked: false,
        }
    }

    /// Brute-force free intervals of the gap-adjusted model (P8).
    fn free_intervals(vs: &[Vma]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut prev = 0u64;
        for x in vs {
            let sg = start_gap(x.start, x.flags, G);
            if sg > prev {
                out.push((prev, sg));
            }
            prev = x.end;
        }
        out.push((prev, u64::MAX));
        out
    }

    fn brute_high(vs: &[Vma], low: u64, high: u64, len: u64) -> Option<u64> {
        free_intervals(vs)
            .into_iter()
            .rev()
            .find_map(|(a, b)| VmaTree::fit_top(a, b, low, high, len))
    }

    fn brute_low(vs: &[Vma], low: u64, high: u64, len: u64) -> Option<u64> {
        free_intervals(vs)
            .into_iter()
            .find_map(|(a, b)| VmaTree::fit_bottom(a, b, low, high, len))
    }

    #[test]
    fn find_next_prev() {
        let mut t = VmaTree::new(G);
        t.insert(v(0x10000, 0x20000, false));
        t.insert(v(0x30000, 0x40000, false));
        assert_eq!(t.find(0x20000).unwrap().start, 0x30000);
        assert_eq!(t.find(0x1ffff).unwrap().start, 0x10000);
        assert!(t.find(0x40000).is_none());
        assert_eq!(t.next_after(0x10000).unwrap().start, 0x30000);
        assert_eq!(t.prev_before(0x30000).unwrap().start, 0x10000);
        assert!(t.containing(0x25000).is_none());
        assert_eq!(t.remove(0x10000).unwrap().end, 0x20000);
        assert_eq!(t.len(), 1);
        t.check().unwrap();
    }

    #[test]
    fn p8_gap_below_growsdown_is_reduced_by_guard() {
        let mut t = VmaTree::new(G);
        t.insert(v(0x1000_0000, 0x1001_0000, true));
        // Searching just below the stack must keep 1 MiB free (P8, P10).
        assert_eq!(
            t.highest_gap_end(0x1000, 0x1001_0000, 0x1000),
            Some(0x1000_0000 - G)
        );
    }

    /// Many VMAs (several levels, splits, merges, redistributions), ranges shrunk in place by
    /// `update`, structure and gap index checked against a sorted vector after every step.
    #[test]
    fn deep_tree_matches_sorted_vector() {
        let mut t = VmaTree::new(G);
        let mut model: Vec<Vma> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..12_000u32 {
            let r = rnd();
            let slot = (r >> 8) % 3000;
            let start = slot << 16;
            let pos = model
                .iter()
                .position(|v| v.start < start + 0x10000 && start < v.end);
            // Grow for the first 6,000 steps, then mostly shrink.
            let del = r % 8 < if step < 6_000 { 2 } else { 6 };
            match pos {
                Some(p) if del => {
                    let v = model.remove(p);
                    assert_eq!(t.remove(v.start), Some(v));
                }
                Some(p) if r % 8 == 7 && model[p].pages() > 1 => {
                    let old = model[p].start;
                    model[p].start += 0x1000;
                    assert!(t.update(old, |v| v.start += 0x1000));
                }
                Some(_) => {}
                None => {
                    let vma = v(start, start + ((1 + r % 7) << 12), r % 5 == 0);
                    model.insert(model.partition_point(|v| v.start < start), vma.clone());
                    t.insert(vma);
                }
            }
            if step % 97 == 0 || step > 11_900 {
                t.check().unwrap();
                assert!(t.iter().eq(model.iter()));
                for q in 0..8u64 {
                    let (a, b) = ((rnd() % 3100) << 16, (rnd() % 3100) << 16);
                    let (low, high) = (a.min(b), a.max(b));
                    let len = (1 + q * 5) << 12;
                    assert_eq!(
                        t.highest_gap_end(low, high, len),
                        brute_high(&model, low, high, len)
                    );
                    assert_eq!(
                        t.lowest_gap_start(low, high, len),
                        brute_low(&model, low, high, len)
                    );
                    let addr = rnd() % (3100 << 16);
                    assert_eq!(t.find(addr), model.iter().find(|v| v.end > addr));
                    assert_eq!(
                        t.prev_before(addr),
                        model.iter().rev().find(|v| v.start < addr)
                    );
                    assert_eq!(t.next_after(addr), model.iter().find(|v| v.start > addr));
                }
            }
        }
        for probe in 0..3100u64 {
            let key = probe << 16;
            let (p, n) = t.neighbours(key);
            assert_eq!(p, t.prev_before(key));
            assert_eq!(n, t.next_after(key));
        }
        assert_eq!(t.first(), model.first());
        assert_eq!(t.last(), model.last());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn gap_index_matches_brute_force(
            ops in proptest::collection::vec((0u64..512, 1u64..8, any::<bool>(), any::<bool>()), 1..120),
            queries in proptest::collection::vec((0u64..600, 0u64..600, 1u64..600), 1..20),
        ) {
            let mut t = VmaTree::new(G);
            let mut model: Vec<Vma> = Vec::new();
            for (slot, pages, gd, del) in ops {
                let start = slot << 16;
                let end = start + (pages << 12);
                if del {
                    let pos = model.iter().position(|x| x.start <= start && start < x.end);
                    if let Some(p) = pos {
                        let x = model.remove(p);
                        prop_assert_eq!(t.remove(x.start), Some(x));
                    }
                } else if !model.iter().any(|x| x.start < end && start < x.end) {
                    model.push(v(start, end, gd));
                    model.sort_by_key(|x| x.start);
                    t.insert(v(start, end, gd));
                }
                t.check().map_err(TestCaseError::fail)?;
            }
            let got: Vec<Vma> = t.iter().cloned().collect();
            prop_assert_eq!(&got, &model);
            for (a, b, l) in queries {
                let (low, high, len) = (a << 16, b << 16, l << 12);
                prop_assert_eq!(t.highest_gap_end(low, high, len), brute_high(&model, low, high, len));
                prop_assert_eq!(t.lowest_gap_start(low, high, len), brute_low(&model, low, high, len));
            }
            for probe in 0..40u64 {
                let addr = probe << 20;
                let want = model.iter().find(|x| x.end > addr);
                prop_assert_eq!(t.find(addr), want);
            }
        }
    }
}
