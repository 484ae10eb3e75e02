//! Windows thread stacks on the simulated CPU (W15–W19): reserve, commit the top, guard
//! pages below that move down as the stack grows, overflow into the hard guard.

use vmspace::fault::ExceptionCode;
use vmspace::space::{MemState, WinProt};
use vmspace_sim::*;

const P: u64 = 4096;

fn machine() -> Machine {
    Machine::new(32 << 20).unwrap()
}

/// A machine with one process of `arch` running `N` threads on default Windows stacks.
fn threads<const N: usize>(arch: ArchKind) -> (Machine, Pid, [Tid; N]) {
    let mut m = machine();
    let p = m.spawn(arch).unwrap();
    let t = std::array::from_fn(|_| m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap());
    (m, p, t)
}

fn reserved(m: &Machine, t: Tid) -> (u64, u64, u64) {
    match m.thread(t).unwrap().stack {
        Stack::Reserved {
            base,
            reserve,
            committed,
            ..
        } => (base, reserve, committed),
        s => panic!("{s:?}"),
    }
}

#[test]
fn w17_stack_is_one_reservation_top_committed_guard_below() {
    for arch in [ArchKind::X86_64, ArchKind::I386] {
        let mut m = machine();
        let p = m.spawn(arch).unwrap();
        let t = m
            .spawn_thread(
                p,
                StackStyle::ReserveCommit {
                    reserve: 100 << 10,
                    commit: 5000,
                    guard_pages: 2,
                },
            )
            .unwrap();
        let (base, reserve, committed) = reserved(&m, t);
        assert_eq!(base % 0x10000, 0);
        assert_eq!(reserve, 128 << 10, "rounded to the 64 KiB granularity");
        assert_eq!(committed, base + reserve - 2 * P, "commit rounded to pages");
        let top = m.virtual_query(p, committed).unwrap();
        assert_eq!(
            (top.state, top.protect, top.region_size, top.allocation_base),
            (MemState::Commit, WinProt::READWRITE, 2 * P, base)
        );
        assert_eq!(top.allocation_protect, WinProt::READWRITE);
        let g = m.virtual_query(p, committed - 2 * P).unwrap();
        assert_eq!(
            (g.state, g.protect, g.region_size),
            (MemState::Commit, WinProt::READWRITE | WinProt::GUARD, 2 * P)
        );
        let r = m.virtual_query(p, base).unwrap();
        assert_eq!(
            (r.state, r.region_size),
            (MemState::Reserve, reserve - 4 * P)
        );
        let charge = m.process(p).unwrap().space().commit_charge();
        assert_eq!(charge, 4);
        // Exit releases the whole reservation.
        m.exit_thread(t).unwrap();
        assert_eq!(m.virtual_query(p, base).unwrap().state, MemState::Free);
        assert_eq!(m.process(p).unwrap().space().commit_charge(), 0);
        m.check().unwrap();
    }
}

#[test]
fn w16_w18_guard_growth_is_silent_while_another_thread_runs() {
    let (mut m, p, [t1, t2]) = threads(ArchKind::X86_64);
    let (b1, r1, _) = reserved(&m, t1);
    let (b2, r2, _) = reserved(&m, t2);
    let top2 = b2 + r2 - 1;
    m.store(t2, top2, 0x22).unwrap();
    // t1 recurses 40 pages deep, t2 works on its own top page in between.
    for i in 0..40u64 {
        let sp = b1 + r1 - 8 - i * P;
        m.store(t1, sp, i as u8).unwrap();
        assert_eq!(m.load(t2, top2), Ok(0x22));
        m.store(t2, top2 - 1, i as u8).unwrap();
    }
    assert_eq!(m.counters().guard_commits, 39);
    assert_eq!(
        m.counters().guard_page_violations,
        39,
        "raised by the fault layer"
    );
    let (_, _, c1) = reserved(&m, t1);
    assert_eq!(c1, b1 + r1 - 40 * P);
    // The guard moved down with the stack: two guard pages right below, reserved below that.
    let g = m.virtual_query(p, c1 - 2 * P).unwrap();
    assert_eq!(
        (g.protect, g.region_size),
        (WinProt::READWRITE | WinProt::GUARD, 2 * P)
    );
    assert_eq!(m.virtual_query(p, b1).unwrap().region_size, r1 - 42 * P);
    for i in 0..40u64 {
        assert_eq!(m.load(t1, b1 + r1 - 8 - i * P), Ok(i as u8));
    }
    // t2 never grew and keeps its data.
    assert_eq!(reserved(&m, t2).2, b2 + r2 - P);
    assert_eq!(m.load(t2, top2), Ok(0x22));
    m.check().unwrap();
}

