//! The simulated machine: COW suite, isolation, stacks, OOM, i386.

use vmspace::fault::ExceptionCode;
use vmspace::space::abi::*;
use vmspace::space::FaultCode;
use vmspace_sim::*;

const RW: u64 = PROT_READ | PROT_WRITE;
const PA: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

fn machine(mb: u64) -> Machine {
    Machine::new(mb << 20).unwrap()
}

fn main_tid(m: &Machine, pid: Pid) -> Tid {
    m.process(pid).unwrap().threads[0]
}

#[test]
fn tlb_walk_fault_retry_and_counters() {
    let mut m = machine(16);
    let pid = m.spawn(ArchKind::X86_64).unwrap();
    let t = main_tid(&m, pid);
    let a = m.mmap(pid, 0, 0x4000, RW, PA, None, 0).unwrap();
    assert_eq!(m.load(t, a), Ok(0));
    assert_eq!(m.counters().zero_page_maps, 1);
    m.store(t, a + 1, 7).unwrap();
    assert_eq!(m.counters().cow_zero, 1);
    m.store(t, a + 0x1000, 8).unwrap();
    assert_eq!(m.counters().demand_zero, 1);
    let hits = m.counters().tlb_hits;
    for _ in 0..10 {
        assert_eq!(m.load(t, a + 1), Ok(7));
    }
    assert_eq!(m.counters().tlb_hits, hits + 10);
    assert_eq!(m.process(pid).unwrap().rss().anon, 2);
    // Faults by kind add up with signals.
    assert!(
        matches!(m.load(t, a + 0x4000), Err(Stop::Signal(f)) if f.code == FaultCode::SegvMaperr)
    );
    assert_eq!(m.counters().segv_maperr, 1);
    // smaps per VMA from the page table.
    let sm = m.smaps(pid).unwrap();
    let e = sm.iter().find(|e| e.start == a).unwrap();
    assert_eq!((e.rss_kb, e.anon_kb), (8, 8));
    m.check().unwrap();
}

#[test]
fn cow_suite_on_the_machine() {
    let mut m = machine(16);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let tp = main_tid(&m, p);
    let a = m.mmap(p, 0, 0x8000, RW, PA, None, 0).unwrap();
    for i in 0..8 {
        m.store(tp, a + i * 0x1000, i as u8).unwrap();
    }
    // Chained fork: parent, child, grandchild.
    let c = m.fork(p).unwrap();
    let tc = main_tid(&m, c);
    let g = m.fork(c).unwrap();
    let tg = main_tid(&m, g);
    m.check().unwrap();
    m.store(tg, a, 100).unwrap();
    m.store(tc, a, 50).unwrap();
    assert_eq!(m.counters().cow_copies, 2);
    // The parent is the last sharer of page 0: reuse.
    m.store(tp, a, 1).unwrap();
    assert_eq!(m.counters().cow_reuses, 1);
    assert_eq!(m.load(tp, a), Ok(1));
    assert_eq!(m.load(tc, a), Ok(50));
    assert_eq!(m.load(tg, a), Ok(100));
    for i in 1..8 {
        assert_eq!(m.load(tg, a + i * 0x1000), Ok(i as u8));
    }
    // Written after fork: one fault per page, then TLB hits only.
    let before = m.counters().faults();
    for i in 1..8 {
        m.store(tc, a + i * 0x1000, 9).unwrap();
        m.store(tc, a + i * 0x1000 + 1, 9).unwrap();
    }
    assert_eq!(m.counters().faults(), before + 7);
    // mprotect RW on a shared frame does not bypass COW.
    m.mprotect(p, a + 0x2000, 0x1000, PROT_READ).unwrap();
    m.mprotect(p, a + 0x2000, 0x1000, RW).unwrap();
    m.store(tp, a + 0x2000, 77).unwrap();
    assert_eq!(m.load(tg, a + 0x2000), Ok(2));
    m.check().unwrap();
    // Exit returns every frame.
    let used_before_fork = {
        let free = m.frames_free();
        m.exit(g);
        m.exit(c);
        m.check().unwrap();
        free
    };
    assert!(m.frames_free() > used_before_fork);
    m.exit(p);
    m.check().unwrap();
    assert_eq!(m.frames_used(), 1, "only the zero page remains");
}

