//! The simulated machine: RAM, the CPU's access path through the TLB, processes, threads,
//! fork, exit, stack overflows and the OOM killer.

use crate::counters::Counters;
use crate::oom::OomReport;
use crate::process::{AnyMm, ArchKind, Pid, Process, ProcessEnd};
use crate::thread::{Stack, StackStyle, Thread, ThreadEnd, Tid};
use crate::tlb::{perm, AsidTlb, SoftTlb, MAX_ASID};
use crate::with_mm;
use std::collections::BTreeMap;
use vmspace::addr::{Frame, FrameRange, PhysAddr, VirtAddr, PAGE_SIZE};
use vmspace::arch::{Arch, Entry, PageFlags, I386, X86_64};
use vmspace::fault::{pte, Access, ExceptionCode, FaultError, Mm, Phys, Starved, WinException};
use vmspace::paging::PageTable;
use vmspace::phys::{EmulatedRam, FrameAllocator, OwnedBuddyAllocator, PhysMem};
use vmspace::space::abi::*;
use vmspace::space::kernel::{KernelError, KernelLayout, KernelSpace, KernelStack};
use vmspace::space::AddressSpace;
use vmspace::space::{
    AllocKind, Errno, Fault, FileRef, RegionInfo, SmapsEntry, SpaceConfig, TaskKind, WinError,
    WinProt,
};

/// Physical memory of the machine.
pub type MachinePhys = Phys<EmulatedRam, OwnedBuddyAllocator>;

/// What to end when a stack overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Only the overflowing thread stops.
    #[default]
    StopThread,
    /// The whole process ends.
    KillProcess,
}

/// Why an access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGSEGV or SIGBUS, as Linux raises it; the thread keeps running (a handler could
    /// run), nothing was ended.
    Signal(Fault),
    /// The thread's stack overflowed at `addr`; the thread (or process, by policy) ended.
    StackOverflow { addr: u64 },
    /// The OOM killer chose this process; it has ended.
    OomKilled,
    /// No frame was left and no process could be killed to free one.
    OutOfMemory,
    /// A kernel-mode access to an unmapped kernel-half address (an oops).
    KernelFault { addr: u64 },
    /// The thread or process is not running.
    NotRunning,
    /// The page tables or physical memory misbehaved (a bug).
    Internal,
    /// A Windows exception in a reservation (access violation W13, guard page W15); the
    /// thread keeps running (a handler could run). Guard pages of the thread's own
    /// reserve/commit stack never show here: they grow the stack (W16, W18).
    Exception(WinException),
}

impl Stop {
    /// The signal, if the access raised one.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Stop::Signal(f) => Some(*f),
            _ => None,
        }
    }
}

/// Errors of machine operations other than accesses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    NoSuchProcess(Pid),
    NoSuchThread(Tid),
    /// No frame for a page table, a kernel stack or a fork, and the OOM killer found no
    /// process to end (Linux would panic: "Out of memory and no killable processes").
    OutOfMemory,
    /// The call ran out of frames and the OOM killer chose the calling process: it has
    /// ended (SIGKILL; in Linux the call never returns to it).
    OomKilled,
    /// A system call failed as Linux's would.
    Errno(Errno),
    /// No address-space id is left.
    TooManyProcesses,
    /// A stack style that cannot work (e.g. commit + guard larger than the reservation).
    BadStack,
    /// RAM size not a positive multiple of 4 KiB, or too large for the address width.
    BadRam,
    /// A Windows memory call failed (VirtualAlloc, VirtualFree, VirtualProtect, …).
    Win(WinError),
    /// The shared kernel half refused (an invalid layout, no kernel-stack slot left).
    Kernel(KernelError),
}

impl From<WinError> for SimError {
    fn from(e: WinError) -> Self {
        SimError::Win(e)
    }
}

impl From<Errno> for SimError {
    fn from(e: Errno) -> Self {
        SimError::Errno(e)
    }
}

/// Where kernel stacks live: `KSTACK_BASE + tid * 2 pages` in the kernel half (a page of
/// stack above an unmapped page).
const KSTACK_BASE_64: u64 = 0xffff_c900_0000_0000;
const KSTACK_BASE_32: u64 = 0xd000_0000;
/// Tids above this have no kernel-stack slot on i386 (below the recursive window).
const MAX_TID_32: u32 = 0x17000;

/// Kernel stack entry rights: supervisor, writable, no-execute.
fn kstack_flags() -> PageFlags {
    PageFlags::PRESENT | PageFlags::WRITABLE | PageFlags::NO_EXECUTE
}

/// The simulated machine.
pub struct Machine {
    phys: MachinePhys,
    ram_frames: u64,
    tlb: SoftTlb,
    procs: BTreeMap<Pid, Process>,
    threads: BTreeMap<Tid, Thread>,
    ended: BTreeMap<Pid, ProcessEnd>,
    counters: Counters,
    oom_reports: Vec<OomReport>,
    /// What a stack overflow ends.
    pub policy: OverflowPolicy,
    next_pid: Pid,
    next_tid: Tid,
    free_asids: Vec<u16>,
    next_asid: u16,
    /// The kernel half shared by every i386 process, if the machine has one
    /// ([`Machine::with_kernel_half`]).
    kernel: Option<KernelSpace>,
}

impl Machine {
    /// A machine with `ram` bytes of RAM (a multiple of 4 KiB) at physical address 0. One
    /// frame becomes the shared zero page.
    pub fn new(ram: u64) -> Result<Self, SimError> {
        if ram == 0 || ram % PAGE_SIZE != 0 || ram > (1 << 40) {
            return Err(SimError::BadRam);
        }
        let mem = EmulatedRam::new(PhysAddr::new(0), ram).map_err(|_| SimError::BadRam)?;
        let first = Frame::from_number(0).map_err(|_| SimError::BadRam)?;
        let all = FrameRange::new(first, ram / PAGE_SIZE).map_err(|_| SimError::BadRam)?;
        let frames = OwnedBuddyAllocator::new_owned(&[all], &[]).map_err(|_| SimError::BadRam)?;
        let phys = Phys::new(mem, frames).map_err(|_| SimError::OutOfMemory)?;
        Ok(Machine {
            phys,
            ram_frames: ram / PAGE_SIZE,
            tlb: SoftTlb::default(),
            procs: BTreeMap::new(),
            threads: BTreeMap::new(),
            ended: BTreeMap::new(),
            counters: Counters::default(),
            oom_reports: Vec::new(),
            policy: OverflowPolicy::default(),
            next_pid: 1,
            next_tid: 1,
            free_asids: Vec::new(),
            next_asid: 1,
            kernel: None,
        })
    }

    /// A machine whose i386 processes share one kernel half laid out as `layout` (the
    /// 32-bit kernel's space, `vmspace::space::kernel`): every kernel page table is
    /// allocated now, every i386 process's directory points at them, and kernel stacks are
    /// one page each in the layout's kernel-stack region with an unmapped guard page
    /// below, visible in every process.
    pub fn with_kernel_half(ram: u64, layout: KernelLayout) -> Result<Self, SimError> {
        let mut m = Machine::new(ram)?;
        let k =
            KernelSpace::new(layout, &mut m.phys.mem, &mut m.phys.frames).map_err(|e| match e {
                KernelError::OutOfFrames => SimError::OutOfMemory,
                e => SimError::Kernel(e),
            })?;
        m.kernel = Some(k);
        Ok(m)
    }

