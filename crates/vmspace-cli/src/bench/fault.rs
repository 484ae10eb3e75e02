//! `vmspace bench fault`: the simulated CPU's translation on a TLB hit (and a page walk on
//! a miss, for scale), a demand-zero fault and a copy-on-write fault, each next to its
//! physical floor measured in the same run: zeroing one 4 KiB page with the machine's memset
//! (`slice::fill(0)`) and copying one with memcpy (`copy_from_slice`), over as many distinct
//! pages as the fault cases touch, so both see the same cache behaviour.
//!
//! Cases (the ratio column compares each impl with the first of its case):
//! - `translate`: `tlb-hit` (`Machine::tlb_translate` over 64 resident pages), `page-walk`
//!   (`Machine::walk`: the 4-level x86-64 walk a miss does before the fill);
//! - `zero-4k`: `memset` floor, `demand-zero-fault` (`Mm::fault`, write to an untouched
//!   private page: classify, allocate, zero, map), `demand-zero-store` (the whole CPU path:
//!   TLB miss, walk, fault, retry);
//! - `copy-4k`: `memcpy` floor, `cow-fault` (`Mm::fault`, child's first write to a page
//!   shared with its parent: allocate, copy, rewrite the entry, drop a reference),
//!   `cow-reuse-fault` (the last sharer's write: no copy).
//!
//! Goals (issue 4): TLB hit < 5 ns; demand-zero < 1.5x memset; COW < 1.5x memcpy. Each
//! record of a fault case carries `floor_ns` and `ratio_to_floor`.

use super::{median_ns_per_op, scaled, time_ns, Record};
use std::hint::black_box;
use vmspace::addr::{Frame, PhysAddr};
use vmspace::fault::{Access, Resolved};
use vmspace::phys::EmulatedRam;
use vmspace::space::abi::*;
use vmspace_sim::{with_mm, ArchKind, Machine};

const GROUP: &str = "fault";
const ROUNDS: usize = 15;
const PAGES: u64 = 4096;
const RW: u64 = PROT_READ | PROT_WRITE;
const PA: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

/// Runs the group.
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let pages = scaled(PAGES, scale).clamp(16, PAGES);
    let mut out = translate(scaled(20_000_000, scale))?;
    let (zero_floor, dz, dz_store) = demand_zero(pages)?;
    out.push(Record::new(GROUP, "zero-4k", "memset", zero_floor, pages));
    out.push(with_floor(
        Record::new(GROUP, "zero-4k", "demand-zero-fault", dz, pages),
        zero_floor,
        1.5,
    ));
    out.push(with_floor(
        Record::new(GROUP, "zero-4k", "demand-zero-store", dz_store, pages),
        zero_floor,
        1.5,
    ));
    let (copy_floor, cow, reuse) = cow(pages)?;
    out.push(Record::new(GROUP, "copy-4k", "memcpy", copy_floor, pages));
    out.push(with_floor(
        Record::new(GROUP, "copy-4k", "cow-fault", cow, pages),
        copy_floor,
        1.5,
    ));
    out.push(with_floor(
        Record::new(GROUP, "copy-4k", "cow-reuse-fault", reuse, pages),
        copy_floor,
        1.5,
    ));
    Ok(out)
}

fn with_floor(r: Record, floor: f64, goal: f64) -> Record {
    let ratio = r.ns_per_op / floor;
    r.with("floor_ns", floor)
        .with("ratio_to_floor", (ratio * 100.0).round() / 100.0)
        .with("goal_ratio", goal)
}

/// A machine with one x86-64 process. The emulated RAM is touched once so that the host's
/// own lazy allocation of it is not measured as fault cost.
fn machine(ram: u64) -> Result<(Machine, u32), String> {
    let mut m = Machine::new(ram).map_err(|e| format!("{e:?}"))?;
    for f in 0..ram / 4096 {
        let fr = vmspace::addr::Frame::from_number(f).map_err(|e| format!("{e:?}"))?;
        if let Ok(b) = m.phys_mut().mem.frame_mut(fr) {
            // Non-zero: a zero store into calloc'd memory may be optimised away.
            b[0] = 0xa5;
        }
    }
    let pid = m.spawn(ArchKind::X86_64).map_err(|e| format!("{e:?}"))?;
    Ok((m, pid))
}

