//! The model backend: replays a trace in a [`vmspace::space::AddressSpace`] built from the
//! before state of a Linux result document, and writes a document of the same shape.
//!
//! The starting space takes the document's `before` maps (with `before_smaps` VmFlags where
//! present), `brk0`, `stat`, `rlimits`, `sysctl`, `arch` and the personality's legacy-layout
//! bit. Ids, address expressions and self-protection are the shared [`crate::run`] rules.
//!
//! The space is the address space of one process of a simulated machine
//! ([`vmspace_sim::Machine`], 1 GiB of RAM): system calls run through the fault layer's
//! `Mm`, which keeps the process's page tables in step with the VMAs; a `touch` is a load or
//! store of the simulated CPU (TLB, page walk, fault handler, retry), so `fault`, `code` and
//! `val` come from the page-table path; `after_smaps` counts `rss_kb` and `anon_kb` from the
//! page tables (the zero page is not resident, as in Linux's smaps). Nothing is resident at
//! the start: pages the real process had resident before the trace are unknown to the model,
//! which is why [`crate::compare`] compares resident sizes only where the trace decides them.
//! A compat (i386 on x86-64) task uses 4-level tables, as Linux does. The machine's own
//! invariants (reference counts, RSS, frames) are checked at the end; a broken one is
//! reported as the document's `fatal`.

use crate::doc::{Hex, Int, ResultDoc, Smaps, Vma, ADDR_COMPAT_LAYOUT};
use crate::linux::{config_tags, renumber_doc_inodes};
use crate::run::{run_ops, Call, Executor, Fatal, RunContext, RunOutput, Touched};
use crate::trace::Trace;
use vmspace::space::{
    AddressSpace, FaultCode, FileRef, ProcStat, Signal, SnapshotVma, SpaceConfig, TaskKind,
};
use vmspace_sim::{with_mm, AnyMm, ArchKind, AsidTlb, Machine, MachinePhys, Pid, Stop};

/// Personality bit READ_IMPLIES_EXEC.
const READ_IMPLIES_EXEC: u64 = 0x0040_0000;
/// CONFIG_LSM_MMAP_MIN_ADDR of the reference kernel (Debian and Fedora builds: 65536; result
/// documents do not record it). The kernel's effective `mmap_min_addr` is
/// `max(vm.mmap_min_addr, this)` (measured: a hint of 0x1000 returns 0x10000 with
/// vm.mmap_min_addr = 4096), while the CAP_SYS_RAWIO check uses the sysctl alone.
const LSM_MMAP_MIN_ADDR: u64 = 65536;
/// Identity of the trace's memfd inside the model.
const MEMFD_ID: u64 = 0x6d65_6d66_6400;

/// The model's configuration for the task a Linux document describes.
pub fn space_config(doc: &ResultDoc) -> Result<SpaceConfig, String> {
    let kind = match doc.arch.as_str() {
        "x86_64" => TaskKind::X86_64,
        "i386" if doc.machine == "x86_64" || doc.machine.is_empty() => TaskKind::Compat32,
        "i386" => TaskKind::I386Native,
        other => return Err(format!("unknown arch {other:?} in the start document")),
    };
    let mut c = SpaceConfig::linux_default(kind);
    c.legacy_layout = doc.personality.0 & ADDR_COMPAT_LAYOUT != 0
        || doc
            .sysctl_int("vm.legacy_va_layout")
            .is_some_and(|v| v != 0);
    if let Some(v) = doc.sysctl_int("vm.mmap_min_addr") {
        c.mmap_min_addr = v;
    }
    if let Some(v) = doc.sysctl_int("vm.overcommit_memory") {
        c.overcommit_memory = v as u32;
    }
    if let Some(v) = doc.sysctl_int("vm.overcommit_ratio") {
        c.overcommit_ratio = v;
    }
    if let Some(v) = doc.sysctl_int("vm.max_map_count") {
        c.max_map_count = v;
    }
    let lim = |name: &str| -> u64 {
        match doc.rlimits.get(name) {
            None => u64::MAX,
            Some(_) => doc.rlimit(name).unwrap_or(u64::MAX),
        }
    };
    if doc.rlimits.contains_key("stack") {
        c.rlimit_stack = lim("stack");
        c.exec_rlimit_stack = Some(c.rlimit_stack);
    }
    if doc.rlimits.contains_key("data") {
        c.rlimit_data = lim("data");
    }
    if doc.rlimits.contains_key("as") {
        c.rlimit_as = lim("as");
    }
    if doc.rlimits.contains_key("memlock") {
        c.rlimit_memlock = lim("memlock");
    }
    c.lsm_mmap_min_addr = LSM_MMAP_MIN_ADDR;
    let uid = doc.config.get("uid").and_then(|v| v.as_u64()).unwrap_or(0);
    c.cap_sys_rawio = uid == 0;
    c.cap_ipc_lock = uid == 0;
    c.read_implies_exec = doc.personality.0 & READ_IMPLIES_EXEC != 0;
    // CONFIG_TRANSPARENT_HUGEPAGE is a build switch (P13) that documents do not record; the
    // reference kernels have it, so `c.thp` keeps its default (true) whatever thp.enabled says.
    // RAM and swap size decide commit accounting (mode 0: one request above RAM + swap fails).
    // Documents of this crate record them; for others, assume they come from this machine.
    let local = crate::linux::sysctls();
    let kb = |name: &str| {
        doc.sysctl
            .get(name)
            .or_else(|| local.get(name))
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    };
    if let Some(k) = kb("meminfo.MemTotal") {
        c.total_ram_pages = k / 4;
    }
    if let Some(k) = kb("meminfo.SwapTotal") {
        c.total_swap_pages = k / 4;
    }
    Ok(c)
}

