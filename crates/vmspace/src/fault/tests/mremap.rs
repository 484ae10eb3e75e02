//! mremap moves that cannot get a page-table frame for the destination (X7): ENOMEM with
//! the source as it was — VMAs, entries, data, RSS, frames — as copy_vma_and_data's
//! `moved_len < old_len` path leaves it; what happened before the move (a FIXED
//! destination's unmapping, earlier pieces of a multi-VMA move) stays done.

use super::*;
use crate::arch::{Arch, PageFlags};
use crate::fault::Starved;
use crate::phys::FrameStats;
use crate::space::accounting::Accounting;
use crate::space::{Errno, Vma};

/// A destination under a top-level (PML4) entry no test maps anything else under: a move
/// there needs three new tables on x86-64 (PDPT, PD, PT).
const FAR: u64 = 0x6000_0000_0000;

/// Everything a failed move must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    vmas: Vec<Vma>,
    acct: Accounting,
    rss: Rss,
    pages: Vec<(u64, Frame, PageFlags)>,
    frames: FrameStats,
}

fn state<A: Arch>(mm: &Mm<A>, p: &P) -> State {
    State {
        vmas: mm.space().vmas().cloned().collect(),
        acct: mm.space().accounting().clone(),
        rss: mm.rss(),
        pages: mm.user_pages(&p.mem),
        frames: p.frames.inner.stats(),
    }
}

/// A FIXED move to another top-level slot needs three new tables on x86-64 (PDPT, PD, PT):
/// with fewer frames it fails with ENOMEM and nothing changed; with three it moves the data
/// and uses as many frames as before (the source's three tables are freed).
#[test]
fn x7_fixed_move_without_table_frames_is_enomem_and_changes_nothing() {
    for budget in 0..=3 {
        let (mut p, mut a) = setup();
        let t = &mut NoTlb;
        let x = map_at(&mut a, &mut p, 0x4000_0000, 0x4000, RW, PA);
        write(&mut a, &mut p, x, 4);
        let before = state(&a, &p);
        let r = with_budget(&mut p, Some(budget), |p| {
            a.mremap(p, t, x, 0x4000, 0x4000, MREMAP_MAYMOVE | MREMAP_FIXED, FAR)
        });
        if budget < 3 {
            assert_eq!(r, Err(Errno::ENOMEM), "budget {budget}");
            assert_eq!(state(&a, &p), before, "budget {budget}");
            // The cause is told, for a caller that can free frames and repeat the call.
            let starved = alloc::vec![Starved::MoveTables { addr: x }];
            assert_eq!(a.take_starved(), starved);
            assert!(a.take_starved().is_empty());
            assert_pattern(&mut a, &mut p, x, 4);
            assert_unmapped(&mut a, &mut p, FAR);
        } else {
            assert_eq!(r, Ok(FAR));
            assert!(a.take_starved().is_empty());
            assert_pattern(&mut a, &mut p, FAR, 4);
            assert_unmapped(&mut a, &mut p, x);
            let now = p.frames.inner.stats();
            assert_eq!(now.allocated_frames, before.frames.allocated_frames);
            assert_eq!(a.rss(), before.rss);
        }
        check_all(&p, &[&a]);
        a.exit(&mut p);
        assert_only_zero_page(&p);
    }
}

/// With a reclaim hook (a simulator's OOM killer) the move that finds no table frame frees
/// some and goes on in place: the result, data and counters are those of a move that never
/// lacked a frame (a growth charged once, not once per attempt), and nothing is reported.
#[test]
fn x7_reclaiming_move_goes_on_in_place() {
    let run = |budget: Option<u64>| {
        let (mut p, mut a) = setup();
        let t = &mut NoTlb;
        let x = map_at(&mut a, &mut p, 0x4000_0000, 0x4000, RW, PA);
        write(&mut a, &mut p, x, 4);
        let mut calls = 0;
        let r = with_budget(&mut p, budget, |p| {
            a.mremap_reclaiming(
                p,
                t,
                x,
                0x4000,
                0x8000,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                FAR,
                &mut |p| {
                    calls += 1;
                    p.frames.budget = p.frames.budget.map(|b| b + 3);
                    true
                },
            )
        });
        assert_eq!(r, Ok(FAR));
        assert!(a.take_starved().is_empty());
        assert_pattern(&mut a, &mut p, FAR, 4);
        assert_unmapped(&mut a, &mut p, x);
        check_all(&p, &[&a]);
        (calls, a.space().accounting().clone())
    };
    let (calls, acct) = run(Some(0));
    assert_eq!(calls, 1, "three frames freed once suffice");
    let (none, roomy) = run(None);
    assert_eq!((none, acct), (0, roomy));
}

