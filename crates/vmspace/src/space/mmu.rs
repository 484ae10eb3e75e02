//! The seam through which space operations tell a page-table backend which page contents
//! they dropped or moved, so that page tables follow the VMAs.
//!
//! The space's content model ([`super::touch::Memory`]) is told at exactly the points where
//! Linux zaps or moves page-table entries (munmap, MAP_FIXED replacement, brk and mremap
//! shrinks, MADV_DONTNEED/REMOVE/GUARD_INSTALL, mremap moves). When a backend enables the
//! log with [`super::AddressSpace::set_mmu_log`], each of those points also records an
//! [`MmuEvent`]; the backend drains them after the operation with
//! [`super::AddressSpace::take_mmu_events`] and applies them in order. Protection changes
//! are not logged: the backend re-derives entry rights over the range it asked to change.

use alloc::vec::Vec;

/// One page-table change a space operation implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuEvent {
    /// Every mapped page in `[start, end)` goes (its frame reference is dropped).
    Zap { start: u64, end: u64 },
    /// The pages of `[old, old + len)` move to `[new, new + len)` (mremap); a `Zap` of the
    /// destination precedes it when something was there.
    Move { old: u64, new: u64, len: u64 },
    /// Pages `first..first + count` of shared object `obj` (space-local id) were punched out
    /// of the object itself (MADV_REMOVE): every mapping of them, in any process, goes.
    Punch { obj: u64, first: u64, count: u64 },
    /// `[start, end)` was populated (__mm_populate / populate_vma_page_range): every page is
    /// faulted in, as a write if `write` (a writable private VMA) and a read otherwise.
    Populate { start: u64, end: u64, write: bool },
}

/// A page-table backend's part in an mremap move, called where Linux runs
/// move_page_tables (X7) with `(pending, old, new, len)`: it first applies `pending` (the
/// events the operation recorded so far, oldest first: the destination's unmapping among
/// them), then moves every entry of `[old, old + len)` to `[new, new + len)`, all or none.
/// `false` means nothing moved because a page-table frame for the destination could not be
/// had; the space then fails the mremap with ENOMEM as Linux does. After `true` the space
/// records no `Move` for this range: the entries are already there.
pub type PageMover<'a> = &'a mut dyn FnMut(Vec<MmuEvent>, u64, u64, u64) -> bool;

/// The event log kept by the content model; disabled (and empty) unless a backend asks.
#[derive(Clone, Debug, Default)]
pub struct MmuLog {
    enabled: bool,
    events: Vec<MmuEvent>,
}

impl MmuLog {
    /// Records `e` if enabled.
    #[inline]
    pub(crate) fn push(&mut self, e: MmuEvent) {
        if self.enabled {
            self.events.push(e);
        }
    }

    /// How many events are recorded (a mark for [`MmuLog::truncate`]).
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Forgets the events recorded after `mark`.
    pub(crate) fn truncate(&mut self, mark: usize) {
        self.events.truncate(mark);
    }
}

impl super::AddressSpace {
    /// Starts (`true`) or stops recording [`MmuEvent`]s. Stopping drops pending events.
    pub fn set_mmu_log(&mut self, on: bool) {
        self.mem.log.enabled = on;
        if !on {
            self.mem.log.events.clear();
        }
    }

    /// The events recorded since the last call, oldest first.
    pub fn take_mmu_events(&mut self) -> Vec<MmuEvent> {
        core::mem::take(&mut self.mem.log.events)
    }
}