#[test]
fn failed_fork_leaves_no_frame_reference() {
    // Fill RAM until a fork cannot fit: the copy fails, leaves nothing of the child, and
    // the OOM killer (fork's page tables are GFP_KERNEL) chooses the parent, the only
    // process: it ends and every frame comes back.
    let mut m = machine(1);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t = main_tid(&m, p);
    let a = m.mmap(p, 0, 0x100000, RW, PA, None, 0).unwrap();
    let mut i = 0;
    loop {
        m.store(t, a + i * 0x1000, 1).unwrap();
        i += 1;
        if m.frames_free() < 3 {
            break;
        }
    }
    assert_eq!(m.fork(p), Err(SimError::OomKilled));
    assert_eq!(m.process_end(p), Some(ProcessEnd::OomKilled));
    assert_eq!(m.oom_reports()[0].call, Some("fork"));
    assert_eq!(m.frames_used(), 1, "only the zero page remains");
    m.check().unwrap();
    assert_eq!(m.processes().count(), 0);
}

#[test]
fn isolation_fresh_frames_are_zero_and_spaces_are_apart() {
    let mut m = machine(4);
    let a = m.spawn(ArchKind::X86_64).unwrap();
    let ta = main_tid(&m, a);
    let x = m.mmap(a, 0, 0x10000, RW, PA, None, 0).unwrap();
    for i in 0..16 {
        for off in [0, 100, 4095] {
            m.store(ta, x + i * 0x1000 + off, 0xee).unwrap();
        }
    }
    m.exit(a);
    let b = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, b);
    let y = m.mmap(b, 0, 0x10000, RW, PA, None, 0).unwrap();
    for i in 0..16 {
        m.store(tb, y + i * 0x1000 + 50, 1).unwrap();
        for off in [0, 100, 4095] {
            assert_eq!(
                m.load(tb, y + i * 0x1000 + off),
                Ok(0),
                "stale data handed out"
            );
        }
    }
    // Same virtual address, two processes, different data.
    let c = m.spawn(ArchKind::X86_64).unwrap();
    let tc = main_tid(&m, c);
    let z = m.mmap(c, y, 0x1000, RW, PA | MAP_FIXED, None, 0).unwrap();
    assert_eq!(z, y);
    m.store(tc, y + 50, 2).unwrap();
    assert_eq!(m.load(tb, y + 50), Ok(1));
    assert_eq!(m.load(tc, y + 50), Ok(2));
    // The kernel half: user mode never reaches a kernel stack; kernel mode does.
    let ks = m.thread(tb).unwrap().kernel_stack;
    assert!(ks >= 0xffff_8000_0000_0000);
    m.kernel_access(tb, ks + 8, true, 5).unwrap();
    assert_eq!(m.kernel_access(tb, ks + 8, false, 0), Ok(Some(5)));
    for acc in [Access::Read, Access::Write, Access::Fetch] {
        assert!(
            matches!(m.access(tb, ks + 8, acc, 1), Err(Stop::Signal(f)) if f.code == FaultCode::SegvMaperr)
        );
    }
    // Another thread's kernel stack is unreachable too, even after the TLB holds it.
    let ks_c = m.thread(tc).unwrap().kernel_stack;
    assert!(m.access(tc, ks_c, Access::Read, 0).is_err());
    assert!(matches!(
        m.kernel_access(tb, ks_c, false, 0),
        Err(Stop::KernelFault { .. })
    ));
    m.check().unwrap();
}

