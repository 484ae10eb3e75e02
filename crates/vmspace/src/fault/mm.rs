//! [`Mm`]: an address space (VMAs) with its page table kept in step, the fault entry point,
//! fork and exit.
//!
//! Keeping page tables in sync: space operations record [`MmuEvent`]s at the points where
//! they drop or move page contents (`space/mmu.rs`); every operation run through
//! [`Mm::op`] applies them afterwards: `Zap` unmaps and releases frames (reference-count
//! aware), `Move` moves entries (a space mremap run through `op`), `Punch` evicts page
//! cache pages. [`Mm::mremap`] moves entries inside the space operation instead, where
//! Linux moves page tables, so that a destination without table frames fails the call
//! (ENOMEM) before the source is unmapped (`space/mmu.rs`, `PageMover`). Protection
//! changes re-derive entry rights over the range ([`Mm::mprotect`]). Why events rather than
//! diffing VMAs before and after: a MAP_FIXED replacement or a DONTNEED leaves VMAs that
//! look unchanged while their pages must go, and a diff cannot tell a mremap move from an
//! unmap plus a new mapping; the events are emitted exactly where the space (and Linux)
//! decides these things, including partial failures.

use super::classify::{self, Access, Kind, VmaView};
use super::{cow, demand_zero, pte, shared};
use super::{FaultError, InternalError, ObjKey, Phys, RefFrames, Resolved, ANON, SHMEM};
use crate::addr::{Frame, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{Arch, Entry, PageFlags};
use crate::paging::{Flush, MapError, PageTable, Tlb, Translation};
use crate::phys::PhysMem;
use crate::space::mmu::MmuEvent;
use crate::space::vma::flags::*;
use crate::space::vma::Backing;
use crate::space::{
    AddressSpace, AllocKind, Errno, Signal, SmapsEntry, SpaceConfig, WinError, WinProt,
};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// Resident pages of an address space, split as Linux's RSS counters are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// MM_ANONPAGES: private frames.
    pub anon: u64,
    /// MM_FILEPAGES: page cache pages of regular files.
    pub file: u64,
    /// MM_SHMEMPAGES: shared memory pages.
    pub shmem: u64,
}

impl Rss {
    /// All resident pages (the zero page is never counted).
    pub fn total(&self) -> u64 {
        self.anon + self.file + self.shmem
    }

    /// One page with entry `flags` on `frame` less.
    fn uncount(&mut self, flags: PageFlags, frame: Frame, zero: Frame) {
        if flags.contains(ANON) {
            self.anon = self.anon.saturating_sub(1);
        } else if flags.contains(SHMEM) {
            self.shmem = self.shmem.saturating_sub(1);
        } else if frame != zero {
            self.file = self.file.saturating_sub(1);
        }
    }

    /// One page with entry `flags` on `frame` more.
    fn count(&mut self, flags: PageFlags, frame: Frame, zero: Frame) {
        if flags.contains(ANON) {
            self.anon += 1;
        } else if flags.contains(SHMEM) {
            self.shmem += 1;
        } else if frame != zero {
            self.file += 1;
        }
    }
}

/// Resident and anonymous pages of one range (smaps `Rss`, `Anonymous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaRss {
    pub rss: u64,
    pub anon: u64,
}

/// What the last operation of an [`Mm`] could not do for want of a frame (taken with
/// [`Mm::take_starved`]). Linux's allocator would run the OOM killer and retry at that
/// point (mm/page_alloc.c `__alloc_pages_may_oom`); a caller with other processes to kill
/// (a simulator) does so and then resumes or repeats the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Starved {
    /// A mremap move found no frame for a destination page table (and reclaim, if any,
    /// freed none: [`Mm::mremap_reclaiming`]); the call failed with ENOMEM.
    MoveTables { addr: u64 },
    /// Populating `[start, end)` (MAP_POPULATE, MAP_LOCKED, mlock, MADV_POPULATE_*) stopped
    /// at `start`: no frame for that page or its table. The rest is not resident.
    Populate { start: u64, end: u64, write: bool },
}

/// An address space of architecture `A` with its page table.
#[derive(Debug)]
pub struct Mm<A: Arch> {
    pub(crate) space: AddressSpace,
    pub(crate) pt: PageTable<A>,
    pub(crate) rss: Rss,
    /// Space-local shared anonymous object id -> machine-wide key.
    shm: BTreeMap<u64, ObjKey>,
    /// Objects punched by the last operations, for the other sharers (see [`Mm::take_punched`]).
    punched: Vec<(ObjKey, u64, u64)>,
    /// 2 MiB blocks a THP read fault mapped as Linux's huge zero page: a write anywhere in
    /// one faults in the whole block (do_huge_zero_wp_pmd). Dropped when the block's entries
    /// are zapped or moved.
    huge_zero: BTreeSet<u64>,
    /// What the last operation could not do for want of a frame (see [`Starved`]).
    starved: Vec<Starved>,
}

/// Size of a PMD-mapped transparent huge page (x86-64 and PAE tables).
const THP_SIZE: u64 = 2 << 20;

/// thp_vma_allowable_order(TVA_PAGEFAULT) and thp_vma_suitable_order for a fault at `addr`
/// in the reference configuration (THP "madvise", shmem THP "never"): a private anonymous
/// VMA with VM_HUGEPAGE and without VM_NOHUGEPAGE, holding the whole aligned 2 MiB block,
/// on tables with 2 MiB leaf blocks.
fn thp_fault_allowed<A: Arch>(v: &VmaView, addr: u64) -> bool {
    let base = addr & !(THP_SIZE - 1);
    A::ENTRIES == 512
        && v.flags & (VM_SHARED | VM_MAYSHARE | VM_NOHUGEPAGE | VM_HUGEPAGE) == VM_HUGEPAGE
        && base >= v.start
        && base.checked_add(THP_SIZE).is_some_and(|e| e <= v.end)
}

