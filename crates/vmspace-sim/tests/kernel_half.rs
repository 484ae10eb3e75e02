//! End to end on the simulated CPU: i386 processes over one shared kernel half
//! (`vmspace::space::kernel`). Each thread's kernel stack is one page in the kernel half with
//! an unmapped guard page below; it is visible — the same frame — from every process, reached
//! only in kernel mode; threads, processes and forks come and go and every frame is
//! accounted for (`Machine::check`) and given back, the shared tables staying.

use vmspace::arch::PageFlags;
use vmspace::space::abi::*;
use vmspace::space::kernel::{KernelLayout, Region};
use vmspace::space::FaultCode;
use vmspace_sim::*;

fn main_tid(m: &Machine, pid: Pid) -> Tid {
    m.process(pid).unwrap().threads[0]
}

#[test]
fn kernel_stacks_live_in_the_shared_kernel_half() {
    let layout = KernelLayout::default();
    let stacks = layout.span(Region::KernelStacks);
    let mut m = Machine::with_kernel_half(32 << 20, layout).unwrap();
    let boot_free = m.frames_free();
    let shared = m.kernel_half().unwrap().shared_tables();
    assert_eq!(shared, 256, "low memory and the kernel half");
    let p1 = m.spawn(ArchKind::I386).unwrap();
    let p2 = m.spawn(ArchKind::I386).unwrap();
    let t1 = main_tid(&m, p1);
    let t2 = main_tid(&m, p2);
    let t3 = m.spawn_thread(p1, StackStyle::PTHREAD_DEFAULT).unwrap();
    m.check().unwrap();
    let k1 = m.thread(t1).unwrap().kernel_stack;
    let k3 = m.thread(t3).unwrap().kernel_stack;
    for k in [k1, k3, m.thread(t2).unwrap().kernel_stack] {
        assert!(
            stacks.holds(k - 4096, 8192),
            "{k:#x} in the kernel-stack region"
        );
        // The same frame through both processes' directories, supervisor-only.
        let (f1, fl1) = m.walk(p1, k).unwrap();
        let (f2, _) = m.walk(p2, k).unwrap();
        assert_eq!(f1, f2);
        assert!(!fl1.contains(PageFlags::USER));
        // The guard page below is never mapped.
        assert_eq!(m.walk(p1, k - 4096), None);
    }
    // A system call of t1 writes its kernel stack; t2, in the other process, reads the
    // same byte there in kernel mode (one kernel half), but never from user mode.
    m.kernel_access(t1, k1 + 100, true, 0x5a).unwrap();
    assert_eq!(m.kernel_access(t2, k1 + 100, false, 0), Ok(Some(0x5a)));
    let f = m.load(t2, k1 + 100).unwrap_err().fault().unwrap();
    assert_eq!(f.code, FaultCode::SegvMaperr);
    assert_eq!(f.addr, k1 + 100);
    // Running off the bottom of a kernel stack hits the guard page: an oops, not t3's
    // neighbour.
    assert_eq!(
        m.kernel_access(t1, k1 - 1, true, 1),
        Err(Stop::KernelFault { addr: k1 - 1 })
    );
    // Ending t3 frees its kernel stack for everyone; a new thread in p2 reuses the slot.
    m.exit_thread(t3).unwrap();
    assert_eq!(m.walk(p2, k3), None);
    m.check().unwrap();
    let t4 = m.spawn_thread(p2, StackStyle::PTHREAD_DEFAULT).unwrap();
    assert_eq!(m.thread(t4).unwrap().kernel_stack, k3);
    // A fork keeps the kernel half shared: the child sees every kernel stack.
    let c = m.fork(p2).unwrap();
    let tc = main_tid(&m, c);
    assert_eq!(m.kernel_access(tc, k1 + 100, false, 0), Ok(Some(0x5a)));
    m.store(tc, m.process(c).unwrap().space().layout().stack_top - 8, 1)
        .unwrap();
    m.check().unwrap();
    // p1 exits: its running threads' kernel stacks go, the shared tables stay.
    m.exit(p1);
    assert_eq!(m.walk(p2, k1), None);
    assert_eq!(m.kernel_half().unwrap().shared_tables(), shared);
    m.check().unwrap();
    for p in [p2, c] {
        m.exit(p);
    }
    m.check().unwrap();
    assert_eq!(
        m.frames_free(),
        boot_free,
        "every process frame and kernel stack is back"
    );
    assert_eq!(m.kernel_half().unwrap().stacks_in_use(), 0);
}

#[test]
fn machines_without_a_kernel_half_are_unchanged_and_x86_64_ignores_it() {
    let mut m = Machine::with_kernel_half(32 << 20, KernelLayout::default()).unwrap();
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t = main_tid(&m, p);
    let a = m
        .mmap(
            p,
            0,
            0x2000,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            None,
            0,
        )
        .unwrap();
    m.store(t, a, 3).unwrap();
    assert!(m.thread(t).unwrap().kernel_stack >= 0xffff_c900_0000_0000);
    m.check().unwrap();
    m.exit(p);
    m.check().unwrap();
    assert!(Machine::new(8 << 20).unwrap().kernel_half().is_none());
}