#[test]
fn main_stack_grows_on_fault_then_overflows() {
    let mut m = machine(64);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t = main_tid(&m, p);
    let top = m.thread(t).unwrap().stack.top();
    let v0 = m
        .process(p)
        .unwrap()
        .space()
        .find_vma(top - 1)
        .unwrap()
        .start;
    // Touch 1 MiB below the initial VMA: growth (S4), pages lazily faulted.
    m.store(t, v0 - (1 << 20), 1).unwrap();
    assert_eq!(m.counters().stack_growths, 1);
    assert_eq!(
        m.process(p)
            .unwrap()
            .space()
            .find_vma(top - 1)
            .unwrap()
            .start,
        v0 - (1 << 20)
    );
    assert_eq!(m.process(p).unwrap().rss().anon, 1);
    // A wild access far below: growth refused (beyond RLIMIT_STACK), plain SIGSEGV.
    let r = m.store(t, top - (64 << 20), 1);
    assert!(
        matches!(r, Err(Stop::Signal(f)) if f.code == FaultCode::SegvMaperr),
        "{r:?}"
    );
    // Recursion: descending a page at a time stops exactly at RLIMIT_STACK (S3: size equal
    // to the limit is allowed), reported as a stack overflow.
    let mut sp = v0 - (1 << 20);
    let r = loop {
        match m.store(t, sp, 1) {
            Ok(()) => sp -= 4096,
            Err(e) => break e,
        }
    };
    assert_eq!(r, Stop::StackOverflow { addr: sp });
    assert_eq!(sp, top - (8 << 20) - 4096);
    assert!(matches!(
        m.thread(t).unwrap().ended,
        Some(ThreadEnd::StackOverflow { .. })
    ));
    assert_eq!(m.counters().stack_overflows, 1);
    m.check().unwrap();
}

#[test]
fn pthread_stack_guard_stops_the_thread_only() {
    let mut m = machine(16);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let main = main_tid(&m, p);
    let style = StackStyle::Pthread {
        size: 64 << 10,
        guard: 4096,
    };
    let t1 = m.spawn_thread(p, style).unwrap();
    let t2 = m.spawn_thread(p, style).unwrap();
    let heap = m.mmap(p, 0, 0x1000, RW, PA, None, 0).unwrap();
    m.store(main, heap, 42).unwrap();
    let s2_top = m.thread(t2).unwrap().stack.top();
    m.store(t2, s2_top - 1, 0x22).unwrap();
    // t1 recurses: writes downward a page at a time until something stops it.
    let top = m.thread(t1).unwrap().stack.top();
    let mut sp = top - 1;
    let stop = loop {
        match m.store(t1, sp, 0x11) {
            Ok(()) => sp -= 4096,
            Err(e) => break e,
        }
    };
    let Stack::Pthread { base, .. } = m.thread(t1).unwrap().stack else {
        panic!()
    };
    assert_eq!(stop, Stop::StackOverflow { addr: sp });
    assert!(sp >= base && sp < base + 4096);
    assert!(m.thread(t1).unwrap().ended.is_some());
    // Nothing else was touched: the other stack and the heap keep their data, the
    // other threads keep running.
    assert_eq!(m.load(t2, s2_top - 1), Ok(0x22));
    assert_eq!(m.load(main, heap), Ok(42));
    assert_eq!(m.store(t1, top - 1, 0), Err(Stop::NotRunning));
    m.exit_thread(t2).unwrap();
    m.check().unwrap();
}