fn parse_dev(s: &str) -> (u32, u32) {
    let (a, b) = s.split_once(':').unwrap_or(("0", "0"));
    (
        u32::from_str_radix(a, 16).unwrap_or(0),
        u32::from_str_radix(b, 16).unwrap_or(0),
    )
}

fn perms4(s: &str) -> [u8; 4] {
    let mut p = *b"---p";
    for (i, b) in s.bytes().take(4).enumerate() {
        p[i] = b;
    }
    p
}

/// Builds the starting space from a Linux document's before state.
pub fn start_space(doc: &ResultDoc) -> Result<AddressSpace, String> {
    let config = space_config(doc)?;
    let vmflags = |v: &Vma| -> Option<String> {
        doc.before_smaps
            .as_ref()?
            .iter()
            .find(|s| s.start == v.start && s.end == v.end)
            .map(|s| s.vmflags.clone())
    };
    let vmas: Vec<SnapshotVma> = doc
        .before
        .iter()
        .filter(|v| v.name != "[vsyscall]")
        .map(|v| SnapshotVma {
            start: v.start.0,
            end: v.end.0,
            perms: perms4(&v.perms),
            offset: v.offset.0,
            dev: parse_dev(&v.dev),
            inode: v.inode.0,
            name: v.name.clone(),
            vmflags: vmflags(v),
        })
        .collect();
    let st = |k: &str| doc.stat.get(k).map(|h| h.0).unwrap_or(0);
    let stat = ProcStat {
        start_code: st("start_code"),
        end_code: st("end_code"),
        start_data: st("start_data"),
        end_data: st("end_data"),
        start_brk: doc.stat.get("start_brk").map(|h| h.0).unwrap_or(doc.brk0.0),
        brk: doc.brk0.0,
        start_stack: st("start_stack"),
    };
    let mut space = AddressSpace::from_snapshot(config, &vmas, &stat)
        .map_err(|e| format!("cannot build the model from the before state: {}", e.name()))?;
    // smaps `Anonymous: 0 kB` on a private VMA: never written, so no anon_vma (G-before-anon).
    for s in doc.before_smaps.iter().flatten() {
        if s.anon_kb.0 == 0 && s.perms.ends_with('p') {
            space.mark_never_written(s.start.0);
        }
    }
    Ok(space)
}

/// RAM of the simulated machine a replay runs on (allocated lazily by the host; a trace
/// that needs more sees the machine's OOM killer, reported as a fatal error).
const REPLAY_RAM: u64 = 1 << 30;