    /// The shared kernel half, if the machine has one.
    pub fn kernel_half(&self) -> Option<&KernelSpace> {
        self.kernel.as_ref()
    }

    /// The address space of a new i386 process: over the shared kernel half if there is
    /// one.
    fn i386_mm(&mut self, space: AddressSpace) -> Result<Mm<I386>, vmspace::paging::MapError> {
        match &self.kernel {
            Some(k) => {
                let pt = PageTable::new_sharing(
                    k.page_table(),
                    &mut self.phys.mem,
                    &mut self.phys.frames,
                )?;
                Ok(Mm::with_page_table(space, pt))
            }
            None => Mm::with_space(I386::new(), space, &mut self.phys),
        }
    }

    /// Physical memory (bytes, frames, zero page, page cache).
    pub fn phys(&self) -> &MachinePhys {
        &self.phys
    }

    /// Mutable physical memory, e.g. to fill RAM with garbage in isolation tests.
    pub fn phys_mut(&mut self) -> &mut MachinePhys {
        &mut self.phys
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Reports of every OOM kill, oldest first.
    pub fn oom_reports(&self) -> &[OomReport] {
        &self.oom_reports
    }

    /// RAM in frames.
    pub fn ram_frames(&self) -> u64 {
        self.ram_frames
    }

    /// Frames free for allocation.
    pub fn frames_free(&self) -> u64 {
        self.phys.frames.stats().free_frames
    }

    /// Frames in use (zero page, tables, user pages, page cache, kernel stacks).
    pub fn frames_used(&self) -> u64 {
        self.phys.frames.stats().allocated_frames
    }

    /// Page-table pages of every process.
    pub fn table_pages(&self) -> u64 {
        self.procs.values().map(Process::table_pages).sum()
    }

    /// A live process.
    pub fn process(&self, pid: Pid) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// Live processes in pid order.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    /// How an ended process ended.
    pub fn process_end(&self, pid: Pid) -> Option<ProcessEnd> {
        self.ended.get(&pid).copied()
    }

    /// A thread (running or ended).
    pub fn thread(&self, tid: Tid) -> Option<&Thread> {
        self.threads.get(&tid)
    }

    fn alloc_asid(&mut self) -> Result<u16, SimError> {
        if let Some(a) = self.free_asids.pop() {
            return Ok(a);
        }
        if self.next_asid > MAX_ASID {
            return Err(SimError::TooManyProcesses);
        }
        let a = self.next_asid;
        self.next_asid += 1;
        Ok(a)
    }

    /// Starts a process of `arch` with Linux's default limits: an empty space with the
    /// main thread's stack (a 132 KiB VM_GROWSDOWN VMA ending at the stack top, growing on
    /// faults as Linux's does, S1–S4).
    pub fn spawn(&mut self, arch: ArchKind) -> Result<Pid, SimError> {
        let kind = match arch {
            ArchKind::X86_64 => TaskKind::X86_64,
            ArchKind::I386 => TaskKind::I386Native,
        };
        self.spawn_with(arch, SpaceConfig::linux_default(kind))
    }

    /// [`Machine::spawn`] with an explicit configuration (limits, sysctls).
    pub fn spawn_with(&mut self, arch: ArchKind, cfg: SpaceConfig) -> Result<Pid, SimError> {
        let asid = self.alloc_asid()?;
        // The new page table's root may need the OOM killer (on behalf of the pid to come).
        let mm = self.oom_retry(self.next_pid, None, 0, "spawn", |m| {
            match arch {
                ArchKind::X86_64 => Mm::new(X86_64, cfg.clone(), &mut m.phys).map(AnyMm::X86_64),
                ArchKind::I386 => m.i386_mm(AddressSpace::new(cfg.clone())).map(AnyMm::I386),
            }
            .map_err(|_| SimError::OutOfMemory)
        });
        let mut mm = match mm {
            Ok(m) => m,
            Err(e) => {
                self.free_asids.push(asid);
                return Err(e);
            }
        };
        let top = with_mm!(&mm, m => m.space().layout().stack_top);
        let size = 0x21000;
        let tlb = &mut AsidTlb {
            tlb: &mut self.tlb,
            asid,
        };
        let r = with_mm!(&mut mm, m => {
            let r = m.mmap(
                &mut self.phys,
                tlb,
                top - size,
                size,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN,
                None,
                0,
            );
            m.op(&mut self.phys, tlb, |s| s.set_start_stack(top - 0x100));
            r
        });
        if let Err(e) = r {
            with_mm!(mm, m => m.exit(&mut self.phys));
            self.free_asids.push(asid);
            return Err(e.into());
        }
        self.register(arch, asid, mm, top)
    }

    /// Starts a process over an existing address space (e.g. `AddressSpace::from_snapshot`
    /// of a traced process, as replay needs): no page is resident yet; the main thread's
    /// stack is the VM_GROWSDOWN VMA holding the space's stack top, if any.
    pub fn spawn_from_space(
        &mut self,
        arch: ArchKind,
        space: vmspace::space::AddressSpace,
    ) -> Result<Pid, SimError> {
        let asid = self.alloc_asid()?;
        let top = space
            .vmas()
            .filter(|v| v.flags & vmspace::space::vma::flags::VM_GROWSDOWN != 0)
            .map(|v| v.end)
            .last()
            .unwrap_or(space.layout().stack_top);
        let mm = match arch {
            ArchKind::X86_64 => Mm::with_space(X86_64, space, &mut self.phys).map(AnyMm::X86_64),
            ArchKind::I386 => self.i386_mm(space).map(AnyMm::I386),
        };
        let mm = match mm {
            Ok(m) => m,
            Err(_) => {
                self.free_asids.push(asid);
                return Err(SimError::OutOfMemory);
            }
        };
        self.register(arch, asid, mm, top)
    }

    /// Enters a process with address space `mm` under a fresh pid and gives it its main
    /// thread (stack top `top`); undoes everything if the thread cannot be created.
    fn register(
        &mut self,
        arch: ArchKind,
        asid: u16,
        mm: AnyMm,
        top: u64,
    ) -> Result<Pid, SimError> {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.procs.insert(
            pid,
            Process {
                pid,
                arch,
                asid,
                mm,
                threads: Vec::new(),
            },
        );
        // The process being created is not yet a candidate (not on Linux's task list).
        let main = self.oom_retry(pid, Some(pid), 0, "spawn", |m| {
            m.add_thread(pid, Stack::Main { top })
        });
        if let Err(e) = main {
            self.exit(pid);
            return Err(e);
        }
        Ok(pid)
    }

    /// Adds a thread with `stack` and a fresh kernel stack to `pid`.
    fn add_thread(&mut self, pid: Pid, stack: Stack) -> Result<Tid, SimError> {
        let tid = self.next_tid;
        let p = self
            .procs
            .get_mut(&pid)
            .ok_or(SimError::NoSuchProcess(pid))?;
        if let (ArchKind::I386, Some(k)) = (p.arch, self.kernel.as_mut()) {
            // The shared kernel half hands out the stack (mapped for every process).
            let st = k
                .alloc_stack(&mut self.phys.mem, &mut self.phys.frames)
                .map_err(|e| match e {
                    KernelError::OutOfFrames => SimError::OutOfMemory,
                    e => SimError::Kernel(e),
                })?;
            return Ok(self.enter_thread(pid, tid, stack, st.page));
        }
        let kva = match p.arch {
            ArchKind::X86_64 => KSTACK_BASE_64 + tid as u64 * 2 * PAGE_SIZE + PAGE_SIZE,
            ArchKind::I386 if tid < MAX_TID_32 => {
                KSTACK_BASE_32 + tid as u64 * 2 * PAGE_SIZE + PAGE_SIZE
            }
            ArchKind::I386 => return Err(SimError::TooManyProcesses),
        };
        let frame = self
            .phys
            .frames
            .allocate_zeroed(&mut self.phys.mem, 0)
            .map_err(|_| SimError::OutOfMemory)?;
        let phys = &mut self.phys;
        let r = with_mm!(&mut p.mm, m => m.page_table_mut().map(
            &mut phys.mem,
            &mut phys.frames,
            VirtAddr::new(kva),
            frame.start_address(),
            PAGE_SIZE,
            kstack_flags(),
        ));
        if r.is_err() {
            let _ = self.phys.frames.deallocate_frame(frame);
            return Err(SimError::OutOfMemory);
        }
        Ok(self.enter_thread(pid, tid, stack, kva))
    }

    /// Records thread `tid` of `pid` with its user stack and the kernel stack page `kva`.
    fn enter_thread(&mut self, pid: Pid, tid: Tid, stack: Stack, kva: u64) -> Tid {
        self.next_tid += 1;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.threads.push(tid);
        }
        self.threads.insert(
            tid,
            Thread {
                tid,
                pid,
                stack,
                kernel_stack: kva,
                ended: None,
            },
        );
        tid
    }

