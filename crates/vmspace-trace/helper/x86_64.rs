//! The x86-64 Linux-backend helper: a static, allocation-free syscall server.
//!
//! Built by `build.rs` with `$RUSTC` (`#![no_std]`, `#![no_main]`, no libc) and started by
//! `vmspace_trace::linux` in a fresh process with ASLR off. It reads fixed-size requests
//! (eight little-endian `u64` words) on fd 0 and answers on fd 1; see `src/linux/protocol.rs`
//! for the request codes. Between the first and the last snapshot it only issues the
//! syscalls it is asked for plus raw `read`/`write` on the pipes: no heap, no buffered I/O,
//! so its own address space changes only through the trace's operations.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::panic::PanicInfo;

const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_OPEN: u64 = 2;
const SYS_CLOSE: u64 = 3;
const SYS_MMAP: u64 = 9;
const SYS_RT_SIGACTION: u64 = 13;
const SYS_SIGALTSTACK: u64 = 131;
const SYS_EXIT_GROUP: u64 = 231;
const SYS_FTRUNCATE: u64 = 77;
const SYS_SETGROUPS: u64 = 116;
const SYS_SETRESGID: u64 = 119;
const SYS_SETRESUID: u64 = 117;
const SYS_PRCTL: u64 = 157;
const SYS_MEMFD_CREATE: u64 = 319;

const REQ_SYSCALL: u64 = 1;
const REQ_TOUCH: u64 = 2;
const REQ_READ_FILE: u64 = 3;
const REQ_MEMFD: u64 = 4;
const REQ_DROP_PRIV: u64 = 5;
const REQ_EXIT: u64 = 6;
const REQ_MMAP: u64 = 7;

