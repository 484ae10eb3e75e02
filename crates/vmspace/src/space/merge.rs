//! VMA merging (G1–G18): the compatibility predicate, merging a new range with its
//! neighbours (vma_merge_new_range), and changing flags on part of a VMA with merge-or-split
//! (vma_modify).

use super::vma::{flags::*, AnonVmaId, Backing, Vma};
use super::{AddressSpace, Errno};

/// Same vm_file (G3): anonymous with anonymous, the same file/shmem object; never special.
pub fn same_file(a: &Backing, b: &Backing) -> bool {
    match (a, b) {
        (Backing::Anon, Backing::Anon) => true,
        (Backing::File { id: x }, Backing::File { id: y }) => x == y,
        (Backing::Shmem { obj: x }, Backing::Shmem { obj: y }) => x == y,
        _ => false,
    }
}

/// is_mergeable_vma (G2, G3, G5): flags equal ignoring VM_SOFTDIRTY, same file, not special.
pub fn is_mergeable(tgt: &Vma, flags: u64, backing: &Backing) -> bool {
    (tgt.flags ^ flags) & !VM_SOFTDIRTY == 0
        && flags & VM_SPECIAL == 0
        && same_file(&tgt.backing, backing)
}

/// is_mergeable_anon_vma (G6, 6.16+): `src` is the anon_vma of the range being placed.
pub fn anon_ok(tgt: &Vma, src: Option<AnonVmaId>, src_forked: bool) -> bool {
    match (tgt.anon_vma, src) {
        (None, Some(_)) => !src_forked,
        (Some(_), None) => !tgt.forked,
        (a, b) => a == b,
    }
}

/// are_anon_vmas_compatible (G7).
pub fn anon_compatible(a: &Vma, b: &Vma) -> bool {
    a.anon_vma.is_none() || b.anon_vma.is_none() || a.anon_vma == b.anon_vma
}

/// Whether two adjacent VMAs are ones Linux would merge if the right one were placed or
/// changed next to the left one (G1–G6).
pub fn would_merge(a: &Vma, b: &Vma) -> bool {
    a.end == b.start
        && is_mergeable(a, b.flags, &b.backing)
        && a.pgoff.wrapping_add(a.pages()) == b.pgoff
        && anon_ok(a, b.anon_vma, b.forked)
}

/// The range being placed or changed: what the merge predicates compare against.
pub(crate) struct Proposal<'a> {
    pub start: u64,
    pub end: u64,
    pub flags: u64,
    pub pgoff: u64,
    pub backing: &'a Backing,
    pub anon: Option<AnonVmaId>,
    pub forked: bool,
}

impl AddressSpace {
    fn can_merge_left(&self, prev: Option<&Vma>, p: &Proposal) -> bool {
        match prev {
            Some(pv) => {
                pv.end == p.start
                    && is_mergeable(pv, p.flags, p.backing)
                    && anon_ok(pv, p.anon, p.forked)
                    && pv.pgoff.wrapping_add(pv.pages()) == p.pgoff
            }
            None => false,
        }
    }

    fn can_merge_right(
        &self,
        prev: Option<&Vma>,
        next: Option<&Vma>,
        p: &Proposal,
        left: bool,
    ) -> bool {
        let nx = match next {
            Some(n) => n,
            None => return false,
        };
        if nx.start != p.end
            || !is_mergeable(nx, p.flags, p.backing)
            || !anon_ok(nx, p.anon, p.forked)
            || nx.pgoff != p.pgoff.wrapping_add((p.end - p.start) >> 12)
        {
            return false;
        }
        if !left {
            return true;
        }
        prev.is_some_and(|pv| anon_compatible(pv, nx))
    }

    /// vma_merge_new_range (G11, G14): places `[p.start, p.end)` (which must be free) by
    /// extending a neighbour if possible, else inserts a new VMA built by `make`. Returns the
    /// start of the VMA now covering the range. With `just_expand` only the previous VMA is
    /// considered (brk, G13).
    pub(crate) fn place_new_range(&mut self, p: &Proposal, just_expand: bool, make: Vma) -> u64 {
        // The range is free, so the first VMA starting above p.start is the next one.
        let (prev, next) = self.tree.neighbours(p.start);
        let prev = prev.filter(|v| v.end == p.start).cloned();
        let next = if just_expand {
            None
        } else {
            next.filter(|v| v.start == p.end).cloned()
        };
        let special = p.flags & VM_SPECIAL != 0;
        let left = !special && self.can_merge_left(prev.as_ref(), p);
        let right = !special && self.can_merge_right(prev.as_ref(), next.as_ref(), p, left);
        match (left, right, prev, next) {
            (true, true, Some(pv), Some(nx)) => {
                let anon = pv.anon_vma.or(nx.anon_vma).or(p.anon);
                self.tree.update(pv.start, |v| {
                    v.end = nx.end;
                    v.anon_vma = anon;
                });
                self.tree.remove(nx.start);
                pv.start
            }
            (true, _, Some(pv), _) => {
                let anon = pv.anon_vma.or(p.anon);
                self.tree.update(pv.start, |v| {
                    v.end = p.end;
                    v.anon_vma = anon;
                });
                pv.start
            }
            (false, true, _, Some(nx)) => {
                let anon = nx.anon_vma.or(p.anon);
                let (s, pg) = (p.start, p.pgoff);
                self.tree.update(nx.start, |v| {
                    v.start = s;
                    v.pgoff = pg;
                    v.anon_vma = anon;
                });
                p.start
            }
            _ => {
                let s = make.start;
                self.tree.insert(make);
                s
            }
        }
    }

