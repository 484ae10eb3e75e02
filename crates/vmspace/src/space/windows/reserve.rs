//! VirtualAlloc (W4–W7): reserving a 64 KiB-aligned range, with or without committing it,
//! and where a reservation lands.

use super::table::Allocation;
use super::{AllocKind, WinError, WinProt, GRANULARITY, LOWEST_ADDRESS, PAGE};
use crate::space::abi::{MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PROT_NONE};
use crate::space::AddressSpace;

impl AddressSpace {
    /// VirtualAlloc(lpAddress, dwSize, flAllocationType, flProtect).
    ///
    /// - MEM_RESERVE (with or without MEM_COMMIT): without an address the size is rounded
    ///   up to pages and the lowest 64 KiB-aligned free range that fits is taken (the
    ///   highest with MEM_TOP_DOWN), W4; with one the base is the address rounded down to
    ///   64 KiB and the range covers every page touching `[addr, addr + size)`, all of which
    ///   must be free (no reservation, no Linux mapping), else ERROR_INVALID_ADDRESS (W5).
    ///   MEM_COMMIT as well commits the whole range (charged first, W6).
    /// - MEM_COMMIT alone: with an address, commits the pages touching the range, which
    ///   must lie in one reservation (W6); without one, reserves and commits (W7).
    ///
    /// Returns the base (reserve) or the first committed page (commit). Zero size, unknown
    /// flags, neither RESERVE nor COMMIT, a bad protection, or a range reaching outside
    /// `[64 KiB, TASK_SIZE)` give ERROR_INVALID_PARAMETER; no room gives
    /// ERROR_NOT_ENOUGH_MEMORY; going over the commit limit ERROR_COMMITMENT_LIMIT. On error
    /// nothing changed.
    pub fn virtual_alloc(
        &mut self,
        addr: Option<u64>,
        size: u64,
        kind: AllocKind,
        prot: WinProt,
    ) -> Result<u64, WinError> {
        let known = AllocKind::RESERVE | AllocKind::COMMIT | AllocKind::TOP_DOWN;
        if size == 0 || kind.0 & !known.0 != 0 || kind.0 & (known.0 & !AllocKind::TOP_DOWN.0) == 0 {
            return Err(WinError::InvalidParameter);
        }
        prot.validate()?;
        let commit = kind.contains(AllocKind::COMMIT);
        if !kind.contains(AllocKind::RESERVE) {
            if let Some(a) = addr {
                // W6: commit inside an existing reservation.
                return self.commit(a, size, prot);
            }
        }
        // W4/W5/W7: a new reservation.
        let (base, len) = match addr {
            None => {
                let len = size
                    .checked_add(PAGE - 1)
                    .ok_or(WinError::NotEnoughMemory)?
                    & !(PAGE - 1);
                let base = self
                    .win_find_base(len, kind.contains(AllocKind::TOP_DOWN))
                    .ok_or(WinError::NotEnoughMemory)?;
                (base, len)
            }
            Some(a) => {
                let base = a & !(GRANULARITY - 1);
                let (_, end) = super::page_span(a, size).ok_or(WinError::InvalidParameter)?;
                if base < LOWEST_ADDRESS || end > self.win_top() {
                    return Err(WinError::InvalidParameter);
                }
                if self.tree.intersecting(base, end).is_some() || self.win.intersects(base, end) {
                    return Err(WinError::InvalidAddress);
                }
                (base, end - base)
            }
        };
        if commit && !self.win_charge_ok(len / PAGE) {
            return Err(WinError::CommitmentLimit);
        }
        // W20: a PROT_NONE private anonymous mapping, not MAP_NORESERVE.
        let got = self
            .mmap(
                base,
                len,
                PROT_NONE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                None,
                0,
            )
            .map_err(WinError::from_errno)?;
        debug_assert_eq!(got, base);
        let bits = self.win_bits();
        self.win.insert(Allocation::new(base, len, prot), bits);
        if commit {
            if let Err(e) = self.win_commit_pages(base, 0, len / PAGE, prot) {
                let _ = self.release(base, 0);
                return Err(e);
            }
        }
        Ok(base)
    }

    /// Reserves `size` bytes (MEM_RESERVE, PAGE_READWRITE as AllocationProtect, the common
    /// idiom) at `addr`
    /// (rounded down to 64 KiB) or wherever fits (`top_down`: the highest fit).
    pub fn reserve(
        &mut self,
        addr: Option<u64>,
        size: u64,
        top_down: bool,
    ) -> Result<u64, WinError> {
        let kind = if top_down {
            AllocKind::RESERVE | AllocKind::TOP_DOWN
        } else {
            AllocKind::RESERVE
        };
        self.virtual_alloc(addr, size, kind, WinProt::READWRITE)
    }

    /// The top of the range reservations may use: TASK_SIZE.
    pub(crate) fn win_top(&self) -> u64 {
        self.layout.task_size
    }

    /// Address width for the segment map.
    pub(crate) fn win_bits(&self) -> u32 {
        let top = self.win_top().saturating_sub(1);
        (64 - top.leading_zeros()).max(32)
    }

    /// W4: a 64 KiB-aligned base for `len` bytes in `[max(64 KiB, mmap_min_addr), TASK_SIZE)`
    /// through the space's gap search (guard gaps below stacks respected): the lowest fit,
    /// or the highest with `top_down`. Exact: a gap that holds `len` once aligned is found
    /// even when it is smaller than `len + 64 KiB` (Linux's padded search would skip it);
    /// each retry moves past one gap that does not, and after [`EXACT_TRIES`] of those the
    /// padded search (one O(log n) descent) finishes.
    pub(crate) fn win_find_base(&self, len: u64, top_down: bool) -> Option<u64> {
        let mask = GRANULARITY - 1;
        let mut low = self.min_addr().max(LOWEST_ADDRESS).checked_add(mask)? & !mask;
        let mut high = self.win_top();
        if len == 0 || len > high.saturating_sub(low) {
            return None;
        }
        let floor = low;
        let fits = |a: u64| {
            a >= floor
                && a.checked_add(len).is_some_and(|e| e <= self.win_top())
                && match self.tree.find(a) {
                    None => true,
                    Some(v) => a + len <= self.vm_start_gap(v),
                }
        };
        for _ in 0..EXACT_TRIES {
            if top_down {
                let s = self.search_topdown(low, high, len, 0)?;
                let a = s & !mask;
                if fits(a) {
                    return Some(a);
                }
                high = a.checked_add(len - 1)?.min(high - 1);
            } else {
                let s = self.search_bottomup(low, high, len, 0)?;
                let a = s.checked_add(mask)? & !mask;
                if fits(a) {
                    return Some(a);
                }
                low = a;
            }
            if high <= low {
                return None;
            }
        }
        let got = if top_down {
            self.search_topdown(low, high, len, mask)?
        } else {
            self.search_bottomup(low, high, len, mask)?
        };
        (got >= low && got % GRANULARITY == 0 && got.checked_add(len)? <= high).then_some(got)
    }
}

/// Gaps the exact aligned search tries before falling back to the padded one.
const EXACT_TRIES: u32 = 32;
