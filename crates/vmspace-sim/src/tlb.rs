//! The software TLB: direct-mapped, tagged by address-space id, filled from page walks.

use vmspace::addr::{VirtAddr, PAGE_SIZE};
use vmspace::arch::PageFlags;
use vmspace::paging::Tlb;

/// Entries in the TLB (a power of two).
pub const TLB_ENTRIES: usize = 256;

/// Largest usable address-space id (ids live in the low 12 bits of a tag; 0xfff marks an
/// empty slot).
pub const MAX_ASID: u16 = 0xffe;

/// Rights bits of a cached translation.
pub mod perm {
    /// User-mode accesses allowed (U/S).
    pub const USER: u8 = 1;
    /// Writes allowed (R/W).
    pub const WRITE: u8 = 2;
    /// Instruction fetches allowed (no NX).
    pub const EXEC: u8 = 4;
}

const EMPTY: u64 = u64::MAX;

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    /// Page address | asid.
    tag: u64,
    /// Frame address.
    frame: u64,
    perm: u8,
}

/// A direct-mapped TLB of [`TLB_ENTRIES`] translations, each tagged with the address-space
/// id it belongs to, so switching processes needs no flush.
pub struct SoftTlb {
    entries: Box<[Entry; TLB_ENTRIES]>,
}

impl Default for SoftTlb {
    fn default() -> Self {
        SoftTlb {
            entries: Box::new(
                [Entry {
                    tag: EMPTY,
                    frame: 0,
                    perm: 0,
                }; TLB_ENTRIES],
            ),
        }
    }
}

#[inline(always)]
fn slot(va: u64, asid: u16) -> usize {
    (((va >> 12) ^ ((asid as u64) << 4)) as usize) & (TLB_ENTRIES - 1)
}

impl SoftTlb {
    /// The physical address of `va` in space `asid` if a cached translation grants every
    /// right in `need` ([`perm`] bits).
    #[inline(always)]
    pub fn lookup(&self, asid: u16, va: u64, need: u8) -> Option<u64> {
        let e = &self.entries[slot(va, asid)];
        if e.tag == (va & !(PAGE_SIZE - 1)) | asid as u64 && e.perm & need == need {
            Some(e.frame | (va & (PAGE_SIZE - 1)))
        } else {
            None
        }
    }

    /// Caches the translation of the 4 KiB page of `va` to `frame` with entry `flags`.
    pub fn fill(&mut self, asid: u16, va: u64, frame: u64, flags: PageFlags, nx: bool) {
        let mut p = 0;
        if flags.contains(PageFlags::USER) {
            p |= perm::USER;
        }
        if flags.contains(PageFlags::WRITABLE) {
            p |= perm::WRITE;
        }
        if !nx || !flags.contains(PageFlags::NO_EXECUTE) {
            p |= perm::EXEC;
        }
        self.entries[slot(va, asid)] = Entry {
            tag: (va & !(PAGE_SIZE - 1)) | asid as u64,
            frame,
            perm: p,
        };
    }

    /// Forgets the page of `va` in `asid`.
    pub fn invalidate(&mut self, asid: u16, va: u64) {
        let e = &mut self.entries[slot(va, asid)];
        if e.tag == (va & !(PAGE_SIZE - 1)) | asid as u64 {
            e.tag = EMPTY;
        }
    }

    /// Forgets every translation of `asid`.
    pub fn invalidate_asid(&mut self, asid: u16) {
        for e in self.entries.iter_mut() {
            if e.tag != EMPTY && e.tag & 0xfff == asid as u64 {
                e.tag = EMPTY;
            }
        }
    }

    /// Translations currently cached for `asid`.
    pub fn cached(&self, asid: u16) -> usize {
        self.entries
            .iter()
            .filter(|e| e.tag != EMPTY && e.tag & 0xfff == asid as u64)
            .count()
    }
}

/// The TLB as one address space's page-table code sees it: invalidations hit only `asid`.
pub struct AsidTlb<'a> {
    pub tlb: &'a mut SoftTlb,
    pub asid: u16,
}

impl Tlb for AsidTlb<'_> {
    fn invalidate_page(&mut self, va: VirtAddr) {
        self.tlb.invalidate(self.asid, va.as_u64());
    }
    fn invalidate_all(&mut self) {
        self.tlb.invalidate_asid(self.asid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_spaces_apart_and_rights_are_checked() {
        let mut t = SoftTlb::default();
        let f = PageFlags::PRESENT | PageFlags::USER | PageFlags::NO_EXECUTE;
        t.fill(1, 0x4000, 0x9000, f, true);
        assert_eq!(t.lookup(1, 0x4123, perm::USER), Some(0x9123));
        assert_eq!(t.lookup(2, 0x4123, perm::USER), None);
        assert_eq!(t.lookup(1, 0x4123, perm::USER | perm::WRITE), None);
        assert_eq!(t.lookup(1, 0x4123, perm::USER | perm::EXEC), None);
        t.fill(2, 0x4000, 0xa000, f | PageFlags::WRITABLE, true);
        AsidTlb {
            tlb: &mut t,
            asid: 2,
        }
        .invalidate_all();
        assert_eq!(t.lookup(2, 0x4000, 0), None);
        assert_eq!(t.cached(1), 1);
        t.invalidate(1, 0x4fff);
        assert_eq!(t.cached(1), 0);
    }
}