    /// vma_modify (G12): gives `[start, end)` — inside the VMA starting at `vstart` — the
    /// flags `new_flags`, merging with a neighbour when the range touches that edge, else
    /// splitting (each split needs a free map_count slot: ENOMEM, with earlier splits kept).
    /// Returns the start of the VMA now holding the range.
    pub(crate) fn modify_flags(
        &mut self,
        vstart: u64,
        start: u64,
        end: u64,
        new_flags: u64,
    ) -> Result<u64, Errno> {
        let mid = match self.tree.containing(vstart) {
            Some(v) => v.clone(),
            None => return Err(Errno::ENOMEM),
        };
        let left_side = start == mid.start;
        let right_side = end == mid.end;
        if new_flags & VM_SPECIAL == 0 && (left_side || right_side) {
            let p = Proposal {
                start,
                end,
                flags: new_flags,
                pgoff: mid.pgoff_of(start),
                backing: &mid.backing,
                anon: mid.anon_vma,
                forked: mid.forked,
            };
            let (prev, next) = self.tree.neighbours(mid.start);
            let prev = prev.filter(|v| v.end == start).cloned();
            let next = next.filter(|v| v.start == end).cloned();
            let left = left_side && self.can_merge_left(prev.as_ref(), &p);
            let right = right_side && self.can_merge_right(prev.as_ref(), next.as_ref(), &p, left);
            if left || right {
                return Ok(self.apply_modify_merge(&mid, start, end, left, right, prev, next));
            }
        }
        let mut cur = mid.start;
        if mid.start < start {
            self.split_vma_checked(mid.start, start)?;
            cur = start;
        }
        if end < mid.end {
            self.split_vma_checked(cur, end)?;
        }
        self.tree.update(cur, |v| v.flags = new_flags);
        Ok(cur)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_modify_merge(
        &mut self,
        mid: &Vma,
        start: u64,
        end: u64,
        left: bool,
        right: bool,
        prev: Option<Vma>,
        next: Option<Vma>,
    ) -> u64 {
        let whole = start == mid.start && end == mid.end;
        match (left, right, prev, next) {
            (true, true, Some(pv), Some(nx)) => {
                // prev + middle + next (the whole middle). Growing before removing keeps the
                // tree from seeing a transient gap (which would cost gap rescans).
                let anon = pv.anon_vma.or(mid.anon_vma).or(nx.anon_vma);
                self.tree.update(pv.start, |v| {
                    v.end = nx.end;
                    v.anon_vma = anon;
                });
                self.tree.remove(mid.start);
                self.tree.remove(nx.start);
                pv.start
            }
            (true, _, Some(pv), _) => {
                let anon = pv.anon_vma.or(mid.anon_vma);
                self.tree.update(pv.start, |v| {
                    v.end = end;
                    v.anon_vma = anon;
                });
                if whole {
                    self.tree.remove(mid.start);
                } else {
                    let pg = mid.pgoff_of(end);
                    self.tree.update(mid.start, |v| {
                        v.start = end;
                        v.pgoff = pg;
                    });
                }
                pv.start
            }
            (false, true, _, Some(nx)) => {
                let anon = nx.anon_vma.or(mid.anon_vma);
                let pg = mid.pgoff_of(start);
                let nx_start = nx.start;
                if whole {
                    // nx takes mid's start key only after mid left the tree.
                    self.tree.remove(mid.start);
                } else {
                    self.tree.update(nx_start, |v| {
                        v.start = start;
                        v.pgoff = pg;
                        v.anon_vma = anon;
                    });
                    self.tree.update(mid.start, |v| v.end = start);
                    return start;
                }
                self.tree.update(nx_start, |v| {
                    v.start = start;
                    v.pgoff = pg;
                    v.anon_vma = anon;
                });
                start
            }
            _ => mid.start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64, flags: u64) -> Vma {
        Vma {
            start,
            end,
            flags,
            pgoff: start >> 12,
            backing: Backing::Anon,
            anon_vma: None,
            forked: false,
        }
    }

    #[test]
    fn g2_softdirty_ignored_account_not() {
        let rw = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;
        let a = anon(0x10000, 0x11000, rw | VM_ACCOUNT);
        let b = anon(0x11000, 0x12000, rw | VM_ACCOUNT | VM_SOFTDIRTY);
        assert!(would_merge(&a, &b));
        let c = anon(0x11000, 0x12000, rw);
        assert!(!would_merge(&a, &c));
    }

    #[test]
    fn g4_pgoff_continuity_and_g6_anon() {
        let rw = VM_READ | VM_WRITE;
        let a = anon(0x10000, 0x11000, rw);
        let mut b = anon(0x11000, 0x12000, rw);
        b.pgoff = 0x500;
        assert!(!would_merge(&a, &b));
        let mut a1 = anon(0x10000, 0x11000, rw);
        let mut b1 = anon(0x11000, 0x12000, rw);
        a1.anon_vma = Some(1);
        b1.anon_vma = Some(2);
        assert!(!would_merge(&a1, &b1));
        b1.anon_vma = None;
        assert!(would_merge(&a1, &b1));
        a1.forked = true;
        assert!(!would_merge(&a1, &b1));
    }

    #[test]
    fn g5_special_never_merges() {
        let f = VM_READ | VM_IO;
        assert!(!would_merge(
            &anon(0x1000, 0x2000, f),
            &anon(0x2000, 0x3000, f)
        ));
    }
}
