//! System calls that run out of physical memory: as in Linux, the allocation runs the OOM
//! killer and is retried (mm/page_alloc.c `__alloc_pages_may_oom`); the call fails only
//! when nothing can be killed, and a caller chosen as the victim dies. ENOMEM for want of
//! address space (no free range, limits) kills nobody.

use std::collections::BTreeMap;
use vmspace::space::abi::*;
use vmspace::space::{Errno, FaultCode};
use vmspace_sim::*;

const RW: u64 = PROT_READ | PROT_WRITE;
const PA: u64 = MAP_PRIVATE | MAP_ANONYMOUS;
/// A destination in a PGD slot no process uses (user mappings sit near 0x7fff_...): moving
/// there needs a new PUD, PMD and page table.
const FAR: u64 = 0x1000_0000_0000;

fn main_tid(m: &Machine, pid: Pid) -> Tid {
    m.process(pid).unwrap().threads[0]
}

/// Writes pages of a fresh mapping of `pid` until at most `left` frames are free (each
/// write takes at most two: the page and a page table, so at least `left - 1` remain).
fn fill(m: &mut Machine, pid: Pid, left: u64) {
    let t = main_tid(m, pid);
    let len = m.ram_frames() * 0x1000;
    let a = m.mmap(pid, 0, len, RW, PA, None, 0).unwrap();
    let mut i = 0;
    while m.frames_free() > left {
        m.store(t, a + i * 0x1000, 1).unwrap();
        i += 1;
    }
}

/// `pid` maps `pages` pages and writes page `i` with `i + 1`.
fn written(m: &mut Machine, pid: Pid, pages: u64) -> u64 {
    let t = main_tid(m, pid);
    let b = m.mmap(pid, 0, pages * 0x1000, RW, PA, None, 0).unwrap();
    for i in 0..pages {
        m.store(t, b + i * 0x1000, i as u8 + 1).unwrap();
    }
    b
}

#[test]
fn mremap_out_of_table_frames_kills_the_largest_and_moves() {
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, b);
    let src = written(&mut m, b, 4);
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 2);
    assert!(
        m.frames_free() <= 2,
        "fewer frames than the 3 new tables need"
    );
    let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
    assert_eq!(m.mremap(b, src, 0x4000, 0x4000, flags, FAR), Ok(FAR));
    // A, holding most of RAM, was chosen; B's call went through with its data moved.
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    let rep = m.oom_reports()[0];
    assert_eq!(m.oom_reports().len(), 1);
    assert_eq!((rep.victim, rep.faulting), (a, b));
    assert_eq!((rep.call, rep.addr), (Some("mremap"), src));
    assert!(rep.to_string().contains("on mremap of process"));
    for i in 0..4 {
        assert_eq!(m.load(tb, FAR + i * 0x1000), Ok(i as u8 + 1));
    }
    assert!(
        matches!(m.load(tb, src), Err(Stop::Signal(f)) if f.code == FaultCode::SegvMaperr),
        "the source is gone"
    );
    assert_eq!(m.process(b).unwrap().rss().anon, 4);
    m.check().unwrap();

    // The space's counters are those of one successful mremap (the failed attempt's charge
    // is not kept): the same calls on a machine with RAM to spare.
    let mut roomy = Machine::new(16 << 20).unwrap();
    let rb = roomy.spawn(ArchKind::X86_64).unwrap();
    let rsrc = written(&mut roomy, rb, 4);
    assert_eq!(rsrc, src);
    assert_eq!(roomy.mremap(rb, rsrc, 0x4000, 0x4000, flags, FAR), Ok(FAR));
    assert_eq!(
        m.process(b).unwrap().space().accounting(),
        roomy.process(rb).unwrap().space().accounting()
    );
}

