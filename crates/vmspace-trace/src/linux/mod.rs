//! The Linux backend: runs a trace for real in a fresh helper process (ASLR off, empty
//! environment, 8 MiB stack limit, optionally the legacy layout) and writes the result document.
//!
//! The helper process ([`helper`]) only executes syscalls, touches and `/proc/self` reads;
//! all trace logic (ids, address expressions, self-protection) runs here, in the same
//! [`crate::run`] code as the model.

pub mod helper;

pub use helper::{i386_unavailable, pie_unavailable, Helper};

use crate::doc::{renumber_inodes, Hex, ResultDoc, Vma};
use crate::run::{run_ops, Executor, Fatal, RunContext, RunOutput};
use crate::trace::Trace;
use serde_json::Value;
use std::collections::BTreeMap;

/// The task architecture a trace runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    /// An i386 binary on the 64-bit kernel (a compat task).
    I386,
}

impl Arch {
    /// `"x86_64"` / `"i386"`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::I386 => "i386",
        }
    }

    /// Parses an architecture name.
    pub fn from_name(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "x86-64" | "amd64" => Some(Arch::X86_64),
            "i386" | "i686" | "x86" => Some(Arch::I386),
            _ => None,
        }
    }

    /// The helper's build name in result documents.
    pub fn build(self) -> String {
        format!("{}-static", self.name())
    }
}

/// Options of a Linux run.
#[derive(Clone, Copy, Debug)]
pub struct LinuxOptions {
    pub arch: Arch,
    /// Run with `ADDR_COMPAT_LAYOUT` (bottom-up mmap).
    pub legacy: bool,
    /// Add `after_smaps` even without `config.smaps`.
    pub smaps: bool,
    /// Grow the break by this many bytes before the first snapshot, so the run starts with a
    /// `[heap]` VMA and `$start_brk < $brk0` — the shape of static glibc builds, which
    /// allocate their TLS with `sbrk`. 0 for a fresh layout.
    pub initial_heap: u64,
    /// Use the dynamically linked glibc PIE helper (`helper/glibc.c`, build `ARCH-pie`):
    /// runs start with ld.so, libc and the executable at ELF_ET_DYN_BASE.
    pub pie: bool,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The sysctls a result document records.
pub fn sysctls() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for name in [
        "vm.overcommit_memory",
        "vm.overcommit_ratio",
        "vm.overcommit_kbytes",
        "vm.mmap_min_addr",
        "vm.max_map_count",
        "vm.legacy_va_layout",
        "kernel.randomize_va_space",
    ] {
        if let Some(v) = read_trim(&format!("/proc/sys/{}", name.replace('.', "/"))) {
            m.insert(name.to_string(), v);
        }
    }
    if let Some(v) = read_trim("/sys/kernel/mm/transparent_hugepage/enabled") {
        m.insert("thp.enabled".into(), v);
    }
    if let Some(v) = read_trim("/sys/kernel/mm/transparent_hugepage/defrag") {
        m.insert("thp.defrag".into(), v);
    }
    if let Ok(mi) = std::fs::read_to_string("/proc/meminfo") {
        for l in mi.lines() {
            for (k, name) in [
                ("MemTotal:", "meminfo.MemTotal"),
                ("SwapTotal:", "meminfo.SwapTotal"),
            ] {
                if let Some(rest) = l.strip_prefix(k) {
                    m.insert(name.into(), rest.trim().to_string());
                }
            }
        }
    }
    m
}

fn uname_machine() -> String {
    // SAFETY: uname fills the zeroed struct; fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.machine.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

fn rlimits(pid: u32) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for (name, res) in [
        ("stack", libc::RLIMIT_STACK),
        ("data", libc::RLIMIT_DATA),
        ("as", libc::RLIMIT_AS),
        ("memlock", libc::RLIMIT_MEMLOCK),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit only reads the helper's limit into `lim`.
        let r = unsafe { libc::prlimit(pid as libc::pid_t, res, std::ptr::null(), &mut lim) };
        if r == 0 {
            let v = if lim.rlim_cur == libc::RLIM_INFINITY {
                Value::from("unlimited")
            } else {
                Value::from(lim.rlim_cur)
            };
            m.insert(name.to_string(), v);
        }
    }
    m
}

