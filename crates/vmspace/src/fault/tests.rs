//! Fault handler tests: demand-zero, COW suite, fork rollback, no leaks under a failing
//! allocator, invariants (refcount = mappings, RSS = present pages, free + used = RAM).

use super::*;
use crate::addr::VirtAddr;
use crate::arch::X86_64;
use crate::paging::NoTlb;
use crate::space::abi::*;
use crate::space::FaultCode;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub(crate) mod fixture;
mod mremap;

use fixture::*;

#[test]
fn a2_read_maps_zero_page_a3_write_allocates_zeroed() {
    let (mut p, mut mm) = setup();
    let t = &mut NoTlb;
    let a = map(&mut mm, &mut p, 0x3000, RW, PA);
    assert_eq!(mm.touch(&mut p, t, a + 5, false, 0), Ok(Some(0)));
    assert_eq!(mm.rss().total(), 0, "zero page is not resident");
    let tr = mm.page_table().translate(&p.mem, VirtAddr::new(a)).unwrap();
    assert_eq!(Frame::containing(tr.frame), p.zero_page());
    assert!(!tr.flags.contains(PageFlags::WRITABLE));
    assert!(mm.space().find_vma(a).unwrap().anon_vma.is_none());
    // Write to the zero page: COW of the zero page (A4).
    assert_eq!(mm.fault(&mut p, t, a, Access::Write), Ok(Resolved::CowZero));
    assert_eq!(mm.touch(&mut p, t, a + 1, false, 0), Ok(Some(0)));
    assert_eq!(
        mm.fault(&mut p, t, a + 0x1000, Access::Write),
        Ok(Resolved::DemandZero)
    );
    // Isolation: fresh frames are zero whatever RAM held (0xa5).
    for off in (0..0x2000).step_by(0x123) {
        assert_eq!(mm.touch(&mut p, t, a + off, false, 0), Ok(Some(0)));
    }
    mm.touch(&mut p, t, a + 0x1010, true, 7).unwrap();
    assert_eq!(mm.touch(&mut p, t, a + 0x1010, false, 0), Ok(Some(7)));
    assert_eq!(mm.rss().anon, 2);
    assert!(mm.space().find_vma(a).unwrap().anon_vma.is_some());
    check_all(&p, &[&mm]);
}

#[test]
fn f1_f3_classification() {
    let (mut p, mut mm) = setup();
    let t = &mut NoTlb;
    let a = map(&mut mm, &mut p, 0x3000, RW, PA);
    let code = |r: Result<Resolved, FaultError>| match r {
        Err(FaultError::Signal(f)) => Some(f.code),
        _ => None,
    };
    assert_eq!(
        code(mm.fault(&mut p, t, a + 0x3000, Access::Read)),
        Some(FaultCode::SegvMaperr)
    );
    mm.mprotect(&mut p, t, a, 0x1000, PROT_READ).unwrap();
    assert_eq!(
        code(mm.fault(&mut p, t, a, Access::Write)),
        Some(FaultCode::SegvAccerr)
    );
    mm.mprotect(&mut p, t, a + 0x1000, 0x1000, PROT_NONE)
        .unwrap();
    assert_eq!(
        code(mm.fault(&mut p, t, a + 0x1000, Access::Read)),
        Some(FaultCode::SegvAccerr)
    );
    // Fetch from a readable, non-exec VMA: the page is mapped (not present -> read fault),
    // then the retried fetch hits NX -> ACCERR.
    assert!(mm.fault(&mut p, t, a + 0x2000, Access::Fetch).is_ok());
    assert_eq!(
        code(mm.fault(&mut p, t, a + 0x2000, Access::Fetch)),
        Some(FaultCode::SegvAccerr)
    );
    // PROT_NONE keeps written pages resident but inaccessible; access returns after RW.
    mm.touch(&mut p, t, a + 0x2000, true, 3).unwrap();
    mm.mprotect(&mut p, t, a + 0x2000, 0x1000, PROT_NONE)
        .unwrap();
    assert!(mm.touch(&mut p, t, a + 0x2000, false, 0).is_err());
    assert_eq!(mm.rss().anon, 1);
    mm.mprotect(&mut p, t, a + 0x2000, 0x1000, PROT_READ)
        .unwrap();
    assert_eq!(mm.touch(&mut p, t, a + 0x2000, false, 0), Ok(Some(3)));
    // Kernel half: MAPERR for user mode.
    assert_eq!(
        code(mm.fault(&mut p, t, 0xffff_8000_0000_0000, Access::Read)),
        Some(FaultCode::SegvMaperr)
    );
    check_all(&p, &[&mm]);
}

