//! `vmspace ptdump`: builds an example i386 and x86-64 address space in emulated RAM and
//! prints their page tables the way Linux's page-table dump
//! (`arch/x86/mm/dump_pagetables.c`, `/sys/kernel/debug/page_tables/*`) does.
//!
//! Each example has a kernel half (large pages where they fit), a program's text and data,
//! a heap and two thread stacks. Frames — for pages and page tables alike — come from the
//! buddy allocator. The dump walks every table as the MMU would (the i386 recursive slot
//! included) and coalesces runs of entries with the same flags at the same level into one
//! line: `start-end   size  flags  level`, with markers for the address-space areas and
//! holes shown as flagless lines, as Linux prints them.

use crate::picture::{self, BandKind, Panel, SpacePicture};
use serde_json::{json, Value};
use vmspace::addr::{Frame, FrameRange, PhysAddr, VirtAddr};
use vmspace::arch::{i386, x86_64, Arch, Entry, PageFlags, I386, X86_64};
use vmspace::paging::PageTable;
use vmspace::phys::{EmulatedRam, FrameAllocator, OwnedBuddyAllocator};

/// Which example spaces to dump.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchChoice {
    I386,
    #[value(name = "x86_64")]
    X86_64,
    Both,
}

/// Arguments of `vmspace ptdump`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  vmspace ptdump                      both spaces, Linux-style text
  vmspace ptdump --arch i386          the i386 space only (2-level tables, 4 MiB pages)
  vmspace ptdump --json              one JSON object per space, one per line
  vmspace ptdump --svg tables.svg     also draw what each space's tables map, to scale")]
pub struct PtdumpArgs {
    /// Which architecture's example space to dump.
    #[arg(long, value_enum, default_value = "both")]
    arch: ArchChoice,
    /// Print one JSON object per space instead of the Linux-style text.
    #[arg(long)]
    json: bool,
    /// Also draw what the tables map, as bands to scale, to this path (`.svg` or `.png`).
    #[arg(long, value_name = "PATH")]
    svg: Option<std::path::PathBuf>,
}

/// Runs `vmspace ptdump`.
pub fn run(args: PtdumpArgs) -> Result<(), String> {
    let mut panels = Vec::new();
    if matches!(args.arch, ArchChoice::I386 | ArchChoice::Both) {
        let ex = build_i386()?;
        print_dump(&ex, args.json)?;
        panels.push(space_picture(&ex)?);
    }
    if matches!(args.arch, ArchChoice::X86_64 | ArchChoice::Both) {
        if args.arch == ArchChoice::Both && !args.json {
            println!();
        }
        let ex = build_x86_64()?;
        print_dump(&ex, args.json)?;
        panels.push(space_picture(&ex)?);
    }
    if let Some(path) = &args.svg {
        let svg = match panels.as_slice() {
            [one] => picture::render_space(one),
            _ => picture::render_figure(
                "vmspace ptdump: what the example page tables map",
                &panels.into_iter().map(Panel::Space).collect::<Vec<_>>(),
            ),
        };
        picture::write_picture(path, &svg)?;
    }
    Ok(())
}

/// The band kind of an example region, by its name.
fn region_kind(what: &str) -> BandKind {
    match what {
        w if w.starts_with("kernel text") => BandKind::KernelText,
        w if w.starts_with("kernel stack") => BandKind::KernelStack,
        w if w.starts_with("kernel") || w == "direct map" => BandKind::Kernel,
        "program text" => BandKind::Text,
        "program data" => BandKind::Data,
        "heap (brk)" => BandKind::Heap,
        w if w.ends_with("stack") => BandKind::Stack,
        _ => BandKind::Committed,
    }
}

