//! Page touches: fault routing (F1–F3), stack growth (S1–S4), SIGBUS beyond EOF, page
//! contents (written bytes per page; never-written pages read 0), and anon_vma assignment
//! on the first write (A3, G8).

use super::mmu::MmuEvent;
use super::tree::VmaTree;
use super::vma::{flags::*, Backing, Vma};
use super::AddressSpace;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

type Page = Box<[u8; 4096]>;

/// Which signal a touch raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Segv,
    Bus,
}

/// si_code of the signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCode {
    SegvMaperr,
    SegvAccerr,
    BusAdrerr,
}

impl FaultCode {
    /// The name as Linux headers spell it, e.g. `"SEGV_MAPERR"`.
    pub fn name(self) -> &'static str {
        match self {
            FaultCode::SegvMaperr => "SEGV_MAPERR",
            FaultCode::SegvAccerr => "SEGV_ACCERR",
            FaultCode::BusAdrerr => "BUS_ADRERR",
        }
    }
}

impl Signal {
    /// `"SIGSEGV"` or `"SIGBUS"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Segv => "SIGSEGV",
            Signal::Bus => "SIGBUS",
        }
    }
}

/// A touch that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub signal: Signal,
    pub code: FaultCode,
    pub addr: u64,
}

impl Fault {
    fn segv(code: FaultCode, addr: u64) -> Fault {
        Fault {
            signal: Signal::Segv,
            code,
            addr,
        }
    }
}

/// Page contents: private (anonymous or COW) pages by virtual page, object pages by
/// (object, page index), and guard-region markers.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    private: BTreeMap<u64, Page>,
    objects: BTreeMap<(u64, u64), Page>,
    guards: BTreeSet<u64>,
    /// Bases of the 2 MiB blocks that have a page table (any fault or populate there made
    /// one; munmap frees it by the free_pgtables rule). MADV_COLLAPSE needs one per block.
    tables: BTreeSet<u64>,
    /// Page-table backend notifications (`mmu.rs`).
    pub(crate) log: super::mmu::MmuLog,
}

/// Bytes one page table maps (PMD_SIZE).
pub(crate) const PMD_SIZE: u64 = 2 << 20;

impl Memory {
    /// Drops private pages and guard markers in `[start, end)` (munmap, DONTNEED, MAP_FIXED).
    pub(crate) fn drop_private(&mut self, start: u64, end: u64) {
        self.log.push(MmuEvent::Zap { start, end });
        let keys: Vec<u64> = self.private.range(start..end).map(|(k, _)| *k).collect();
        for k in keys {
            self.private.remove(&k);
        }
        let g: Vec<u64> = self.guards.range(start..end).copied().collect();
        for k in g {
            self.guards.remove(&k);
        }
    }

    /// Drops only private pages (MADV_DONTNEED keeps guard markers).
    pub(crate) fn zap_private(&mut self, start: u64, end: u64) {
        self.log.push(MmuEvent::Zap { start, end });
        let keys: Vec<u64> = self.private.range(start..end).map(|(k, _)| *k).collect();
        for k in keys {
            self.private.remove(&k);
        }
    }

    /// Moves private pages and guards of `[old, old+len)` to `new` (mremap).
    pub(crate) fn move_private(&mut self, old: u64, new: u64, len: u64) {
        let keys: Vec<u64> = self
            .private
            .range(old..old + len)
            .map(|(k, _)| *k)
            .collect();
        let mut moved = Vec::new();
        for k in keys {
            if let Some(p) = self.private.remove(&k) {
                moved.push((k - old + new, p));
            }
        }
        let g: Vec<u64> = self.guards.range(old..old + len).copied().collect();
        for k in &g {
            self.guards.remove(k);
        }
        self.drop_private(new, new + len);
        for (k, p) in moved {
            self.private.insert(k, p);
        }
        for k in g {
            self.guards.insert(k - old + new);
        }
        self.log.push(MmuEvent::Move { old, new, len });
    }

    /// Notes page tables for every 2 MiB block meeting `[start, end)` (a fault or populate).
    pub(crate) fn note_tables(&mut self, start: u64, end: u64) {
        let mut b = start & !(PMD_SIZE - 1);
        while b < end {
            self.tables.insert(b);
            b = match b.checked_add(PMD_SIZE) {
                Some(x) => x,
                None => break,
            };
        }
    }

