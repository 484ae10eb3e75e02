//! `vmspace bench paging`: mapping, translating and unmapping 1 GiB in 4 KiB pages in
//! emulated RAM, the range operations (`vmspace-range`: each table descended once) against
//! the same walker driven one page at a time (`vmspace-page-at-a-time`: every level walked
//! for every page), for i386 and x86-64.
//!
//! The 1 GiB maps onto physically contiguous frames at the bottom of RAM; page tables come
//! from the buddy allocator over the RAM above. Each round maps, translates every page and
//! unmaps, and checks the result (every page translated, only the root left, every table
//! frame back in the allocator). `ns_per_op` is per 4 KiB page.

use super::{median_ns_per_op, scaled, time_ns, Record};
use vmspace::addr::{Frame, FrameRange, PhysAddr, VirtAddr};
use vmspace::arch::{Arch, PageFlags, I386, X86_64};
use vmspace::paging::{NoTlb, PageTable};
use vmspace::phys::{EmulatedRam, OwnedBuddyAllocator};

const GROUP: &str = "paging";
const ROUNDS: usize = 9;
const K4: u64 = 4096;
const DATA: u64 = 1 << 30;
const TABLE_RAM: u64 = 16 << 20;

/// Runs the group.
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let pages = scaled(DATA / K4, scale).min(DATA / K4);
    let mut out = Vec::new();
    out.extend(arch_cases(I386::new(), VirtAddr::new(0x4000_0000), pages)?);
    out.extend(arch_cases(X86_64, VirtAddr::new(0x7f00_0000_0000), pages)?);
    Ok(out)
}

/// Which measurement of a round.
type Pick = fn(&Round) -> u128;

/// What one round measured, in ns for all pages.
struct Round {
    map: u128,
    translate: u128,
    unmap: u128,
}

struct Bench<A: Arch> {
    pt: PageTable<A>,
    ram: EmulatedRam,
    frames: OwnedBuddyAllocator,
    va: VirtAddr,
    pages: u64,
    free_after_root: u64,
}

impl<A: Arch> Bench<A> {
    fn new(arch: A, va: VirtAddr, pages: u64) -> Result<Self, String> {
        let mut ram =
            EmulatedRam::new(PhysAddr::ZERO, DATA + TABLE_RAM).map_err(|e| e.to_string())?;
        let f0 = Frame::from_number(0).map_err(|e| e.to_string())?;
        let usable = [FrameRange::new(f0, (DATA + TABLE_RAM) / K4).map_err(|e| e.to_string())?];
        let reserved = [FrameRange::new(f0, DATA / K4).map_err(|e| e.to_string())?];
        let mut frames =
            OwnedBuddyAllocator::new_owned(&usable, &reserved).map_err(|e| e.to_string())?;
        let pt = PageTable::new(arch, &mut ram, &mut frames).map_err(|e| e.to_string())?;
        let free_after_root = frames.stats().free_frames;
        Ok(Bench {
            pt,
            ram,
            frames,
            va,
            pages,
            free_after_root,
        })
    }

    fn flags() -> PageFlags {
        PageFlags::USER | PageFlags::WRITABLE
    }

    fn check_mapped(&self, seen: u64, sum: u64) -> Result<(), String> {
        // Frame i maps page i: the frame numbers sum to 0 + 1 + ... + (pages - 1).
        let want = self.pages * (self.pages - 1) / 2;
        if seen != self.pages || sum != want {
            return Err(format!(
                "{}: translated {seen} pages (sum {sum}), expected {} ({want})",
                A::NAME,
                self.pages
            ));
        }
        Ok(())
    }

    fn check_empty(&self) -> Result<(), String> {
        if self.pt.table_pages() != 1 || self.frames.stats().free_frames != self.free_after_root {
            return Err(format!(
                "{}: {} table pages left after unmapping",
                A::NAME,
                self.pt.table_pages()
            ));
        }
        Ok(())
    }

