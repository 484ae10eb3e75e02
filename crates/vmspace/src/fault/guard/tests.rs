//! W8, W13, W15 on an `Mm` with real page tables.

use super::super::tests::fixture::{setup, setup_i386};
use super::*;
use crate::paging::NoTlb;
use crate::space::abi::*;
use crate::space::windows::{AllocKind, WinProt};

const R: AllocKind = AllocKind::RESERVE;
const C: AllocKind = AllocKind::COMMIT;
const RW: WinProt = WinProt::READWRITE;

fn exc(r: Result<Option<u8>, FaultError>) -> (ExceptionCode, u64) {
    match r {
        Err(FaultError::Exception(e)) => (e.code, e.info0()),
        other => panic!("expected an exception, got {other:?}"),
    }
}

#[test]
fn w13_reserved_noaccess_readonly_and_dep_raise_access_violations() {
    let (mut p, mut m) = setup();
    let t = &mut NoTlb;
    let a = m.virtual_alloc(&mut p, t, None, 0x10000, R, RW).unwrap();
    assert_eq!(
        exc(m.touch(&mut p, t, a, false, 0)),
        (ExceptionCode::AccessViolation, 0),
        "reserved page, read"
    );
    assert_eq!(
        exc(m.touch(&mut p, t, a, true, 1)),
        (ExceptionCode::AccessViolation, 1)
    );
    m.commit(&mut p, t, a, 0x1000, WinProt::NOACCESS).unwrap();
    assert_eq!(
        exc(m.touch(&mut p, t, a, false, 0)),
        (ExceptionCode::AccessViolation, 0)
    );
    m.commit(&mut p, t, a + 0x1000, 0x1000, WinProt::READONLY)
        .unwrap();
    assert_eq!(m.touch(&mut p, t, a + 0x1000, false, 0), Ok(Some(0)));
    assert_eq!(
        exc(m.touch(&mut p, t, a + 0x1000, true, 1)),
        (ExceptionCode::AccessViolation, 1)
    );
    // DEP: a fetch from a READWRITE page.
    m.commit(&mut p, t, a + 0x2000, 0x1000, RW).unwrap();
    let e = m.fault(&mut p, t, a + 0x2000, Access::Fetch);
    assert!(
        matches!(e, Err(FaultError::Exception(x)) if x.code == ExceptionCode::AccessViolation && x.info0() == 8)
    );
    // Free pages: Linux rules (SIGSEGV MAPERR), which Windows sees as an access violation.
    let f = m.touch(&mut p, t, 0x10_0000_0000, false, 0).unwrap_err();
    let FaultError::Signal(sig) = f else {
        panic!("{f:?}")
    };
    assert_eq!(
        WinException::from_signal(sig, Access::Read).map(|e| e.code.code()),
        Some(0xC000_0005)
    );
    m.check(&p).unwrap();
}

#[test]
fn w15_guard_page_is_one_shot_per_page_then_base_protection() {
    let (mut p, mut m) = setup();
    let t = &mut NoTlb;
    let a = m.virtual_alloc(&mut p, t, None, 0x10000, R, RW).unwrap();
    m.commit(&mut p, t, a, 0x3000, RW | WinProt::GUARD).unwrap();
    // First access of any kind: no access happens, the bit of that one page is cleared.
    assert_eq!(
        exc(m.touch(&mut p, t, a + 0x1010, true, 9)),
        (ExceptionCode::GuardPage, 1)
    );
    assert_eq!(m.space().virtual_query(a + 0x1000).unwrap().protect, RW);
    assert_eq!(
        m.space().virtual_query(a).unwrap().protect,
        RW | WinProt::GUARD
    );
    assert_eq!(
        m.space().virtual_query(a + 0x2000).unwrap().protect,
        RW | WinProt::GUARD
    );
    assert_eq!(
        m.touch(&mut p, t, a + 0x1010, false, 0),
        Ok(Some(0)),
        "the write did not happen"
    );
    m.touch(&mut p, t, a + 0x1010, true, 9).unwrap();
    assert_eq!(m.touch(&mut p, t, a + 0x1010, false, 0), Ok(Some(9)));
    // A read of another guard page: its own one-shot exception.
    assert_eq!(
        exc(m.touch(&mut p, t, a + 0x2000, false, 0)),
        (ExceptionCode::GuardPage, 0)
    );
    assert_eq!(m.touch(&mut p, t, a + 0x2000, false, 0), Ok(Some(0)));
    // Guarding a page that holds data: contents kept behind the guard.
    assert_eq!(
        m.virtual_protect(&mut p, t, a + 0x1000, 1, RW | WinProt::GUARD),
        Ok(RW)
    );
    assert_eq!(
        exc(m.touch(&mut p, t, a + 0x1010, false, 0)),
        (ExceptionCode::GuardPage, 0)
    );
    assert_eq!(m.touch(&mut p, t, a + 0x1010, false, 0), Ok(Some(9)));
    // Guard on a read-only base: after the one shot a write is an access violation.
    m.commit(
        &mut p,
        t,
        a + 0x5000,
        0x1000,
        WinProt::READONLY | WinProt::GUARD,
    )
    .unwrap();
    assert_eq!(
        exc(m.touch(&mut p, t, a + 0x5000, true, 1)),
        (ExceptionCode::GuardPage, 1)
    );
    assert_eq!(
        exc(m.touch(&mut p, t, a + 0x5000, true, 1)),
        (ExceptionCode::AccessViolation, 1)
    );
    m.check(&p).unwrap();
    m.space().check_invariants().unwrap();
    m.space().win_check_prot().unwrap();
}

