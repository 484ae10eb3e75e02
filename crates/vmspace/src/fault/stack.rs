//! Stack growth on a fault below a VM_GROWSDOWN VMA (S1–S4), through the space's own
//! expand_downwards, so the VMA, accounting and guard-gap rules stay those of `space`.

use crate::space::AddressSpace;

/// Grows the VM_GROWSDOWN VMA starting at `vstart` down to the page of `addr`: refused below
/// mmap_min_addr (S1), within the 1 MiB guard gap of an accessible non-stack VMA below (S2),
/// beyond RLIMIT_STACK / RLIMIT_AS / mlock limits / commit accounting (S3). On success the
/// VMA starts at the page of `addr` (S4) and pages below the old start are faulted lazily.
/// Returns whether it grew; a refusal is a SIGSEGV MAPERR at `addr` for the caller.
pub fn grow(space: &mut AddressSpace, vstart: u64, addr: u64) -> bool {
    let v = match space.find_vma(vstart) {
        Some(v) if v.start == vstart && v.flags & crate::space::vma::flags::VM_GROWSDOWN != 0 => {
            v.clone()
        }
        _ => return false,
    };
    if addr >= v.start {
        return true;
    }
    space.expand_downwards(&v, addr)
}