    /// Frees the kernel stack at `kva` in the shared kernel half and drops it from every
    /// address space's TLB entries (it was visible in all of them). `false` if the machine
    /// has no kernel half or the stack is not the process's arch's.
    fn free_shared_kernel_stack(&mut self, arch: ArchKind, kva: u64) -> bool {
        let Some(k) = self.kernel.as_mut().filter(|_| arch == ArchKind::I386) else {
            return false;
        };
        if let Ok(t) = k.translate(&self.phys.mem, kva) {
            let st = KernelStack {
                guard: kva - PAGE_SIZE,
                page: kva,
                frame: t.frame.as_u64(),
            };
            if let Ok(flush) = k.free_stack(&mut self.phys.mem, &mut self.phys.frames, st) {
                flush.ignore();
                for p in self.procs.values() {
                    self.tlb.invalidate(p.asid, kva);
                }
            }
        }
        true
    }

    /// Starts a thread in `pid` with a new stack of `style`.
    pub fn spawn_thread(&mut self, pid: Pid, style: StackStyle) -> Result<Tid, SimError> {
        let stack = match style {
            StackStyle::Pthread { size, guard } => {
                if size == 0 || guard >= size || size % PAGE_SIZE != 0 || guard % PAGE_SIZE != 0 {
                    return Err(SimError::BadStack);
                }
                let base = self.mmap(
                    pid,
                    0,
                    size,
                    PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                    None,
                    0,
                )?;
                if guard > 0 {
                    self.mprotect(pid, base, guard, PROT_NONE)?;
                }
                Stack::Pthread { base, size, guard }
            }
            StackStyle::ReserveCommit {
                reserve,
                commit,
                guard_pages,
            } => {
                // W17: the reservation is rounded to the 64 KiB granularity, the commit to pages.
                let reserve = reserve
                    .checked_next_multiple_of(0x10000)
                    .ok_or(SimError::BadStack)?;
                let commit = commit
                    .max(1)
                    .checked_next_multiple_of(PAGE_SIZE)
                    .ok_or(SimError::BadStack)?;
                let need = commit
                    .checked_add(guard_pages.saturating_mul(PAGE_SIZE))
                    .and_then(|n| n.checked_add(PAGE_SIZE))
                    .ok_or(SimError::BadStack)?;
                if need > reserve {
                    return Err(SimError::BadStack);
                }
                // W17: one reservation, the top committed READWRITE, guard pages below
                // carrying PAGE_GUARD (W20 maps these onto PROT_NONE and mprotect).
                let base =
                    self.virtual_alloc(pid, None, reserve, AllocKind::RESERVE, WinProt::READWRITE)?;
                let committed = base + reserve - commit;
                let guard = guard_pages * PAGE_SIZE;
                let r = self
                    .commit(pid, committed, commit, WinProt::READWRITE)
                    .and_then(|_| {
                        if guard == 0 {
                            return Ok(0);
                        }
                        self.commit(
                            pid,
                            committed - guard,
                            guard,
                            WinProt::READWRITE | WinProt::GUARD,
                        )
                    });
                if let Err(e) = r {
                    let _ = self.release(pid, base);
                    return Err(e);
                }
                Stack::Reserved {
                    base,
                    reserve,
                    committed,
                    guard_pages,
                    overflowed: false,
                }
            }
        };
        // The kernel stack is a GFP_KERNEL allocation: the OOM killer may run, and may choose
        // the caller (then the stack it mapped went with it).
        let t = self.oom_retry(pid, None, 0, "clone", |m| m.add_thread(pid, stack));
        if t.is_err() {
            match stack {
                Stack::Pthread { base, size, .. } => {
                    let _ = self.munmap(pid, base, size);
                }
                Stack::Reserved { base, .. } => {
                    let _ = self.release(pid, base);
                }
                Stack::Main { .. } => {}
            }
        }
        t
    }

    /// Ends thread `tid`: its kernel stack is freed, a non-main user stack unmapped.
    pub fn exit_thread(&mut self, tid: Tid) -> Result<(), SimError> {
        let t = self
            .threads
            .get(&tid)
            .cloned()
            .ok_or(SimError::NoSuchThread(tid))?;
        if t.ended.is_some() {
            return Ok(());
        }
        self.end_thread(tid, ThreadEnd::Exited);
        match t.stack {
            Stack::Pthread { base, size, .. } => {
                let _ = self.munmap(t.pid, base, size);
            }
            Stack::Reserved { base, .. } => {
                let _ = self.release(t.pid, base);
            }
            Stack::Main { .. } => {}
        }
        Ok(())
    }

    /// Marks a thread ended and frees its kernel stack.
    fn end_thread(&mut self, tid: Tid, why: ThreadEnd) {
        let Some(t) = self.threads.get_mut(&tid) else {
            return;
        };
        if t.ended.is_some() {
            return;
        }
        t.ended = Some(why);
        let (pid, kva) = (t.pid, t.kernel_stack);
        let arch = self.procs.get(&pid).map(|p| p.arch);
        if arch.is_some_and(|a| self.free_shared_kernel_stack(a, kva)) {
            return;
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            let phys = &mut self.phys;
            let r = with_mm!(&mut p.mm, m => m.page_table_mut().unmap(
                &mut phys.mem,
                &mut phys.frames,
                VirtAddr::new(kva),
                PAGE_SIZE,
            ));
            if let Ok((pa, flush)) = r {
                flush.flush(&mut AsidTlb {
                    tlb: &mut self.tlb,
                    asid: p.asid,
                });
                let _ = self.phys.frames.put(Frame::containing(pa));
            }
        }
    }

    /// Ends process `pid` (normal exit): every frame it held is returned.
    pub fn exit(&mut self, pid: Pid) {
        self.end_process(pid, ProcessEnd::Exited);
    }

    fn end_process(&mut self, pid: Pid, why: ProcessEnd) {
        let mut parts = Parts {
            procs: &mut self.procs,
            threads: &mut self.threads,
            ended: &mut self.ended,
            kernel: &mut self.kernel,
        };
        if let Some(dead) = parts.end(&mut self.phys, pid, why) {
            self.forget(dead);
        }
    }

