//! Property tests: random mmap/munmap/mprotect/mremap/madvise/touch/fork/exit sequences on
//! the machine, with every invariant checked after every step (each frame's refcount equals
//! its mappings, RSS equals present pages, free + used = RAM, no page outside its VMA or
//! above its rights) and every access compared with the space's own content model (the
//! oracle: `AddressSpace::touch` on a shadow copy of each process's space).

use proptest::prelude::*;
use std::collections::BTreeMap;
use vmspace::space::abi::*;
use vmspace::space::AddressSpace;
use vmspace_sim::*;

#[derive(Clone, Debug)]
enum Op {
    Mmap {
        p: usize,
        pages: u64,
        prot: u64,
        shared: bool,
    },
    Munmap {
        p: usize,
        r: usize,
        off: u64,
        pages: u64,
    },
    Mprotect {
        p: usize,
        r: usize,
        off: u64,
        pages: u64,
        prot: u64,
    },
    Mremap {
        p: usize,
        r: usize,
        pages: u64,
    },
    Dontneed {
        p: usize,
        r: usize,
        off: u64,
        pages: u64,
    },
    Touch {
        p: usize,
        r: usize,
        page: u64,
        write: bool,
        value: u8,
    },
    Fork {
        p: usize,
    },
    Exit {
        p: usize,
    },
}

fn prot() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(PROT_READ | PROT_WRITE),
        Just(PROT_READ | PROT_WRITE),
        Just(PROT_READ),
        Just(PROT_NONE),
        Just(PROT_WRITE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0usize..4;
    let r = 0usize..6;
    prop_oneof![
        (p.clone(), 1u64..6, prot(), prop::bool::weighted(0.2)).prop_map(
            |(p, pages, prot, shared)| Op::Mmap {
                p,
                pages,
                prot,
                shared
            }
        ),
        (p.clone(), r.clone(), 0u64..4, 1u64..3).prop_map(|(p, r, off, pages)| Op::Munmap {
            p,
            r,
            off,
            pages
        }),
        (p.clone(), r.clone(), 0u64..4, 1u64..3, prot()).prop_map(|(p, r, off, pages, prot)| {
            Op::Mprotect {
                p,
                r,
                off,
                pages,
                prot,
            }
        }),
        (p.clone(), r.clone(), 1u64..8).prop_map(|(p, r, pages)| Op::Mremap { p, r, pages }),
        (p.clone(), r.clone(), 0u64..4, 1u64..3).prop_map(|(p, r, off, pages)| Op::Dontneed {
            p,
            r,
            off,
            pages
        }),
        (p.clone(), r.clone(), 0u64..6, any::<bool>(), any::<u8>()).prop_map(
            |(p, r, page, write, value)| Op::Touch {
                p,
                r,
                page,
                write,
                value
            }
        ),
        (p.clone(), r.clone(), 0u64..6, any::<bool>(), any::<u8>()).prop_map(
            |(p, r, page, write, value)| Op::Touch {
                p,
                r,
                page,
                write,
                value
            }
        ),
        (p.clone(), r, 0u64..6, any::<bool>(), any::<u8>()).prop_map(
            |(p, r, page, write, value)| Op::Touch {
                p,
                r,
                page,
                write,
                value
            }
        ),
        p.clone().prop_map(|p| Op::Fork { p }),
        p.prop_map(|p| Op::Exit { p }),
    ]
}

/// A process as the test tracks it: oracle space, regions mapped, has shared mappings.
type Shadow = (AddressSpace, Vec<(u64, u64)>, bool);

struct World {
    m: Machine,
    arch: ArchKind,
    procs: BTreeMap<Pid, Shadow>,
}

impl World {
    fn pid(&self, i: usize) -> Option<Pid> {
        self.procs.keys().nth(i % self.procs.len().max(1)).copied()
    }

    fn region(&self, pid: Pid, r: usize) -> Option<(u64, u64)> {
        let regs = &self.procs[&pid].1;
        if regs.is_empty() {
            None
        } else {
            Some(regs[r % regs.len()])
        }
    }

