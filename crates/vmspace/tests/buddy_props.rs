//! Property tests of the buddy frame allocator against a plain model: a set of usable frames,
//! a set of reserved frames and the list of blocks handed out.
//!
//! Blocks are also shared, put and split into single frames, and reserved frames released. After every step: the
//! allocator's own invariant check passes, allocated blocks are aligned,
//! inside usable non-reserved memory and disjoint, counts agree with the model, an
//! `OutOfMemory` happens only when no aligned free run of the order exists, an allocation
//! returns the lowest free block of the smallest order that has one, and a rejected
//! free changes nothing. After freeing everything, the free blocks are exactly the maximal
//! aligned blocks of each free run (full coalescing).

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use vmspace::addr::{Frame, FrameRange, PhysAddr};
use vmspace::phys::{metadata_len, BuddyAllocator, FrameAllocator, PhysError, MAX_ORDER, ORDERS};

/// Frame numbers the generated maps live in.
const SPACE: u64 = 3072;

type Buddy = BuddyAllocator<Vec<u64>>;

fn fr(start: u64, count: u64) -> FrameRange {
    FrameRange::new(Frame::from_number(start).unwrap(), count).unwrap()
}

fn f(pfn: u64) -> Frame {
    Frame::from_number(pfn).unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    /// Allocate a block of this order (11 is one past `MAX_ORDER`).
    Alloc(u8),
    /// Free the live block picked by the index (modulo the live count) with its order.
    Free(usize),
    /// Add an owner to the picked live block.
    Share(usize),
    /// Drop an owner of the picked live block, freeing it with the last.
    Put(usize),
    /// Free an arbitrary frame with an arbitrary order: usually rejected.
    Arbitrary(u64, u8),
    /// Free the picked live block with a wrong order, then with its tail frame.
    Wrong(usize, u8),
    /// Split the picked live block into single frames.
    Split(usize),
    /// Release the reserved frames of a range.
    Release(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop_oneof![4 => 0u8..3, 2 => 3u8..=MAX_ORDER, 1 => Just(MAX_ORDER + 1)].prop_map(Op::Alloc),
        4 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::Share),
        1 => any::<usize>().prop_map(Op::Put),
        2 => (0..SPACE + 64, 0..=MAX_ORDER + 1).prop_map(|(p, o)| Op::Arbitrary(p, o)),
        1 => (any::<usize>(), 0..=MAX_ORDER).prop_map(|(i, o)| Op::Wrong(i, o)),
        1 => any::<usize>().prop_map(Op::Split),
        1 => (0..SPACE, 1..64u64).prop_map(|(s, l)| Op::Release(s, l.min(SPACE - s))),
    ]
}

/// Usable ranges (1 to 4, possibly overlapping or touching) and reserved ranges (0 to 3).
/// Ranges as (start pfn, frame count).
type Ranges = Vec<(u64, u64)>;

fn memory_map() -> impl Strategy<Value = (Ranges, Ranges)> {
    let range = |max_len: u64| (0..SPACE, 1..max_len).prop_map(|(s, l)| (s, l.min(SPACE - s)));
    (
        prop::collection::vec(range(1400), 1..=4),
        prop::collection::vec(range(80), 0..=3),
    )
}

struct Model {
    /// Usable and not reserved.
    managed: Vec<bool>,
    usable: Vec<bool>,
    /// Live blocks: head pfn -> (order, refs).
    live: BTreeMap<u64, (u8, u32)>,
    /// Frames of live blocks.
    taken: Vec<bool>,
}

impl Model {
    fn new(usable: &[(u64, u64)], reserved: &[(u64, u64)]) -> Self {
        let mut u = vec![false; SPACE as usize];
        for &(s, l) in usable {
            u[s as usize..(s + l) as usize].fill(true);
        }
        let mut m = u.clone();
        for &(s, l) in reserved {
            m[s as usize..(s + l) as usize].fill(false);
        }
        Model {
            managed: m,
            usable: u,
            live: BTreeMap::new(),
            taken: vec![false; SPACE as usize],
        }
    }

    fn is_free(&self, pfn: u64) -> bool {
        self.managed[pfn as usize] && !self.taken[pfn as usize]
    }