    /// What is left of ending a process once the machine's TLB is free again: its address
    /// space id and the shared kernel-half stacks every space could have cached.
    fn forget(&mut self, dead: Dead) {
        for kva in dead.shared_kstacks {
            for p in self.procs.values() {
                self.tlb.invalidate(p.asid, kva);
            }
        }
        self.tlb.invalidate_asid(dead.asid);
        self.free_asids.push(dead.asid);
    }

    /// fork: a child of `pid` whose private memory is shared copy-on-write, with one thread
    /// (a copy of `pid`'s first running thread, its stack at the same place). Out of memory
    /// half way leaves no trace.
    pub fn fork(&mut self, pid: Pid) -> Result<Pid, SimError> {
        let p = self.procs.get(&pid).ok_or(SimError::NoSuchProcess(pid))?;
        let arch = p.arch;
        let stack = p
            .threads
            .iter()
            .filter_map(|t| self.threads.get(t))
            .find(|t| t.ended.is_none())
            .map(|t| t.stack);
        let asid = self.alloc_asid()?;
        // Copying page tables allocates with GFP_KERNEL: out of frames the OOM killer runs
        // and the copy is tried again (a failed copy leaves no trace); the parent may be
        // the victim.
        let child = match self.oom_retry(pid, None, 0, "fork", |m| m.fork_mm(pid)) {
            Ok(c) => c,
            Err(e) => {
                self.free_asids.push(asid);
                return Err(e);
            }
        };
        // The child's page table was copied with the parent's kernel stacks absent (they
        // are outside every VMA), so only its own kernel stack is mapped below — unless
        // the kernel half is shared, where every kernel stack is visible to all.
        let cpid = self.next_pid;
        self.next_pid += 1;
        self.procs.insert(
            cpid,
            Process {
                pid: cpid,
                arch,
                asid,
                mm: child,
                threads: Vec::new(),
            },
        );
        let stack = stack.unwrap_or(Stack::Main { top: 0 });
        let t = self.oom_retry(pid, Some(cpid), 0, "fork", |m| m.add_thread(cpid, stack));
        if let Err(e) = t {
            if let Some(p) = self.procs.remove(&cpid) {
                with_mm!(p.mm, m => m.exit(&mut self.phys));
                self.free_asids.push(p.asid);
            }
            return Err(e);
        }
        Ok(cpid)
    }

    /// A user-mode access of thread `tid`: through the TLB, else a page walk, else the fault
    /// handler and a retry. Reads and fetches return the byte, writes store `value`.
    pub fn access(
        &mut self,
        tid: Tid,
        addr: u64,
        access: Access,
        value: u8,
    ) -> Result<Option<u8>, Stop> {
        let pid = match self.threads.get(&tid) {
            Some(t) if t.ended.is_none() => t.pid,
            _ => return Err(Stop::NotRunning),
        };
        self.user_access(pid, Some(tid), addr, access, value, false)
    }

    /// Reads a byte as thread `tid`.
    pub fn load(&mut self, tid: Tid, addr: u64) -> Result<u8, Stop> {
        self.access(tid, addr, Access::Read, 0)
            .map(|v| v.unwrap_or(0))
    }

    /// Writes a byte as thread `tid`.
    pub fn store(&mut self, tid: Tid, addr: u64, value: u8) -> Result<(), Stop> {
        self.access(tid, addr, Access::Write, value).map(|_| ())
    }

    /// Fetches an instruction byte as thread `tid`.
    pub fn fetch(&mut self, tid: Tid, addr: u64) -> Result<u8, Stop> {
        self.access(tid, addr, Access::Fetch, 0)
            .map(|v| v.unwrap_or(0))
    }

    /// A user-mode byte access in process `pid` outside any thread (what trace replay's
    /// `touch` does): `Ok(Some(byte))` for reads, `Ok(None)` for writes, or why not (a
    /// signal is `Stop::Signal` with Linux's signal and si_code).
    pub fn touch(
        &mut self,
        pid: Pid,
        addr: u64,
        write: bool,
        value: u8,
    ) -> Result<Option<u8>, Stop> {
        let access = if write { Access::Write } else { Access::Read };
        self.user_access(pid, None, addr, access, value, false)
    }

    /// What a TLB miss does in `pid`: the MMU's walk to the 4 KiB entry of `addr`, as
    /// `(frame address, flags)`, `None` if nothing maps it.
    pub fn walk(&self, pid: Pid, addr: u64) -> Option<(u64, PageFlags)> {
        let p = self.procs.get(&pid)?;
        with_mm!(&p.mm, m => walk(m, &self.phys.mem, addr))
    }

    /// The TLB-hit path alone: the physical address of `addr` in `pid` if the TLB holds a
    /// translation allowing `access` (counts a hit), else `None`.
    #[inline]
    pub fn tlb_translate(&mut self, asid: u16, addr: u64, access: Access) -> Option<u64> {
        let r = self.tlb.lookup(asid, addr, need_of(access));
        if r.is_some() {
            self.counters.tlb_hits += 1;
        }
        r
    }

    /// A user-space access (by the kernel for a system call if `kernel`: W15, a guard page
    /// then fails the call instead of growing a stack).
    fn user_access(
        &mut self,
        pid: Pid,
        tid: Option<Tid>,
        addr: u64,
        access: Access,
        value: u8,
        kernel: bool,
    ) -> Result<Option<u8>, Stop> {
        let need = need_of(access);
        for _ in 0..8 {
            let p = self.procs.get_mut(&pid).ok_or(Stop::NotRunning)?;
            let asid = p.asid;
            if let Some(pa) = self.tlb.lookup(asid, addr, need) {
                self.counters.tlb_hits += 1;
                return mem_op(&mut self.phys.mem, pa, access, value);
            }
            self.counters.tlb_misses += 1;
            let nx = p.arch == ArchKind::X86_64;
            let walked = with_mm!(&p.mm, m => walk(m, &self.phys.mem, addr));
            if let Some((frame, flags)) = walked {
                if pte::allows(flags, access, true, nx) {
                    self.tlb.fill(asid, addr, frame, flags, nx);
                    return mem_op(&mut self.phys.mem, frame | (addr & 0xfff), access, value);
                }
            }
            let had_vma = with_mm!(&p.mm, m => m.space().find_vma(addr).is_some());
            let tlb = &mut AsidTlb {
                tlb: &mut self.tlb,
                asid,
            };
            let r = with_mm!(&mut p.mm, m => m.fault(&mut self.phys, tlb, addr, access));
            match r {
                Ok(res) => {
                    self.counters.resolved(res);
                    if !had_vma {
                        self.counters.stack_growths += 1;
                    }
                }
                Err(FaultError::Signal(f)) => {
                    self.counters.signal(f.signal, f.code);
                    let Some(tid) = tid else {
                        return Err(Stop::Signal(f));
                    };
                    match self.stack_fault(tid, addr, f) {
                        StackVerdict::Retry => continue,
                        StackVerdict::Overflow => {
                            self.counters.stack_overflows += 1;
                            self.overflow(pid, tid, addr);
                            return Err(Stop::StackOverflow { addr });
                        }
                        StackVerdict::NotStack => return Err(Stop::Signal(f)),
                    }
                }
                Err(FaultError::OutOfMemory { .. }) => {
                    self.counters.out_of_memory += 1;
                    match self.oom_kill(pid, addr, None, None) {
                        Some(v) if v == pid => return Err(Stop::OomKilled),
                        Some(_) => continue,
                        None => return Err(Stop::OutOfMemory),
                    }
                }
                Err(FaultError::Internal(_)) => return Err(Stop::Internal),
                Err(FaultError::Exception(e)) => {
                    self.counters.exception(e.code);
                    if e.code != ExceptionCode::GuardPage {
                        return Err(Stop::Exception(e));
                    }
                    let Some(tid) = tid.filter(|_| !kernel) else {
                        return Err(Stop::Exception(e));
                    };
                    match self.stack_guard(tid, addr) {
                        StackVerdict::Retry => continue,
                        StackVerdict::Overflow => {
                            self.counters.stack_overflows += 1;
                            self.overflow(pid, tid, addr);
                            return Err(Stop::StackOverflow { addr });
                        }
                        StackVerdict::NotStack => return Err(Stop::Exception(e)),
                    }
                }
            }
        }
        Err(Stop::Internal)
    }

