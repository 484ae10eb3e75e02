//! The real kernel's calls the benchmarks' `linux` peers make, with errors in words, and
//! this thread's CPU clock.

/// `what: ` and the last OS error.
pub fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A fresh anonymous mapping of `len` bytes with no hint; returns its address.
#[inline]
pub fn mmap(len: u64, prot: u64, flags: u64) -> Result<u64, String> {
    // SAFETY: a fresh anonymous mapping with no hint never replaces existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            prot as i32,
            flags as i32,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_err("mmap"));
    }
    Ok(p as u64)
}

/// munmap. Callers pass only ranges they mapped themselves.
#[inline]
pub fn munmap(addr: u64, len: u64) -> Result<(), String> {
    // SAFETY: callers unmap only ranges their benchmark mapped and no longer accesses.
    check(
        unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) },
        "munmap",
    )
}

/// mprotect. Callers pass only ranges they mapped themselves.
#[inline]
pub fn mprotect(addr: u64, len: u64, prot: u64) -> Result<(), String> {
    // SAFETY: callers reprotect only ranges their benchmark mapped; no reference points
    // into them.
    check(
        unsafe { libc::mprotect(addr as *mut libc::c_void, len as usize, prot as i32) },
        "mprotect",
    )
}

/// madvise. Callers pass only ranges they mapped themselves.
#[inline]
pub fn madvise(addr: u64, len: u64, advice: i32) -> Result<(), String> {
    // SAFETY: callers advise only on ranges their benchmark mapped (DONTNEED drops only
    // their own pages).
    check(
        unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, advice) },
        "madvise",
    )
}

fn check(r: i32, what: &str) -> Result<(), String> {
    if r != 0 {
        return Err(os_err(what));
    }
    Ok(())
}

/// Nanoseconds of CPU time this thread has used (kernel time of its syscalls included).
pub fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported
    // on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// The CPU time `f` takes on this thread, in nanoseconds.
pub fn cpu_time_ns(f: impl FnOnce()) -> u128 {
    let t = thread_cpu_ns();
    f();
    thread_cpu_ns() - t
}
