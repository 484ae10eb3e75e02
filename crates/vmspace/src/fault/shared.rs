//! Faults on pages of files and shared memory: the page cache frame is mapped (shared
//! mappings, and reads of private ones), or copied on a first write to a private mapping.

use super::classify::{Kind, VmaView};
use super::demand_zero::install;
use super::{pte, FaultError, InternalError, Mm, Phys, RefFrames, Resolved, ANON, SHMEM};
use crate::arch::{Arch, PageFlags};
use crate::phys::PhysMem;
use crate::space::vma::flags::*;

/// Resolves a fault on a not-present page of an object-backed VMA (`v.kind` is
/// [`Kind::Object`]). Pages start zero-filled (the model's files and memfds hold no data
/// until written). A page created in the cache stays there even if mapping it then runs
/// out of memory (it belongs to the object, not to this fault).
pub fn fault<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    v: &VmaView,
    addr: u64,
    write: bool,
    slot: Option<crate::addr::PhysAddr>,
) -> Result<Resolved, FaultError> {
    let (obj, shmem) = match v.kind {
        Kind::Object {
            obj,
            shmem,
            is_file,
        } => (mm.obj_key(phys, obj, is_file), shmem),
        _ => {
            return Err(FaultError::Internal(InternalError::Map(
                crate::paging::MapError::Wraps,
            )))
        }
    };
    let idx = v.index_of(addr);
    let cached = phys.cache_page(obj, idx, addr)?;
    if write && v.flags & VM_SHARED == 0 {
        if !v.has_anon_vma {
            mm.space.anon_vma_prepare(v.start);
        }
        let new = phys.alloc_copy(cached, addr)?;
        let flags = pte::user_flags(v.flags, true, ANON);
        install(mm, phys, addr, slot, new, flags)?;
        mm.rss.anon += 1;
        return Ok(Resolved::FileCopy);
    }
    phys.frames
        .inc_ref(cached)
        .map_err(|e| FaultError::Internal(InternalError::Phys(e)))?;
    let kind = if shmem { SHMEM } else { PageFlags::empty() };
    let flags = pte::user_flags(v.flags, v.flags & VM_SHARED != 0, kind);
    install(mm, phys, addr, slot, cached, flags)?;
    if shmem {
        mm.rss.shmem += 1;
    } else {
        mm.rss.file += 1;
    }
    Ok(Resolved::PageCache)
}