    /// A kernel-mode access of thread `tid` (a system call touching its kernel stack, or
    /// user memory as copy_to/from_user does, F2: a failing user fault is returned as the
    /// signal the caller turns into EFAULT). A guard page it touches, even in the thread's
    /// own stack, fails the access with the guard-page exception (its bit is cleared, the
    /// stack does not grow: W15's "a system service touching a guard page fails").
    pub fn kernel_access(
        &mut self,
        tid: Tid,
        addr: u64,
        write: bool,
        value: u8,
    ) -> Result<Option<u8>, Stop> {
        let pid = match self.threads.get(&tid) {
            Some(t) if t.ended.is_none() => t.pid,
            _ => return Err(Stop::NotRunning),
        };
        let access = if write { Access::Write } else { Access::Read };
        let p = self.procs.get_mut(&pid).ok_or(Stop::NotRunning)?;
        let in_kernel =
            with_mm!(&p.mm, m => addr >= m.page_table().arch().kernel_range().start().as_u64());
        if !in_kernel {
            return self.user_access(pid, Some(tid), addr, access, value, true);
        }
        let need = if write { perm::WRITE } else { 0 };
        if let Some(pa) = self.tlb.lookup(p.asid, addr, need) {
            self.counters.tlb_hits += 1;
            return mem_op(&mut self.phys.mem, pa, access, value);
        }
        self.counters.tlb_misses += 1;
        let nx = p.arch == ArchKind::X86_64;
        let walked = with_mm!(&p.mm, m => walk(m, &self.phys.mem, addr));
        match walked {
            Some((frame, flags)) if pte::allows(flags, access, false, nx) => {
                self.tlb.fill(p.asid, addr, frame, flags, nx);
                mem_op(&mut self.phys.mem, frame | (addr & 0xfff), access, value)
            }
            _ => Err(Stop::KernelFault { addr }),
        }
    }

    /// Decides what a signal on thread `tid` means for its stack.
    fn stack_fault(&mut self, tid: Tid, addr: u64, f: Fault) -> StackVerdict {
        let Some(t) = self.threads.get(&tid) else {
            return StackVerdict::NotStack;
        };
        let (pid, stack) = (t.pid, t.stack);
        match stack {
            Stack::Main { top } => {
                // Growth refused (S1–S3) just below this thread's stack (within the guard-gap
                // distance of its bottom, where a descending stack pointer lands); a wild
                // access far below is an ordinary SIGSEGV.
                let hit = self.procs.get(&pid).is_some_and(|p| {
                    let gap = p.space().config().stack_guard_gap.max(PAGE_SIZE);
                    p.space().find_vma_above(addr).is_some_and(|v| {
                        v.start > addr
                            && addr >= v.start.saturating_sub(gap)
                            && v.flags & vmspace::space::vma::flags::VM_GROWSDOWN != 0
                            && top.checked_sub(1).is_some_and(|t| v.contains(t))
                    })
                });
                if hit && f.code == vmspace::space::FaultCode::SegvMaperr {
                    StackVerdict::Overflow
                } else {
                    StackVerdict::NotStack
                }
            }
            Stack::Pthread { base, guard, .. } => {
                if addr >= base && addr < base + guard {
                    StackVerdict::Overflow
                } else {
                    StackVerdict::NotStack
                }
            }
            // Reserve/commit stacks grow on guard-page exceptions (stack_guard), never on
            // a signal.
            Stack::Reserved { .. } => StackVerdict::NotStack,
        }
    }

