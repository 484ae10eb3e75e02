//! Property test: random map / unmap / protect sequences (single pages and ranges, 4 KiB and
//! large pages, occasional frame shortages) on i386 and x86-64, checked against a plain
//! `HashMap` model of page → (frame, flags). At the end everything is unmapped: the table
//! count is back to the root and the frame allocator holds every frame again.

use proptest::prelude::*;
use std::collections::HashMap;
use vmspace::addr::{PhysAddr, VirtAddr};
use vmspace::arch::{Arch, PageFlags, I386, X86_64};
use vmspace::paging::{MapError, PageTable, ProtectError, UnmapError};
use vmspace::phys::EmulatedRam;

// `testutil` names `crate::addr` and `crate::phys`, as inside the library.
use vmspace::{addr, phys};

#[path = "../src/paging/testutil.rs"]
#[allow(dead_code)]
mod testutil;
use testutil::BitmapFrames;

const K4: u64 = 4096;
const RAM: u64 = 2 << 30;
const TABLE_BASE: u64 = 1 << 30;
const TABLE_FRAMES: usize = 8192;

/// One mapped page (of any size) in the model.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Leaf {
    pa: u64,
    size: u64,
    flags: PageFlags,
}

#[derive(Debug)]
enum Kind {
    Exact(Leaf),
    Larger(u64),
    Smaller,
    Nothing,
    Window,
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        at: u64,
        size_i: usize,
        count: u64,
        pa_n: u64,
        flags: u64,
        range: bool,
        budget: Option<usize>,
    },
    Unmap {
        at: u64,
        size_i: usize,
        count: u64,
        range: bool,
    },
    Protect {
        at: u64,
        size_i: usize,
        count: u64,
        flags: u64,
        range: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let at = any::<u64>();
    let size_i = 0usize..3;
    let count = prop_oneof![3 => 1u64..4, 1 => 1u64..1100];
    prop_oneof![
        4 => (at, size_i.clone(), count.clone(), any::<u64>(), any::<u64>(), any::<bool>(),
              prop_oneof![6 => Just(None), 1 => (0usize..4).prop_map(Some)])
            .prop_map(|(at, size_i, count, pa_n, flags, range, budget)| Op::Map { at, size_i, count, pa_n, flags, range, budget }),
        2 => (at, size_i.clone(), count.clone(), any::<bool>())
            .prop_map(|(at, size_i, count, range)| Op::Unmap { at, size_i, count, range }),
        2 => (at, size_i, count, any::<u64>(), any::<bool>())
            .prop_map(|(at, size_i, count, flags, range)| Op::Protect { at, size_i, count, flags, range }),
    ]
}

/// The test's view of an architecture: page sizes and the regions ops land in.
struct Shape {
    sizes: Vec<u64>,
    /// (start, len) regions, each aligned to the largest size.
    regions: Vec<(u64, u64)>,
    window: Option<(u64, u64)>,
}

struct Model<A: Arch> {
    pt: PageTable<A>,
    ram: EmulatedRam,
    fr: BitmapFrames,
    leaves: HashMap<u64, Leaf>,
    shape: Shape,
    touched: Vec<u64>,
}

fn flags_from(bits: u64, supported: PageFlags) -> PageFlags {
    // Any mix of the architectural flags; A/D excluded so reprotect's A/D-keeping is exact.
    let f = PageFlags::from_bits_truncate(bits) - PageFlags::ACCESSED - PageFlags::DIRTY;
    (f | PageFlags::PRESENT) & supported
}

impl<A: Arch> Model<A> {
    fn new(arch: A, shape: Shape) -> Self {
        let mut ram = EmulatedRam::new(PhysAddr::ZERO, RAM).unwrap();
        let mut fr = BitmapFrames::new(PhysAddr::new(TABLE_BASE), TABLE_FRAMES);
        let pt = PageTable::new(arch, &mut ram, &mut fr).unwrap();
        Model {
            pt,
            ram,
            fr,
            leaves: HashMap::new(),
            shape,
            touched: Vec::new(),
        }
    }

    /// The model leaf covering `va`.
    fn covering(&self, va: u64) -> Option<(u64, Leaf)> {
        self.shape.sizes.iter().find_map(|&s| {
            let start = va & !(s - 1);
            self.leaves
                .get(&start)
                .filter(|l| l.size == s)
                .map(|l| (start, *l))
        })
    }

