//! The region layout of a 32-bit kernel's address space: where each region of every process
//! and of the shared kernel half lies, validated before anything is built on it.
//!
//! Low to high, as the seed describes it: memory kept low for the kernel's own use, the user
//! binary, the user heap, the user range pool (one arena per process), then — above the
//! user/kernel split — the kernel binary, the kernel stacks, the kernel heap, the kernel range
//! pool (one arena for all processes) and the recursively mapped page directory in the last
//! 4 MiB. [`KernelLayout::default`] is that layout for 4 GiB with the classic 3G/1G split
//! (`linux-mm.md` 1.8); any other layout is accepted if [`KernelLayout::validate`] says so.

use core::fmt;

/// Bytes one page-directory entry spans on i386 (and the alignment of the split).
pub const PDE_SPAN: u64 = 4 << 20;
/// The top of a 32-bit space.
pub const SPACE_END: u64 = 1 << 32;
/// Allocation granularity of the user range pool (W1: 64 KiB).
pub const USER_GRANULE: u64 = 64 << 10;
/// One kernel-stack slot: an unmapped guard page below one stack page.
pub const KSTACK_SLOT: u64 = 2 * 4096;

const PAGE: u64 = 4096;

/// A region of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Region {
    /// Low memory kept for the kernel's own use: never mapped for the user (catches NULL),
    /// its directory entries shared like the kernel half's, so what the kernel maps there
    /// (say an identity map of low physical memory) is the same in every process.
    Low,
    /// The user program's image.
    UserBinary,
    /// The user heap (a break growing up from its start).
    UserHeap,
    /// The user range pool: stacks, mappings and reservations of one process.
    UserPool,
    /// The kernel image.
    KernelBinary,
    /// Kernel stacks: one page each, an unmapped guard page below each.
    KernelStacks,
    /// The kernel heap (a break growing up from its start).
    KernelHeap,
    /// The kernel range pool: kernel virtual ranges, one arena for all processes.
    KernelPool,
    /// The recursively mapped page directory (exactly one directory entry's span).
    PageTables,
}

impl Region {
    /// Every region, low to high in the default layout.
    pub const ALL: [Region; 9] = [
        Region::Low,
        Region::UserBinary,
        Region::UserHeap,
        Region::UserPool,
        Region::KernelBinary,
        Region::KernelStacks,
        Region::KernelHeap,
        Region::KernelPool,
        Region::PageTables,
    ];

    /// Short name for tables and errors.
    pub fn name(self) -> &'static str {
        match self {
            Region::Low => "low (kernel use)",
            Region::UserBinary => "user binary",
            Region::UserHeap => "user heap",
            Region::UserPool => "user range pool",
            Region::KernelBinary => "kernel binary",
            Region::KernelStacks => "kernel stacks",
            Region::KernelHeap => "kernel heap",
            Region::KernelPool => "kernel range pool",
            Region::PageTables => "page tables (recursive PD)",
        }
    }

    /// Whether the region lies in the shared kernel half.
    pub fn is_kernel(self) -> bool {
        self >= Region::KernelBinary
    }

    /// Whether a process may map user pages in it.
    pub fn is_user_mappable(self) -> bool {
        matches!(
            self,
            Region::UserBinary | Region::UserHeap | Region::UserPool
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `[start, end)` of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether it covers nothing.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `[start, start + len)` lies inside (`len > 0`).
    pub fn holds(&self, start: u64, len: u64) -> bool {
        len > 0 && start >= self.start && start.checked_add(len).is_some_and(|e| e <= self.end)
    }
}

/// Why a layout is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The user/kernel split is not a multiple of 4 MiB strictly inside the space: the
    /// kernel half must be a whole number of page-directory entries to be shared.
    Split(u64),
    /// A region covers nothing.
    Empty(Region),
    /// A region ends above 4 GiB.
    BeyondSpace(Region),
    /// A boundary of a region is not a multiple of `align`.
    Misaligned {
        region: Region,
        addr: u64,
        align: u64,
    },
    /// A user region above the split or a kernel region below it.
    WrongHalf { region: Region, split: u64 },
    /// The page-table region is not exactly one 4 MiB-aligned directory entry's span.
    RecursiveWindow { start: u64, end: u64 },
    /// Two regions overlap.
    Overlap(Region, Region),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::Split(s) => {
                write!(f, "split {s:#x} is not a multiple of 4 MiB inside 4 GiB")
            }
            LayoutError::Empty(r) => write!(f, "{} is empty", r.name()),
            LayoutError::BeyondSpace(r) => write!(f, "{} ends above 4 GiB", r.name()),
            LayoutError::Misaligned {
                region,
                addr,
                align,
            } => write!(
                f,
                "{} boundary {addr:#x} is not a multiple of {align:#x}",
                region.name()
            ),
            LayoutError::WrongHalf { region, split } => {
                write!(
                    f,
                    "{} lies on the wrong side of the split {split:#x}",
                    region.name()
                )
            }
            LayoutError::RecursiveWindow { start, end } => write!(
                f,
                "page tables [{start:#x}, {end:#x}) must be one 4 MiB-aligned 4 MiB window"
            ),
            LayoutError::Overlap(a, b) => write!(f, "{} overlaps {}", a.name(), b.name()),
        }
    }
}