    /// free_pgtables after unmapping `[start, end)`: frees the tables of blocks meeting the
    /// range that lie wholly in `[floor, ceiling)` (the neighbours' end and start; `None` for
    /// no upper neighbour).
    pub(crate) fn free_tables(&mut self, start: u64, end: u64, floor: u64, ceiling: Option<u64>) {
        let from = (start & !(PMD_SIZE - 1)).max(floor.div_ceil(PMD_SIZE) * PMD_SIZE);
        if from >= end {
            return;
        }
        while let Some(&b) = self.tables.range(from..end).next() {
            if ceiling.is_some_and(|c| b + PMD_SIZE > c) {
                break;
            }
            self.tables.remove(&b);
        }
    }

    /// MADV_DONTNEED over `[start, end)`: blocks wholly inside lose their table unless a
    /// guard marker (a non-none entry the zap keeps) holds it.
    pub(crate) fn reclaim_tables(&mut self, start: u64, end: u64) {
        let mut b = start.div_ceil(PMD_SIZE) * PMD_SIZE;
        while b.checked_add(PMD_SIZE).is_some_and(|x| x <= end) {
            if self.guards.range(b..b + PMD_SIZE).next().is_none() {
                self.tables.remove(&b);
            }
            b += PMD_SIZE;
        }
    }

    /// Whether the 2 MiB block at `base` has a page table.
    pub(crate) fn has_table(&self, base: u64) -> bool {
        self.tables.contains(&base)
    }

    /// move_page_tables: destination blocks receive tables where the source had them.
    pub(crate) fn move_tables(&mut self, old: u64, new: u64, len: u64) {
        let from = old & !(PMD_SIZE - 1);
        let src: Vec<u64> = self.tables.range(from..old + len).copied().collect();
        for b in src {
            let (s, e) = (b.max(old), (b + PMD_SIZE).min(old + len));
            self.note_tables(s - old + new, e - old + new);
        }
    }

    /// Punches a hole in an object (MADV_REMOVE).
    pub(crate) fn punch(&mut self, obj: u64, first: u64, count: u64) {
        self.log.push(MmuEvent::Punch { obj, first, count });
        let keys: Vec<(u64, u64)> = self
            .objects
            .range((obj, first)..(obj, first.saturating_add(count)))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.objects.remove(&k);
        }
    }

    pub(crate) fn set_guard(&mut self, page: u64, on: bool) {
        if on {
            self.guards.insert(page);
        } else {
            self.guards.remove(&page);
        }
    }

    /// The first guard-region page in `[start, end)`.
    pub(crate) fn first_guard(&self, start: u64, end: u64) -> Option<u64> {
        self.guards.range(start..end).next().copied()
    }

    /// Private pages in `[start, end)`.
    pub(crate) fn private_pages_in(&self, start: u64, end: u64) -> u64 {
        self.private.range(start..end).count() as u64
    }

    /// Every private page and guard marker lies inside some VMA.
    pub(crate) fn check(&self, tree: &VmaTree) -> Result<(), String> {
        for k in self.private.keys().chain(self.guards.iter()) {
            if tree.containing(*k).is_none() {
                return Err(alloc::format!("page {k:#x} remembered outside any VMA"));
            }
        }
        Ok(())
    }
}