/// What the example's tables map, as a space picture: one band per present run of the walk
/// (so large pages and 4 KiB pages of one region show as separate bands), named by the
/// region it lies in, with its level and flags; the recursive slot's window and x86-64's
/// non-canonical hole added. Unmapped space is drawn as free.
pub fn space_picture<A: Arch>(ex: &Example<A>) -> Result<SpacePicture, String> {
    let mut bands = Vec::new();
    for r in runs(ex)?.iter().filter(|r| r.prot & 1 != 0) {
        let start = A::from_linear(r.start).as_u64();
        let end = u64::try_from(virt_end::<A>(r.end)).unwrap_or(u64::MAX);
        let what = ex
            .regions
            .iter()
            .find(|&&(_, va, len, _)| va <= start && start - va < len)
            .map_or("mapped", |r| r.0);
        bands.push(picture::Band {
            start,
            end,
            kind: region_kind(what),
            label: format!(
                "{what}: {} {}",
                A::level_name(r.level),
                flag_list(r.level, r.prot).join(" ")
            ),
        });
    }
    if let Some(slot) = ex.pt.arch().recursive_slot() {
        let span = A::level_span(A::LEVELS);
        let start = A::from_linear(slot as u64 * span).as_u64();
        bands.push(picture::Band {
            start,
            end: start.wrapping_add(span),
            kind: BandKind::RecursivePd,
            label: format!("slot {slot}: the page tables themselves, seen as pages"),
        });
    }
    let bits = if A::VA_BITS > 32 {
        let half = 1u64 << (A::VA_BITS - 1);
        bands.push(picture::Band {
            start: half,
            end: half.wrapping_neg(),
            kind: BandKind::NonCanonical,
            label: "non-canonical hole".into(),
        });
        64
    } else {
        32
    };
    Ok(SpacePicture {
        title: format!(
            "{}: {} levels of {} entries, root at {:#x}",
            A::NAME,
            A::LEVELS,
            A::ENTRIES,
            ex.pt.root().start_address().as_u64()
        ),
        bits,
        bands,
    })
}

