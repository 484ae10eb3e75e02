//! `vmspace layout`: the layout of a freshly exec'd static program's address space, computed
//! by the model (L1–L18, B5), printed and drawn to scale.
//!
//! The space is the one LWN's 2004 "Reorganizing the address space" draws: text and data of a
//! non-PIE executable, the heap starting at the end of bss (L10–L11), the mmap area (below
//! `mmap_base` growing down, or from `mmap_legacy_base` growing up, L1–L5) holding the vDSO
//! (L18), the stack at the top with its rlimit and guard gap (L15–L17), and the kernel. The
//! largest heap is found by growing the break in the model exactly as the Linux cross-check
//! program does (`tests/layout_linux.rs`); the largest mmap by a binary search over lengths.

use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use vmspace::space::abi::{MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PROT_NONE, PROT_READ};
use vmspace::space::vma::flags::VM_GROWSDOWN;
use vmspace::space::{AddressSpace, ProcStat, SnapshotVma, SpaceConfig, TaskKind};

use crate::picture::{self, BandKind, Marker, SpaceExtras, SpacePicture};

const PAGE: u64 = 4096;

/// Which architecture's task.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchArg {
    I386,
    #[value(name = "x86_64")]
    X86_64,
}

/// Which mmap layout (L1).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// Bottom-up from TASK_UNMAPPED_BASE (`setarch -L`, vm.legacy_va_layout=1).
    Legacy,
    /// Top-down from mmap_base below the stack gap (the default since 2004).
    Topdown,
}

/// Arguments of `vmspace layout`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  vmspace layout                                    x86-64, top-down: the table and the limits
  vmspace layout --arch i386 --layout legacy --svg i386-legacy.svg
  vmspace layout --arch i386 --native --svg native.png  a PNG: the name decides the format
  vmspace layout --stack-limit 1G --json            one JSON object: bands and limits")]
pub struct LayoutArgs {
    /// Task architecture: `i386` is a 32-bit task on this 64-bit kernel (TASK_SIZE
    /// 0xffffe000) unless `--native` asks for a native i386 kernel's 3G/1G split.
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: ArchArg,
    /// With `--arch i386`: a native 32-bit kernel (kernel owns the top 1 GiB).
    #[arg(long)]
    native: bool,
    /// The mmap layout to draw (both are summarised either way).
    #[arg(long, value_enum, default_value = "topdown")]
    layout: LayoutArg,
    /// RLIMIT_STACK at exec, e.g. `8M`, `256M`, `1G`, `unlimited` (decides mmap_base, L4).
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    stack_limit: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also draw the layout to this path: an SVG, or a PNG if the name ends in `.png`.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
}

/// Parses `4096`, `64K`, `8M`, `1G`, `2T`, `0x1000` or `unlimited`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinity") {
        return Ok(u64::MAX);
    }
    if let Some(h) = t.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).map_err(|e| format!("bad size {s:?}: {e}"));
    }
    let (num, shift) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 0,
                "K" => 10,
                "M" => 20,
                "G" => 30,
                "T" => 40,
                _ => return Err(format!("bad size unit in {s:?} (use K, M, G, T)")),
            };
            (&t[..i], shift)
        }
        None => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|e| format!("bad size {s:?}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} overflows 64 bits"))
}

/// What a band of the address space is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Below mmap_min_addr: never mappable.
    NullGuard,
    Text,
    Data,
    Heap,
    /// Free, and the heap can grow into it (up to `heap_limit`).
    HeapRoom,
    /// Free, and the mmap area grows into it (and possibly the heap too).
    MmapRoom,
    /// Free space nothing grows into by itself (only MAP_FIXED or hints land there).
    Free,
    /// A mapping in the mmap area (vDSO, vvar).
    Mapping,
    /// The gap kept between mmap_base and the stack top (rlimit + guard, L4).
    StackGap,
    /// Where the stack may grow (down to top - RLIMIT_STACK, L17).
    StackRoom,
    /// stack_guard_gap below the lowest possible stack.
    StackGuard,
    Stack,
    /// Above TASK_SIZE: kernel or reserved.
    Kernel,
    /// Non-canonical hole of x86-64.
    NonCanonical,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::NullGuard => "below mmap_min_addr",
            Kind::Text => "text",
            Kind::Data => "data/bss",
            Kind::Heap => "heap",
            Kind::HeapRoom => "heap can grow",
            Kind::MmapRoom => "mmap area can grow",
            Kind::Free => "free",
            Kind::Mapping => "mapping",
            Kind::StackGap => "stack gap",
            Kind::StackRoom => "stack can grow",
            Kind::StackGuard => "stack guard gap",
            Kind::Stack => "stack",
            Kind::Kernel => "kernel",
            Kind::NonCanonical => "non-canonical",
        }
    }
}

