//! Property tests of the vmem arena against a brute-force model: random alloc/free with every
//! policy and constraint, direct spans and imports from a parent, quantum caches, fixed
//! (no-heap) stores; bad frees; everything must coalesce back and be returned to the parent.

use proptest::prelude::*;
use vmspace::range::{Arena, ArenaError, Constraints, HeapArena, Kind, NoParent, Policy, Tag};

const Q: u64 = 0x1000;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        quanta: u64,
        policy: u8,
        align_log: u8,
        phase_q: u64,
        nocross_log: u8,
        min_q: u64,
        max_q: u64,
    },
    Free(usize),
    BadFree(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..20, 0u8..3, 0u8..5, 0u64..16, 0u8..8, 0u64..300, 0u64..300).prop_map(
            |(quanta, policy, align_log, phase_q, nocross_log, min_q, max_q)| Op::Alloc {
                quanta, policy, align_log, phase_q, nocross_log, min_q, max_q
            }
        ),
        3 => any::<usize>().prop_map(Op::Free),
        1 => (any::<usize>(), 0u8..4).prop_map(|(i, k)| Op::BadFree(i, k)),
    ]
}

fn policy(p: u8) -> Policy {
    [Policy::InstantFit, Policy::BestFit, Policy::NextFit][p as usize % 3]
}

/// Builds constraints relative to `base`; about half the ops are unconstrained.
fn constraints(base: u64, o: &Op) -> Constraints {
    let Op::Alloc {
        quanta,
        align_log,
        phase_q,
        nocross_log,
        min_q,
        max_q,
        ..
    } = *o
    else {
        unreachable!()
    };
    let mut c = Constraints::default();
    if align_log > 0 {
        c.align = Q << align_log;
        c.phase = (phase_q * Q) % c.align;
    }
    if nocross_log >= 4 {
        let n = (Q << nocross_log).max((quanta * Q).next_power_of_two());
        c.nocross = n.max(c.align);
    }
    if min_q > 150 {
        c.minaddr = base + (min_q - 150) * Q;
    }
    if max_q > 150 {
        c.maxaddr = base + (max_q + 100) * Q - 1;
    }
    c
}

fn satisfies(start: u64, size: u64, c: &Constraints) -> bool {
    let align = c.align.max(Q);
    let end = start as u128 + size as u128;
    start % align == c.phase
        && (c.nocross == 0 || start / c.nocross == ((end - 1) as u64) / c.nocross)
        && start >= c.minaddr
        && end - 1 <= c.maxaddr as u128
}

/// Checks the arena's segment list: each span tiled exactly by its segments, no two free
/// neighbours, and allocated segments equal to the model plus the cached ones.
fn check_structure<T, H, P>(a: &Arena<T, H, P>, live: &[(u64, u64)])
where
    T: vmspace::range::Store<Tag>,
    H: vmspace::range::Store<u32>,
    P: vmspace::range::Source,
{
    let segs: Vec<_> = a.segments().collect();
    let mut i = 0;
    let mut allocs = Vec::new();
    while i < segs.len() {
        let span = segs[i];
        assert!(matches!(span.kind, Kind::Span | Kind::Imported), "{segs:?}");
        let mut at = span.start as u128;
        let mut prev_free = false;
        i += 1;
        while i < segs.len() && matches!(segs[i].kind, Kind::Free | Kind::Alloc) {
            let s = segs[i];
            assert_eq!(s.start as u128, at, "segments tile the span");
            let free = s.kind == Kind::Free;
            assert!(!(free && prev_free), "free neighbours not coalesced");
            if !free {
                allocs.push((s.start, s.size));
            }
            prev_free = free;
            at += s.size as u128;
            i += 1;
        }
        assert_eq!(
            at,
            span.start as u128 + span.size as u128,
            "span fully tiled"
        );
        if span.kind == Kind::Imported {
            assert!(
                !(prev_free && segs[i - 1].size == span.size),
                "wholly free imported span kept"
            );
        }
    }
    let model: u128 = live.iter().map(|&(_, s)| s as u128).sum();
    assert_eq!(a.allocated_bytes(), model + a.cached_bytes());
    for l in live {
        assert!(
            allocs.contains(l),
            "model segment {l:?} not allocated in arena"
        );
    }
    assert_eq!(allocs.len(), a.allocated_segments());
}