#[test]
fn sigbus_beyond_eof_of_shared_object() {
    let (mut p, mut mm) = setup();
    let t = &mut NoTlb;
    let a = map(&mut mm, &mut p, 0x3000, RW, SA);
    mm.touch(&mut p, t, a + 0x2fff, true, 1).unwrap();
    // Shrink the object's mapping then grow it back: pages beyond the object SIGBUS.
    let b = mm.mremap(&mut p, t, a, 0x3000, 0x1000, 0, 0).unwrap();
    assert_eq!(b, a);
    let c = mm
        .mremap(&mut p, t, a, 0x1000, 0x5000, MREMAP_MAYMOVE, 0)
        .unwrap();
    match mm.fault(&mut p, t, c + 0x4000, Access::Read) {
        Err(FaultError::Signal(f)) => assert_eq!(f.code, FaultCode::BusAdrerr),
        r => panic!("{r:?}"),
    }
    check_all(&p, &[&mm]);
}

#[test]
fn shared_mapping_stays_shared_across_fork() {
    let (mut p, mut mm) = setup();
    let t = &mut NoTlb;
    let s = map(&mut mm, &mut p, 0x2000, RW, SA);
    mm.touch(&mut p, t, s, true, 1).unwrap();
    let mut child = mm.fork(&mut p, t).unwrap();
    child.touch(&mut p, t, s + 1, true, 2).unwrap();
    assert_eq!(mm.touch(&mut p, t, s + 1, false, 0), Ok(Some(2)));
    assert_eq!(child.touch(&mut p, t, s, false, 0), Ok(Some(1)));
    mm.touch(&mut p, t, s + 0x1000, true, 9).unwrap();
    assert_eq!(child.touch(&mut p, t, s + 0x1000, false, 0), Ok(Some(9)));
    check_all(&p, &[&mm, &child]);
    child.exit(&mut p);
    mm.exit(&mut p);
    assert_only_zero_page(&p);
}

#[test]
fn cow_chained_fork_parent_child_grandchild() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let x = map(&mut a, &mut p, 0x4000, RW, PA);
    for i in 0..4 {
        a.touch(&mut p, t, x + i * 0x1000, true, 10 + i as u8)
            .unwrap();
    }
    let mut b = a.fork(&mut p, t).unwrap();
    let mut c = b.fork(&mut p, t).unwrap();
    check_all(&p, &[&a, &b, &c]);
    let f0 = a
        .page_table()
        .translate(&p.mem, VirtAddr::new(x))
        .unwrap()
        .frame;
    assert_eq!(p.frames.ref_count(Frame::containing(f0)), Ok(3));
    // Each writes its own page 0; every other view is unchanged.
    assert_eq!(c.fault(&mut p, t, x, Access::Write), Ok(Resolved::CowCopy));
    c.touch(&mut p, t, x, true, 30).unwrap();
    b.touch(&mut p, t, x, true, 20).unwrap();
    // a is now the last sharer: reuse, no copy (A4).
    assert_eq!(a.fault(&mut p, t, x, Access::Write), Ok(Resolved::CowReuse));
    a.touch(&mut p, t, x, true, 11).unwrap();
    assert_eq!(a.touch(&mut p, t, x, false, 0), Ok(Some(11)));
    assert_eq!(b.touch(&mut p, t, x, false, 0), Ok(Some(20)));
    assert_eq!(c.touch(&mut p, t, x, false, 0), Ok(Some(30)));
    // Pages nobody wrote are still shared three ways.
    for m in [&a, &b, &c] {
        let tr = m
            .page_table()
            .translate(&p.mem, VirtAddr::new(x + 0x3000))
            .unwrap();
        assert!(!tr.flags.contains(PageFlags::WRITABLE));
        assert_eq!(p.frames.ref_count(Frame::containing(tr.frame)), Ok(3));
    }
    check_all(&p, &[&a, &b, &c]);
    b.exit(&mut p);
    c.exit(&mut p);
    check_all(&p, &[&a]);
    a.exit(&mut p);
    assert_only_zero_page(&p);
}

#[test]
fn cow_mprotect_rw_on_shared_frame_does_not_bypass_cow() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let x = map(&mut a, &mut p, 0x1000, RW, PA);
    a.touch(&mut p, t, x, true, 5).unwrap();
    let mut b = a.fork(&mut p, t).unwrap();
    a.mprotect(&mut p, t, x, 0x1000, PROT_READ).unwrap();
    a.mprotect(&mut p, t, x, 0x1000, RW).unwrap();
    let tr = a.page_table().translate(&p.mem, VirtAddr::new(x)).unwrap();
    assert!(
        !tr.flags.contains(PageFlags::WRITABLE),
        "shared frame made writable"
    );
    a.touch(&mut p, t, x, true, 6).unwrap();
    assert_eq!(b.touch(&mut p, t, x, false, 0), Ok(Some(5)));
    // b is now the only user: mprotect RW may make it writable directly.
    b.mprotect(&mut p, t, x, 0x1000, PROT_READ).unwrap();
    b.mprotect(&mut p, t, x, 0x1000, RW).unwrap();
    check_all(&p, &[&a, &b]);
}