/// One band `[start, end)` of the space (ends can be 2^64, hence u128).
#[derive(Clone, Debug, Serialize)]
pub struct Band {
    pub start: u128,
    pub end: u128,
    pub kind: Kind,
    pub label: String,
}

/// How far the heap and a single mmap can go under one layout.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// `x86_64`, `compat` (i386 task on a 64-bit kernel) or `native` (i386 3G/1G kernel).
    pub kernel: &'static str,
    pub layout: &'static str,
    pub mmap_base: u64,
    pub start_brk: u64,
    /// Highest break brk() grants, grown from start_brk until refused (B5).
    pub max_brk: u64,
    pub max_heap: u64,
    /// The VMA that stops the heap (its guard gap and one page are kept free, B5).
    pub heap_stopped_by: String,
    /// Largest length one hint-less mmap(MAP_NORESERVE) gets, and where it lands.
    pub max_mmap: u64,
    pub max_mmap_at: u64,
}

/// A whole layout report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub title: String,
    pub task_size: u64,
    /// The top of the drawn space (2^32 or 2^64).
    pub space_end: u128,
    pub layout: &'static str,
    pub stack_limit: u64,
    pub stack_guard_gap: u64,
    pub mmap_min_addr: u64,
    pub bands: Vec<Band>,
    pub limits: Vec<Limits>,
}

fn snap(start: u64, end: u64, perms: &[u8; 4], name: &str) -> SnapshotVma {
    SnapshotVma {
        start,
        end,
        perms: *perms,
        offset: 0,
        dev: (0, 0),
        inode: 0,
        name: name.into(),
        vmflags: None,
    }
}

/// The exec'd static program: text, data/bss, the stack VMA (L17, N = 1) and the vDSO
/// block (4 + 2 + 2 pages, L18) placed by the model's own get_unmapped_area.
pub fn exec_space(cfg: SpaceConfig) -> AddressSpace {
    let probe = AddressSpace::new(cfg.clone());
    let lay = *probe.layout();
    // Non-PIE static executable: ld's default image base (0x08048000 / 0x400000).
    let text = if lay.is32 { 0x0804_8000 } else { 0x40_0000 };
    let text_end = text + 0x80000; // 512 KiB of text
    let data_end = text_end + 0x6000; // data + bss
    let top = lay.stack_top;
    let rlim = cfg.rlimit_stack & !(PAGE - 1);
    let stack_len = if PAGE + (128 << 10) > rlim {
        rlim.max(PAGE)
    } else {
        PAGE + (128 << 10)
    };
    let mut vmas = vec![
        snap(text, text_end, b"r-xp", ""),
        snap(text_end, data_end, b"rw-p", ""),
        snap(top - stack_len, top, b"rw-p", "[stack]"),
    ];
    let stat = ProcStat {
        start_code: text,
        end_code: text_end,
        start_data: text_end,
        end_data: data_end,
        start_brk: data_end,
        brk: data_end,
        start_stack: top - 0x100,
    };
    let mut s = AddressSpace::from_snapshot(cfg.clone(), &vmas, &stat)
        .expect("the exec snapshot is well formed");
    if let Ok(v) = s.mmap(0, 8 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, None, 0) {
        vmas.push(snap(v, v + 4 * PAGE, b"r--p", "[vvar]"));
        vmas.push(snap(v + 4 * PAGE, v + 6 * PAGE, b"r--p", "[vvar_vclock]"));
        vmas.push(snap(v + 6 * PAGE, v + 8 * PAGE, b"r-xp", "[vdso]"));
        vmas.sort_by_key(|v| v.start);
    }
    AddressSpace::from_snapshot(cfg, &vmas, &stat).expect("the exec snapshot is well formed")
}

