//! Per-mm counters and limits: total/data/stack/exec/locked VM, commit charge, rlimits
//! (RLIMIT_AS, RLIMIT_DATA, RLIMIT_MEMLOCK, RLIMIT_STACK), overcommit (2.8, 2.9).

use super::vma::{flags::*, is_data_mapping, is_exec_mapping, is_stack_mapping, Vma};
use super::AddressSpace;

/// Counters in pages, as mm_struct keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    pub total_vm: u64,
    pub data_vm: u64,
    pub exec_vm: u64,
    pub stack_vm: u64,
    pub locked_vm: u64,
    /// Pages charged to the commit counter (VM_ACCOUNT mappings, stack growth).
    pub committed: u64,
}

impl AddressSpace {
    /// vm_stat_account: adds (or with `neg`, removes) `pages` of a mapping with `flags`.
    pub(crate) fn vm_stat_account(&mut self, flags: u64, pages: u64, neg: bool) {
        let a = &mut self.acct;
        let upd = |x: &mut u64| {
            *x = if neg {
                x.saturating_sub(pages)
            } else {
                x.saturating_add(pages)
            }
        };
        upd(&mut a.total_vm);
        if is_exec_mapping(flags) {
            upd(&mut a.exec_vm);
        } else if is_stack_mapping(flags) {
            upd(&mut a.stack_vm);
        } else if is_data_mapping(flags) {
            upd(&mut a.data_vm);
        }
    }

    /// Releases what a VMA being unmapped holds: total/data/… VM, locked_vm, commit charge.
    pub(crate) fn acct_unmap(&mut self, v: &Vma) {
        self.vm_stat_account(v.flags, v.pages(), true);
        if v.flags & VM_LOCKED != 0 {
            self.acct.locked_vm = self.acct.locked_vm.saturating_sub(v.pages());
        }
        if v.flags & VM_ACCOUNT != 0 {
            self.vm_unacct(v.pages());
        }
    }

    /// Accounts a VMA that appears (mmap, brk, snapshot).
    pub(crate) fn acct_map(&mut self, flags: u64, pages: u64) {
        self.vm_stat_account(flags, pages, false);
        if flags & VM_LOCKED != 0 {
            self.acct.locked_vm += pages;
        }
    }

    /// may_expand_vm: RLIMIT_AS on total_vm and RLIMIT_DATA on data_vm (2.8).
    pub(crate) fn may_expand_vm(&self, flags: u64, pages: u64) -> bool {
        let lim = |r: u64| if r == u64::MAX { u64::MAX } else { r >> 12 };
        if self.acct.total_vm.saturating_add(pages) > lim(self.cfg.rlimit_as) {
            return false;
        }
        if is_data_mapping(flags)
            && self.acct.data_vm.saturating_add(pages) > lim(self.cfg.rlimit_data)
        {
            return false;
        }
        true
    }

    /// __vm_enough_memory: charges `pages` to the commit counter or fails (2.9).
    pub(crate) fn vm_enough_memory(&mut self, pages: u64) -> bool {
        let ok = match self.cfg.overcommit_memory {
            1 => true,
            2 => {
                let ram = self.cfg.total_ram_pages;
                let mut allowed = ram * self.cfg.overcommit_ratio / 100 + self.cfg.total_swap_pages;
                // admin reserve is not subtracted for root (CAP_SYS_ADMIN); user reserve:
                allowed = allowed.saturating_sub((self.acct.total_vm / 32).min(32768));
                self.acct.committed.saturating_add(pages) <= allowed
            }
            _ => pages <= self.cfg.total_ram_pages + self.cfg.total_swap_pages,
        };
        if ok {
            self.acct.committed = self.acct.committed.saturating_add(pages);
        }
        ok
    }

    /// vm_unacct_memory.
    pub(crate) fn vm_unacct(&mut self, pages: u64) {
        self.acct.committed = self.acct.committed.saturating_sub(pages);
    }

    /// can_do_mlock: RLIMIT_MEMLOCK non-zero or CAP_IPC_LOCK.
    pub(crate) fn can_do_mlock(&self) -> bool {
        self.cfg.rlimit_memlock != 0 || self.cfg.cap_ipc_lock
    }

    /// mlock_future_ok: locking `bytes` more stays within RLIMIT_MEMLOCK (or CAP_IPC_LOCK).
    pub(crate) fn mlock_future_ok(&self, flags: u64, bytes: u64) -> bool {
        if flags & VM_LOCKED == 0 || self.cfg.cap_ipc_lock {
            return true;
        }
        let locked = (bytes >> 12).saturating_add(self.acct.locked_vm);
        let limit = if self.cfg.rlimit_memlock == u64::MAX {
            u64::MAX
        } else {
            self.cfg.rlimit_memlock >> 12
        };
        locked <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SpaceConfig, TaskKind};
    use super::*;

    #[test]
    fn rlimit_as_and_data() {
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.rlimit_as = 16 << 12;
        c.rlimit_data = 8 << 12;
        let s = AddressSpace::new(c);
        assert!(s.may_expand_vm(VM_READ, 16));
        assert!(!s.may_expand_vm(VM_READ, 17));
        // RLIMIT_DATA only counts private writable non-stack mappings (2.8).
        assert!(!s.may_expand_vm(VM_READ | VM_WRITE, 9));
        assert!(s.may_expand_vm(VM_READ | VM_WRITE | VM_SHARED, 9));
    }

    #[test]
    fn overcommit_guess_fails_only_beyond_ram_plus_swap() {
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.total_ram_pages = 100;
        c.total_swap_pages = 10;
        let mut s = AddressSpace::new(c);
        assert!(s.vm_enough_memory(110));
        assert!(s.vm_enough_memory(110));
        assert!(!s.vm_enough_memory(111));
    }
}
