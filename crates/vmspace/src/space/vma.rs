//! One virtual memory area (vm_area_struct): range, VM_* flags, backing, pgoff, anon_vma.

/// VM_* flag bits (include/linux/mm.h, x86-64 numbering).
pub mod flags {
    pub const VM_READ: u64 = 1 << 0;
    pub const VM_WRITE: u64 = 1 << 1;
    pub const VM_EXEC: u64 = 1 << 2;
    pub const VM_SHARED: u64 = 1 << 3;
    pub const VM_MAYREAD: u64 = 1 << 4;
    pub const VM_MAYWRITE: u64 = 1 << 5;
    pub const VM_MAYEXEC: u64 = 1 << 6;
    pub const VM_MAYSHARE: u64 = 1 << 7;
    pub const VM_GROWSDOWN: u64 = 1 << 8;
    pub const VM_UFFD_MISSING: u64 = 1 << 9;
    pub const VM_PFNMAP: u64 = 1 << 10;
    pub const VM_UFFD_WP: u64 = 1 << 12;
    pub const VM_LOCKED: u64 = 1 << 13;
    pub const VM_IO: u64 = 1 << 14;
    pub const VM_SEQ_READ: u64 = 1 << 15;
    pub const VM_RAND_READ: u64 = 1 << 16;
    pub const VM_DONTCOPY: u64 = 1 << 17;
    pub const VM_DONTEXPAND: u64 = 1 << 18;
    pub const VM_LOCKONFAULT: u64 = 1 << 19;
    pub const VM_ACCOUNT: u64 = 1 << 20;
    pub const VM_NORESERVE: u64 = 1 << 21;
    pub const VM_HUGETLB: u64 = 1 << 22;
    pub const VM_SYNC: u64 = 1 << 23;
    pub const VM_ARCH_1: u64 = 1 << 24;
    pub const VM_WIPEONFORK: u64 = 1 << 25;
    pub const VM_DONTDUMP: u64 = 1 << 26;
    /// VM_SOFTDIRTY; CONFIG_MEM_SOFT_DIRTY is off on the reference, so never rendered (G2
    /// ignores it for merging either way).
    pub const VM_SOFTDIRTY: u64 = 1 << 27;
    pub const VM_MIXEDMAP: u64 = 1 << 28;
    pub const VM_HUGEPAGE: u64 = 1 << 29;
    pub const VM_NOHUGEPAGE: u64 = 1 << 30;
    pub const VM_MERGEABLE: u64 = 1 << 31;
    pub const VM_UFFD_MINOR: u64 = 1 << 38;
    pub const VM_DROPPABLE: u64 = 1 << 40;
    pub const VM_SEALED: u64 = 1 << 42;

    pub const VM_ACCESS_FLAGS: u64 = VM_READ | VM_WRITE | VM_EXEC;
    pub const VM_MAY_FLAGS: u64 = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;
    /// VM_SPECIAL: never merged (G5), not mlockable.
    pub const VM_SPECIAL: u64 = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP;
    pub const VM_LOCKED_MASK: u64 = VM_LOCKED | VM_LOCKONFAULT;
    pub const VM_STACK: u64 = VM_GROWSDOWN;

    /// smaps `VmFlags` mnemonics by bit (fs/proc/task_mmu.c show_smap_vma_flags); bits whose
    /// mnemonic is not printed on the reference config are absent.
    pub const MNEMONICS: [(u64, &str); 31] = [
        (VM_READ, "rd"),
        (VM_WRITE, "wr"),
        (VM_EXEC, "ex"),
        (VM_SHARED, "sh"),
        (VM_MAYREAD, "mr"),
        (VM_MAYWRITE, "mw"),
        (VM_MAYEXEC, "me"),
        (VM_MAYSHARE, "ms"),
        (VM_GROWSDOWN, "gd"),
        (VM_UFFD_MISSING, "um"),
        (VM_PFNMAP, "pf"),
        (VM_UFFD_WP, "uw"),
        (VM_LOCKED, "lo"),
        (VM_IO, "io"),
        (VM_SEQ_READ, "sr"),
        (VM_RAND_READ, "rr"),
        (VM_DONTCOPY, "dc"),
        (VM_DONTEXPAND, "de"),
        (VM_LOCKONFAULT, "lf"),
        (VM_ACCOUNT, "ac"),
        (VM_NORESERVE, "nr"),
        (VM_HUGETLB, "ht"),
        (VM_SYNC, "sf"),
        (VM_ARCH_1, "ar"),
        (VM_WIPEONFORK, "wf"),
        (VM_DONTDUMP, "dd"),
        (VM_MIXEDMAP, "mm"),
        (VM_HUGEPAGE, "hg"),
        (VM_NOHUGEPAGE, "nh"),
        (VM_MERGEABLE, "mg"),
        (VM_DROPPABLE, "dp"),
    ];

    /// Sealed is printed last ("sl", bit 42), after uffd-minor "ui" (bit 38).
    pub const HIGH_MNEMONICS: [(u64, &str); 2] = [(VM_UFFD_MINOR, "ui"), (VM_SEALED, "sl")];
}

use flags::*;

/// Special mappings installed by the kernel (L18, L19).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecialKind {
    Vvar,
    VvarVclock,
    Vdso,
    /// Any other bracketed kernel mapping seen in a snapshot, by name.
    Other(alloc::string::String),
}