#[test]
fn cow_written_after_fork_never_faults_twice() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let n = 16u64;
    let x = map(&mut a, &mut p, n * 0x1000, RW, PA);
    for i in 0..n {
        a.touch(&mut p, t, x + i * 0x1000, true, 1).unwrap();
    }
    let mut b = a.fork(&mut p, t).unwrap();
    for m in [&mut a, &mut b] {
        for i in 0..n {
            let va = x + i * 0x1000;
            let r = m.fault(&mut p, t, va, Access::Write).unwrap();
            assert!(matches!(r, Resolved::CowCopy | Resolved::CowReuse));
            // A second write fault on the same page finds it writable.
            assert_eq!(
                m.fault(&mut p, t, va, Access::Write),
                Ok(Resolved::Spurious)
            );
            m.touch(&mut p, t, va + 8, true, 2).unwrap();
        }
    }
    check_all(&p, &[&a, &b]);
}

#[test]
fn cow_failed_fork_leaves_no_frame_reference() {
    for budget in 0..12 {
        let (mut p, mut a) = setup();
        let t = &mut NoTlb;
        // Two far-apart regions so the child needs several tables.
        let x = map(&mut a, &mut p, 0x2000, RW, PA);
        let y = map_at(&mut a, &mut p, 0x1000_0000, 0x2000, RW, PA);
        for v in [x, x + 0x1000, y, y + 0x1000] {
            a.touch(&mut p, t, v, true, 4).unwrap();
        }
        let before = p.frames.inner.stats();
        let r = with_budget(&mut p, Some(budget), |p| a.fork(p, t));
        match r {
            Ok(c) => {
                check_all(&p, &[&a, &c]);
                c.exit(&mut p);
            }
            Err(e) => assert!(matches!(e, FaultError::OutOfMemory { .. }), "{e:?}"),
        }
        assert_eq!(p.frames.inner.stats(), before, "budget {budget}");
        check_all(&p, &[&a]);
        for v in [x, y] {
            a.touch(&mut p, t, v, true, 5).unwrap();
        }
        check_all(&p, &[&a]);
    }
}

#[test]
fn out_of_memory_in_every_fault_path_leaks_nothing() {
    // Each scenario is replayed with allocation budgets 0, 1, 2, … until it completes;
    // whenever a fault runs out of memory, the frames in use must be what they were.
    type Step = fn(&mut Mm<X86_64>, &mut P, u64) -> Result<Resolved, FaultError>;
    // `exact`: a single fault that allocates nothing it may keep on failure (a page cache
    // page created for a shared object belongs to the object and stays).
    let steps: [(Step, bool); 5] = [
        (|m, p, x| m.fault(p, &mut NoTlb, x, Access::Write), true),
        (|m, p, x| m.fault(p, &mut NoTlb, x, Access::Read), true),
        (
            |m, p, x| {
                m.fault(p, &mut NoTlb, x, Access::Read)?;
                m.fault(p, &mut NoTlb, x, Access::Write)
            },
            false,
        ),
        (
            |m, p, x| m.fault(p, &mut NoTlb, x + 0x4000, Access::Write),
            true,
        ),
        (
            |m, p, x| m.fault(p, &mut NoTlb, x + 0x8000, Access::Read),
            false,
        ),
    ];
    for (step, exact) in steps {
        for budget in 0..8 {
            let (mut p, mut a) = setup();
            let t = &mut NoTlb;
            let x = map(&mut a, &mut p, 0x4000, RW, PA);
            map_at(&mut a, &mut p, x + 0x4000, 0x4000, RW, PA);
            map_at(&mut a, &mut p, x + 0x8000, 0x2000, RW, SA);
            let mut b = a.fork(&mut p, t).unwrap();
            b.touch(&mut p, t, x + 0x4000, true, 1).unwrap();
            let mut c = b.fork(&mut p, t).unwrap();
            let before = p.frames.inner.stats();
            let r = with_budget(&mut p, Some(budget), |p| step(&mut c, p, x));
            if let Err(e) = r {
                assert!(matches!(e, FaultError::OutOfMemory { .. }), "{e:?}");
                if exact {
                    assert_eq!(p.frames.inner.stats(), before);
                }
            }
            check_all(&p, &[&a, &b, &c]);
            for m in [a, b, c] {
                m.exit(&mut p);
            }
            assert_only_zero_page(&p);
        }
    }
}