#[test]
fn reserve_commit_stack_grows_through_guard_then_overflows() {
    let mut m = machine(16);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let main = main_tid(&m, p);
    let t = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
    let Stack::Reserved {
        base,
        reserve,
        committed,
        ..
    } = m.thread(t).unwrap().stack
    else {
        panic!()
    };
    assert_eq!(reserve, 1 << 20);
    assert_eq!(committed, base + reserve - 4096);
    // Only the committed page is accessible; skipping past the guard is an access
    // violation, not growth (W18): a Windows exception (write, info 1), not a SIGSEGV.
    let far = committed - 16 * 4096;
    assert!(matches!(
        m.store(t, far, 1),
        Err(Stop::Exception(e)) if e.code == ExceptionCode::AccessViolation && e.info0() == 1
    ));
    assert!(m.thread(t).unwrap().ended.is_none());
    // Touch page by page downward.
    let mut sp = base + reserve - 8;
    let stop = loop {
        match m.store(t, sp, 0x5a) {
            Ok(()) => sp -= 4096,
            Err(e) => break e,
        }
    };
    assert!(matches!(stop, Stop::StackOverflow { .. }), "{stop:?}");
    // W19: the overflow fires when the guard would reach the hard guard page: with two
    // guard pages, usable = reserve - 1 page (hard guard) - 2 pages (the last guard pair,
    // handed over as ordinary memory when the overflow is raised).
    let Stack::Reserved {
        committed: c2,
        overflowed,
        ..
    } = m.thread(t).unwrap().stack
    else {
        panic!()
    };
    assert!(overflowed);
    assert_eq!(c2, base + 4096);
    assert_eq!(sp & !0xfff, base + 2 * 4096);
    assert_eq!(m.counters().guard_commits, 256 - 1 - 3);
    assert!(m.thread(main).unwrap().ended.is_none());
    m.check().unwrap();
}

#[test]
fn overflow_policy_kill_process() {
    let mut m = machine(16);
    m.policy = OverflowPolicy::KillProcess;
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let q = m.spawn(ArchKind::X86_64).unwrap();
    let tq = main_tid(&m, q);
    let t = m
        .spawn_thread(
            p,
            StackStyle::Pthread {
                size: 16384,
                guard: 4096,
            },
        )
        .unwrap();
    let Stack::Pthread { base, .. } = m.thread(t).unwrap().stack else {
        panic!()
    };
    assert_eq!(
        m.store(t, base + 10, 1),
        Err(Stop::StackOverflow { addr: base + 10 })
    );
    assert_eq!(m.process_end(p), Some(ProcessEnd::StackOverflow));
    assert!(m.process(p).is_none());
    m.store(tq, m.thread(tq).unwrap().stack.top() - 1, 1)
        .unwrap();
    m.check().unwrap();
}

#[test]
fn oom_kills_the_largest_leaker_and_others_keep_running() {
    let mut m = machine(2);
    let good = m.spawn(ArchKind::X86_64).unwrap();
    let tg = main_tid(&m, good);
    let g = m.mmap(good, 0, 0x10000, RW, PA, None, 0).unwrap();
    for i in 0..16 {
        m.store(tg, g + i * 0x1000, i as u8).unwrap();
    }
    // The leaker: "a function that leaks on every call" — a new mapping each call, written.
    let bad = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, bad);
    let mut calls = 0;
    let end = loop {
        let Ok(a) = m.mmap(bad, 0, 0x3000, RW, PA, None, 0) else {
            break None;
        };
        calls += 1;
        let mut r = Ok(());
        for i in 0..3 {
            r = m.store(tb, a + i * 0x1000, 1);
            if r.is_err() {
                break;
            }
        }
        if let Err(e) = r {
            break Some(e);
        }
    };
    assert_eq!(end, Some(Stop::OomKilled));
    assert!(calls > 100);
    assert_eq!(m.process_end(bad), Some(ProcessEnd::OomKilled));
    let rep = m.oom_reports()[0];
    assert_eq!((rep.victim, rep.faulting), (bad, bad));
    assert!(rep.victim_rss.anon > 16);
    assert!(rep.to_string().contains("Out of memory: killed process"));
    // The good process still has its data and can allocate again.
    for i in 0..16 {
        assert_eq!(m.load(tg, g + i * 0x1000), Ok(i as u8));
    }
    let h = m.mmap(good, 0, 0x1000, RW, PA, None, 0).unwrap();
    m.store(tg, h, 1).unwrap();
    m.check().unwrap();
}