/// What a VMA maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory (no vm_file, no vm_ops: vma_is_anonymous).
    Anon,
    /// A shared anonymous mapping's own shmem object ("/dev/zero (deleted)").
    Shmem { obj: u64 },
    /// A file (or memfd) by identity; the object holding its pages is `id`.
    File { id: u64 },
    /// A kernel special mapping.
    Special(SpecialKind),
}

/// Identity of an anon_vma (assigned on the first write fault, G8).
pub type AnonVmaId = u64;

/// One VMA. `start`/`end` are page aligned, `start < end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// VM_* flags ([`flags`]).
    pub flags: u64,
    /// vm_pgoff: file page offset, or start >> 12 for fresh private anonymous memory (G4).
    pub pgoff: u64,
    pub backing: Backing,
    /// anon_vma identity, `None` until the first write fault (G8).
    pub anon_vma: Option<AnonVmaId>,
    /// The anon_vma chain has more than one link (VMA inherited through fork, G6).
    pub forked: bool,
}

impl Vma {
    /// Number of pages.
    pub fn pages(&self) -> u64 {
        (self.end - self.start) >> 12
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Never true for a valid VMA; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `addr` lies in the VMA.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// vma_is_anonymous: private anonymous (no vm_ops).
    pub fn is_anonymous(&self) -> bool {
        matches!(self.backing, Backing::Anon)
    }

    /// Has a vm_file (files, memfds, shared anonymous shmem).
    pub fn has_file(&self) -> bool {
        matches!(self.backing, Backing::File { .. } | Backing::Shmem { .. })
    }

    /// vma_is_accessible: any of R/W/X.
    pub fn is_accessible(&self) -> bool {
        self.flags & VM_ACCESS_FLAGS != 0
    }

    pub fn is_special_mapping(&self) -> bool {
        matches!(self.backing, Backing::Special(_))
    }

    pub fn sealed(&self) -> bool {
        self.flags & VM_SEALED != 0
    }

    /// The object pages are looked up in for file/shmem-backed VMAs.
    pub fn object(&self) -> Option<u64> {
        match self.backing {
            Backing::File { id } => Some(id),
            Backing::Shmem { obj } => Some(obj),
            _ => None,
        }
    }

    /// Page index in the backing object of `addr` (pgoff + offset in pages).
    pub fn pgoff_of(&self, addr: u64) -> u64 {
        self.pgoff.wrapping_add((addr - self.start) >> 12)
    }

    /// The r/w/x/p-or-s permission string of /proc/pid/maps.
    pub fn perms(&self) -> [u8; 4] {
        [
            if self.flags & VM_READ != 0 {
                b'r'
            } else {
                b'-'
            },
            if self.flags & VM_WRITE != 0 {
                b'w'
            } else {
                b'-'
            },
            if self.flags & VM_EXEC != 0 {
                b'x'
            } else {
                b'-'
            },
            if self.flags & VM_MAYSHARE != 0 {
                b's'
            } else {
                b'p'
            },
        ]
    }
}

/// vm_start_gap: start minus the stack guard gap for VM_GROWSDOWN VMAs, saturating at 0 (P6).
pub fn start_gap(start: u64, flags: u64, guard: u64) -> u64 {
    if flags & VM_GROWSDOWN != 0 {
        start.saturating_sub(guard)
    } else {
        start
    }
}

/// Renders VM flags as smaps `VmFlags` mnemonics ("rd wr mr mw me ac ").
pub fn vmflags_string(f: u64) -> alloc::string::String {
    let mut s = alloc::string::String::new();
    for (bit, name) in MNEMONICS.iter().chain(HIGH_MNEMONICS.iter()) {
        if f & bit != 0 {
            s.push_str(name);
            s.push(' ');
        }
    }
    s
}

/// Parses smaps `VmFlags` mnemonics back into VM flags (unknown mnemonics are ignored).
pub fn parse_vmflags(s: &str) -> u64 {
    let mut f = 0;
    for word in s.split_whitespace() {
        for (bit, name) in MNEMONICS.iter().chain(HIGH_MNEMONICS.iter()) {
            if *name == word {
                f |= bit;
            }
        }
    }
    f
}

/// is_data_mapping: private writable, not stack.
pub fn is_data_mapping(f: u64) -> bool {
    f & (VM_WRITE | VM_SHARED | VM_STACK) == VM_WRITE
}

/// is_exec_mapping.
pub fn is_exec_mapping(f: u64) -> bool {
    f & (VM_EXEC | VM_WRITE | VM_STACK) == VM_EXEC
}

/// is_stack_mapping.
pub fn is_stack_mapping(f: u64) -> bool {
    f & VM_STACK == VM_STACK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmflags_render_in_bit_order_and_parse_back() {
        let f = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_ACCOUNT;
        assert_eq!(vmflags_string(f), "rd wr mr mw me ac ");
        assert_eq!(parse_vmflags("rd wr mr mw me ac"), f);
        let g = VM_READ | VM_MAYREAD | VM_GROWSDOWN | VM_LOCKONFAULT | VM_LOCKED | VM_SEALED;
        assert_eq!(vmflags_string(g), "rd mr gd lo lf sl ");
        assert_eq!(parse_vmflags(&vmflags_string(g)), g);
    }

    #[test]
    fn start_gap_saturates() {
        // P6: vm_start_gap = start - 1 MiB for GROWSDOWN, saturating at 0.
        assert_eq!(start_gap(0x200000, VM_GROWSDOWN, 1 << 20), 0x100000);
        assert_eq!(start_gap(0x1000, VM_GROWSDOWN, 1 << 20), 0);
        assert_eq!(start_gap(0x1000, VM_READ, 1 << 20), 0x1000);
    }
}