/// The end of `[addr, addr + len)` rounded up to a page, saturating at the last page.
fn page_end(addr: u64, len: u64) -> u64 {
    addr.saturating_add(len).saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

fn internal_map(e: MapError) -> FaultError {
    FaultError::Internal(InternalError::Map(e))
}

impl<A: Arch> Mm<A> {
    /// A new empty address space with configuration `cfg` and a fresh page table.
    pub fn new<M: PhysMem, F: RefFrames>(
        arch: A,
        cfg: SpaceConfig,
        phys: &mut Phys<M, F>,
    ) -> Result<Self, MapError> {
        Self::with_space(arch, AddressSpace::new(cfg), phys)
    }

    /// Adopts `space` (e.g. built from a snapshot) with no page mapped yet.
    pub fn with_space<M: PhysMem, F: RefFrames>(
        arch: A,
        space: AddressSpace,
        phys: &mut Phys<M, F>,
    ) -> Result<Self, MapError> {
        let pt = PageTable::new(arch, &mut phys.mem, &mut phys.frames)?;
        Ok(Self::with_page_table(space, pt))
    }

    /// Adopts `space` and a page table with no user page mapped yet — e.g. one made by
    /// `PageTable::new_sharing` whose kernel half is shared with every process; forks then
    /// share it too.
    pub fn with_page_table(mut space: AddressSpace, pt: PageTable<A>) -> Self {
        space.set_mmu_log(true);
        let _ = space.take_mmu_events();
        Mm {
            space,
            pt,
            rss: Rss::default(),
            shm: BTreeMap::new(),
            punched: Vec::new(),
            huge_zero: BTreeSet::new(),
            starved: Vec::new(),
        }
    }

    /// The VMAs.
    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    /// The page table.
    pub fn page_table(&self) -> &PageTable<A> {
        &self.pt
    }

    /// Mutable page table, for kernel mappings outside the VMAs (kernel stacks). Pages
    /// mapped here must hold one frame reference each; [`Mm::exit`] drops it.
    pub fn page_table_mut(&mut self) -> &mut PageTable<A> {
        &mut self.pt
    }

    /// Resident pages.
    pub fn rss(&self) -> Rss {
        self.rss
    }

    /// The machine-wide page cache key of a VMA object (`is_file`: a file id, else a
    /// space-local shared anonymous object).
    pub(crate) fn obj_key<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        obj: u64,
        is_file: bool,
    ) -> ObjKey {
        if is_file {
            return obj;
        }
        *self.shm.entry(obj).or_insert_with(|| phys.new_shm())
    }

    /// Resolves a user-mode fault of kind `access` at `addr`, as do_user_addr_fault does.
    /// `Ok` means the access can be retried (and will succeed unless another fault follows,
    /// e.g. an instruction fetch from a no-execute page now mapped).
    pub fn fault<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        access: Access,
    ) -> Result<Resolved, FaultError> {
        let va = VirtAddr::new(addr);
        // One walk decides everything: no table, an empty entry, or a present entry.
        let leaf = match A::to_linear(va) {
            Some(lin) => pte::find_leaf(&self.pt, &phys.mem, lin)
                .map_err(|e| FaultError::Internal(InternalError::Phys(e)))?,
            None => pte::Leaf::NoTable,
        };
        let t = match leaf {
            pte::Leaf::At(entry, raw) => match A::decode(1, raw) {
                Entry::Page {
                    addr: frame, flags, ..
                } => Some(Translation {
                    page: va.align_down(PAGE_SIZE),
                    frame,
                    size: PAGE_SIZE,
                    level: 1,
                    flags,
                    raw,
                    entry,
                }),
                _ => None,
            },
            pte::Leaf::Large => {
                return Err(internal_map(MapError::TableInTheWay(va)));
            }
            pte::Leaf::NoTable => None,
        };
        if let Some(t) = &t {
            if pte::allows(t.flags, access, true, pte::has_nx::<A>()) {
                return Ok(Resolved::Spurious);
            }
        }
        let present = t.is_some_and(|t| t.flags.contains(PageFlags::USER));
        if !self.space.win_table().is_empty() && super::guard::check(self, phys, tlb, addr, access)?
        {
            // In a reservation the Linux path resolves it; what it refuses is an access
            // violation (W13).
            return self
                .fault_linux(phys, tlb, addr, access, leaf, t, present)
                .map_err(|e| super::guard::in_reservation(e, addr, access));
        }
        self.fault_linux(phys, tlb, addr, access, leaf, t, present)
    }

    /// The Linux fault path once the walk is done (`leaf`, `t`, `present`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn fault_linux<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        access: Access,
        leaf: pte::Leaf,
        t: Option<Translation>,
        present: bool,
    ) -> Result<Resolved, FaultError> {
        let block = addr & !(THP_SIZE - 1);
        if access == Access::Write && self.huge_zero.remove(&block) {
            let v = classify::classify(&mut self.space, addr, access, present)?;
            if matches!(v.kind, Kind::Anon) && thp_fault_allowed::<A>(&v, addr) {
                self.zap(phys, tlb, block, block + THP_SIZE, false);
                return self.thp_fault(phys, &v, addr, true, None);
            }
            // The VMA no longer holds the whole block (Linux split the PMD): 4 KiB pages.
            return self.fault(phys, tlb, addr, access);
        }
        // pmd_none, as the space tracks page tables (calibrated on Linux's, MADV_COLLAPSE):
        // read before classify notes this fault's table.
        let pmd_none = !self.space.mem.has_table(addr & !(THP_SIZE - 1));
        let v = match classify::classify(&mut self.space, addr, access, present) {
            Err(FaultError::Signal(f)) if f.signal == Signal::Bus && access != Access::Write => {
                // do_read_fault maps the cached pages around before __do_fault finds the
                // page beyond EOF: they stay mapped (and resident) after the SIGBUS.
                if let Some(v) = classify::object_view(&self.space, addr, access, present) {
                    if let Kind::Object {
                        obj,
                        shmem,
                        is_file,
                    } = v.kind
                    {
                        let key = self.obj_key(phys, obj, is_file);
                        shared::fault_around(self, phys, &v, addr, key, shmem)?;
                    }
                }
                return Err(FaultError::Signal(f));
            }
            r => r?,
        };
        let slot = match leaf {
            pte::Leaf::At(entry, _) => Some(entry),
            _ => None,
        };
        match t {
            None => match v.kind {
                Kind::Object { .. } => {
                    shared::fault(self, phys, &v, addr, access == Access::Write, slot)
                }
                Kind::Anon if pmd_none && thp_fault_allowed::<A>(&v, addr) => {
                    self.thp_fault(phys, &v, addr, access == Access::Write, slot)
                }
                Kind::Anon | Kind::Special => {
                    demand_zero::fault(self, phys, &v, addr, access == Access::Write, slot)
                }
            },
            Some(t) if access == Access::Write => cow::fault(self, phys, tlb, &v, &t, addr),
            Some(t) => cow::upgrade::<A, M, F>(phys, tlb, &v, &t, addr),
        }
    }

    /// do_huge_pmd_anonymous_page: the anon_vma is prepared on any access; a write faults
    /// in the whole 2 MiB block (one huge page in Linux, 512 resident anonymous pages here:
    /// smaps `Rss`/`Anonymous` count the same, and later partial unmaps, DONTNEEDs or
    /// mprotects split it as Linux splits the PMD); a read maps the zero page (Linux's
    /// huge zero page, not resident either).
    fn thp_fault<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        v: &VmaView,
        addr: u64,
        write: bool,
        slot: Option<PhysAddr>,
    ) -> Result<Resolved, FaultError> {
        if !v.has_anon_vma {
            self.space.anon_vma_prepare(v.start);
        }
        let v = VmaView {
            has_anon_vma: true,
            ..*v
        };
        let base = addr & !(THP_SIZE - 1);
        if !write {
            let r = demand_zero::fault(self, phys, &v, addr, false, slot)?;
            self.huge_zero.insert(base);
            return Ok(r);
        }
        let mut p = base;
        while p < base + THP_SIZE {
            let at = if p == addr & !(PAGE_SIZE - 1) {
                slot
            } else {
                None
            };
            demand_zero::fault(self, phys, &v, p, true, at)?;
            p += PAGE_SIZE;
        }
        self.space.note_page_table(base);
        Ok(Resolved::DemandZero)
    }

    /// A user-mode byte access without a TLB: walks the page table, faults and retries.
    /// Reads return `Some(byte)`, writes store `value` and return `None`.
    pub fn touch<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        write: bool,
        value: u8,
    ) -> Result<Option<u8>, FaultError> {
        let access = if write { Access::Write } else { Access::Read };
        for _ in 0..4 {
            if let Ok(t) = self.pt.translate(&phys.mem, VirtAddr::new(addr)) {
                if pte::allows(t.flags, access, true, pte::has_nx::<A>()) {
                    let pa = t.phys(VirtAddr::new(addr));
                    let r = if write {
                        phys.mem.write(pa, &[value]).map(|_| None)
                    } else {
                        let mut b = [0u8];
                        phys.mem.read(pa, &mut b).map(|_| Some(b[0]))
                    };
                    return r.map_err(|e| FaultError::Internal(InternalError::Phys(e)));
                }
            }
            self.fault(phys, tlb, addr, access)?;
        }
        Err(internal_map(MapError::AlreadyMapped(VirtAddr::new(addr))))
    }

    /// Runs a space operation, then brings the page table in line with what it did.
    pub fn op<M: PhysMem, F: RefFrames, R>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        f: impl FnOnce(&mut AddressSpace) -> R,
    ) -> R {
        self.starved.clear();
        let r = f(&mut self.space);
        self.sync(phys, tlb);
        r
    }

    /// mmap (see [`AddressSpace::mmap`]); MAP_POPULATE / MAP_LOCKED pages are faulted in
    /// where the space populates them (`MmuEvent::Populate`).
    #[allow(clippy::too_many_arguments)]
    pub fn mmap<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        file: Option<crate::space::FileRef>,
        off: u64,
    ) -> Result<u64, Errno> {
        self.op(phys, tlb, |s| s.mmap(addr, len, prot, flags, file, off))
    }

    /// munmap.
    pub fn munmap<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        len: u64,
    ) -> Result<(), Errno> {
        self.op(phys, tlb, |s| s.munmap(addr, len))
    }

    /// mprotect; entries in the range take the new rights (a private frame still shared
    /// after fork stays read-only, so COW is never bypassed). With PROT_GROWSDOWN (or
    /// PROT_GROWSUP) the change reaches down to the start (up to the end) of the VMA holding
    /// `addr` (R-rules of mprotect), so those pages are re-derived as well.
    pub fn mprotect<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        len: u64,
        prot: u64,
    ) -> Result<(), Errno> {
        use crate::space::abi::{PROT_GROWSDOWN, PROT_GROWSUP};
        let mut start = addr & !(PAGE_SIZE - 1);
        let mut end = page_end(addr, len);
        if prot & (PROT_GROWSDOWN | PROT_GROWSUP) != 0 {
            if let Some(v) = self.space.find_vma(start) {
                if prot & PROT_GROWSDOWN != 0 {
                    start = start.min(v.start);
                }
                if prot & PROT_GROWSUP != 0 {
                    end = end.max(v.end);
                }
            }
        }
        let r = self.op(phys, tlb, |s| s.mprotect(addr, len, prot));
        self.reprotect(phys, tlb, start, end);
        r
    }

    /// mremap; pages move with their VMA, their entries moved where Linux moves the page
    /// tables (X7). A move whose destination cannot get a page-table frame fails with ENOMEM
    /// and changes nothing of the source (its VMA, entries, data, RSS and frames stay; see
    /// [`AddressSpace::mremap_moving`] for what Linux keeps of the steps before the move).
    #[allow(clippy::too_many_arguments)]
    pub fn mremap<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    ) -> Result<u64, Errno> {
        self.mremap_reclaiming(
            phys,
            tlb,
            addr,
            old_len,
            new_len,
            flags,
            new_addr,
            &mut |_| false,
        )
    }

    /// [`Mm::mremap`] where a destination page table that finds no frame calls `reclaim`
    /// and tries again while it returns `true` — as Linux's GFP_KERNEL table allocation in
    /// move_page_tables runs the OOM killer and retries in place (mm/page_alloc.c
    /// `__alloc_pages_slowpath`), so nothing of the move is undone or repeated. `reclaim`
    /// must free frames (other address spaces') when it returns `true`. When it returns
    /// `false` the call fails with ENOMEM as [`Mm::mremap`] does, reporting
    /// [`Starved::MoveTables`].
    #[allow(clippy::too_many_arguments)]
    pub fn mremap_reclaiming<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
        reclaim: &mut dyn FnMut(&mut Phys<M, F>) -> bool,
    ) -> Result<u64, Errno> {
        self.starved.clear();
        let mut no_table = false;
        let Mm {
            space,
            pt,
            rss,
            huge_zero,
            ..
        } = self;
        let mut entries = Entries { pt, rss, huge_zero };
        // Events the mover leaves for later (none arise before a move in mremap today).
        let mut later = Vec::new();
        let mut mover = |pending: Vec<MmuEvent>, old: u64, new: u64, len: u64| {
            for e in pending {
                match e {
                    MmuEvent::Zap { start, end } => entries.zap(phys, tlb, start, end, false),
                    e => later.push(e),
                }
            }
            loop {
                // A failed attempt unmaps what it placed: trying again starts afresh.
                match entries.move_entries(phys, tlb, old, new, len) {
                    Ok(()) => return true,
                    Err(MapError::OutOfFrames) if reclaim(phys) => {}
                    Err(e) => {
                        no_table |= e == MapError::OutOfFrames;
                        return false;
                    }
                }
            }
        };
        let r = space.mremap_moving(addr, old_len, new_len, flags, new_addr, &mut mover);
        if no_table && r == Err(Errno::ENOMEM) {
            self.starved.push(Starved::MoveTables { addr });
        }
        later.extend(self.space.take_mmu_events());
        self.apply(phys, tlb, later);
        r
    }

    /// What the last operation could not do for want of a frame; empty if nothing.
    pub fn take_starved(&mut self) -> Vec<Starved> {
        core::mem::take(&mut self.starved)
    }

    /// brk; a shrink releases the pages above the new break.
    pub fn brk<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        target: u64,
    ) -> u64 {
        self.op(phys, tlb, |s| s.brk(target))
    }

    /// madvise; DONTNEED/REMOVE/GUARD_INSTALL drop pages, POPULATE_READ/WRITE fault them in
    /// where the space decides (up to a hole, a guard page or EOF: `MmuEvent::Populate`).
    pub fn madvise<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        len: u64,
        advice: i64,
    ) -> Result<(), Errno> {
        self.op(phys, tlb, |s| s.madvise(addr, len, advice))
    }

    /// mlock; the range is faulted in where the space populates it (not after a failure to
    /// apply the flags, not in VM_LOCKONFAULT VMAs).
    pub fn mlock<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        len: u64,
        flags: u64,
    ) -> Result<(), Errno> {
        self.op(phys, tlb, |s| s.mlock(addr, len, flags))
    }

    /// VirtualAlloc (see [`AddressSpace::virtual_alloc`]); entries of pages whose
    /// protection changed are re-derived.
    pub fn virtual_alloc<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: Option<u64>,
        size: u64,
        kind: AllocKind,
        prot: WinProt,
    ) -> Result<u64, WinError> {
        let r = self.op(phys, tlb, |s| s.virtual_alloc(addr, size, kind, prot));
        if let Ok(at) = r {
            let span = match self.space.win_table().containing(at) {
                Some(a) if addr.is_none() || kind.contains(AllocKind::RESERVE) => (a.base, a.end()),
                // Commit inside a reservation: the pages touching the caller's range.
                _ => {
                    let a = addr.unwrap_or(at);
                    (a & !(PAGE_SIZE - 1), page_end(a, size))
                }
            };
            self.reprotect(phys, tlb, span.0, span.1);
        }
        r
    }

    /// Commit inside a reservation ([`AddressSpace::commit`]).
    pub fn commit<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        size: u64,
        prot: WinProt,
    ) -> Result<u64, WinError> {
        self.op_reprotect(phys, tlb, addr, size, |s| s.commit(addr, size, prot))
    }

    /// MEM_DECOMMIT ([`AddressSpace::decommit`]): the pages' frames are freed.
    pub fn decommit<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        size: u64,
    ) -> Result<(), WinError> {
        self.op(phys, tlb, |s| s.decommit(addr, size))
    }

    /// MEM_RELEASE ([`AddressSpace::release`]): the reservation's frames and tables go.
    pub fn release<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        base: u64,
        size: u64,
    ) -> Result<(), WinError> {
        self.op(phys, tlb, |s| s.release(base, size))
    }

    /// VirtualFree ([`AddressSpace::virtual_free`]).
    pub fn virtual_free<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        size: u64,
        free_type: u32,
    ) -> Result<(), WinError> {
        self.op(phys, tlb, |s| s.virtual_free(addr, size, free_type))
    }

    /// VirtualProtect ([`AddressSpace::virtual_protect`]); present entries take the new
    /// rights (a guard page's entry becomes inaccessible, contents kept).
    pub fn virtual_protect<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        size: u64,
        prot: WinProt,
    ) -> Result<WinProt, WinError> {
        self.op_reprotect(phys, tlb, addr, size, |s| {
            s.virtual_protect(addr, size, prot)
        })
    }

    /// Runs a Windows operation on `[addr, addr + size)` like [`Mm::op`]; when it succeeds
    /// the entries of the pages the range touches are re-derived.
    fn op_reprotect<M: PhysMem, F: RefFrames, R>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        addr: u64,
        size: u64,
        f: impl FnOnce(&mut AddressSpace) -> Result<R, WinError>,
    ) -> Result<R, WinError> {
        let r = self.op(phys, tlb, f);
        if r.is_ok() {
            self.reprotect(phys, tlb, addr & !(PAGE_SIZE - 1), page_end(addr, size));
        }
        r
    }

    /// __mm_populate: faults every page of `[start, end)` in, as a write in writable private
    /// VMAs and a read elsewhere; VM_IO/VM_PFNMAP/VM_LOCKONFAULT and inaccessible VMAs are
    /// skipped; faults that fail (a page beyond EOF, a guard) stop that VMA.
    pub fn populate<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        start: u64,
        end: u64,
    ) {
        self.populate_as(phys, tlb, start, end, None, false);
    }

    fn populate_as<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        start: u64,
        end: u64,
        write: Option<bool>,
        stop_on_error: bool,
    ) {
        let mut cursor = start;
        while cursor < end {
            let (vs, ve, flags) = match self.space.find_vma_above(cursor) {
                Some(v) if v.start < end => (v.start, v.end, v.flags),
                _ => break,
            };
            let (s, e) = (cursor.max(vs), ve.min(end));
            cursor = ve;
            if flags & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT) != 0 || flags & VM_ACCESS_FLAGS == 0 {
                continue;
            }
            let w = write.unwrap_or(flags & (VM_WRITE | VM_SHARED) == VM_WRITE);
            let access = if w { Access::Write } else { Access::Read };
            let mut p = s;
            while p < e {
                if self.fault(phys, tlb, p, access).is_err() {
                    if stop_on_error {
                        return;
                    }
                    break;
                }
                p += PAGE_SIZE;
            }
        }
    }

    /// Applies the page-table events space operations recorded.
    pub fn sync<M: PhysMem, F: RefFrames>(&mut self, phys: &mut Phys<M, F>, tlb: &mut dyn Tlb) {
        let events = self.space.take_mmu_events();
        self.apply(phys, tlb, events);
    }

    /// Applies `events`, oldest first.
    fn apply<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        events: Vec<MmuEvent>,
    ) {
        if events.is_empty() {
            return;
        }
        for e in events {
            match e {
                MmuEvent::Zap { start, end } => self.zap(phys, tlb, start, end, false),
                MmuEvent::Move { old, new, len } => {
                    // Only a space mremap run through `op` gets here ([`Mm::mremap`] moves
                    // inside the call): its VMAs have moved already, so entries that cannot
                    // follow for want of a table frame are dropped, their frames released.
                    if self
                        .entries()
                        .move_entries(phys, tlb, old, new, len)
                        .is_err()
                    {
                        self.zap(phys, tlb, old, old.saturating_add(len), false);
                    }
                }
                MmuEvent::Populate { start, end, write } => {
                    // The space decided the range (VMA kinds, EOF, guards); a fault that
                    // still fails (out of memory) ends this range, as GUP would.
                    let access = if write { Access::Write } else { Access::Read };
                    let mut p = start;
                    while p < end {
                        match self.fault(phys, tlb, p, access) {
                            Ok(_) => p += PAGE_SIZE,
                            Err(FaultError::OutOfMemory { .. }) => {
                                self.starved.push(Starved::Populate {
                                    start: p,
                                    end,
                                    write,
                                });
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                MmuEvent::Punch { obj, first, count } => {
                    let key = match self.shm.get(&obj) {
                        Some(k) => *k,
                        None if obj & crate::space::SHMEM_OBJ_BIT != 0 => continue,
                        None => obj,
                    };
                    phys.evict(key, first, count);
                    self.zap_object(phys, tlb, key, first, count);
                    self.punched.push((key, first, count));
                }
            }
        }
        self.gc_shm(phys);
    }

    /// Objects punched (MADV_REMOVE) since the last call: a simulator with several address
    /// spaces calls [`Mm::zap_object`] on each of the others.
    pub fn take_punched(&mut self) -> Vec<(ObjKey, u64, u64)> {
        core::mem::take(&mut self.punched)
    }

    /// Unmaps every page cache page `first..first + count` of `obj` this space maps (private
    /// copies stay, as truncation keeps COWed pages).
    pub fn zap_object<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        obj: ObjKey,
        first: u64,
        count: u64,
    ) {
        let mut ranges = Vec::new();
        for v in self.space.vmas() {
            let key = match v.backing {
                Backing::File { id } => id,
                Backing::Shmem { obj } => match self.shm.get(&obj) {
                    Some(k) => *k,
                    None => continue,
                },
                _ => continue,
            };
            if key != obj {
                continue;
            }
            let (lo, hi) = (v.pgoff, v.pgoff.saturating_add(v.pages()));
            let (a, b) = (lo.max(first), hi.min(first.saturating_add(count)));
            if a < b {
                ranges.push((v.start + ((a - lo) << 12), v.start + ((b - lo) << 12)));
            }
        }
        for (s, e) in ranges {
            self.zap(phys, tlb, s, e, true);
        }
    }

    /// The entries mapped in `[start, end)`.
    fn mapped(&self, mem: &impl PhysMem, start: u64, end: u64) -> Vec<Translation> {
        mapped(&self.pt, mem, start, end)
    }

    /// The page-table side of this space, apart from the VMAs.
    fn entries(&mut self) -> Entries<'_, A> {
        Entries {
            pt: &mut self.pt,
            rss: &mut self.rss,
            huge_zero: &mut self.huge_zero,
        }
    }

    /// Unmaps the pages of `[start, end)` (only page cache ones if `cache_only`) and drops
    /// their frame references.
    fn zap<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        start: u64,
        end: u64,
        cache_only: bool,
    ) {
        self.entries().zap(phys, tlb, start, end, cache_only);
    }

    /// Gives every entry in `[start, end)` the rights its VMA implies now; entries without a
    /// VMA go. A private frame becomes writable only if no one else maps it.
    pub(crate) fn reprotect<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        start: u64,
        end: u64,
    ) {
        let pages = self.mapped(&phys.mem, start, end);
        let zero = phys.zero_page();
        let mut flush = Flush::Nothing;
        for t in pages {
            let va = t.page.as_u64();
            let frame = Frame::containing(t.frame);
            let vflags = match self.space.find_vma(va) {
                Some(v) => v.flags,
                None => {
                    if let Ok((_, f)) =
                        self.pt
                            .unmap(&mut phys.mem, &mut phys.frames, t.page, PAGE_SIZE)
                    {
                        flush = flush.merge(f);
                        self.rss.uncount(t.flags, frame, zero);
                        let _ = phys.release(frame);
                    }
                    continue;
                }
            };
            let kind = pte::kind_bits(t.flags);
            let writable = vflags & VM_SHARED != 0
                || (kind.contains(ANON) && phys.frames.ref_count(frame) == Ok(1));
            let want = pte::user_flags(vflags, writable, kind);
            if want != (t.flags - PageFlags::DIRTY) | (want & PageFlags::DIRTY) {
                if let Ok(f) = self.pt.protect(&mut phys.mem, t.page, PAGE_SIZE, want) {
                    flush = flush.merge(f);
                }
            }
        }
        flush.flush(tlb);
    }

    /// Forgets shared anonymous objects no VMA refers to any more.
    fn gc_shm<M: PhysMem, F: RefFrames>(&mut self, phys: &mut Phys<M, F>) {
        if self.shm.is_empty() {
            return;
        }
        let live: alloc::collections::BTreeSet<u64> = self
            .space
            .vmas()
            .filter_map(|v| match v.backing {
                Backing::Shmem { obj } => Some(obj),
                _ => None,
            })
            .collect();
        let dead: Vec<u64> = self
            .shm
            .keys()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        for k in dead {
            if let Some(key) = self.shm.remove(&k) {
                phys.shm_put(key);
            }
        }
    }

    /// fork: a copy of this space whose private pages are shared copy-on-write (both entries
    /// read-only, one more reference per frame), shared mappings stay shared (their pages
    /// are found again through the page cache), VM_DONTCOPY VMAs are left out and
    /// VM_WIPEONFORK ones start empty. Entries are copied only for VMAs with an anon_vma, as
    /// Linux's vma_needs_copy decides. If memory runs out half way, everything the child
    /// got is released and no reference is left behind; the parent's entries may stay
    /// read-only (its next write reuses the frame, A4).
    pub fn fork<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
    ) -> Result<Mm<A>, FaultError> {
        // (start, end, flags, has anon_vma, shared anonymous object)
        type Row = (u64, u64, u64, bool, Option<u64>);
        let vmas: Vec<Row> = self
            .space
            .vmas()
            .map(|v| {
                let shm = match v.backing {
                    Backing::Shmem { obj } => Some(obj),
                    _ => None,
                };
                (v.start, v.end, v.flags, v.anon_vma.is_some(), shm)
            })
            .collect();
        for &(_, _, _, _, shm) in &vmas {
            if let Some(obj) = shm {
                self.obj_key(phys, obj, false);
            }
        }
        let space = self.space.dup_for_fork();
        // A shared kernel half stays shared: the child's directory copies those entries.
        let pt = if !self.pt.has_shared_root_entries() {
            PageTable::new(*self.pt.arch(), &mut phys.mem, &mut phys.frames)
        } else {
            PageTable::new_sharing(&self.pt, &mut phys.mem, &mut phys.frames)
        }
        .map_err(|e| super::map_err_at(e, 0))?;
        let mut child = Mm {
            space,
            pt,
            rss: Rss::default(),
            shm: self.shm.clone(),
            punched: Vec::new(),
            huge_zero: BTreeSet::new(),
            starved: Vec::new(),
        };
        for k in child.shm.values() {
            phys.shm_get(*k);
        }
        let zero = phys.zero_page();
        for &(s, e, f, anon, _) in &vmas {
            if f & (VM_DONTCOPY | VM_WIPEONFORK) != 0 || !anon || f & VM_SHARED != 0 {
                continue;
            }
            for t in self.mapped(&phys.mem, s, e) {
                let frame = Frame::containing(t.frame);
                let cow = t.flags - PageFlags::WRITABLE - PageFlags::DIRTY;
                if frame != zero {
                    if let Err(e) = phys.frames.inc_ref(frame) {
                        child.exit(phys);
                        return Err(FaultError::Internal(InternalError::Phys(e)));
                    }
                }
                if let Err(e) = child.pt.map(
                    &mut phys.mem,
                    &mut phys.frames,
                    t.page,
                    t.frame,
                    PAGE_SIZE,
                    cow,
                ) {
                    let _ = phys.release(frame);
                    child.exit(phys);
                    return Err(super::map_err_at(e, t.page.as_u64()));
                }
                child.rss.count(t.flags, frame, zero);
                if t.flags.contains(PageFlags::WRITABLE) {
                    let _ = self.pt.protect(&mut phys.mem, t.page, PAGE_SIZE, cow);
                }
            }
        }
        tlb.invalidate_all();
        Ok(child)
    }

    /// Process exit: unmaps everything (kernel mappings in this table included, but not a
    /// shared kernel half, which outlives the process), drops every frame reference and
    /// frees every table it owns.
    pub fn exit<M: PhysMem, F: RefFrames>(self, phys: &mut Phys<M, F>) {
        let mut frames: Vec<PhysAddr> = Vec::new();
        let _ = self
            .pt
            .destroy(&mut phys.mem, &mut phys.frames, |_, pa, _| frames.push(pa));
        for pa in frames {
            let _ = phys.release(Frame::containing(pa));
        }
        for k in self.shm.values() {
            phys.shm_put(*k);
        }
    }

    /// Resident and anonymous pages in `[start, end)` (smaps `Rss` / `Anonymous`; the zero
    /// page is not resident, as vm_normal_page skips it).
    pub fn range_rss(&self, mem: &impl PhysMem, zero: Frame, start: u64, end: u64) -> VmaRss {
        let mut r = VmaRss::default();
        for t in self.mapped(mem, start, end) {
            if Frame::containing(t.frame) == zero {
                continue;
            }
            r.rss += 1;
            if t.flags.contains(ANON) {
                r.anon += 1;
            }
        }
        r
    }

    /// smaps entries with `rss_kb`/`anon_kb` (and `locked_kb`) from the page table.
    pub fn smaps<M: PhysMem, F: RefFrames>(&self, phys: &Phys<M, F>) -> Vec<SmapsEntry> {
        let mut out = self.space.smaps();
        for e in &mut out {
            let r = self.range_rss(&phys.mem, phys.zero_page(), e.start, e.end);
            e.rss_kb = r.rss * 4;
            e.anon_kb = r.anon * 4;
            let locked = self
                .space
                .find_vma(e.start)
                .is_some_and(|v| v.flags & VM_LOCKED != 0);
            e.locked_kb = if locked { e.rss_kb } else { 0 };
        }
        out
    }

    /// Every user page mapped, as `(page, frame, flags)`, in address order.
    pub fn user_pages(&self, mem: &impl PhysMem) -> Vec<(u64, Frame, PageFlags)> {
        let top = self.space.layout().task_size;
        self.mapped(mem, 0, top)
            .into_iter()
            .map(|t| (t.page.as_u64(), Frame::containing(t.frame), t.flags))
            .collect()
    }

    /// Checks that every mapped user page lies in a VMA whose rights it does not exceed,
    /// and that the RSS counters equal the pages mapped.
    pub fn check<M: PhysMem, F: RefFrames>(
        &self,
        phys: &Phys<M, F>,
    ) -> Result<(), alloc::string::String> {
        let zero = phys.zero_page();
        let mut rss = Rss::default();
        for (va, frame, flags) in self.user_pages(&phys.mem) {
            let v = self
                .space
                .find_vma(va)
                .ok_or_else(|| alloc::format!("page {va:#x} mapped outside any VMA"))?;
            if flags.contains(PageFlags::WRITABLE) && v.flags & VM_WRITE == 0 {
                return Err(alloc::format!("page {va:#x} writable in a read-only VMA"));
            }
            if flags.contains(PageFlags::WRITABLE) && frame == zero {
                return Err(alloc::format!("zero page writable at {va:#x}"));
            }
            if flags.contains(ANON) {
                rss.anon += 1;
                if flags.contains(PageFlags::WRITABLE)
                    && v.flags & VM_SHARED == 0
                    && phys.frames.ref_count(frame) != Ok(1)
                {
                    return Err(alloc::format!("shared private frame writable at {va:#x}"));
                }
            } else if flags.contains(SHMEM) {
                rss.shmem += 1;
            } else if frame != zero {
                rss.file += 1;
            }
        }
        if rss != self.rss {
            return Err(alloc::format!("rss {:?} but pages say {:?}", self.rss, rss));
        }
        Ok(())
    }
}