    /// Ends the thread or process whose stack overflowed at `addr`, per [`Self::policy`].
    fn overflow(&mut self, pid: Pid, tid: Tid, addr: u64) {
        match self.policy {
            OverflowPolicy::StopThread => self.end_thread(tid, ThreadEnd::StackOverflow { addr }),
            OverflowPolicy::KillProcess => {
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.ended = Some(ThreadEnd::StackOverflow { addr });
                }
                self.end_process(pid, ProcessEnd::StackOverflow)
            }
        }
    }

    /// A guard-page exception of thread `tid` at `addr` (its guard bit already cleared by
    /// the fault layer, W15). In the thread's own reserve/commit stack it is consumed
    /// (W16): the pages from the touched one up become ordinary READWRITE memory and the
    /// `guard_pages` pages below it are committed as the new guard (W18), unless that guard
    /// would reach the last page of the reservation (the hard guard) or the commit fails:
    /// then the remaining guard pages become ordinary memory, no guard is left and the
    /// stack overflows (W19). Anywhere else the exception is the caller's.
    fn stack_guard(&mut self, tid: Tid, addr: u64) -> StackVerdict {
        let Some(t) = self.threads.get(&tid) else {
            return StackVerdict::NotStack;
        };
        let (pid, stack) = (t.pid, t.stack);
        let Stack::Reserved {
            base,
            reserve,
            committed,
            guard_pages,
            overflowed,
        } = stack
        else {
            return StackVerdict::NotStack;
        };
        let glow = committed.saturating_sub(guard_pages * PAGE_SIZE).max(base);
        if overflowed || addr < glow || addr >= committed {
            return StackVerdict::NotStack;
        }
        let page = addr & !(PAGE_SIZE - 1);
        let hard = base + PAGE_SIZE;
        let new_guard = page
            .checked_sub(guard_pages * PAGE_SIZE)
            .filter(|g| *g >= hard);
        let grown = new_guard.is_some_and(|g| {
            guard_pages == 0
                || self
                    .commit(pid, g, page - g, WinProt::READWRITE | WinProt::GUARD)
                    .is_ok()
        });
        // The touched page and any guard page above it become ordinary memory; on overflow
        // every guard page left does (W19: for the handler to use).
        let plain_from = if grown { page } else { glow.max(hard) };
        if plain_from < committed {
            let _ =
                self.virtual_protect(pid, plain_from, committed - plain_from, WinProt::READWRITE);
        }
        if let Some(t) = self.threads.get_mut(&tid) {
            t.stack = Stack::Reserved {
                base,
                reserve,
                committed: plain_from,
                guard_pages,
                overflowed: !grown,
            };
        }
        if grown {
            self.counters.guard_commits += 1;
            StackVerdict::Retry
        } else {
            StackVerdict::Overflow
        }
    }

    /// The OOM killer: ends the process with the largest RSS plus page tables (oom_badness;
    /// the first in pid order on a tie), never `spare` (a child still being created, not yet
    /// on Linux's task list), and reports it. `None` if nothing can be freed.
    fn oom_kill(
        &mut self,
        faulting: Pid,
        addr: u64,
        spare: Option<Pid>,
        call: Option<&'static str>,
    ) -> Option<Pid> {
        let (victim, points) = choose(&self.procs, spare, None)?;
        self.report_and_end(victim, faulting, addr, points, call);
        Some(victim)
    }

    /// Ends `victim` as the OOM killer's choice and records the report.
    fn report_and_end(
        &mut self,
        victim: Pid,
        faulting: Pid,
        addr: u64,
        points: u64,
        call: Option<&'static str>,
    ) {
        let rss = self.procs.get(&victim).map(|p| p.rss()).unwrap_or_default();
        self.end_process(victim, ProcessEnd::OomKilled);
        self.counters.oom_kills += 1;
        self.oom_reports.push(OomReport {
            victim,
            faulting,
            addr,
            call,
            victim_rss: rss,
            points,
            frames_free_after: self.frames_free(),
        });
    }

    /// The copy-on-write copy of `pid`'s address space for a child; `OutOfMemory` when a
    /// frame ran out (nothing of the copy is left then).
    fn fork_mm(&mut self, pid: Pid) -> Result<AnyMm, SimError> {
        let p = self
            .procs
            .get_mut(&pid)
            .ok_or(SimError::NoSuchProcess(pid))?;
        let tlb = &mut AsidTlb {
            tlb: &mut self.tlb,
            asid: p.asid,
        };
        let child = match &mut p.mm {
            AnyMm::X86_64(m) => m.fork(&mut self.phys, tlb).map(AnyMm::X86_64),
            AnyMm::I386(m) => m.fork(&mut self.phys, tlb).map(AnyMm::I386),
        };
        child.map_err(|e| match e {
            FaultError::OutOfMemory { .. } => SimError::OutOfMemory,
            // Corrupted tables or reference counts (a bug): no kill would help.
            _ => SimError::Errno(Errno::ENOMEM),
        })
    }

    /// Runs `f` until it stops failing for want of frames (`SimError::OutOfMemory`), as
    /// Linux's GFP_KERNEL allocations do (mm/page_alloc.c `__alloc_pages_slowpath` ->
    /// `__alloc_pages_may_oom` -> `out_of_memory`, then `goto retry`): each failure ends the
    /// OOM killer's victim (never `spare`) and runs `f` again. `f` must leave no trace when
    /// it fails so. The caller chosen -> `SimError::OomKilled`; nothing left to kill ->
    /// `SimError::OutOfMemory`.
    fn oom_retry<R>(
        &mut self,
        caller: Pid,
        spare: Option<Pid>,
        addr: u64,
        call: &'static str,
        mut f: impl FnMut(&mut Self) -> Result<R, SimError>,
    ) -> Result<R, SimError> {
        loop {
            match f(self) {
                Err(SimError::OutOfMemory) => {
                    match self.oom_kill(caller, addr, spare, Some(call)) {
                        Some(v) if v == caller => return Err(SimError::OomKilled),
                        Some(_) => {}
                        None => return Err(SimError::OutOfMemory),
                    }
                }
                r => return r,
            }
        }
    }

    /// A system call of `pid` on its address space. Pages a populate in it (MAP_POPULATE,
    /// MAP_LOCKED, mlock, MADV_POPULATE_*, a locked brk) could not fault in for want of a
    /// frame ([`Starved::Populate`]) are faulted in after the OOM killer ends a victim, as
    /// Linux's allocator retries at that point; the call's own result stands. Nothing left
    /// to kill: the populate stops (`__mm_populate` ignores the error); the caller chosen:
    /// `SimError::OomKilled`. ENOMEM for want of address space (map count, RLIMIT_AS,
    /// overcommit, no free range) kills nobody. (mremap runs its killer in place:
    /// [`Machine::mremap`].)
    fn syscall<R, E>(
        &mut self,
        pid: Pid,
        call: &'static str,
        f: impl FnOnce(&mut AnyMm, &mut MachinePhys, &mut AsidTlb) -> Result<R, E>,
    ) -> Result<R, SimError>
    where
        SimError: From<E>,
    {
        let (r, starved) = self.with_mm(pid, |mm, ph, t| {
            let r = f(mm, ph, t);
            (r, with_mm!(mm, m => m.take_starved()))
        })?;
        for s in starved {
            if let Starved::Populate { start, end, write } = s {
                self.populate_retrying(pid, call, start, end, write)?;
            }
        }
        Ok(r?)
    }

    /// Faults `[start, end)` of `pid` in (as a write if `write`), running the OOM killer
    /// for pages that find no frame; stops at the first other failure, or when nothing can
    /// be killed, as `__mm_populate` does. `Err(OomKilled)` if `pid` was the victim.
    fn populate_retrying(
        &mut self,
        pid: Pid,
        call: &'static str,
        start: u64,
        end: u64,
        write: bool,
    ) -> Result<(), SimError> {
        let access = if write { Access::Write } else { Access::Read };
        let mut p = start;
        while p < end {
            let r = self.with_mm(
                pid,
                |mm, ph, t| with_mm!(mm, m => m.fault(ph, t, p, access)),
            )?;
            match r {
                Ok(_) => p += PAGE_SIZE,
                Err(FaultError::OutOfMemory { .. }) => {
                    match self.oom_kill(pid, p, None, Some(call)) {
                        Some(v) if v == pid => return Err(SimError::OomKilled),
                        Some(_) => {}
                        None => return Ok(()),
                    }
                }
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// Runs `f` on the address space of `pid` with the machine's physical memory and the
    /// process's TLB view, then unmaps pages punched out of shared objects everywhere.
    pub fn with_mm<R>(
        &mut self,
        pid: Pid,
        f: impl FnOnce(&mut AnyMm, &mut MachinePhys, &mut AsidTlb) -> R,
    ) -> Result<R, SimError> {
        let p = self
            .procs
            .get_mut(&pid)
            .ok_or(SimError::NoSuchProcess(pid))?;
        let mut tlb = AsidTlb {
            tlb: &mut self.tlb,
            asid: p.asid,
        };
        let r = f(&mut p.mm, &mut self.phys, &mut tlb);
        let punched = with_mm!(&mut p.mm, m => m.take_punched());
        for (obj, first, count) in punched {
            for q in self.procs.values_mut() {
                if q.pid == pid {
                    continue;
                }
                let mut tlb = AsidTlb {
                    tlb: &mut self.tlb,
                    asid: q.asid,
                };
                with_mm!(&mut q.mm, m => m.zap_object(&mut self.phys, &mut tlb, obj, first, count));
            }
        }
        Ok(r)
    }

    /// mmap in `pid`.
    #[allow(clippy::too_many_arguments)]
    pub fn mmap(
        &mut self,
        pid: Pid,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        file: Option<FileRef>,
        off: u64,
    ) -> Result<u64, SimError> {
        self.syscall(pid, "mmap", |mm, ph, t| {
            let file = file.clone();
            with_mm!(mm, m => m.mmap(ph, t, addr, len, prot, flags, file, off))
        })
    }

    /// munmap in `pid`.
    pub fn munmap(&mut self, pid: Pid, addr: u64, len: u64) -> Result<(), SimError> {
        Ok(self.with_mm(
            pid,
            |mm, ph, t| with_mm!(mm, m => m.munmap(ph, t, addr, len)),
        )??)
    }

    /// mprotect in `pid`.
    pub fn mprotect(&mut self, pid: Pid, addr: u64, len: u64, prot: u64) -> Result<(), SimError> {
        self.syscall(
            pid,
            "mprotect",
            |mm, ph, t| with_mm!(mm, m => m.mprotect(ph, t, addr, len, prot)),
        )
    }

    /// mremap in `pid`. A destination page table that finds no frame runs the OOM killer
    /// and is tried again in place, as Linux's GFP_KERNEL allocation in move_page_tables
    /// does (`Mm::mremap_reclaiming`): the move goes on where it stopped (a multi-VMA move,
    /// a FIXED destination already unmapped, the growth charged once). The victim is chosen
    /// among all processes, the caller included (its points as the call began): chosen, the
    /// move fails and the caller ends (`SimError::OomKilled`); nothing to kill, ENOMEM.
    pub fn mremap(
        &mut self,
        pid: Pid,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    ) -> Result<u64, SimError> {
        let mut caller = self
            .procs
            .remove(&pid)
            .ok_or(SimError::NoSuchProcess(pid))?;
        let mut killer = Killer {
            parts: Parts {
                procs: &mut self.procs,
                threads: &mut self.threads,
                ended: &mut self.ended,
                kernel: &mut self.kernel,
            },
            counters: &mut self.counters,
            reports: &mut self.oom_reports,
            caller: pid,
            caller_points: caller.rss().total() + caller.table_pages(),
            addr,
            call: "mremap",
            caller_chosen: false,
            dead: Vec::new(),
        };
        let mut tlb = AsidTlb {
            tlb: &mut self.tlb,
            asid: caller.asid,
        };
        let phys = &mut self.phys;
        let r = with_mm!(&mut caller.mm, m => m.mremap_reclaiming(
            phys,
            &mut tlb,
            addr,
            old_len,
            new_len,
            flags,
            new_addr,
            &mut |ph| killer.kill(ph),
        ));
        let (chosen, dead) = (killer.caller_chosen, killer.dead);
        self.procs.insert(pid, caller);
        for d in dead {
            self.forget(d);
        }
        if chosen {
            let points = self
                .procs
                .get(&pid)
                .map_or(0, |p| p.rss().total() + p.table_pages());
            self.report_and_end(pid, pid, addr, points, Some("mremap"));
            return Err(SimError::OomKilled);
        }
        // Pages a VM_LOCKED growth could not populate.
        let starved = self.with_mm(pid, |mm, _, _| with_mm!(mm, m => m.take_starved()))?;
        for s in starved {
            if let Starved::Populate { start, end, write } = s {
                self.populate_retrying(pid, "mremap", start, end, write)?;
            }
        }
        Ok(r?)
    }

    /// brk in `pid`; returns the new break (the old one when refused, as Linux).
    pub fn brk(&mut self, pid: Pid, target: u64) -> Result<u64, SimError> {
        self.syscall(pid, "brk", |mm, ph, t| {
            Ok::<_, SimError>(with_mm!(mm, m => m.brk(ph, t, target)))
        })
    }

    /// madvise in `pid`.
    pub fn madvise(&mut self, pid: Pid, addr: u64, len: u64, advice: i64) -> Result<(), SimError> {
        self.syscall(
            pid,
            "madvise",
            |mm, ph, t| with_mm!(mm, m => m.madvise(ph, t, addr, len, advice)),
        )
    }

    /// mlock2 in `pid` (`flags` 0 or MLOCK_ONFAULT); the range is populated, running the
    /// OOM killer for pages that find no frame.
    pub fn mlock(&mut self, pid: Pid, addr: u64, len: u64, flags: u64) -> Result<(), SimError> {
        self.syscall(
            pid,
            "mlock",
            |mm, ph, t| with_mm!(mm, m => m.mlock(ph, t, addr, len, flags)),
        )
    }

    /// VirtualAlloc in `pid` (see `AddressSpace::virtual_alloc`).
    pub fn virtual_alloc(
        &mut self,
        pid: Pid,
        addr: Option<u64>,
        size: u64,
        kind: AllocKind,
        prot: WinProt,
    ) -> Result<u64, SimError> {
        self.syscall(
            pid,
            "VirtualAlloc",
            |mm, ph, t| with_mm!(mm, m => m.virtual_alloc(ph, t, addr, size, kind, prot)),
        )
    }

    /// MEM_COMMIT inside a reservation of `pid`.
    pub fn commit(
        &mut self,
        pid: Pid,
        addr: u64,
        size: u64,
        prot: WinProt,
    ) -> Result<u64, SimError> {
        self.syscall(
            pid,
            "VirtualAlloc",
            |mm, ph, t| with_mm!(mm, m => m.commit(ph, t, addr, size, prot)),
        )
    }

    /// MEM_DECOMMIT in `pid`.
    pub fn decommit(&mut self, pid: Pid, addr: u64, size: u64) -> Result<(), SimError> {
        Ok(self.with_mm(
            pid,
            |mm, ph, t| with_mm!(mm, m => m.decommit(ph, t, addr, size)),
        )??)
    }

    /// MEM_RELEASE of the reservation at `base` in `pid`.
    pub fn release(&mut self, pid: Pid, base: u64) -> Result<(), SimError> {
        Ok(self.with_mm(
            pid,
            |mm, ph, t| with_mm!(mm, m => m.release(ph, t, base, 0)),
        )??)
    }

    /// VirtualProtect in `pid`; returns the old protection of the first page.
    pub fn virtual_protect(
        &mut self,
        pid: Pid,
        addr: u64,
        size: u64,
        prot: WinProt,
    ) -> Result<WinProt, SimError> {
        Ok(self.with_mm(
            pid,
            |mm, ph, t| with_mm!(mm, m => m.virtual_protect(ph, t, addr, size, prot)),
        )??)
    }

    /// VirtualQuery in `pid`.
    pub fn virtual_query(&self, pid: Pid, addr: u64) -> Result<RegionInfo, SimError> {
        let p = self.procs.get(&pid).ok_or(SimError::NoSuchProcess(pid))?;
        Ok(p.space().virtual_query(addr)?)
    }

    /// smaps of `pid` with `rss_kb`/`anon_kb` from its page table.
    pub fn smaps(&self, pid: Pid) -> Result<Vec<SmapsEntry>, SimError> {
        let p = self.procs.get(&pid).ok_or(SimError::NoSuchProcess(pid))?;
        Ok(with_mm!(&p.mm, m => m.smaps(&self.phys)))
    }

    /// Checks every machine invariant: each process's pages lie in VMAs with their rights
    /// and its RSS equals its present pages; each frame's reference count equals its
    /// mappings (+1 in the page cache); frames used = zero page + tables + mapped, cached
    /// and kernel-stack frames; free + used = RAM; the buddy allocator is consistent.
    pub fn check(&self) -> Result<(), String> {
        let zero = self.phys.zero_page();
        let mut refs: BTreeMap<Frame, u32> = BTreeMap::new();
        let mut tables = 0;
        for p in self.procs.values() {
            with_mm!(&p.mm, m => m.check(&self.phys)).map_err(|e| format!("pid {}: {e}", p.pid))?;
            p.space()
                .win_check()
                .map_err(|e| format!("pid {}: {e}", p.pid))?;
            tables += p.table_pages();
            let pages = with_mm!(&p.mm, m => m.user_pages(&self.phys.mem));
            for (_, f, _) in pages {
                if f != zero {
                    *refs.entry(f).or_default() += 1;
                }
            }
            for tid in &p.threads {
                let Some(t) = self.threads.get(tid) else {
                    return Err(format!("pid {}: unknown thread {tid}", p.pid));
                };
                if t.ended.is_some() {
                    continue;
                }
                let tr = with_mm!(&p.mm, m => m
                    .page_table()
                    .translate(&self.phys.mem, VirtAddr::new(t.kernel_stack)));
                match tr {
                    Ok(tr) if !tr.flags.contains(PageFlags::USER) => {
                        *refs.entry(Frame::containing(tr.frame)).or_default() += 1;
                    }
                    _ => {
                        return Err(format!(
                            "tid {tid}: kernel stack not mapped supervisor-only"
                        ))
                    }
                }
            }
        }
        for (_, _, f) in self.phys.cache_entries() {
            *refs.entry(f).or_default() += 1;
        }
        for (f, n) in &refs {
            let c = self.phys.frames.ref_count(*f).map_err(|e| format!("{e}"))?;
            if c != *n {
                return Err(format!("frame {f:?}: refcount {c}, mappings {n}"));
            }
        }
        if let Some(k) = &self.kernel {
            // The shared kernel tables and the kernel's own directory.
            tables += k.shared_tables() + k.page_table().table_pages();
        }
        let st = self.phys.frames.stats();
        let expect = 1 + tables + refs.len() as u64;
        if st.allocated_frames != expect {
            return Err(format!(
                "{} frames allocated, {} accounted for (leak or double free)",
                st.allocated_frames, expect
            ));
        }
        if st.free_frames + st.allocated_frames != self.ram_frames {
            return Err("free + used != RAM".into());
        }
        self.phys
            .frames
            .check_invariants()
            .map_err(|e| format!("{e:?}"))
    }
}

/// The hardware walk: one entry read per level down to the 4 KiB leaf.
#[inline]
/// The OOM killer's choice among `procs` (and `extra`, a process taken out of the map for
/// the duration of a call, with its points): the largest RSS plus page tables, the lowest
/// pid on a tie, never `spare`. `None` if nobody holds anything.
fn choose(
    procs: &BTreeMap<Pid, Process>,
    spare: Option<Pid>,
    extra: Option<(Pid, u64)>,
) -> Option<(Pid, u64)> {
    let mut all: Vec<(Pid, u64)> = procs
        .values()
        .filter(|p| Some(p.pid) != spare)
        .map(|p| (p.pid, p.rss().total() + p.table_pages()))
        .collect();
    all.extend(extra);
    all.sort_unstable_by_key(|&(pid, _)| pid);
    let mut best: Option<(Pid, u64)> = None;
    for (pid, points) in all {
        if best.is_none_or(|(_, b)| points > b) {
            best = Some((pid, points));
        }
    }
    best.filter(|&(_, points)| points > 0)
}

/// The machine's bookkeeping of processes, apart from physical memory and the TLB (which
/// a system call in progress holds).
struct Parts<'a> {
    procs: &'a mut BTreeMap<Pid, Process>,
    threads: &'a mut BTreeMap<Tid, Thread>,
    ended: &'a mut BTreeMap<Pid, ProcessEnd>,
    kernel: &'a mut Option<KernelSpace>,
}

/// What [`Parts::end`] leaves for the TLB.
struct Dead {
    asid: u16,
    shared_kstacks: Vec<u64>,
}

impl Parts<'_> {
    /// Ends process `pid`: its threads stop, its kernel stacks in a shared kernel half are
    /// freed, every frame it held is returned.
    fn end(&mut self, phys: &mut MachinePhys, pid: Pid, why: ProcessEnd) -> Option<Dead> {
        let p = self.procs.remove(&pid)?;
        let mut kstacks = Vec::new();
        for tid in &p.threads {
            if let Some(t) = self.threads.get_mut(tid) {
                if t.ended.is_none() {
                    t.ended = Some(ThreadEnd::ProcessEnded(why));
                    kstacks.push(t.kernel_stack);
                }
            }
        }
        // In a shared kernel half the running threads' kernel stacks are the kernel's to
        // free; otherwise they are still mapped in this table and exit drops them.
        let mut shared_kstacks = Vec::new();
        if let Some(k) = self.kernel.as_mut().filter(|_| p.arch == ArchKind::I386) {
            for kva in kstacks {
                if let Ok(t) = k.translate(&phys.mem, kva) {
                    let st = KernelStack {
                        guard: kva - PAGE_SIZE,
                        page: kva,
                        frame: t.frame.as_u64(),
                    };
                    if let Ok(flush) = k.free_stack(&mut phys.mem, &mut phys.frames, st) {
                        flush.ignore();
                        shared_kstacks.push(kva);
                    }
                }
            }
        }
        with_mm!(p.mm, m => m.exit(phys));
        self.ended.insert(pid, why);
        Some(Dead {
            asid: p.asid,
            shared_kstacks,
        })
    }
}