    /// Model leaves intersecting `[start, end)`.
    fn within(&self, start: u64, end: u128) -> Vec<(u64, Leaf)> {
        let mut v: Vec<_> = self
            .leaves
            .iter()
            .filter(|(&s, l)| (s as u128) < end && (s as u128 + l.size as u128) > start as u128)
            .map(|(&s, l)| (s, *l))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    fn in_window(&self, start: u64, end: u128) -> bool {
        let lin = |v: u64| A::to_linear(VirtAddr::new(v)).unwrap();
        match self.shape.window {
            Some((ws, we)) => lin(start) < we && ws < lin((end - 1) as u64) + 1,
            None => false,
        }
    }

    /// Picks a page-aligned address of `size` in one of the regions, with room for `count`.
    fn place(&self, at: u64, size: u64, count: u64) -> (u64, u64) {
        let (mut rs, mut rl) = self.shape.regions[(at % self.shape.regions.len() as u64) as usize];
        // Three times in four, crowd into 16 MiB (or 4 pages) at either end of the region,
        // so that ops meet each other's pages and tables.
        if at >> 62 != 0 {
            let hot = (16 << 20).max(4 * size).min(rl);
            if at >> 61 & 1 == 1 {
                rs += rl - hot;
            }
            rl = hot;
        }
        let slots = rl / size;
        // Data frames come from 2 GiB of RAM: at most 1 GiB per op.
        let count = count.min(slots).min(((1 << 30) / size).max(1));
        let first = (at >> 8) % (slots - count + 1);
        (rs + first * size, count * size)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Map {
                at,
                size_i,
                count,
                pa_n,
                flags,
                range,
                budget,
            } => {
                let size = self.shape.sizes[size_i % self.shape.sizes.len()];
                let count = if range { count } else { 1 };
                let (va, len) = self.place(at, size, count);
                let pa = (pa_n % ((RAM - len) / size + 1)) * size;
                let flags = flags_from(flags, A::SUPPORTED_FLAGS);
                let tables = self.pt.table_pages();
                let free = self.fr.free_frames();
                self.fr.budget = budget;
                let r = if range {
                    self.pt.map_range(
                        &mut self.ram,
                        &mut self.fr,
                        VirtAddr::new(va),
                        PhysAddr::new(pa),
                        len,
                        size,
                        flags,
                    )
                } else {
                    self.pt.map(
                        &mut self.ram,
                        &mut self.fr,
                        VirtAddr::new(va),
                        PhysAddr::new(pa),
                        size,
                        flags,
                    )
                };
                self.fr.budget = None;
                self.touch(va, len);
                let end = va as u128 + len as u128;
                let clash = self.within(va, end);
                match r {
                    Ok(()) => {
                        assert!(
                            !self.in_window(va, end),
                            "mapped into the window at {va:#x}"
                        );
                        assert!(clash.is_empty(), "mapped over {clash:?}");
                        for i in 0..len / size {
                            self.leaves.insert(
                                va + i * size,
                                Leaf {
                                    pa: pa + i * size,
                                    size,
                                    flags,
                                },
                            );
                        }
                    }
                    Err(MapError::Reserved(_)) => assert!(self.in_window(va, end)),
                    Err(MapError::AlreadyMapped(v)) | Err(MapError::TableInTheWay(v)) => {
                        assert!(!clash.is_empty(), "spurious clash at {v:?}");
                        // The error names the first page of the op that meets a mapping.
                        let first = clash[0].0.max(va);
                        assert_eq!(v.as_u64() & !(size - 1), first & !(size - 1));
                        assert_eq!(self.pt.table_pages(), tables);
                        assert_eq!(self.fr.free_frames(), free);
                    }
                    Err(MapError::OutOfFrames) => {
                        assert!(budget.is_some());
                        assert_eq!(self.pt.table_pages(), tables, "tables leaked on rollback");
                        assert_eq!(self.fr.free_frames(), free);
                    }
                    Err(e) => panic!("unexpected {e:?} for {op:?}"),
                }
            }
            Op::Unmap {
                at,
                size_i,
                count,
                range,
            } => {
                let size = self.shape.sizes[size_i % self.shape.sizes.len()];
                let count = if range { count } else { 1 };
                let (va, len) = self.place(at, size, count);
                self.touch(va, len);
                let end = va as u128 + len as u128;
                if range {
                    let mut seen = Vec::new();
                    let r = self.pt.unmap_range(
                        &mut self.ram,
                        &mut self.fr,
                        VirtAddr::new(va),
                        len,
                        |v, p, s| seen.push((v.as_u64(), p.as_u64(), s)),
                    );
                    let hit = self.within(va, end);
                    let cut = hit
                        .iter()
                        .any(|&(s, l)| s < va || (s as u128 + l.size as u128) > end);
                    match r {
                        Ok(flush) => {
                            assert!(!cut);
                            assert!(!self.in_window(va, end));
                            let want: Vec<_> =
                                hit.iter().map(|&(s, l)| (s, l.pa, l.size)).collect();
                            assert_eq!(seen, want);
                            for (s, _) in hit {
                                self.leaves.remove(&s);
                                assert!(flush.covers(VirtAddr::new(s)));
                            }
                        }
                        Err(UnmapError::PartOfLargePage { .. }) => assert!(cut && seen.is_empty()),
                        Err(UnmapError::Reserved(_)) => assert!(self.in_window(va, end)),
                        Err(e) => panic!("unexpected {e:?} for {op:?}"),
                    }
                } else {
                    let r = self
                        .pt
                        .unmap(&mut self.ram, &mut self.fr, VirtAddr::new(va), size);
                    let want = self.single_kind(va, size);
                    match (r, want) {
                        (Ok((p, flush)), Kind::Exact(l)) => {
                            assert_eq!(l.pa, p.as_u64());
                            assert!(flush.covers(VirtAddr::new(va)));
                            self.leaves.remove(&va);
                        }
                        (Err(UnmapError::PartOfLargePage { size: s, .. }), Kind::Larger(ls)) => {
                            assert_eq!(s, ls)
                        }
                        (Err(UnmapError::NotLargePage(_)), Kind::Smaller) => {}
                        (Err(UnmapError::NotMapped(_)), Kind::Nothing) => {}
                        (Err(UnmapError::Reserved(_)), Kind::Window) => {}
                        (r, c) => panic!("unmap {va:#x}/{size:#x}: {r:?} but model says {c:?}"),
                    }
                }
            }
            Op::Protect {
                at,
                size_i,
                count,
                flags,
                range,
            } => {
                let size = self.shape.sizes[size_i % self.shape.sizes.len()];
                let count = if range { count } else { 1 };
                let (va, len) = self.place(at, size, count);
                let flags = flags_from(flags, A::SUPPORTED_FLAGS);
                self.touch(va, len);
                let end = va as u128 + len as u128;
                if range {
                    let r = self
                        .pt
                        .protect_range(&mut self.ram, VirtAddr::new(va), len, flags);
                    let hit = self.within(va, end);
                    let cut = hit
                        .iter()
                        .any(|&(s, l)| s < va || (s as u128 + l.size as u128) > end);
                    match r {
                        Ok(flush) => {
                            assert!(!cut);
                            for (s, l) in hit {
                                if l.flags != flags {
                                    assert!(flush.covers(VirtAddr::new(s)));
                                }
                                self.leaves.get_mut(&s).unwrap().flags = flags;
                            }
                        }
                        Err(ProtectError::PartOfLargePage { .. }) => assert!(cut),
                        Err(ProtectError::Reserved(_)) => assert!(self.in_window(va, end)),
                        Err(e) => panic!("unexpected {e:?} for {op:?}"),
                    }
                } else {
                    let r = self
                        .pt
                        .protect(&mut self.ram, VirtAddr::new(va), size, flags);
                    let want = self.single_kind(va, size);
                    match (r, want) {
                        (Ok(flush), Kind::Exact(l)) => {
                            assert!(l.flags == flags || flush.covers(VirtAddr::new(va)));
                            self.leaves.get_mut(&va).unwrap().flags = flags;
                        }
                        (Err(ProtectError::PartOfLargePage { size: s, .. }), Kind::Larger(ls)) => {
                            assert_eq!(s, ls)
                        }
                        (Err(ProtectError::NotLargePage(_)), Kind::Smaller) => {}
                        (Err(ProtectError::NotMapped(_)), Kind::Nothing) => {}
                        (Err(ProtectError::Reserved(_)), Kind::Window) => {}
                        (r, c) => panic!("protect {va:#x}/{size:#x}: {r:?} but model says {c:?}"),
                    }
                }
            }
        }
    }