#[test]
fn munmap_dontneed_mremap_brk_keep_tables_in_sync() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let x = map(&mut a, &mut p, 0x8000, RW, PA);
    for i in 0..8 {
        a.touch(&mut p, t, x + i * 0x1000, true, i as u8 + 1)
            .unwrap();
    }
    a.munmap(&mut p, t, x + 0x7000, 0x1000).unwrap();
    assert_eq!(a.rss().anon, 7);
    a.madvise(&mut p, t, x, 0x1000, MADV_DONTNEED).unwrap();
    assert_eq!(a.touch(&mut p, t, x, false, 0), Ok(Some(0)));
    assert_eq!(a.rss().anon, 6);
    // mremap move: contents follow.
    let y = a
        .mremap(&mut p, t, x + 0x1000, 0x2000, 0x10000, MREMAP_MAYMOVE, 0)
        .unwrap();
    assert_ne!(y, x + 0x1000);
    assert_eq!(a.touch(&mut p, t, y + 0x1000, false, 0), Ok(Some(3)));
    assert!(a.touch(&mut p, t, x + 0x1000, false, 0).is_err());
    // MAP_FIXED over written pages: fresh zeros.
    map_at(&mut a, &mut p, x + 0x3000, 0x1000, RW, PA);
    assert_eq!(a.touch(&mut p, t, x + 0x3000, false, 0), Ok(Some(0)));
    assert_eq!(a.touch(&mut p, t, x + 0x4000, false, 0), Ok(Some(5)));
    check_all(&p, &[&a]);
    // brk shrink releases pages.
    a.op(&mut p, t, |s| s.set_brk(0x60_0000, 0x60_0000));
    a.brk(&mut p, t, 0x60_4000);
    a.touch(&mut p, t, 0x60_3000, true, 1).unwrap();
    let before = a.rss().anon;
    a.brk(&mut p, t, 0x60_1000);
    assert_eq!(a.rss().anon, before - 1);
    check_all(&p, &[&a]);
    a.exit(&mut p);
    assert_only_zero_page(&p);
}

#[test]
fn stack_grows_within_rlimit_and_guard_gap() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let top = 0x7fff_ffff_f000u64;
    map_at(
        &mut a,
        &mut p,
        top - 0x21000,
        0x21000,
        RW,
        PA | MAP_GROWSDOWN,
    );
    // S3: beyond 8 MiB -> MAPERR; within -> grows and maps.
    assert!(matches!(
        a.fault(&mut p, t, top - (9 << 20), Access::Write),
        Err(FaultError::Signal(f)) if f.code == FaultCode::SegvMaperr
    ));
    assert_eq!(
        a.fault(&mut p, t, top - (7 << 20), Access::Write),
        Ok(Resolved::DemandZero)
    );
    assert_eq!(a.space().find_vma(top - 1).unwrap().start, top - (7 << 20));
    check_all(&p, &[&a]);
}

