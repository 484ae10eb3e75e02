//! Rebuilding a space from a Linux /proc/pid/maps (+ smaps VmFlags) snapshot and
//! /proc/pid/stat: heap, stack (VM_GROWSDOWN), vdso/vvar special mappings, files, bss.

use super::vma::{flags::*, parse_vmflags, Backing, SpecialKind, Vma};
use super::{AddressSpace, Errno, FileRef, SpaceConfig, SHMEM_OBJ_BIT};
use alloc::string::String;

/// One line of a Linux maps/smaps snapshot used to build a starting state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotVma {
    pub start: u64,
    pub end: u64,
    /// e.g. `*b"rw-p"`.
    pub perms: [u8; 4],
    pub offset: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    pub name: String,
    /// smaps `VmFlags` ("rd wr mr mw me ac"), when known.
    pub vmflags: Option<String>,
}

/// The /proc/pid/stat fields the space needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
}

impl ProcStat {
    /// Reads the fields from a `/proc/pid/stat` line (fields 26–28 and 45–47, counted as in
    /// proc(5)); `brk` is not in the file and stays 0. `None` if the line is too short or one
    /// of those fields is not a number (other fields, such as a negative nice value, are not
    /// read).
    pub fn parse(line: &str) -> Option<ProcStat> {
        // The comm (field 2) may hold spaces and parentheses: fields restart after the last ')'.
        let rest = &line[line.rfind(')')? + 1..];
        let f: alloc::vec::Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            start_code: field(26)?,
            end_code: field(27)?,
            start_stack: field(28)?,
            start_data: field(45)?,
            end_data: field(46)?,
            start_brk: field(47)?,
            brk: 0,
        })
    }
}

impl SnapshotVma {
    /// Reads one `/proc/pid/maps` line (`start-end perms offset major:minor inode [name]`);
    /// `None` if it is malformed.
    pub fn parse_maps_line(line: &str) -> Option<SnapshotVma> {
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let mut f = line.split_whitespace();
        let (a, b) = f.next()?.split_once('-')?;
        let perms: [u8; 4] = f.next()?.as_bytes().try_into().ok()?;
        let offset = hex(f.next()?)?;
        let (ma, mi) = f.next()?.split_once(':')?;
        let inode = f.next()?.parse().ok()?;
        let mut name = String::new();
        for (i, w) in f.enumerate() {
            if i > 0 {
                name.push(' ');
            }
            name.push_str(w);
        }
        Some(SnapshotVma {
            start: hex(a)?,
            end: hex(b)?,
            perms,
            offset,
            dev: (hex(ma)? as u32, hex(mi)? as u32),
            inode,
            name,
            vmflags: None,
        })
    }
}

/// File ids the snapshot invents for files it sees (bit 62 set, so caller ids stay free).
pub const SNAPSHOT_FILE_BIT: u64 = 1 << 62;

fn guess_flags(v: &SnapshotVma) -> u64 {
    let p = v.perms;
    let mut f = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;
    if p[0] == b'r' {
        f |= VM_READ;
    }
    if p[1] == b'w' {
        f |= VM_WRITE;
    }
    if p[2] == b'x' {
        f |= VM_EXEC;
    }
    let shared = p[3] == b's';
    if shared {
        f |= VM_MAYSHARE;
        if p[1] == b'w' {
            f |= VM_SHARED;
        }
    }
    match v.name.as_str() {
        "[stack]" => f |= VM_GROWSDOWN | VM_ACCOUNT,
        // smaps on the reference: "rd mr pf io de dd" for both.
        "[vvar]" | "[vvar_vclock]" => {
            f = VM_READ | VM_MAYREAD | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP;
        }
        "[vdso]" => f = VM_READ | VM_EXEC | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_DONTEXPAND,
        _ => {
            if !shared && p[1] == b'w' {
                f |= VM_ACCOUNT;
            }
        }
    }
    f
}

