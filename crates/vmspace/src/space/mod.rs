//! The Linux-compatible address space (mm_struct): VMAs, layouts, the memory syscalls.
//!
//! [`AddressSpace`] keeps its VMAs in an augmented tree ([`tree::VmaTree`]) and implements
//! mmap, munmap, mprotect, mremap, brk, madvise, mlock/munlock, mseal and page touches with
//! the semantics of Linux 6.18 on x86 (rule IDs from `docs/linux-mm.md`). All arguments are
//! raw Linux ABI integers; every operation either succeeds or returns the errno Linux would
//! return, leaving the space as Linux would (including partial changes where Linux makes
//! them, R4). Nothing here panics on caller input.
//!
//! Replaying a Linux trace: build [`SpaceConfig::linux_default`] for the task kind, set
//! `mmap_min_addr` from `vm.mmap_min_addr`, the rlimits, `overcommit_memory`,
//! `max_map_count`, `legacy_layout` from the personality, `cap_sys_rawio`/`cap_ipc_lock`
//! from the uid, then [`AddressSpace::from_snapshot`] with the `before` maps (and smaps
//! VmFlags when present) and `/proc/self/stat` (start_brk, start_stack, data) plus brk0 as
//! `ProcStat::brk`. A memfd is a [`FileRef`] with `shmem: true`, `writable: true`, its size,
//! name `/memfd:trace (deleted)` and dev `(0, 1)`; pass the same `id` to every mmap of it.
//! Compat (i386-on-x86-64) traces must pass 32-bit-truncated values, as the kernel sees them.

pub mod abi;
pub mod accounting;
pub mod brk;
pub mod config;
pub mod errno;
pub mod kernel;
pub mod layout;
pub mod madvise;
pub mod maps;
pub mod merge;
pub mod mlock;
pub mod mmap;
pub mod mmu;
pub mod mprotect;
pub mod mremap;
pub mod mseal;
pub mod munmap;
pub mod placement;
pub mod snapshot;
#[cfg(test)]
mod testutil;
pub mod touch;
pub mod tree;
pub mod vma;
pub mod windows;

pub use config::{SpaceConfig, TaskKind};
pub use errno::Errno;
pub use layout::Layout;
pub use maps::{MapsLine, SmapsEntry};
pub use snapshot::{ProcStat, SnapshotVma};
pub use touch::{Fault, FaultCode, Signal};
pub use vma::{Backing, SpecialKind, Vma};
pub use windows::{AllocKind, MemState, RegionInfo, WinError, WinProt};

use accounting::Accounting;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use touch::Memory;
use tree::VmaTree;
use vma::flags::*;

/// A file (or memfd) as the model sees it: an identity plus what maps and faults need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// Identity: two mappings of the same id share pages and may merge.
    pub id: u64,
    /// Size in bytes (pages at or beyond EOF raise SIGBUS).
    pub size: u64,
    /// Path as /proc/pid/maps prints it, e.g. `/memfd:trace (deleted)`.
    pub name: String,
    pub dev: (u32, u32),
    pub inode: u64,
    /// Opened for writing (FMODE_WRITE).
    pub writable: bool,
    /// A shmem/tmpfs file (memfd): placement is plain, shared mappings are not accounted.
    pub shmem: bool,
}

/// Shared anonymous objects get ids with this bit so they never collide with file ids.
pub(crate) const SHMEM_OBJ_BIT: u64 = 1 << 63;
/// Anonymous hugetlbfs files (MAP_HUGETLB) get ids with this bit.
pub(crate) const HUGETLB_FILE_BIT: u64 = 1 << 61;

/// A process address space with Linux 6.18 semantics.
#[derive(Clone, Debug)]
pub struct AddressSpace {
    pub(crate) cfg: SpaceConfig,
    pub(crate) layout: Layout,
    pub(crate) tree: VmaTree,
    pub(crate) acct: Accounting,
    pub(crate) mem: Memory,
    pub(crate) files: BTreeMap<u64, FileRef>,
    /// Size in bytes of each shared anonymous object.
    pub(crate) shmem_size: BTreeMap<u64, u64>,
    /// Huge page size of each anonymous hugetlbfs file.
    pub(crate) hugetlb: BTreeMap<u64, u64>,
    pub(crate) next_id: u64,
    pub(crate) start_brk: u64,
    pub(crate) brk: u64,
    pub(crate) start_stack: u64,
    pub(crate) start_data: u64,
    pub(crate) end_data: u64,
    pub(crate) start_code: u64,
    pub(crate) end_code: u64,
    /// The Windows allocation table (reserve/commit, `windows/`).
    pub(crate) win: windows::WinTable,
}

