//! Fault routing and classification (F1–F3, 6.4): which VMA a faulting address belongs to,
//! whether the access is allowed, and the signal Linux raises when it is not.

use super::{stack, FaultError};
use crate::space::vma::flags::*;
use crate::space::vma::{Backing, SpecialKind};
use crate::space::{AddressSpace, Fault, FaultCode, Signal};

/// The kind of memory access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
    /// An instruction fetch.
    Fetch,
}

/// What the backing of a VMA is, as the fault cases need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Private anonymous memory.
    Anon,
    /// A kernel special mapping (vDSO, vvar): reads see zeros.
    Special,
    /// A file or shared-memory object: `obj` is the space-local id, `shmem` whether its
    /// pages count as shared memory.
    Object {
        obj: u64,
        shmem: bool,
        is_file: bool,
    },
}

/// The faulting VMA, copied out of the space (after any stack growth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaView {
    pub start: u64,
    pub end: u64,
    pub flags: u64,
    pub pgoff: u64,
    pub kind: Kind,
    /// The VMA was grown downwards to reach the address (S4).
    pub grew: bool,
    /// The VMA has its anon_vma already (G8).
    pub has_anon_vma: bool,
}

impl VmaView {
    /// Page index in the backing object of the page holding `addr`.
    pub fn index_of(&self, addr: u64) -> u64 {
        self.pgoff.wrapping_add((addr - self.start) >> 12)
    }
}

pub(crate) fn segv(code: FaultCode, addr: u64) -> FaultError {
    FaultError::Signal(Fault {
        signal: Signal::Segv,
        code,
        addr,
    })
}

/// Routes a user-mode fault at `addr` to its VMA, growing a stack if the address lies below
/// a VM_GROWSDOWN VMA (F1, S1–S4), and checks the access (F3):
///
/// - no VMA at or above `addr`, or growth refused, or a guard-region page (MADV_GUARD_INSTALL)
///   -> SIGSEGV `SEGV_MAPERR`;
/// - a write to a VMA without VM_WRITE, any access to a VMA with none of R/W/X, an access
///   the present entry refuses that is not a write (an instruction fetch from a no-execute
///   page) -> SIGSEGV `SEGV_ACCERR` (access_error; reads of write-only VMAs are allowed, R5);
/// - a page of a file or shared object wholly beyond its end, any page of a hugetlb mapping
///   (no huge pages on the reference), a special-mapping page the kernel does not provide
///   -> SIGBUS `BUS_ADRERR` (6.4; the same rules as `AddressSpace::touch`).
///
/// `present` is the hardware's P bit as the access saw it (a PROT_NONE entry counts as not
/// present, as Linux's protnone entries are).
#[inline]
pub fn classify(
    space: &mut AddressSpace,
    addr: u64,
    access: Access,
    present: bool,
) -> Result<VmaView, FaultError> {
    let mut grew = false;
    let mut found = lookup(space, addr, access, present);
    if let Err(Lookup::Below(start)) = found {
        // F1: below a VM_GROWSDOWN VMA the stack may grow (any distance, since 4.20).
        if !stack::grow(space, start, addr) {
            return Err(segv(FaultCode::SegvMaperr, addr));
        }
        grew = true;
        found = lookup(space, addr, access, present);
    }
    let (mut view, size, v_backing) = match found {
        Ok(x) => x,
        Err(Lookup::Fail(e)) => return Err(e),
        Err(Lookup::Below(_)) => return Err(segv(FaultCode::SegvMaperr, addr)),
    };
    view.grew = grew;
    let page = addr & !0xfff;
    if space.guard_at(page) {
        // A guard-region marker: handle_pte_marker -> VM_FAULT_SIGSEGV -> SEGV_MAPERR.
        return Err(segv(FaultCode::SegvMaperr, addr));
    }
    // handle_mm_fault allocates the page table before anything below can fail: the space
    // remembers it (MADV_COLLAPSE needs one per 2 MiB block), as its own touch does.
    space.note_page_table(page);
    let bus = || {
        Err(FaultError::Signal(Fault {
            signal: Signal::Bus,
            code: FaultCode::BusAdrerr,
            addr,
        }))
    };
    if view.flags & VM_HUGETLB != 0 {
        // No huge page can be allocated on the reference (nr_hugepages = 0), 6.4.
        return bus();
    }
    if let Backing::Special(k) = &v_backing {
        // 6.4: a special mapping page the kernel never provides ([vvar] pages 1 and 3,
        // [vvar_vclock] page 1 on the reference: no time namespace, no Hyper-V clock).
        let idx = view.index_of(page);
        let missing = match k {
            SpecialKind::Vvar => idx == 1 || idx == 3,
            SpecialKind::VvarVclock => idx == 1,
            _ => false,
        };
        if missing {
            return bus();
        }
    }
    if let Kind::Object { .. } = view.kind {
        if view.index_of(page) >= size.div_ceil(4096) {
            return Err(FaultError::Signal(Fault {
                signal: Signal::Bus,
                code: FaultCode::BusAdrerr,
                addr,
            }));
        }
    }
    Ok(view)
}