impl AddressSpace {
    /// Builds a space from a snapshot (maps lines in order, optional VmFlags) and stat.
    /// Lines above TASK_SIZE (`[vsyscall]`) are skipped. Written-looking VMAs (private and
    /// writable, or VM_ACCOUNT) get distinct anon_vmas, which keeps adjacent snapshot VMAs
    /// apart exactly as Linux kept them. Errors: EINVAL for unaligned, empty or overlapping
    /// lines.
    pub fn from_snapshot(
        config: SpaceConfig,
        vmas: &[SnapshotVma],
        stat: &ProcStat,
    ) -> Result<Self, Errno> {
        let mut s = AddressSpace::new(config);
        s.start_brk = stat.start_brk;
        s.brk = stat.brk;
        s.start_stack = stat.start_stack;
        s.start_data = stat.start_data;
        s.end_data = stat.end_data;
        s.start_code = stat.start_code;
        s.end_code = stat.end_code;
        for sv in vmas {
            if sv.start >= s.layout.task_size && sv.name == "[vsyscall]" {
                continue;
            }
            if sv.start >= sv.end || sv.start & 0xfff != 0 || sv.end & 0xfff != 0 {
                return Err(Errno::EINVAL);
            }
            if s.tree.intersecting(sv.start, sv.end).is_some() {
                return Err(Errno::EINVAL);
            }
            let mut flags = match &sv.vmflags {
                Some(f) => parse_vmflags(f),
                None => guess_flags(sv),
            };
            let shared = sv.perms[3] == b's';
            let backing = match sv.name.as_str() {
                "[vvar]" => Backing::Special(SpecialKind::Vvar),
                "[vvar_vclock]" => Backing::Special(SpecialKind::VvarVclock),
                "[vdso]" => Backing::Special(SpecialKind::Vdso),
                "" | "[heap]" | "[stack]" if !shared => Backing::Anon,
                n if n.starts_with('[')
                    && n != "[heap]"
                    && n != "[stack]"
                    && !n.starts_with("[anon") =>
                {
                    Backing::Special(SpecialKind::Other(String::from(n)))
                }
                n if n.starts_with("/dev/zero") || n.starts_with("/SYSV") || n.is_empty() => {
                    let obj = SHMEM_OBJ_BIT | sv.inode;
                    let size = s.shmem_size.get(&obj).copied().unwrap_or(0);
                    let need = (sv.offset + (sv.end - sv.start)).max(size);
                    s.shmem_size.insert(obj, need);
                    Backing::Shmem { obj }
                }
                n => {
                    let id = SNAPSHOT_FILE_BIT
                        | ((sv.dev.0 as u64) << 52)
                        | ((sv.dev.1 as u64) << 40)
                        | (sv.inode & ((1 << 40) - 1));
                    let shmem = n.starts_with("/memfd:");
                    s.files.entry(id).or_insert_with(|| FileRef {
                        id,
                        size: u64::MAX,
                        name: String::from(n),
                        dev: sv.dev,
                        inode: sv.inode,
                        writable: shared && sv.perms[1] == b'w',
                        shmem,
                    });
                    Backing::File { id }
                }
            };
            if matches!(backing, Backing::Special(_)) {
                flags |= VM_DONTEXPAND;
            }
            let mut pgoff = match backing {
                Backing::Anon => sv.start >> 12,
                _ => sv.offset >> 12,
            };
            // L14/L15: the stack is built below STACK_TOP_MAX (the 64-bit top) and moved
            // down to a compat task's stack top keeping its pgoff, so a compat stack's pgoff
            // is not start >> 12 (and it never merges with an adjacent new mapping, G4).
            if sv.name == "[stack]" && s.cfg.kind == super::TaskKind::Compat32 {
                pgoff += (super::layout::TASK_SIZE_64 - super::layout::TASK_SIZE_COMPAT) >> 12;
            }
            let written = !shared
                && !matches!(backing, Backing::Special(_))
                && (flags & (VM_WRITE | VM_ACCOUNT) != 0);
            let anon_vma = if written { Some(s.new_id()) } else { None };
            if flags & VM_ACCOUNT != 0 {
                s.acct.committed += (sv.end - sv.start) >> 12;
            }
            s.acct_map(flags, (sv.end - sv.start) >> 12);
            s.tree.insert(Vma {
                start: sv.start,
                end: sv.end,
                flags,
                pgoff,
                backing,
                anon_vma,
                forked: false,
            });
        }
        Ok(s)
    }