/// An example space: its tables, memory, allocator, what was mapped, and the dump markers.
pub struct Example<A: Arch> {
    pub pt: PageTable<A>,
    pub ram: EmulatedRam,
    pub frames: OwnedBuddyAllocator,
    /// (what, start, bytes, page size).
    pub regions: Vec<(&'static str, u64, u64, u64)>,
    /// (virtual address, name) of each area, ascending.
    pub markers: Vec<(u64, &'static str)>,
}

const K4: u64 = 4 << 10;
const M2: u64 = 2 << 20;
const M4: u64 = 4 << 20;
const G1: u64 = 1 << 30;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl<A: Arch> Example<A> {
    fn new(arch: A, ram_bytes: u64, kernel_image: u64) -> Result<Self, String> {
        let mut ram = EmulatedRam::new(PhysAddr::ZERO, ram_bytes).map_err(err)?;
        let usable = [
            FrameRange::new(Frame::from_number(0).map_err(err)?, ram_bytes / K4).map_err(err)?,
        ];
        // The kernel image sits at the bottom of RAM; everything else is allocatable.
        let reserved = [
            FrameRange::new(Frame::from_number(0).map_err(err)?, kernel_image / K4).map_err(err)?,
        ];
        let mut frames = OwnedBuddyAllocator::new_owned(&usable, &reserved).map_err(err)?;
        let pt = PageTable::new(arch, &mut ram, &mut frames).map_err(err)?;
        Ok(Example {
            pt,
            ram,
            frames,
            regions: Vec::new(),
            markers: Vec::new(),
        })
    }

    /// Maps `[va, va + len)` onto physical `pa` (contiguous) in pages of `size`.
    fn map_phys(
        &mut self,
        what: &'static str,
        va: u64,
        pa: u64,
        len: u64,
        size: u64,
        flags: PageFlags,
    ) -> Result<(), String> {
        self.pt
            .map_range(
                &mut self.ram,
                &mut self.frames,
                VirtAddr::new(va),
                PhysAddr::new(pa),
                len,
                size,
                flags,
            )
            .map_err(|e| format!("{what}: {e}"))?;
        self.regions.push((what, va, len, size));
        Ok(())
    }

    /// Maps `[va, va + len)` page by page onto fresh frames from the allocator, zeroed.
    fn map_fresh(
        &mut self,
        what: &'static str,
        va: u64,
        len: u64,
        flags: PageFlags,
    ) -> Result<(), String> {
        for off in (0..len).step_by(K4 as usize) {
            let f = self
                .frames
                .allocate_frame()
                .map_err(|e| format!("{what}: {e}"))?;
            vmspace::phys::PhysMem::zero_frame(&mut self.ram, f).map_err(err)?;
            self.pt
                .map(
                    &mut self.ram,
                    &mut self.frames,
                    VirtAddr::new(va + off),
                    f.start_address(),
                    K4,
                    flags,
                )
                .map_err(|e| format!("{what}: {e}"))?;
        }
        self.regions.push((what, va, len, K4));
        Ok(())
    }
}

/// The i386 example: 3 GiB / 1 GiB split, recursive page directory in slot 1023, 64 MiB RAM.
pub fn build_i386() -> Result<Example<I386>, String> {
    let mut ex = Example::new(I386::new(), 64 << 20, 8 << 20)?;
    let usr = PageFlags::USER;
    let rw = PageFlags::WRITABLE;
    let glb = PageFlags::GLOBAL;
    // Kernel half: the first 32 MiB of RAM in 4 MiB pages at PAGE_OFFSET; text read-only.
    let po = i386::PAGE_OFFSET;
    ex.map_phys("kernel text (lowmem)", po, 0, M4, M4, glb)?;
    ex.map_phys("kernel data (lowmem)", po + M4, M4, 28 << 20, M4, glb | rw)?;
    // A program: text, data, a heap after it, the main stack and a second thread's stack.
    ex.map_fresh("program text", 0x0804_8000, 5 * K4, usr)?;
    ex.map_fresh("program data", 0x0804_d000, 3 * K4, usr | rw)?;
    ex.map_fresh("heap (brk)", 0x0805_8000, 33 * K4, usr | rw)?;
    ex.map_fresh("thread 2 stack", 0xB77F_C000, 4 * K4, usr | rw)?;
    ex.map_fresh("main thread stack", 0xBFFF_8000, 8 * K4, usr | rw)?;
    let slot = ex.pt.arch().recursive_slot().unwrap_or(1023) as u64;
    ex.markers = vec![
        (0, "User Space"),
        (po, "Kernel Mapping"),
        (slot << 22, "Recursive Page Tables"),
    ];
    if slot << 22 < po {
        ex.markers.sort();
    }
    Ok(ex)
}

/// The x86-64 example: Linux's 4-level layout, 1 GiB RAM.
pub fn build_x86_64() -> Result<Example<X86_64>, String> {
    let mut ex = Example::new(X86_64, G1, 32 << 20)?;
    let usr = PageFlags::USER;
    let rw = PageFlags::WRITABLE;
    let glb = PageFlags::GLOBAL;
    let nx = PageFlags::NO_EXECUTE;
    // Direct map of all RAM at PAGE_OFFSET with one 1 GiB page.
    let page_offset = 0xFFFF_8880_0000_0000;
    ex.map_phys("direct map", page_offset, 0, G1, G1, glb | rw | nx)?;
    // The kernel image at __START_KERNEL_map + 16 MiB in 2 MiB pages.
    let ktext = 0xFFFF_FFFF_8100_0000;
    ex.map_phys("kernel text", ktext, 16 << 20, 2 * M2, M2, glb)?;
    ex.map_phys(
        "kernel data",
        ktext + 2 * M2,
        (16 << 20) + 2 * M2,
        2 * M2,
        M2,
        glb | rw | nx,
    )?;
    // Two kernel stacks in the vmalloc area, 16 KiB each with a guard page between.
    let vmalloc = 0xFFFF_C900_0000_0000;
    ex.map_fresh("kernel stack 1", vmalloc + K4, 4 * K4, glb | rw | nx)?;
    ex.map_fresh("kernel stack 2", vmalloc + 6 * K4, 4 * K4, glb | rw | nx)?;
    // A program: text, data, heap, main stack, a second thread's stack.
    ex.map_fresh("program text", 0x40_0000, 6 * K4, usr)?;
    ex.map_fresh("program data", 0x40_6000, 3 * K4, usr | rw | nx)?;
    ex.map_fresh("heap (brk)", 0x100_0000, 33 * K4, usr | rw | nx)?;
    ex.map_fresh("thread 2 stack", 0x7FFF_F7FF_C000, 4 * K4, usr | rw | nx)?;
    ex.map_fresh("main thread stack", 0x7FFF_FFFF_7000, 8 * K4, usr | rw | nx)?;
    ex.markers = vec![
        (0, "User Space"),
        (x86_64::KERNEL_START, "Kernel Space"),
        (page_offset, "Low Kernel Mapping"),
        (vmalloc, "vmalloc() Area"),
        (0xFFFF_FFFF_8000_0000, "High Kernel Mapping"),
    ];
    Ok(ex)
}

/// One coalesced run of entries.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    /// Linear start and end.
    pub start: u64,
    pub end: u64,
    pub level: u8,
    /// The entries' flag bits (0 for empty entries).
    pub prot: u64,
    /// Index into the markers.
    pub marker: usize,
}

/// The flag bits of an entry at `level`, without its address bits (Linux `pte_flags`).
fn prot_bits<A: Arch>(level: u8, raw: u64) -> u64 {
    let high = if A::ENTRY_SIZE == 8 {
        0xFFF0_0000_0000_0000
    } else {
        0
    };
    let pat_large = if level > 1 { 1 << 12 } else { 0 };
    raw & (0xFFF | pat_large | high)
}

/// Walks the space and coalesces entries into runs, breaking at markers.
pub fn runs<A: Arch>(ex: &Example<A>) -> Result<Vec<Run>, String> {
    let marks: Vec<u64> = ex
        .markers
        .iter()
        .map(|&(v, _)| A::to_linear(VirtAddr::new(v)).unwrap_or(0))
        .collect();
    let mut out: Vec<Run> = Vec::new();
    let mut cur: Option<Run> = None;
    ex.pt
        .walk(&ex.ram, |ev| {
            if ev.level > 1 && matches!(ev.entry, Entry::Table { .. }) {
                return;
            }
            let lin = A::to_linear(ev.va).unwrap_or(0);
            let prot = match ev.entry {
                Entry::Empty => 0,
                _ => prot_bits::<A>(ev.level, ev.raw),
            };
            let marker = marks.iter().rposition(|&m| m <= lin).unwrap_or(0);
            match cur.as_mut() {
                Some(c)
                    if c.prot == prot
                        && c.level == ev.level
                        && c.marker == marker
                        && c.end == lin =>
                {
                    c.end = lin + ev.span;
                }
                _ => {
                    if let Some(c) = cur.take() {
                        out.push(c);
                    }
                    cur = Some(Run {
                        start: lin,
                        end: lin + ev.span,
                        level: ev.level,
                        prot,
                        marker,
                    });
                }
            }
        })
        .map_err(err)?;
    out.extend(cur);
    Ok(out)
}

/// Linux's rendering of a run's flags (`printk_prot`), without the level name.
fn flag_text(level: u8, prot: u64) -> String {
    if prot & 1 == 0 {
        return " ".repeat(30);
    }
    let on = |bit: u64, yes: &str, no: &str| -> String {
        if prot & bit != 0 {
            yes.to_string()
        } else {
            no.to_string()
        }
    };
    let pte = level == 1;
    let mut s = String::new();
    s += &on(1 << 2, "USR ", "    ");
    s += &on(1 << 1, "RW ", "ro ");
    s += &on(1 << 3, "PWT ", "    ");
    s += &on(1 << 4, "PCD ", "    ");
    s += if !pte && prot & (1 << 7) != 0 {
        "PSE "
    } else {
        "    "
    };
    s += if (pte && prot & (1 << 7) != 0) || (!pte && prot & (1 << 12) != 0) {
        "PAT "
    } else {
        "    "
    };
    s += &on(1 << 8, "GLB ", "    ");
    s += &on(1 << 63, "NX ", "x  ");
    s
}

/// Flag names of a run, for JSON.
fn flag_list(level: u8, prot: u64) -> Vec<&'static str> {
    if prot & 1 == 0 {
        return Vec::new();
    }
    let pte = level == 1;
    let mut v = Vec::new();
    if prot & (1 << 2) != 0 {
        v.push("USR");
    }
    v.push(if prot & (1 << 1) != 0 { "RW" } else { "ro" });
    for (bit, name) in [(1u64 << 3, "PWT"), (1 << 4, "PCD")] {
        if prot & bit != 0 {
            v.push(name);
        }
    }
    if !pte && prot & (1 << 7) != 0 {
        v.push("PSE");
    }
    if (pte && prot & (1 << 7) != 0) || (!pte && prot & (1 << 12) != 0) {
        v.push("PAT");
    }
    if prot & (1 << 8) != 0 {
        v.push("GLB");
    }
    v.push(if prot & (1 << 63) != 0 { "NX" } else { "x" });
    v
}