#[test]
fn mremap_growth_out_of_table_frames_kills_and_moves() {
    // MAYMOVE growth that cannot grow in place (the next page is taken) moves the VMA to
    // the highest free range that fits, 4 MiB below B's mappings: a 2 MiB block with no page
    // table yet, and RAM is full.
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, b);
    let src = written(&mut m, b, 4);
    m.mmap(b, src + 0x4000, 0x1000, RW, PA | MAP_FIXED, None, 0)
        .unwrap();
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 0);
    assert_eq!(m.frames_free(), 0);
    let grown = 0x40_0000;
    let to = m.mremap(b, src, 0x4000, grown, MREMAP_MAYMOVE, 0).unwrap();
    assert!(to + grown <= src, "moved below");
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    let rep = m.oom_reports()[0];
    assert_eq!((rep.victim, rep.faulting, rep.call), (a, b, Some("mremap")));
    for i in 0..4 {
        assert_eq!(m.load(tb, to + i * 0x1000), Ok(i as u8 + 1));
    }
    assert_eq!(m.load(tb, to + grown - 1), Ok(0));
    m.check().unwrap();
    // One growth charge, as Linux's in-allocator retry makes: the same calls with RAM to
    // spare leave the same counters.
    let mut roomy = Machine::new(16 << 20).unwrap();
    let rb = roomy.spawn(ArchKind::X86_64).unwrap();
    let rsrc = written(&mut roomy, rb, 4);
    roomy
        .mmap(rb, rsrc + 0x4000, 0x1000, RW, PA | MAP_FIXED, None, 0)
        .unwrap();
    assert_eq!(
        roomy.mremap(rb, rsrc, 0x4000, grown, MREMAP_MAYMOVE, 0),
        Ok(to)
    );
    let acct = m.process(b).unwrap().space().accounting().clone();
    assert_eq!(&acct, roomy.process(rb).unwrap().space().accounting());
    assert!(acct.committed >= grown >> 12);
}

/// The same calls of `b` on a machine with RAM to spare; its counters afterwards.
fn roomy_accounting(
    calls: impl FnOnce(&mut Machine, Pid),
) -> vmspace::space::accounting::Accounting {
    let mut m = Machine::new(16 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    calls(&mut m, b);
    m.process(b).unwrap().space().accounting().clone()
}

#[test]
fn mremap_fixed_over_a_mapping_out_of_frames_counts_once() {
    // MREMAP_FIXED unmaps the destination's old mapping first (its pages leave total_vm and
    // the commit charge); the move then waits for an OOM kill. The counters end as on a
    // machine with RAM to spare: the unmapping is counted once.
    let calls = |m: &mut Machine, b: Pid| -> u64 {
        let src = written(m, b, 4);
        m.mmap(b, FAR, 0x8000, RW, PA | MAP_FIXED, None, 0).unwrap();
        src
    };
    let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, b);
    let src = calls(&mut m, b);
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 2);
    assert_eq!(m.mremap(b, src, 0x4000, 0x4000, flags, FAR), Ok(FAR));
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    assert_eq!(m.load(tb, FAR + 0x3000), Ok(4));
    m.check().unwrap();
    let roomy = roomy_accounting(|m, b| {
        let src = calls(m, b);
        assert_eq!(m.mremap(b, src, 0x4000, 0x4000, flags, FAR), Ok(FAR));
    });
    assert_eq!(m.process(b).unwrap().space().accounting(), &roomy);
}

#[test]
fn multi_vma_move_out_of_frames_half_way_moves_everything() {
    // A FIXED move of two VMAs with a hole between them (6.17+ moves them piece by piece):
    // the first piece finds its three tables, the second needs a fourth in another 2 MiB
    // block and waits for an OOM kill; then it moves too, the hole kept.
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, b);
    let two_mib = 0x20_0000;
    // A page below the range keeps the first piece's source page table in use, so its
    // move frees no frame for the second.
    let pin = 0x4000_0000_0000u64;
    let lo = pin + 0x1000;
    for (at, v) in [(pin, 9u8), (lo, 1), (lo + two_mib, 2)] {
        m.mmap(b, at, 0x1000, RW, PA | MAP_FIXED, None, 0).unwrap();
        m.store(tb, at, v).unwrap();
    }
    let spare = written(&mut m, b, 1);
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 3);
    if m.frames_free() == 2 {
        m.munmap(b, spare, 0x1000).unwrap();
    }
    assert_eq!(
        m.frames_free(),
        3,
        "the first piece's three tables, no more"
    );
    let len = two_mib + 0x1000;
    let r = m.mremap(b, lo, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, FAR);
    assert_eq!(r, Ok(FAR));
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    assert_eq!(m.load(tb, FAR), Ok(1));
    assert_eq!(m.load(tb, FAR + two_mib), Ok(2));
    assert!(m.load(tb, FAR + 0x1000).is_err(), "the hole stays a hole");
    assert!(m.load(tb, lo).is_err() && m.load(tb, lo + two_mib).is_err());
    assert_eq!(m.load(tb, pin), Ok(9));
    m.check().unwrap();
}