/// Grows the break from its current value until refused, with the cross-check program's
/// (`tests/layout/growbrk.c`) search: the largest power-of-two step first (2^(bits-2)), kept while brk() grants it,
/// halved when refused, down to one page. Returns the final break and the number of calls.
pub fn grow_brk(s: &mut AddressSpace, bits: u32) -> (u64, u64) {
    let mut cur = s.brk_value();
    let mut step = 1u64 << (bits - 2);
    let mut calls = 0;
    let mask = if bits == 32 { 0xffff_ffff } else { u64::MAX };
    while step >= PAGE {
        let want = cur.wrapping_add(step) & mask;
        calls += 1;
        if want > cur && s.brk(want) == want {
            cur = want;
        } else {
            step >>= 1;
        }
    }
    (cur, calls)
}

/// The largest single hint-less anonymous mmap (MAP_NORESERVE, so overcommit is no limit).
pub fn largest_mmap(s: &AddressSpace) -> (u64, u64) {
    let try_len = |pages: u64| {
        let mut c = s.clone();
        c.mmap(
            0,
            pages * PAGE,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
            None,
            0,
        )
        .ok()
    };
    let (mut lo, mut hi) = (0u64, s.layout().task_size / PAGE + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if try_len(mid).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let at = if lo == 0 { 0 } else { try_len(lo).unwrap_or(0) };
    (lo * PAGE, at)
}

fn vma_name(s: &AddressSpace, start: u64) -> String {
    s.maps_lines()
        .into_iter()
        .find(|l| l.start == start)
        .map(|l| {
            if l.name.is_empty() {
                format!("anon {}", String::from_utf8_lossy(&l.perms))
            } else {
                l.name
            }
        })
        .unwrap_or_default()
}

fn kernel_name(k: TaskKind) -> &'static str {
    match k {
        TaskKind::X86_64 => "x86_64",
        TaskKind::Compat32 => "compat",
        TaskKind::I386Native => "native",
    }
}

fn limits(cfg: &SpaceConfig) -> Limits {
    let s = exec_space(cfg.clone());
    let lay = *s.layout();
    let mut h = s.clone();
    let (max_brk, _) = grow_brk(&mut h, if lay.is32 { 32 } else { 64 });
    let stopper = h
        .find_vma_above(max_brk)
        .map(|v| format!("{} at {:#x}", vma_name(&h, v.start), v.start))
        .unwrap_or_else(|| "TASK_SIZE".into());
    let (max_mmap, max_mmap_at) = largest_mmap(&s);
    Limits {
        kernel: kernel_name(cfg.kind),
        layout: if lay.topdown { "topdown" } else { "legacy" },
        mmap_base: if lay.topdown {
            lay.mmap_base
        } else {
            lay.mmap_legacy_base
        },
        start_brk: s.start_brk(),
        max_brk,
        max_heap: max_brk - s.start_brk(),
        heap_stopped_by: stopper,
        max_mmap,
        max_mmap_at,
    }
}

