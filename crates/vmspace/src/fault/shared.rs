//! Faults on pages of files and shared memory: the page cache frame is mapped (shared
//! mappings, and reads of private ones), or copied on a first write to a private mapping.

use super::classify::{Kind, VmaView};
use super::demand_zero::install;
use super::{pte, FaultError, InternalError, Mm, Phys, RefFrames, Resolved, ANON, SHMEM};
use crate::addr::{VirtAddr, PAGE_SIZE};
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
    if !write {
        fault_around(mm, phys, v, addr, obj, shmem)?;
    }
    Ok(Resolved::PageCache)
}

/// fault_around_bytes / PAGE_SIZE: how many pages a read fault maps around itself.
const FAULT_AROUND_PAGES: u64 = 16;

/// do_fault_around / filemap_map_pages: a read fault on an object-backed VMA also maps the
/// pages of the object that are already in the page cache within the window of
/// [`FAULT_AROUND_PAGES`] aligned on the faulting page's index in its page table, clamped to
/// the VMA and to that page table. Entries that are not empty and guard regions are left
/// alone; the pages are mapped with the VMA's rights (read-only in private mappings). They
/// count in RSS as the faulting page does, so smaps `Rss` of a mapping whose object was
/// filled through another mapping grows by up to 16 pages on one read.
pub(crate) fn fault_around<A: Arch, M: PhysMem, F: RefFrames>(
    mm: &mut Mm<A>,
    phys: &mut Phys<M, F>,
    v: &VmaView,
    addr: u64,
    obj: super::ObjKey,
    shmem: bool,
) -> Result<(), FaultError> {
    let page = addr & !(PAGE_SIZE - 1);
    let span = A::ENTRIES as u64 * PAGE_SIZE;
    let table = page & !(span - 1);
    let from = (page & !(FAULT_AROUND_PAGES * PAGE_SIZE - 1)).max(v.start);
    let to = (from + FAULT_AROUND_PAGES * PAGE_SIZE)
        .min(table + span)
        .min(v.end);
    let kind = if shmem { SHMEM } else { PageFlags::empty() };
    let flags = pte::user_flags(v.flags, v.flags & VM_SHARED != 0, kind);
    let internal = |e| FaultError::Internal(InternalError::Phys(e));
    let mut p = from;
    while p < to {
        let here = p;
        p += PAGE_SIZE;
        if here == page || mm.space.mem.first_guard(here, here + PAGE_SIZE).is_some() {
            continue;
        }
        let Some(frame) = phys.cached(obj, v.index_of(here)) else {
            continue;
        };
        // do_fault_around allocates the page table when there is none yet.
        let slot = match A::to_linear(VirtAddr::new(here)) {
            Some(lin) => match pte::find_leaf(&mm.pt, &phys.mem, lin).map_err(internal)? {
                pte::Leaf::At(entry, 0) => Some(entry),
                pte::Leaf::NoTable => None,
                _ => continue,
            },
            None => continue,
        };
        phys.frames.inc_ref(frame).map_err(internal)?;
        install(mm, phys, here, slot, frame, flags)?;
        if shmem {
            mm.rss.shmem += 1;
        } else {
            mm.rss.file += 1;
        }
    }
    Ok(())
}