    /// What a single-page unmap or protect of `size` at `va` must meet.
    fn single_kind(&self, va: u64, size: u64) -> Kind {
        let end = va as u128 + size as u128;
        if self.in_window(va, end) {
            return Kind::Window;
        }
        match self.covering(va) {
            Some((s, l)) if s == va && l.size == size => Kind::Exact(l),
            Some((_, l)) if l.size > size => Kind::Larger(l.size),
            _ if !self.within(va, end).is_empty() => Kind::Smaller,
            _ => Kind::Nothing,
        }
    }

    fn touch(&mut self, va: u64, len: u64) {
        self.touched.push(va);
        self.touched.push(va + (len - 1));
        self.touched.push(va + ((len / 2) & !(K4 - 1)) + 0x123);
    }

    /// Every touched address translates as the model says; a full range translation lists
    /// exactly the model's leaves.
    fn check(&self) {
        for &v in &self.touched {
            let got = self.pt.translate(&self.ram, VirtAddr::new(v));
            match self.covering(v) {
                Some((s, l)) => {
                    let t = got.unwrap_or_else(|e| panic!("{v:#x}: {e:?}, model {l:?}"));
                    assert_eq!(t.phys(VirtAddr::new(v)).as_u64(), l.pa + (v - s));
                    assert_eq!((t.flags, t.size, t.page.as_u64()), (l.flags, l.size, s));
                }
                None => {
                    if self.shape.window.is_none() || !self.in_window(v, v as u128 + 1) {
                        assert!(got.is_err(), "{v:#x} maps {got:?}, model has nothing");
                    }
                }
            }
        }
        let mut all = Vec::new();
        for &(rs, rl) in &self.shape.regions {
            self.pt
                .translate_range(&self.ram, VirtAddr::new(rs), rl, |t| {
                    all.push((
                        t.page.as_u64(),
                        Leaf {
                            pa: t.frame.as_u64(),
                            size: t.size,
                            flags: t.flags,
                        },
                    ))
                })
                .unwrap();
        }
        let mut want: Vec<_> = self.leaves.iter().map(|(&s, &l)| (s, l)).collect();
        want.sort_by_key(|x| x.0);
        all.retain(|&(s, _)| !self.in_window(s, s as u128 + 1));
        assert_eq!(all, want);
        assert_eq!(
            self.pt.count_tables(&self.ram).unwrap(),
            self.pt.table_pages()
        );
    }