#[test]
fn i386_fork_and_cow() {
    let (mut p, mut a) = setup_i386();
    let t = &mut NoTlb;
    let x = map(&mut a, &mut p, 0x2000, RW, PA);
    a.touch(&mut p, t, x, true, 1).unwrap();
    let mut b = a.fork(&mut p, t).unwrap();
    b.touch(&mut p, t, x, true, 2).unwrap();
    assert_eq!(a.touch(&mut p, t, x, false, 0), Ok(Some(1)));
    check_all(&p, &[&a, &b]);
    let v: Vec<_> = b.user_pages(&p.mem);
    assert_eq!(v.len(), 1);
    a.exit(&mut p);
    b.exit(&mut p);
    assert_only_zero_page(&p);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn access() -> impl Strategy<Value = Access> {
        prop_oneof![Just(Access::Read), Just(Access::Write), Just(Access::Fetch)]
    }

    fn addr() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..0x2_0000,
            0x7fff_f000_0000u64..0x8000_0000_1000,
            0xffff_7fff_ffff_f000u64..=u64::MAX,
            any::<u64>(),
            0x7fff_ff00_0000u64..0x7fff_ffff_f000,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any address, any access: the handler never panics, agrees with the space's own
        /// touch on the signal (F1–F3, S1–S4, 6.4), and leaves every invariant intact.
        #[test]
        fn any_fault_is_classified_like_touch(
            faults in prop::collection::vec((addr(), access()), 1..40),
            i386 in any::<bool>(),
        ) {
            let t = &mut NoTlb;
            if i386 {
                let (mut p, mut mm) = setup_i386();
                run(&mut mm, &mut p, t, &faults)?;
            } else {
                let (mut p, mut mm) = setup();
                run(&mut mm, &mut p, t, &faults)?;
            }
        }
    }

    /// One step of [`contents_follow_the_oracle`].
    #[derive(Clone, Debug)]
    enum Step {
        Touch {
            page: u64,
            off: u64,
            write: bool,
            value: u8,
        },
        Dontneed {
            page: u64,
            pages: u64,
        },
        Mprotect {
            page: u64,
            pages: u64,
            prot: u64,
        },
        Munmap {
            page: u64,
            pages: u64,
        },
        NoHugepage,
        Populate {
            page: u64,
            pages: u64,
        },
    }

    /// Base of the region the steps work in: 4 MiB, 2 MiB-aligned.
    const BASE: u64 = 0x4000_0000;

    fn step() -> impl Strategy<Value = Step> {
        let page = prop_oneof![0u64..16, 500u64..530, 1000u64..1024];
        prop_oneof![
            6 => (page.clone(), 0u64..4096, any::<bool>(), any::<u8>())
                .prop_map(|(page, off, write, value)| Step::Touch { page, off, write, value }),
            1 => (page.clone(), 1u64..40).prop_map(|(page, pages)| Step::Dontneed { page, pages }),
            1 => (page.clone(), 1u64..40, prop_oneof![Just(PROT_NONE), Just(PROT_READ), Just(RW)])
                .prop_map(|(page, pages, prot)| Step::Mprotect { page, pages, prot }),
            1 => (page.clone(), 1u64..8).prop_map(|(page, pages)| Step::Munmap { page, pages }),
            1 => Just(Step::NoHugepage),
            1 => (page, 1u64..16).prop_map(|(page, pages)| Step::Populate { page, pages }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// The page-table path against the reference oracle (`AddressSpace::touch`, the
        /// VMA-level content model): after any mix of touches, DONTNEED, mprotect, munmap,
        /// MADV_NOHUGEPAGE and MADV_POPULATE_WRITE, every touch reads the same byte or raises
        /// the same signal, syscalls return the same, the VMAs (with whether each has an
        /// anon_vma) are equal, and the frame and RSS invariants hold. (The oracle has no THP:
        /// THP faults are judged by Linux in the differential suite, `F-rss.jsonl`.)
        #[test]
        fn contents_follow_the_oracle(steps in prop::collection::vec(step(), 1..60)) {
            let (mut p, mut mm) = setup();
            let t = &mut NoTlb;
            map_at(&mut mm, &mut p, BASE, 4 << 20, RW, PA);
            let mut oracle = mm.space().clone();
            for st in &steps {
                let at = |page: u64| BASE + page * 4096;
                match *st {
                    Step::Touch { page, off, write, value } => {
                        let a = at(page) + off;
                        let got = mm.touch(&mut p, t, a, write, value);
                        let want = oracle.touch(a, write, value);
                        match got {
                            Ok(v) => prop_assert_eq!(Ok(v), want, "{:?}", st),
                            Err(FaultError::Signal(f)) => prop_assert_eq!(Err(f), want, "{:?}", st),
                            Err(e) => prop_assert!(false, "{:?}: {:?}", st, e),
                        }
                    }
                    Step::Dontneed { page, pages } => {
                        let r = mm.madvise(&mut p, t, at(page), pages * 4096, MADV_DONTNEED);
                        prop_assert_eq!(r, oracle.madvise(at(page), pages * 4096, MADV_DONTNEED));
                    }
                    Step::Mprotect { page, pages, prot } => {
                        let r = mm.mprotect(&mut p, t, at(page), pages * 4096, prot);
                        prop_assert_eq!(r, oracle.mprotect(at(page), pages * 4096, prot));
                    }
                    Step::Munmap { page, pages } => {
                        let r = mm.munmap(&mut p, t, at(page), pages * 4096);
                        prop_assert_eq!(r, oracle.munmap(at(page), pages * 4096));
                    }
                    Step::NoHugepage => {
                        let r = mm.madvise(&mut p, t, BASE, 4 << 20, MADV_NOHUGEPAGE);
                        prop_assert_eq!(r, oracle.madvise(BASE, 4 << 20, MADV_NOHUGEPAGE));
                    }
                    Step::Populate { page, pages } => {
                        let r = mm.madvise(&mut p, t, at(page), pages * 4096, MADV_POPULATE_WRITE);
                        prop_assert_eq!(r, oracle.madvise(at(page), pages * 4096, MADV_POPULATE_WRITE));
                    }
                }
                let key = |v: &crate::space::Vma| (v.start, v.end, v.flags, v.anon_vma.is_some());
                let v1: Vec<_> = mm.space().vmas().map(key).collect();
                let v2: Vec<_> = oracle.vmas().map(key).collect();
                prop_assert_eq!(v1, v2, "after {:?}", st);
                check_all(&p, &[&mm]);
            }
        }
    }

    fn run<A: crate::arch::Arch>(
        mm: &mut Mm<A>,
        p: &mut P,
        t: &mut NoTlb,
        faults: &[(u64, Access)],
    ) -> Result<(), TestCaseError> {
        let top = mm.space().layout().stack_top;
        map_at(mm, p, top - 0x21000, 0x21000, RW, PA | MAP_GROWSDOWN);
        map_at(mm, p, 0x1_0000, 0x4000, PROT_READ, PA);
        map_at(mm, p, 0x1_4000, 0x4000, RW, PA);
        map_at(mm, p, 0x1_8000, 0x2000, PROT_NONE, PA);
        let mut oracle = mm.space().clone();
        for &(a, acc) in faults {
            let r = mm.fault(p, t, a, acc);
            let want = oracle.touch(a, acc == Access::Write, 0);
            match r {
                Err(FaultError::Signal(f)) => {
                    if acc != Access::Fetch {
                        prop_assert_eq!(Err(f), want, "{:#x} {:?}", a, acc);
                    }
                }
                Ok(_) => {
                    if acc != Access::Fetch {
                        prop_assert!(want.is_ok(), "{:#x} {:?}: {:?}", a, acc, want);
                    }
                }
                Err(e) => prop_assert!(false, "{:#x}: {:?}", a, e),
            }
            // Stack growth happens in both.
            let v1: Vec<_> = mm.space().vmas().map(|v| (v.start, v.end)).collect();
            let v2: Vec<_> = oracle.vmas().map(|v| (v.start, v.end)).collect();
            prop_assert_eq!(v1, v2);
            check_all(p, &[&*mm]);
        }
        Ok(())
    }
}

#[test]
fn populate_paths_fault_pages_in_like_linux() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    // MAP_POPULATE of writable private memory: write faults, resident.
    let x = map(&mut a, &mut p, 0x4000, RW, PA | MAP_POPULATE);
    assert_eq!(a.range_rss(&p.mem, p.zero_page(), x, x + 0x4000).anon, 4);
    // Read-only private: read faults map the zero page, nothing resident.
    let y = map(&mut a, &mut p, 0x4000, PROT_READ, PA | MAP_POPULATE);
    assert_eq!(a.range_rss(&p.mem, p.zero_page(), y, y + 0x4000).rss, 0);
    assert_eq!(a.user_pages(&p.mem).len(), 8);
    // MAP_POPULATE | MAP_NONBLOCK populates nothing.
    let z = map(&mut a, &mut p, 0x2000, RW, PA | MAP_POPULATE | MAP_NONBLOCK);
    assert_eq!(a.range_rss(&p.mem, p.zero_page(), z, z + 0x2000).rss, 0);
    // mlock faults in; MLOCK_ONFAULT does not.
    a.mlock(&mut p, t, z, 0x1000, 0).unwrap();
    assert_eq!(a.range_rss(&p.mem, p.zero_page(), z, z + 0x2000).rss, 1);
    a.mlock(&mut p, t, z + 0x1000, 0x1000, 1).unwrap();
    assert_eq!(a.range_rss(&p.mem, p.zero_page(), z, z + 0x2000).rss, 1);
    // Shared anonymous memory populates through the page cache (a read fault allocates).
    let s = map(&mut a, &mut p, 0x2000, RW, SA | MAP_POPULATE);
    assert_eq!(a.rss().shmem, 2);
    let r = a.range_rss(&p.mem, p.zero_page(), s, s + 0x2000);
    assert_eq!((r.rss, r.anon), (2, 0));
    check_all(&p, &[&a]);
}