    /// Snapshot evidence that the private VMA starting at `start` was never written (smaps
    /// `Anonymous: 0 kB`): it gets no anon_vma, so it merges and moves like a fresh mapping
    /// (G6–G8, G14; an unfaulted source of a move takes pgoff = new_addr >> 12). Returns
    /// whether such a VMA existed; VMAs holding pages in the model are left alone.
    pub fn mark_never_written(&mut self, start: u64) -> bool {
        let has_pages = match self.tree.containing(start) {
            Some(v) if v.start == start && !v.is_special_mapping() => {
                self.mem.private_pages_in(v.start, v.end) > 0
            }
            _ => return false,
        };
        if has_pages {
            return false;
        }
        self.tree.update(start, |v| {
            v.anon_vma = None;
            v.forked = false;
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_stat_and_maps_lines_parse() {
        // Field n holds n, except the state and the fields the space reads.
        let mut f: alloc::vec::Vec<alloc::string::String> =
            (3..=52).map(|n: u32| alloc::format!("{n}")).collect();
        f[0] = "R".into();
        for (n, v) in [(26, 134512640u64), (27, 135004160), (28, 3221221024)]
            .into_iter()
            .chain([(45, 135024640), (46, 135028736), (47, 135036928)])
        {
            f[n - 3] = alloc::format!("{v}");
        }
        let line = alloc::format!("4242 (a (b) c) {}", f.join(" "));
        let st = ProcStat::parse(&line).expect("parses");
        assert_eq!(st.start_code, 134512640);
        assert_eq!(st.end_code, 135004160);
        assert_eq!(st.start_stack, 3221221024);
        assert_eq!(st.start_data, 135024640);
        assert_eq!(st.end_data, 135028736);
        assert_eq!(st.start_brk, 135036928);
        assert_eq!(ProcStat::parse("1 (x) R 2 3"), None);
        // A negative nice value (field 19) is fine; a needed field that is not a number is not.
        f[19 - 3] = "-5".into();
        let nice = alloc::format!("1 (x) {}", f.join(" "));
        assert_eq!(ProcStat::parse(&nice), Some(st));
        f[47 - 3] = "x".into();
        let bad = alloc::format!("1 (x) {}", f.join(" "));
        assert_eq!(ProcStat::parse(&bad), None);

        let v =
            SnapshotVma::parse_maps_line("08048000-080c8000 r-xp 00001000 08:01 1234   /bin/a b")
                .expect("parses");
        assert_eq!(
            (v.start, v.end, v.offset, v.inode),
            (0x0804_8000, 0x080c_8000, 0x1000, 1234)
        );
        assert_eq!(
            (&v.perms, v.dev, v.name.as_str()),
            (b"r-xp", (8, 1), "/bin/a b")
        );
        let anon = SnapshotVma::parse_maps_line("b7ff8000-b7ffc000 r--p 00000000 00:00 0").unwrap();
        assert_eq!(anon.name, "");
        assert!(SnapshotVma::parse_maps_line("b7ff8000 r--p 0 00:00 0").is_none());
    }

    use super::super::TaskKind;
    use super::*;

    fn line(start: u64, end: u64, perms: &[u8; 4], off: u64, name: &str) -> SnapshotVma {
        SnapshotVma {
            start,
            end,
            perms: *perms,
            offset: off,
            dev: if name.starts_with('/') {
                (0xfe, 0)
            } else {
                (0, 0)
            },
            inode: if name.starts_with('/') { 99 } else { 0 },
            name: name.into(),
            vmflags: None,
        }
    }

    #[test]
    fn rebuilds_a_static_binary_and_renders_it_back() {
        let vmas = [
            line(0x400000, 0x401000, b"r--p", 0, "/t"),
            line(0x401000, 0x402000, b"r-xp", 0x1000, "/t"),
            line(0x402000, 0x403000, b"rw-p", 0x2000, "/t"),
            line(0x403000, 0x425000, b"rw-p", 0, "[heap]"),
            line(0x7fff_f7ff_9000, 0x7fff_f7ffd000, b"r--p", 0, "[vvar]"),
            line(0x7fff_f7ff_d000, 0x7fff_f7fff000, b"r-xp", 0, "[vdso]"),
            line(0x7fff_fffd_e000, 0x7fff_ffff_f000, b"rw-p", 0, "[stack]"),
            line(
                0xffff_ffff_ff60_0000,
                0xffff_ffff_ff60_1000,
                b"--xp",
                0,
                "[vsyscall]",
            ),
        ];
        let stat = ProcStat {
            start_brk: 0x403000,
            brk: 0x425000,
            start_stack: 0x7fff_ffff_e000,
            ..Default::default()
        };
        let mut s =
            AddressSpace::from_snapshot(SpaceConfig::linux_default(TaskKind::X86_64), &vmas, &stat)
                .unwrap();
        let lines = s.maps_lines();
        assert_eq!(lines.len(), vmas.len());
        for (l, v) in lines.iter().zip(vmas.iter()) {
            assert_eq!((l.start, l.end, &l.name), (v.start, v.end, &v.name));
            assert_eq!(l.perms, v.perms);
        }
        s.check_invariants().unwrap();
        // L19: special mappings refuse partial munmap.
        assert_eq!(s.munmap(0x7fff_f7ff_9000, 0x1000), Err(Errno::EINVAL));
        // 6.4: vvar pages the kernel does not provide raise SIGBUS; vdso is read-only.
        let e = s.touch(0x7fff_f7ff_a000, false, 0).unwrap_err();
        assert_eq!(e.signal, super::super::Signal::Bus);
        assert_eq!(s.touch(0x7fff_f7ff_9000, false, 0), Ok(Some(0)));
        assert_eq!(
            s.touch(0x7fff_f7ff_d000, true, 1).unwrap_err().code,
            super::super::FaultCode::SegvAccerr
        );
        // The stack grows (S4).
        assert_eq!(s.touch(0x7fff_fffd_d000, true, 1), Ok(None));
        assert!(s.find_vma(0x7fff_fffd_d000).is_some());
    }

    #[test]
    fn never_written_snapshot_vma_merges_like_a_fresh_one() {
        // An unwritten .bss-like VMA (smaps Anonymous: 0 kB) next to a new mapping: without
        // an anon_vma a fresh neighbour with continuous pgoff merges (G6-G8).
        let vmas = [line(0x40_0000, 0x40_2000, b"rw-p", 0, "")];
        let stat = ProcStat::default();
        let cfg = SpaceConfig::linux_default(TaskKind::X86_64);
        let mut s = AddressSpace::from_snapshot(cfg, &vmas, &stat).unwrap();
        assert!(s.find_vma(0x40_0000).unwrap().anon_vma.is_some());
        assert!(s.mark_never_written(0x40_0000));
        assert!(!s.mark_never_written(0x40_1000));
        assert!(s.find_vma(0x40_0000).unwrap().anon_vma.is_none());
        s.touch(0x40_0000, true, 1).unwrap();
        // Written now: the evidence no longer applies.
        assert!(!s.mark_never_written(0x40_0000));
    }

    #[test]
    fn g4_stack_pgoff_decides_merge_below_stack() {
        // Observed on Linux 6.18: a MAP_FIXED|MAP_GROWSDOWN page right below [stack] merges
        // into it for a 64-bit task but not for a compat task (relocated stack keeps pgoff).
        let flags = super::super::abi::MAP_PRIVATE
            | super::super::abi::MAP_ANONYMOUS
            | super::super::abi::MAP_FIXED
            | super::super::abi::MAP_GROWSDOWN;
        for (kind, top, merged) in [
            (TaskKind::X86_64, 0x7fff_ffff_f000u64, true),
            (TaskKind::Compat32, 0xffff_e000u64, false),
        ] {
            let vmas = [line(top - 0x21000, top, b"rw-p", 0, "[stack]")];
            let stat = ProcStat {
                start_stack: top - 0x100,
                ..Default::default()
            };
            let mut s = AddressSpace::from_snapshot(SpaceConfig::linux_default(kind), &vmas, &stat)
                .unwrap();
            s.mmap(top - 0x22000, 0x1000, 3, flags, None, 0).unwrap();
            assert_eq!(s.map_count() == 1, merged, "{kind:?}");
        }
    }
}