#[test]
fn oom_victim_need_not_be_the_faulting_process() {
    let mut m = machine(2);
    let big = m.spawn(ArchKind::X86_64).unwrap();
    let tb = main_tid(&m, big);
    let small = m.spawn(ArchKind::X86_64).unwrap();
    let ts = main_tid(&m, small);
    let b = m.mmap(big, 0, 0x400000, RW, PA, None, 0).unwrap();
    let mut i = 0;
    while m.frames_free() > 4 {
        m.store(tb, b + i * 0x1000, 1).unwrap();
        i += 1;
    }
    let s = m.mmap(small, 0, 0x10000, RW, PA, None, 0).unwrap();
    for k in 0..16 {
        m.store(ts, s + k * 0x1000, 3).unwrap();
    }
    assert_eq!(m.process_end(big), Some(ProcessEnd::OomKilled));
    assert_eq!(m.oom_reports()[0].faulting, small);
    assert_eq!(m.load(ts, s + 0xf000), Ok(3));
    m.check().unwrap();
}

#[test]
fn i386_processes_threads_and_fork() {
    let mut m = machine(16);
    let p = m.spawn(ArchKind::I386).unwrap();
    let t = main_tid(&m, p);
    let a = m.mmap(p, 0, 0x2000, RW, PA, None, 0).unwrap();
    assert!(a < 0xc000_0000);
    m.store(t, a, 1).unwrap();
    let c = m.fork(p).unwrap();
    let tc = main_tid(&m, c);
    m.store(tc, a, 2).unwrap();
    assert_eq!(m.load(t, a), Ok(1));
    // i386 has no NX: a fetch from a readable page succeeds.
    assert_eq!(m.fetch(t, a), Ok(1));
    let ks = m.thread(t).unwrap().kernel_stack;
    assert!(ks >= 0xc000_0000);
    assert!(m.load(t, ks).is_err());
    let th = m.spawn_thread(p, StackStyle::WINDOWS_DEFAULT).unwrap();
    let top = m.thread(th).unwrap().stack.top();
    m.store(th, top - 1, 1).unwrap();
    m.store(th, top - 4097, 1).unwrap();
    m.check().unwrap();
    m.exit(c);
    m.exit(p);
    m.check().unwrap();
    assert_eq!(m.frames_used(), 1);
}

#[test]
fn nx_fetch_is_accerr_on_x86_64() {
    let mut m = machine(16);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t = main_tid(&m, p);
    let a = m.mmap(p, 0, 0x2000, RW, PA, None, 0).unwrap();
    assert!(matches!(m.fetch(t, a), Err(Stop::Signal(f)) if f.code == FaultCode::SegvAccerr));
    let x = m
        .mmap(p, 0, 0x1000, PROT_READ | PROT_EXEC, PA, None, 0)
        .unwrap();
    assert_eq!(m.fetch(t, x), Ok(0));
}

#[test]
fn shared_memory_between_parent_and_child_and_punch() {
    let mut m = machine(16);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let tp = main_tid(&m, p);
    let s = m
        .mmap(p, 0, 0x2000, RW, MAP_SHARED | MAP_ANONYMOUS, None, 0)
        .unwrap();
    m.store(tp, s, 1).unwrap();
    let c = m.fork(p).unwrap();
    let tc = main_tid(&m, c);
    assert_eq!(m.load(tc, s), Ok(1));
    m.store(tc, s + 0x1000, 2).unwrap();
    assert_eq!(m.load(tp, s + 0x1000), Ok(2));
    // MADV_REMOVE punches the object: both see zeros afterwards.
    m.madvise(p, s, 0x2000, MADV_REMOVE).unwrap();
    assert_eq!(m.load(tc, s + 0x1000), Ok(0));
    assert_eq!(m.load(tp, s), Ok(0));
    m.check().unwrap();
    m.exit(p);
    m.exit(c);
    assert_eq!(m.frames_used(), 1);
}