/// Computes the report for a configuration (`cfg.legacy_layout` picks the drawn layout).
pub fn report(cfg: &SpaceConfig) -> Report {
    let s = exec_space(cfg.clone());
    let lay = *s.layout();
    let guard = cfg.stack_guard_gap;
    let min_addr = cfg.mmap_min_addr.max(cfg.lsm_mmap_min_addr);
    // Both layouts; for i386 both kernels too (the drawn one first).
    let kinds: &[TaskKind] = match cfg.kind {
        TaskKind::X86_64 => &[TaskKind::X86_64],
        TaskKind::Compat32 => &[TaskKind::Compat32, TaskKind::I386Native],
        TaskKind::I386Native => &[TaskKind::I386Native, TaskKind::Compat32],
    };
    let mut both = Vec::new();
    for &kind in kinds {
        for legacy in [true, false] {
            let mut c = cfg.clone();
            c.kind = kind;
            c.legacy_layout = legacy;
            both.push(limits(&c));
        }
    }
    let mine = both[usize::from(lay.topdown)].clone();

    // Bands: the VMAs, then the free gaps between them, annotated with who grows there.
    let mut bands: Vec<Band> = Vec::new();
    let push = |bands: &mut Vec<Band>, start: u64, end: u64, kind: Kind, label: String| {
        if end > start {
            bands.push(Band {
                start: start as u128,
                end: end as u128,
                kind,
                label,
            });
        }
    };
    push(
        &mut bands,
        0,
        min_addr,
        Kind::NullGuard,
        format!("unmappable below mmap_min_addr {min_addr:#x}"),
    );
    let vmas: Vec<_> = s.vmas().cloned().collect();
    let stack = vmas.iter().find(|v| v.flags & VM_GROWSDOWN != 0).cloned();
    let stack_low = stack.as_ref().map(|st| {
        let room = cfg.rlimit_stack & !(PAGE - 1);
        lay.stack_top.saturating_sub(room).min(st.start)
    });
    let mut prev_end = min_addr;
    for (i, v) in vmas.iter().enumerate() {
        // The free gap below this VMA.
        let gap_lo = prev_end;
        let gap_hi = v.start;
        if gap_hi > gap_lo {
            let is_stack = stack.as_ref().is_some_and(|st| st.start == v.start);
            let mut hi = gap_hi;
            if is_stack {
                // Down to top - RLIMIT_STACK, or to the guard gap above the VMA below.
                let low = stack_low
                    .unwrap_or(gap_hi)
                    .max(gap_lo.saturating_add(guard).min(gap_hi));
                push(
                    &mut bands,
                    low,
                    gap_hi,
                    Kind::StackRoom,
                    format!(
                        "stack can grow to {low:#x} (RLIMIT_STACK {})",
                        size(cfg.rlimit_stack)
                    ),
                );
                let glow = low.saturating_sub(guard).max(gap_lo);
                push(
                    &mut bands,
                    glow,
                    low,
                    Kind::StackGuard,
                    format!("stack_guard_gap {}", size(guard)),
                );
                hi = glow;
                if lay.topdown && lay.mmap_base < hi && lay.mmap_base >= gap_lo {
                    push(
                        &mut bands,
                        lay.mmap_base,
                        hi,
                        Kind::StackGap,
                        "rest of the gap kept below the stack (L4: 128 MiB minimum)".into(),
                    );
                    hi = lay.mmap_base;
                }
            }
            let heap_below =
                gap_lo == page_up(s.brk_value()) || i > 0 && vmas[i - 1].end == s.start_brk();
            if heap_below && mine.max_brk > gap_lo && mine.max_brk <= hi {
                let what = if lay.topdown {
                    "heap grows up, mmap grows down into the same hole"
                } else {
                    "heap grows up"
                };
                push(
                    &mut bands,
                    gap_lo,
                    mine.max_brk,
                    Kind::HeapRoom,
                    format!("{what}; largest break {:#x} (B5)", mine.max_brk),
                );
                push(
                    &mut bands,
                    mine.max_brk,
                    hi,
                    Kind::Free,
                    "one page kept below the next VMA, plus its guard gap if it grows down (B5)"
                        .into(),
                );
            } else if lay.topdown && hi <= lay.mmap_base
                || !lay.topdown && gap_lo >= lay.mmap_legacy_base
            {
                let dir = if lay.topdown { "down" } else { "up" };
                push(
                    &mut bands,
                    gap_lo,
                    hi,
                    Kind::MmapRoom,
                    format!("mmap area grows {dir} into it"),
                );
            } else {
                push(&mut bands, gap_lo, hi, Kind::Free, "free".into());
            }
        }
        let name = vma_name(&s, v.start);
        let kind = if i == 0 {
            Kind::Text
        } else if v.end == s.start_brk() && v.start < s.start_brk() {
            Kind::Data
        } else if stack.as_ref().is_some_and(|st| st.start == v.start) {
            Kind::Stack
        } else if name == "[heap]" {
            Kind::Heap
        } else {
            Kind::Mapping
        };
        let label = match kind {
            Kind::Text => "text (r-x)".to_string(),
            Kind::Data => format!("data/bss; heap starts at start_brk {:#x}", s.start_brk()),
            Kind::Stack => format!("stack (initial VMA, top {:#x})", lay.stack_top),
            _ => name,
        };
        push(&mut bands, v.start, v.end, kind, label);
        prev_end = v.end;
    }
    let ts = lay.task_size;
    let (title, space_end): (String, u128) = match cfg.kind {
        TaskKind::X86_64 => {
            push(&mut bands, prev_end, ts, Kind::Free, "free".into());
            bands.push(Band {
                start: ts as u128,
                end: 1 << 47,
                kind: Kind::Kernel,
                label: "last user page, never mappable".into(),
            });
            bands.push(Band {
                start: 1 << 47,
                end: 0xffff_8000_0000_0000,
                kind: Kind::NonCanonical,
                label: "non-canonical hole".into(),
            });
            bands.push(Band {
                start: 0xffff_8000_0000_0000,
                end: 1 << 64,
                kind: Kind::Kernel,
                label: "kernel (upper half)".into(),
            });
            ("x86-64 task, 4-level paging".into(), 1 << 64)
        }
        TaskKind::Compat32 => {
            push(&mut bands, prev_end, ts, Kind::Free, "free".into());
            bands.push(Band {
                start: ts as u128,
                end: 1 << 32,
                kind: Kind::Kernel,
                label: "above TASK_SIZE 0xffffe000 (the 64-bit kernel lives above 2^47)".into(),
            });
            ("i386 task on a 64-bit kernel (compat)".into(), 1 << 32)
        }
        TaskKind::I386Native => {
            push(&mut bands, prev_end, ts, Kind::Free, "free".into());
            bands.push(Band {
                start: ts as u128,
                end: 1 << 32,
                kind: Kind::Kernel,
                label: "kernel (3G/1G split, PAGE_OFFSET 0xc0000000)".into(),
            });
            (
                "i386 task on a native 32-bit kernel (3G/1G)".into(),
                1 << 32,
            )
        }
    };
    bands.sort_by_key(|b| b.start);
    Report {
        title,
        task_size: ts,
        space_end,
        layout: if lay.topdown { "topdown" } else { "legacy" },
        stack_limit: cfg.rlimit_stack,
        stack_guard_gap: guard,
        mmap_min_addr: min_addr,
        bands,
        limits: both,
    }
}