impl AddressSpace {
    /// Reads (`write == false`) or writes `value` to the byte at `addr`, as a user access
    /// would: `Ok(Some(byte))` for reads, `Ok(None)` for writes, or the signal Linux raises.
    pub fn touch(&mut self, addr: u64, write: bool, value: u8) -> Result<Option<u8>, Fault> {
        let v = match self.tree.find(addr) {
            None => return Err(Fault::segv(FaultCode::SegvMaperr, addr)),
            Some(v) => v.clone(),
        };
        let v = if v.start > addr {
            // F1: below a VM_GROWSDOWN VMA -> try to grow it (S1–S4).
            if v.flags & VM_GROWSDOWN == 0 || !self.expand_downwards(&v, addr) {
                return Err(Fault::segv(FaultCode::SegvMaperr, addr));
            }
            match self.tree.containing(addr) {
                Some(v) => v.clone(),
                None => return Err(Fault::segv(FaultCode::SegvMaperr, addr)),
            }
        } else {
            v
        };
        // F3: access_error.
        if write && v.flags & VM_WRITE == 0 {
            return Err(Fault::segv(FaultCode::SegvAccerr, addr));
        }
        if !write && !v.is_accessible() {
            return Err(Fault::segv(FaultCode::SegvAccerr, addr));
        }
        let page = addr & !0xfff;
        let off = (addr & 0xfff) as usize;
        if self.mem.guards.contains(&page) {
            return Err(Fault::segv(FaultCode::SegvMaperr, addr));
        }
        self.mem.note_tables(page, page + 4096);
        if v.flags & VM_HUGETLB != 0 {
            // No huge page can be allocated on the reference (nr_hugepages = 0).
            return Err(Fault {
                signal: Signal::Bus,
                code: FaultCode::BusAdrerr,
                addr,
            });
        }
        let obj = v.object();
        if let Some(o) = obj {
            // 6.4: a page wholly beyond EOF raises SIGBUS.
            let size = self.object_size(&v.backing);
            if v.pgoff_of(page) >= size.div_ceil(4096) {
                return Err(Fault {
                    signal: Signal::Bus,
                    code: FaultCode::BusAdrerr,
                    addr,
                });
            }
            let idx = v.pgoff_of(page);
            if v.flags & VM_SHARED != 0 {
                if write {
                    self.mem
                        .objects
                        .entry((o, idx))
                        .or_insert_with(|| Box::new([0; 4096]))[off] = value;
                    return Ok(None);
                }
                return Ok(Some(self.mem.objects.get(&(o, idx)).map_or(0, |p| p[off])));
            }
            if !write {
                if let Some(p) = self.mem.private.get(&page) {
                    return Ok(Some(p[off]));
                }
                return Ok(Some(self.mem.objects.get(&(o, idx)).map_or(0, |p| p[off])));
            }
            // Private file write: COW from the page cache (A4).
            self.anon_vma_prepare(v.start);
            let src = self.mem.objects.get(&(o, idx)).cloned();
            let p = self
                .mem
                .private
                .entry(page)
                .or_insert_with(|| src.unwrap_or_else(|| Box::new([0; 4096])));
            p[off] = value;
            return Ok(None);
        }
        if let Backing::Special(k) = &v.backing {
            // 6.4: a special mapping page the kernel never provides raises SIGBUS. On the
            // reference (x86-64 KVM guest, no time namespace) those are [vvar] pages 1 (time
            // namespace) and 3, and [vvar_vclock] page 1 (Hyper-V clock).
            let idx = v.pgoff_of(page);
            let missing = match k {
                super::SpecialKind::Vvar => idx == 1 || idx == 3,
                super::SpecialKind::VvarVclock => idx == 1,
                _ => false,
            };
            if missing {
                return Err(Fault {
                    signal: Signal::Bus,
                    code: FaultCode::BusAdrerr,
                    addr,
                });
            }
            return if write { Ok(None) } else { Ok(Some(0)) };
        }
        if write {
            self.anon_vma_prepare(v.start);
            self.mem
                .private
                .entry(page)
                .or_insert_with(|| Box::new([0; 4096]))[off] = value;
            Ok(None)
        } else {
            Ok(Some(self.mem.private.get(&page).map_or(0, |p| p[off])))
        }
    }

    pub(crate) fn object_size(&self, b: &Backing) -> u64 {
        match b {
            Backing::File { id } => self.files.get(id).map_or(u64::MAX, |f| f.size),
            Backing::Shmem { obj } => self.shmem_size.get(obj).copied().unwrap_or(0),
            _ => u64::MAX,
        }
    }

