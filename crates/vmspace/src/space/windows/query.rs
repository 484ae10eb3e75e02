//! VirtualQuery (W12): the maximal run of pages from the queried one with the same state,
//! protection and allocation.

use super::{MemState, RegionInfo, WinError, WinProt, MEM_MAPPED, MEM_PRIVATE, PAGE};
use crate::space::vma::flags::VM_SHARED;
use crate::space::AddressSpace;

impl AddressSpace {
    /// VirtualQuery(addr). In a reservation: the run of identical pages from `addr`'s page
    /// to the next change within the reservation. Free (no reservation, no VMA): the free
    /// run up to the next reservation or VMA (or TASK_SIZE), State MEM_FREE, Protect
    /// PAGE_NOACCESS, AllocationBase 0. A Linux mapping outside any reservation reports as
    /// committed, AllocationBase = where its VMA (or the part of it above a reservation) starts, Protect from its PROT_* bits, Type
    /// MEM_MAPPED (shared or file) or MEM_PRIVATE, up to the VMA's end. At or above
    /// TASK_SIZE: ERROR_INVALID_PARAMETER.
    pub fn virtual_query(&self, addr: u64) -> Result<RegionInfo, WinError> {
        let top = self.win_top();
        if addr >= top {
            return Err(WinError::InvalidParameter);
        }
        let page = addr & !(PAGE - 1);
        if let Some(a) = self.win.containing(page) {
            let (_, end, e) = a.run_at((page - a.base) / PAGE);
            let (state, protect) = if e.is_committed() {
                (MemState::Commit, e.prot())
            } else {
                (MemState::Reserve, WinProt::NONE)
            };
            return Ok(RegionInfo {
                base_address: page,
                allocation_base: a.base,
                allocation_protect: a.alloc_protect,
                region_size: a.base + end * PAGE - page,
                state,
                protect,
                mem_type: MEM_PRIVATE,
            });
        }
        let next_res = self.win.first_above(page).map_or(top, |a| a.base);
        match self.tree.find(page) {
            Some(v) if v.start <= page => {
                // A VMA may have merged with a reservation's below it: the Linux part
                // starts where that reservation ends.
                let start = match self.win.last_below(page) {
                    Some(a) if a.end() > v.start => a.end(),
                    _ => v.start,
                };
                let prot = WinProt::from_linux(v.flags);
                let shared = v.flags & VM_SHARED != 0 || v.has_file();
                Ok(RegionInfo {
                    base_address: page,
                    allocation_base: start,
                    allocation_protect: prot,
                    region_size: v.end.min(next_res) - page,
                    state: MemState::Commit,
                    protect: prot,
                    mem_type: if shared { MEM_MAPPED } else { MEM_PRIVATE },
                })
            }
            next => {
                let end = next.map_or(top, |v| v.start.min(top)).min(next_res);
                Ok(RegionInfo {
                    base_address: page,
                    allocation_base: 0,
                    allocation_protect: WinProt::NONE,
                    region_size: end - page,
                    state: MemState::Free,
                    protect: WinProt::NOACCESS,
                    mem_type: 0,
                })
            }
        }
    }
}