/// A populate that runs out of frames stops where it did and says so (`Starved::Populate`,
/// for a caller that frees frames and goes on); the mmap itself succeeds, as
/// `__mm_populate` ignores the error. Without a shortage nothing is reported.
#[test]
fn populate_out_of_frames_reports_the_rest() {
    let (mut p, mut a) = setup();
    let x = map(&mut a, &mut p, 0x4000, RW, PA | MAP_POPULATE);
    assert!(a.take_starved().is_empty());
    // Two frames: a page table and one page.
    let y = with_budget(&mut p, Some(2), |p| {
        a.mmap(
            p,
            &mut NoTlb,
            x + 0x40_0000,
            0x4000,
            RW,
            PA | MAP_POPULATE | MAP_FIXED,
            None,
            0,
        )
    });
    assert_eq!(y, Ok(x + 0x40_0000));
    let y = x + 0x40_0000;
    assert_eq!(a.range_rss(&p.mem, p.zero_page(), y, y + 0x4000).anon, 1);
    let starved = alloc::vec![Starved::Populate {
        start: y + 0x1000,
        end: y + 0x4000,
        write: true,
    }];
    assert_eq!(a.take_starved(), starved);
    // A later operation starts with a clean report.
    a.munmap(&mut p, &mut NoTlb, y, 0x4000).unwrap();
    assert!(a.take_starved().is_empty());
    check_all(&p, &[&a]);
}

