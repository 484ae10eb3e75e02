//! First touch of private anonymous memory (A2, A3): a read maps the shared zero page
//! read-only, a write maps a freshly zeroed frame writable.

use super::classify::VmaView;
use super::{map_err_at, pte, FaultError, InternalError, Mm, Phys, RefFrames, Resolved, ANON};
use crate::addr::{Frame, PhysAddr, VirtAddr};
use crate::arch::{Arch, PageFlags};
use crate::phys::PhysMem;

/// Resolves a fault on a not-present page of a private anonymous (or special) VMA.
///
/// A read or fetch maps the zero page (no frame charged, not in RSS); a write assigns the
/// VMA's anon_vma (G8), allocates a zeroed frame and maps it writable. `slot` is the empty
/// level-1 entry if the walk found its table. Out of memory (for the frame or a page table)
/// leaves nothing behind.
pub fn fault<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    v: &VmaView,
    addr: u64,
    write: bool,
    slot: Option<PhysAddr>,
) -> Result<Resolved, FaultError> {
    if !write {
        let flags = pte::user_flags(v.flags, false, PageFlags::empty());
        let zero = phys.zero_page();
        install(mm, phys, addr, slot, zero, flags)?;
        return Ok(Resolved::ZeroPage);
    }
    if !v.has_anon_vma {
        mm.space.anon_vma_prepare(v.start);
    }
    let frame = phys.alloc_zeroed(addr)?;
    let flags = pte::user_flags(v.flags, true, ANON);
    install(mm, phys, addr, slot, frame, flags)?;
    mm.rss.anon += 1;
    Ok(Resolved::DemandZero)
}

/// Writes the entry mapping `frame` at the page of `addr` (into `slot`, or into a level-1
/// entry whose missing tables are created). `frame` carries one reference for this mapping:
/// on failure it is dropped, and tables created on the way are freed.
pub(crate) fn install<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    addr: u64,
    slot: Option<PhysAddr>,
    frame: Frame,
    flags: PageFlags,
) -> Result<(), FaultError> {
    let entry = match slot {
        Some(e) => Ok(e),
        None => match A::to_linear(VirtAddr::new(addr)) {
            Some(lin) => pte::make_leaf(&mut mm.pt, &mut phys.mem, &mut phys.frames, lin)
                .map_err(|e| map_err_at(e, addr)),
            None => Err(map_err_at(
                crate::paging::MapError::AlreadyMapped(VirtAddr::new(addr)),
                addr,
            )),
        },
    };
    let r = entry.and_then(|e| {
        pte::set_leaf::<A, M>(&mut phys.mem, e, frame.start_address(), flags)
            .map_err(|e| FaultError::Internal(InternalError::Phys(e)))
    });
    if r.is_err() {
        let _ = phys.release(frame);
    }
    r
}
