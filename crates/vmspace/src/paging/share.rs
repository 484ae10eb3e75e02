//! Shared root entries: one set of tables below some root entries, used by many
//! hierarchies (the kernel half every process's page directory points at).
//!
//! The owner populates each shared range once ([`PageTable::populate_shared`]; several
//! disjoint ranges may be shared): a table under every root entry in it, so no hierarchy
//! ever has to create one there. Every other hierarchy
//! copies those root entries when it is made ([`PageTable::new_sharing`]), so a page mapped
//! through any of them is visible through all, with no copying and no later syncing (Linux's
//! i386 `clone_pgd_range` of the kernel PDEs, with every kernel PDE present from boot so no
//! `vmalloc_sync` is ever needed).
//!
//! Below a shared root entry the walker never frees a table (an empty one stays: others
//! point at it) and never counts one in [`PageTable::table_pages`]; `destroy` clears the
//! shared root entries and leaves the tables alone. Only the owner releases them, with
//! [`PageTable::release_shared`], once no other hierarchy uses them. On i386 the shared
//! tables are the leaf tables, so nothing is ever created below a shared entry; with deeper
//! paging, tables created there belong to the shared set as well.

use super::{read_entry, write_entry, MapError, PageTable, UnmapError};
use crate::addr::{Frame, PhysAddr, VirtAddr};
use crate::arch::{Arch, Entry};
use crate::phys::{FrameAllocator, PhysMem};

