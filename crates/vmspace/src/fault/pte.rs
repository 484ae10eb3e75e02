//! Page-table entry rights derived from a VMA, and the checks the MMU applies to them.

use super::{Access, ANON, SHMEM};
use crate::addr::PhysAddr;
use crate::arch::{Arch, Entry, PageFlags};
use crate::paging::{entry_addr, read_entry, write_entry, MapError, PageTable, MAX_LEVELS};
use crate::phys::{FrameAllocator, PhysError, PhysMem};
use crate::space::vma::flags::*;

/// Flags of a user page of a VMA with `vm_flags`: user-accessible unless PROT_NONE (a
/// PROT_NONE entry stays present for RSS but is supervisor-only, so every user access
/// faults, like Linux's protnone entries), writable only if `writable`, no-execute unless
/// VM_EXEC. `kind` carries the [`ANON`]/[`SHMEM`] software bits.
#[inline]
pub fn user_flags(vm_flags: u64, writable: bool, kind: PageFlags) -> PageFlags {
    let mut f = PageFlags::PRESENT | PageFlags::ACCESSED | kind;
    if vm_flags & VM_ACCESS_FLAGS != 0 {
        f |= PageFlags::USER;
    }
    if writable && vm_flags & VM_WRITE != 0 {
        f |= PageFlags::WRITABLE | PageFlags::DIRTY;
    }
    if vm_flags & VM_EXEC == 0 {
        f |= PageFlags::NO_EXECUTE;
    }
    f
}

/// The software kind bits of an entry.
#[inline]
pub fn kind_bits(f: PageFlags) -> PageFlags {
    f & (ANON | SHMEM)
}

/// Whether an entry with `flags` lets the access through (user mode if `user`). `nx`: the
/// MMU honours the no-execute bit (x86-64; i386 without PAE has none).
#[inline]
pub fn allows(flags: PageFlags, access: Access, user: bool, nx: bool) -> bool {
    let b = flags.bits();
    if b & PageFlags::PRESENT.bits() == 0 || (user && b & PageFlags::USER.bits() == 0) {
        return false;
    }
    match access {
        Access::Read => true,
        Access::Write => b & PageFlags::WRITABLE.bits() != 0,
        Access::Fetch => !nx || b & PageFlags::NO_EXECUTE.bits() == 0,
    }
}

/// Writes a 4 KiB leaf entry mapping `frame` with `flags` at physical address `entry`.
#[inline]
pub fn set_leaf<A: Arch, M: PhysMem>(
    mem: &mut M,
    entry: PhysAddr,
    frame: PhysAddr,
    flags: PageFlags,
) -> Result<(), PhysError> {
    let raw = A::encode_page(1, frame, flags);
    if A::ENTRY_SIZE == 4 {
        mem.write_u32(entry, raw as u32)
    } else {
        mem.write_u64(entry, raw)
    }
}

/// Whether the architecture honours the no-execute bit.
pub fn has_nx<A: Arch>() -> bool {
    A::ENTRY_SIZE == 8
}

/// The level-1 entry covering a linear address, as the fault path finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// The entry at physical address `.0` holds `.1` (maybe zero).
    At(PhysAddr, u64),
    /// A table on the way is missing (nothing maps the address).
    NoTable,
    /// A large page maps the address (the fault path never makes those).
    Large,
}

/// Descends from the root to the level-1 entry of `lin`, reading one entry per level and
/// nothing else (the fault path's walk: no path bookkeeping).
#[inline]
pub fn find_leaf<A: Arch, M: PhysMem>(
    pt: &PageTable<A>,
    mem: &M,
    lin: u64,
) -> Result<Leaf, PhysError> {
    let mut table = pt.root().start_address();
    let mut level = A::LEVELS;
    loop {
        let idx = A::index(lin, level);
        let at = entry_addr::<A>(table, idx);
        let raw = read_entry::<A, M>(mem, table, idx)?;
        if level == 1 {
            return Ok(Leaf::At(at, raw));
        }
        match A::decode(level, raw) {
            Entry::Table { addr, .. } => table = addr,
            Entry::Page { .. } => return Ok(Leaf::Large),
            Entry::Empty | Entry::NotPresent(_) => return Ok(Leaf::NoTable),
        }
        level -= 1;
    }
}

/// The level-1 entry of `lin`, creating missing tables (zeroed, counted in the table's
/// `table_pages`). All or nothing: if a table frame runs out, the tables created here are
/// freed again and `OutOfFrames` returned.
pub fn make_leaf<A: Arch, M: PhysMem, F: FrameAllocator>(
    pt: &mut PageTable<A>,
    mem: &mut M,
    frames: &mut F,
    lin: u64,
) -> Result<PhysAddr, MapError> {
    let mut created: [(PhysAddr, usize, PhysAddr); MAX_LEVELS] =
        [(PhysAddr::ZERO, 0, PhysAddr::ZERO); MAX_LEVELS];
    let mut n = 0;
    let mut table = pt.root().start_address();
    let mut level = A::LEVELS;
    while level > 1 {
        let idx = A::index(lin, level);
        let raw = read_entry::<A, M>(mem, table, idx)?;
        match A::decode(level, raw) {
            Entry::Table { addr, .. } => table = addr,
            Entry::Page { .. } => {
                undo(pt, mem, frames, &created[..n]);
                return Err(MapError::AlreadyMapped(A::from_linear(lin)));
            }
            Entry::Empty | Entry::NotPresent(_) => {
                let child = match pt.alloc_table(mem, frames) {
                    Ok(c) => c,
                    Err(e) => {
                        undo(pt, mem, frames, &created[..n]);
                        return Err(e);
                    }
                };
                if let Err(e) = write_entry::<A, M>(mem, table, idx, A::encode_table(child, true)) {
                    let _ = pt.free_table(frames, child);
                    undo(pt, mem, frames, &created[..n]);
                    return Err(MapError::Phys(e));
                }
                created[n] = (table, idx, child);
                n += 1;
                table = child;
            }
        }
        level -= 1;
    }
    Ok(entry_addr::<A>(table, A::index(lin, 1)))
}

fn undo<A: Arch, M: PhysMem, F: FrameAllocator>(
    pt: &mut PageTable<A>,
    mem: &mut M,
    frames: &mut F,
    created: &[(PhysAddr, usize, PhysAddr)],
) {
    for &(parent, idx, child) in created.iter().rev() {
        let _ = write_entry::<A, M>(mem, parent, idx, 0);
        let _ = pt.free_table(frames, child);
    }
}