/// TLB-hit translation and a page walk.
fn translate(ops: u64) -> Result<Vec<Record>, String> {
    let (mut m, pid) = machine(16 << 20)?;
    let tid = m.process(pid).ok_or("no process")?.threads[0];
    let asid = m.process(pid).ok_or("no process")?.asid;
    let n = 64u64;
    let a = m
        .mmap(pid, 0, n * 4096, RW, PA, None, 0)
        .map_err(|e| format!("{e:?}"))?;
    for i in 0..n {
        m.store(tid, a + i * 4096, 1)
            .map_err(|e| format!("{e:?}"))?;
    }
    // Every page must hit from here on.
    for i in 0..n {
        if m.tlb_translate(asid, a + i * 4096, Access::Read).is_none() {
            return Err("translation not cached".into());
        }
    }
    let hit = median_ns_per_op(ROUNDS, ops, || {
        time_ns(|| {
            let mut acc = 0u64;
            for i in 0..ops {
                let va = a + ((i & (n - 1)) << 12) + (i & 0xff8);
                acc = acc.wrapping_add(
                    black_box(&mut m)
                        .tlb_translate(asid, va, Access::Read)
                        .unwrap_or(1),
                );
            }
            black_box(acc);
        })
    });
    let walks = (ops / 20).max(1);
    let walk = median_ns_per_op(ROUNDS, walks, || {
        time_ns(|| {
            let mut acc = 0u64;
            for i in 0..walks {
                let va = a + ((i & (n - 1)) << 12);
                if let Some((f, _)) = black_box(&m).walk(pid, va) {
                    acc = acc.wrapping_add(f);
                }
            }
            black_box(acc);
        })
    });
    Ok(vec![
        Record::new(GROUP, "translate", "tlb-hit", hit, ops).with("goal_ns", 5.0),
        Record::new(GROUP, "translate", "page-walk", walk, walks),
    ])
}

/// Median of per-op times.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Host memory for the floors, allocated and touched exactly as the machine's RAM is (an
/// `EmulatedRam`), so both run on the same kind of host pages. `fill` must not be zero (a
/// zero fill of calloc'd memory may be optimised away, leaving the host to fault later).
fn host_pages(pages: u64, fill: u8) -> Result<EmulatedRam, String> {
    let mut r = EmulatedRam::new(PhysAddr::ZERO, pages * 4096).map_err(|e| e.to_string())?;
    for f in 0..pages {
        let fr = Frame::from_number(f).map_err(|e| format!("{e:?}"))?;
        r.frame_mut(fr).map_err(|e| e.to_string())?.fill(fill);
    }
    Ok(r)
}

/// The frames of a floor buffer.
fn frames_of(r: &EmulatedRam) -> Vec<Frame> {
    (0..r.size() / 4096)
        .filter_map(|f| Frame::from_number(f).ok())
        .collect()
}

/// One round of memset over every 4 KiB page of `buf`: ns per page.
fn memset_round(buf: &mut EmulatedRam) -> f64 {
    let frames = frames_of(buf);
    for f in &frames {
        if let Ok(b) = buf.frame_mut(*f) {
            b[0] = 1;
        }
    }
    let ns = time_ns(|| {
        for f in &frames {
            if let Ok(b) = buf.frame_mut(*f) {
                black_box(b).fill(0);
            }
        }
    });
    ns as f64 / frames.len().max(1) as f64
}

/// One round of memcpy of every 4 KiB page of `src` into `dst`: ns per page.
fn memcpy_round(src: &EmulatedRam, dst: &mut EmulatedRam) -> f64 {
    let frames = frames_of(src);
    let ns = time_ns(|| {
        for f in &frames {
            if let (Ok(s), Ok(d)) = (src.frame(*f), dst.frame_mut(*f)) {
                black_box(d).copy_from_slice(black_box(s));
            }
        }
    });
    ns as f64 / frames.len().max(1) as f64
}

