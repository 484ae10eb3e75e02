//! The Linux backend: runs a trace for real in a fresh helper process (ASLR off, empty
//! environment, 8 MiB stack limit, optionally the legacy layout) and writes the result document.
//!
//! The helper (`helper/x86_64.rs`, or `helper/i386.c` for `--arch i386`) is a static,
//! allocation-free syscall server embedded in this crate. The protocol on its stdin/stdout:
//! a request is eight little-endian `u64` words `[code, args…]`; the reply is five words,
//! except for `READ_FILE`, which streams `[len][bytes]…[0]`. All trace logic (ids, address
//! expressions, self-protection) runs here, in the same [`crate::run`] code as the model.

use crate::doc::{
    parse_maps, parse_smaps, renumber_inodes, Hex, ResultDoc, Smaps, Vma, ADDR_COMPAT_LAYOUT,
    ADDR_NO_RANDOMIZE,
};
use crate::run::{run_ops, Call, Executor, Fatal, RunContext, RunOutput, Touched};
use crate::trace::Trace;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

static HELPER_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/helper-x86_64"));
static HELPER_I386: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/helper-i386"));
static HELPER_I386_WHY: &str = include_str!(concat!(env!("OUT_DIR"), "/helper-i386.why"));
static HELPER_X86_64_PIE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/helper-x86_64-pie"));
static HELPER_X86_64_PIE_WHY: &str =
    include_str!(concat!(env!("OUT_DIR"), "/helper-x86_64-pie.why"));
static HELPER_I386_PIE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/helper-i386-pie"));
static HELPER_I386_PIE_WHY: &str = include_str!(concat!(env!("OUT_DIR"), "/helper-i386-pie.why"));

const REQ_SYSCALL: u64 = 1;
const REQ_TOUCH: u64 = 2;
const REQ_READ_FILE: u64 = 3;
const REQ_MEMFD: u64 = 4;
const REQ_DROP_PRIV: u64 = 5;
const REQ_EXIT: u64 = 6;
const REQ_MMAP: u64 = 7;

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

/// Syscall numbers that differ between the two ABIs.
struct Nr {
    munmap: u64,
    mprotect: u64,
    mremap: u64,
    brk: u64,
    madvise: u64,
    mlock: u64,
    munlock: u64,
    mlock2: u64,
    mseal: u64,
    personality: u64,
    getuid: u64,
}

const NR_X86_64: Nr = Nr {
    munmap: 11,
    mprotect: 10,
    mremap: 25,
    brk: 12,
    madvise: 28,
    mlock: 149,
    munlock: 150,
    mlock2: 325,
    mseal: 462,
    personality: 135,
    getuid: 102,
};

const NR_I386: Nr = Nr {
    munmap: 91,
    mprotect: 125,
    mremap: 163,
    brk: 45,
    madvise: 219,
    mlock: 150,
    munlock: 151,
    mlock2: 376,
    mseal: 462,
    personality: 136,
    getuid: 199,
};

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

/// Why the i386 helper is unavailable, if it is.
pub fn i386_unavailable() -> Option<&'static str> {
    if HELPER_I386.is_empty() {
        Some(if HELPER_I386_WHY.is_empty() {
            "the i386 helper was not built"
        } else {
            HELPER_I386_WHY
        })
    } else {
        None
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The embedded helper binary for `arch` (the glibc PIE one with `pie`).
fn helper_bytes(arch: Arch, pie: bool) -> Result<&'static [u8], String> {
    let (bytes, why): (&'static [u8], &'static str) = match (arch, pie) {
        (Arch::X86_64, false) => (HELPER_X86_64, ""),
        (Arch::I386, false) => (HELPER_I386, HELPER_I386_WHY),
        (Arch::X86_64, true) => (HELPER_X86_64_PIE, HELPER_X86_64_PIE_WHY),
        (Arch::I386, true) => (HELPER_I386_PIE, HELPER_I386_PIE_WHY),
    };
    if bytes.is_empty() {
        let what = format!("{}-{}", arch.name(), if pie { "pie" } else { "static" });
        return Err(format!("the {what} helper was not built: {why}"));
    }
    Ok(bytes)
}

/// Why the `pie` helper for `arch` is unavailable, if it is.
pub fn pie_unavailable(arch: Arch) -> Option<String> {
    helper_bytes(arch, true).err()
}

