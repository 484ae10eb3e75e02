//! The OOM killer's report.

use crate::process::Pid;
use vmspace::fault::Rss;

/// One OOM kill: who faulted, who was chosen and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomReport {
    /// The process chosen (largest RSS + page-table pages, as oom_badness).
    pub victim: Pid,
    /// The process whose fault or system call found no frame (for a process being created,
    /// the pid it gets).
    pub faulting: Pid,
    /// The faulting address, or the address the system call was working on (0 if none).
    pub addr: u64,
    /// The system call whose allocation found no frame (`"mremap"`, `"fork"`, …); `None`
    /// for a page fault.
    pub call: Option<&'static str>,
    /// The victim's resident pages when chosen.
    pub victim_rss: Rss,
    /// Its badness points (pages).
    pub points: u64,
    /// Frames free once the victim's memory was returned.
    pub frames_free_after: u64,
}

impl core::fmt::Display for OomReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Out of memory: killed process {} (anon-rss:{}kB, file-rss:{}kB, shmem-rss:{}kB, \
             points {}) on {} of process {} at {:#x}; {} frames free after",
            self.victim,
            self.victim_rss.anon * 4,
            self.victim_rss.file * 4,
            self.victim_rss.shmem * 4,
            self.points,
            self.call.unwrap_or("a fault"),
            self.faulting,
            self.addr,
            self.frames_free_after
        )
    }
}