/// Linux's size rendering: the largest unit that divides the size exactly.
fn size_text(bytes: u64) -> String {
    let units = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];
    let mut d = bytes;
    let mut u = 0;
    while d & 1023 == 0 && d != 0 && u + 1 < units.len() {
        d >>= 10;
        u += 1;
    }
    format!("{:>9}{}", d, units[u])
}

/// The virtual end of a run, which may be 2^64 or 2^32 (one past the top).
fn virt_end<A: Arch>(lin_end: u64) -> u128 {
    A::from_linear(lin_end - 1).as_u64() as u128 + 1
}

/// Table pages per level (level of the table itself), not following the recursive entry.
fn tables_per_level<A: Arch>(ex: &Example<A>) -> Result<Vec<u64>, String> {
    let mut per = vec![0u64; A::LEVELS as usize + 1];
    per[A::LEVELS as usize] = 1;
    let root = ex.pt.root().start_address();
    let slot = ex.pt.arch().recursive_slot();
    let span = A::level_span(A::LEVELS);
    let mut in_window = false;
    ex.pt
        .walk(&ex.ram, |ev| {
            if ev.level == A::LEVELS {
                let lin = A::to_linear(ev.va).unwrap_or(0);
                in_window = Some((lin / span) as usize) == slot;
            }
            if let Entry::Table { addr, .. } = ev.entry {
                if !in_window && addr != root && ev.level > 1 {
                    per[ev.level as usize - 1] += 1;
                }
            }
        })
        .map_err(err)?;
    Ok(per)
}