    /// Whether some aligned run of `2^order` free frames exists.
    fn fits(&self, order: u8) -> bool {
        let size = 1u64 << order;
        (0..SPACE / size).any(|b| (b * size..(b + 1) * size).all(|p| self.is_free(p)))
    }

    fn sorted_live(&self) -> Vec<(u64, u8)> {
        self.live.iter().map(|(&p, &(o, _))| (p, o)).collect()
    }

    fn pick(&self, i: usize) -> Option<(u64, u8, u32)> {
        if self.live.is_empty() {
            return None;
        }
        let (&p, &(o, refs)) = self.live.iter().nth(i % self.live.len())?;
        Some((p, o, refs))
    }

    fn set_taken(&mut self, pfn: u64, order: u8, v: bool) {
        self.taken[pfn as usize..(pfn + (1 << order)) as usize].fill(v);
    }

    fn free_frames(&self) -> u64 {
        (0..SPACE).filter(|&p| self.is_free(p)).count() as u64
    }

    /// The maximal aligned blocks of every run of managed frames, per order.
    fn maximal_blocks(&self) -> Vec<BTreeSet<u64>> {
        let mut out = vec![BTreeSet::new(); ORDERS];
        let mut p = 0;
        while p < SPACE {
            if !self.managed[p as usize] {
                p += 1;
                continue;
            }
            let mut order = 0u8;
            while order < MAX_ORDER {
                let size = 2u64 << order;
                if p % size != 0 || p + size > SPACE {
                    break;
                }
                if !(p..p + size).all(|q| self.managed[q as usize]) {
                    break;
                }
                order += 1;
            }
            out[order as usize].insert(p);
            p += 1 << order;
        }
        out
    }
}

/// Everything observable about the allocator, to show that a rejected call changed nothing.
/// Every metadata word is compared, so every `frame_info` is the same too.
fn snapshot(a: &Buddy) -> (String, Vec<u64>, Vec<Vec<u64>>) {
    let lists = (0..=MAX_ORDER)
        .map(|o| a.free_blocks(o).map(|fr| fr.number()).collect())
        .collect();
    (format!("{:?}", a.stats()), a.metadata().to_vec(), lists)
}

fn check(a: &Buddy, m: &Model) -> Result<(), TestCaseError> {
    if let Err(e) = a.check_invariants() {
        return Err(TestCaseError::fail(format!("{e}")));
    }
    let s = a.stats();
    prop_assert_eq!(s.free_frames, m.free_frames());
    let allocated: u64 = m.live.values().map(|&(o, _)| 1u64 << o).sum();
    prop_assert_eq!(s.allocated_frames, allocated);
    prop_assert_eq!(
        s.total_frames,
        m.usable.iter().filter(|&&u| u).count() as u64
    );
    for (&p, &(o, refs)) in &m.live {
        prop_assert_eq!(a.ref_count(f(p)), Ok(refs));
        prop_assert_eq!(a.frame_info(f(p)).map(|i| i.order()), Some(o));
    }
    Ok(())
}

/// What a free of `(pfn, order)` must return, following the allocator's documented order of
/// checks: order, range, alignment, then the state of the frame.
fn expected_free(m: &Model, pfn: u64, order: u8) -> Result<(), PhysError> {
    let addr = PhysAddr::new(pfn << 12);
    if order > MAX_ORDER {
        return Err(PhysError::BadOrder(order));
    }
    if pfn >= SPACE || !m.usable[pfn as usize] {
        return Err(PhysError::OutOfRange {
            addr,
            len: 4096 << order,
        });
    }
    if pfn % (1 << order) != 0 {
        return Err(PhysError::Misaligned(addr));
    }
    match m.live.get(&pfn) {
        Some(&(o, _)) if o == order => Ok(()),
        Some(&(o, _)) => Err(PhysError::WrongOrder {
            addr,
            allocated: o,
            freed: order,
        }),
        None => Err(PhysError::NotAllocated(addr)),
    }
}

fn free_checked(a: &mut Buddy, m: &mut Model, pfn: u64, order: u8) -> Result<(), TestCaseError> {
    let want = expected_free(m, pfn, order);
    let before = want.is_err().then(|| snapshot(a));
    let got = a.deallocate(f(pfn), order);
    prop_assert_eq!(got, want);
    match before {
        None => {
            m.live.remove(&pfn);
            m.set_taken(pfn, order, false);
        }
        Some(before) => {
            prop_assert!(
                snapshot(a) == before,
                "a rejected free changed the allocator"
            );
        }
    }
    Ok(())
}