fn parse_stat(text: &str) -> BTreeMap<String, Hex> {
    let mut m = BTreeMap::new();
    let rest = match text.rfind(')') {
        Some(i) => &text[i + 1..],
        None => return m,
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    for (name, field) in [
        ("start_code", 26),
        ("end_code", 27),
        ("start_stack", 28),
        ("start_data", 45),
        ("end_data", 46),
        ("start_brk", 47),
        ("arg_start", 48),
        ("arg_end", 49),
        ("env_start", 50),
        ("env_end", 51),
    ] {
        if let Some(v) = f.get(field - 3).and_then(|s| s.parse::<u64>().ok()) {
            m.insert(name.to_string(), Hex(v));
        }
    }
    m
}

fn parse_auxv(bytes: &[u8], arch: Arch) -> BTreeMap<String, Hex> {
    let w = if arch == Arch::I386 { 4 } else { 8 };
    let mut m = BTreeMap::new();
    for pair in bytes.chunks_exact(2 * w) {
        let rd = |b: &[u8]| {
            if w == 4 {
                u32::from_le_bytes(b.try_into().unwrap()) as u64
            } else {
                u64::from_le_bytes(b.try_into().unwrap())
            }
        };
        let (k, v) = (rd(&pair[..w]), rd(&pair[w..]));
        let name = match k {
            33 => "sysinfo_ehdr",
            7 => "base",
            9 => "entry",
            3 => "phdr",
            0 => break,
            _ => continue,
        };
        m.insert(name.to_string(), Hex(v));
    }
    m
}

/// The `expect@SEL` tags of a configuration.
pub fn config_tags(arch: &str, build: &str, legacy: bool) -> Vec<String> {
    let layout = if legacy { "legacy" } else { "topdown" };
    let bits = if arch == "i386" { "32" } else { "64" };
    let kind = build.rsplit('-').next().unwrap_or("static").to_string();
    let mut t = vec![
        arch.to_string(),
        bits.to_string(),
        layout.to_string(),
        kind.clone(),
        format!("{build}-{layout}"),
    ];
    if kind == "pie" {
        t.push("dyn".into());
    }
    t
}

/// Runs `trace` on the real kernel. Returns the document and the run's extra output
/// (expectation failures). Errors only if the helper cannot be started at all.
pub fn run(trace: &Trace, opts: LinuxOptions) -> Result<(ResultDoc, RunOutput), String> {
    let mut h = Helper::spawn(opts.arch, opts.legacy, opts.pie)?;
    let mut doc = ResultDoc {
        backend: "linux".into(),
        version: 1,
        arch: opts.arch.name().into(),
        build: if opts.pie {
            format!("{}-pie", opts.arch.name())
        } else {
            opts.arch.build()
        },
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
        machine: uname_machine(),
        page_size: 4096,
        ops: trace.ops.len(),
        sysctl: sysctls(),
        ..Default::default()
    };
    let setup = (|| -> Result<(), Fatal> {
        h.create_memfd(trace.config.memfd_size)?;
        if trace.config.unprivileged {
            h.drop_privileges(65534)?;
        }
        if opts.initial_heap > 0 {
            let b = h.brk(0)?;
            h.brk(b.wrapping_add(opts.initial_heap))?;
        }
        let mut config = trace.config.to_json();
        config.insert("uid".into(), Value::from(h.uid()?));
        if opts.initial_heap > 0 {
            config.insert("initial_heap".into(), Value::from(opts.initial_heap));
        }
        doc.config = config;
        doc.personality = Hex(h.personality()?);
        doc.rlimits = rlimits(h.pid());
        doc.auxv = parse_auxv(&h.read_auxv()?, opts.arch);
        doc.stat = parse_stat(&String::from_utf8_lossy(&h.read_stat()?));
        doc.before = h.maps()?;
        if trace.config.smaps_before {
            doc.before_smaps = Some(h.smaps()?);
        }
        doc.brk0 = Hex(h.brk(0)?);
        Ok(())
    })();
    if let Err(Fatal(f)) = setup {
        doc.fatal = Some(f);
        return Ok((doc, RunOutput::default()));
    }
    let ctx = RunContext {
        before: doc.before.clone(),
        brk0: doc.brk0.0,
        start_brk: doc.stat.get("start_brk").map(|h| h.0).unwrap_or(doc.brk0.0),
        is_32bit: opts.arch == Arch::I386,
        tags: config_tags(&doc.arch, &doc.build, opts.legacy),
        snapshot_each: trace.config.snapshot_each,
    };
    let out = run_ops(trace, &mut h, &ctx);
    doc.results = out.results.clone();
    if let Some(f) = &out.fatal {
        doc.fatal = Some(f.clone());
    } else {
        let end = (|| -> Result<(), Fatal> {
            doc.brk_end = Some(Hex(h.brk(0)?));
            doc.after = Some(h.maps()?);
            if trace.config.smaps || opts.smaps {
                doc.after_smaps = Some(h.smaps()?);
            }
            Ok(())
        })();
        if let Err(Fatal(f)) = end {
            doc.fatal = Some(f);
        }
        h.finish();
    }
    renumber_doc_inodes(&mut doc);
    Ok((doc, out))
}

/// Renumbers shmem inodes in document order: before, results (vma, maps), after.
pub fn renumber_doc_inodes(doc: &mut ResultDoc) {
    let mut lists: Vec<Vec<Vma>> = vec![std::mem::take(&mut doc.before)];
    for r in doc.results.iter_mut() {
        lists.push(r.vma.as_mut().and_then(|v| v.take()).into_iter().collect());
        lists.push(r.maps.take().unwrap_or_default());
    }
    let has_after = doc.after.is_some();
    lists.push(doc.after.take().unwrap_or_default());
    renumber_inodes(lists.iter_mut());
    let mut it = lists.into_iter();
    doc.before = it.next().unwrap_or_default();
    for r in doc.results.iter_mut() {
        let v = it.next().unwrap_or_default();
        if let Some(slot) = r.vma.as_mut() {
            *slot = v.into_iter().next();
        }
        let m = it.next().unwrap_or_default();
        if r.maps.is_none() && (!m.is_empty() || r.op == "snapshot") {
            r.maps = Some(m);
        }
    }
    let after = it.next().unwrap_or_default();
    if has_after {
        doc.after = Some(after);
    }
}