fn page_up(x: u64) -> u64 {
    x.wrapping_add(PAGE - 1) & !(PAGE - 1)
}

/// `12 KiB`, `1.5 GiB`, `128 TiB`.
pub fn size(n: u64) -> String {
    size128(n as u128)
}

use picture::size128;

impl Kind {
    /// The picture's band kind for this layout kind.
    fn band_kind(self) -> BandKind {
        match self {
            Kind::NullGuard => BandKind::NullGuard,
            Kind::Text => BandKind::Text,
            Kind::Data => BandKind::Data,
            Kind::Heap => BandKind::Heap,
            Kind::HeapRoom => BandKind::HeapRoom,
            Kind::MmapRoom => BandKind::MmapRoom,
            Kind::Free => BandKind::Free,
            Kind::Mapping => BandKind::Mmap,
            Kind::StackGap => BandKind::Reserved,
            Kind::StackRoom => BandKind::StackReserved,
            Kind::StackGuard => BandKind::StackGuard,
            Kind::Stack => BandKind::Stack,
            Kind::Kernel => BandKind::Kernel,
            Kind::NonCanonical => BandKind::NonCanonical,
        }
    }
}

/// The report as a space picture: its bands, a subtitle with the layout's parameters, and
/// markers where the mmap area starts and where the heap must stop (B5).
pub fn picture(r: &Report) -> (SpacePicture, SpaceExtras) {
    let bands = r
        .bands
        .iter()
        .map(|b| picture::Band {
            start: b.start as u64,
            // 2^64 does not fit: u64::MAX stands for it.
            end: u64::try_from(b.end).unwrap_or(u64::MAX),
            kind: b.kind.band_kind(),
            label: b.label.clone(),
        })
        .collect();
    let bits = if r.space_end > 1 << 32 { 64 } else { 32 };
    let mut markers = Vec::new();
    if let Some(l) = r.limits.iter().find(|l| l.layout == r.layout) {
        let base = if r.layout == "topdown" {
            "mmap_base"
        } else {
            "mmap_legacy_base"
        };
        // The base's words above its line, the break's below, so close markers stay legible.
        markers.push(Marker {
            at: l.mmap_base,
            text: format!("{base} {:#x}", l.mmap_base),
            color: "#1f4e9a",
            below: false,
        });
        markers.push(Marker {
            at: l.max_brk,
            text: format!("largest break {:#x} (B5)", l.max_brk),
            color: "#c0392b",
            below: true,
        });
    }
    let extras = SpaceExtras {
        subtitle: Some(format!(
            "TASK_SIZE {:#x}, RLIMIT_STACK {}, stack_guard_gap {}",
            r.task_size,
            size128(r.stack_limit as u128),
            size128(r.stack_guard_gap as u128)
        )),
        markers,
    };
    (
        SpacePicture {
            title: format!("{}: {} layout", r.title, r.layout),
            bits,
            bands,
        },
        extras,
    )
}