/// The model behind the runner's [`Executor`] interface: one process of a simulated
/// [`Machine`] whose address space is the model's. System calls run through the fault
/// layer's [`vmspace::fault::Mm`] (so its page table follows the VMAs: DONTNEED, munmap,
/// mremap moves, MAP_POPULATE and mlock populate), `touch` ops are loads and stores of the
/// simulated CPU (TLB, page walk, fault handler, retry), and `smaps` counts `rss_kb` and
/// `anon_kb` from the page table.
pub struct ModelExec {
    machine: Machine,
    pid: Pid,
    memfd: FileRef,
}

/// The page-table format of a task: a compat (32-bit) task on an x86-64 kernel runs on
/// 4-level tables as Linux's do; only a native i386 kernel uses i386 tables.
fn arch_kind(kind: TaskKind) -> ArchKind {
    match kind {
        TaskKind::I386Native => ArchKind::I386,
        _ => ArchKind::X86_64,
    }
}

impl ModelExec {
    /// A model executor over `space` (nothing resident yet), with the trace's memfd of
    /// `memfd_size` bytes.
    pub fn new(space: AddressSpace, memfd_size: u64) -> Result<Self, String> {
        let memfd = FileRef {
            id: MEMFD_ID,
            size: memfd_size,
            name: "/memfd:trace (deleted)".into(),
            dev: (0, 1),
            inode: 1,
            writable: true,
            shmem: true,
        };
        let arch = arch_kind(space.config().kind);
        let mut machine =
            Machine::new(REPLAY_RAM).map_err(|e| format!("cannot start the machine: {e:?}"))?;
        let pid = machine
            .spawn_from_space(arch, space)
            .map_err(|e| format!("cannot start the traced process: {e:?}"))?;
        Ok(ModelExec {
            machine,
            pid,
            memfd,
        })
    }

    /// The model's address space (VMAs).
    pub fn space(&self) -> &AddressSpace {
        self.machine
            .process(self.pid)
            .expect("the traced process is never ended by replay")
            .space()
    }

    /// The simulated machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Runs `f` on the process's `Mm` with the machine's memory and TLB.
    fn with_mm<R>(
        &mut self,
        f: impl FnOnce(&mut AnyMm, &mut MachinePhys, &mut AsidTlb) -> R,
    ) -> Result<R, Fatal> {
        self.machine
            .with_mm(self.pid, f)
            .map_err(|e| Fatal(format!("the traced process is gone: {e:?}")))
    }
}

fn errno(r: Result<(), vmspace::space::Errno>) -> Result<u64, i32> {
    r.map(|()| 0).map_err(|e| e.code())
}

impl Executor for ModelExec {
    fn call(&mut self, c: &Call) -> Result<Result<u64, i32>, Fatal> {
        let file = self.memfd.clone();
        let c = c.clone();
        self.with_mm(move |mm, ph, t| {
            with_mm!(mm, m => match c {
                Call::Mmap {
                    addr,
                    len,
                    prot,
                    flags,
                    memfd,
                    offset,
                } => {
                    let file = if memfd { Some(file) } else { None };
                    m.mmap(ph, t, addr, len, prot, flags, file, offset)
                        .map_err(|e| e.code())
                }
                Call::Munmap { addr, len } => errno(m.munmap(ph, t, addr, len)),
                Call::Mprotect { addr, len, prot } => errno(m.mprotect(ph, t, addr, len, prot)),
                Call::Mremap {
                    addr,
                    old_len,
                    new_len,
                    flags,
                    new_addr,
                } => m
                    .mremap(ph, t, addr, old_len, new_len, flags, new_addr)
                    .map_err(|e| e.code()),
                Call::Madvise { addr, len, advice } => {
                    errno(m.madvise(ph, t, addr, len, advice as i64))
                }
                Call::Mlock { addr, len, flags } => errno(m.mlock(ph, t, addr, len, flags)),
                Call::Munlock { addr, len } => errno(m.op(ph, t, |s| s.munlock(addr, len))),
                Call::Mseal { addr, len } => errno(m.op(ph, t, |s| s.mseal(addr, len))),
            })
        })
    }

    fn brk(&mut self, target: u64) -> Result<u64, Fatal> {
        self.machine
            .brk(self.pid, target)
            .map_err(|e| Fatal(format!("brk: {e:?}")))
    }