    /// anon_vma_prepare with find_mergeable_anon_vma (G8): reuse the next, then the previous
    /// neighbour's anon_vma when adjacent, same file, flags equal but for R/W/X, pgoff
    /// continuous and not inherited through fork.
    pub(crate) fn anon_vma_prepare(&mut self, vstart: u64) {
        let v = match self.tree.containing(vstart) {
            Some(v) if v.anon_vma.is_none() => v.clone(),
            _ => return,
        };
        let compatible = |a: &Vma, b: &Vma| {
            a.end == b.start
                && super::merge::same_file(&a.backing, &b.backing)
                && (a.flags ^ b.flags) & !(VM_ACCESS_FLAGS | VM_SOFTDIRTY) == 0
                && b.pgoff == a.pgoff.wrapping_add(a.pages())
        };
        let mut found = None;
        if let Some(n) = self.tree.find(v.end).filter(|n| n.start == v.end) {
            if compatible(&v, n) && !n.forked {
                found = n.anon_vma;
            }
        }
        if found.is_none() {
            if let Some(p) = self.tree.prev_before(v.start) {
                if compatible(p, &v) && !p.forked {
                    found = p.anon_vma;
                }
            }
        }
        let id = match found {
            Some(id) => id,
            None => self.new_id(),
        };
        self.tree.update(vstart, |x| x.anon_vma = Some(id));
    }

    /// expand_downwards (S1–S4): grows the GROWSDOWN VMA `v` down to the page of `addr`.
    pub(crate) fn expand_downwards(&mut self, v: &Vma, addr: u64) -> bool {
        let address = addr & !0xfff;
        if address < self.min_addr() {
            return false;
        }
        if let Some(prev) = self.tree.prev_before(v.start) {
            if prev.flags & VM_GROWSDOWN == 0
                && prev.is_accessible()
                && address - prev.end < self.guard()
            {
                return false;
            }
        }
        self.anon_vma_prepare(v.start);
        let size = v.end - address;
        let grow = (v.start - address) >> 12;
        if grow > v.pgoff {
            return false;
        }
        if !self.may_expand_vm(v.flags, grow) || size > self.cfg.rlimit_stack {
            return false;
        }
        if !self.mlock_future_ok(v.flags, grow << 12) {
            return false;
        }
        if v.flags & VM_ACCOUNT != 0 && !self.vm_enough_memory(grow) {
            return false;
        }
        if v.flags & VM_LOCKED != 0 {
            self.acct.locked_vm += grow;
        }
        self.vm_stat_account(v.flags, grow, false);
        self.tree.update(v.start, |x| {
            x.start = address;
            x.pgoff -= grow;
        });
        true
    }