/// The OOM killer inside a system call of `caller`, whose process is out of the map while
/// the call runs (its points as the call began).
struct Killer<'a> {
    parts: Parts<'a>,
    counters: &'a mut Counters,
    reports: &'a mut Vec<OomReport>,
    caller: Pid,
    caller_points: u64,
    addr: u64,
    call: &'static str,
    /// The caller was chosen: the call fails and the machine ends it afterwards.
    caller_chosen: bool,
    dead: Vec<Dead>,
}

impl Killer<'_> {
    /// Ends the victim and returns `true`; `false` if the caller was chosen or nobody holds
    /// anything.
    fn kill(&mut self, phys: &mut MachinePhys) -> bool {
        let extra = Some((self.caller, self.caller_points));
        let Some((victim, points)) = choose(self.parts.procs, None, extra) else {
            return false;
        };
        if victim == self.caller {
            self.caller_chosen = true;
            return false;
        }
        let rss = self
            .parts
            .procs
            .get(&victim)
            .map(|p| p.rss())
            .unwrap_or_default();
        let Some(dead) = self.parts.end(phys, victim, ProcessEnd::OomKilled) else {
            return false;
        };
        self.dead.push(dead);
        self.counters.oom_kills += 1;
        self.reports.push(OomReport {
            victim,
            faulting: self.caller,
            addr: self.addr,
            call: Some(self.call),
            victim_rss: rss,
            points,
            frames_free_after: phys.frames.stats().free_frames,
        });
        true
    }
}