/// Page cache key of the vDSO's pages (below the shared-memory keys, above any file id the
/// simulator hands out).
pub const VDSO_OBJECT: u64 = (1 << 61) - 1;

/// The view of the object-backed VMA holding `addr`, if that is what holds it (for the
/// fault-around a read fault beyond EOF still does before its SIGBUS).
pub(crate) fn object_view(
    space: &AddressSpace,
    addr: u64,
    access: Access,
    present: bool,
) -> Option<VmaView> {
    match lookup(space, addr, access, present) {
        Ok((view, _, _)) if matches!(view.kind, Kind::Object { .. }) => Some(view),
        _ => None,
    }
}

enum Lookup {
    /// The address lies below the VMA starting here (growth may help).
    Below(u64),
    Fail(FaultError),
}

/// One VMA lookup: the view of the VMA holding `addr` with F3 applied, the size of its
/// object (0 for non-objects) and its backing; or where to grow, or the signal.
#[inline(always)]
fn lookup(
    space: &AddressSpace,
    addr: u64,
    access: Access,
    present: bool,
) -> Result<(VmaView, u64, Backing), Lookup> {
    let v = match space.find_vma_above(addr) {
        None => return Err(Lookup::Fail(segv(FaultCode::SegvMaperr, addr))),
        Some(v) if v.start > addr => return Err(Lookup::Below(v.start)),
        Some(v) => v,
    };
    // F3: access_error().
    let denied = match access {
        Access::Write => v.flags & VM_WRITE == 0,
        _ if present => true,
        _ => !v.is_accessible(),
    };
    if denied {
        return Err(Lookup::Fail(segv(FaultCode::SegvAccerr, addr)));
    }
    let (kind, size) = match &v.backing {
        Backing::Anon => (Kind::Anon, 0),
        // The vDSO's pages are ordinary kernel pages inserted into every process: resident
        // once touched, shared by all (one page cache object); [vvar] is a PFN map (never
        // resident), served here by the zero page.
        Backing::Special(SpecialKind::Vdso) => (
            Kind::Object {
                obj: VDSO_OBJECT,
                shmem: false,
                is_file: true,
            },
            u64::MAX,
        ),
        Backing::Special(_) => (Kind::Special, 0),
        Backing::Shmem { obj } => (
            Kind::Object {
                obj: *obj,
                shmem: true,
                is_file: false,
            },
            space.backing_size(v),
        ),
        Backing::File { id } => (
            Kind::Object {
                obj: *id,
                shmem: space.file_is_shmem(*id),
                is_file: true,
            },
            space.backing_size(v),
        ),
    };
    let backing = match &v.backing {
        Backing::Special(_) => v.backing.clone(),
        _ => Backing::Anon,
    };
    Ok((
        VmaView {
            start: v.start,
            end: v.end,
            flags: v.flags,
            pgoff: v.pgoff,
            kind,
            grew: false,
            has_anon_vma: v.anon_vma.is_some(),
        },
        size,
        backing,
    ))
}

impl AddressSpace {
    /// Whether file `id` is a shmem/tmpfs file (memfd).
    pub(crate) fn file_is_shmem(&self, id: u64) -> bool {
        self.files.get(&id).is_some_and(|f| f.shmem)
    }

    /// Records that the 2 MiB block of `page` has a page table.
    #[inline]
    pub(crate) fn note_page_table(&mut self, page: u64) {
        self.mem.note_tables(page, page + 4096);
    }

    /// Whether a guard-region marker (MADV_GUARD_INSTALL) covers `page`.
    pub(crate) fn guard_at(&self, page: u64) -> bool {
        self.mem.first_guard(page, page + 4096).is_some()
    }

    /// Size in bytes of the object behind `v` (u64::MAX for non-objects).
    pub(crate) fn backing_size(&self, v: &crate::space::Vma) -> u64 {
        self.object_size(&v.backing)
    }
}