/// The entries mapped in `[start, end)` of `pt` (4 KiB pages only).
fn mapped<A: Arch>(
    pt: &PageTable<A>,
    mem: &impl PhysMem,
    start: u64,
    end: u64,
) -> Vec<Translation> {
    let mut v = Vec::new();
    if end > start {
        let _ = pt.translate_range(mem, VirtAddr::new(start), end - start, |t| {
            if t.size == PAGE_SIZE {
                v.push(t)
            }
        });
    }
    v
}

/// The page-table side of an [`Mm`] (entries, RSS, huge-zero blocks) borrowed apart from
/// the VMAs, so that it can work from inside a space operation (mremap's page mover).
struct Entries<'a, A: Arch> {
    pt: &'a mut PageTable<A>,
    rss: &'a mut Rss,
    huge_zero: &'a mut BTreeSet<u64>,
}

impl<A: Arch> Entries<'_, A> {
    /// Forgets the huge-zero blocks meeting `[start, end)`.
    fn drop_huge_zero(&mut self, start: u64, end: u64) {
        let from = start & !(THP_SIZE - 1);
        let hit: Vec<u64> = self.huge_zero.range(from..end).copied().collect();
        for b in hit {
            self.huge_zero.remove(&b);
        }
    }

    /// Unmaps the pages of `[start, end)` (only page cache ones if `cache_only`) and drops
    /// their frame references.
    fn zap<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        start: u64,
        end: u64,
        cache_only: bool,
    ) {
        self.drop_huge_zero(start, end);
        let pages = mapped(self.pt, &phys.mem, start, end);
        let zero = phys.zero_page();
        let mut flush = Flush::Nothing;
        for t in pages {
            if cache_only && (t.flags.contains(ANON) || Frame::containing(t.frame) == zero) {
                continue;
            }
            if let Ok((_, f)) = self
                .pt
                .unmap(&mut phys.mem, &mut phys.frames, t.page, PAGE_SIZE)
            {
                flush = flush.merge(f);
                let frame = Frame::containing(t.frame);
                self.rss.uncount(t.flags, frame, zero);
                let _ = phys.release(frame);
            }
        }
        flush.flush(tlb);
    }

    /// Moves the entries of `[old, old + len)` to `[new, new + len)` as move_page_tables
    /// does: the destination is filled first (its tables allocated as needed) and the source
    /// emptied only once every entry is in place. If a table frame for the destination
    /// cannot be had, the entries placed so far are taken back (freeing the tables made for
    /// them) and the error is returned with nothing changed. Frame references and RSS stay
    /// as they are either way: the same frames are mapped once, elsewhere.
    fn move_entries<M: PhysMem, F: RefFrames>(
        &mut self,
        phys: &mut Phys<M, F>,
        tlb: &mut dyn Tlb,
        old: u64,
        new: u64,
        len: u64,
    ) -> Result<(), MapError> {
        let end = old.saturating_add(len);
        let pages = mapped(self.pt, &phys.mem, old, end);
        let to = |t: &Translation| VirtAddr::new(t.page.as_u64() - old + new);
        for (i, t) in pages.iter().enumerate() {
            let r = self.pt.map(
                &mut phys.mem,
                &mut phys.frames,
                to(t),
                t.frame,
                PAGE_SIZE,
                t.flags,
            );
            if let Err(e) = r {
                let mut flush = Flush::Nothing;
                for t in &pages[..i] {
                    if let Ok((_, f)) =
                        self.pt
                            .unmap(&mut phys.mem, &mut phys.frames, to(t), PAGE_SIZE)
                    {
                        flush = flush.merge(f);
                    }
                }
                flush.flush(tlb);
                return Err(e);
            }
        }
        // Huge-zero blocks are not followed to the destination: a write there after a
        // PMD-aligned move (which Linux does with the huge zero page intact) faults 4 KiB.
        self.drop_huge_zero(old, end);
        let mut flush = Flush::Nothing;
        for t in &pages {
            if let Ok((_, f)) = self
                .pt
                .unmap(&mut phys.mem, &mut phys.frames, t.page, PAGE_SIZE)
            {
                flush = flush.merge(f);
            }
        }
        flush.flush(tlb);
        Ok(())
    }
}