/// Raw six-argument syscall.
///
/// # Safety
/// The caller asks the kernel for an arbitrary operation; that is the helper's job.
#[inline(always)]
unsafe fn syscall6(nr: u64, a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> u64 {
    let ret: u64;
    // SAFETY: plain Linux x86-64 syscall ABI; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, in("r8") e, in("r9") f, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

fn sys(nr: u64, a: u64, b: u64, c: u64) -> u64 {
    // SAFETY: used only for read/write/open/close/... on the helper's own buffers.
    unsafe { syscall6(nr, a, b, c, 0, 0, 0) }
}

fn exit(code: u64) -> ! {
    sys(SYS_EXIT_GROUP, code, 0, 0);
    loop {}
}

fn read_exact(buf: *mut u8, len: usize) -> bool {
    let mut done = 0;
    while done < len {
        // SAFETY: buf..buf+len is a live buffer of the caller.
        let r = sys(SYS_READ, 0, unsafe { buf.add(done) } as u64, (len - done) as u64) as i64;
        if r == -4 {
            continue;
        }
        if r <= 0 {
            return false;
        }
        done += r as usize;
    }
    true
}

fn write_all(buf: *const u8, len: usize) {
    let mut done = 0;
    while done < len {
        // SAFETY: buf..buf+len is a live buffer of the caller.
        let r = sys(SYS_WRITE, 1, unsafe { buf.add(done) } as u64, (len - done) as u64) as i64;
        if r == -4 {
            continue;
        }
        if r <= 0 {
            exit(3);
        }
        done += r as usize;
    }
}

fn reply(words: &[u64; 5]) {
    write_all(words.as_ptr() as *const u8, 40);
}

// Touch probes: the first instruction of each may fault. The SIGSEGV/SIGBUS handler
// recognises the faulting RIP, records the signal, and resumes at `vmspace_touch_fault`,
// which returns 0x100 (not a byte value) to the caller. The restorer returns from the handler.
global_asm!(
    ".globl vmspace_touch_read",
    "vmspace_touch_read:",
    "movzx eax, byte ptr [rdi]",
    "ret",
    ".globl vmspace_touch_write",
    "vmspace_touch_write:",
    "mov byte ptr [rdi], sil",
    "xor eax, eax",
    "ret",
    ".globl vmspace_touch_fault",
    "vmspace_touch_fault:",
    "mov eax, 0x100",
    "ret",
    ".globl vmspace_restorer",
    "vmspace_restorer:",
    "mov eax, 15",
    "syscall",
    "ud2",
);

extern "C" {
    fn vmspace_touch_read(addr: u64) -> u64;
    fn vmspace_touch_write(addr: u64, value: u64) -> u64;
    fn vmspace_touch_fault();
    fn vmspace_restorer();
}

static mut FAULT_SIGNO: u64 = 0;
static mut FAULT_CODE: u64 = 0;
static mut FAULT_ADDR: u64 = 0;

/// Signal stack, in .bss so it is part of the before snapshot and never grows [stack].
static mut ALT_STACK: [u8; 65536] = [0; 65536];
/// Buffer for streaming /proc files.
static mut FILE_BUF: [u8; 65536] = [0; 65536];

#[repr(C)]
struct KSigaction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

const SA_SIGINFO: u64 = 4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_NODEFER: u64 = 0x4000_0000;

/// SIGSEGV/SIGBUS handler: turns a fault of a touch probe into a return of 0x100.
extern "C" fn on_fault(signo: i32, info: *const u8, uctx: *mut u8) {
    // SAFETY: the kernel passes a valid siginfo (si_code at 8, si_addr at 16) and ucontext
    // (gregs at 40, RIP = gregs[16]) for an SA_SIGINFO handler on x86-64.
    unsafe {
        let rip = uctx.add(40 + 16 * 8) as *mut u64;
        let pc = *rip;
        if pc == vmspace_touch_read as *const () as usize as u64 || pc == vmspace_touch_write as *const () as usize as u64 {
            FAULT_SIGNO = signo as u64;
            FAULT_CODE = *(info.add(8) as *const i32) as i64 as u64;
            FAULT_ADDR = *(info.add(16) as *const u64);
            *rip = vmspace_touch_fault as *const () as usize as u64;
            return;
        }
    }
    // A fault outside a probe: the helper cannot continue.
    exit(128 + signo as u64);
}

fn install_handlers() {
    let ss: [u64; 3] = [&raw mut ALT_STACK as u64, 0, 65536];
    sys(SYS_SIGALTSTACK, ss.as_ptr() as u64, 0, 0);
    let act = KSigaction {
        handler: on_fault as *const () as usize as u64,
        flags: SA_SIGINFO | SA_ONSTACK | SA_RESTORER | SA_NODEFER,
        restorer: vmspace_restorer as *const () as usize as u64,
        mask: 0,
    };
    for sig in [11u64, 7] {
        // SAFETY: act is a valid kernel sigaction for this ABI.
        unsafe { syscall6(SYS_RT_SIGACTION, sig, &act as *const KSigaction as u64, 0, 8, 0, 0) };
    }
}

fn stream_file(which: u64) {
    let path: &[u8] = match which {
        0 => b"/proc/self/maps\0",
        1 => b"/proc/self/smaps\0",
        2 => b"/proc/self/stat\0",
        _ => b"/proc/self/auxv\0",
    };
    let fd = sys(SYS_OPEN, path.as_ptr() as u64, 0o2000000, 0) as i64;
    if fd >= 0 {
        loop {
            let buf = &raw mut FILE_BUF as *mut u8;
            let r = sys(SYS_READ, fd as u64, buf as u64, 65536) as i64;
            if r == -4 {
                continue;
            }
            if r <= 0 {
                break;
            }
            let len = r as u64;
            write_all(&len as *const u64 as *const u8, 8);
            write_all(buf, r as usize);
        }
        sys(SYS_CLOSE, fd as u64, 0, 0);
    }
    let end = 0u64;
    write_all(&end as *const u64 as *const u8, 8);
}

fn serve() -> ! {
    install_handlers();
    let mut req = [0u64; 8];
    loop {
        if !read_exact(req.as_mut_ptr() as *mut u8, 64) {
            exit(0);
        }
        let mut out = [0u64; 5];
        match req[0] {
            REQ_SYSCALL => {
                // SAFETY: executing the trace's syscall is the purpose of this process.
                out[0] = unsafe { syscall6(req[1], req[2], req[3], req[4], req[5], req[6], req[7]) };
            }
            REQ_MMAP => {
                // SAFETY: as above.
                out[0] = unsafe { syscall6(SYS_MMAP, req[1], req[2], req[3], req[4], req[5], req[6]) };
            }
            REQ_TOUCH => {
                // SAFETY: FAULT_* are only written by the handler during the probe below,
                // on this single thread.
                unsafe {
                    FAULT_SIGNO = 0;
                    let v = if req[2] != 0 {
                        vmspace_touch_write(req[1], req[3])
                    } else {
                        vmspace_touch_read(req[1])
                    };
                    if v == 0x100 {
                        out = [1, 0, FAULT_SIGNO, FAULT_CODE, FAULT_ADDR];
                    } else {
                        out = [0, v & 0xff, 0, 0, 0];
                    }
                }
            }
            REQ_READ_FILE => {
                stream_file(req[1]);
                continue;
            }
            REQ_MEMFD => {
                let fd = sys(SYS_MEMFD_CREATE, b"trace\0".as_ptr() as u64, 0, 0);
                if (fd as i64) >= 0 {
                    let r = sys(SYS_FTRUNCATE, fd, req[1], 0);
                    out[0] = if (r as i64) < 0 { r } else { fd };
                } else {
                    out[0] = fd;
                }
            }
            REQ_DROP_PRIV => {
                let mut r = sys(SYS_SETGROUPS, 0, 0, 0);
                if r == 0 {
                    r = sys(SYS_SETRESGID, req[1], req[1], req[1]);
                }
                if r == 0 {
                    r = sys(SYS_SETRESUID, req[1], req[1], req[1]);
                }
                if r == 0 {
                    // PR_SET_DUMPABLE: keep /proc/self readable as before.
                    r = sys(SYS_PRCTL, 4, 1, 0);
                }
                out[0] = r;
            }
            REQ_EXIT => exit(0),
            _ => out[0] = (-22i64) as u64,
        }
        reply(&out);
    }
}

// Process entry: align the stack as a call would, then serve requests.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call vmspace_helper_main",
    "ud2",
);

#[no_mangle]
extern "C" fn vmspace_helper_main() -> ! {
    serve()
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    exit(101)
}