/// Memory really exhausted (every frame in use): a MAYMOVE growth of written pages, which
/// goes near the mmap base far above, is refused with ENOMEM and every page is still there.
/// The growth charged to the commit counter stays charged, as unmap_source_vma clears
/// VM_ACCOUNT on the destination it unmaps. Once a few frames are free again the same call
/// moves the data.
#[test]
fn x7_maymove_growth_with_memory_exhausted_keeps_the_data() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let len = 16 << 20;
    let x = map_at(&mut a, &mut p, 0x4000_0000, len, RW, PA);
    let mut n = 0;
    while a.touch(&mut p, t, x + n * 4096, true, byte(n, 0)).is_ok() {
        n += 1;
    }
    assert!(n > 1000 && n < len / 4096, "{n} pages");
    assert!(p.frames.inner.stats().free_frames < 3);
    let before = state(&a, &p);
    let r = a.mremap(&mut p, t, x, 0x4000, 0x8000, MREMAP_MAYMOVE, 0);
    assert_eq!(r, Err(Errno::ENOMEM));
    let after = state(&a, &p);
    assert_eq!(after.acct.committed, before.acct.committed + 4);
    let acct = Accounting {
        committed: before.acct.committed,
        ..after.acct.clone()
    };
    assert_eq!(acct, before.acct);
    assert_eq!(
        a.take_starved(),
        alloc::vec![Starved::MoveTables { addr: x }]
    );
    assert_eq!(
        (&after.vmas, after.rss, &after.pages),
        (&before.vmas, before.rss, &before.pages)
    );
    assert_eq!(after.frames, before.frames);
    for i in 0..n {
        assert_eq!(
            a.touch(&mut p, t, x + i * 4096, false, 0),
            Ok(Some(byte(i, 0)))
        );
    }
    check_all(&p, &[&a]);
    // Three frames back (the last pages written), and the move succeeds.
    a.munmap(&mut p, t, x + (n - 3) * 4096, 0x3000).unwrap();
    let y = a
        .mremap(&mut p, t, x, 0x4000, 0x8000, MREMAP_MAYMOVE, 0)
        .unwrap();
    assert!(y > x + len, "{y:#x}");
    for i in 0..4 {
        assert_eq!(
            a.touch(&mut p, t, y + i * 4096, false, 0),
            Ok(Some(byte(i, 0)))
        );
    }
    assert_unmapped(&mut a, &mut p, x);
    check_all(&p, &[&a]);
}

/// MREMAP_FIXED unmaps the destination first (X7); that stays done when the move then fails:
/// the old destination mapping and its pages are gone, the source is untouched.
#[test]
fn x7_failed_fixed_move_still_unmapped_the_destination() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let x = map_at(&mut a, &mut p, 0x4000_0000, 0x3000, RW, PA);
    write(&mut a, &mut p, x, 3);
    map_at(&mut a, &mut p, FAR, 0x2000, RW, PA);
    a.touch(&mut p, t, FAR, true, 9).unwrap();
    let before = state(&a, &p);
    // Unmapping the destination frees its page and its three tables; moving needs three.
    let r = with_budget(&mut p, Some(2), |p| {
        a.mremap(p, t, x, 0x3000, 0x3000, MREMAP_MAYMOVE | MREMAP_FIXED, FAR)
    });
    assert_eq!(r, Err(Errno::ENOMEM));
    assert_pattern(&mut a, &mut p, x, 3);
    assert_unmapped(&mut a, &mut p, FAR);
    assert_unmapped(&mut a, &mut p, FAR + 0x1000);
    let vmas: Vec<Vma> = a.space().vmas().cloned().collect();
    assert_eq!(vmas[..], before.vmas[..1]);
    assert_eq!(a.rss().anon, before.rss.anon - 1);
    assert_eq!(
        p.frames.inner.stats().allocated_frames,
        before.frames.allocated_frames - 4
    );
    check_all(&p, &[&a]);
}