/// Where every region of a 32-bit kernel's space lies; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// First address of the kernel half (PAGE_OFFSET).
    pub split: u64,
    spans: [Span; 9],
}

impl Default for KernelLayout {
    /// 4 GiB with the 3G/1G split: low 4 MiB, user binary at 0x00400000 (the classic image
    /// base) up to 64 MiB, user heap to 1 GiB, user range pool to 3 GiB; kernel binary
    /// 16 MiB at 0xC0000000, kernel stacks 8 MiB (1024 slots of guard + page), kernel heap
    /// to 0xE0000000, kernel range pool to 0xFFC00000, page tables in the last 4 MiB
    /// (recursive slot 1023).
    fn default() -> Self {
        KernelLayout {
            split: 0xC000_0000,
            spans: [
                Span {
                    start: 0,
                    end: 0x0040_0000,
                },
                Span {
                    start: 0x0040_0000,
                    end: 0x0400_0000,
                },
                Span {
                    start: 0x0400_0000,
                    end: 0x4000_0000,
                },
                Span {
                    start: 0x4000_0000,
                    end: 0xC000_0000,
                },
                Span {
                    start: 0xC000_0000,
                    end: 0xC100_0000,
                },
                Span {
                    start: 0xC100_0000,
                    end: 0xC180_0000,
                },
                Span {
                    start: 0xC180_0000,
                    end: 0xE000_0000,
                },
                Span {
                    start: 0xE000_0000,
                    end: 0xFFC0_0000,
                },
                Span {
                    start: 0xFFC0_0000,
                    end: SPACE_END,
                },
            ],
        }
    }
}

impl KernelLayout {
    /// The span of `region`.
    pub fn span(&self, region: Region) -> Span {
        self.spans[region.index()]
    }

    /// The layout with `region` moved to `[start, end)` (not validated yet).
    pub fn with(mut self, region: Region, start: u64, end: u64) -> Self {
        self.spans[region.index()] = Span { start, end };
        self
    }

    /// The layout with the split moved (not validated yet).
    pub fn with_split(mut self, split: u64) -> Self {
        self.split = split;
        self
    }

    /// The recursive page-directory slot the page-table region asks for.
    pub fn recursive_slot(&self) -> u16 {
        (self.span(Region::PageTables).start / PDE_SPAN) as u16
    }

    /// The region holding `addr`, if any.
    pub fn region_of(&self, addr: u64) -> Option<Region> {
        Region::ALL
            .into_iter()
            .find(|&r| addr >= self.span(r).start && addr < self.span(r).end)
    }

    /// The region holding all of `[start, start + len)` (`len > 0`), if one does.
    pub fn region_holding(&self, start: u64, len: u64) -> Option<Region> {
        Region::ALL
            .into_iter()
            .find(|&r| self.span(r).holds(start, len))
    }

    /// Checks the layout: split a multiple of 4 MiB inside the space; every region
    /// non-empty, page-aligned, below 4 GiB and on its side of the split; low memory aligned
    /// to 4 MiB (its directory entries are shared), the user range pool to 64 KiB (W1), the kernel stacks to whole guard+page slots; the page tables
    /// exactly one 4 MiB-aligned directory entry; no two regions overlapping. The first
    /// violation is returned, regions checked in [`Region::ALL`] order.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.split == 0 || self.split >= SPACE_END || self.split % PDE_SPAN != 0 {
            return Err(LayoutError::Split(self.split));
        }
        for r in Region::ALL {
            let s = self.span(r);
            if s.is_empty() {
                return Err(LayoutError::Empty(r));
            }
            if s.end > SPACE_END {
                return Err(LayoutError::BeyondSpace(r));
            }
            let align = match r {
                Region::Low => PDE_SPAN,
                Region::UserPool => USER_GRANULE,
                Region::KernelStacks => KSTACK_SLOT,
                _ => PAGE,
            };
            for addr in [s.start, s.end] {
                if addr % align != 0 {
                    return Err(LayoutError::Misaligned {
                        region: r,
                        addr,
                        align,
                    });
                }
            }
            let wrong = if r.is_kernel() {
                s.start < self.split
            } else {
                s.end > self.split
            };
            if wrong {
                return Err(LayoutError::WrongHalf {
                    region: r,
                    split: self.split,
                });
            }
            if r == Region::PageTables && (s.start % PDE_SPAN != 0 || s.len() != PDE_SPAN) {
                return Err(LayoutError::RecursiveWindow {
                    start: s.start,
                    end: s.end,
                });
            }
        }
        for (i, a) in Region::ALL.into_iter().enumerate() {
            for b in Region::ALL.into_iter().skip(i + 1) {
                let (x, y) = (self.span(a), self.span(b));
                if x.start < y.end && y.start < x.end {
                    return Err(LayoutError::Overlap(a, b));
                }
            }
        }
        Ok(())
    }
}