#[test]
fn w15_another_threads_touch_of_a_guard_page_is_raised_and_one_shot() {
    let (mut m, _, [t1, t2]) = threads(ArchKind::X86_64);
    let (_, _, c1) = reserved(&m, t1);
    let e = m.load(t2, c1 - 1).unwrap_err();
    assert!(
        matches!(e, Stop::Exception(x) if x.code == ExceptionCode::GuardPage && x.addr == c1 - 1),
        "{e:?}"
    );
    assert_eq!(m.counters().guard_commits, 0, "not t2's stack: no growth");
    assert_eq!(m.load(t2, c1 - 1), Ok(0), "one shot: the retry reads");
    // t1 still grows through its remaining guard page.
    m.store(t1, c1 - P - 8, 1).unwrap();
    assert_eq!(m.counters().guard_commits, 1);
    assert_eq!(reserved(&m, t1).2, c1 - 2 * P);
    assert!(m.thread(t2).unwrap().ended.is_none());
    m.check().unwrap();
}

#[test]
fn w19_overflow_while_another_thread_runs_then_hard_guard_is_an_access_violation() {
    let mut m = machine();
    let p = m.spawn(ArchKind::I386).unwrap();
    let main = m.process(p).unwrap().threads[0];
    let t1 = m
        .spawn_thread(
            p,
            StackStyle::ReserveCommit {
                reserve: 64 << 10,
                commit: P,
                guard_pages: 1,
            },
        )
        .unwrap();
    let t2 = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
    let (b1, r1, _) = reserved(&m, t1);
    let (b2, r2, _) = reserved(&m, t2);
    let mut sp = b1 + r1 - 4;
    let stop = loop {
        match m.store(t1, sp, 0x5a) {
            Ok(()) => {
                // The other thread keeps running through all of it.
                m.store(t2, b2 + r2 - 1, (sp >> 12) as u8).unwrap();
                sp -= P;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(stop, Stop::StackOverflow { addr: sp });
    // One guard page, 16 pages: touching guard pages 14 down to 2 commits the next page
    // below (13 commits); touching page 1 would move the guard into page 0 (the hard
    // guard): overflow; usable = reserve minus one page.
    assert_eq!(sp & !(P - 1), b1 + P);
    assert_eq!(m.counters().guard_commits, 13);
    assert_eq!(m.counters().stack_overflows, 1);
    let Stack::Reserved {
        committed,
        overflowed,
        ..
    } = m.thread(t1).unwrap().stack
    else {
        panic!()
    };
    assert!(overflowed);
    assert_eq!(committed, b1 + P);
    // No guard remains; the last page stays reserved.
    let q = m.virtual_query(p, b1 + P).unwrap();
    assert_eq!((q.protect, q.region_size), (WinProt::READWRITE, r1 - P));
    assert_eq!(m.virtual_query(p, b1).unwrap().state, MemState::Reserve);
    // A further touch of the hard guard: access violation.
    let e = m.touch(p, b1 + 16, true, 1).unwrap_err();
    assert!(
        matches!(e, Stop::Exception(x) if x.code == ExceptionCode::AccessViolation && x.info0() == 1),
        "{e:?}"
    );
    assert!(m.thread(t1).unwrap().ended.is_some());
    assert!(m.thread(t2).unwrap().ended.is_none());
    assert!(m.thread(main).unwrap().ended.is_none());
    assert_eq!(m.load(t2, b2 + r2 - 1), Ok(((b1 + P) >> 12) as u8 + 1));
    m.check().unwrap();
}

#[test]
fn w19_commit_failure_is_an_overflow_too() {
    let (mut m, p, [t]) = threads(ArchKind::X86_64);
    // Commit limit: exactly what the stack holds now (1 page + 2 guard pages).
    m.with_mm(p, |mm, ph, tlb| {
        with_mm!(mm, x => {
            let c = x.space().commit_charge();
            x.op(ph, tlb, |s| s.set_commit_limit(c));
        })
    })
    .unwrap();
    let (b, r, _) = reserved(&m, t);
    m.store(t, b + r - 8, 1).unwrap();
    let e = m.store(t, b + r - P - 8, 1).unwrap_err();
    assert!(matches!(e, Stop::StackOverflow { .. }), "{e:?}");
    assert_eq!(m.counters().guard_commits, 0);
    m.check().unwrap();
}

#[test]
fn w17_i386_space_fills_with_1_mib_stacks_then_a_typed_error() {
    let mut m = machine();
    let p = m.spawn(ArchKind::I386).unwrap();
    let mut tids = Vec::new();
    let err = loop {
        match m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT) {
            Ok(t) => tids.push(t),
            Err(e) => break e,
        }
    };
    assert_eq!(
        err,
        SimError::Win(vmspace::space::WinError::NotEnoughMemory)
    );
    // 3 GiB of user space, less the first 64 KiB and the main stack with its guard gap.
    assert!(tids.len() > 3000 && tids.len() < 3072, "{}", tids.len());
    let s = m.process(p).unwrap().space();
    assert_eq!(s.commit_charge(), 3 * tids.len() as u64);
    // Every stack still works.
    for &t in tids.iter().step_by(500) {
        let top = m.thread(t).unwrap().stack.top();
        m.store(t, top - 1, 7).unwrap();
        m.store(t, top - 4096 - 1, 8).unwrap();
    }
    m.check().unwrap();
    for t in tids {
        m.exit_thread(t).unwrap();
    }
    assert_eq!(m.process(p).unwrap().space().commit_charge(), 0);
    assert!(m.process(p).unwrap().space().win_table().is_empty());
    m.check().unwrap();
}

#[test]
fn w15_a_system_service_touching_a_guard_page_fails_and_clears_the_bit() {
    let (mut m, p, [t]) = threads(ArchKind::X86_64);
    let (_, _, c) = reserved(&m, t);
    let e = m.kernel_access(t, c - 16, true, 1).unwrap_err();
    assert!(
        matches!(e, Stop::Exception(x) if x.code == ExceptionCode::GuardPage),
        "{e:?}"
    );
    assert_eq!(m.counters().guard_commits, 0, "no growth from kernel mode");
    assert_eq!(
        m.virtual_query(p, c - P).unwrap().protect,
        WinProt::READWRITE
    );
    // The call can be retried; the thread's own touch of the next guard page grows.
    m.kernel_access(t, c - 16, true, 1).unwrap();
    m.store(t, c - P - 16, 2).unwrap();
    assert_eq!(m.counters().guard_commits, 1);
    assert_eq!(m.load(t, c - 16), Ok(1));
    m.check().unwrap();
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use vmspace::space::AllocKind;

    #[derive(Clone, Debug)]
    enum Op {
        Thread,
        Recurse {
            t: usize,
            pages: u64,
        },
        Poke {
            t: usize,
            s: usize,
            off: u64,
            write: bool,
        },
        Alloc {
            size: u64,
            commit: bool,
        },
        Commit {
            r: usize,
            off: u64,
            pages: u64,
            prot: u32,
        },
        Decommit {
            r: usize,
            off: u64,
            pages: u64,
        },
        Release {
            r: usize,
        },
        Touch {
            r: usize,
            off: u64,
            write: bool,
        },
        Fork,
        ExitThread {
            t: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let prot = prop_oneof![Just(0x04u32), Just(0x02), Just(0x104), Just(0x01)];
        prop_oneof![
            2 => Just(Op::Thread),
            3 => (0..8usize, 1..24u64).prop_map(|(t, pages)| Op::Recurse { t, pages }),
            2 => (0..8usize, 0..8usize, 0..0x20000u64, any::<bool>())
                .prop_map(|(t, s, off, write)| Op::Poke { t, s, off, write }),
            2 => ((1..6u64).prop_map(|n| n * 0x8000), any::<bool>())
                .prop_map(|(size, commit)| Op::Alloc { size, commit }),
            2 => (0..6usize, 0..16u64, 1..6u64, prot)
                .prop_map(|(r, off, pages, prot)| Op::Commit { r, off, pages, prot }),
            1 => (0..6usize, 0..16u64, 1..6u64).prop_map(|(r, off, pages)| Op::Decommit { r, off, pages }),
            1 => (0..6usize).prop_map(|r| Op::Release { r }),
            3 => (0..6usize, 0..0x30000u64, any::<bool>()).prop_map(|(r, off, write)| Op::Touch { r, off, write }),
            1 => Just(Op::Fork),
            1 => (0..8usize).prop_map(|t| Op::ExitThread { t }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Threads with reserve/commit stacks, Windows calls, touches, forks and exits in any
        /// order: every access ends in a value or a typed stop (never `Internal`), and the
        /// machine's invariants (frames, refcounts, RSS, entries within rights, allocation
        /// tables) hold after every step.
        #[test]
        fn machine_invariants_hold_with_windows_stacks_and_calls(ops in proptest::collection::vec(op(), 1..50)) {
            let mut m = Machine::new(16 << 20).unwrap();
            let p = m.spawn(ArchKind::X86_64).unwrap();
            let mut threads: Vec<Tid> = Vec::new();
            let mut regions: Vec<u64> = Vec::new();
            let small = StackStyle::ReserveCommit { reserve: 128 << 10, commit: P, guard_pages: 1 };
            for o in &ops {
                match *o {
                    Op::Thread => {
                        if let Ok(t) = m.spawn_thread(p, small) {
                            threads.push(t);
                        }
                    }
                    Op::Recurse { t, pages } if !threads.is_empty() => {
                        let t = threads[t % threads.len()];
                        if let Some(th) = m.thread(t).filter(|x| x.ended.is_none()) {
                            let top = th.stack.top();
                            for i in 0..pages {
                                let r = m.store(t, top - 8 - i * P, 1);
                                prop_assert!(!matches!(r, Err(Stop::Internal)));
                                if r.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    Op::Poke { t, s, off, write } if !threads.is_empty() => {
                        let t = threads[t % threads.len()];
                        let owner = threads[s % threads.len()];
                        if let Some(th) = m.thread(owner) {
                            let a = th.stack.top() - 1 - off;
                            let r = m.access(t, a, if write { Access::Write } else { Access::Read }, 3);
                            prop_assert!(!matches!(r, Err(Stop::Internal)));
                        }
                    }
                    Op::Alloc { size, commit } => {
                        let k = if commit { AllocKind::RESERVE | AllocKind::COMMIT } else { AllocKind::RESERVE };
                        if let Ok(b) = m.virtual_alloc(p, None, size, k, WinProt::READWRITE) {
                            regions.push(b);
                        }
                    }
                    Op::Commit { r, off, pages, prot } if !regions.is_empty() => {
                        let b = regions[r % regions.len()];
                        let _ = m.commit(p, b + off * P, pages * P, WinProt(prot));
                    }
                    Op::Decommit { r, off, pages } if !regions.is_empty() => {
                        let b = regions[r % regions.len()];
                        let _ = m.decommit(p, b + off * P, pages * P);
                    }
                    Op::Release { r } if !regions.is_empty() => {
                        let b = regions.remove(r % regions.len());
                        let _ = m.release(p, b);
                    }
                    Op::Touch { r, off, write } if !regions.is_empty() => {
                        let b = regions[r % regions.len()];
                        let res = m.touch(p, b + off, write, 9);
                        prop_assert!(!matches!(res, Err(Stop::Internal)));
                    }
                    Op::Fork => {
                        if let Ok(c) = m.fork(p) {
                            // The child touches what the parent's reservations hold, then exits.
                            for &b in &regions {
                                let _ = m.touch(c, b, true, 5);
                            }
                            m.exit(c);
                        }
                    }
                    Op::ExitThread { t } if !threads.is_empty() => {
                        let t = threads.remove(t % threads.len());
                        m.exit_thread(t).unwrap();
                    }
                    _ => {}
                }
                m.check().map_err(TestCaseError::fail)?;
            }
        }
    }
}

#[test]
fn w17_create_thread_stack_sizes() {
    let rc = |s: StackStyle| match s {
        StackStyle::ReserveCommit {
            reserve, commit, ..
        } => (reserve, commit),
        _ => panic!(),
    };
    assert_eq!(rc(StackStyle::create_thread(0, false)), (1 << 20, 4096));
    assert_eq!(
        StackStyle::create_thread(0, false),
        StackStyle::WINDOWS_DEFAULT
    );
    // dwStackSize is the commit size...
    assert_eq!(
        rc(StackStyle::create_thread(64 << 10, false)),
        (1 << 20, 64 << 10)
    );
    // ...at least the default reserve: the reserve is the commit rounded up to 1 MiB.
    assert_eq!(
        rc(StackStyle::create_thread(1 << 20, false)),
        (1 << 20, 1 << 20)
    );
    assert_eq!(
        rc(StackStyle::create_thread((3 << 20) + 1, false)),
        (4 << 20, (3 << 20) + 1)
    );
    // STACK_SIZE_PARAM_IS_A_RESERVATION: the reserve.
    assert_eq!(
        rc(StackStyle::create_thread(256 << 10, true)),
        (256 << 10, 4096)
    );
    // A whole-commit stack cannot hold a guard and a hard guard: refused, typed.
    let mut m = machine();
    let p = m.spawn(ArchKind::X86_64).unwrap();
    assert_eq!(
        m.spawn_thread(p, StackStyle::create_thread(1 << 20, false)),
        Err(SimError::BadStack)
    );
    let t = m
        .spawn_thread(p, StackStyle::create_thread(200 << 10, true))
        .unwrap();
    let (_, reserve, _) = reserved(&m, t);
    assert_eq!(reserve, 256 << 10, "rounded to 64 KiB");
    m.check().unwrap();
}
