//! A simulated machine over `vmspace`: RAM of a chosen size with the buddy allocator, a CPU
//! whose loads, stores and instruction fetches go through a software TLB tagged by address
//! space, processes (x86-64 or i386 page tables) with threads sharing their space, fork with
//! copy-on-write, thread stacks in pthread and reserve/commit styles, kernel stacks in the
//! kernel half, stack-overflow detection and an OOM killer. The OOM killer runs wherever a
//! frame allocation fails, as Linux's page allocator runs it for GFP_KERNEL allocations:
//! page faults, and system calls that need frames (mremap's destination page tables,
//! MAP_POPULATE / mlock / MADV_POPULATE_* populating, fork's copy, kernel stacks); the
//! allocation is retried, and a caller chosen as the victim ends (`Stop::OomKilled`,
//! `SimError::OomKilled`). ENOMEM for want of address space kills nobody.
//!
//! An access: TLB hit -> translate; miss -> walk the real page tables in emulated RAM; not
//! present or not allowed -> the `vmspace::fault` handler -> retry. Everything is counted
//! ([`Counters`]); [`Machine::check`] verifies the frame and RSS invariants.

pub mod counters;
#[cfg(feature = "heap")]
pub mod heap_source;
pub mod machine;
pub mod oom;
pub mod process;
pub mod thread;
pub mod tlb;

pub use counters::Counters;
pub use machine::{Machine, MachinePhys, OverflowPolicy, SimError, Stop};
pub use oom::OomReport;
pub use process::{AnyMm, ArchKind, Pid, Process, ProcessEnd};
pub use thread::{Stack, StackStyle, Thread, ThreadEnd, Tid};
pub use tlb::{AsidTlb, SoftTlb};
pub use vmspace::fault::Access;