impl<A: Arch> PageTable<A> {
    /// The root entries shared with other hierarchies, in index order.
    pub fn shared_root_entries(&self) -> impl Iterator<Item = usize> + '_ {
        (0..A::ENTRIES.min(1024)).filter(|&i| self.is_shared_root_entry(i))
    }

    /// Whether any root entry is shared.
    pub fn has_shared_root_entries(&self) -> bool {
        self.shared.iter().any(|&w| w != 0)
    }

    /// Whether root entry `idx` is shared (the recursive slot never is).
    #[inline]
    pub fn is_shared_root_entry(&self, idx: usize) -> bool {
        idx < 1024 && self.shared[idx / 64] & (1 << (idx % 64)) != 0
    }

    /// Whether linear address `lin` lies below a shared root entry.
    #[inline]
    pub(crate) fn shared_at(&self, lin: u64) -> bool {
        self.is_shared_root_entry(A::index(lin, A::LEVELS))
    }

    /// Makes root entries `[first, end)` shared: puts a zeroed table under every one that
    /// is empty (the recursive slot excepted), with U/S set only if `user`, and returns how
    /// many tables it allocated. They are not counted in [`PageTable::table_pages`]; the
    /// caller owns them and frees them with [`PageTable::release_shared`]. Several
    /// disjoint ranges may be shared, one call each.
    ///
    /// Fails with `Reserved` if an entry in it is already shared or `[first, end)` is not a
    /// range of root entries, `AlreadyMapped` if a root entry in it maps a page,
    /// `OutOfFrames` (the tables allocated so far are freed, nothing changed).
    pub fn populate_shared<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        first: usize,
        end: usize,
        user: bool,
    ) -> Result<u64, MapError> {
        let span = A::level_span(A::LEVELS);
        if first >= end || end > A::ENTRIES || (first..end).any(|i| self.is_shared_root_entry(i)) {
            return Err(MapError::Reserved(A::from_linear(first as u64 * span)));
        }
        let slot = self.arch.recursive_slot();
        for idx in (first..end).filter(|&i| Some(i) != slot) {
            if let Entry::Page { .. } =
                A::decode(A::LEVELS, read_entry::<A, M>(mem, self.root, idx)?)
            {
                return Err(MapError::AlreadyMapped(A::from_linear(idx as u64 * span)));
            }
        }
        // Which entries this call filled, to undo exactly those if a frame runs out.
        const { assert!(A::ENTRIES <= 1024) };
        let mut made = [0u64; 16];
        let mut count = 0;
        for idx in (first..end).filter(|&i| Some(i) != slot) {
            let raw = read_entry::<A, M>(mem, self.root, idx)?;
            if let Entry::Table { .. } = A::decode(A::LEVELS, raw) {
                continue;
            }
            match self.alloc_table(mem, frames) {
                Ok(t) => {
                    self.table_pages -= 1;
                    write_entry::<A, M>(mem, self.root, idx, A::encode_table(t, user))?;
                    made[idx / 64] |= 1 << (idx % 64);
                    count += 1;
                }
                Err(e) => {
                    for j in (first..idx).filter(|&j| made[j / 64] & (1 << (j % 64)) != 0) {
                        let raw = read_entry::<A, M>(mem, self.root, j)?;
                        write_entry::<A, M>(mem, self.root, j, 0)?;
                        if let Entry::Table { addr, .. } = A::decode(A::LEVELS, raw) {
                            let _ = frames.deallocate_frame(Frame::containing(addr));
                        }
                    }
                    return Err(e);
                }
            }
        }
        for idx in (first..end).filter(|&i| Some(i) != slot) {
            self.shared[idx / 64] |= 1 << (idx % 64);
        }
        Ok(count)
    }

    /// A new hierarchy of the same architecture whose shared root entries are copies of
    /// `owner`'s (pointing at the same tables), with its own root and recursive entry.
    pub fn new_sharing<M: PhysMem, F: FrameAllocator>(
        owner: &PageTable<A>,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<Self, MapError> {
        let mut pt = PageTable::new(owner.arch, mem, frames)?;
        for idx in owner.shared_root_entries() {
            let raw = read_entry::<A, M>(mem, owner.root, idx)?;
            write_entry::<A, M>(mem, pt.root, idx, raw)?;
        }
        pt.shared = owner.shared;
        Ok(pt)
    }

    /// The owner's teardown of the shared tables, once no other hierarchy uses them: unmaps
    /// every page below them (calling `on_unmap(va, frame, size)`), frees the tables,
    /// clears the root entries and ends the sharing. Returns the tables freed.
    pub fn release_shared<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        mut on_unmap: C,
    ) -> Result<u64, UnmapError> {
        let span = A::level_span(A::LEVELS);
        let mut freed = 0;
        let shared = self.shared;
        for idx in (0..A::ENTRIES.min(1024)).filter(|&i| shared[i / 64] & (1 << (i % 64)) != 0) {
            let raw = read_entry::<A, M>(mem, self.root, idx)?;
            if let Entry::Table { addr, .. } = A::decode(A::LEVELS, raw) {
                freed += self.release_below(
                    mem,
                    frames,
                    addr,
                    A::LEVELS - 1,
                    idx as u64 * span,
                    &mut on_unmap,
                )?;
                write_entry::<A, M>(mem, self.root, idx, 0)?;
                frames.deallocate_frame(Frame::containing(addr))?;
                freed += 1;
            }
        }
        self.shared = [0; 16];
        Ok(freed)
    }

    /// Unmaps everything in `table` (at `level`, covering from `base`) and frees the tables
    /// below it; returns how many tables it freed.
    fn release_below<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        table: PhysAddr,
        level: u8,
        base: u64,
        on_unmap: &mut C,
    ) -> Result<u64, UnmapError> {
        let span = A::level_span(level);
        let mut freed = 0;
        for idx in 0..A::ENTRIES {
            let raw = read_entry::<A, M>(mem, table, idx)?;
            let lin = base + idx as u64 * span;
            match A::decode(level, raw) {
                Entry::Empty => continue,
                Entry::NotPresent(_) => {}
                Entry::Page { addr, size, .. } => on_unmap(A::from_linear(lin), addr, size),
                Entry::Table { addr, .. } => {
                    freed += self.release_below(mem, frames, addr, level - 1, lin, on_unmap)?;
                    frames.deallocate_frame(Frame::containing(addr))?;
                    freed += 1;
                }
            }
            write_entry::<A, M>(mem, table, idx, 0)?;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use super::super::testutil::BitmapFrames;
    use super::*;
    use crate::arch::{PageFlags, I386, X86_64};
    use crate::phys::EmulatedRam;

    const RW: PageFlags = PageFlags::WRITABLE;

    fn setup() -> (EmulatedRam, BitmapFrames) {
        let ram = EmulatedRam::new(PhysAddr::ZERO, 64 << 20).unwrap();
        let frames = BitmapFrames::new(PhysAddr::new(56 << 20), 2048);
        (ram, frames)
    }

    #[test]
    fn populate_refusals_change_nothing() {
        let (mut ram, mut fr) = setup();
        let mut pt = PageTable::new(I386::new(), &mut ram, &mut fr).unwrap();
        // A 4 MiB page in the range: refused, nothing allocated.
        pt.map(
            &mut ram,
            &mut fr,
            VirtAddr::new(0xC040_0000),
            PhysAddr::new(0x40_0000),
            4 << 20,
            RW,
        )
        .unwrap();
        let free = fr.free_frames();
        assert_eq!(
            pt.populate_shared(&mut ram, &mut fr, 768, 1024, false),
            Err(MapError::AlreadyMapped(VirtAddr::new(0xC040_0000)))
        );
        assert_eq!(fr.free_frames(), free);
        assert!(!pt.has_shared_root_entries());
        pt.unmap(&mut ram, &mut fr, VirtAddr::new(0xC040_0000), 4 << 20)
            .unwrap()
            .1
            .ignore();
        assert!(matches!(
            pt.populate_shared(&mut ram, &mut fr, 10, 5, false),
            Err(MapError::Reserved(_))
        ));
        // Out of frames half way: every table made is given back.
        fr.budget = Some(100);
        assert_eq!(
            pt.populate_shared(&mut ram, &mut fr, 768, 1024, false),
            Err(MapError::OutOfFrames)
        );
        fr.budget = None;
        assert_eq!(fr.free_frames(), free);
        pt.check_invariants(&ram).unwrap();
        assert_eq!(
            pt.populate_shared(&mut ram, &mut fr, 768, 1024, false),
            Ok(255)
        );
        assert!(
            !pt.is_shared_root_entry(1023),
            "the recursive slot is never shared"
        );
        assert!(matches!(
            pt.populate_shared(&mut ram, &mut fr, 700, 800, false),
            Err(MapError::Reserved(_))
        ));
        // A second, disjoint range (low memory kept for the kernel).
        assert_eq!(pt.populate_shared(&mut ram, &mut fr, 0, 1, false), Ok(1));
        assert_eq!(pt.shared_root_entries().count(), 256);
        assert_eq!(pt.table_pages(), 1);
        pt.check_invariants(&ram).unwrap();
    }

    /// Four-level paging: tables created below a shared PML4 entry through one hierarchy
    /// belong to the shared set — seen by the other, never counted, never freed by either;
    /// the owner releases them all.
    #[test]
    fn x86_64_tables_below_a_shared_entry_belong_to_the_shared_set() {
        let (mut ram, mut fr) = setup();
        let free = fr.free_frames();
        let mut owner = PageTable::new(X86_64, &mut ram, &mut fr).unwrap();
        assert_eq!(
            owner.populate_shared(&mut ram, &mut fr, 256, 512, false),
            Ok(256)
        );
        let mut a = PageTable::new_sharing(&owner, &mut ram, &mut fr).unwrap();
        let b = PageTable::new_sharing(&owner, &mut ram, &mut fr).unwrap();
        let kva = VirtAddr::new(0xffff_8880_0000_0000);
        a.map(&mut ram, &mut fr, kva, PhysAddr::new(0x5000), 4096, RW)
            .unwrap();
        assert_eq!(
            a.table_pages(),
            1,
            "the PD and PT made below the shared entry are not a's"
        );
        assert_eq!(b.translate(&ram, kva).unwrap().frame, PhysAddr::new(0x5000));
        // A user page in a: private, counted.
        a.map(
            &mut ram,
            &mut fr,
            VirtAddr::new(0x40_0000),
            PhysAddr::new(0x6000),
            4096,
            RW,
        )
        .unwrap();
        assert_eq!(a.table_pages(), 4);
        assert!(b.translate(&ram, VirtAddr::new(0x40_0000)).is_err());
        // Unmapping through b leaves the (now empty) shared tables in place.
        let used = fr.free_frames();
        b.translate(&ram, kva).unwrap();
        let mut b = b;
        b.unmap(&mut ram, &mut fr, kva, 4096).unwrap().1.ignore();
        assert_eq!(fr.free_frames(), used);
        assert!(a.translate(&ram, kva).is_err());
        for pt in [&owner, &a, &b] {
            pt.check_invariants(&ram).unwrap();
        }
        a.map(&mut ram, &mut fr, kva, PhysAddr::new(0x7000), 4096, RW)
            .unwrap();
        let mut seen = alloc::vec::Vec::new();
        a.destroy(&mut ram, &mut fr, |_, p, _| seen.push(p))
            .unwrap();
        assert_eq!(seen, [PhysAddr::new(0x6000)], "only a's own page");
        b.destroy(&mut ram, &mut fr, |_, _, _| {}).unwrap();
        let mut kernel = alloc::vec::Vec::new();
        // 256 PDPTs + the PD and PT below one of them.
        assert_eq!(
            owner.release_shared(&mut ram, &mut fr, |v, p, _| kernel.push((v, p))),
            Ok(258)
        );
        assert_eq!(kernel, [(kva, PhysAddr::new(0x7000))]);
        owner.destroy(&mut ram, &mut fr, |_, _, _| {}).unwrap();
        assert_eq!(fr.free_frames(), free, "every table came back");
    }
}