#[test]
fn w08_decommit_frees_frames_and_recommit_reads_zero_on_i386_and_x86_64() {
    let (mut p, mut m) = setup_i386();
    let t = &mut NoTlb;
    let free0 = p.frames.free_frames();
    let a = m
        .virtual_alloc(&mut p, t, None, 0x20000, R | C, RW)
        .unwrap();
    for i in 0..32 {
        m.touch(&mut p, t, a + i * 0x1000, true, i as u8 + 1)
            .unwrap();
    }
    assert_eq!(m.rss().anon, 32);
    m.decommit(&mut p, t, a + 0x4000, 0x8000).unwrap();
    assert_eq!(m.rss().anon, 24);
    assert_eq!(
        exc(m.touch(&mut p, t, a + 0x4000, false, 0)),
        (ExceptionCode::AccessViolation, 0)
    );
    m.commit(&mut p, t, a + 0x4000, 0x8000, RW).unwrap();
    assert_eq!(m.touch(&mut p, t, a + 0x4000, false, 0), Ok(Some(0)));
    assert_eq!(m.touch(&mut p, t, a + 0x3000, false, 0), Ok(Some(4)));
    m.check(&p).unwrap();
    m.release(&mut p, t, a, 0).unwrap();
    assert_eq!(m.rss().anon, 0);
    assert_eq!(m.space().commit_charge(), 0);
    // Page tables of the range may stay (Linux frees them only with the whole block).
    assert!(p.frames.free_frames() + 2 >= free0);
    m.check(&p).unwrap();
    m.exit(&mut p);
}

#[test]
fn protect_of_present_pages_follows_the_table() {
    let (mut p, mut m) = setup();
    let t = &mut NoTlb;
    let a = m.virtual_alloc(&mut p, t, None, 0x4000, C, RW).unwrap();
    m.touch(&mut p, t, a, true, 5).unwrap();
    assert_eq!(
        m.virtual_protect(&mut p, t, a, 0x4000, WinProt::READONLY),
        Ok(RW)
    );
    assert_eq!(
        exc(m.touch(&mut p, t, a, true, 1)),
        (ExceptionCode::AccessViolation, 1)
    );
    assert_eq!(m.touch(&mut p, t, a, false, 0), Ok(Some(5)));
    // Committing again with READWRITE re-derives the entries too.
    m.commit(&mut p, t, a, 0x1000, RW).unwrap();
    m.touch(&mut p, t, a, true, 6).unwrap();
    m.check(&p).unwrap();
    // A Linux munmap in the middle ends the reservation and frees the frame.
    m.munmap(&mut p, t, a, 0x1000).unwrap();
    assert!(m.space().win_table().is_empty());
    assert_eq!(m.rss().anon, 0);
    let _ = PROT_READ;
    m.check(&p).unwrap();
}

mod props {
    use super::*;
    use crate::space::MemState;
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const LO: u64 = 0x10000;
    const SPAN: u64 = 4 * 0x10000;

    #[derive(Clone, Debug)]
    enum Op {
        Reserve(u64, u64, bool),
        Commit(u64, u64, u32),
        Decommit(u64, u64),
        Release(u64),
        Protect(u64, u64, u32),
        Touch(u64, u8, u8),
    }