#[test]
fn replay_style_touches_on_an_adopted_space() {
    // What trace replay does: a space built elsewhere, touches by process, smaps after.
    use vmspace::space::{AddressSpace, SpaceConfig, TaskKind};
    let mut space = AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64));
    let top = space.layout().stack_top;
    space
        .mmap(
            top - 0x21000,
            0x21000,
            RW,
            PA | MAP_FIXED | MAP_GROWSDOWN,
            None,
            0,
        )
        .unwrap();
    let mut m = machine(16);
    let p = m.spawn_from_space(ArchKind::X86_64, space).unwrap();
    let a = m.mmap(p, 0, 0x3000, RW, PA, None, 0).unwrap();
    assert_eq!(m.touch(p, a, false, 0), Ok(Some(0)));
    assert_eq!(m.touch(p, a + 0x1000, true, 9), Ok(None));
    assert_eq!(m.touch(p, a + 0x1000, false, 0), Ok(Some(9)));
    // Below [stack]: growth, one more resident page there.
    assert_eq!(m.touch(p, top - 0x22000, true, 1), Ok(None));
    m.mprotect(p, a + 0x2000, 0x1000, PROT_NONE).unwrap();
    let f = m
        .touch(p, a + 0x2000, false, 0)
        .unwrap_err()
        .fault()
        .unwrap();
    assert_eq!(f.code, FaultCode::SegvAccerr);
    let sm = m.smaps(p).unwrap();
    let rss = |s: u64| {
        sm.iter()
            .find(|e| e.start <= s && s < e.end)
            .map(|e| (e.rss_kb, e.anon_kb))
    };
    assert_eq!(
        rss(a),
        Some((4, 4)),
        "zero page read is not resident; the write is"
    );
    assert_eq!(rss(top - 1), Some((4, 4)));
    m.check().unwrap();
}

#[test]
fn special_mappings_from_a_snapshot() {
    // [vdso] pages become resident when touched (shared by every process); [vvar] is never
    // resident and its page 1 (time namespace) raises SIGBUS, as on the reference kernel.
    use vmspace::space::{AddressSpace, ProcStat, SnapshotVma, SpaceConfig, TaskKind};
    let line = |start: u64, end: u64, perms: &[u8; 4], name: &str| SnapshotVma {
        start,
        end,
        perms: *perms,
        offset: 0,
        dev: (0, 0),
        inode: 0,
        name: name.into(),
        vmflags: None,
    };
    let vmas = [
        line(0x7fff_f7fc_1000, 0x7fff_f7fc_5000, b"r--p", "[vvar]"),
        line(0x7fff_f7fc_5000, 0x7fff_f7fc_7000, b"r-xp", "[vdso]"),
        line(0x7fff_fffd_e000, 0x7fff_ffff_f000, b"rw-p", "[stack]"),
    ];
    let cfg = SpaceConfig::linux_default(TaskKind::X86_64);
    let stat = ProcStat {
        start_stack: 0x7fff_ffff_e000,
        ..ProcStat::default()
    };
    let mut m = machine(16);
    let mut pids = Vec::new();
    for _ in 0..2 {
        let space = AddressSpace::from_snapshot(cfg.clone(), &vmas, &stat).unwrap();
        pids.push(m.spawn_from_space(ArchKind::X86_64, space).unwrap());
    }
    for &p in &pids {
        assert_eq!(m.touch(p, 0x7fff_f7fc_5010, false, 0), Ok(Some(0)));
        assert_eq!(m.touch(p, 0x7fff_f7fc_1000, false, 0), Ok(Some(0)));
        let f = m
            .touch(p, 0x7fff_f7fc_2000, false, 0)
            .unwrap_err()
            .fault()
            .unwrap();
        assert_eq!(f.code, FaultCode::BusAdrerr);
        let f = m
            .touch(p, 0x7fff_f7fc_5010, true, 1)
            .unwrap_err()
            .fault()
            .unwrap();
        assert_eq!(f.code, FaultCode::SegvAccerr);
        let sm = m.smaps(p).unwrap();
        let get = |s: u64| {
            sm.iter()
                .find(|e| e.start == s)
                .map(|e| (e.rss_kb, e.anon_kb))
        };
        assert_eq!(get(0x7fff_f7fc_5000), Some((4, 0)));
        assert_eq!(get(0x7fff_f7fc_1000), Some((0, 0)));
    }
    // One vDSO page for both processes.
    assert_eq!(m.phys().cache_pages(), 1);
    m.check().unwrap();
}