/// DONTUNMAP: a failed move leaves the source mapped with its pages and its VM_LOCKED
/// (dontunmap_complete is not reached), and the charge for the copy is given back.
#[test]
fn x7_failed_dontunmap_move_keeps_the_locked_source() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    let x = map_at(&mut a, &mut p, 0x4000_0000, 0x2000, RW, PA | MAP_LOCKED);
    write(&mut a, &mut p, x, 2);
    let before = state(&a, &p);
    let flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
    let r = with_budget(&mut p, Some(0), |p| {
        a.mremap(p, t, x, 0x2000, 0x2000, flags, FAR)
    });
    assert_eq!(r, Err(Errno::ENOMEM));
    assert_eq!(state(&a, &p), before);
    assert_ne!(
        before.vmas[0].flags & crate::space::vma::flags::VM_LOCKED,
        0
    );
    assert_pattern(&mut a, &mut p, x, 2);
    check_all(&p, &[&a]);
}

/// A multi-VMA FIXED move (X3) moves piece by piece: when the second piece cannot get a
/// table, the first stays moved (remap_move returns the error of the piece that failed),
/// the second is untouched, and no page is lost.
#[test]
fn x3_multi_vma_move_failing_on_the_second_piece_keeps_both_pieces_data() {
    let (mut p, mut a) = setup();
    let t = &mut NoTlb;
    // Two VMAs 4 MiB apart: their destinations need different last-level tables.
    let x = map_at(&mut a, &mut p, 0x4000_0000, 0x2000, RW, PA);
    let y = map_at(
        &mut a,
        &mut p,
        x + (4 << 20),
        0x2000,
        PROT_READ | PROT_WRITE | PROT_EXEC,
        PA,
    );
    write(&mut a, &mut p, x, 2);
    write(&mut a, &mut p, y, 2);
    // The first piece takes three tables, the second would need one more.
    let len = y + 0x2000 - x;
    let r = with_budget(&mut p, Some(3), |p| {
        a.mremap(p, t, x, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, FAR)
    });
    assert_eq!(r, Err(Errno::ENOMEM));
    assert_pattern(&mut a, &mut p, FAR, 2);
    assert_unmapped(&mut a, &mut p, x);
    assert_pattern(&mut a, &mut p, y, 2);
    assert_unmapped(&mut a, &mut p, FAR + (y - x));
    let v: Vec<(u64, u64)> = a.space().vmas().map(|v| (v.start, v.end)).collect();
    assert_eq!(v, [(y, y + 0x2000), (FAR, FAR + 0x2000)]);
    check_all(&p, &[&a]);
}