impl AddressSpace {
    /// An empty space (no VMAs, break at 0) with the layout `config` implies.
    pub fn new(config: SpaceConfig) -> Self {
        let layout = Layout::new(&config);
        AddressSpace {
            // Raw gaps: the guard gap below VM_GROWSDOWN VMAs is applied by the search retries
            // exactly as unmapped_area{,_topdown} do (P8, P12).
            tree: VmaTree::new(0),
            cfg: config,
            layout,
            acct: Accounting::default(),
            mem: Memory::default(),
            files: BTreeMap::new(),
            shmem_size: BTreeMap::new(),
            hugetlb: BTreeMap::new(),
            next_id: 1,
            start_brk: 0,
            brk: 0,
            start_stack: 0,
            start_data: 0,
            end_data: 0,
            start_code: 0,
            end_code: 0,
            win: windows::WinTable::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SpaceConfig {
        &self.cfg
    }

    /// The layout chosen at "exec".
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Sets the program break and its start (as exec leaves them, L10–L12).
    pub fn set_brk(&mut self, start_brk: u64, brk: u64) {
        self.start_brk = start_brk;
        self.brk = brk;
    }

    /// Sets mm->start_stack (decides the `[stack]` label, L13).
    pub fn set_start_stack(&mut self, start_stack: u64) {
        self.start_stack = start_stack;
    }

    /// The current program break (mm->brk).
    pub fn brk_value(&self) -> u64 {
        self.brk
    }

    /// mm->start_brk.
    pub fn start_brk(&self) -> u64 {
        self.start_brk
    }

    /// Number of VMAs (mm->map_count).
    pub fn map_count(&self) -> u64 {
        self.tree.len() as u64
    }

    /// find_vma: the VMA containing `addr`, or `None`.
    pub fn find_vma(&self, addr: u64) -> Option<&Vma> {
        self.tree.containing(addr)
    }

    /// The first VMA ending above `addr` (Linux find_vma).
    pub fn find_vma_above(&self, addr: u64) -> Option<&Vma> {
        self.tree.find(addr)
    }

    /// All VMAs in address order.
    pub fn vmas(&self) -> impl Iterator<Item = &Vma> {
        self.tree.iter()
    }

    /// Accounting counters (total_vm, locked_vm, …) in pages.
    pub fn accounting(&self) -> &Accounting {
        &self.acct
    }

    /// Registers (or refreshes) a file so snapshot VMAs and later mmaps can refer to it.
    pub fn register_file(&mut self, file: FileRef) {
        self.files.insert(file.id, file);
    }

    pub(crate) fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn guard(&self) -> u64 {
        self.cfg.stack_guard_gap
    }

    /// The effective mmap_min_addr: max(vm.mmap_min_addr, CONFIG_LSM_MMAP_MIN_ADDR).
    pub(crate) fn min_addr(&self) -> u64 {
        self.cfg.mmap_min_addr.max(self.cfg.lsm_mmap_min_addr)
    }

    pub(crate) fn max_map_count(&self) -> u64 {
        self.cfg.max_map_count
    }

    /// vm_start_gap of a VMA.
    pub(crate) fn vm_start_gap(&self, v: &Vma) -> u64 {
        vma::start_gap(v.start, v.flags, self.guard())
    }

    /// __split_vma: splits the VMA starting at `vstart` at `at` (strictly inside). Special
    /// mappings refuse (L19: EINVAL). No map-count check here; callers do it where Linux does.
    pub(crate) fn split_vma(&mut self, vstart: u64, at: u64) -> Result<(), Errno> {
        let v = match self.tree.containing(vstart) {
            Some(v) if v.start == vstart && v.start < at && at < v.end => v.clone(),
            _ => return Err(Errno::EINVAL),
        };
        if v.is_special_mapping() {
            return Err(Errno::EINVAL);
        }
        // hugetlb_vm_op_split: only at huge page boundaries.
        if v.flags & VM_HUGETLB != 0 && at % self.huge_page_size(&v) != 0 {
            return Err(Errno::EINVAL);
        }
        let mut right = v;
        right.pgoff = right.pgoff.wrapping_add((at - vstart) >> 12);
        right.start = at;
        // Insert first, then shrink: the tree never sees a transient gap (no gap rescans).
        self.tree.insert(right);
        self.tree.update(vstart, |x| x.end = at);
        Ok(())
    }

    /// Huge page size of a VM_HUGETLB VMA (2 MiB unless its file says otherwise).
    pub(crate) fn huge_page_size(&self, v: &Vma) -> u64 {
        match v.backing {
            Backing::File { id } => self.hugetlb.get(&id).copied().unwrap_or(2 << 20),
            _ => 2 << 20,
        }
    }

    /// split_vma: as [`Self::split_vma`] but refuses with ENOMEM when map_count is at the limit.
    pub(crate) fn split_vma_checked(&mut self, vstart: u64, at: u64) -> Result<(), Errno> {
        if self.map_count() >= self.max_map_count() {
            return Err(Errno::ENOMEM);
        }
        self.split_vma(vstart, at)
    }

    /// Removes whole VMAs (already split to the range) and releases their accounting and
    /// page contents.
    pub(crate) fn remove_vmas(&mut self, starts: &[u64]) {
        let (mut lo, mut hi) = (u64::MAX, 0);
        for &s in starts {
            if let Some(v) = self.tree.remove(s) {
                if !self.win.is_empty() {
                    // A Linux unmap or replacement ends the reservations it meets.
                    self.win_forget(v.start, v.end);
                }
                self.acct_unmap(&v);
                self.mem.drop_private(v.start, v.end);
                lo = lo.min(v.start);
                hi = hi.max(v.end);
            }
        }
        if lo < hi {
            let floor = self.tree.prev_before(lo).map_or(0, |v| v.end);
            let ceiling = self.tree.find(hi).map(|v| v.start);
            self.mem.free_tables(lo, hi, floor, ceiling);
        }
    }

    /// Checks the structural invariants: tree order and gap augmentation, page alignment,
    /// no overlap, counters consistent with the VMAs, page contents only inside VMAs.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.tree.check()?;
        let mut total = 0u64;
        let mut locked = 0u64;
        for v in self.tree.iter() {
            if v.end > self.layout.task_size && !v.is_special_mapping() {
                return Err(alloc::format!("vma above TASK_SIZE at {:#x}", v.end));
            }
            total += v.pages();
            if v.flags & VM_LOCKED != 0 {
                locked += v.pages();
            }
        }
        if total != self.acct.total_vm {
            return Err(alloc::format!(
                "total_vm {} but VMAs hold {} pages",
                self.acct.total_vm,
                total
            ));
        }
        if locked > self.acct.locked_vm {
            return Err(alloc::format!(
                "locked_vm {} but locked VMAs hold {} pages",
                self.acct.locked_vm,
                locked
            ));
        }
        self.mem.check(&self.tree)?;
        self.win_check()
    }

    /// Checks that no two adjacent VMAs are ones Linux would have merged (G1–G7). Linux itself
    /// leaves such pairs after failed operations (a split kept by an EPERM munmap of a sealed
    /// range, U4) and after stack growth (G15), so this is separate from
    /// [`Self::check_invariants`].
    pub fn check_merged(&self) -> Result<(), String> {
        let vs: Vec<&Vma> = self.tree.iter().collect();
        for w in vs.windows(2) {
            if merge::would_merge(w[0], w[1]) {
                return Err(alloc::format!(
                    "adjacent VMAs {:#x}-{:#x} and {:#x}-{:#x} should have merged",
                    w[0].start,
                    w[0].end,
                    w[1].start,
                    w[1].end
                ));
            }
        }
        Ok(())
    }
}
