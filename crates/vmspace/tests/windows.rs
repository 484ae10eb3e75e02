//! Windows reserve/commit against a per-page model (W4–W12, W14): random sequences of
//! VirtualAlloc / commit / decommit / release / VirtualFree / VirtualProtect, each result
//! compared with the model's, every page's VirtualQuery compared after each step, and every
//! failing call checked to change nothing (allocation table, VMAs, Linux accounting).

use proptest::prelude::*;
use std::collections::BTreeMap;
use vmspace::space::windows::*;
use vmspace::space::{AddressSpace, SpaceConfig, TaskKind};

const P: u64 = 4096;
const G: u64 = 0x10000;
/// The window the addresses are drawn from: 24 segments above 64 KiB.
const LO: u64 = 0x10000;
const HI: u64 = LO + 24 * G;
const LIMIT: u64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    base: u64,
    /// `None`: reserved; `Some(prot)`: committed with that protection (guard bit included).
    commit: Option<u32>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// base -> (size, AllocationProtect)
    allocs: BTreeMap<u64, (u64, u32)>,
    pages: BTreeMap<u64, Page>,
    /// Pages mapped by Linux calls (or left mapped by a reservation a Linux call ended).
    linux: std::collections::BTreeSet<u64>,
    top: u64,
}

fn valid(p: u32) -> bool {
    let base = p & 0xff;
    let m = p & 0x700;
    p & !0x7ff == 0
        && base.count_ones() == 1
        && base & 0x88 == 0
        && !(base == 1 && m != 0)
        && m.count_ones() <= 1
}

fn span(addr: u64, size: u64) -> Option<(u64, u64)> {
    let end = addr.checked_add(size)?.checked_add(P - 1)? & !(P - 1);
    Some((addr & !(P - 1), end))
}

impl Model {
    fn alloc_of(&self, a: u64) -> Option<(u64, u64)> {
        let (b, (s, _)) = self.allocs.range(..=a).next_back()?;
        (a < b + s).then_some((*b, b + s))
    }

    fn free(&self, s: u64, e: u64) -> bool {
        self.allocs
            .iter()
            .all(|(b, (sz, _))| b + sz <= s || *b >= e)
            && self.linux.range(s..e).next().is_none()
    }

    fn place(&self, len: u64, top_down: bool) -> Option<u64> {
        if top_down {
            let mut c = (self.top.checked_sub(len)?) & !(G - 1);
            loop {
                if c < LO {
                    return None;
                }
                if self.free(c, c + len) {
                    return Some(c);
                }
                c -= G;
            }
        }
        let mut c = LO;
        while c + len <= self.top {
            if self.free(c, c + len) {
                return Some(c);
            }
            // Skip past the allocation or Linux page in the way.
            let past = match self
                .allocs
                .iter()
                .find(|(b, (s, _))| !(*b + s <= c || **b >= c + len))
            {
                Some((b, (s, _))) => b + s,
                None => self.linux.range(c..c + len).next().unwrap() + P,
            };
            c = (past + G - 1) & !(G - 1);
        }
        None
    }

    fn charge(&self) -> u64 {
        self.pages.values().filter(|p| p.commit.is_some()).count() as u64
    }

    /// Pages [lo, hi) all in one allocation: its base.
    fn one(&self, lo: u64, hi: u64) -> Result<u64, u32> {
        match self.alloc_of(lo) {
            Some((b, e)) if hi <= e && lo < hi => Ok(b),
            _ => Err(487),
        }
    }

    /// The pages touching `[addr, addr + size)`; overflowing or above the top: 87.
    fn span_below_top(&self, addr: u64, size: u64) -> Result<(u64, u64), u32> {
        match span(addr, size) {
            Some((lo, hi)) if hi <= self.top => Ok((lo, hi)),
            _ => Err(87),
        }
    }

    fn set(&mut self, lo: u64, hi: u64, base: u64, commit: Option<u32>) {
        let mut p = lo;
        while p < hi {
            self.pages.insert(p, Page { base, commit });
            p += P;
        }
    }

    fn commit(&mut self, addr: u64, size: u64, prot: u32) -> Result<u64, u32> {
        if size == 0 || !valid(prot) {
            return Err(87);
        }
        let (lo, hi) = self.span_below_top(addr, size)?;
        let b = self.one(lo, hi)?;
        let newly = (lo..hi)
            .step_by(P as usize)
            .filter(|p| self.pages[p].commit.is_none())
            .count() as u64;
        if self.charge() + newly > LIMIT {
            return Err(1455);
        }
        self.set(lo, hi, b, Some(prot));
        Ok(lo)
    }