    /// Drops oracles of processes the machine ended (OOM).
    fn reap(&mut self) {
        let gone: Vec<Pid> = self
            .procs
            .keys()
            .filter(|p| self.m.process(**p).is_none())
            .copied()
            .collect();
        for p in gone {
            self.procs.remove(&p);
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if self.procs.is_empty() {
            let pid = self.m.spawn(self.arch).unwrap();
            let space = self.m.process(pid).unwrap().space().clone();
            self.procs.insert(pid, (space, Vec::new(), false));
        }
        match *op {
            Op::Mmap {
                p,
                pages,
                prot,
                shared,
            } => {
                let pid = self.pid(p).unwrap();
                let fl = if shared {
                    MAP_SHARED | MAP_ANONYMOUS
                } else {
                    MAP_PRIVATE | MAP_ANONYMOUS
                };
                let r = self.m.mmap(pid, 0, pages * 4096, prot, fl, None, 0);
                let o = self.procs.get_mut(&pid).unwrap();
                let e = o.0.mmap(0, pages * 4096, prot, fl, None, 0);
                prop_assert_eq!(r.as_ref().ok(), e.as_ref().ok());
                if let Ok(a) = r {
                    o.1.push((a, pages * 4096));
                    o.2 |= shared;
                }
            }
            Op::Munmap { p, r, off, pages } => {
                let pid = self.pid(p).unwrap();
                if let Some((a, _)) = self.region(pid, r) {
                    let (s, l) = (a + off * 4096, pages * 4096);
                    let x = self.m.munmap(pid, s, l).is_ok();
                    let y = self.procs.get_mut(&pid).unwrap().0.munmap(s, l).is_ok();
                    prop_assert_eq!(x, y);
                }
            }
            Op::Mprotect {
                p,
                r,
                off,
                pages,
                prot,
            } => {
                let pid = self.pid(p).unwrap();
                if let Some((a, _)) = self.region(pid, r) {
                    let (s, l) = (a + off * 4096, pages * 4096);
                    let x = self.m.mprotect(pid, s, l, prot).is_ok();
                    let y = self
                        .procs
                        .get_mut(&pid)
                        .unwrap()
                        .0
                        .mprotect(s, l, prot)
                        .is_ok();
                    prop_assert_eq!(x, y);
                }
            }
            Op::Mremap { p, r, pages } => {
                let pid = self.pid(p).unwrap();
                if let Some((a, len)) = self.region(pid, r) {
                    let x = self.m.mremap(pid, a, len, pages * 4096, MREMAP_MAYMOVE, 0);
                    let o = self.procs.get_mut(&pid).unwrap();
                    let y = o.0.mremap(a, len, pages * 4096, MREMAP_MAYMOVE, 0);
                    prop_assert_eq!(x.as_ref().ok(), y.as_ref().ok());
                    if let Ok(n) = x {
                        o.1.push((n, pages * 4096));
                    }
                }
            }
            Op::Dontneed { p, r, off, pages } => {
                let pid = self.pid(p).unwrap();
                if let Some((a, _)) = self.region(pid, r) {
                    let (s, l) = (a + off * 4096, pages * 4096);
                    let x = self.m.madvise(pid, s, l, MADV_DONTNEED).is_ok();
                    let y = self
                        .procs
                        .get_mut(&pid)
                        .unwrap()
                        .0
                        .madvise(s, l, MADV_DONTNEED)
                        .is_ok();
                    prop_assert_eq!(x, y);
                }
            }
            Op::Touch {
                p,
                r,
                page,
                write,
                value,
            } => {
                let pid = self.pid(p).unwrap();
                if let Some((a, _)) = self.region(pid, r) {
                    let addr = a + page * 4096 + (value as u64 * 13) % 4096;
                    let tid = self.m.process(pid).unwrap().threads[0];
                    let got = self.m.access(
                        tid,
                        addr,
                        if write { Access::Write } else { Access::Read },
                        value,
                    );
                    let o = self.procs.get_mut(&pid).unwrap();
                    let want = o.0.touch(addr, write, value);
                    match got {
                        Err(Stop::OomKilled) | Err(Stop::OutOfMemory) => {}
                        Err(Stop::StackOverflow { .. }) => {}
                        Ok(v) => {
                            // Shared memory written by another process is not in the oracle.
                            let shared_vma = o.0.find_vma(addr).is_some_and(|v| {
                                v.flags & vmspace::space::vma::flags::VM_SHARED != 0
                            });
                            if !shared_vma {
                                prop_assert_eq!(Ok(v), want, "touch {:#x} write {}", addr, write);
                            } else {
                                prop_assert!(want.is_ok());
                            }
                        }
                        Err(e) => prop_assert_eq!(e.fault(), want.err(), "touch {:#x}", addr),
                    }
                }
            }
            Op::Fork { p } => {
                let pid = self.pid(p).unwrap();
                if self.procs.len() < 5 {
                    if let Ok(c) = self.m.fork(pid) {
                        let o = &self.procs[&pid];
                        let copy = (o.0.dup_for_fork(), o.1.clone(), o.2);
                        self.procs.insert(c, copy);
                    }
                }
            }
            Op::Exit { p } => {
                let pid = self.pid(p).unwrap();
                if self.procs.len() > 1 {
                    self.m.exit(pid);
                    self.procs.remove(&pid);
                }
            }
        }
        self.reap();
        self.m.check().map_err(TestCaseError::fail)?;
        for (pid, o) in &self.procs {
            let p = self.m.process(*pid).unwrap();
            // The VMAs follow the oracle's exactly.
            let a: Vec<_> = p
                .space()
                .vmas()
                .map(|v| (v.start, v.end, v.flags))
                .collect();
            let b: Vec<_> = o.0.vmas().map(|v| (v.start, v.end, v.flags)).collect();
            prop_assert_eq!(a, b);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_step(
        ops in prop::collection::vec(op(), 1..60),
        small in any::<bool>(),
        i386 in any::<bool>(),
    ) {
        // A small machine also runs into the OOM killer.
        let ram = if small { 256 << 10 } else { 16 << 20 };
        let arch = if i386 { ArchKind::I386 } else { ArchKind::X86_64 };
        let mut w = World { m: Machine::new(ram).unwrap(), arch, procs: BTreeMap::new() };
        for op in &ops {
            w.step(op)?;
        }
        let pids: Vec<Pid> = w.procs.keys().copied().collect();
        for p in pids {
            w.m.exit(p);
        }
        w.m.check().map_err(TestCaseError::fail)?;
        prop_assert_eq!(w.m.frames_used(), 1);
    }
}