#[test]
fn dontneed_on_shared_memory_keeps_the_data_mremap_keeps_cow() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let s = map(&mut a, &mut p, 0x2000, RW, SA);
    a.touch(&mut p, t, s, true, 5).unwrap();
    a.madvise(&mut p, t, s, 0x2000, MADV_DONTNEED).unwrap();
    assert_eq!(a.rss().shmem, 0);
    assert_eq!(a.touch(&mut p, t, s, false, 0), Ok(Some(5)));
    // A COW-shared range moved by mremap stays COW-shared.
    let x = map(&mut a, &mut p, 0x2000, RW, PA);
    a.touch(&mut p, t, x, true, 1).unwrap();
    let mut b = a.fork(&mut p, t).unwrap();
    let y = b
        .mremap(&mut p, t, x, 0x2000, 0x20000, MREMAP_MAYMOVE, 0)
        .unwrap();
    assert_ne!(x, y);
    check_all(&p, &[&a, &b]);
    b.touch(&mut p, t, y, true, 2).unwrap();
    assert_eq!(a.touch(&mut p, t, x, false, 0), Ok(Some(1)));
    assert_eq!(b.touch(&mut p, t, y, false, 0), Ok(Some(2)));
    // MREMAP_DONTUNMAP: the pages go, the source stays mapped and reads zero.
    let z = a
        .mremap(
            &mut p,
            t,
            x,
            0x2000,
            0x2000,
            MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
            0,
        )
        .unwrap();
    assert_eq!(a.touch(&mut p, t, z, false, 0), Ok(Some(1)));
    assert_eq!(a.touch(&mut p, t, x, false, 0), Ok(Some(0)));
    check_all(&p, &[&a, &b]);
    // WIPEONFORK: the child starts with zeros; DONTFORK: the child has no such VMA.
    let w = map(&mut a, &mut p, 0x1000, RW, PA);
    a.touch(&mut p, t, w, true, 3).unwrap();
    a.madvise(&mut p, t, w, 0x1000, MADV_WIPEONFORK).unwrap();
    let d = map(&mut a, &mut p, 0x1000, RW, PA);
    a.touch(&mut p, t, d, true, 4).unwrap();
    a.madvise(&mut p, t, d, 0x1000, MADV_DONTFORK).unwrap();
    let mut c = a.fork(&mut p, t).unwrap();
    assert_eq!(c.touch(&mut p, t, w, false, 0), Ok(Some(0)));
    assert!(c.touch(&mut p, t, d, false, 0).is_err());
    assert_eq!(a.touch(&mut p, t, w, false, 0), Ok(Some(3)));
    check_all(&p, &[&a, &b, &c]);
}

#[test]
fn private_file_pages_share_the_cache_until_written() {
    use crate::space::FileRef;
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let f = FileRef {
        id: 7,
        size: 0x3000,
        name: "/memfd:f (deleted)".into(),
        dev: (0, 1),
        inode: 7,
        writable: true,
        shmem: true,
    };
    let sh = a
        .mmap(&mut p, t, 0, 0x3000, RW, MAP_SHARED, Some(f.clone()), 0)
        .unwrap();
    let pr = a
        .mmap(&mut p, t, 0, 0x3000, RW, MAP_PRIVATE, Some(f), 0)
        .unwrap();
    a.touch(&mut p, t, sh + 1, true, 9).unwrap();
    assert_eq!(a.touch(&mut p, t, pr + 1, false, 0), Ok(Some(9)));
    // The private view follows the file until it writes (FileCopy), then keeps its copy.
    assert_eq!(
        a.fault(&mut p, t, pr, Access::Write),
        Ok(Resolved::FileCopy)
    );
    a.touch(&mut p, t, sh + 1, true, 10).unwrap();
    assert_eq!(a.touch(&mut p, t, pr + 1, false, 0), Ok(Some(9)));
    let r = a.range_rss(&p.mem, p.zero_page(), pr, pr + 0x3000);
    assert_eq!((r.rss, r.anon), (1, 1));
    check_all(&p, &[&a]);
}