fn run(usable: &[(u64, u64)], reserved: &[(u64, u64)], ops: &[Op]) -> Result<(), TestCaseError> {
    let ur: Vec<FrameRange> = usable.iter().map(|&(s, l)| fr(s, l)).collect();
    let rr: Vec<FrameRange> = reserved.iter().map(|&(s, l)| fr(s, l)).collect();
    let n = metadata_len(&ur).unwrap();
    let mut a: Buddy = BuddyAllocator::new(&ur, &rr, vec![0; n]).unwrap();
    let mut m = Model::new(usable, reserved);
    for blocks in a.stats().free_blocks.iter().zip(m.maximal_blocks()) {
        prop_assert_eq!(*blocks.0, blocks.1.len() as u64);
    }
    check(&a, &m)?;
    for op in ops {
        let a_before: Vec<Option<u64>> = (0..=MAX_ORDER)
            .map(|o| a.free_blocks(o).next().map(|fr| fr.number()))
            .collect();
        match *op {
            Op::Alloc(order) => match a.allocate(order) {
                Ok(fr) => {
                    prop_assert!(order <= MAX_ORDER);
                    // Best fit, lowest address first: the lowest free block of the smallest
                    // order that has one (split, its lowest part is handed out).
                    let want = (order..=MAX_ORDER).find_map(|o| a_before[o as usize]);
                    prop_assert_eq!(Some(fr.number()), want, "not the lowest best-fit block");
                    let p = fr.number();
                    prop_assert_eq!(p % (1 << order), 0, "block not aligned");
                    prop_assert!(p + (1 << order) <= SPACE);
                    for q in p..p + (1 << order) {
                        prop_assert!(m.managed[q as usize], "handed out unmanaged frame {}", q);
                        prop_assert!(!m.taken[q as usize], "frame {} handed out twice", q);
                    }
                    m.set_taken(p, order, true);
                    m.live.insert(p, (order, 1));
                }
                Err(PhysError::BadOrder(o)) => prop_assert!(o == order && o > MAX_ORDER),
                Err(PhysError::OutOfMemory { order: o }) => {
                    prop_assert_eq!(o, order);
                    prop_assert!(!m.fits(order), "spurious OutOfMemory at order {}", order);
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
            },
            Op::Free(i) => {
                if let Some((p, o, _)) = m.pick(i) {
                    free_checked(&mut a, &mut m, p, o)?;
                }
            }
            Op::Share(i) => {
                if let Some((p, _, refs)) = m.pick(i) {
                    prop_assert_eq!(a.inc_ref(f(p)), Ok(refs + 1));
                    m.live.get_mut(&p).unwrap().1 += 1;
                }
            }
            Op::Put(i) => {
                if let Some((p, o, refs)) = m.pick(i) {
                    if refs == 1 {
                        prop_assert_eq!(a.put(f(p)), Ok(Some(o)));
                        m.live.remove(&p);
                        m.set_taken(p, o, false);
                    } else {
                        prop_assert_eq!(a.put(f(p)), Ok(None));
                        m.live.get_mut(&p).unwrap().1 -= 1;
                    }
                }
            }
            Op::Arbitrary(p, o) => free_checked(&mut a, &mut m, p, o)?,
            Op::Release(start, len) => {
                let mut want = 0;
                for q in start..start + len {
                    if m.usable[q as usize] && !m.managed[q as usize] {
                        m.managed[q as usize] = true;
                        want += 1;
                    }
                }
                prop_assert_eq!(a.release_reserved(fr(start, len)), want);
            }
            Op::Split(i) => {
                if let Some((p, o, refs)) = m.pick(i) {
                    prop_assert_eq!(a.split_allocated(f(p), o), Ok(()));
                    for k in 0..1u64 << o {
                        m.live.insert(p + k, (0, refs));
                    }
                }
            }
            Op::Wrong(i, o) => {
                if let Some((p, order, _)) = m.pick(i) {
                    if o != order {
                        free_checked(&mut a, &mut m, p, o)?;
                    }
                    if order > 0 {
                        free_checked(&mut a, &mut m, p + (1 << order) - 1, 0)?;
                    }
                }
            }
        }
        check(&a, &m)?;
    }
    // Free everything: the free blocks must then be exactly the maximal blocks of each run.
    for (p, o) in m.sorted_live() {
        free_checked(&mut a, &mut m, p, o)?;
        check(&a, &m)?;
    }
    prop_assert_eq!(a.stats().allocated_frames, 0);
    let want = m.maximal_blocks();
    for order in 0..=MAX_ORDER {
        let got: BTreeSet<u64> = a.free_blocks(order).map(|fr| fr.number()).collect();
        prop_assert_eq!(&got, &want[order as usize], "order {}", order);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_maps_and_operations((usable, reserved) in memory_map(),
                                  ops in prop::collection::vec(op(), 0..160)) {
        run(&usable, &reserved, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn pc_memory_map(ops in prop::collection::vec(op(), 0..250)) {
        // RAM 0..640 KiB and 1 MiB..12 MiB, the zero page and 1 MiB..1 MiB+256 KiB reserved.
        run(&[(0, 160), (256, 2816)], &[(0, 1), (256, 64)], &ops)?;
    }
}

#[test]
fn fill_and_drain_whole_pool_in_order_0() {
    // Every frame allocated one by one, then freed in an interleaved order that coalesces
    // from the middle out: the pool ends as its maximal blocks again.
    let usable = [(0, 160), (256, 2816)];
    let reserved = [(0, 1)];
    let ops: Vec<Op> = (0..3000)
        .map(|_| Op::Alloc(0))
        .chain((0..3000).map(|i| Op::Free(i * 7919)))
        .collect();
    run(&usable, &reserved, &ops).unwrap();
}

/// The last frame number below 2^64.
const TOP_PFN: u64 = u64::MAX >> 12;

/// A range of at most `max_len` frames anywhere below 2^64, often touching the top.
fn anywhere(max_len: u64) -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (0..=TOP_PFN, 0..max_len).prop_map(|(s, l)| (s, l.min(TOP_PFN + 1 - s))),
        (0..max_len, 0..max_len).prop_map(|(back, l)| {
            let s = TOP_PFN - back;
            (s, l.min(TOP_PFN + 1 - s))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Maps anywhere in the 64-bit space, reserved ranges of any size: construction never
    /// panics, counts what it should, and every managed frame can be allocated and freed.
    #[test]
    fn maps_anywhere_up_to_the_top(
        usable in prop::collection::vec(anywhere(600), 0..5),
        reserved in prop::collection::vec(
            prop_oneof![anywhere(300), (0..=TOP_PFN).prop_map(|s| (s, TOP_PFN + 1 - s))],
            0..3,
        ),
    ) {
        let ur: Vec<FrameRange> = usable.iter().map(|&(s, l)| fr(s, l)).collect();
        let rr: Vec<FrameRange> = reserved.iter().map(|&(s, l)| fr(s, l)).collect();
        let usable_set: BTreeSet<u64> = usable.iter().flat_map(|&(s, l)| s..s + l).collect();
        let reserved_n = usable_set
            .iter()
            .filter(|&&p| reserved.iter().any(|&(s, l)| p >= s && p - s < l))
            .count() as u64;
        let n = metadata_len(&ur).unwrap();
        // Storage contents do not matter: start from garbage.
        let mut a: Buddy = BuddyAllocator::new(&ur, &rr, vec![u64::MAX; n]).unwrap();
        prop_assert!(a.check_invariants().is_ok());
        let s = a.stats();
        prop_assert_eq!(s.total_frames, usable_set.len() as u64);
        prop_assert_eq!(s.reserved_frames, reserved_n);
        let mut got = Vec::new();
        while let Ok(f) = a.allocate(0) {
            prop_assert!(usable_set.contains(&f.number()));
            got.push(f);
        }
        prop_assert_eq!(got.len() as u64, s.free_frames);
        for f in got {
            prop_assert_eq!(a.deallocate(f, 0), Ok(()));
        }
        prop_assert!(a.check_invariants().is_ok());
        prop_assert_eq!(a.stats(), s);
        // Frees beyond the top or in holes are rejected, never a panic.
        prop_assert!(a.deallocate(f(TOP_PFN), MAX_ORDER).is_err());
    }
}
