//! What an address space needs to know about its task and system: ABI, limits, sysctls.

/// Which kind of task owns the space (decides task size and the syscall ABI, L1–L5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// A 64-bit task on x86-64 (4-level paging, TASK_SIZE 0x7ffffffff000).
    X86_64,
    /// An i386 binary on a 64-bit kernel (TIF_ADDR32, TASK_SIZE 0xFFFFE000, 32-bit syscalls).
    Compat32,
    /// A native i386 kernel with the classic 3G/1G split (TASK_SIZE 0xC0000000).
    I386Native,
}

/// Configuration of an [`super::AddressSpace`]; `u64::MAX` as an rlimit means unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceConfig {
    pub kind: TaskKind,
    /// Bottom-up layout (ADDR_COMPAT_LAYOUT or vm.legacy_va_layout, L1).
    pub legacy_layout: bool,
    /// vm.mmap_min_addr (dac_mmap_min_addr): below it MAP_FIXED needs CAP_SYS_RAWIO.
    pub mmap_min_addr: u64,
    /// CONFIG_LSM_MMAP_MIN_ADDR (65536 on the reference). The kernel's effective
    /// `mmap_min_addr` — hint rounding, search floor, stack growth floor — is the larger of
    /// this and `mmap_min_addr`, even when no LSM is active.
    pub lsm_mmap_min_addr: u64,
    pub rlimit_stack: u64,
    pub rlimit_data: u64,
    pub rlimit_as: u64,
    pub rlimit_memlock: u64,
    /// vm.overcommit_memory (0 guess, 1 always, 2 never).
    pub overcommit_memory: u32,
    /// vm.overcommit_ratio (percent, mode 2 only).
    pub overcommit_ratio: u64,
    /// vm.max_map_count.
    pub max_map_count: u64,
    /// CAP_SYS_RAWIO: may map below mmap_min_addr.
    pub cap_sys_rawio: bool,
    /// CAP_IPC_LOCK: mlock ignores RLIMIT_MEMLOCK.
    pub cap_ipc_lock: bool,
    /// Personality READ_IMPLIES_EXEC.
    pub read_implies_exec: bool,
    /// CONFIG_TRANSPARENT_HUGEPAGE (2 MiB alignment of anonymous mappings, P3; MAP_STACK flag).
    pub thp: bool,
    /// CONFIG_KSM (MADV_MERGEABLE accepted).
    pub ksm: bool,
    pub total_ram_pages: u64,
    pub total_swap_pages: u64,
    /// stack_guard_gap in bytes (256 pages by default).
    pub stack_guard_gap: u64,
    /// RLIMIT_STACK captured at exec (decides mmap_base, L3); `None` = same as `rlimit_stack`.
    pub exec_rlimit_stack: Option<u64>,
}

impl SpaceConfig {
    /// Linux defaults for a root task: 8 MiB stack, 8 MiB memlock, data/as unlimited,
    /// mmap_min_addr 65536, max_map_count 65530, overcommit guess, THP and KSM built in.
    pub fn linux_default(kind: TaskKind) -> Self {
        SpaceConfig {
            kind,
            legacy_layout: false,
            mmap_min_addr: 65536,
            lsm_mmap_min_addr: 65536,
            rlimit_stack: 8 << 20,
            rlimit_data: u64::MAX,
            rlimit_as: u64::MAX,
            rlimit_memlock: 8 << 20,
            overcommit_memory: 0,
            overcommit_ratio: 50,
            max_map_count: 65530,
            cap_sys_rawio: true,
            cap_ipc_lock: true,
            read_implies_exec: false,
            thp: true,
            ksm: true,
            total_ram_pages: (16u64 << 30) >> 12,
            total_swap_pages: 0,
            stack_guard_gap: 256 << 12,
            exec_rlimit_stack: None,
        }
    }
}
