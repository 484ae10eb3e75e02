//! Windows thread stacks on the simulated CPU (W15–W19): reserve, commit the top, guard
//! pages below that move down as the stack grows, overflow into the hard guard.

use vmspace::fault::ExceptionCode;
use vmspace::space::{MemState, WinProt};
use vmspace_sim::*;

const P: u64 = 4096;

fn machine() -> Machine {
    Machine::new(32 << 20).unwrap()
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
    let mut m = machine();
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t1 = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
    let t2 = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
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
    let mut m = machine();
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t1 = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
    let t2 = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
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
    let mut m = machine();
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
    // Commit limit: exactly what the stack holds now (1 page + 2 guard pages).
    m.with_mm(p, |mm, ph, tlb| {
        with_mm!(mm, x => {
            let c = x.space().commit_charge();
            x.op(ph, tlb, |s| s.set_commit_limit(Some(c)));
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