fn render_text(r: &Report) -> String {
    let w = if r.space_end > 1 << 32 { 16 } else { 8 };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}, {} layout, TASK_SIZE {:#x}, RLIMIT_STACK {}, stack_guard_gap {}, mmap_min_addr {:#x}",
        r.title,
        r.layout,
        r.task_size,
        size(r.stack_limit),
        size(r.stack_guard_gap),
        r.mmap_min_addr
    );
    let _ = writeln!(o, "{:>w$}   {:>w$}  {:>10}  region", "start", "end", "size");
    for b in r.bands.iter().rev() {
        let _ = writeln!(
            o,
            "{:0w$x} - {:0w$x}  {:>10}  {:<18} {}",
            b.start,
            b.end,
            size128(b.end - b.start),
            b.kind.name(),
            b.label
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<7}{:<8} {:>w$}  {:>w$}  {:>10}  {:>w$}  {:>10}  heap stopped by",
        "kernel", "layout", "mmap base", "max brk", "max heap", "max mmap@", "max mmap"
    );
    for l in &r.limits {
        let _ = writeln!(
            o,
            "{:<7}{:<8} {:0w$x}  {:0w$x}  {:>10}  {:0w$x}  {:>10}  {}",
            l.kernel,
            l.layout,
            l.mmap_base,
            l.max_brk,
            size(l.max_heap),
            l.max_mmap_at,
            size(l.max_mmap),
            l.heap_stopped_by
        );
    }
    // Where the drawn layout's regions meet.
    if let Some(l) = r.limits.iter().find(|l| l.layout == r.layout) {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "heap:  grows up from start_brk {:#x}; brk() is refused past {:#x}, one page below {} (B5)",
            l.start_brk, l.max_brk, l.heap_stopped_by
        );
        let how = if r.layout == "topdown" {
            format!(
                "grows down from mmap_base {:#x} into the hole the heap grows up into",
                l.mmap_base
            )
        } else {
            format!(
                "grows up from mmap_legacy_base {:#x} toward the stack; the heap below it is capped there",
                l.mmap_base
            )
        };
        let _ = writeln!(
            o,
            "mmap:  {how}; the largest single mmap is {} at {:#x}",
            size(l.max_mmap),
            l.max_mmap_at
        );
        if let Some(b) = r.bands.iter().find(|b| b.kind == Kind::StackRoom) {
            let _ = writeln!(
                o,
                "stack: grows down to {:#x} (RLIMIT_STACK {}); nothing may be mapped within stack_guard_gap {} below it",
                b.start,
                size(r.stack_limit),
                size(r.stack_guard_gap)
            );
        }
    }
    o
}