    fn alloc(&mut self, addr: Option<u64>, size: u64, kind: u32, prot: u32) -> Result<u64, u32> {
        let known = MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN;
        if size == 0 || kind & !known != 0 || kind & (MEM_RESERVE | MEM_COMMIT) == 0 {
            return Err(87);
        }
        if !valid(prot) {
            return Err(87);
        }
        let commit = kind & MEM_COMMIT != 0;
        if kind & MEM_RESERVE == 0 {
            if let Some(a) = addr {
                return self.commit(a, size, prot);
            }
        }
        let (base, len) = match addr {
            None => {
                let len = size.checked_add(P - 1).ok_or(8u32)? & !(P - 1);
                (self.place(len, kind & MEM_TOP_DOWN != 0).ok_or(8u32)?, len)
            }
            Some(a) => {
                let base = a & !(G - 1);
                let (_, end) = span(a, size).ok_or(87u32)?;
                if base < LO || end > self.top {
                    return Err(87);
                }
                if !self.free(base, end) {
                    return Err(487);
                }
                (base, end - base)
            }
        };
        if commit && self.charge() + len / P > LIMIT {
            return Err(1455);
        }
        self.allocs.insert(base, (len, prot));
        self.set(base, base + len, base, commit.then_some(prot));
        Ok(base)
    }

    fn decommit(&mut self, addr: u64, size: u64) -> Result<(), u32> {
        let (lo, hi) = if size == 0 {
            match self.allocs.get(&addr) {
                Some((s, _)) => (addr, addr + s),
                None if self.alloc_of(addr).is_some() => return Err(87),
                None => return Err(487),
            }
        } else {
            self.span_below_top(addr, size)?
        };
        let b = self.one(lo, hi)?;
        self.set(lo, hi, b, None);
        Ok(())
    }

    fn release(&mut self, addr: u64, size: u64) -> Result<(), u32> {
        if size != 0 {
            return Err(87);
        }
        let (s, _) = self.allocs.remove(&addr).ok_or(487u32)?;
        let mut p = addr;
        while p < addr + s {
            self.pages.remove(&p);
            p += P;
        }
        Ok(())
    }

    fn protect(&mut self, addr: u64, size: u64, prot: u32) -> Result<u32, u32> {
        if size == 0 || !valid(prot) {
            return Err(87);
        }
        let (lo, hi) = self.span_below_top(addr, size)?;
        let b = self.one(lo, hi)?;
        if (lo..hi)
            .step_by(P as usize)
            .any(|p| self.pages[&p].commit.is_none())
        {
            return Err(487);
        }
        let old = self.pages[&lo].commit.unwrap();
        self.set(lo, hi, b, Some(prot));
        Ok(old)
    }

    /// A Linux call unmaps or replaces `[s, e)`: every reservation meeting it ends, what
    /// stays mapped of it becomes Linux memory; the range itself is dropped.
    fn linux_unmap(&mut self, s: u64, e: u64) {
        let hit: Vec<u64> = self
            .allocs
            .iter()
            .filter(|(b, (sz, _))| **b < e && *b + sz > s)
            .map(|(b, _)| *b)
            .collect();
        for b in hit {
            let (sz, _) = self.allocs.remove(&b).unwrap();
            let mut p = b;
            while p < b + sz {
                self.pages.remove(&p);
                self.linux.insert(p);
                p += P;
            }
        }
        let gone: Vec<u64> = self.linux.range(s..e).copied().collect();
        for p in gone {
            self.linux.remove(&p);
        }
    }