/// Demand-zero faults, through the handler alone and through the CPU's store path, each
/// round preceded by a memset round over as many pages (same load, same run).
fn demand_zero(pages: u64) -> Result<(f64, f64, f64), String> {
    let (mut m, pid) = machine((pages * 4096) * 3 + (16 << 20))?;
    let tid = m.process(pid).ok_or("no process")?.threads[0];
    let len = pages * 4096;
    let mut buf = host_pages(pages, 0xa5)?;
    let (mut floor, mut handler, mut store) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        floor.push(memset_round(&mut buf));
        let a = m
            .mmap(pid, 0, len, RW, PA, None, 0)
            .map_err(|e| format!("{e:?}"))?;
        let mut bad = None;
        let mut ns = 0;
        m.with_mm(pid, |mm, ph, tlb| {
            with_mm!(mm, mm => {
                ns = time_ns(|| {
                    for i in 0..pages {
                        let r = mm.fault(ph, tlb, a + i * 4096, Access::Write);
                        if r != Ok(Resolved::DemandZero) {
                            bad = Some(format!("{r:?}"));
                        }
                    }
                });
            })
        })
        .map_err(|e| format!("{e:?}"))?;
        if let Some(b) = bad {
            return Err(format!("demand-zero: {b}"));
        }
        handler.push(ns as f64 / pages as f64);
        m.munmap(pid, a, len).map_err(|e| format!("{e:?}"))?;
        floor.push(memset_round(&mut buf));
        let a = m
            .mmap(pid, 0, len, RW, PA, None, 0)
            .map_err(|e| format!("{e:?}"))?;
        let mut ok = true;
        let ns = time_ns(|| {
            for i in 0..pages {
                ok &= m.store(tid, a + i * 4096, 1).is_ok();
            }
        });
        if !ok {
            return Err("demand-zero store failed".into());
        }
        store.push(ns as f64 / pages as f64);
        m.munmap(pid, a, len).map_err(|e| format!("{e:?}"))?;
    }
    m.check()?;
    Ok((median(floor), median(handler), median(store)))
}

/// COW faults in a child (copy), then in the parent as last sharer (reuse), each round
/// preceded by a memcpy round over as many pages.
fn cow(pages: u64) -> Result<(f64, f64, f64), String> {
    let (mut m, pid) = machine((pages * 4096) * 3 + (16 << 20))?;
    let tid = m.process(pid).ok_or("no process")?.threads[0];
    let len = pages * 4096;
    let a = m
        .mmap(pid, 0, len, RW, PA, None, 0)
        .map_err(|e| format!("{e:?}"))?;
    for i in 0..pages {
        m.store(tid, a + i * 4096, 7)
            .map_err(|e| format!("{e:?}"))?;
    }
    let src = host_pages(pages, 0x5a)?;
    let mut dst = host_pages(pages, 0xff)?;
    let (mut floor, mut copy, mut reuse) = (Vec::new(), Vec::new(), Vec::new());
    let mut bad = None;
    for _ in 0..ROUNDS {
        floor.push(memcpy_round(&src, &mut dst));
        let child = m.fork(pid).map_err(|e| format!("{e:?}"))?;
        m.with_mm(child, |mm, ph, tlb| {
            with_mm!(mm, mm => {
                let ns = time_ns(|| {
                    for i in 0..pages {
                        let r = mm.fault(ph, tlb, a + i * 4096, Access::Write);
                        if r != Ok(Resolved::CowCopy) {
                            bad = Some(format!("{r:?}"));
                        }
                    }
                });
                copy.push(ns as f64 / pages as f64);
            })
        })
        .map_err(|e| format!("{e:?}"))?;
        m.exit(child);
        // The parent is now the only user of every frame: its writes reuse them.
        m.with_mm(pid, |mm, ph, tlb| {
            with_mm!(mm, mm => {
                let ns = time_ns(|| {
                    for i in 0..pages {
                        let r = mm.fault(ph, tlb, a + i * 4096, Access::Write);
                        if r != Ok(Resolved::CowReuse) {
                            bad = Some(format!("{r:?}"));
                        }
                    }
                });
                reuse.push(ns as f64 / pages as f64);
            })
        })
        .map_err(|e| format!("{e:?}"))?;
    }
    if let Some(b) = bad {
        return Err(format!("cow: {b}"));
    }
    m.check()?;
    Ok((median(floor), median(copy), median(reuse)))
}