#[test]
fn mremap_caller_chosen_dies_and_says_so() {
    let mut m = Machine::new(4 << 20).unwrap();
    let small = m.spawn(ArchKind::X86_64).unwrap();
    let ts = main_tid(&m, small);
    let s = written(&mut m, small, 2);
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let src = written(&mut m, b, 4);
    fill(&mut m, b, 2);
    let r = m.mremap(b, src, 0x4000, 0x4000, MREMAP_MAYMOVE | MREMAP_FIXED, FAR);
    assert_eq!(r, Err(SimError::OomKilled));
    assert_eq!(m.process_end(b), Some(ProcessEnd::OomKilled));
    assert!(m.process(b).is_none());
    let rep = m.oom_reports()[0];
    assert_eq!((rep.victim, rep.faulting, rep.call), (b, b, Some("mremap")));
    // The bystander is untouched; its memory is all there.
    assert_eq!(m.load(ts, s + 0x1000), Ok(2));
    assert_eq!(m.oom_reports().len(), 1);
    // Every frame of B came back: only the zero page, the bystander's pages and tables and
    // kernel stack remain.
    m.check().unwrap();
    assert!(m.frames_free() > m.ram_frames() - 20);
}

#[test]
fn address_space_enomem_kills_nobody() {
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let src = written(&mut m, b, 2);
    let mut cfg = vmspace::space::SpaceConfig::linux_default(vmspace::space::TaskKind::X86_64);
    cfg.max_map_count = 3;
    let c = m.spawn_with(ArchKind::X86_64, cfg).unwrap();
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 2);
    // No free range of 2^47 bytes below the top of user space.
    let huge = 0x7fff_ff00_0000;
    assert_eq!(
        m.mmap(b, 0, huge, RW, PA, None, 0),
        Err(SimError::Errno(Errno::ENOMEM))
    );
    // mremap growth that fits nowhere.
    assert_eq!(
        m.mremap(b, src, 0x2000, huge, MREMAP_MAYMOVE, 0),
        Err(SimError::Errno(Errno::ENOMEM))
    );
    // The map-count limit: one VMA too many.
    let mut r = Ok(0);
    for i in 0..8 {
        r = m.mmap(
            c,
            0x1000_0000 + i * 0x2000,
            0x1000,
            RW,
            PA | MAP_FIXED,
            None,
            0,
        );
        if r.is_err() {
            break;
        }
    }
    assert_eq!(r, Err(SimError::Errno(Errno::ENOMEM)));
    assert!(m.oom_reports().is_empty(), "{:?}", m.oom_reports());
    assert!(m.process(a).is_some() && m.process(b).is_some());
    m.check().unwrap();
}

#[test]
fn map_populate_out_of_frames_kills_and_populates_everything() {
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 2);
    let rss = m.process(b).unwrap().rss().anon;
    let p = m
        .mmap(b, 0, 0x10000, RW, PA | MAP_POPULATE, None, 0)
        .unwrap();
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    let rep = m.oom_reports()[0];
    assert_eq!((rep.victim, rep.faulting, rep.call), (a, b, Some("mmap")));
    assert!(rep.addr >= p && rep.addr < p + 0x10000);
    // All 16 pages are resident, as Linux's populate (retrying after the kill) leaves them.
    assert_eq!(m.process(b).unwrap().rss().anon, rss + 16);
    let faults = m.counters().faults();
    let tb = main_tid(&m, b);
    for i in 0..16 {
        m.store(tb, p + i * 0x1000, 5).unwrap();
    }
    assert_eq!(
        m.counters().faults(),
        faults,
        "no fault: the pages were populated"
    );
    m.check().unwrap();
}

#[test]
fn map_populate_caller_chosen_dies() {
    let mut m = Machine::new(4 << 20).unwrap();
    let small = m.spawn(ArchKind::X86_64).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, b, 2);
    let r = m.mmap(b, 0, 0x10000, RW, PA | MAP_POPULATE, None, 0);
    assert_eq!(r, Err(SimError::OomKilled));
    assert_eq!(m.process_end(b), Some(ProcessEnd::OomKilled));
    assert!(m.process(small).is_some());
    m.check().unwrap();
}

