//! /proc/pid/maps and smaps rendering (L13, L19): labels `[heap]`, `[stack]`, `[vdso]`, file
//! names, and the exact column layout of show_map_vma.

use super::vma::{flags::*, vmflags_string, Backing, SpecialKind, Vma};
use super::{AddressSpace, TaskKind};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// One line of /proc/pid/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine {
    pub start: u64,
    pub end: u64,
    pub perms: [u8; 4],
    pub offset: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    /// `""` for plain anonymous memory.
    pub name: String,
}

/// One smaps entry (the fields the model knows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmapsEntry {
    pub start: u64,
    pub end: u64,
    pub perms: [u8; 4],
    pub name: String,
    pub rss_kb: u64,
    pub anon_kb: u64,
    pub anon_huge_kb: u64,
    pub locked_kb: u64,
    pub thp_eligible: bool,
    /// `VmFlags:` mnemonics, e.g. `"rd wr mr mw me ac "`.
    pub vmflags: String,
}

impl MapsLine {
    /// The line as /proc/pid/maps prints it, with the trailing newline.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{:08x}-{:08x} {} {:08x} {:02x}:{:02x} {} ",
            self.start,
            self.end,
            core::str::from_utf8(&self.perms).unwrap_or("????"),
            self.offset,
            self.dev.0,
            self.dev.1,
            self.inode
        );
        if !self.name.is_empty() {
            // seq_pad to 25 + 6 * sizeof(void *) - 1 columns, then one space.
            while s.len() < 72 {
                s.push(' ');
            }
            s.push(' ');
            s.push_str(&self.name);
        }
        s.push('\n');
        s
    }
}

impl AddressSpace {
    fn label(&self, v: &Vma) -> (u64, (u32, u32), u64, String) {
        match &v.backing {
            Backing::File { id } => match self.files.get(id) {
                Some(f) => (v.pgoff << 12, f.dev, f.inode, f.name.clone()),
                None => (v.pgoff << 12, (0, 0), 0, String::new()),
            },
            Backing::Shmem { obj } => (
                v.pgoff << 12,
                (0, 1),
                obj & !super::SHMEM_OBJ_BIT,
                String::from("/dev/zero (deleted)"),
            ),
            Backing::Special(k) => (
                0,
                (0, 0),
                0,
                String::from(match k {
                    SpecialKind::Vvar => "[vvar]",
                    SpecialKind::VvarVclock => "[vvar_vclock]",
                    SpecialKind::Vdso => "[vdso]",
                    SpecialKind::Other(n) => n.as_str(),
                }),
            ),
            Backing::Anon => {
                // vma_is_initial_heap: strict overlap with [start_brk, brk) (L13);
                // vma_is_initial_stack: inclusive at both ends.
                let name = if v.start < self.brk && v.end > self.start_brk {
                    "[heap]"
                } else if v.start <= self.start_stack && v.end >= self.start_stack {
                    "[stack]"
                } else {
                    ""
                };
                (0, (0, 0), 0, String::from(name))
            }
        }
    }

    /// What /proc/pid/maps would list, one entry per VMA (plus `[vsyscall]` for 64-bit).
    pub fn maps_lines(&self) -> Vec<MapsLine> {
        let mut out: Vec<MapsLine> = self
            .tree
            .iter()
            .map(|v| {
                let (offset, dev, inode, name) = self.label(v);
                MapsLine {
                    start: v.start,
                    end: v.end,
                    perms: v.perms(),
                    offset,
                    dev,
                    inode,
                    name,
                }
            })
            .collect();
        if self.cfg.kind == TaskKind::X86_64 {
            out.push(MapsLine {
                start: 0xffff_ffff_ff60_0000,
                end: 0xffff_ffff_ff60_1000,
                perms: *b"--xp",
                offset: 0,
                dev: (0, 0),
                inode: 0,
                name: String::from("[vsyscall]"),
            });
        }
        out
    }

    /// The /proc/pid/maps text, byte for byte.
    pub fn render_maps(&self) -> String {
        self.maps_lines().iter().map(MapsLine::render).collect()
    }

    /// smaps-like entries: resident/anonymous sizes from written pages, VmFlags.
    pub fn smaps(&self) -> Vec<SmapsEntry> {
        self.tree
            .iter()
            .map(|v| {
                let (_, _, _, name) = self.label(v);
                let anon = self.mem.private_pages_in(v.start, v.end) * 4;
                SmapsEntry {
                    start: v.start,
                    end: v.end,
                    perms: v.perms(),
                    name,
                    rss_kb: anon,
                    anon_kb: anon,
                    anon_huge_kb: 0,
                    locked_kb: if v.flags & VM_LOCKED != 0 { anon } else { 0 },
                    thp_eligible: v.is_anonymous()
                        && v.flags & VM_NOHUGEPAGE == 0
                        && v.flags & VM_HUGEPAGE != 0,
                    vmflags: vmflags_string(v.flags),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l13_render_matches_linux_columns() {
        // Lines copied from a real /proc/self/maps (Linux 6.18) as the expected format.
        let l = MapsLine {
            start: 0x7fff_f7d5_0000,
            end: 0x7fff_f7d7_2000,
            perms: *b"rw-p",
            offset: 0,
            dev: (0, 0),
            inode: 0,
            name: String::new(),
        };
        assert_eq!(
            l.render(),
            "7ffff7d50000-7ffff7d72000 rw-p 00000000 00:00 0 \n"
        );
        let l = MapsLine {
            start: 0x5555_5555_4000,
            end: 0x5555_5555_6000,
            perms: *b"r--p",
            offset: 0,
            dev: (0xfe, 0),
            inode: 247030,
            name: String::from("/usr/bin/cat"),
        };
        assert_eq!(
            l.render(),
            "555555554000-555555556000 r--p 00000000 fe:00 247030                     /usr/bin/cat\n"
        );
        let l = MapsLine {
            start: 0xffff_ffff_ff60_0000,
            end: 0xffff_ffff_ff60_1000,
            perms: *b"--xp",
            offset: 0,
            dev: (0, 0),
            inode: 0,
            name: String::from("[vsyscall]"),
        };
        assert_eq!(
            l.render(),
            "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
        );
        let l = MapsLine {
            start: 0x8000,
            end: 0x9000,
            perms: *b"rw-s",
            offset: 0x1000,
            dev: (0, 1),
            inode: 3,
            name: String::from("/dev/zero (deleted)"),
        };
        assert_eq!(
            l.render(),
            "00008000-00009000 rw-s 00001000 00:01 3                                  /dev/zero (deleted)\n"
        );
    }
}