#[test]
fn bad_layouts_and_full_stack_regions_are_typed() {
    use vmspace::range::ArenaError;
    use vmspace::space::kernel::{KernelError, LayoutError};
    let bad = KernelLayout::default().with_split(0xC000_1000);
    assert_eq!(
        Machine::with_kernel_half(32 << 20, bad).err(),
        Some(SimError::Kernel(KernelError::Layout(LayoutError::Split(
            0xC000_1000
        ))))
    );
    // Room for two kernel stacks: the main thread and one more.
    let tiny = KernelLayout::default().with(Region::KernelStacks, 0xC100_0000, 0xC100_4000);
    let mut m = Machine::with_kernel_half(32 << 20, tiny).unwrap();
    let p = m.spawn(ArchKind::I386).unwrap();
    let t = m.spawn_thread(p, StackStyle::PTHREAD_DEFAULT).unwrap();
    assert_eq!(
        m.spawn_thread(p, StackStyle::PTHREAD_DEFAULT),
        Err(SimError::Kernel(KernelError::Range(ArenaError::NoSpace)))
    );
    m.check().unwrap();
    m.exit_thread(t).unwrap();
    m.spawn_thread(p, StackStyle::PTHREAD_DEFAULT).unwrap();
    m.check().unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Spawn,
    Thread(usize),
    ExitThread(usize),
    Fork(usize),
    Exit(usize),
    /// Thread `a` writes `v` on thread `b`'s kernel stack in kernel mode.
    KWrite(usize, usize, u8),
    /// Thread `a` touches its user stack.
    Touch(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        2 => Just(Op::Spawn),
        3 => (0usize..16).prop_map(Op::Thread),
        2 => (0usize..16).prop_map(Op::ExitThread),
        1 => (0usize..16).prop_map(Op::Fork),
        1 => (0usize..16).prop_map(Op::Exit),
        3 => (0usize..16, 0usize..16, any::<u8>()).prop_map(|(a, b, v)| Op::KWrite(a, b, v)),
        2 => (0usize..16).prop_map(Op::Touch),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Processes, threads and forks in any order over one kernel half: after every step
    /// the machine's frame accounting holds (shared tables counted once), every running
    /// thread's kernel stack is the same frame in every process and holds what was last
    /// written to it from any process; at the end every frame but the kernel half's is
    /// back and the kernel half still has all its tables.
    #[test]
    fn kernel_half_survives_any_order_of_processes_and_threads(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut m = Machine::with_kernel_half(32 << 20, KernelLayout::default()).unwrap();
        let boot_free = m.frames_free();
        let mut written: std::collections::BTreeMap<u64, u8> = Default::default();
        let running = |m: &Machine| -> Vec<Tid> {
            m.processes()
                .flat_map(|p| p.threads.clone())
                .filter(|t| m.thread(*t).is_some_and(|t| t.ended.is_none()))
                .collect()
        };
        for o in ops {
            let pids: Vec<Pid> = m.processes().map(|p| p.pid).collect();
            let tids = running(&m);
            match o {
                Op::Spawn => {
                    let _ = m.spawn(ArchKind::I386);
                }
                Op::Thread(i) if !pids.is_empty() => {
                    let _ = m.spawn_thread(pids[i % pids.len()], StackStyle::Pthread { size: 64 << 10, guard: 4096 });
                }
                Op::ExitThread(i) if !tids.is_empty() => {
                    let t = tids[i % tids.len()];
                    written.remove(&m.thread(t).unwrap().kernel_stack);
                    m.exit_thread(t).unwrap();
                }
                Op::Fork(i) if !pids.is_empty() => {
                    let _ = m.fork(pids[i % pids.len()]);
                }
                Op::Exit(i) if !pids.is_empty() => {
                    let p = pids[i % pids.len()];
                    // Its running threads' kernel stacks go (an ended thread's slot may
                    // already belong to a thread of another process).
                    for t in &m.process(p).unwrap().threads {
                        let t = m.thread(*t).unwrap();
                        if t.ended.is_none() {
                            written.remove(&t.kernel_stack);
                        }
                    }
                    m.exit(p);
                }
                Op::KWrite(a, b, v) if !tids.is_empty() => {
                    let (ta, tb) = (tids[a % tids.len()], tids[b % tids.len()]);
                    let k = m.thread(tb).unwrap().kernel_stack;
                    m.kernel_access(ta, k + 8, true, v).unwrap();
                    written.insert(k, v);
                }
                Op::Touch(a) if !tids.is_empty() => {
                    let t = tids[a % tids.len()];
                    // (A fork of a process with no running thread has no stack: top 0.)
                    if let Some(a) = m.thread(t).unwrap().stack.top().checked_sub(16) {
                        let _ = m.store(t, a, 1);
                    }
                }
                _ => {}
            }
            m.check().unwrap();
            let tids = running(&m);
            let pids: Vec<Pid> = m.processes().map(|p| p.pid).collect();
            for &t in &tids {
                let k = m.thread(t).unwrap().kernel_stack;
                let frames: Vec<_> = pids.iter().map(|&p| m.walk(p, k).map(|(f, _)| f)).collect();
                proptest::prop_assert!(frames.iter().all(|f| f.is_some() && *f == frames[0]));
                let want = written.get(&k).copied().unwrap_or(0);
                proptest::prop_assert_eq!(m.kernel_access(tids[0], k + 8, false, 0), Ok(Some(want)));
            }
        }
        let pids: Vec<Pid> = m.processes().map(|p| p.pid).collect();
        for p in pids {
            m.exit(p);
        }
        m.check().unwrap();
        proptest::prop_assert_eq!(m.frames_free(), boot_free);
        proptest::prop_assert_eq!(m.kernel_half().unwrap().stacks_in_use(), 0);
        proptest::prop_assert_eq!(m.kernel_half().unwrap().shared_tables(), 256);
    }
}
