//! Heaps inside a simulated process: their segments and break are the process's mappings,
//! touched blocks are resident pages of the process, a leak ends in the OOM killer, fork
//! shares the heap's pages copy-on-write.

use std::alloc::Layout;
use std::cell::RefCell;
use std::rc::Rc;
use vmspace::space::vma::flags::VM_GROWSDOWN;
use vmspace_heap::{ChunkHeap, FitPolicy, SizeClassHeap, SEGMENT_SIZE};
use vmspace_sim::heap_source::{ProcessHeapSpace, RegionKind};
use vmspace_sim::*;

/// A process whose break starts at `brk` (as after exec of a small program).
fn machine(ram: u64, arch: ArchKind, brk: u64) -> (Rc<RefCell<Machine>>, Pid, Tid) {
    let mut m = Machine::new(ram).unwrap();
    let pid = m.spawn(arch).unwrap();
    m.with_mm(
        pid,
        |mm, ph, t| with_mm!(mm, m => m.op(ph, t, |s| s.set_brk(brk, brk))),
    )
    .unwrap();
    let tid = m.process(pid).unwrap().threads[0];
    (Rc::new(RefCell::new(m)), pid, tid)
}

/// Pages `[p, p + n)` spans in the simulated process.
fn sp_pages(sp: &ProcessHeapSpace, p: *mut u8, n: usize) -> u64 {
    let s = sp.sim_addr(p).unwrap();
    ((s + n as u64 - 1) >> 12) - (s >> 12) + 1
}

fn in_vma(m: &Machine, pid: Pid, a: u64, len: u64) -> bool {
    m.process(pid)
        .unwrap()
        .space()
        .vmas()
        .any(|v| v.start <= a && a + len <= v.end)
}

#[test]
fn blocks_live_in_the_process_and_become_resident_when_touched() {
    for arch in [ArchKind::I386, ArchKind::X86_64] {
        let (m, pid, tid) = machine(64 << 20, arch, 0x0806_0000);
        let sp = ProcessHeapSpace::new(m.clone(), pid);
        let sc = SizeClassHeap::new(sp.segments());
        let mut ch = ChunkHeap::new(sp.brk(1 << 30).unwrap(), FitPolicy::Best);
        let rss0 = m.borrow().process(pid).unwrap().rss().anon;
        let mut blocks = Vec::new();
        let mut pages = std::collections::BTreeSet::new();
        for (i, n) in [24usize, 100, 3000, 9000, 200_000].iter().enumerate() {
            let l = Layout::from_size_align(*n, 8).unwrap();
            let a = sc.alloc(l);
            let b = ch.alloc(l);
            assert!(!a.is_null() && !b.is_null());
            unsafe {
                a.write_bytes(i as u8 + 1, *n);
                b.write_bytes(i as u8 + 101, *n);
            }
            for p in [a, b] {
                assert_eq!(sp.touch(tid, p, *n).unwrap(), sp_pages(&sp, p, *n));
                let s = sp.sim_addr(p).unwrap();
                pages.extend((s >> 12)..=((s + *n as u64 - 1) >> 12));
            }
            blocks.push((a, b, *n, i as u8));
        }
        let mb = m.borrow();
        for &(a, b, n, i) in &blocks {
            let (sa, sb) = (sp.sim_addr(a).unwrap(), sp.sim_addr(b).unwrap());
            assert!(in_vma(&mb, pid, sa, n as u64), "{arch:?} {sa:#x}");
            assert!(in_vma(&mb, pid, sb, n as u64), "{arch:?} {sb:#x}");
            assert_eq!(sp.host_addr(sa), Some(a));
            // Host and simulated page offsets and segment alignment agree.
            assert_eq!(sa % 4096, a as u64 % 4096);
            assert_eq!(
                sa & (SEGMENT_SIZE as u64 - 1),
                a as u64 & (SEGMENT_SIZE as u64 - 1)
            );
            assert!(sb >= 0x0806_0000);
            // The simulated memory holds the mirror's bytes where they were stored.
            let pa = mb.walk(pid, sa).unwrap().0 | (sa & 0xfff);
            let mut byte = [0u8];
            use vmspace::phys::PhysMem;
            mb.phys()
                .mem
                .read(vmspace::addr::PhysAddr::new(pa), &mut byte)
                .unwrap();
            assert_eq!(byte[0], i + 1);
        }
        let rss = mb.process(pid).unwrap().rss().anon;
        assert!(
            rss >= rss0 + pages.len() as u64,
            "{rss} {rss0} {}",
            pages.len()
        );
        assert!(sp
            .regions()
            .iter()
            .any(|r| r.kind == RegionKind::Break && r.len > 0));
        mb.check().unwrap();
        drop(mb);
        drop(sc);
        drop(ch);
        // Every segment is unmapped again; only the stack is left.
        let mb = m.borrow();
        let left: Vec<_> = mb
            .process(pid)
            .unwrap()
            .space()
            .vmas()
            .filter(|v| v.flags & VM_GROWSDOWN == 0)
            .map(|v| (v.start, v.end))
            .collect();
        assert!(left.iter().all(|&(s, _)| s < 0x0807_0000), "{left:x?}");
        mb.check().unwrap();
    }
}