#[test]
fn main_stack_stops_a_guard_gap_above_a_mapping_below_it() {
    // S2: growth is refused within 1 MiB (stack_guard_gap) of an accessible mapping below,
    // so a runaway stack never reaches the heap-like mapping; its data stays intact.
    let mut m = machine(64);
    let p = m.spawn(ArchKind::X86_64).unwrap();
    let t = main_tid(&m, p);
    let top = m.thread(t).unwrap().stack.top();
    let bottom = m
        .process(p)
        .unwrap()
        .space()
        .find_vma(top - 1)
        .unwrap()
        .start;
    let heap = bottom - (3 << 20);
    m.mmap(p, heap, 0x1000, RW, PA | MAP_FIXED, None, 0)
        .unwrap();
    m.store(t, heap, 0x77).unwrap();
    let mut sp = bottom - 8;
    let stop = loop {
        match m.store(t, sp, 0x11) {
            Ok(()) => sp -= 4096,
            Err(e) => break e,
        }
    };
    assert_eq!(stop, Stop::StackOverflow { addr: sp });
    // The last page that could be added leaves exactly the guard gap.
    let start = m
        .process(p)
        .unwrap()
        .space()
        .find_vma(top - 1)
        .unwrap()
        .start;
    assert_eq!(start - (heap + 0x1000), 1 << 20);
    assert_eq!(m.touch(p, heap, false, 0), Ok(Some(0x77)));
    m.check().unwrap();
}

/// do_mlock returns ENOMEM at a hole before __mm_populate: the VMA before the hole is locked
/// but nothing is faulted in, and a write-only VMA keeps no anon_vma after a read (A2).
#[test]
fn mlock_over_a_hole_populates_nothing() {
    let mut m = machine(64);
    let pid = m.spawn(ArchKind::X86_64).unwrap();
    let a = m.mmap(pid, 0, 3 * 4096, PROT_WRITE, PA, None, 0).unwrap();
    m.munmap(pid, a + 2 * 4096, 4096).unwrap();
    m.touch(pid, a, false, 0).unwrap();
    let r = m.with_mm(
        pid,
        |mm, ph, t| with_mm!(mm, x => x.mlock(ph, t, a, 3 * 4096, 0)),
    );
    assert_eq!(r.unwrap(), Err(vmspace::space::Errno::ENOMEM));
    assert_eq!(m.process(pid).unwrap().rss().total(), 0);
    let v = m.process(pid).unwrap().space().find_vma(a).unwrap().clone();
    assert!(v.anon_vma.is_none());
    // Without the hole, mlock populates (write faults: a writable private VMA).
    let r = m.with_mm(
        pid,
        |mm, ph, t| with_mm!(mm, x => x.mlock(ph, t, a, 2 * 4096, 0)),
    );
    assert_eq!(r.unwrap(), Ok(()));
    assert_eq!(m.process(pid).unwrap().rss().anon, 2);
    m.check().unwrap();
}

/// mprotect(PROT_GROWSDOWN) reaches down to the start of the VMA: the page table follows, so
/// a page below `addr` written before is read-only afterwards.
#[test]
fn mprotect_growsdown_reprotects_the_whole_lower_part() {
    let mut m = machine(64);
    let pid = m.spawn(ArchKind::X86_64).unwrap();
    let a = m
        .mmap(pid, 0, 4 * 4096, RW, PA | MAP_GROWSDOWN, None, 0)
        .unwrap();
    m.touch(pid, a, true, 7).unwrap();
    m.mprotect(pid, a + 2 * 4096, 4096, PROT_READ | PROT_GROWSDOWN)
        .unwrap();
    m.check().unwrap();
    let f = m.touch(pid, a, true, 8).unwrap_err().fault().unwrap();
    assert_eq!(f.code, FaultCode::SegvAccerr);
    assert_eq!(m.touch(pid, a, false, 0).unwrap(), Some(7));
}
