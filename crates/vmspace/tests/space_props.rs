//! Property tests of the space model: after every random operation the structural invariants
//! hold (sorted, non-overlapping, gap index equal to brute force, counters), and — for
//! operation mixes that Linux never leaves unmerged — no two adjacent VMAs are mergeable.

use proptest::prelude::*;
use vmspace::space::abi::*;
use vmspace::space::{AddressSpace, SpaceConfig, TaskKind};

const BASE: u64 = 0x1000_0000;

#[derive(Clone, Debug)]
enum Op {
    Mmap {
        page: u64,
        pages: u64,
        prot: u64,
        fixed: bool,
        shared: bool,
    },
    Munmap {
        page: u64,
        pages: u64,
    },
    Mprotect {
        page: u64,
        pages: u64,
        prot: u64,
    },
    Mremap {
        page: u64,
        old: u64,
        new: u64,
        flags: u64,
        to: u64,
    },
    Brk {
        delta: i64,
    },
    Touch {
        page: u64,
        write: bool,
    },
    Madvise {
        page: u64,
        pages: u64,
        adv: i64,
    },
    Mlock {
        page: u64,
        pages: u64,
        on: bool,
    },
    Mseal {
        page: u64,
        pages: u64,
    },
    Raw {
        a: u64,
        b: u64,
        c: u64,
        d: u64,
    },
}

fn op(with_seal: bool) -> impl Strategy<Value = Op> {
    let page = 0u64..64;
    let pages = 1u64..8;
    let prot = prop_oneof![Just(0u64), Just(1), Just(3), Just(5), Just(7)];
    prop_oneof![
        (
            page.clone(),
            pages.clone(),
            prot.clone(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(page, pages, prot, fixed, shared)| Op::Mmap {
                page,
                pages,
                prot,
                fixed,
                shared
            }),
        (page.clone(), pages.clone()).prop_map(|(page, pages)| Op::Munmap { page, pages }),
        (page.clone(), pages.clone(), prot).prop_map(|(page, pages, prot)| Op::Mprotect {
            page,
            pages,
            prot
        }),
        (
            page.clone(),
            pages.clone(),
            pages.clone(),
            0u64..8,
            page.clone()
        )
            .prop_map(|(page, old, new, flags, to)| Op::Mremap {
                page,
                old,
                new,
                flags,
                to
            }),
        (-8i64..8).prop_map(|d| Op::Brk { delta: d * 4096 }),
        (page.clone(), any::<bool>()).prop_map(|(page, write)| Op::Touch { page, write }),
        (
            page.clone(),
            pages.clone(),
            prop_oneof![
                Just(MADV_DONTNEED),
                Just(MADV_DONTFORK),
                Just(MADV_DOFORK),
                Just(MADV_HUGEPAGE),
                Just(MADV_NOHUGEPAGE)
            ]
        )
            .prop_map(|(page, pages, adv)| Op::Madvise { page, pages, adv }),
        (page.clone(), pages.clone(), any::<bool>()).prop_map(|(page, pages, on)| Op::Mlock {
            page,
            pages,
            on
        }),
        (page.clone(), pages.clone(), Just(with_seal)).prop_map(|(page, pages, s)| if s {
            Op::Mseal { page, pages }
        } else {
            Op::Touch { page, write: true }
        }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c, d)| Op::Raw {
            a,
            b,
            c,
            d
        }),
    ]
}

fn apply(s: &mut AddressSpace, op: &Op) -> Applied {
    let at = |p: u64| BASE + p * 4096;
    match *op {
        Op::Mmap {
            page,
            pages,
            prot,
            fixed,
            shared,
        } => {
            let mut f = MAP_ANONYMOUS | if shared { MAP_SHARED } else { MAP_PRIVATE };
            if fixed {
                f |= MAP_FIXED;
            }
            let _ = s.mmap(at(page), pages * 4096, prot, f, None, 0);
        }
        Op::Munmap { page, pages } => {
            let _ = s.munmap(at(page), pages * 4096);
        }
        Op::Mprotect { page, pages, prot } => {
            let _ = s.mprotect(at(page), pages * 4096, prot);
        }
        Op::Mremap {
            page,
            old,
            new,
            flags,
            to,
        } => {
            let r = s.mremap(at(page), old * 4096, new * 4096, flags, at(to + 70));
            // X7: dontunmap_complete() clears VM_LOCKED* on the source in place
            // (vm_flags_clear, mm/mremap.c) without a merge attempt, so Linux itself may leave
            // the source's pieces, or the source and a neighbour, mergeable but apart.
            if r.is_ok() && flags & MREMAP_DONTUNMAP != 0 {
                return Applied::MayLeaveMergeable;
            }
        }
        Op::Brk { delta } => {
            let b = s.brk_value();
            s.brk(b.wrapping_add(delta as u64));
        }
        Op::Touch { page, write } => {
            let _ = s.touch(at(page) + 17, write, 3);
        }
        Op::Madvise { page, pages, adv } => {
            let _ = s.madvise(at(page), pages * 4096, adv);
        }
        Op::Mlock { page, pages, on } => {
            let _ = if on {
                s.mlock(at(page), pages * 4096, 0)
            } else {
                s.munlock(at(page), pages * 4096)
            };
        }
        Op::Mseal { page, pages } => {
            let _ = s.mseal(at(page), pages * 4096);
        }
        Op::Raw { a, b, c, d } => {
            let _ = match a % 5 {
                0 => s.mmap(b, c, d & 0xff, d >> 8, None, 0).map(|_| ()),
                1 => s.munmap(b, c),
                2 => s.mprotect(b, c, d),
                3 => s.mremap(b, c, d, a >> 60, b ^ c).map(|_| ()),
                _ => s.madvise(b, c, (d % 30) as i64),
            };
        }
    }
    Applied::Merged
}

/// What Linux promises about merging after an operation.
#[derive(PartialEq)]
enum Applied {
    /// Every adjacent pair Linux could merge is merged.
    Merged,
    /// Linux changed flags in place without a merge attempt (see the mremap arm).
    MayLeaveMergeable,
}

fn fresh() -> AddressSpace {
    let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
    s.set_brk(0x5555_5555_9000, 0x5555_5555_9000);
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn invariants_and_merging_after_every_op(ops in proptest::collection::vec(op(false), 1..60)) {
        let mut s = fresh();
        let mut merged_promise = true;
        for o in &ops {
            if apply(&mut s, o) == Applied::MayLeaveMergeable {
                merged_promise = false;
            }
            s.check_invariants().map_err(|e| TestCaseError::fail(format!("{e} after {o:?}")))?;
            // Without mseal, growsdown or map-count pressure Linux leaves nothing mergeable,
            // until an operation that changes flags in place without merging (Applied).
            if merged_promise {
                s.check_merged().map_err(|e| TestCaseError::fail(format!("{e} after {o:?}")))?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    /// Fuzz-style run: arbitrary sequences including raw random arguments and mseal; no
    /// panic, invariants hold. Long: `cargo test -p vmspace --test space_props -- --ignored`.
    #[test]
    #[ignore]
    fn fuzz_long_sequences(ops in proptest::collection::vec(op(true), 1..300)) {
        let mut s = fresh();
        for o in &ops {
            apply(&mut s, o);
            s.check_invariants().map_err(|e| TestCaseError::fail(format!("{e} after {o:?}")))?;
        }
    }
}