#[test]
fn a_leak_ends_in_the_oom_killer_naming_the_leaking_process() {
    let (m, pid, _) = machine(8 << 20, ArchKind::I386, 0x0806_0000);
    let bystander = m.borrow_mut().spawn(ArchKind::I386).unwrap();
    let btid = m.borrow().process(bystander).unwrap().threads[0];
    let top = m.borrow().thread(btid).unwrap().stack.top();
    for p in 1..5 {
        m.borrow_mut().store(btid, top - p * 4096, 1).unwrap();
    }
    let tid = m.borrow().process(pid).unwrap().threads[0];
    let sp = ProcessHeapSpace::new(m.clone(), pid);
    let sc = SizeClassHeap::new(sp.segments());
    let l = Layout::from_size_align(64 << 10, 8).unwrap();
    let mut stop = None;
    for _ in 0..10_000 {
        let a = sc.alloc(l);
        assert!(!a.is_null());
        if let Err(s) = sp.touch(tid, a, l.size()) {
            stop = Some(s);
            break;
        }
    }
    assert_eq!(stop, Some(Stop::OomKilled));
    let mb = m.borrow();
    assert_eq!(mb.oom_reports()[0].victim, pid);
    assert_eq!(mb.process_end(pid), Some(ProcessEnd::OomKilled));
    assert!(mb.process(bystander).is_some());
    drop(mb);
    // The heap of the dead process goes away without touching the machine.
    drop(sc);
    m.borrow().check().unwrap();
}

#[test]
fn fork_shares_heap_pages_copy_on_write() {
    let (m, pid, tid) = machine(32 << 20, ArchKind::X86_64, 0x60_0000);
    let sp = ProcessHeapSpace::new(m.clone(), pid);
    let mut ch = ChunkHeap::new(sp.brk(1 << 30).unwrap(), FitPolicy::First);
    let l = Layout::from_size_align(40_000, 8).unwrap();
    let b = ch.alloc(l);
    sp.touch(tid, b, l.size()).unwrap();
    let child = m.borrow_mut().fork(pid).unwrap();
    let ctid = m.borrow().process(child).unwrap().threads[0];
    let sb = sp.sim_addr(b).unwrap();
    let before = m.borrow().counters().cow_copies;
    m.borrow_mut().store(ctid, sb + 8192, 7).unwrap();
    assert_eq!(m.borrow().counters().cow_copies, before + 1);
    assert_ne!(m.borrow_mut().load(tid, sb + 8192).unwrap(), 7);
    m.borrow().check().unwrap();
}