    /// __mm_populate over `[start, end)`: writable private VMAs take write faults (assigning
    /// their anon_vma, G8), others read faults. VM_IO/VM_PFNMAP and VM_LOCKONFAULT VMAs are
    /// skipped. Fails with EFAULT at an inaccessible VMA or a page beyond EOF (the pages
    /// before it stay populated); callers that ignore errors (mmap) drop the result.
    pub(crate) fn populate(&mut self, start: u64, end: u64) -> Result<(), super::Errno> {
        let mut cursor = start;
        while let Some(v) = self.tree.intersecting(cursor, end) {
            let v = v.clone();
            let (s, e) = (cursor.max(v.start), v.end.min(end));
            cursor = v.end;
            if v.flags & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT) != 0 {
                continue;
            }
            if !v.is_accessible() || v.flags & VM_HUGETLB != 0 {
                // PROT_NONE cannot be faulted in; hugetlb has no huge pages to fault in.
                return Err(super::Errno::EFAULT);
            }
            let mut ok_until = self.mem.first_guard(s, e).unwrap_or(e);
            if v.object().is_some() {
                let eof_page = self.object_size(&v.backing).div_ceil(4096);
                let mut p = s;
                while p < ok_until && v.pgoff_of(p) < eof_page {
                    p += 4096;
                }
                ok_until = p;
            }
            if v.flags & (VM_WRITE | VM_SHARED) == VM_WRITE && ok_until > s {
                self.anon_vma_prepare(v.start);
            }
            self.mem.note_tables(s, ok_until);
            if ok_until > s {
                self.mem.log.push(MmuEvent::Populate {
                    start: s,
                    end: ok_until,
                    write: v.flags & (VM_WRITE | VM_SHARED) == VM_WRITE,
                });
            }
            if ok_until < e {
                return Err(super::Errno::EFAULT);
            }
            if cursor >= end {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{abi::*, FileRef};
    use super::*;
    use crate::space::testutil::*;

    #[test]
    fn f1_f3_classification_and_contents() {
        let mut s = space();
        let a = s.mmap(0, 0x2000, RW, PA, None, 0).unwrap();
        assert_eq!(s.touch(a + 5, false, 0), Ok(Some(0)));
        assert_eq!(s.touch(a + 5, true, 9), Ok(None));
        assert_eq!(s.touch(a + 5, false, 0), Ok(Some(9)));
        assert!(s.find_vma(a).unwrap().anon_vma.is_some());
        assert_eq!(
            s.touch(a + 0x2000, false, 0).unwrap_err().code,
            FaultCode::SegvMaperr
        );
        s.mprotect(a, 0x1000, PROT_READ).unwrap();
        assert_eq!(s.touch(a, true, 1).unwrap_err().code, FaultCode::SegvAccerr);
        s.mprotect(a, 0x1000, PROT_NONE).unwrap();
        assert_eq!(
            s.touch(a, false, 1).unwrap_err().code,
            FaultCode::SegvAccerr
        );
        // R5: write-only is readable.
        s.mprotect(a + 0x1000, 0x1000, PROT_WRITE).unwrap();
        assert_eq!(s.touch(a + 0x1005, false, 0), Ok(Some(0)));
    }

    #[test]
    fn a2_read_does_not_assign_anon_vma() {
        let mut s = space();
        let a = s.mmap(0, 0x1000, RW, PA, None, 0).unwrap();
        s.touch(a, false, 0).unwrap();
        assert!(s.find_vma(a).unwrap().anon_vma.is_none());
    }

    #[test]
    fn s1_s4_stack_growth_limits() {
        let mut s = space();
        let top = 0x7fff_ffff_f000u64;
        s.mmap(
            top - 0x21000,
            0x21000,
            RW,
            PA | MAP_FIXED | MAP_GROWSDOWN,
            None,
            0,
        )
        .unwrap();
        // S3: 8 MiB limit; 9 MiB below the top fails.
        assert_eq!(
            s.touch(top - (9 << 20), true, 1).unwrap_err().code,
            FaultCode::SegvMaperr
        );
        assert_eq!(s.touch(top - (7 << 20), true, 1), Ok(None));
        let v = s.find_vma(top - 1).unwrap();
        assert_eq!(v.start, top - (7 << 20));
        // S2: an accessible VMA within 1 MiB below blocks growth.
        s.mmap(
            top - (8 << 20) - 0x1000,
            0x1000,
            PROT_READ,
            PA | MAP_FIXED,
            None,
            0,
        )
        .unwrap();
        assert!(s.touch(top - (7 << 20) - 0x1000, true, 1).is_err());
        s.check_invariants().unwrap();
    }

    #[test]
    fn sigbus_beyond_eof_and_shared_contents() {
        let mut s = space();
        let f = FileRef {
            id: 3,
            size: 0x1800,
            name: "/memfd:trace (deleted)".into(),
            dev: (0, 1),
            inode: 1,
            writable: true,
            shmem: true,
        };
        let a = s
            .mmap(0, 0x3000, RW, MAP_SHARED, Some(f.clone()), 0)
            .unwrap();
        let b = s.mmap(0, 0x1000, RW, MAP_PRIVATE, Some(f), 0).unwrap();
        s.touch(a + 10, true, 42).unwrap();
        assert_eq!(s.touch(b + 10, false, 0), Ok(Some(42)));
        s.touch(b + 10, true, 7).unwrap();
        assert_eq!(s.touch(a + 10, false, 0), Ok(Some(42)));
        assert_eq!(s.touch(a + 0x1fff, false, 0), Ok(Some(0)));
        let e = s.touch(a + 0x2000, false, 0).unwrap_err();
        assert_eq!((e.signal, e.code), (Signal::Bus, FaultCode::BusAdrerr));
    }

    #[test]
    fn g8_reuses_neighbour_anon_vma() {
        let mut s = space();
        let a = s
            .mmap(0x1000_0000, 0x1000, RW, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.mmap(a + 0x1000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
            .unwrap();
        s.touch(a, true, 1).unwrap();
        s.mprotect(a + 0x1000, 0x1000, RW).unwrap();
        // G18 (b): one VMA.
        assert_eq!(s.map_count(), 1);
    }
}
