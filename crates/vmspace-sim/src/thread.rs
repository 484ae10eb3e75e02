//! Threads and their stacks: the main thread's growing stack, pthread-style stacks with a
//! PROT_NONE guard, reserve/commit stacks with a moving guard and a hard guard (W17–W19),
//! and one kernel-half page of kernel stack per thread.

use crate::process::Pid;

/// Thread id.
pub type Tid = u32;

/// How a new thread's user stack is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackStyle {
    /// Linux pthread style: one private mapping of `size` bytes whose lowest `guard` bytes
    /// are PROT_NONE (glibc's guard); touching the guard is a stack overflow.
    Pthread { size: u64, guard: u64 },
    /// Windows style, on the space's reserve/commit calls: one reservation of `reserve`
    /// bytes (rounded to 64 KiB), the top `commit` bytes committed READWRITE, `guard_pages`
    /// pages below committed READWRITE|GUARD (W17). The owning thread's touch of a guard
    /// page is consumed silently: the page becomes ordinary memory and the pages below are
    /// committed as the new guard (W16, W18, counted in `guard_commits`); when the guard
    /// would reach the last page of the reservation (the hard guard), or the commit fails,
    /// the stack overflows (W19). Touching reserved memory below the guard is an access
    /// violation (`Stop::Exception`), not growth; another thread's touch of the guard page
    /// raises the guard-page exception to it (W15).
    ReserveCommit {
        reserve: u64,
        commit: u64,
        guard_pages: u64,
    },
}

impl StackStyle {
    /// The seed's reserve/commit stack: 1 MiB reserved, one page committed, two guard pages
    /// (64-bit, W17).
    pub const WINDOWS_DEFAULT: StackStyle = StackStyle::ReserveCommit {
        reserve: 1 << 20,
        commit: 4096,
        guard_pages: 2,
    };

    /// The stack CreateThread makes (W17) with the linker defaults (SizeOfStackReserve
    /// 1 MiB, SizeOfStackCommit 4 KiB, two guard pages on 64-bit): `dw_stack_size` is the
    /// commit size, or with STACK_SIZE_PARAM_IS_A_RESERVATION (`is_reservation`) the reserve;
    /// 0 means the defaults. A commit at least the default reserve makes the reserve the
    /// commit rounded up to 1 MiB; a reservation smaller than the commit likewise. A commit
    /// filling the whole reserve leaves no room for the guard and hard guard pages:
    /// [`Machine::spawn_thread`](crate::Machine::spawn_thread) refuses it with `BadStack`.
    pub fn create_thread(dw_stack_size: u64, is_reservation: bool) -> StackStyle {
        const RESERVE: u64 = 1 << 20;
        const COMMIT: u64 = 4096;
        let (mut reserve, commit) = match (dw_stack_size, is_reservation) {
            (0, _) => (RESERVE, COMMIT),
            (r, true) => (r, COMMIT),
            (c, false) => (RESERVE, c),
        };
        if commit >= reserve {
            reserve = commit.saturating_add(RESERVE - 1) & !(RESERVE - 1);
        }
        StackStyle::ReserveCommit {
            reserve,
            commit,
            guard_pages: 2,
        }
    }

    /// glibc's default: 8 MiB with one guard page.
    pub const PTHREAD_DEFAULT: StackStyle = StackStyle::Pthread {
        size: 8 << 20,
        guard: 4096,
    };
}

/// A thread's user stack as the machine tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// The process's main stack: the VM_GROWSDOWN VMA ending at `top`.
    Main { top: u64 },
    /// `[base, base + size)`, guard `[base, base + guard)`.
    Pthread { base: u64, size: u64, guard: u64 },
    /// Reservation `[base, base + reserve)`, committed `[committed, base + reserve)`, guard
    /// pages `[committed - guard_pages * 4096, committed)` (none once overflowed).
    Reserved {
        base: u64,
        reserve: u64,
        committed: u64,
        guard_pages: u64,
        overflowed: bool,
    },
}

impl Stack {
    /// Highest address + 1 of the stack (where it starts growing down from).
    pub fn top(&self) -> u64 {
        match *self {
            Stack::Main { top } => top,
            Stack::Pthread { base, size, .. } => base + size,
            Stack::Reserved { base, reserve, .. } => base + reserve,
        }
    }
}

/// Why a thread stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadEnd {
    Exited,
    /// Its stack overflowed at `addr`.
    StackOverflow {
        addr: u64,
    },
    /// Its process was ended.
    ProcessEnded(crate::ProcessEnd),
}

/// One thread.
#[derive(Clone, Debug)]
pub struct Thread {
    pub tid: Tid,
    pub pid: Pid,
    pub stack: Stack,
    /// Virtual address of its one-page kernel stack (kernel half, supervisor-only).
    pub kernel_stack: u64,
    /// `None` while running.
    pub ended: Option<ThreadEnd>,
}