    fn range_round(&mut self) -> Result<Round, String> {
        let len = self.pages * K4;
        let mut r = Ok(());
        let map = time_ns(|| {
            r = self.pt.map_range(
                &mut self.ram,
                &mut self.frames,
                self.va,
                PhysAddr::ZERO,
                len,
                K4,
                Self::flags(),
            );
        });
        r.map_err(|e| e.to_string())?;
        let (mut seen, mut sum) = (0u64, 0u64);
        let mut r = Ok(());
        let translate = time_ns(|| {
            r = self.pt.translate_range(&self.ram, self.va, len, |t| {
                seen += 1;
                sum += t.frame.as_u64() / K4;
            });
        });
        r.map_err(|e| e.to_string())?;
        self.check_mapped(seen, sum)?;
        let mut r = Ok(());
        let unmap = time_ns(|| {
            r = self
                .pt
                .unmap_range(&mut self.ram, &mut self.frames, self.va, len, |_, _, _| {})
                .map(|f| f.flush(&mut NoTlb));
        });
        r.map_err(|e| e.to_string())?;
        self.check_empty()?;
        Ok(Round {
            map,
            translate,
            unmap,
        })
    }

    fn page_round(&mut self) -> Result<Round, String> {
        let va0 = self.va.as_u64();
        let mut r = Ok(());
        let map = time_ns(|| {
            for i in 0..self.pages {
                r = self.pt.map(
                    &mut self.ram,
                    &mut self.frames,
                    VirtAddr::new(va0 + i * K4),
                    PhysAddr::new(i * K4),
                    K4,
                    Self::flags(),
                );
                if r.is_err() {
                    break;
                }
            }
        });
        r.map_err(|e| e.to_string())?;
        let (mut seen, mut sum) = (0u64, 0u64);
        let mut r = Ok(());
        let translate = time_ns(|| {
            for i in 0..self.pages {
                match self.pt.translate(&self.ram, VirtAddr::new(va0 + i * K4)) {
                    Ok(t) => {
                        seen += 1;
                        sum += t.frame.as_u64() / K4;
                    }
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
        });
        r.map_err(|e| e.to_string())?;
        self.check_mapped(seen, sum)?;
        let mut r = Ok(());
        let unmap = time_ns(|| {
            for i in 0..self.pages {
                match self.pt.unmap(
                    &mut self.ram,
                    &mut self.frames,
                    VirtAddr::new(va0 + i * K4),
                    K4,
                ) {
                    Ok((_, f)) => f.flush(&mut NoTlb),
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
        });
        r.map_err(|e| e.to_string())?;
        self.check_empty()?;
        Ok(Round {
            map,
            translate,
            unmap,
        })
    }
}

fn arch_cases<A: Arch>(arch: A, va: VirtAddr, pages: u64) -> Result<Vec<Record>, String> {
    let mut b = Bench::new(arch, va, pages)?;
    // Table pages a full map needs, for the record.
    b.pt.map_range(
        &mut b.ram,
        &mut b.frames,
        va,
        PhysAddr::ZERO,
        pages * K4,
        K4,
        Bench::<A>::flags(),
    )
    .map_err(|e| e.to_string())?;
    let tables = b.pt.table_pages();
    b.pt.unmap_range(&mut b.ram, &mut b.frames, va, pages * K4, |_, _, _| {})
        .map_err(|e| e.to_string())?
        .ignore();

    let mut range_rounds = Vec::new();
    let mut page_rounds = Vec::new();
    for _ in 0..ROUNDS {
        range_rounds.push(b.range_round()?);
        page_rounds.push(b.page_round()?);
    }
    let median = |rounds: &[Round], pick: Pick| {
        let mut i = 0;
        median_ns_per_op(rounds.len(), pages, || {
            let v = pick(&rounds[i]);
            i += 1;
            v
        })
    };
    let size = if pages == DATA / K4 {
        "1GiB".to_string()
    } else {
        format!("{}KiB", pages * 4)
    };
    let mut out = Vec::new();
    let ops: [(&str, Pick); 3] = [
        ("map", |r| r.map),
        ("translate", |r| r.translate),
        ("unmap", |r| r.unmap),
    ];
    for (what, pick) in ops {
        let case = format!("{what} {size} 4K {}", A::NAME);
        let range = median(&range_rounds, pick);
        let page = median(&page_rounds, pick);
        out.push(
            Record::new(GROUP, &case, "vmspace-range", range, pages).with("table_pages", tables),
        );
        out.push(
            Record::new(GROUP, &case, "vmspace-page-at-a-time", page, pages)
                .with("table_pages", tables)
                .with("range_speedup", (page / range * 100.0).round() / 100.0),
        );
    }
    Ok(out)
}
