//! Address-space layout chosen at exec: task size, mmap_base, legacy base (L1–L5, L15).

use super::config::{SpaceConfig, TaskKind};

/// x86-64 TASK_SIZE_MAX / DEFAULT_MAP_WINDOW on 4-level paging.
pub const TASK_SIZE_64: u64 = 0x7fff_ffff_f000;
/// IA32_PAGE_OFFSET: task size of a compat task on a 64-bit kernel.
pub const TASK_SIZE_COMPAT: u64 = 0xffff_e000;
/// PAGE_OFFSET of a native i386 3G/1G kernel.
pub const TASK_SIZE_I386: u64 = 0xc000_0000;
/// MAP_32BIT window of 64-bit syscalls (P11).
pub const MAP_32BIT_BEGIN: u64 = 0x4000_0000;
pub const MAP_32BIT_END: u64 = 0x8000_0000;

/// The layout of one task, fixed at exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// TASK_SIZE for this task's syscalls.
    pub task_size: u64,
    /// Top-down search start (mm->mmap_base, or the compat base for 32-bit syscalls).
    pub mmap_base: u64,
    /// Bottom-up start (mm->mmap_legacy_base).
    pub mmap_legacy_base: u64,
    /// MMF_TOPDOWN.
    pub topdown: bool,
    /// Syscalls are 32-bit (in_32bit_syscall / native i386).
    pub is32: bool,
    /// Native i386 kernel: generic get_unmapped_area (no x86-64 sys_x86_64.c).
    pub generic: bool,
    /// Top of the initial stack (L15).
    pub stack_top: u64,
}

/// `__TASK_UNMAPPED_BASE(ts)` = PAGE_ALIGN(ts / 3) (L5).
pub fn unmapped_base(task_size: u64) -> u64 {
    (task_size / 3 + 0xfff) & !0xfff
}

/// `mmap_base()` of arch/x86/mm/mmap.c with randomization off (L4).
pub fn mmap_base(task_size: u64, rlimit_stack: u64, guard_gap: u64) -> u64 {
    let mut gap = rlimit_stack;
    let pad = guard_gap; // stack_maxrandom_size() is 0 without PF_RANDOMIZE
    if gap.wrapping_add(pad) > gap {
        gap += pad;
    }
    let gap_min = 128 << 20;
    let gap_max = (task_size / 6) * 5;
    let gap = gap.clamp(gap_min, gap_max);
    (task_size - gap + 0xfff) & !0xfff
}

impl Layout {
    /// Computes the layout for `cfg` (L1–L5).
    pub fn new(cfg: &SpaceConfig) -> Layout {
        let stack = cfg.exec_rlimit_stack.unwrap_or(cfg.rlimit_stack);
        let task_size = match cfg.kind {
            TaskKind::X86_64 => TASK_SIZE_64,
            TaskKind::Compat32 => TASK_SIZE_COMPAT,
            TaskKind::I386Native => TASK_SIZE_I386,
        };
        Layout {
            task_size,
            mmap_base: mmap_base(task_size, stack, cfg.stack_guard_gap),
            mmap_legacy_base: unmapped_base(task_size),
            topdown: !cfg.legacy_layout,
            is32: cfg.kind != TaskKind::X86_64,
            generic: cfg.kind == TaskKind::I386Native,
            stack_top: task_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(kind: TaskKind, stack: u64) -> u64 {
        let mut c = SpaceConfig::linux_default(kind);
        c.rlimit_stack = stack;
        Layout::new(&c).mmap_base
    }

    #[test]
    fn l4_worked_values() {
        // L4: values given in linux-mm.md section 1.3.
        assert_eq!(base(TaskKind::X86_64, 8 << 20), 0x7fff_f7ff_f000);
        assert_eq!(base(TaskKind::X86_64, 127 << 20), 0x7fff_f7ff_f000);
        assert_eq!(base(TaskKind::X86_64, 200 << 20), 0x7fff_f36f_f000);
        assert_eq!(base(TaskKind::X86_64, 1 << 30), 0x7fff_bfef_f000);
        assert_eq!(base(TaskKind::X86_64, u64::MAX), 0x1555_5555_6000);
        assert_eq!(base(TaskKind::Compat32, 8 << 20), 0xf7ff_e000);
        assert_eq!(base(TaskKind::Compat32, u64::MAX), 0x2aaa_b000);
        assert_eq!(base(TaskKind::I386Native, 8 << 20), 0xb800_0000);
    }

    #[test]
    fn l5_legacy_bases() {
        assert_eq!(unmapped_base(TASK_SIZE_64), 0x2aaa_aaaa_b000);
        assert_eq!(unmapped_base(TASK_SIZE_COMPAT), 0x5555_5000);
        assert_eq!(unmapped_base(TASK_SIZE_I386), 0x4000_0000);
    }

    #[test]
    fn l1_l2_layout_choice() {
        let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
        c.rlimit_stack = u64::MAX;
        // L2: unlimited stack does not switch x86 to legacy.
        assert!(Layout::new(&c).topdown);
        c.legacy_layout = true;
        assert!(!Layout::new(&c).topdown);
    }
}