#[test]
fn mlock_out_of_frames_kills_and_locks_everything_in() {
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let p = m.mmap(b, 0, 0x10000, RW, PA, None, 0).unwrap();
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 0);
    let rss = m.process(b).unwrap().rss().anon;
    assert_eq!(m.mlock(b, p, 0x10000, 0), Ok(()));
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    let rep = m.oom_reports()[0];
    assert_eq!((rep.victim, rep.faulting, rep.call), (a, b, Some("mlock")));
    assert_eq!(m.process(b).unwrap().rss().anon, rss + 16);
    m.check().unwrap();
}

#[test]
fn fork_out_of_frames_kills_another_and_forks() {
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, b);
    let s = written(&mut m, b, 8);
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 0);
    assert_eq!(m.frames_free(), 0);
    let c = m.fork(b).unwrap();
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    let rep = m.oom_reports()[0];
    assert_eq!((rep.victim, rep.faulting, rep.call), (a, b, Some("fork")));
    let tc = main_tid(&m, c);
    assert_eq!(m.load(tc, s + 0x7000), Ok(8));
    m.store(tc, s, 9).unwrap();
    assert_eq!(m.load(tb, s), Ok(1), "copy-on-write still separates them");
    m.check().unwrap();
}

#[test]
fn thread_out_of_frames_kills_another_and_starts() {
    let mut m = Machine::new(4 << 20).unwrap();
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let a = m.spawn(ArchKind::X86_64).unwrap();
    fill(&mut m, a, 0);
    let free = m.frames_free();
    let t = m
        .spawn_thread(
            b,
            StackStyle::Pthread {
                size: 0x10000,
                guard: 0x1000,
            },
        )
        .unwrap();
    assert_eq!(free, 0);
    // No frame for the kernel stack: A made room.
    assert_eq!(m.process_end(a), Some(ProcessEnd::OomKilled));
    let rep = m.oom_reports()[0];
    assert_eq!((rep.victim, rep.faulting, rep.call), (a, b, Some("clone")));
    let Stack::Pthread { base, .. } = m.thread(t).unwrap().stack else {
        panic!("pthread stack")
    };
    m.store(t, base + 0x8000, 1).unwrap();
    m.check().unwrap();
}