fn print_dump<A: Arch>(ex: &Example<A>, json_out: bool) -> Result<(), String> {
    let runs = runs(ex)?;
    let per = tables_per_level(ex)?;
    let stats = ex.frames.stats();
    let width = if A::VA_BITS > 32 { 16 } else { 8 };
    if json_out {
        let ranges: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "start": format!("{:#0w$x}", A::from_linear(r.start).as_u64(), w = width + 2),
                    "end": format!("{:#0w$x}", virt_end::<A>(r.end), w = width + 2),
                    "bytes": r.end - r.start,
                    "level": A::level_name(r.level),
                    "present": r.prot & 1 != 0,
                    "flags": flag_list(r.level, r.prot),
                    "area": ex.markers[r.marker].1,
                })
            })
            .collect();
        let regions: Vec<Value> = ex
            .regions
            .iter()
            .map(|&(what, va, len, size)| json!({"what": what, "start": format!("{va:#x}"), "bytes": len, "page_size": size}))
            .collect();
        let levels: serde_json::Map<String, Value> = (1..=A::LEVELS)
            .map(|l| (format!("level{l}"), json!(per[l as usize])))
            .collect();
        let obj = json!({
            "arch": A::NAME,
            "levels": A::LEVELS,
            "entries_per_table": A::ENTRIES,
            "entry_bytes": A::ENTRY_SIZE,
            "root": format!("{:#x}", ex.pt.root().start_address().as_u64()),
            "recursive_slot": ex.pt.arch().recursive_slot(),
            "table_pages": ex.pt.table_pages(),
            "table_pages_per_level": levels,
            "frames_allocated": stats.allocated_frames,
            "regions": regions,
            "ranges": ranges,
        });
        println!("{obj}");
        return Ok(());
    }
    println!(
        "# {}: {} levels of {} {}-byte entries, root (CR3) at {:#x}",
        A::NAME,
        A::LEVELS,
        A::ENTRIES,
        A::ENTRY_SIZE,
        ex.pt.root().start_address().as_u64()
    );
    if let Some(slot) = ex.pt.arch().recursive_slot() {
        println!(
            "# recursive page directory in slot {slot}: PTEs at {:#x}, PDEs at {:#x}",
            (slot as u64) << 22,
            ((slot as u64) << 22) + ((slot as u64) << 12)
        );
    }
    for &(what, va, len, size) in &ex.regions {
        println!(
            "#   {:<22} {:#0w$x}-{:#0w$x} in {} pages",
            what,
            va,
            va as u128 + len as u128,
            match size {
                K4 => "4K",
                M2 => "2M",
                M4 => "4M",
                _ => "1G",
            },
            w = width + 2
        );
    }
    let mut marker = usize::MAX;
    for r in &runs {
        if r.marker != marker {
            marker = r.marker;
            println!("---[ {} ]---", ex.markers[marker].1);
        }
        println!(
            "0x{:0w$x}-0x{:0w$x}   {} {}{}",
            A::from_linear(r.start).as_u64(),
            virt_end::<A>(r.end),
            size_text(r.end - r.start),
            flag_text(r.level, r.prot),
            A::level_name(r.level),
            w = width
        );
    }
    let detail: Vec<String> = (1..=A::LEVELS)
        .rev()
        .map(|l| format!("{} {}", per[l as usize], A::level_name(l)))
        .collect();
    println!(
        "# table pages: {} ({}); frames allocated: {} of {}",
        ex.pt.table_pages(),
        detail.join(", "),
        stats.allocated_frames,
        stats.total_frames - stats.reserved_frames
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_units_like_linux() {
        assert_eq!(size_text(4096), "        4K");
        assert_eq!(size_text(3 << 20), "        3M");
        assert_eq!(size_text(12 << 10), "       12K");
        assert_eq!(size_text(1 << 30), "        1G");
        assert_eq!(size_text(128 << 40), "      128T");
    }

    #[test]
    fn flags_like_linux() {
        // A 4 KiB user read-write no-exec page.
        let p = 1 | 2 | 4 | (1 << 63);
        assert_eq!(flag_text(1, p), "USR RW                     NX ");
        // A global 2 MiB kernel text page.
        assert_eq!(
            flag_text(2, 1 | (1 << 7) | (1 << 8)),
            "    ro         PSE     GLB x  "
        );
        assert_eq!(flag_text(1, 0).len(), 30);
    }

    #[test]
    fn i386_example_dump() {
        let ex = build_i386().unwrap();
        let runs = runs(&ex).unwrap();
        // Runs tile the 4 GiB space without gaps.
        assert_eq!(runs[0].start, 0);
        assert_eq!(runs.last().unwrap().end, 1 << 32);
        assert!(runs.windows(2).all(|w| w[0].end == w[1].start));
        let find = |va: u64| runs.iter().find(|r| r.start <= va && va < r.end).unwrap();
        let text = find(0x0804_8000);
        assert_eq!(
            (text.start, text.end, text.level),
            (0x0804_8000, 0x0804_d000, 1)
        );
        assert_eq!(flag_list(1, text.prot), ["USR", "ro", "x"]);
        let k = find(0xC000_0000);
        assert_eq!((k.end - k.start, k.level), (M4, 2));
        assert_eq!(flag_list(2, k.prot), ["ro", "PSE", "GLB", "x"]);
        let kd = find(0xC040_0000);
        assert_eq!(kd.end, 0xC200_0000);
        // The recursive window shows the directory's 5 present entries as 4K pages (as PTEs).
        let per = tables_per_level(&ex).unwrap();
        assert_eq!(per[2], 1);
        assert_eq!(per[1] + 1, ex.pt.table_pages());
        assert_eq!(ex.pt.table_pages(), ex.pt.count_tables(&ex.ram).unwrap());
    }

    #[test]
    fn x86_64_example_dump() {
        let ex = build_x86_64().unwrap();
        let runs = runs(&ex).unwrap();
        assert_eq!(runs[0].start, 0);
        assert_eq!(runs.last().unwrap().end, 1 << 48);
        let find = |va: u64| {
            let lin = X86_64::to_linear(VirtAddr::new(va)).unwrap();
            runs.iter().find(|r| r.start <= lin && lin < r.end).unwrap()
        };
        let dm = find(0xFFFF_8880_0000_0000);
        assert_eq!((dm.end - dm.start, dm.level), (G1, 3));
        assert_eq!(flag_list(3, dm.prot), ["RW", "PSE", "GLB", "NX"]);
        let heap = find(0x100_0000);
        assert_eq!(heap.end - heap.start, 33 * K4);
        assert_eq!(flag_list(1, heap.prot), ["USR", "RW", "NX"]);
        assert_eq!(virt_end::<X86_64>(1 << 47), 0x8000_0000_0000);
        assert_eq!(virt_end::<X86_64>(1 << 48), 1 << 64);
        assert_eq!(ex.pt.table_pages(), ex.pt.count_tables(&ex.ram).unwrap());
    }
}
