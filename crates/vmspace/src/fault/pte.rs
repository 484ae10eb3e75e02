//! Page-table entry rights derived from a VMA, and the checks the MMU applies to them.

use super::{Access, ANON, SHMEM};
use crate::addr::PhysAddr;
use crate::arch::{Arch, PageFlags};
use crate::phys::{PhysError, PhysMem};
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
