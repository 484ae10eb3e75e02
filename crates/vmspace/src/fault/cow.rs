//! Write faults on present read-only entries in writable VMAs (A4, do_wp_page).

use super::classify::{Kind, VmaView};
use super::{pte, FaultError, InternalError, Mm, Phys, RefFrames, Resolved, ANON, SHMEM};
use crate::addr::{Frame, VirtAddr, PAGE_SIZE};
use crate::arch::{Arch, PageFlags};
use crate::paging::{Tlb, Translation};
use crate::phys::PhysMem;
use crate::space::vma::flags::*;

/// Resolves a write to the present read-only entry `t` of writable VMA `v`:
///
/// - shared mapping: made writable in place;
/// - the zero page: replaced by a fresh zeroed frame;
/// - a private frame no other entry maps (reference count 1): made writable in place (reuse);
/// - otherwise (a frame shared after fork, or a page cache page under a private mapping):
///   copied into a new frame, which replaces it; the old frame loses one reference.
///
/// The entry is rewritten in place (no table is allocated), so only the new frame can run
/// out; then nothing changes.
pub fn fault<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    tlb: &mut dyn Tlb,
    v: &VmaView,
    t: &Translation,
    addr: u64,
) -> Result<Resolved, FaultError> {
    let page = VirtAddr::new(addr & !(PAGE_SIZE - 1));
    let old = Frame::containing(t.frame);
    let kind = pte::kind_bits(t.flags);
    let internal = |e| FaultError::Internal(InternalError::Phys(e));
    if v.flags & VM_SHARED != 0 {
        let flags = pte::user_flags(v.flags, true, kind);
        pte::set_leaf::<A, M>(&mut phys.mem, t.entry, t.frame, flags).map_err(internal)?;
        tlb.invalidate_page(page);
        return Ok(Resolved::Upgrade);
    }
    if kind.contains(ANON) && phys.frames.ref_count(old).map_err(internal)? == 1 {
        let flags = pte::user_flags(v.flags, true, ANON);
        pte::set_leaf::<A, M>(&mut phys.mem, t.entry, t.frame, flags).map_err(internal)?;
        tlb.invalidate_page(page);
        return Ok(Resolved::CowReuse);
    }
    if !v.has_anon_vma {
        mm.space.anon_vma_prepare(v.start);
    }
    let zero = old == phys.zero_page();
    let new = if zero {
        phys.alloc_zeroed(addr)?
    } else {
        phys.alloc_copy(old, addr)?
    };
    let flags = pte::user_flags(v.flags, true, ANON);
    if let Err(e) = pte::set_leaf::<A, M>(&mut phys.mem, t.entry, new.start_address(), flags) {
        let _ = phys.release(new);
        return Err(internal(e));
    }
    tlb.invalidate_page(page);
    phys.release(old).map_err(internal)?;
    mm.rss.anon += 1;
    if !zero && !kind.contains(ANON) {
        if kind.contains(SHMEM) {
            mm.rss.shmem = mm.rss.shmem.saturating_sub(1);
        } else {
            mm.rss.file = mm.rss.file.saturating_sub(1);
        }
    } else if !zero {
        mm.rss.anon = mm.rss.anon.saturating_sub(1);
    }
    Ok(match (zero, v.kind) {
        (true, _) => Resolved::CowZero,
        (false, Kind::Object { .. }) if !kind.contains(ANON) => Resolved::FileCopy,
        _ => Resolved::CowCopy,
    })
}

/// Re-derives the rights of one present entry from its VMA (a read of a page whose entry
/// still carries an older protection).
pub fn upgrade<A: Arch, M: PhysMem, F: RefFrames>(
    phys: &mut Phys<M, F>,
    tlb: &mut dyn Tlb,
    v: &VmaView,
    t: &Translation,
    addr: u64,
) -> Result<Resolved, FaultError> {
    let kind = pte::kind_bits(t.flags);
    let keep_w = t.flags.contains(PageFlags::WRITABLE);
    let flags = pte::user_flags(v.flags, keep_w, kind);
    pte::set_leaf::<A, M>(&mut phys.mem, t.entry, t.frame, flags)
        .map_err(|e| FaultError::Internal(InternalError::Phys(e)))?;
    tlb.invalidate_page(VirtAddr::new(addr & !(PAGE_SIZE - 1)));
    Ok(Resolved::Upgrade)
}