fn walk<A: Arch>(m: &Mm<A>, mem: &EmulatedRam, addr: u64) -> Option<(u64, PageFlags)> {
    let lin = A::to_linear(VirtAddr::new(addr))?;
    match pte::find_leaf(m.page_table(), mem, lin) {
        Ok(pte::Leaf::At(_, raw)) => match A::decode(1, raw) {
            Entry::Page { addr, flags, .. } => Some((addr.as_u64(), flags)),
            _ => None,
        },
        _ => None,
    }
}

enum StackVerdict {
    Retry,
    Overflow,
    NotStack,
}

#[inline(always)]
fn need_of(access: Access) -> u8 {
    match access {
        Access::Read => perm::USER,
        Access::Write => perm::USER | perm::WRITE,
        Access::Fetch => perm::USER | perm::EXEC,
    }
}

#[inline]
fn mem_op(mem: &mut EmulatedRam, pa: u64, access: Access, value: u8) -> Result<Option<u8>, Stop> {
    let pa = PhysAddr::new(pa);
    match access {
        Access::Write => mem.write(pa, &[value]).map(|_| None),
        _ => {
            let mut b = [0u8];
            mem.read(pa, &mut b).map(|_| Some(b[0]))
        }
    }
    .map_err(|_| Stop::Internal)
}

/// Whether `A`'s entries honour NX (kept for callers generic over the architecture).
pub fn arch_has_nx<A: Arch>() -> bool {
    pte::has_nx::<A>()
}
