//! Property tests of the buddy frame allocator against a plain model: a set of usable frames,
//! a set of reserved frames and the list of blocks handed out.
//!
//! After every step: the allocator's own invariant check passes, allocated blocks are aligned,
//! inside usable non-reserved memory and disjoint, counts agree with the model, an
//! `OutOfMemory` happens only when no aligned free run of the order exists, and a rejected
//! free changes nothing. After freeing everything, the free lists hold exactly the maximal
//! aligned blocks of each free run (full coalescing).

use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use vmspace::addr::{Frame, FrameRange, PhysAddr};
use vmspace::phys::{
    metadata_len, BuddyAllocator, FrameAllocator, FrameInfo, PhysError, MAX_ORDER, ORDERS,
};

/// Frame numbers the generated maps live in.
const SPACE: u64 = 3072;

type Buddy = BuddyAllocator<Vec<FrameInfo>>;

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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop_oneof![4 => 0u8..3, 2 => 3u8..=MAX_ORDER, 1 => Just(MAX_ORDER + 1)].prop_map(Op::Alloc),
        4 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::Share),
        1 => any::<usize>().prop_map(Op::Put),
        2 => (0..SPACE + 64, 0..=MAX_ORDER + 1).prop_map(|(p, o)| Op::Arbitrary(p, o)),
        1 => (any::<usize>(), 0..=MAX_ORDER).prop_map(|(i, o)| Op::Wrong(i, o)),
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
    live: HashMap<u64, (u8, u32)>,
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
            live: HashMap::new(),
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
        let mut v: Vec<(u64, u8)> = self.live.iter().map(|(&p, &(o, _))| (p, o)).collect();
        v.sort_unstable();
        v
    }

    fn pick(&self, i: usize) -> Option<(u64, u8, u32)> {
        let v = self.sorted_live();
        if v.is_empty() {
            return None;
        }
        let (p, o) = v[i % v.len()];
        Some((p, o, self.live[&p].1))
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
fn snapshot(a: &Buddy) -> (String, Vec<Option<FrameInfo>>, Vec<Vec<u64>>) {
    let infos = (0..SPACE).map(|p| a.frame_info(f(p)).copied()).collect();
    let lists = (0..=MAX_ORDER)
        .map(|o| a.free_blocks(o).map(|fr| fr.number()).collect())
        .collect();
    (format!("{:?}", a.stats()), infos, lists)
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
    let before = snapshot(a);
    let got = a.deallocate(f(pfn), order);
    prop_assert_eq!(got, want);
    if got.is_ok() {
        m.live.remove(&pfn);
        m.set_taken(pfn, order, false);
    } else {
        prop_assert!(
            snapshot(a) == before,
            "a rejected free changed the allocator"
        );
    }
    Ok(())
}

fn run(usable: &[(u64, u64)], reserved: &[(u64, u64)], ops: &[Op]) -> Result<(), TestCaseError> {
    let ur: Vec<FrameRange> = usable.iter().map(|&(s, l)| fr(s, l)).collect();
    let rr: Vec<FrameRange> = reserved.iter().map(|&(s, l)| fr(s, l)).collect();
    let n = metadata_len(&ur).unwrap();
    let mut a: Buddy = BuddyAllocator::new(&ur, &rr, vec![FrameInfo::EMPTY; n]).unwrap();
    let mut m = Model::new(usable, reserved);
    for blocks in a.stats().free_blocks.iter().zip(m.maximal_blocks()) {
        prop_assert_eq!(*blocks.0, blocks.1.len() as u64);
    }
    check(&a, &m)?;
    for op in ops {
        match *op {
            Op::Alloc(order) => match a.allocate(order) {
                Ok(fr) => {
                    prop_assert!(order <= MAX_ORDER);
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
    // Free everything: the lists must then hold exactly the maximal blocks of each run.
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