/// Starts the helper at `path` with personality `persona`, an empty environment, an 8 MiB
/// stack soft limit and piped stdin/stdout.
fn spawn_at(path: &std::path::Path, persona: u64) -> std::io::Result<Child> {
    let mut cmd = Command::new(path);
    cmd.arg0("vmspace-trace-helper")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls (personality, getrlimit, setrlimit) on stack data.
    unsafe {
        cmd.pre_exec(move || {
            if libc::personality(persona as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_STACK, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = 8 << 20;
            if lim.rlim_max < lim.rlim_cur {
                lim.rlim_max = lim.rlim_cur;
            }
            if libc::setrlimit(libc::RLIMIT_STACK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Starts the helper from a close-on-exec memfd holding `bytes` (the kernel opens the file
/// before it closes such descriptors, so `/proc/self/fd/N` works for an ELF binary).
fn spawn_from_memfd(bytes: &[u8], persona: u64) -> Result<Child, String> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name and returns a new descriptor we own.
    let fd = unsafe { libc::memfd_create(c"vmspace-trace-helper".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(bytes).map_err(|e| e.to_string())?;
    let child = spawn_at(
        std::path::Path::new(&format!("/proc/self/fd/{fd}")),
        persona,
    )
    .map_err(|e| e.to_string());
    drop(file);
    child
}

/// Writes the helper binary to a per-user cache file (once per content) and returns its path.
fn install_helper(arch: Arch, pie: bool) -> Result<PathBuf, String> {
    let bytes = helper_bytes(arch, pie)?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("vmspace-helpers-{uid}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let kind = if pie { "pie" } else { "static" };
    let path = dir.join(format!("helper-{}-{kind}-{:016x}", arch.name(), fnv(bytes)));
    if std::fs::read(&path).map(|b| b == bytes).unwrap_or(false) {
        return Ok(path);
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("tmp-{}-{seq}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("installing {}: {e}", path.display()))?;
    Ok(path)
}

/// A running helper process.
pub struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    arch: Arch,
    nr: &'static Nr,
    memfd: u64,
}

impl Helper {
    /// Starts a helper with ASLR off (and `ADDR_COMPAT_LAYOUT` if `legacy`), an empty
    /// environment and an 8 MiB stack soft limit.
    pub fn spawn(arch: Arch, legacy: bool, pie: bool) -> Result<Helper, String> {
        let persona = ADDR_NO_RANDOMIZE | if legacy { ADDR_COMPAT_LAYOUT } else { 0 };
        let mut child = match install_helper(arch, pie).and_then(|path| {
            spawn_at(&path, persona).map_err(|e| format!("starting {}: {e}", path.display()))
        }) {
            Ok(c) => c,
            // A temporary directory on a noexec mount: run the helper from a memfd instead.
            Err(first) => spawn_from_memfd(helper_bytes(arch, pie)?, persona)
                .map_err(|e| format!("{first}; from a memfd: {e}"))?,
        };
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let nr = match arch {
            Arch::X86_64 => &NR_X86_64,
            Arch::I386 => &NR_I386,
        };
        Ok(Helper {
            child,
            stdin,
            stdout,
            arch,
            nr,
            memfd: u64::MAX,
        })
    }

    fn died(&mut self, what: &str) -> Fatal {
        let status = match self.child.wait() {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (Some(c), _) if c >= 128 => format!("killed by signal {} outside a touch", c - 128),
                (Some(c), _) => format!("exited with status {c}"),
                _ => "ended".into(),
            },
            Err(e) => e.to_string(),
        };
        Fatal(format!("helper process died during {what}: {status}"))
    }

    fn send(&mut self, words: [u64; 8], what: &str) -> Result<(), Fatal> {
        let mut buf = [0u8; 64];
        for (i, w) in words.iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        if self
            .stdin
            .write_all(&buf)
            .and_then(|_| self.stdin.flush())
            .is_err()
        {
            return Err(self.died(what));
        }
        Ok(())
    }

    fn request(&mut self, words: [u64; 8], what: &str) -> Result<[u64; 5], Fatal> {
        self.send(words, what)?;
        let mut buf = [0u8; 40];
        if self.stdout.read_exact(&mut buf).is_err() {
            return Err(self.died(what));
        }
        let mut out = [0u64; 5];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        Ok(out)
    }

    /// Reads one of the helper's `/proc/self` files (0 maps, 1 smaps, 2 stat, 3 auxv).
    fn read_file(&mut self, which: u64) -> Result<Vec<u8>, Fatal> {
        self.send([REQ_READ_FILE, which, 0, 0, 0, 0, 0, 0], "a /proc read")?;
        let mut data = Vec::new();
        loop {
            let mut len = [0u8; 8];
            if self.stdout.read_exact(&mut len).is_err() {
                return Err(self.died("a /proc read"));
            }
            let n = u64::from_le_bytes(len) as usize;
            if n == 0 {
                return Ok(data);
            }
            let at = data.len();
            data.resize(at + n, 0);
            if self.stdout.read_exact(&mut data[at..]).is_err() {
                return Err(self.died("a /proc read"));
            }
        }
    }

    fn syscall(&mut self, nr: u64, args: &[u64]) -> Result<u64, Fatal> {
        let mut w = [REQ_SYSCALL, nr, 0, 0, 0, 0, 0, 0];
        w[2..2 + args.len()].copy_from_slice(args);
        Ok(self.request(w, "a syscall")?[0])
    }

    /// Splits a raw return into value or errno, per ABI.
    fn decode(&self, raw: u64) -> Result<u64, i32> {
        match self.arch {
            Arch::X86_64 => {
                if raw > (-4096i64) as u64 {
                    Err(-(raw as i64) as i32)
                } else {
                    Ok(raw)
                }
            }
            Arch::I386 => {
                let r = raw as u32;
                if r > (-4096i32) as u32 {
                    Err(-(r as i32))
                } else {
                    Ok(r as u64)
                }
            }
        }
    }

    /// Tells the helper to exit and reaps it.
    pub fn finish(mut self) {
        let _ = self.send([REQ_EXIT, 0, 0, 0, 0, 0, 0, 0], "exit");
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Executor for Helper {
    fn call(&mut self, c: &Call) -> Result<Result<u64, i32>, Fatal> {
        let n = self.nr;
        let raw = match *c {
            Call::Mmap {
                addr,
                len,
                prot,
                flags,
                memfd,
                offset,
            } => {
                let fd = if memfd { self.memfd } else { u64::MAX };
                self.request([REQ_MMAP, addr, len, prot, flags, fd, offset, 0], "mmap")?[0]
            }
            Call::Munmap { addr, len } => self.syscall(n.munmap, &[addr, len])?,
            Call::Mprotect { addr, len, prot } => self.syscall(n.mprotect, &[addr, len, prot])?,
            Call::Mremap {
                addr,
                old_len,
                new_len,
                flags,
                new_addr,
            } => self.syscall(n.mremap, &[addr, old_len, new_len, flags, new_addr])?,
            Call::Madvise { addr, len, advice } => self.syscall(n.madvise, &[addr, len, advice])?,
            Call::Mlock { addr, len, flags } => {
                if flags == 0 {
                    self.syscall(n.mlock, &[addr, len])?
                } else {
                    self.syscall(n.mlock2, &[addr, len, flags])?
                }
            }
            Call::Munlock { addr, len } => self.syscall(n.munlock, &[addr, len])?,
            Call::Mseal { addr, len } => self.syscall(n.mseal, &[addr, len, 0])?,
        };
        Ok(self.decode(raw))
    }

    fn brk(&mut self, target: u64) -> Result<u64, Fatal> {
        let raw = self.syscall(self.nr.brk, &[target])?;
        Ok(match self.arch {
            Arch::X86_64 => raw,
            Arch::I386 => raw & 0xffff_ffff,
        })
    }

    fn touch(&mut self, addr: u64, write: bool, value: u8) -> Result<Touched, Fatal> {
        let r = self.request(
            [REQ_TOUCH, addr, write as u64, value as u64, 0, 0, 0, 0],
            "a touch",
        )?;
        Ok(if r[0] == 0 {
            Touched::Ok(r[1] as u8)
        } else {
            Touched::Fault {
                signo: r[2] as i32,
                code: r[3] as i32,
                addr: r[4],
            }
        })
    }

    fn maps(&mut self) -> Result<Vec<Vma>, Fatal> {
        let text = self.read_file(0)?;
        parse_maps(&String::from_utf8_lossy(&text)).map_err(Fatal)
    }

    fn smaps(&mut self) -> Result<Vec<Smaps>, Fatal> {
        let text = self.read_file(1)?;
        parse_smaps(&String::from_utf8_lossy(&text)).map_err(Fatal)
    }
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
        let fd = h.request(
            [REQ_MEMFD, trace.config.memfd_size, 0, 0, 0, 0, 0, 0],
            "memfd setup",
        )?[0];
        h.memfd = h
            .decode(fd)
            .map_err(|e| Fatal(format!("memfd_create failed: errno {e}")))?;
        if trace.config.unprivileged {
            let r = h.request(
                [REQ_DROP_PRIV, 65534, 0, 0, 0, 0, 0, 0],
                "dropping privileges",
            )?[0];
            h.decode(r)
                .map_err(|e| Fatal(format!("dropping privileges failed: errno {e}")))?;
        }
        if opts.initial_heap > 0 {
            let b = h.brk(0)?;
            h.brk(b.wrapping_add(opts.initial_heap))?;
        }
        let mut config = trace.config.to_json();
        let uid = h.syscall(h.nr.getuid, &[])?;
        config.insert("uid".into(), Value::from(uid & 0xffff_ffff));
        if opts.initial_heap > 0 {
            config.insert("initial_heap".into(), Value::from(opts.initial_heap));
        }
        doc.config = config;
        doc.personality = Hex(h.syscall(h.nr.personality, &[0xffff_ffff])? & 0xffff_ffff);
        doc.rlimits = rlimits(h.child.id());
        doc.auxv = parse_auxv(&h.read_file(3)?, opts.arch);
        doc.stat = parse_stat(&String::from_utf8_lossy(&h.read_file(2)?));
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