    fn query(&self, addr: u64) -> RegionInfo {
        let page = addr & !(P - 1);
        match self.pages.get(&page) {
            Some(pg) => {
                let mut end = page + P;
                while self.pages.get(&end) == Some(pg) {
                    end += P;
                }
                let (state, protect) = match pg.commit {
                    Some(p) => (MemState::Commit, WinProt(p)),
                    None => (MemState::Reserve, WinProt(0)),
                };
                RegionInfo {
                    base_address: page,
                    allocation_base: pg.base,
                    allocation_protect: WinProt(self.allocs[&pg.base].1),
                    region_size: end - page,
                    state,
                    protect,
                    mem_type: MEM_PRIVATE,
                }
            }
            None => {
                let end = self
                    .pages
                    .range(page..)
                    .next()
                    .map_or(self.top, |(k, _)| *k)
                    .min(self.linux.range(page..).next().copied().unwrap_or(self.top));
                RegionInfo {
                    base_address: page,
                    allocation_base: 0,
                    allocation_protect: WinProt(0),
                    region_size: end - page,
                    state: MemState::Free,
                    protect: WinProt::NOACCESS,
                    mem_type: 0,
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(Option<A>, u64, u32, u32),
    Commit(A, u64, u32),
    Decommit(A, u64),
    Release(A, u64),
    Free(A, u64, u32),
    Protect(A, u64, u32),
    /// Linux munmap of pages.
    Munmap(A, u64),
    /// Linux mmap(MAP_FIXED) of private anonymous read-write pages.
    MmapFixed(A, u64),
}

fn prot() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(0x04u32),
        2 => Just(0x02),
        1 => Just(0x01),
        1 => Just(0x20),
        1 => Just(0x40),
        1 => Just(0x10),
        2 => Just(0x104),
        1 => Just(0x102),
        1 => Just(0x204),
        1 => prop_oneof![Just(0x101u32), Just(0x08), Just(0), Just(0x604), any::<u32>()],
    ]
}

/// An address: absolute, or relative to the `idx`-th live reservation (resolved when run).
#[derive(Clone, Copy, Debug)]
enum A {
    Abs(u64),
    Pick(prop::sample::Index, u64),
}

fn addr() -> impl Strategy<Value = A> {
    prop_oneof![
        8 => (any::<prop::sample::Index>(), prop_oneof![3 => (0..24u64).prop_map(|p| p * P), 1 => 0..0x20000u64]).prop_map(|(i, o)| A::Pick(i, o)),
        6 => (0..24u64, 0..16u64).prop_map(|(s, p)| A::Abs(LO + s * G + p * P)),
        2 => (LO - G..HI).prop_map(A::Abs),
        1 => prop_oneof![Just(u64::MAX - 0xfff), Just(0x7fff_ffff_0000), Just(0u64)].prop_map(A::Abs),
    ]
}

fn at(m: &Model, a: A) -> u64 {
    match a {
        A::Abs(x) => x,
        A::Pick(i, o) if !m.allocs.is_empty() => {
            let (b, (sz, _)) = m.allocs.iter().nth(i.index(m.allocs.len())).unwrap();
            // Mostly inside the reservation, sometimes just past its end.
            b + o % (sz + P)
        }
        A::Pick(_, o) => LO + o,
    }
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        8 => (1..20u64).prop_map(|n| n * P),
        4 => 1..0x50000u64,
        1 => prop_oneof![Just(u64::MAX), Just(0x7fff_ffff_f000u64)],
    ]
}

fn small() -> impl Strategy<Value = u64> {
    prop_oneof![6 => (1..6u64).prop_map(|n| n * P), 2 => 1..0x6000u64, 2 => size()]
}

fn base() -> impl Strategy<Value = A> {
    prop_oneof![3 => any::<prop::sample::Index>().prop_map(|i| A::Pick(i, 0)), 1 => addr()]
}

fn kind() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(MEM_RESERVE),
        3 => Just(MEM_RESERVE | MEM_COMMIT),
        1 => Just(MEM_COMMIT),
        1 => Just(MEM_RESERVE | MEM_TOP_DOWN),
        1 => Just(MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN),
        1 => prop_oneof![Just(0u32), Just(MEM_RESET), Just(MEM_DECOMMIT)],
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::weighted(0.4, addr()), size(), kind(), prot()).prop_map(|(a, s, k, p)| Op::Alloc(a, s, k, p)),
        3 => (addr(), small(), prot()).prop_map(|(a, s, p)| Op::Commit(a, s, p)),
        2 => (addr(), prop_oneof![small(), Just(0u64)]).prop_map(|(a, s)| Op::Decommit(a, s)),
        2 => (base(), prop_oneof![4 => Just(0u64), 1 => size()]).prop_map(|(a, s)| Op::Release(a, s)),
        1 => (base(), prop_oneof![Just(0u64), small()], prop_oneof![Just(MEM_DECOMMIT), Just(MEM_RELEASE), Just(MEM_DECOMMIT | MEM_RELEASE), Just(0)]).prop_map(|(a, s, t)| Op::Free(a, s, t)),
        2 => (addr(), small(), prot()).prop_map(|(a, s, p)| Op::Protect(a, s, p)),
        1 => (addr(), (1..8u64).prop_map(|n| n * P)).prop_map(|(a, s)| Op::Munmap(a, s)),
        1 => (addr(), (1..8u64).prop_map(|n| n * P)).prop_map(|(a, s)| Op::MmapFixed(a, s)),
    ]
}