    fn teardown(mut self) {
        let free_before_root = TABLE_FRAMES;
        for &(rs, rl) in &self.shape.regions.clone() {
            // Unmap the region around the window, which cannot be unmapped.
            // (start, len) pieces; the region may end at 2^64.
            let mut pieces = vec![(rs, rl)];
            if let Some((ws, we)) = self.shape.window {
                let end = rs + rl; // i386: below 2^33
                pieces = vec![
                    (rs, ws.clamp(rs, end) - rs),
                    (we.clamp(rs, end), end - we.clamp(rs, end)),
                ];
            }
            for (s, len) in pieces {
                if len > 0 {
                    self.pt
                        .unmap_range(
                            &mut self.ram,
                            &mut self.fr,
                            VirtAddr::new(s),
                            len,
                            |_, _, _| {},
                        )
                        .unwrap()
                        .ignore();
                }
            }
        }
        self.leaves.clear();
        self.check();
        assert_eq!(self.pt.table_pages(), 1, "only the root is left");
        assert_eq!(self.fr.free_frames(), free_before_root - 1);
        self.pt
            .destroy(&mut self.ram, &mut self.fr, |_, _, _| {
                panic!("nothing mapped")
            })
            .unwrap();
        assert_eq!(
            self.fr.free_frames(),
            free_before_root,
            "every table frame is back"
        );
    }
}

fn x86_64_shape() -> Shape {
    Shape {
        sizes: vec![4096, 2 << 20, 1 << 30],
        // 4 GiB low, and the top 4 GiB of the kernel half (ending at 2^64).
        regions: vec![(0, 4 << 30), (0xFFFF_FFFF_0000_0000, 4 << 30)],
        window: None,
    }
}

fn i386_shape(slot: u64) -> Shape {
    Shape {
        sizes: vec![4096, 4 << 20],
        regions: vec![(0, 1 << 32)],
        window: Some((slot << 22, (slot + 1) << 22)),
    }
}

fn run<A: Arch>(arch: A, shape: Shape, ops: &[Op]) {
    let mut m = Model::new(arch, shape);
    for (i, op) in ops.iter().enumerate() {
        m.apply(op);
        if i % 8 == 7 {
            m.check();
        }
    }
    m.check();
    m.teardown();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn x86_64_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(X86_64, x86_64_shape(), &ops);
    }

    #[test]
    fn i386_matches_the_model(ops in prop::collection::vec(op(), 1..60), slot in prop_oneof![Just(1023u64), 0u64..1024]) {
        run(I386::with_recursive_slot(slot as u16).unwrap(), i386_shape(slot), &ops);
    }
}