#[test]
fn nothing_to_kill_fails_the_call() {
    // RAM for the zero page and one page-table root: the first process cannot get its
    // kernel stack, and the OOM killer has nobody to end (the process being created is not
    // a candidate). Linux would panic ("Out of memory and no killable processes"); the
    // machine fails the call.
    let mut m = Machine::new(2 * 4096).unwrap();
    assert_eq!(m.spawn(ArchKind::X86_64), Err(SimError::OutOfMemory));
    assert!(m.oom_reports().is_empty());
    assert_eq!(m.processes().count(), 0);
    m.check().unwrap();
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// mmap of `pages` (MAP_POPULATE or not) and writes of every page.
        Map {
            p: usize,
            pages: u64,
            populate: bool,
        },
        /// mremap MAYMOVE|FIXED of the process's latest mapping to PGD slot `slot`.
        Move {
            p: usize,
            slot: u64,
        },
        Fork {
            p: usize,
        },
        Thread {
            p: usize,
        },
        Spawn,
        /// The process writes fresh pages until at most `left` frames are free.
        Fill {
            p: usize,
            left: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, 1..48u64, any::<bool>())
                .prop_map(|(p, pages, populate)| Op::Map { p, pages, populate }),
            3 => (0..4usize, 1..200u64).prop_map(|(p, slot)| Op::Move { p, slot }),
            1 => (0..4usize).prop_map(|p| Op::Fork { p }),
            1 => (0..4usize).prop_map(|p| Op::Thread { p }),
            1 => Just(Op::Spawn),
            2 => (0..4usize, 0..4u64).prop_map(|(p, left)| Op::Fill { p, left }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// On a machine short of RAM, every call either succeeds or fails with what it
        /// says: a caller chosen by the OOM killer is gone and was the last report's
        /// victim; fork and thread creation never fail for want of frames while their
        /// caller lives (it could always be killed); moved pages keep their data; every
        /// machine invariant holds after every step.
        #[test]
        fn calls_out_of_frames_kill_and_retry(ops in prop::collection::vec(op(), 1..40)) {
            let mut m = Machine::new(512 << 10).unwrap();
            let mut latest: BTreeMap<Pid, (u64, u64, u8)> = BTreeMap::new();
            let mut step = 0u8;
            for o in ops {
                step = step.wrapping_add(1).max(1);
                let live: Vec<Pid> = m.processes().map(|p| p.pid).collect();
                let pick = |i: usize| live.get(i % live.len().max(1)).copied();
                let reports = m.oom_reports().len();
                let (caller, r): (Option<Pid>, Result<(), SimError>) = match o {
                    Op::Spawn => (None, m.spawn(ArchKind::X86_64).map(|_| ())),
                    Op::Fill { p, left } => {
                        let Some(pid) = pick(p) else { continue };
                        let t = main_tid(&m, pid);
                        let a = m.mmap(pid, 0, 0x80000, RW, PA, None, 0);
                        let mut i = 0;
                        while let Ok(a) = a {
                            if m.frames_free() <= left || i == 128 {
                                break;
                            }
                            if m.store(t, a + i * 0x1000, 1).is_err() {
                                break;
                            }
                            i += 1;
                        }
                        (Some(pid), a.map(|_| ()))
                    }
                    Op::Map { p, pages, populate } => {
                        let Some(pid) = pick(p) else { continue };
                        let f = if populate { PA | MAP_POPULATE } else { PA };
                        let r = m.mmap(pid, 0, pages * 0x1000, RW, f, None, 0);
                        if let Ok(a) = r {
                            let t = main_tid(&m, pid);
                            let mut ok = true;
                            for i in 0..pages {
                                if m.store(t, a + i * 0x1000, step).is_err() {
                                    ok = false;
                                    break;
                                }
                            }
                            if ok {
                                latest.insert(pid, (a, pages, step));
                            }
                        }
                        (Some(pid), r.map(|_| ()))
                    }
                    Op::Move { p, slot } => {
                        let Some(pid) = pick(p) else { continue };
                        let Some(&(a, pages, v)) = latest.get(&pid) else { continue };
                        let to = slot << 39;
                        let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
                        let r = m.mremap(pid, a, pages * 0x1000, pages * 0x1000, flags, to);
                        if r.is_ok() {
                            let t = main_tid(&m, pid);
                            for i in 0..pages {
                                prop_assert_eq!(m.load(t, to + i * 0x1000), Ok(v));
                            }
                            latest.insert(pid, (to, pages, v));
                        } else if to < a + pages * 0x1000 && a < to + pages * 0x1000 {
                            // Source and destination overlap (R: EINVAL).
                            prop_assert_eq!(&r, &Err(SimError::Errno(Errno::EINVAL)));
                        } else {
                            // Out of frames the caller itself can always be killed: a
                            // mremap here never fails with ENOMEM.
                            prop_assert_eq!(&r, &Err(SimError::OomKilled));
                        }
                        (Some(pid), r.map(|_| ()))
                    }
                    Op::Fork { p } => {
                        let Some(pid) = pick(p) else { continue };
                        let r = m.fork(pid).map(|c| {
                            if let Some(&l) = latest.get(&pid) {
                                latest.insert(c, l);
                            }
                        });
                        prop_assert_ne!(&r, &Err(SimError::OutOfMemory));
                        (Some(pid), r)
                    }
                    Op::Thread { p } => {
                        let Some(pid) = pick(p) else { continue };
                        let style = StackStyle::Pthread { size: 0x4000, guard: 0x1000 };
                        let r = m.spawn_thread(pid, style).map(|_| ());
                        prop_assert_ne!(&r, &Err(SimError::OutOfMemory));
                        (Some(pid), r)
                    }
                };
                if let (Some(pid), Err(SimError::OomKilled)) = (caller, &r) {
                    prop_assert!(m.process(pid).is_none());
                    prop_assert_eq!(m.process_end(pid), Some(ProcessEnd::OomKilled));
                    let last = m.oom_reports().last().unwrap();
                    prop_assert_eq!((last.victim, last.faulting), (pid, pid));
                }
                for rep in &m.oom_reports()[reports..] {
                    prop_assert_eq!(m.process_end(rep.victim), Some(ProcessEnd::OomKilled));
                    latest.remove(&rep.victim);
                }
                if let Err(e) = m.check() {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }
}