/// Whether a VMA view is private anonymous memory.
pub fn is_private_anon(v: &VmaView) -> bool {
    matches!(v.kind, Kind::Anon) && v.flags & VM_SHARED == 0
}

impl AddressSpace {
    /// The child's space after fork (dup_mmap): every VMA but VM_DONTCOPY ones; a VMA with
    /// an anon_vma gets a chained one (G6: it no longer merges with fresh neighbours nor
    /// lends them its anon_vma); VM_WIPEONFORK VMAs start empty, without an anon_vma. Page
    /// contents are not the space's business here (the page tables carry them).
    pub fn dup_for_fork(&self) -> AddressSpace {
        let mut child = self.clone();
        let _ = child.take_mmu_events();
        let rows: Vec<(u64, u64, u64, bool)> = child
            .vmas()
            .map(|v| (v.start, v.end, v.flags, v.anon_vma.is_some()))
            .collect();
        let dontcopy: Vec<u64> = rows
            .iter()
            .filter(|r| r.2 & VM_DONTCOPY != 0)
            .map(|r| r.0)
            .collect();
        child.remove_vmas(&dontcopy);
        for &(start, end, flags, anon) in &rows {
            if flags & VM_DONTCOPY != 0 {
                continue;
            }
            let wipe = flags & VM_WIPEONFORK != 0;
            child.tree.update(start, |v| {
                if wipe {
                    v.anon_vma = None;
                    v.forked = false;
                } else if anon {
                    v.forked = true;
                }
            });
            if wipe {
                child.mem.drop_private(start, end);
            }
        }
        let _ = child.take_mmu_events();
        child
    }
}