type Snap = (WinTable, String, vmspace::space::accounting::Accounting);

fn snap(s: &AddressSpace) -> Snap {
    (
        s.win_table().clone(),
        s.render_maps(),
        s.accounting().clone(),
    )
}

fn code<T>(r: Result<T, WinError>) -> Result<T, u32> {
    r.map_err(|e| e.code())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn reserve_commit_sequences_follow_the_page_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
        s.set_commit_limit(LIMIT);
        let mut m = Model { top: s.layout().task_size, ..Model::default() };
        for o in &ops {
            let before = snap(&s);
            let (got, want): (Result<u64, u32>, Result<u64, u32>) = match *o {
                Op::Alloc(a, sz, k, p) => {
                    let a = a.map(|a| at(&m, a));
                    (
                    code(s.virtual_alloc(a, sz, AllocKind(k), WinProt(p))),
                    m.alloc(a, sz, k, p),
                )}
                Op::Commit(a, sz, p) => { let a = at(&m, a); (code(s.commit(a, sz, WinProt(p))), m.commit(a, sz, p)) }
                Op::Decommit(a, sz) => { let a = at(&m, a); (code(s.decommit(a, sz)).map(|_| 0), m.decommit(a, sz).map(|_| 0)) }
                Op::Release(a, sz) => { let a = at(&m, a); (code(s.release(a, sz)).map(|_| 0), m.release(a, sz).map(|_| 0)) }
                Op::Free(a, sz, t) => {
                    let a = at(&m, a);
                    let w = match t {
                        MEM_DECOMMIT => m.decommit(a, sz),
                        MEM_RELEASE => m.release(a, sz),
                        _ => Err(87),
                    };
                    (code(s.virtual_free(a, sz, t)).map(|_| 0), w.map(|_| 0))
                }
                Op::Protect(a, sz, p) => {
                    let a = at(&m, a);
                    (
                        code(s.virtual_protect(a, sz, WinProt(p))).map(|x| x.bits() as u64),
                        m.protect(a, sz, p).map(|x| x as u64),
                    )
                }
                Op::Munmap(..) | Op::MmapFixed(..) => (Ok(0), Ok(0)),
            };
            if let Op::Munmap(a, sz) | Op::MmapFixed(a, sz) = *o {
                let a = at(&m, a) & !(P - 1);
                if !(LO..HI).contains(&a) {
                    continue;
                }
                if let Op::Munmap(..) = o {
                    s.munmap(a, sz).unwrap();
                    m.linux_unmap(a, a + sz);
                } else {
                    use vmspace::space::abi::*;
                    let fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
                    s.mmap(a, sz, PROT_READ | PROT_WRITE, fl, None, 0).unwrap();
                    m.linux_unmap(a, a + sz);
                    let mut p = a;
                    while p < a + sz {
                        m.linux.insert(p);
                        p += P;
                    }
                }
            }
            prop_assert_eq!(got, want, "{:?}", o);
            if got.is_err() {
                prop_assert!(snap(&s) == before, "failed {:?} changed the space", o);
            }
            prop_assert_eq!(s.commit_charge(), m.charge());
            s.check_invariants().map_err(TestCaseError::fail)?;
            s.win_check_prot().map_err(TestCaseError::fail)?;
            let mut a = LO - G;
            while a < HI + 8 * G {
                let q = s.virtual_query(a).unwrap();
                if m.linux.contains(&a) {
                    prop_assert_eq!((q.state, q.mem_type), (MemState::Commit, MEM_PRIVATE), "{:#x}", a);
                } else {
                    prop_assert_eq!(q, m.query(a), "query {:#x} after {:?}", a, o);
                }
                a += P;
            }
            // A VirtualQuery walk from 0 tiles the whole user range with regions.
            let (mut at, mut n) = (0u64, 0);
            while at < m.top {
                let q = s.virtual_query(at).unwrap();
                prop_assert_eq!(q.base_address, at);
                prop_assert!(q.region_size > 0 && q.region_size % P == 0);
                at += q.region_size;
                n += 1;
                prop_assert!(n < 10_000);
            }
            prop_assert_eq!(at, m.top);
            for (b, _) in m.allocs.range(HI..) {
                prop_assert_eq!(s.virtual_query(*b).unwrap(), m.query(*b));
            }
        }
    }
}