/// Free gaps of the model inside the spans `[lo, hi)` list.
fn gaps(spans: &[(u64, u64)], live: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, len) in spans {
        let mut inside: Vec<_> = live
            .iter()
            .filter(|&&(a, _)| a >= s && a < s + len)
            .copied()
            .collect();
        inside.sort();
        let mut at = s;
        for (a, l) in inside {
            if a > at {
                out.push((at, a - at));
            }
            at = a + l;
        }
        if at < s + len {
            out.push((at, s + len - at));
        }
    }
    out
}

fn fits_in_gap(g: (u64, u64), size: u64, c: &Constraints) -> bool {
    let mut s = g.0;
    while s as u128 + size as u128 <= g.0 as u128 + g.1 as u128 {
        if satisfies(s, size, c) {
            return true;
        }
        s += Q;
    }
    false
}

/// Runs ops on an arena with direct spans (small, so the brute force can check NoSpace and
/// best fit exactly) and no quantum cache.
fn run_direct(ops: &[Op]) {
    let spans = [(0x10_0000u64, 256 * Q), (0x100_0000u64, 64 * Q)];
    let mut a = HeapArena::on_heap(Q, Policy::InstantFit, NoParent).unwrap();
    for &(s, l) in &spans {
        a.add_span(s, l).unwrap();
    }
    let mut live: Vec<(u64, u64)> = Vec::new();
    for o in ops {
        match o {
            Op::Alloc {
                quanta, policy: p, ..
            } => {
                let size = quanta * Q;
                let c = constraints(spans[0].0, o);
                let before: Vec<_> = a.segments().collect();
                match a.xalloc(size, c, policy(*p)) {
                    Ok(start) => {
                        assert!(satisfies(start, size, &c), "{start:#x} {size:#x} {c:?}");
                        let g = gaps(&spans, &live);
                        let home = g
                            .iter()
                            .find(|&&(gs, gl)| start >= gs && start + size <= gs + gl)
                            .copied()
                            .expect("allocation inside a free gap (no overlap)");
                        if policy(*p) == Policy::BestFit {
                            let best = g
                                .iter()
                                .filter(|&&gg| fits_in_gap(gg, size, &c))
                                .map(|gg| gg.1)
                                .min()
                                .unwrap();
                            assert_eq!(home.1, best, "best fit picks the smallest gap");
                        }
                        live.push((start, size));
                    }
                    Err(ArenaError::NoSpace) => {
                        assert!(
                            !gaps(&spans, &live)
                                .iter()
                                .any(|&g| fits_in_gap(g, size, &c)),
                            "NoSpace although a fit exists: {size:#x} {c:?}"
                        );
                        assert_eq!(before, a.segments().collect::<Vec<_>>());
                    }
                    Err(ArenaError::BadConstraint) => {
                        assert!(c.nocross != 0 && c.nocross < size || c.minaddr > c.maxaddr);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Free(i) => {
                if !live.is_empty() {
                    let (s, l) = live.swap_remove(i % live.len());
                    a.free(s, l).unwrap();
                }
            }
            Op::BadFree(i, k) => bad_free(&mut a, &live, *i, *k),
        }
        check_structure(&a, &live);
    }
    for (s, l) in live.drain(..) {
        a.free(s, l).unwrap();
    }
    let segs: Vec<_> = a.segments().collect();
    assert_eq!(
        segs.len(),
        4,
        "each span coalesced back to one free segment: {segs:?}"
    );
    assert_eq!(a.allocated_bytes(), 0);
}

/// A bad free: must be the right typed error and change nothing.
fn bad_free<T, H, P>(a: &mut Arena<T, H, P>, live: &[(u64, u64)], i: usize, k: u8)
where
    T: vmspace::range::Store<Tag>,
    H: vmspace::range::Store<u32>,
    P: vmspace::range::Source,
{
    let before: Vec<_> = a.segments().collect();
    let bytes = a.allocated_bytes();
    let r = if live.is_empty() || k == 0 {
        // Never allocated: far outside every span.
        let r = a.free(0xFFFF_0000_0000, Q);
        assert_eq!(r, Err(ArenaError::NotAllocated));
        r
    } else {
        let (s, l) = live[i % live.len()];
        match k {
            1 => {
                let r = a.free(s, l + Q);
                assert_eq!(r, Err(ArenaError::WrongSize { allocated: l }));
                r
            }
            2 => {
                let r = a.free(s + 1, l);
                assert_eq!(r, Err(ArenaError::Misaligned));
                r
            }
            _ => {
                let r = a.free(s, 0);
                assert_eq!(r, Err(ArenaError::ZeroSize));
                r
            }
        }
    };
    assert!(r.is_err());
    assert_eq!(before, a.segments().collect::<Vec<_>>());
    assert_eq!(bytes, a.allocated_bytes());
}

/// Runs ops on a child arena importing from a parent, with quantum caches; at the end every
/// span must be back in the parent.
fn run_imported(ops: &[Op], qcache: bool, fixed: bool) {
    let mut ptags = vec![Tag::EMPTY; 4096];
    let mut pbuckets = vec![0u32; 64];
    let mut parent = Arena::new(
        &mut ptags[..],
        &mut pbuckets[..],
        Q,
        Policy::InstantFit,
        NoParent,
    )
    .unwrap();
    parent.add_span(0x4000_0000, 0x1000_0000).unwrap();
    let mut ctags = vec![Tag::EMPTY; 4096];
    let mut cbuckets = [0u32; 16];
    let mut heap_child;
    let mut fixed_child;
    macro_rules! body {
        ($child:expr) => {{
            let child = $child;
            child.set_import_quantum(16 * Q).unwrap();
            if qcache {
                child.set_qcache_max(4 * Q).unwrap();
            }
            let mut live: Vec<(u64, u64)> = Vec::new();
            for o in ops {
                match o {
                    Op::Alloc {
                        quanta, policy: p, ..
                    } => {
                        let size = quanta * Q;
                        let c = constraints(0x4000_0000, o);
                        match child.xalloc(size, c, policy(*p)) {
                            Ok(start) => {
                                assert!(satisfies(start, size, &c));
                                for &(s, l) in &live {
                                    assert!(start + size <= s || s + l <= start, "overlap");
                                }
                                live.push((start, size));
                            }
                            Err(ArenaError::NoSpace) => {
                                // Only constrained requests may fail: the parent is huge.
                                assert!(c.minaddr != 0 || c.maxaddr != u64::MAX || c.nocross != 0);
                            }
                            Err(ArenaError::BadConstraint) => {}
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    Op::Free(i) => {
                        if !live.is_empty() {
                            let (s, l) = live.swap_remove(i % live.len());
                            child.free(s, l).unwrap();
                            if qcache && l <= 4 * Q {
                                assert_eq!(child.free(s, l), Err(ArenaError::DoubleFree));
                            }
                        }
                    }
                    Op::BadFree(i, k) => bad_free(child, &live, *i, *k),
                }
                check_structure(child, &live);
                let imported: u128 = child.span_bytes();
                assert_eq!(child.parent().allocated_bytes(), imported);
            }
            for (s, l) in live.drain(..) {
                child.free(s, l).unwrap();
            }
            child.purge_qcaches();
            assert_eq!(child.segments().count(), 0, "all spans returned");
            assert_eq!(child.parent().allocated_bytes(), 0);
        }};
    }
    if fixed {
        fixed_child = Arena::new(
            &mut ctags[..],
            &mut cbuckets[..],
            Q,
            Policy::BestFit,
            &mut parent,
        )
        .unwrap();
        body!(&mut fixed_child);
    } else {
        heap_child = HeapArena::on_heap(Q, Policy::NextFit, &mut parent).unwrap();
        body!(&mut heap_child);
    }
    let segs: Vec<_> = parent.segments().collect();
    assert_eq!(segs.len(), 2, "parent coalesced back: {segs:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn direct_spans_match_model(ops in prop::collection::vec(op(), 1..120)) {
        run_direct(&ops);
    }

    #[test]
    fn imports_and_qcaches_match_model(ops in prop::collection::vec(op(), 1..120), q: bool, fixed: bool) {
        run_imported(&ops, q, fixed);
    }
}

#[test]
fn double_free_after_coalescing_is_typed() {
    let mut a = HeapArena::on_heap(Q, Policy::InstantFit, NoParent).unwrap();
    a.add_span(0, 16 * Q).unwrap();
    let x = a.alloc(2 * Q).unwrap();
    a.free(x, 2 * Q).unwrap();
    assert_eq!(a.free(x, 2 * Q), Err(ArenaError::DoubleFree));
    assert_eq!(a.free(x + Q, Q), Err(ArenaError::DoubleFree));
}

#[test]
fn span_at_the_top_of_the_address_space() {
    let mut a = HeapArena::on_heap(Q, Policy::BestFit, NoParent).unwrap();
    let base = u64::MAX - 4 * Q + 1;
    a.add_span(base, 4 * Q).unwrap();
    assert_eq!(a.add_span(base + Q, 4 * Q), Err(ArenaError::Overflow));
    assert_eq!(a.add_span(base, Q), Err(ArenaError::SpanOverlap));
    let x = a.alloc(4 * Q).unwrap();
    assert_eq!(x, base);
    assert_eq!(a.alloc(Q), Err(ArenaError::NoSpace));
    assert_eq!(a.free(x, 8 * Q), Err(ArenaError::Overflow));
    a.free(x, 4 * Q).unwrap();
    let c = Constraints {
        align: 0x10_0000,
        ..Constraints::default()
    };
    assert_eq!(a.xalloc(Q, c, Policy::InstantFit), Err(ArenaError::NoSpace));
}

#[test]
fn fixed_stores_fail_with_no_tags_and_change_nothing() {
    let mut tags = [Tag::EMPTY; 4];
    let mut buckets = [0u32; 1];
    let mut a = Arena::new(
        &mut tags[..],
        &mut buckets[..],
        Q,
        Policy::InstantFit,
        NoParent,
    )
    .unwrap();
    a.add_span(0, 64 * Q).unwrap();
    let x = a.alloc(Q).unwrap(); // 3 tags: span, alloc, free rest
    let y = a.alloc(Q).unwrap(); // 4 tags
    let before: Vec<_> = a.segments().collect();
    assert_eq!(a.alloc(Q), Err(ArenaError::NoTags));
    assert_eq!(a.add_span(0x100_0000, Q), Err(ArenaError::NoTags));
    assert_eq!(before, a.segments().collect::<Vec<_>>());
    a.free(x, Q).unwrap();
    a.free(y, Q).unwrap();
    assert_eq!(a.segments().count(), 2);
}

#[test]
fn bad_arguments_are_typed() {
    let mut a = HeapArena::on_heap(Q, Policy::InstantFit, NoParent).unwrap();
    assert!(HeapArena::on_heap(3, Policy::InstantFit, NoParent).is_err());
    a.add_span(0x10000, 16 * Q).unwrap();
    assert_eq!(a.alloc(0), Err(ArenaError::ZeroSize));
    assert_eq!(a.alloc(Q + 1), Err(ArenaError::Misaligned));
    assert_eq!(a.add_span(0, 0), Err(ArenaError::ZeroSize));
    assert_eq!(a.add_span(1, Q), Err(ArenaError::Misaligned));
    let bad = |c: Constraints| c;
    let d = Constraints::default();
    assert_eq!(
        a.xalloc(Q, bad(Constraints { align: 3 * Q, ..d }), Policy::BestFit),
        Err(ArenaError::Misaligned)
    );
    assert_eq!(
        a.xalloc(
            Q,
            bad(Constraints {
                align: 2 * Q,
                phase: 2 * Q,
                ..d
            }),
            Policy::BestFit
        ),
        Err(ArenaError::BadConstraint)
    );
    assert_eq!(
        a.xalloc(
            4 * Q,
            bad(Constraints {
                nocross: 2 * Q,
                ..d
            }),
            Policy::BestFit
        ),
        Err(ArenaError::BadConstraint)
    );
    assert_eq!(
        a.xalloc(
            Q,
            bad(Constraints {
                minaddr: 5,
                maxaddr: 4,
                ..d
            }),
            Policy::BestFit
        ),
        Err(ArenaError::BadConstraint)
    );
    assert_eq!(
        a.xalloc(
            2 * Q,
            bad(Constraints {
                minaddr: 0,
                maxaddr: Q,
                ..d
            }),
            Policy::BestFit
        ),
        Err(ArenaError::NoSpace)
    );
    assert_eq!(a.alloc(17 * Q), Err(ArenaError::NoSpace));
    assert_eq!(a.allocated_bytes(), 0);
    let x = a.alloc(4 * Q).unwrap();
    assert_eq!(a.free(x + Q, Q), Err(ArenaError::NotAllocated));
}

#[test]
fn instant_fit_takes_the_next_power_of_two_list() {
    let mut a = HeapArena::on_heap(Q, Policy::InstantFit, NoParent).unwrap();
    // Free segments of 3 and 8 quanta: a 3-quantum request goes to the 4+ list (the 8).
    a.add_span(0, 3 * Q).unwrap();
    a.add_span(0x100_0000, 8 * Q).unwrap();
    assert_eq!(a.alloc(3 * Q).unwrap(), 0x100_0000);
    // No list of 8+ quanta: the fallback scan of the floor list (4..8) finds the 5 left.
    assert_eq!(a.alloc(5 * Q).unwrap(), 0x100_3000);
    // Only the 3-quantum segment is left that fits: found in its floor list (2..4).
    assert_eq!(a.alloc(3 * Q).unwrap(), 0);
    assert_eq!(a.alloc(Q), Err(ArenaError::NoSpace));
}

/// xorshift: a fixed pseudo-random sequence for the larger deterministic tests.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Thousands of segments through several doublings of the allocated-segment hash (and, with
/// a fixed bucket store, long chains instead): every segment is found again on free, wrong
/// sizes and second frees are refused, and everything coalesces back into one free segment.
fn churn_many(a: &mut Arena<impl vmspace::range::Store<Tag>, impl vmspace::range::Store<u32>>) {
    let mut x = 0x2545_F491_4F6C_DD1D;
    let mut live: Vec<(u64, u64)> = Vec::new();
    for round in 0..6000 {
        let size = (xorshift(&mut x) % 16 + 1) * Q;
        let start = a.alloc(size).unwrap();
        for &(s, l) in live.iter().rev().take(4) {
            assert!(start + size <= s || s + l <= start, "overlap");
        }
        live.push((start, size));
        if round % 3 == 2 {
            let (s, l) = live.swap_remove((xorshift(&mut x) % live.len() as u64) as usize);
            assert_eq!(
                a.free(s, l + Q),
                Err(ArenaError::WrongSize { allocated: l })
            );
            a.free(s, l).unwrap();
            assert_eq!(a.free(s, l), Err(ArenaError::DoubleFree));
        }
    }
    assert_eq!(a.allocated_segments(), live.len());
    check_structure(a, &live);
    while !live.is_empty() {
        let (s, l) = live.swap_remove((xorshift(&mut x) % live.len() as u64) as usize);
        a.free(s, l).unwrap();
    }
    let segs: Vec<_> = a.segments().collect();
    assert_eq!(segs.len(), 2, "coalesced back: {segs:?}");
    assert_eq!(a.allocated_bytes(), 0);
}

#[test]
fn thousands_of_segments_through_hash_doublings() {
    for p in [Policy::InstantFit, Policy::BestFit, Policy::NextFit] {
        let mut a = HeapArena::on_heap(Q, p, NoParent).unwrap();
        a.add_span(0x10_0000_0000, 0x10_0000_0000).unwrap();
        churn_many(&mut a);
    }
}

#[test]
fn thousands_of_segments_on_a_fixed_bucket_store() {
    let mut tags = vec![Tag::EMPTY; 8192];
    let mut buckets = [0u32; 16];
    let mut a = Arena::new(
        &mut tags[..],
        &mut buckets[..],
        Q,
        Policy::InstantFit,
        NoParent,
    )
    .unwrap();
    a.add_span(0x10_0000_0000, 0x10_0000_0000).unwrap();
    churn_many(&mut a);
}

#[test]
fn instant_fit_keeps_carving_the_same_remainder() {
    // The remainder of the head segment goes back to the head of its list: consecutive
    // requests come out in address order from the low end of the span.
    let mut a = HeapArena::on_heap(Q, Policy::InstantFit, NoParent).unwrap();
    a.add_span(0x4000_0000, 0x4000_0000).unwrap();
    let mut next = 0x4000_0000;
    for k in 1..=64u64 {
        let size = (k % 7 + 1) * Q;
        assert_eq!(a.alloc(size).unwrap(), next);
        next += size;
    }
    let segs: Vec<_> = a.segments().collect();
    assert_eq!(segs.len(), 66, "span, 64 segments, the remainder");
    let last = segs[65];
    assert_eq!((last.start, last.kind), (next, Kind::Free));
    assert_eq!(last.start + last.size, 0x8000_0000);
}