    fn prot() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(0x04u32),
            Just(0x02),
            Just(0x01),
            Just(0x20),
            Just(0x40),
            Just(0x104),
            Just(0x102),
        ]
    }

    fn addr() -> impl Strategy<Value = u64> {
        (0..SPAN / 4096, 0..4096u64).prop_map(|(p, o)| LO + p * 4096 + o)
    }

    fn op() -> impl Strategy<Value = Op> {
        let pages = (1..8u64).prop_map(|n| n * 4096);
        prop_oneof![
            4 => (addr(), (1..4u64).prop_map(|n| n * 0x10000), any::<bool>())
                .prop_map(|(a, s, c)| Op::Reserve(a, s, c)),
            4 => (addr(), pages.clone(), prot()).prop_map(|(a, s, p)| Op::Commit(a, s, p)),
            1 => (addr(), pages.clone()).prop_map(|(a, s)| Op::Decommit(a, s)),
            1 => addr().prop_map(|a| Op::Release(a & !0xffff)),
            2 => (addr(), pages, prot()).prop_map(|(a, s, p)| Op::Protect(a, s, p)),
            8 => (addr(), 0..3u8, any::<u8>()).prop_map(|(a, k, v)| Op::Touch(a, k, v)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Touches follow the table (W8, W13, W15): reserved and refused accesses are access
        /// violations, a guard page raises once and loses its bit, committed memory keeps what
        /// was written until decommitted or released and reads zero after; frames, RSS and
        /// entries stay consistent (`Mm::check`).
        #[test]
        fn touches_follow_the_table(ops in proptest::collection::vec(op(), 1..80)) {
            let (mut p, mut m) = setup();
            let t = &mut NoTlb;
            // Written bytes by address.
            let mut bytes: BTreeMap<u64, u8> = BTreeMap::new();
            for o in &ops {
                match *o {
                    Op::Reserve(a, s, c) => {
                        let k = if c { R | C } else { R };
                        let _ = m.virtual_alloc(&mut p, t, Some(a), s, k, RW);
                    }
                    Op::Commit(a, s, pr) => {
                        let _ = m.commit(&mut p, t, a, s, WinProt(pr));
                    }
                    Op::Decommit(a, s) => {
                        if m.decommit(&mut p, t, a, s).is_ok() {
                            let lo = a & !0xfff;
                            let hi = (a + s + 0xfff) & !0xfff;
                            let gone: Vec<u64> = bytes.range(lo..hi).map(|(k, _)| *k).collect();
                            for k in gone {
                                bytes.remove(&k);
                            }
                        }
                    }
                    Op::Release(b) => {
                        let size = m.space().win_table().get(b).map(|x| x.size);
                        if m.release(&mut p, t, b, 0).is_ok() {
                            let gone: Vec<u64> =
                                bytes.range(b..b + size.unwrap()).map(|(k, _)| *k).collect();
                            for k in gone {
                                bytes.remove(&k);
                            }
                        }
                    }
                    Op::Protect(a, s, pr) => {
                        let _ = m.virtual_protect(&mut p, t, a, s, WinProt(pr));
                    }
                    Op::Touch(a, kind, v) => {
                        let q = m.space().virtual_query(a).unwrap();
                        let access = [Access::Read, Access::Write, Access::Fetch][kind as usize];
                        let k = access_kind(access);
                        let r = match access {
                            Access::Fetch => m.fault(&mut p, t, a, access).map(|_| None),
                            _ => m.touch(&mut p, t, a, kind == 1, v),
                        };
                        match q.state {
                            MemState::Free => prop_assert!(matches!(r, Err(FaultError::Signal(_))), "{:?}", r),
                            MemState::Reserve => prop_assert!(
                                matches!(r, Err(FaultError::Exception(e)) if e.code == ExceptionCode::AccessViolation && e.info0() == k as u64),
                                "{:?}", r
                            ),
                            MemState::Commit if q.protect.is_guard() => {
                                prop_assert!(matches!(r, Err(FaultError::Exception(e)) if e.code == ExceptionCode::GuardPage), "{:?}", r);
                                let after = m.space().virtual_query(a).unwrap();
                                prop_assert_eq!(after.protect, q.protect.with_guard(false));
                            }
                            MemState::Commit if !q.protect.allows(k) => prop_assert!(
                                matches!(r, Err(FaultError::Exception(e)) if e.code == ExceptionCode::AccessViolation),
                                "{:?} {:?}", q.protect, r
                            ),
                            MemState::Commit => match access {
                                Access::Read => prop_assert_eq!(r, Ok(Some(*bytes.get(&a).unwrap_or(&0)))),
                                Access::Write => {
                                    prop_assert_eq!(r, Ok(None));
                                    bytes.insert(a, v);
                                }
                                Access::Fetch => prop_assert!(r.is_ok(), "{:?}", r),
                            },
                        }
                    }
                }
                m.check(&p).map_err(TestCaseError::fail)?;
                m.space().check_invariants().map_err(TestCaseError::fail)?;
                m.space().win_check_prot().map_err(TestCaseError::fail)?;
            }
        }
    }
}

#[test]
fn unaligned_commit_through_virtual_alloc_reprotects_every_page_it_touches() {
    let (mut p, mut m) = setup();
    let t = &mut NoTlb;
    let a = m.virtual_alloc(&mut p, t, None, 0x4000, R | C, RW).unwrap();
    m.touch(&mut p, t, a + 0x1000, true, 4).unwrap();
    m.virtual_protect(&mut p, t, a, 0x4000, WinProt::READONLY)
        .unwrap();
    // MEM_COMMIT over committed pages with a new protection: both touched pages change.
    m.virtual_alloc(&mut p, t, Some(a + 0x800), 0x1000, C, RW)
        .unwrap();
    m.touch(&mut p, t, a + 0x1000, true, 5).unwrap();
    assert_eq!(m.touch(&mut p, t, a + 0x1000, false, 0), Ok(Some(5)));
    m.check(&p).unwrap();
}