    fn touch(&mut self, addr: u64, write: bool, value: u8) -> Result<Touched, Fatal> {
        Ok(match self.machine.touch(self.pid, addr, write, value) {
            Ok(v) => Touched::Ok(v.unwrap_or(0)),
            Err(Stop::Signal(f)) => Touched::Fault {
                signo: match f.signal {
                    Signal::Segv => 11,
                    Signal::Bus => 7,
                },
                code: match f.code {
                    FaultCode::SegvMaperr => 1,
                    FaultCode::SegvAccerr => 2,
                    FaultCode::BusAdrerr => 2,
                },
                addr: f.addr,
            },
            Err(stop) => {
                return Err(Fatal(format!(
                    "touch {addr:#x}: the simulated machine stopped: {stop:?}"
                )))
            }
        })
    }

    fn maps(&mut self) -> Result<Vec<Vma>, Fatal> {
        Ok(self
            .space()
            .maps_lines()
            .into_iter()
            .map(|l| Vma {
                start: Hex(l.start),
                end: Hex(l.end),
                perms: String::from_utf8_lossy(&l.perms).into_owned(),
                offset: Hex(l.offset),
                dev: format!("{:02x}:{:02x}", l.dev.0, l.dev.1),
                inode: Int(l.inode),
                name: l.name,
            })
            .collect())
    }

    fn smaps(&mut self) -> Result<Vec<Smaps>, Fatal> {
        let entries = self
            .machine
            .smaps(self.pid)
            .map_err(|e| Fatal(format!("smaps: {e:?}")))?;
        Ok(entries
            .into_iter()
            .map(|s| Smaps {
                start: Hex(s.start),
                end: Hex(s.end),
                perms: String::from_utf8_lossy(&s.perms).into_owned(),
                name: s.name,
                rss_kb: Int(s.rss_kb),
                anon_kb: Int(s.anon_kb),
                anon_huge_kb: Int(s.anon_huge_kb),
                locked_kb: Int(s.locked_kb),
                thp_eligible: Int(s.thp_eligible as u64),
                vmflags: s.vmflags.trim().to_string(),
            })
            .collect())
    }
}

/// Replays `trace` in the model starting from `start`'s before state (`--backend model
/// --start-from`). `smaps` adds `after_smaps` even without `config.smaps`.
pub fn run(
    trace: &Trace,
    start: &ResultDoc,
    smaps: bool,
) -> Result<(ResultDoc, RunOutput), String> {
    if let Some(f) = &start.fatal {
        return Err(format!("the start document records a failed run: {f}"));
    }
    let space = start_space(start)?;
    let mut exec = ModelExec::new(space, trace.config.memfd_size)?;
    let legacy = start.legacy();
    let ctx = RunContext {
        before: start.before.clone(),
        brk0: start.brk0.0,
        start_brk: start
            .stat
            .get("start_brk")
            .map(|h| h.0)
            .unwrap_or(start.brk0.0),
        is_32bit: start.arch == "i386",
        tags: config_tags(&start.arch, &start.build, legacy),
        snapshot_each: trace.config.snapshot_each,
    };
    let out = run_ops(trace, &mut exec, &ctx);
    let mut doc = ResultDoc {
        backend: "model".into(),
        version: 1,
        arch: start.arch.clone(),
        build: start.build.clone(),
        kernel: start.kernel.clone(),
        machine: start.machine.clone(),
        personality: start.personality,
        page_size: 4096,
        ops: trace.ops.len(),
        config: start.config.clone(),
        sysctl: start.sysctl.clone(),
        rlimits: start.rlimits.clone(),
        auxv: start.auxv.clone(),
        stat: start.stat.clone(),
        brk0: start.brk0,
        before: start.before.clone(),
        before_smaps: if trace.config.smaps_before {
            start.before_smaps.clone()
        } else {
            None
        },
        results: out.results.clone(),
        ..Default::default()
    };
    if let Err(e) = exec.space().check_invariants() {
        doc.fatal = Some(format!("model invariant broken: {e}"));
    }
    if let Err(e) = exec.machine().check() {
        doc.fatal = Some(format!("machine invariant broken: {e}"));
    }
    doc.brk_end = Some(Hex(exec.space().brk_value()));
    doc.after = Some(exec.maps().map_err(|f| f.0)?);
    if trace.config.smaps || smaps {
        doc.after_smaps = Some(exec.smaps().map_err(|f| f.0)?);
    }
    renumber_doc_inodes(&mut doc);
    Ok((doc, out))
}
