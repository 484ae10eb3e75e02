//! First touch of private anonymous memory (A2, A3): a read maps the shared zero page
//! read-only, a write maps a freshly zeroed frame writable.

use super::classify::VmaView;
use super::{map_err_at, pte, FaultError, Mm, Phys, RefFrames, Resolved, ANON};
use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{Arch, PageFlags};
use crate::phys::PhysMem;

/// Resolves a fault on a not-present page of a private anonymous (or special) VMA.
///
/// A read or fetch maps the zero page (no frame charged, not in RSS); a write assigns the
/// VMA's anon_vma (G8), allocates a zeroed frame and maps it writable. Out of memory (for
/// the frame or a page table) leaves nothing behind.
pub fn fault<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    v: &VmaView,
    addr: u64,
    write: bool,
) -> Result<Resolved, FaultError> {
    let page = VirtAddr::new(addr & !(PAGE_SIZE - 1));
    if !write {
        let flags = pte::user_flags(v.flags, false, PageFlags::empty());
        let zero = phys.zero_page().start_address();
        mm.pt
            .map(
                &mut phys.mem,
                &mut phys.frames,
                page,
                zero,
                PAGE_SIZE,
                flags,
            )
            .map_err(|e| map_err_at(e, addr))?;
        return Ok(Resolved::ZeroPage);
    }
    mm.space.anon_vma_prepare(v.start);
    let frame = phys.alloc_zeroed(addr)?;
    let flags = pte::user_flags(v.flags, true, ANON);
    if let Err(e) = mm.pt.map(
        &mut phys.mem,
        &mut phys.frames,
        page,
        frame.start_address(),
        PAGE_SIZE,
        flags,
    ) {
        let _ = phys.frames.deallocate_frame(frame);
        return Err(map_err_at(e, addr));
    }
    mm.rss.anon += 1;
    Ok(Resolved::DemandZero)
}

/// Maps `frame` (already referenced for this mapping) at `page` with `flags`, or drops the
/// reference and reports out of memory.
pub(crate) fn map_or_release<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    page: VirtAddr,
    frame: PhysAddr,
    flags: PageFlags,
) -> Result<(), FaultError> {
    if let Err(e) = mm.pt.map(
        &mut phys.mem,
        &mut phys.frames,
        page,
        frame,
        PAGE_SIZE,
        flags,
    ) {
        let _ = phys.release(crate::addr::Frame::containing(frame));
        return Err(map_err_at(e, page.as_u64()));
    }
    Ok(())
}