/// i386 (two levels): a move to another 4 MiB block needs one page table.
#[test]
fn x7_i386_move_without_a_page_table_frame_is_enomem() {
    let (mut p, mut a) = setup_i386();
    let t = &mut NoTlb;
    let x = map_at(&mut a, &mut p, 0x1000_0000, 0x3000, RW, PA);
    // A neighbour above, so that the growth has to move.
    map_at(&mut a, &mut p, x + 0x3000, 0x1000, PROT_READ, PA);
    write(&mut a, &mut p, x, 3);
    let before = state(&a, &p);
    let r = with_budget(&mut p, Some(0), |p| {
        a.mremap(p, t, x, 0x3000, 0x6000, MREMAP_MAYMOVE, 0)
    });
    assert_eq!(r, Err(Errno::ENOMEM));
    let mut after = state(&a, &p);
    assert_eq!(after.acct.committed, before.acct.committed + 3);
    after.acct.committed = before.acct.committed;
    assert_eq!(after, before);
    assert_pattern(&mut a, &mut p, x, 3);
    let y = a
        .mremap(&mut p, t, x, 0x3000, 0x6000, MREMAP_MAYMOVE, 0)
        .unwrap();
    assert_ne!(y, x);
    assert_pattern(&mut a, &mut p, y, 3);
    assert_unmapped(&mut a, &mut p, x);
    check_all(&p, &[&a]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// One mremap: source VMA index, first page and pages in it, growth in pages, a FIXED
    /// slot (`None`: MAYMOVE only) and how many frames may be allocated.
    #[derive(Clone, Debug)]
    struct Remap {
        vma: usize,
        first: u64,
        pages: u64,
        grow: u64,
        fixed: Option<u64>,
        budget: Option<u64>,
    }

    fn remap() -> impl Strategy<Value = Remap> {
        (
            0usize..8,
            0u64..8,
            1u64..8,
            0u64..4,
            prop::option::of(0u64..64),
            prop::option::weighted(0.8, 0u64..5),
        )
            .prop_map(|(vma, first, pages, grow, fixed, budget)| Remap {
                vma,
                first,
                pages,
                grow,
                fixed,
                budget,
            })
    }

    /// Far-apart FIXED slots, each 1 MiB, spread over several top-level entries.
    fn slot(i: u64) -> u64 {
        0x1000_0000_0000 + (i % 8) * 0x0800_0000_0000 + (i / 8) * (3 << 20)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Random moves under random frame limits never lose a page: after each call every
        /// written page holds its byte at its new address if the call succeeded and at its
        /// old one if it failed (and then the VMAs, RSS and frames are as before); the
        /// frame, refcount and RSS invariants hold throughout.
        #[test]
        fn mremap_under_frame_limits_never_loses_data(steps in prop::collection::vec(remap(), 1..24)) {
            let (mut p, mut mm) = setup();
            let t = &mut NoTlb;
            // Page address -> byte, for every page written.
            let mut data: BTreeMap<u64, u8> = BTreeMap::new();
            for i in 0..4u64 {
                let at = 0x4000_0000 + i * (5 << 20);
                map_at(&mut mm, &mut p, at, 0x8000, RW, PA);
                for j in 0..8 {
                    let v = byte(i * 8 + j, 0);
                    mm.touch(&mut p, t, at + j * 4096, true, v).unwrap();
                    data.insert(at + j * 4096, v);
                }
            }
            for st in &steps {
                let vmas: Vec<(u64, u64)> = mm.space().vmas().map(|v| (v.start, v.end)).collect();
                let (vs, ve) = vmas[st.vma % vmas.len()];
                let addr = vs + (st.first % ((ve - vs) / 4096)) * 4096;
                let old_len = (st.pages * 4096).min(ve - addr);
                let new_len = old_len + st.grow * 4096;
                let (flags, target) = match st.fixed.map(slot) {
                    // Only into free space, so that a move never unmaps tracked pages.
                    Some(s) if !mm.space().vmas().any(|v| v.start < s + new_len && s < v.end) => {
                        (MREMAP_MAYMOVE | MREMAP_FIXED, s)
                    }
                    _ => (MREMAP_MAYMOVE, 0),
                };
                let before = state(&mm, &p);
                let r = with_budget(&mut p, st.budget, |p| mm.mremap(p, t, addr, old_len, new_len, flags, target));
                match r {
                    Ok(na) if na != addr => {
                        let moved: Vec<(u64, u8)> = data
                            .range(addr..addr + old_len)
                            .map(|(k, v)| (*k, *v))
                            .collect();
                        for (k, v) in moved {
                            data.remove(&k);
                            data.insert(k - addr + na, v);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        prop_assert_eq!(e, Errno::ENOMEM, "{:?}", st);
                        let mut after = state(&mm, &p);
                        after.acct.committed = before.acct.committed;
                        prop_assert_eq!(after, before, "{:?}", st);
                    }
                }
                for (&a, &v) in &data {
                    prop_assert_eq!(mm.touch(&mut p, t, a, false, 0), Ok(Some(v)), "{:#x} after {:?}", a, st);
                }
                check_all(&p, &[&mm]);
            }
        }
    }
}
