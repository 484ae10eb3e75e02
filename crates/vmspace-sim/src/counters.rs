//! What the simulated machine counts.

use vmspace::fault::Resolved;
use vmspace::space::{FaultCode, Signal};

/// Event counters of a [`Machine`](crate::Machine) since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Faults that mapped the shared zero page (A2).
    pub zero_page_maps: u64,
    /// Faults that allocated a zeroed frame for an untouched page (A3).
    pub demand_zero: u64,
    /// Writes to the zero page that allocated a zeroed frame (A4).
    pub cow_zero: u64,
    /// Copy-on-write faults that copied a shared frame (A4).
    pub cow_copies: u64,
    /// Copy-on-write faults that reused an exclusive frame in place (A4).
    pub cow_reuses: u64,
    /// Faults that mapped a page cache page (files, shared memory).
    pub page_cache: u64,
    /// First writes to private file pages (copied out of the page cache).
    pub file_copies: u64,
    /// Faults with nothing to do (stale TLB) or that only re-derived rights.
    pub spurious: u64,
    /// Faults that grew a stack VMA (S4).
    pub stack_growths: u64,
    /// SIGSEGV with SEGV_MAPERR.
    pub segv_maperr: u64,
    /// SIGSEGV with SEGV_ACCERR.
    pub segv_accerr: u64,
    /// SIGBUS.
    pub sigbus: u64,
    /// Faults that found no frame.
    pub out_of_memory: u64,
    /// Processes the OOM killer ended.
    pub oom_kills: u64,
    /// Stack overflows detected (any style).
    pub stack_overflows: u64,
    /// Reserve/commit stack pages committed on a guard-page touch (W18).
    pub guard_commits: u64,
    /// STATUS_GUARD_PAGE_VIOLATION raised by the fault layer (W15), consumed by stack
    /// growth or not.
    pub guard_page_violations: u64,
    /// STATUS_ACCESS_VIOLATION in reservations (W13).
    pub access_violations: u64,
    pub tlb_hits: u64,
    pub tlb_misses: u64,
}

impl Counters {
    /// Counts a resolved fault.
    pub(crate) fn resolved(&mut self, r: Resolved) {
        match r {
            Resolved::ZeroPage => self.zero_page_maps += 1,
            Resolved::DemandZero => self.demand_zero += 1,
            Resolved::CowZero => self.cow_zero += 1,
            Resolved::CowCopy => self.cow_copies += 1,
            Resolved::CowReuse => self.cow_reuses += 1,
            Resolved::PageCache => self.page_cache += 1,
            Resolved::FileCopy => self.file_copies += 1,
            Resolved::Spurious | Resolved::Upgrade => self.spurious += 1,
        }
    }

    /// Counts a Windows exception.
    pub(crate) fn exception(&mut self, c: vmspace::fault::ExceptionCode) {
        match c {
            vmspace::fault::ExceptionCode::GuardPage => self.guard_page_violations += 1,
            _ => self.access_violations += 1,
        }
    }

    /// Counts a signal.
    pub(crate) fn signal(&mut self, s: Signal, c: FaultCode) {
        match (s, c) {
            (Signal::Bus, _) => self.sigbus += 1,
            (_, FaultCode::SegvMaperr) => self.segv_maperr += 1,
            _ => self.segv_accerr += 1,
        }
    }

    /// All faults handled (resolved or not).
    pub fn faults(&self) -> u64 {
        self.zero_page_maps
            + self.demand_zero
            + self.cow_zero
            + self.cow_copies
            + self.cow_reuses
            + self.page_cache
            + self.file_copies
            + self.spurious
            + self.segv_maperr
            + self.segv_accerr
            + self.sigbus
            + self.out_of_memory
            + self.guard_page_violations
            + self.access_violations
    }
}
