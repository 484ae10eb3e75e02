//! The VMA set: a treap keyed by start, augmented with the largest free gap per subtree.
//!
//! Each node keeps, for its subtree, the gap-adjusted start of its leftmost VMA
//! (`vm_start_gap`, P6), the end of its rightmost VMA and the largest gap between two
//! consecutive VMAs inside the subtree. That gives O(log n) expected lookup, insert, remove,
//! and top-down / bottom-up gap search (P8, P12) like the maple tree's gap tracking. Gaps
//! below a VM_GROWSDOWN VMA are measured up to its start minus the stack guard gap, so the
//! searches never place a mapping inside a guard gap. Callers keep VMAs non-overlapping; the
//! tree keeps them sorted.

use super::vma::{start_gap, Vma};
use alloc::string::String;
use alloc::vec::Vec;

const NIL: u32 = u32::MAX;

/// One tree node: exactly one cache line, the fields a lookup reads first.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Node {
    start: u64,
    end: u64,
    left: u32,
    right: u32,
    /// vm_start_gap of this VMA.
    sg: u64,
    prio: u64,
    min_sg: u64,
    max_end: u64,
    max_gap: u64,
}

/// The augmented VMA tree.
#[derive(Clone, Debug)]
pub struct VmaTree {
    /// Hot search data, kept apart from the VMAs so walks touch fewer cache lines.
    nodes: Vec<Node>,
    vmas: Vec<Vma>,
    free: Vec<u32>,
    root: u32,
    len: usize,
    guard: u64,
    seed: u64,
    /// Slot of the last VMA `find` returned (like the old per-mm vmacache). Always safe to
    /// consult: a freed slot holds an empty range, a reused slot a live VMA.
    last: core::cell::Cell<u32>,
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl VmaTree {
    /// An empty tree; `guard` is stack_guard_gap (bytes kept free below VM_GROWSDOWN VMAs).
    pub fn new(guard: u64) -> Self {
        VmaTree {
            nodes: Vec::new(),
            vmas: Vec::new(),
            free: Vec::new(),
            root: NIL,
            len: 0,
            guard,
            seed: 0x5eed,
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

    fn n(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    fn sg(&self, v: &Vma) -> u64 {
        start_gap(v.start, v.flags, self.guard)
    }

    fn pull(&mut self, t: u32) {
        let (l, r) = (self.n(t).left, self.n(t).right);
        let x = self.n(t);
        let sgx = x.sg;
        let (xend, mut gap) = (x.end, 0u64);
        let min_sg = if l != NIL {
            let ln = self.n(l);
            gap = gap.max(ln.max_gap).max(sgx.saturating_sub(ln.max_end));
            ln.min_sg
        } else {
            sgx
        };
        let max_end = if r != NIL {
            let rn = self.n(r);
            gap = gap.max(rn.max_gap).max(rn.min_sg.saturating_sub(xend));
            rn.max_end
        } else {
            xend
        };
        let node = &mut self.nodes[t as usize];
        node.min_sg = min_sg;
        node.max_end = max_end;
        node.max_gap = gap;
    }

    fn alloc(&mut self, vma: Vma) -> u32 {
        let prio = splitmix(&mut self.seed);
        let node = Node {
            start: vma.start,
            end: vma.end,
            sg: self.sg(&vma),
            left: NIL,
            right: NIL,
            prio,
            min_sg: 0,
            max_end: 0,
            max_gap: 0,
        };
        let i = if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            self.vmas[i as usize] = vma;
            i
        } else {
            self.nodes.push(node);
            self.vmas.push(vma);
            (self.nodes.len() - 1) as u32
        };
        self.pull(i);
        i
    }

    fn split(&mut self, t: u32, key: u64) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.n(t).start < key {
            let (a, b) = self.split(self.n(t).right, key);
            self.nodes[t as usize].right = a;
            self.pull(t);
            (t, b)
        } else {
            let (a, b) = self.split(self.n(t).left, key);
            self.nodes[t as usize].left = b;
            self.pull(t);
            (a, t)
        }
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.n(a).prio > self.n(b).prio {
            let r = self.merge(self.n(a).right, b);
            self.nodes[a as usize].right = r;
            self.pull(a);
            a
        } else {
            let l = self.merge(a, self.n(b).left);
            self.nodes[b as usize].left = l;
            self.pull(b);
            b
        }
    }

    fn insert_at(&mut self, t: u32, i: u32) -> u32 {
        if t == NIL {
            return i;
        }
        let key = self.n(i).start;
        if self.n(i).prio > self.n(t).prio {
            let (l, r) = self.split(t, key);
            let node = &mut self.nodes[i as usize];
            node.left = l;
            node.right = r;
            self.pull(i);
            return i;
        }
        if key < self.n(t).start {
            let l = self.insert_at(self.n(t).left, i);
            self.nodes[t as usize].left = l;
        } else {
            let r = self.insert_at(self.n(t).right, i);
            self.nodes[t as usize].right = r;
        }
        self.pull(t);
        t
    }

    /// Inserts a VMA. The caller guarantees it overlaps no VMA in the tree.
    pub fn insert(&mut self, vma: Vma) {
        debug_assert!(vma.start < vma.end);
        let i = self.alloc(vma);
        self.root = self.insert_at(self.root, i);
        self.len += 1;
    }

    fn remove_at(&mut self, t: u32, key: u64, out: &mut Option<Vma>) -> u32 {
        if t == NIL {
            return NIL;
        }
        let s = self.n(t).start;
        if s == key {
            let (l, r) = (self.n(t).left, self.n(t).right);
            let m = self.merge(l, r);
            let node = &mut self.nodes[t as usize];
            node.start = 0;
            node.end = 0;
            *out = Some(core::mem::replace(
                &mut self.vmas[t as usize],
                Vma {
                    start: 0,
                    end: 0,
                    flags: 0,
                    pgoff: 0,
                    backing: super::vma::Backing::Anon,
                    anon_vma: None,
                    forked: false,
                },
            ));
            self.free.push(t);
            return m;
        }
        if key < s {
            let l = self.remove_at(self.n(t).left, key, out);
            self.nodes[t as usize].left = l;
        } else {
            let r = self.remove_at(self.n(t).right, key, out);
            self.nodes[t as usize].right = r;
        }
        if out.is_some() {
            self.pull(t);
        }
        t
    }

    /// Removes and returns the VMA starting exactly at `start`.
    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        let mut out = None;
        self.root = self.remove_at(self.root, start, &mut out);
        if out.is_some() {
            self.len -= 1;
        }
        out
    }

    fn update_at(&mut self, t: u32, key: u64, f: &mut dyn FnMut(&mut Vma)) -> bool {
        if t == NIL {
            return false;
        }
        let s = self.n(t).start;
        let found = if s == key {
            let v = &mut self.vmas[t as usize];
            f(v);
            let (start, end, sg) = (v.start, v.end, start_gap(v.start, v.flags, self.guard));
            let node = &mut self.nodes[t as usize];
            node.start = start;
            node.end = end;
            node.sg = sg;
            true
        } else if key < s {
            self.update_at(self.n(t).left, key, f)
        } else {
            self.update_at(self.n(t).right, key, f)
        };
        if found {
            self.pull(t);
        }
        found
    }

    /// Changes the VMA starting at `start` in place. `f` may move its start/end as long as the
    /// VMA stays between its neighbours. Returns whether the VMA existed.
    pub fn update(&mut self, start: u64, mut f: impl FnMut(&mut Vma)) -> bool {
        // Fast path: when the range and gap-adjusted start stay the same (flags, pgoff,
        // anon_vma changes), no augmented value changes, so no walk back up is needed.
        let slot = match self.find(start) {
            Some(v) if v.start == start => self.last.get(),
            _ => return false,
        };
        let mut v = self.vmas[slot as usize].clone();
        f(&mut v);
        let n = self.n(slot);
        if v.start == n.start && v.end == n.end && self.sg(&v) == n.sg {
            self.vmas[slot as usize] = v;
            return true;
        }
        let mut v = Some(v);
        self.update_at(self.root, start, &mut |x: &mut Vma| {
            if let Some(nv) = v.take() {
                *x = nv;
            }
        })
    }

    /// find_vma: the first VMA with `end > addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        let c = self.last.get();
        if c != NIL {
            let n = self.n(c);
            if n.start <= addr && addr < n.end {
                return Some(&self.vmas[c as usize]);
            }
        }
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = self.n(t);
            if n.end > addr {
                best = t;
                if n.start <= addr {
                    break;
                }
                t = n.left;
            } else {
                t = n.right;
            }
        }
        if best != NIL {
            self.last.set(best);
        }
        (best != NIL).then(|| &self.vmas[best as usize])
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
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = self.n(t);
            if n.start > start {
                best = t;
                t = n.left;
            } else {
                t = n.right;
            }
        }
        (best != NIL).then(|| &self.vmas[best as usize])
    }

    /// The last VMA starting strictly before `addr`.
    pub fn prev_before(&self, addr: u64) -> Option<&Vma> {
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = self.n(t);
            if n.start < addr {
                best = t;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        (best != NIL).then(|| &self.vmas[best as usize])
    }

    /// The lowest VMA.
    pub fn first(&self) -> Option<&Vma> {
        let mut t = self.root;
        if t == NIL {
            return None;
        }
        while self.n(t).left != NIL {
            t = self.n(t).left;
        }
        Some(&self.vmas[t as usize])
    }

    /// The highest VMA.
    pub fn last(&self) -> Option<&Vma> {
        let mut t = self.root;
        if t == NIL {
            return None;
        }
        while self.n(t).right != NIL {
            t = self.n(t).right;
        }
        Some(&self.vmas[t as usize])
    }

    /// All VMAs in address order.
    pub fn iter(&self) -> Iter<'_> {
        let mut it = Iter {
            tree: self,
            stack: Vec::new(),
        };
        it.push_left(self.root);
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

    fn search_high(&self, t: u32, low: u64, high: u64, len: u64) -> Option<u64> {
        if t == NIL {
            return None;
        }
        let n = self.n(t);
        if n.max_gap < len || n.min_sg >= high || n.max_end <= low {
            return None;
        }
        let (l, r) = (n.left, n.right);
        if r != NIL && n.end < high {
            if let Some(x) = self.search_high(r, low, high, len) {
                return Some(x);
            }
            if let Some(x) = Self::fit_top(n.end, self.n(r).min_sg, low, high, len) {
                return Some(x);
            }
        }
        if l != NIL {
            let sgx = n.sg;
            if let Some(x) = Self::fit_top(self.n(l).max_end, sgx, low, high, len) {
                return Some(x);
            }
            return self.search_high(l, low, high, len);
        }
        None
    }

    fn search_low(&self, t: u32, low: u64, high: u64, len: u64) -> Option<u64> {
        if t == NIL {
            return None;
        }
        let n = self.n(t);
        if n.max_gap < len || n.min_sg >= high || n.max_end <= low {
            return None;
        }
        let (l, r) = (n.left, n.right);
        let sgx = n.sg;
        if l != NIL {
            if let Some(x) = self.search_low(l, low, high, len) {
                return Some(x);
            }
            if let Some(x) = Self::fit_bottom(self.n(l).max_end, sgx, low, high, len) {
                return Some(x);
            }
        }
        if r != NIL {
            if n.end >= high {
                return None;
            }
            if let Some(x) = Self::fit_bottom(n.end, self.n(r).min_sg, low, high, len) {
                return Some(x);
            }
            return self.search_low(r, low, high, len);
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
        if self.root == NIL {
            return Self::fit_top(0, u64::MAX, low, high, len);
        }
        // The root's augment holds the lowest gap-adjusted start and the highest end.
        let (first_sg, last_end) = (self.n(self.root).min_sg, self.n(self.root).max_end);
        if let Some(x) = Self::fit_top(last_end, u64::MAX, low, high, len) {
            return Some(x);
        }
        if let Some(x) = self.search_high(self.root, low, high, len) {
            return Some(x);
        }
        Self::fit_top(0, first_sg, low, high, len)
    }

    /// Bottom-up search (P12): the start of the lowest free interval, clipped to
    /// `[low, high)`, that holds `len` bytes.
    pub fn lowest_gap_start(&self, low: u64, high: u64, len: u64) -> Option<u64> {
        if len == 0 || high <= low {
            return None;
        }
        if self.root == NIL {
            return Self::fit_bottom(0, u64::MAX, low, high, len);
        }
        let (first_sg, last_end) = (self.n(self.root).min_sg, self.n(self.root).max_end);
        if let Some(x) = Self::fit_bottom(0, first_sg, low, high, len) {
            return Some(x);
        }
        if let Some(x) = self.search_low(self.root, low, high, len) {
            return Some(x);
        }
        Self::fit_bottom(last_end, u64::MAX, low, high, len)
    }

    /// Verifies order, non-overlap, the augmented fields and the node count.
    pub fn check(&self) -> Result<(), String> {
        let mut count = 0usize;
        if self.root != NIL {
            self.check_at(self.root, &mut count)?;
        }
        if count != self.len {
            return Err(alloc::format!("len {} but {} nodes", self.len, count));
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

    /// Returns (min_sg, max_end, max_gap) of subtree `t` recomputed from its children (O(n)
    /// over the whole tree) and compares them with the stored values.
    fn check_at(&self, t: u32, count: &mut usize) -> Result<(u64, u64, u64), String> {
        let n = self.n(t);
        *count += 1;
        let v = &self.vmas[t as usize];
        if (n.start, n.end, n.sg) != (v.start, v.end, self.sg(v)) {
            return Err(alloc::format!("stale node keys at {:#x}", v.start));
        }
        let mut min_sg = n.sg;
        let mut max_end = n.end;
        let mut max_gap = 0u64;
        if n.left != NIL {
            if self.n(n.left).prio > n.prio || self.n(n.left).start >= n.start {
                return Err(String::from("left child order violated"));
            }
            let (lmin, lend, lgap) = self.check_at(n.left, count)?;
            min_sg = lmin;
            max_gap = max_gap.max(lgap).max(n.sg.saturating_sub(lend));
        }
        if n.right != NIL {
            if self.n(n.right).prio > n.prio || self.n(n.right).start <= n.start {
                return Err(String::from("right child order violated"));
            }
            let (rmin, rend, rgap) = self.check_at(n.right, count)?;
            max_end = rend;
            max_gap = max_gap.max(rgap).max(rmin.saturating_sub(n.end));
        }
        if (n.min_sg, n.max_end, n.max_gap) != (min_sg, max_end, max_gap) {
            return Err(alloc::format!(
                "augment mismatch at {:#x}: stored ({:#x},{:#x},{:#x}) real ({:#x},{:#x},{:#x})",
                n.start,
                n.min_sg,
                n.max_end,
                n.max_gap,
                min_sg,
                max_end,
                max_gap
            ));
        }
        Ok((min_sg, max_end, max_gap))
    }
}

/// In-order iterator over a [`VmaTree`].
pub struct Iter<'a> {
    tree: &'a VmaTree,
    stack: Vec<u32>,
}

impl<'a> Iter<'a> {
    fn push_left(&mut self, mut t: u32) {
        while t != NIL {
            self.stack.push(t);
            t = self.tree.n(t).left;
        }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Vma;
    fn next(&mut self) -> Option<&'a Vma> {
        let t = self.stack.pop()?;
        self.push_left(self.tree.n(t).right);
        Some(&self.tree.vmas[t as usize])
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