#[test]
fn a_refused_break_is_the_chunk_heaps_out_of_memory() {
    let (m, pid, _) = machine(8 << 20, ArchKind::I386, 0x0806_0000);
    // A mapping 1 MiB above the break: brk may not run into it.
    m.borrow_mut()
        .mmap(
            pid,
            0x0816_0000,
            4096,
            vmspace::space::abi::PROT_READ,
            vmspace::space::abi::MAP_PRIVATE
                | vmspace::space::abi::MAP_ANONYMOUS
                | vmspace::space::abi::MAP_FIXED,
            None,
            0,
        )
        .unwrap();
    let sp = ProcessHeapSpace::new(m.clone(), pid);
    let mut ch = ChunkHeap::new(sp.brk(1 << 30).unwrap(), FitPolicy::First);
    let l = Layout::from_size_align(64 << 10, 8).unwrap();
    let mut n = 0;
    while !ch.alloc(l).is_null() {
        n += 1;
        assert!(n < 100);
    }
    assert!(n >= 14, "{n}");
    let brk = m.borrow().process(pid).unwrap().space().brk_value();
    assert!(brk <= 0x0816_0000);
    assert!(sp.brk(1 << 20).is_none(), "one break per process");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Alloc { chunk: bool, size: usize },
        Free { pick: usize },
        Touch { pick: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), prop_oneof![1usize..600, 600usize..70_000, 70_000usize..300_000])
                .prop_map(|(chunk, size)| Op::Alloc { chunk, size }),
            2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
            1 => any::<usize>().prop_map(|pick| Op::Touch { pick }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever the heaps do, their blocks stay inside mappings of the process, keep their
        /// bytes, touched pages are resident, and the machine's frame accounting holds.
        #[test]
        fn blocks_stay_mapped_intact_and_accounted(
            x86 in any::<bool>(),
            ops in prop::collection::vec(op(), 1..80),
        ) {
            let arch = if x86 { ArchKind::X86_64 } else { ArchKind::I386 };
            let (m, pid, tid) = machine(32 << 20, arch, 0x0806_0000);
            let sp = ProcessHeapSpace::new(m.clone(), pid);
            let sc = SizeClassHeap::new(sp.segments());
            let mut ch = ChunkHeap::new(sp.brk(1 << 30).unwrap(), FitPolicy::First);
            let mut live: Vec<(*mut u8, usize, bool, u8)> = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Alloc { chunk, size } => {
                        let l = Layout::from_size_align(size, 8).unwrap();
                        let p = if chunk { ch.alloc(l) } else { sc.alloc(l) };
                        prop_assert!(!p.is_null());
                        let v = i as u8;
                        unsafe { p.write_bytes(v, size) };
                        prop_assert!(sp.touch(tid, p, size).is_ok());
                        live.push((p, size, chunk, v));
                    }
                    Op::Free { pick } if !live.is_empty() => {
                        let (p, _, chunk, _) = live.swap_remove(pick % live.len());
                        unsafe {
                            if chunk { ch.try_free(p).unwrap() } else { sc.try_free(p).unwrap() }
                        }
                    }
                    Op::Touch { pick } if !live.is_empty() => {
                        let (p, n, _, _) = live[pick % live.len()];
                        prop_assert!(sp.touch(tid, p, n).is_ok());
                    }
                    _ => {}
                }
                let mb = m.borrow();
                for &(p, n, _, v) in &live {
                    let a = sp.sim_addr(p).unwrap();
                    prop_assert!(in_vma(&mb, pid, a, n as u64));
                    // Every page is resident; the mirror holds the bytes, and the machine
                    // holds the byte the touch stored at the block's start.
                    for pg in (a >> 12)..=((a + n as u64 - 1) >> 12) {
                        prop_assert!(mb.walk(pid, pg << 12).is_some());
                    }
                    for b in [a, a + n as u64 - 1] {
                        let host = unsafe { sp.host_addr(b).unwrap().read() };
                        prop_assert_eq!(host, v);
                    }
                    let (f, _) = mb.walk(pid, a).unwrap();
                    let mut byte = [0u8];
                    use vmspace::phys::PhysMem;
                    mb.phys()
                        .mem
                        .read(vmspace::addr::PhysAddr::new(f | (a & 0xfff)), &mut byte)
                        .unwrap();
                    prop_assert_eq!(byte[0], v);
                }
                prop_assert!(mb.check().is_ok());
            }
            drop(sc);
            drop(ch);
            let mb = m.borrow();
            prop_assert!(mb.check().is_ok());
            let heap_vmas = mb
                .process(pid)
                .unwrap()
                .space()
                .vmas()
                .filter(|v| v.flags & VM_GROWSDOWN == 0 && v.start >= 0x0807_0000)
                .count();
            prop_assert_eq!(heap_vmas, 0);
        }
    }
}