/// do_fault_around: a read fault on a shared-memory page also maps the object's pages that
/// are already cached within the 16-page aligned window (clamped to the VMA); a write fault
/// does not; guard regions and present entries are left alone.
#[test]
fn read_fault_maps_cached_pages_around() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    // 32 pages of shared memory at a 64 KiB-aligned address, filled through itself.
    let s = map_at(&mut a, &mut p, 0x4000_0000, 0x20000, RW, SA);
    for i in [1u64, 3, 17, 20] {
        a.touch(&mut p, t, s + i * 0x1000, true, i as u8).unwrap();
    }
    // Drop the mappings (the pages stay in the object's cache), then read page 2: pages 1
    // and 3 come back with it, 17 and 20 lie in the next window.
    a.madvise(&mut p, t, s, 0x20000, MADV_DONTNEED).unwrap();
    assert_eq!(a.rss().shmem, 0);
    assert_eq!(a.touch(&mut p, t, s + 0x2000, false, 0), Ok(Some(0)));
    let r = a.range_rss(&p.mem, p.zero_page(), s, s + 0x20000);
    assert_eq!((r.rss, r.anon), (3, 0));
    assert_eq!(a.rss().shmem, 3);
    // A write fault maps only its page.
    a.touch(&mut p, t, s + 0x13000, true, 9).unwrap();
    assert_eq!(a.rss().shmem, 4);
    check_all(&p, &[&a]);
    // The next window: reading page 17 maps 20 as well (19, written, is present already).
    assert_eq!(a.touch(&mut p, t, s + 0x11000, false, 0), Ok(Some(17)));
    assert_eq!(a.rss().shmem, 6);
    check_all(&p, &[&a]);
}

/// do_mremap populates the grown part of an mlocked VMA (in place and moved).
#[test]
fn mremap_of_locked_memory_populates_the_growth() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let x = map_at(&mut a, &mut p, 0x4000_0000, 0x2000, RW, PA | MAP_LOCKED);
    assert_eq!(a.rss().anon, 2);
    a.mremap(&mut p, t, x, 0x2000, 0x5000, 0, 0).unwrap();
    assert_eq!(a.rss().anon, 5);
    // Unlocked memory grows without being populated.
    let y = map_at(&mut a, &mut p, 0x5000_0000, 0x1000, RW, PA);
    a.mremap(&mut p, t, y, 0x1000, 0x3000, 0, 0).unwrap();
    assert_eq!(a.rss().anon, 5);
    check_all(&p, &[&a]);
}

/// Transparent huge pages (THP "madvise"): a write in a VM_HUGEPAGE block that has no page
/// table yet faults in the whole 2 MiB block; a read maps the (huge) zero page and a later
/// write in that block faults it all in; a block with a table, or VM_NOHUGEPAGE memory,
/// takes 4 KiB faults.
#[test]
fn thp_blocks_fault_in_whole() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let len = 6 << 20;
    let x = map_at(&mut a, &mut p, 0x4000_0000, len, RW, PA);
    // A 4 KiB fault before the advice leaves a table in the first block.
    a.touch(&mut p, t, x, true, 1).unwrap();
    a.madvise(&mut p, t, x, len, MADV_HUGEPAGE).unwrap();
    a.touch(&mut p, t, x + 0x5000, true, 2).unwrap();
    assert_eq!(a.rss().anon, 2);
    // Second block: one write, 512 pages.
    a.touch(&mut p, t, x + (2 << 20) + 7, true, 3).unwrap();
    assert_eq!(a.rss().anon, 2 + 512);
    assert!(a.space().find_vma(x).unwrap().anon_vma.is_some());
    // Third block: a read maps nothing resident, a write elsewhere in it faults it all in.
    assert_eq!(a.touch(&mut p, t, x + (4 << 20), false, 0), Ok(Some(0)));
    assert_eq!(a.rss().anon, 2 + 512);
    a.touch(&mut p, t, x + (5 << 20), true, 4).unwrap();
    assert_eq!(a.rss().anon, 2 + 1024);
    assert_eq!(a.touch(&mut p, t, x + (2 << 20) + 7, false, 0), Ok(Some(3)));
    // DONTNEED of one page splits the block.
    a.madvise(&mut p, t, x + (2 << 20), 0x1000, MADV_DONTNEED)
        .unwrap();
    assert_eq!(a.rss().anon, 2 + 1023);
    check_all(&p, &[&a]);
    // VM_NOHUGEPAGE: 4 KiB.
    let y = map_at(&mut a, &mut p, 0x5000_0000, 4 << 20, RW, PA);
    a.madvise(&mut p, t, y, 4 << 20, MADV_NOHUGEPAGE).unwrap();
    a.touch(&mut p, t, y + (2 << 20), true, 5).unwrap();
    assert_eq!(a.rss().anon, 2 + 1024);
    check_all(&p, &[&a]);
}
