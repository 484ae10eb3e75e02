//! The helper process of the Linux backend: the embedded binaries, how they are started (ASLR
//! off, empty environment, 8 MiB stack soft limit), and the request protocol.
//!
//! The helpers (`helper/x86_64.rs`, `helper/i386.c`, `helper/glibc.c`) are allocation-free
//! syscall servers. A request is eight little-endian `u64` words `[code, args…]` on the
//! helper's stdin; the reply is five words on its stdout, except for `READ_FILE`, which streams
//! `[len][bytes]…[0]`.

use super::Arch;
use crate::doc::{parse_maps, parse_smaps, Smaps, Vma, ADDR_COMPAT_LAYOUT, ADDR_NO_RANDOMIZE};
use crate::run::{Call, Executor, Fatal, Touched};
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

    /// Creates the trace's memfd (`memfd_create("trace")` of `size` bytes).
    pub fn create_memfd(&mut self, size: u64) -> Result<(), Fatal> {
        let fd = self.request([REQ_MEMFD, size, 0, 0, 0, 0, 0, 0], "memfd setup")?[0];
        self.memfd = self
            .decode(fd)
            .map_err(|e| Fatal(format!("memfd_create failed: errno {e}")))?;
        Ok(())
    }

    /// Drops to uid/gid `id` (no supplementary groups, so no capabilities).
    pub fn drop_privileges(&mut self, id: u64) -> Result<(), Fatal> {
        let r = self.request([REQ_DROP_PRIV, id, 0, 0, 0, 0, 0, 0], "dropping privileges")?[0];
        self.decode(r)
            .map_err(|e| Fatal(format!("dropping privileges failed: errno {e}")))?;
        Ok(())
    }

    /// The helper's real uid.
    pub fn uid(&mut self) -> Result<u64, Fatal> {
        Ok(self.syscall(self.nr.getuid, &[])? & 0xffff_ffff)
    }

    /// The helper's personality (`personality(0xffffffff)` queries it).
    pub fn personality(&mut self) -> Result<u64, Fatal> {
        Ok(self.syscall(self.nr.personality, &[0xffff_ffff])? & 0xffff_ffff)
    }

    /// The helper's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The raw `/proc/self/auxv` of the helper.
    pub fn read_auxv(&mut self) -> Result<Vec<u8>, Fatal> {
        self.read_file(3)
    }

    /// The `/proc/self/stat` line of the helper.
    pub fn read_stat(&mut self) -> Result<Vec<u8>, Fatal> {
        self.read_file(2)
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