/// Runs `vmspace layout`.
pub fn run(args: LayoutArgs) -> Result<(), String> {
    let kind = match (args.arch, args.native) {
        (ArchArg::X86_64, false) => TaskKind::X86_64,
        (ArchArg::X86_64, true) => return Err("--native applies to --arch i386 only".into()),
        (ArchArg::I386, false) => TaskKind::Compat32,
        (ArchArg::I386, true) => TaskKind::I386Native,
    };
    let mut cfg = SpaceConfig::linux_default(kind);
    cfg.rlimit_stack = args.stack_limit;
    cfg.legacy_layout = args.layout == LayoutArg::Legacy;
    let r = report(&cfg);
    if let Some(p) = &args.svg {
        let (pic, extras) = picture(&r);
        picture::write_picture(p, &picture::render_space_with(&pic, &extras))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        print!("{}", render_text(&r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(i: u8) -> TaskKind {
        [TaskKind::X86_64, TaskKind::Compat32, TaskKind::I386Native][i as usize % 3]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Any stack limit (tiny, huge, unlimited) gives bands that tile the space exactly,
        /// a heap that ends one page below the VMA that stops it (B5), and a mmap_base L4
        /// keeps between 128 MiB and 5/6 of the task size below the top.
        #[test]
        fn bands_tile_and_limits_hold(
            k in 0u8..3,
            legacy: bool,
            stack in proptest::prop_oneof![
                0u64..(1 << 20),
                (1u64 << 20)..(1 << 34),
                proptest::strategy::Just(u64::MAX),
                proptest::prelude::any::<u64>(),
            ],
        ) {
            let mut c = SpaceConfig::linux_default(kind_of(k));
            c.rlimit_stack = stack;
            c.legacy_layout = legacy;
            let r = report(&c);
            let mut at = 0u128;
            for b in &r.bands {
                proptest::prop_assert_eq!(b.start, at);
                proptest::prop_assert!(b.end > b.start);
                at = b.end;
            }
            proptest::prop_assert_eq!(at, r.space_end);
            for l in &r.limits {
                proptest::prop_assert!(l.max_brk >= l.start_brk);
                proptest::prop_assert!(l.max_brk % PAGE == 0 || l.max_brk == l.start_brk);
                proptest::prop_assert!(l.max_mmap > 0);
            }
            let ts = r.task_size;
            let td = r.limits.iter().find(|l| l.layout == "topdown").unwrap();
            proptest::prop_assert!(ts - td.mmap_base >= 128 << 20);
            proptest::prop_assert!(ts - td.mmap_base <= ts / 6 * 5 + PAGE);
        }
    }

    #[test]
    fn parse_size_units_and_errors() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("unlimited"), Ok(u64::MAX));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("8Q").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn b5_heap_stops_one_page_below_the_vdso_block() {
        // Compat, top-down, 8 MiB: vvar..vdso (8 pages) right below mmap_base (L4, L18).
        let r = report(&SpaceConfig::linux_default(TaskKind::Compat32));
        let td = r.limits.iter().find(|l| l.layout == "topdown").unwrap();
        assert_eq!(td.max_brk, 0xf7ff_e000 - 9 * PAGE);
        assert!(td.heap_stopped_by.starts_with("[vvar]"));
    }

    #[test]
    fn tiny_stack_limit_keeps_the_stack_vma_within_it() {
        // L17: with RLIMIT_STACK below 132 KiB the initial VMA is rlimit long.
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.rlimit_stack = 64 << 10;
        let s = exec_space(c);
        let st = s.vmas().find(|v| v.flags & VM_GROWSDOWN != 0).unwrap();
        assert_eq!(st.end - st.start, 64 << 10);
    }
}
