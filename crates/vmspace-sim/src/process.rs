//! Processes: an address space with its page table, of either architecture.

use vmspace::arch::{I386, X86_64};
use vmspace::fault::Mm;

/// Process id.
pub type Pid = u32;

/// The MMU a process runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchKind {
    /// 4-level x86-64 paging, a 64-bit task.
    X86_64,
    /// 2-level i386 paging, a native 3G/1G task.
    I386,
}

/// An address space of either architecture.
#[derive(Debug)]
pub enum AnyMm {
    X86_64(Mm<X86_64>),
    I386(Mm<I386>),
}

/// Runs `$body` with `$m` bound to the `Mm` inside an [`AnyMm`], whatever its architecture.
#[macro_export]
macro_rules! with_mm {
    ($any:expr, $m:ident => $body:expr) => {
        match $any {
            $crate::AnyMm::X86_64($m) => $body,
            $crate::AnyMm::I386($m) => $body,
        }
    };
}

/// Why a process is no longer running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEnd {
    /// It exited (or was ended by the caller).
    Exited,
    /// The OOM killer chose it.
    OomKilled,
    /// A stack overflow ended it (policy [`OverflowPolicy::KillProcess`](crate::OverflowPolicy)).
    StackOverflow,
}

/// One process.
#[derive(Debug)]
pub struct Process {
    pub pid: Pid,
    pub arch: ArchKind,
    /// Address-space id tagging its TLB entries.
    pub asid: u16,
    pub(crate) mm: AnyMm,
    /// Its threads, in creation order.
    pub threads: Vec<crate::Tid>,
}

impl Process {
    /// The address space.
    pub fn mm(&self) -> &AnyMm {
        &self.mm
    }

    /// The VMAs.
    pub fn space(&self) -> &vmspace::space::AddressSpace {
        with_mm!(&self.mm, m => m.space())
    }

    /// Resident pages.
    pub fn rss(&self) -> vmspace::fault::Rss {
        with_mm!(&self.mm, m => m.rss())
    }

    /// Page-table pages.
    pub fn table_pages(&self) -> u64 {
        with_mm!(&self.mm, m => m.page_table().table_pages())
    }
}