/// Sizes as `4 MiB`, `2 GiB`, `768 KiB`.
pub(crate) struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let s = if n >= 1 << 30 && n % (1 << 30) == 0 {
            alloc::format!("{} GiB", n >> 30)
        } else if n >= 1 << 20 && n % (1 << 20) == 0 {
            alloc::format!("{} MiB", n >> 20)
        } else if n >= 1 << 10 && n % (1 << 10) == 0 {
            alloc::format!("{} KiB", n >> 10)
        } else {
            alloc::format!("{n} B")
        };
        f.pad(&s)
    }
}

impl fmt::Display for KernelLayout {
    /// The layout as a table, highest region first (as memory maps are drawn): first and
    /// last address, size, the half it belongs to and what shares it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "32-bit kernel address space, split at {:#010x} (user {} / kernel {})",
            self.split,
            Size(self.split),
            Size(SPACE_END - self.split)
        )?;
        let mut rows = Region::ALL;
        rows.sort_by_key(|&r| core::cmp::Reverse(self.span(r).start));
        for r in rows {
            let s = self.span(r);
            let who = if r == Region::PageTables {
                "per process (PDE points at its own PD)"
            } else if r.is_kernel() || r == Region::Low {
                "shared by every process"
            } else {
                "per process"
            };
            writeln!(
                f,
                "{:#010x}-{:#010x} {:>9}  {:<27} {}",
                s.start,
                s.end - 1,
                Size(s.len()),
                r.name(),
                who
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::Strategy as _;

    #[test]
    fn default_is_valid_and_tiles_4gib() {
        let l = KernelLayout::default();
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(l.recursive_slot(), 1023);
        let total: u64 = Region::ALL.iter().map(|&r| l.span(r).len()).sum();
        assert_eq!(total, SPACE_END, "the default leaves no hole");
        assert_eq!(l.region_of(0x0804_8000), Some(Region::UserHeap));
        assert_eq!(l.region_of(0xFFFF_F000), Some(Region::PageTables));
        assert_eq!(
            l.region_holding(0xBFFF_0000, 0x2_0000),
            None,
            "crosses the split"
        );
    }

    #[test]
    fn refusals_are_typed() {
        let l = KernelLayout::default();
        assert_eq!(
            l.with_split(0xC000_1000).validate(),
            Err(LayoutError::Split(0xC000_1000))
        );
        assert_eq!(l.with_split(0).validate(), Err(LayoutError::Split(0)));
        assert_eq!(
            l.with(Region::UserHeap, 0x0400_0000, 0x0400_0000)
                .validate(),
            Err(LayoutError::Empty(Region::UserHeap))
        );
        assert_eq!(
            l.with(Region::UserBinary, 0x0040_0800, 0x0400_0000)
                .validate(),
            Err(LayoutError::Misaligned {
                region: Region::UserBinary,
                addr: 0x0040_0800,
                align: 4096
            })
        );
        assert_eq!(
            l.with(Region::UserPool, 0x4000_1000, 0xC000_0000)
                .validate(),
            Err(LayoutError::Misaligned {
                region: Region::UserPool,
                addr: 0x4000_1000,
                align: USER_GRANULE
            })
        );
        assert_eq!(
            l.with(Region::UserPool, 0x4000_0000, 0xC040_0000)
                .validate(),
            Err(LayoutError::WrongHalf {
                region: Region::UserPool,
                split: 0xC000_0000
            })
        );
        assert_eq!(
            l.with(Region::KernelBinary, 0xBF00_0000, 0xC100_0000)
                .validate(),
            Err(LayoutError::WrongHalf {
                region: Region::KernelBinary,
                split: 0xC000_0000
            })
        );
        assert_eq!(
            l.with(Region::PageTables, 0xFFE0_0000, SPACE_END)
                .validate(),
            Err(LayoutError::RecursiveWindow {
                start: 0xFFE0_0000,
                end: SPACE_END
            })
        );
        assert_eq!(
            l.with(Region::PageTables, 0xFFC0_0000, SPACE_END + PDE_SPAN)
                .validate(),
            Err(LayoutError::BeyondSpace(Region::PageTables))
        );
        assert_eq!(
            l.with(Region::KernelHeap, 0xC100_0000, 0xE000_0000)
                .validate(),
            Err(LayoutError::Overlap(
                Region::KernelStacks,
                Region::KernelHeap
            ))
        );
        assert_eq!(
            l.with(Region::KernelStacks, 0xC100_0000, 0xC100_3000)
                .validate(),
            Err(LayoutError::Misaligned {
                region: Region::KernelStacks,
                addr: 0xC100_3000,
                align: KSTACK_SLOT
            })
        );
        assert!(LayoutError::Overlap(Region::Low, Region::UserHeap)
            .to_string()
            .contains("overlaps"));
    }

    #[test]
    fn a_2g_split_with_the_window_low_in_the_kernel_half_is_valid() {
        // The recursive slot need not be the last one.
        let l = KernelLayout::default()
            .with_split(0x8000_0000)
            .with(Region::UserPool, 0x4000_0000, 0x8000_0000)
            .with(Region::PageTables, 0x8000_0000, 0x8040_0000)
            .with(Region::KernelBinary, 0x8040_0000, 0xC100_0000)
            .with(Region::KernelPool, 0xE000_0000, SPACE_END);
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(l.recursive_slot(), 512);
    }

    #[test]
    fn display_lists_every_region_top_first() {
        let s = KernelLayout::default().to_string();
        assert!(s.starts_with(
            "32-bit kernel address space, split at 0xc0000000 (user 3 GiB / kernel 1 GiB)"
        ));
        let lines: alloc::vec::Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 10);
        assert!(lines[1].starts_with("0xffc00000-0xffffffff     4 MiB  page tables"));
        assert!(lines[9].starts_with("0x00000000-0x003fffff     4 MiB  low (kernel use)"));
        assert!(lines[9].ends_with("shared by every process"));
        assert!(s.contains("kernel range pool"));
    }

    /// The brute-force reading of the rules, region by region and pair by pair.
    fn acceptable(l: &KernelLayout) -> bool {
        let split_ok = l.split > 0 && l.split < SPACE_END && l.split % PDE_SPAN == 0;
        let each = Region::ALL.iter().all(|&r| {
            let s = l.span(r);
            let align = match r {
                Region::Low => PDE_SPAN,
                Region::UserPool => USER_GRANULE,
                Region::KernelStacks => KSTACK_SLOT,
                _ => PAGE,
            };
            s.start < s.end
                && s.end <= SPACE_END
                && s.start % align == 0
                && s.end % align == 0
                && if r.is_kernel() {
                    s.start >= l.split
                } else {
                    s.end <= l.split
                }
                && (r != Region::PageTables
                    || (s.start % PDE_SPAN == 0 && s.end - s.start == PDE_SPAN))
        });
        let disjoint = Region::ALL.iter().all(|&a| {
            Region::ALL.iter().all(|&b| {
                a == b || l.span(a).end <= l.span(b).start || l.span(b).end <= l.span(a).start
            })
        });
        split_ok && each && disjoint
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Random layouts — each region moved, boundaries on pages, 64 KiB, 4 MiB or
        /// anywhere, some past 4 GiB or wrapped — are accepted exactly when the rules hold,
        /// and validation never panics.
        #[test]
        fn validate_accepts_exactly_the_valid_layouts(
            moves in proptest::collection::vec(
                (0usize..9, 0u64..(1 << 33), 0u64..(1 << 31), 0u32..4),
                0..4,
            ),
            split in proptest::prop_oneof![
                proptest::strategy::Just(0xC000_0000u64),
                (1u64..1024).prop_map(|x| x << 22),
                proptest::prelude::any::<u64>(),
            ],
        ) {
            let mut l = KernelLayout::default().with_split(split);
            for (r, start, len, grain) in moves {
                let g = [1u64, PAGE, USER_GRANULE, PDE_SPAN][grain as usize];
                let start = start / g * g;
                let end = start.wrapping_add(len / g * g);
                l = l.with(Region::ALL[r], start, end);
            }
            proptest::prop_assert_eq!(l.validate().is_ok(), acceptable(&l), "{:?}", l);
        }
    }
}
