//! The 32-bit kernel's space: one kernel half shared by every process's page directory.
//!
//! A kernel mapping made once — through the kernel's directory or any process's — is seen by
//! every process (translate, and through each one's recursive window) without copying; the
//! kernel range pool is one arena; user mappings and user pools stay private; tearing a
//! process down returns its user frames and tables and never a shared table; the kernel half
//! is never user-accessible.

use proptest::prelude::*;
use vmspace::addr::{Frame, FrameRange, PhysAddr, VirtAddr};
use vmspace::arch::{PageFlags, I386};
use vmspace::paging::{PageTable, TranslateError};
use vmspace::phys::{EmulatedRam, OwnedBuddyAllocator, PhysMem};
use vmspace::range::ArenaError;
use vmspace::space::kernel::{
    KernelError, KernelLayout, KernelSpace, LayoutError, ProcessSpace, Region,
};

const RAM: u64 = 64 << 20;
const PAGE: u64 = 4096;
const RW: PageFlags = PageFlags::PRESENT.union(PageFlags::WRITABLE);
/// Physical frames the tests map as "kernel image" (never handed out by the allocator).
const IMAGE_PA: u64 = RAM - (4 << 20);

struct Machine {
    ram: EmulatedRam,
    frames: OwnedBuddyAllocator,
}

fn machine() -> Machine {
    let ram = EmulatedRam::new(PhysAddr::ZERO, RAM).unwrap();
    // The allocator manages all but the last 4 MiB, which play the kernel image.
    let managed = FrameRange::new(Frame::from_number(0).unwrap(), IMAGE_PA / PAGE).unwrap();
    let frames = OwnedBuddyAllocator::new_owned(&[managed], &[]).unwrap();
    Machine { ram, frames }
}

impl Machine {
    fn free(&self) -> u64 {
        self.frames.stats().free_frames
    }
}

fn kernel(m: &mut Machine) -> KernelSpace {
    KernelSpace::new(KernelLayout::default(), &mut m.ram, &mut m.frames).unwrap()
}

fn process(k: &mut KernelSpace, m: &mut Machine) -> ProcessSpace {
    k.new_process(&mut m.ram, &mut m.frames).unwrap()
}

fn pde(m: &Machine, pt: &PageTable<I386>, idx: u64) -> u32 {
    m.ram
        .read_u32(PhysAddr::new(pt.root().start_address().as_u64() + idx * 4))
        .unwrap()
}

/// The shared directory entries of `pt`: low memory's and the kernel half's (recursive slot
/// excluded).
fn kernel_pdes(m: &Machine, k: &KernelSpace, pt: &PageTable<I386>) -> Vec<u32> {
    let first = k.layout().split >> 22;
    let slot = k.layout().recursive_slot() as u64;
    let low = k.layout().span(Region::Low);
    (low.start >> 22..low.end >> 22)
        .chain((first..1024).filter(|&i| i != slot))
        .map(|i| pde(m, pt, i))
        .collect()
}

/// Every page mapped in the kernel half through `pt`, as (page, frame, raw entry).
fn kernel_pages(m: &Machine, k: &KernelSpace, pt: &PageTable<I386>) -> Vec<(u64, u64, u64)> {
    let win = k.layout().span(Region::PageTables);
    let split = k.layout().split;
    let mut out = Vec::new();
    pt.translate_range(&m.ram, VirtAddr::new(split), (1 << 32) - split, |t| {
        let va = t.page.as_u64();
        if va < win.start || va >= win.end {
            out.push((va, t.frame.as_u64(), t.raw));
        }
    })
    .unwrap();
    out
}

/// Reads `va`'s PTE through the recursive window of `pt` (as code running in that
/// process would, at 0xFFC00000 + (va >> 12) * 4).
fn pte_via_window(m: &Machine, pt: &PageTable<I386>, va: u64) -> (u64, u32) {
    let w = pt.arch().pte_window_address(VirtAddr::new(va)).unwrap();
    let t = pt.translate(&m.ram, w).unwrap();
    assert!(
        !t.flags.contains(PageFlags::USER),
        "the window is supervisor-only"
    );
    let at = t.phys(w);
    (at.as_u64(), m.ram.read_u32(at).unwrap())
}

#[test]
fn kernel_half_shared_across_two_processes() {
    let mut m = machine();
    let mut k = kernel(&mut m);
    assert_eq!(
        k.shared_tables(),
        256,
        "PDE 0 (low memory) and PDEs 768..=1022, 1023 is the recursive slot"
    );
    let mut a = process(&mut k, &mut m);
    let mut b = process(&mut k, &mut m);
    // Every kernel PDE is present from the start, supervisor-only, and the same in all.
    let master = kernel_pdes(&m, &k, k.page_table());
    assert_eq!(master.len(), 256);
    for raw in &master {
        assert_eq!(raw & 1, 1, "present");
        assert_eq!(
            raw & 4,
            0,
            "U/S clear: the kernel half is never user-accessible"
        );
    }
    assert_eq!(kernel_pdes(&m, &k, a.page_table()), master);
    assert_eq!(kernel_pdes(&m, &k, b.page_table()), master);
    // Each directory's recursive entry points at itself, not at the kernel's.
    for pt in [k.page_table(), a.page_table(), b.page_table()] {
        let raw = pde(&m, pt, 1023) as u64;
        assert_eq!(raw & !0xfff, pt.root().start_address().as_u64());
        assert_eq!(raw & 4, 0);
    }
    // A mapping made through the kernel after both processes exist.
    let kva = 0xC000_0000;
    k.map(
        &mut m.ram,
        &mut m.frames,
        kva,
        IMAGE_PA,
        4 * PAGE,
        RW | PageFlags::GLOBAL,
    )
    .unwrap();
    for pt in [a.page_table(), b.page_table()] {
        for i in 0..4 {
            let t = pt.translate(&m.ram, VirtAddr::new(kva + i * PAGE)).unwrap();
            assert_eq!(t.frame.as_u64(), IMAGE_PA + i * PAGE);
            assert!(!t.flags.contains(PageFlags::USER));
        }
    }
    // Through each process's recursive window: the same PTE, in the same shared table.
    let (at_a, raw_a) = pte_via_window(&m, a.page_table(), kva + PAGE);
    let (at_b, raw_b) = pte_via_window(&m, b.page_table(), kva + PAGE);
    assert_eq!(at_a, at_b, "one page table behind both directories");
    assert_eq!(raw_a, raw_b);
    assert_eq!(raw_a as u64 & !0xfff, IMAGE_PA + PAGE);
    let t = k.translate(&m.ram, kva + PAGE).unwrap();
    assert_eq!(t.entry.as_u64(), at_a);
    // A mapping made through A's directory (in the kernel range pool) is seen by B and
    // the kernel; an unmapping through B is seen by A.
    let r = k.alloc_range(2 * PAGE).unwrap();
    a.map_kernel(
        &k,
        &mut m.ram,
        &mut m.frames,
        r,
        IMAGE_PA + 0x10_0000,
        2 * PAGE,
        RW,
    )
    .unwrap();
    assert_eq!(
        b.translate(&m.ram, r + PAGE).unwrap().frame.as_u64(),
        IMAGE_PA + 0x10_1000
    );
    assert_eq!(
        k.translate(&m.ram, r).unwrap().frame.as_u64(),
        IMAGE_PA + 0x10_0000
    );
    let mut seen = Vec::new();
    b.unmap_kernel(&k, &mut m.ram, &mut m.frames, r, 2 * PAGE, |va, pa, _| {
        seen.push((va.as_u64(), pa.as_u64()))
    })
    .unwrap()
    .ignore();
    assert_eq!(
        seen,
        vec![(r, IMAGE_PA + 0x10_0000), (r + PAGE, IMAGE_PA + 0x10_1000)]
    );
    assert_eq!(
        a.translate(&m.ram, r),
        Err(KernelError::Translate(TranslateError::NotMapped(
            VirtAddr::new(r)
        )))
    );
    // The unmapping left the shared table in place (and every directory still agrees).
    assert_eq!(kernel_pdes(&m, &k, a.page_table()), master);
    assert_eq!(kernel_pdes(&m, &k, k.page_table()), master);
    // The walker's own invariants hold for all three directories.
    for pt in [k.page_table(), a.page_table(), b.page_table()] {
        pt.check_invariants(&m.ram).unwrap();
        assert_eq!(
            pt.table_pages(),
            1,
            "only the directory is counted as each one's own"
        );
    }
    // Low memory is the kernel's too: an identity map of its first pages made through the
    // kernel is seen, supervisor-only, by every process; no process may map there.
    k.map(&mut m.ram, &mut m.frames, 0x1000, 0x1000, 2 * PAGE, RW)
        .unwrap();
    for p in [&a, &b] {
        let t = p.translate(&m.ram, 0x2000).unwrap();
        assert_eq!(t.frame.as_u64(), 0x2000);
        assert!(!t.flags.contains(PageFlags::USER));
    }
    assert_eq!(pde(&m, a.page_table(), 0) & 4, 0);
    assert_eq!(
        a.map_user(&mut m.ram, &mut m.frames, 0x3000, PAGE, RW),
        Err(KernelError::NotMappable {
            va: 0x3000,
            len: PAGE
        })
    );
    k.unmap(&mut m.ram, &mut m.frames, 0x1000, 2 * PAGE, |_, _, _| {})
        .unwrap()
        .ignore();
    assert!(b.translate(&m.ram, 0x1000).is_err());
    // Only a third process, created later, is needed to show copies are made at creation
    // and need no syncing: it sees the image mapping too.
    let c = process(&mut k, &mut m);
    assert_eq!(c.translate(&m.ram, kva).unwrap().frame.as_u64(), IMAGE_PA);
    for p in [a, b, c] {
        k.destroy_process(p, &mut m.ram, &mut m.frames).unwrap();
    }
}

#[test]
fn kernel_range_pool_is_one_arena_user_pools_are_per_process() {
    let mut m = machine();
    let mut k = kernel(&mut m);
    let mut a = process(&mut k, &mut m);
    let mut b = process(&mut k, &mut m);
    // "In A's context" a system call takes a kernel range ...
    let r = k.alloc_range(3 * PAGE).unwrap();
    assert!(k.layout().span(Region::KernelPool).holds(r, 3 * PAGE));
    // ... and in B's context that range is taken.
    assert_eq!(
        k.alloc_range_at(r + PAGE, PAGE),
        Err(KernelError::Range(ArenaError::NoSpace))
    );
    assert!(k.pool().is_allocated(r + 2 * PAGE));
    let r2 = k.alloc_range(PAGE).unwrap();
    assert!(r2 + PAGE <= r || r2 >= r + 3 * PAGE);
    // The same user range in both processes: each has its own pool.
    let u = 0x5000_0000;
    assert_eq!(a.alloc_range_at(u, 1 << 20).unwrap(), u);
    assert_eq!(b.alloc_range_at(u, 1 << 20).unwrap(), u);
    assert_eq!(
        a.alloc_range_at(u, PAGE),
        Err(KernelError::Range(ArenaError::NoSpace))
    );
    assert_eq!(
        a.alloc_range(1).unwrap() % (64 << 10),
        0,
        "64 KiB granularity (W1)"
    );
    // Bad frees: typed, nothing changed.
    assert_eq!(
        k.free_range(r, 3 * PAGE)
            .and_then(|_| k.free_range(r, 3 * PAGE)),
        Err(KernelError::Range(ArenaError::DoubleFree))
    );
    assert_eq!(
        b.free_range(0x6000_0000, 1 << 20),
        Err(KernelError::Range(ArenaError::DoubleFree))
    );
    for p in [a, b] {
        k.destroy_process(p, &mut m.ram, &mut m.frames).unwrap();
    }
}

#[test]
fn user_mappings_stay_private() {
    let mut m = machine();
    let mut k = kernel(&mut m);
    let mut a = process(&mut k, &mut m);
    let mut b = process(&mut k, &mut m);
    let va = 0x4000_0000;
    a.map_user(&mut m.ram, &mut m.frames, va, 2 * PAGE, RW)
        .unwrap();
    let ta = a.translate(&m.ram, va).unwrap();
    assert!(ta.flags.contains(PageFlags::USER));
    assert_eq!(
        b.translate(&m.ram, va),
        Err(KernelError::Translate(TranslateError::NotMapped(
            VirtAddr::new(va)
        )))
    );
    m.ram.write(ta.frame, b"secret").unwrap();
    b.map_user(&mut m.ram, &mut m.frames, va, PAGE, RW).unwrap();
    let tb = b.translate(&m.ram, va).unwrap();
    assert_ne!(tb.frame, ta.frame);
    let mut buf = [0xffu8; 6];
    m.ram.read(tb.frame, &mut buf).unwrap();
    assert_eq!(
        buf, [0; 6],
        "a fresh user frame is zeroed: nothing crosses processes"
    );
    // The user PDE is private to A's directory, and user-accessible.
    let pa = pde(&m, a.page_table(), va >> 22);
    assert_ne!(pa, pde(&m, b.page_table(), va >> 22));
    assert_eq!(pa & 4, 4);
    // Nothing leaked into the kernel half or the kernel's directory.
    assert!(kernel_pages(&m, &k, k.page_table()).is_empty());
    assert_eq!(pde(&m, k.page_table(), va >> 22), 0);
    for p in [a, b] {
        k.destroy_process(p, &mut m.ram, &mut m.frames).unwrap();
    }
}

#[test]
fn destroying_a_process_returns_its_frames_and_tables_but_no_kernel_table() {
    let mut m = machine();
    let mut k = kernel(&mut m);
    let a = process(&mut k, &mut m);
    let stack = k.alloc_stack(&mut m.ram, &mut m.frames).unwrap();
    let before = m.free();
    let mut c = process(&mut k, &mut m);
    assert_eq!(
        before - m.free(),
        1,
        "a new process costs one directory, nothing else"
    );
    // User pages over three directory entries, and a heap.
    c.map_user(&mut m.ram, &mut m.frames, 0x0040_0000, 3 * PAGE, RW)
        .unwrap();
    c.map_user(&mut m.ram, &mut m.frames, 0x4040_0000 - PAGE, 2 * PAGE, RW)
        .unwrap();
    let h = c.heap_break();
    c.set_heap_break(&mut m.ram, &mut m.frames, h + 5 * PAGE + 1)
        .unwrap()
        .ignore();
    assert_eq!(c.heap_break(), h + 6 * PAGE);
    // A kernel mapping through C's directory outlives C.
    let v = k.alloc_range(PAGE).unwrap();
    c.map_kernel(&k, &mut m.ram, &mut m.frames, v, IMAGE_PA, PAGE, RW)
        .unwrap();
    let tables = c.page_table().table_pages();
    assert_eq!(
        tables,
        1 + 4,
        "directory + tables for PDEs 1, 16 (heap start), 256 and 257"
    );
    let t = k.destroy_process(c, &mut m.ram, &mut m.frames).unwrap();
    assert_eq!(t.frames, 3 + 2 + 6);
    assert_eq!(t.tables, tables);
    assert_eq!(
        m.free(),
        before,
        "every user frame and user table came back"
    );
    assert_eq!(a.translate(&m.ram, v).unwrap().frame.as_u64(), IMAGE_PA);
    assert_eq!(
        a.translate(&m.ram, stack.page).unwrap().frame.as_u64(),
        stack.frame
    );
    assert_eq!(
        kernel_pdes(&m, &k, a.page_table()),
        kernel_pdes(&m, &k, k.page_table())
    );
    assert!(kernel_pdes(&m, &k, k.page_table())
        .iter()
        .all(|e| e & 1 == 1));
    k.page_table().check_invariants(&m.ram).unwrap();
    // The kernel half cannot go while A shares it; after A it gives everything back.
    k.free_stack(&mut m.ram, &mut m.frames, stack)
        .unwrap()
        .ignore();
    k.destroy_process(a, &mut m.ram, &mut m.frames).unwrap();
    let mut image = Vec::new();
    let start = machine().free();
    k.destroy(&mut m.ram, &mut m.frames, |va, pa, _| {
        image.push((va.as_u64(), pa.as_u64()))
    })
    .unwrap();
    assert_eq!(
        image,
        vec![(v, IMAGE_PA)],
        "the caller's frames are handed back, not freed"
    );
    assert_eq!(
        m.free(),
        start,
        "every shared table and the kernel's directory came back"
    );
}

#[test]
fn kernel_cannot_be_torn_down_under_a_process() {
    let mut m = machine();
    let mut k = kernel(&mut m);
    let _a = process(&mut k, &mut m);
    assert_eq!(
        k.destroy(&mut m.ram, &mut m.frames, |_, _, _| {}),
        Err(KernelError::ProcessesAlive(1))
    );
}

#[test]
fn kernel_stacks_one_page_with_a_guard_below_visible_everywhere() {
    let mut m = machine();
    let layout = KernelLayout::default().with(Region::KernelStacks, 0xC100_0000, 0xC100_6000);
    let mut k = KernelSpace::new(layout, &mut m.ram, &mut m.frames).unwrap();
    assert_eq!(k.stack_capacity(), 3);
    let a = process(&mut k, &mut m);
    let s: Vec<_> = (0..3)
        .map(|_| k.alloc_stack(&mut m.ram, &mut m.frames).unwrap())
        .collect();
    assert_eq!(
        k.alloc_stack(&mut m.ram, &mut m.frames),
        Err(KernelError::Range(ArenaError::NoSpace))
    );
    let b = process(&mut k, &mut m);
    for st in &s {
        assert_eq!(st.page, st.guard + PAGE);
        assert_eq!(st.top(), st.guard + 2 * PAGE);
        for pt in [a.page_table(), b.page_table()] {
            let t = pt.translate(&m.ram, VirtAddr::new(st.page)).unwrap();
            assert_eq!(t.frame.as_u64(), st.frame);
            assert!(t.flags.contains(PageFlags::WRITABLE));
            assert!(!t.flags.contains(PageFlags::USER));
            assert!(
                pt.translate(&m.ram, VirtAddr::new(st.guard)).is_err(),
                "guard unmapped"
            );
        }
    }
    k.free_stack(&mut m.ram, &mut m.frames, s[1])
        .unwrap()
        .ignore();
    assert_eq!(
        k.free_stack(&mut m.ram, &mut m.frames, s[1]),
        Err(KernelError::NotAStack { guard: s[1].guard })
    );
    let mut forged = s[0];
    forged.frame += PAGE;
    assert_eq!(
        k.free_stack(&mut m.ram, &mut m.frames, forged),
        Err(KernelError::NotAStack { guard: s[0].guard })
    );
    assert_eq!(k.stacks_in_use(), 2);
    let again = k.alloc_stack(&mut m.ram, &mut m.frames).unwrap();
    assert_eq!(again.guard, s[1].guard, "the freed slot is reused");
    for p in [a, b] {
        k.destroy_process(p, &mut m.ram, &mut m.frames).unwrap();
    }
}

#[test]
fn kernel_heap_and_vmalloc_are_shared() {
    let mut m = machine();
    let mut k = kernel(&mut m);
    let a = process(&mut k, &mut m);
    let start = k.heap_break();
    assert_eq!(start, 0xC180_0000);
    k.set_heap_break(&mut m.ram, &mut m.frames, start + 3 * PAGE)
        .unwrap()
        .ignore();
    let t = a.translate(&m.ram, start + 2 * PAGE).unwrap();
    assert!(!t.flags.contains(PageFlags::USER));
    assert_eq!(
        k.set_heap_break(&mut m.ram, &mut m.frames, 0xE000_1000),
        Err(KernelError::BreakOutOfRange { brk: 0xE000_1000 })
    );
    k.set_heap_break(&mut m.ram, &mut m.frames, start + PAGE)
        .unwrap()
        .ignore();
    assert!(a.translate(&m.ram, start + PAGE).is_err());
    let v = k.vmalloc(&mut m.ram, &mut m.frames, 5000).unwrap();
    assert!(a.translate(&m.ram, v + PAGE).is_ok());
    assert_eq!(
        k.free_range(v, 2 * PAGE),
        Err(KernelError::NotMappable {
            va: v,
            len: 2 * PAGE
        }),
        "a vmalloc range goes back with vfree"
    );
    k.vfree(&mut m.ram, &mut m.frames, v).unwrap().ignore();
    assert_eq!(
        k.vfree(&mut m.ram, &mut m.frames, v),
        Err(KernelError::NotMappable { va: v, len: 0 })
    );
    assert!(a.translate(&m.ram, v).is_err());
    k.destroy_process(a, &mut m.ram, &mut m.frames).unwrap();
}

#[test]
fn bad_requests_are_typed_and_change_nothing() {
    let mut m = machine();
    let mut k = kernel(&mut m);
    let mut a = process(&mut k, &mut m);
    let free = m.free();
    let e = k.map(
        &mut m.ram,
        &mut m.frames,
        0xC000_0000,
        IMAGE_PA,
        PAGE,
        RW | PageFlags::USER,
    );
    assert_eq!(e, Err(KernelError::UserAccessible { va: 0xC000_0000 }));
    for (va, len) in [
        (0x4000_0000, PAGE),     // user half
        (0xFFC0_0000, PAGE),     // the recursive window
        (0xC100_0000, PAGE),     // kernel stacks: managed by alloc_stack
        (0xC0FF_F000, 2 * PAGE), // across two regions
        (0xC000_0000, 0),        // empty
        (0xFFFF_F000, u64::MAX), // wraps
    ] {
        assert_eq!(
            k.map(&mut m.ram, &mut m.frames, va, IMAGE_PA, len, RW),
            Err(KernelError::NotMappable { va, len })
        );
    }
    for (va, len) in [
        (0, PAGE),
        (0x0030_0000, PAGE),
        (0xC000_0000, PAGE),
        (0xBFFF_F000, 2 * PAGE),
    ] {
        assert_eq!(
            a.map_user(&mut m.ram, &mut m.frames, va, len, RW),
            Err(KernelError::NotMappable { va, len })
        );
    }
    assert_eq!(
        a.map_kernel(
            &k,
            &mut m.ram,
            &mut m.frames,
            0xC000_0000,
            IMAGE_PA,
            PAGE,
            RW | PageFlags::USER
        ),
        Err(KernelError::UserAccessible { va: 0xC000_0000 })
    );
    assert!(matches!(
        k.map(&mut m.ram, &mut m.frames, 0xC000_0800, IMAGE_PA, PAGE, RW),
        Err(KernelError::Map(_))
    ));
    assert_eq!(m.free(), free);
    assert!(kernel_pages(&m, &k, k.page_table()).is_empty());
    let bad = KernelLayout::default().with(Region::KernelHeap, 0xC100_0000, 0xE000_0000);
    assert_eq!(
        KernelSpace::new(bad, &mut m.ram, &mut m.frames).map(|_| ()),
        Err(KernelError::Layout(LayoutError::Overlap(
            Region::KernelStacks,
            Region::KernelHeap
        )))
    );
    assert_eq!(m.free(), free);
    k.destroy_process(a, &mut m.ram, &mut m.frames).unwrap();
}

#[test]
fn out_of_frames_at_boot_gives_everything_back() {
    let mut ram = EmulatedRam::new(PhysAddr::ZERO, 1 << 20).unwrap();
    let all = FrameRange::new(Frame::from_number(0).unwrap(), 200).unwrap();
    let mut frames = OwnedBuddyAllocator::new_owned(&[all], &[]).unwrap();
    let free = frames.stats().free_frames;
    assert_eq!(
        KernelSpace::new(KernelLayout::default(), &mut ram, &mut frames).map(|_| ()),
        Err(KernelError::OutOfFrames)
    );
    assert_eq!(frames.stats().free_frames, free);
}

#[test]
fn a_2g_split_with_its_window_at_slot_512_shares_the_same_way() {
    let layout = KernelLayout::default()
        .with_split(0x8000_0000)
        .with(Region::UserPool, 0x4000_0000, 0x8000_0000)
        .with(Region::PageTables, 0x8000_0000, 0x8040_0000)
        .with(Region::KernelBinary, 0x8040_0000, 0xC100_0000)
        .with(Region::KernelPool, 0xE000_0000, 1 << 32);
    let mut m = machine();
    let mut k = KernelSpace::new(layout, &mut m.ram, &mut m.frames).unwrap();
    assert_eq!(k.shared_tables(), 512);
    let a = process(&mut k, &mut m);
    k.map(&mut m.ram, &mut m.frames, 0xFFFF_F000, IMAGE_PA, PAGE, RW)
        .unwrap();
    let (at, raw) = pte_via_window(&m, a.page_table(), 0xFFFF_F000);
    assert_eq!(raw as u64 & !0xfff, IMAGE_PA);
    assert_eq!(at, k.translate(&m.ram, 0xFFFF_F000).unwrap().entry.as_u64());
    k.destroy_process(a, &mut m.ram, &mut m.frames).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    NewProcess,
    Destroy(usize),
    /// Map `n` pages at page `page` of the kernel range pool, through directory `via`
    /// (0 = the kernel's, i = process i - 1).
    Map {
        via: usize,
        page: u64,
        n: u64,
    },
    Unmap {
        via: usize,
        page: u64,
        n: u64,
    },
    UserMap {
        via: usize,
        page: u64,
    },
    Vmalloc(u64),
    Vfree(usize),
    Stack,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::NewProcess),
        1 => (0usize..8).prop_map(Op::Destroy),
        4 => (0usize..6, 0u64..3000, 1u64..2000).prop_map(|(via, page, n)| Op::Map { via, page, n }),
        3 => (0usize..6, 0u64..3000, 1u64..2000).prop_map(|(via, page, n)| Op::Unmap { via, page, n }),
        1 => (1usize..6, 0u64..512).prop_map(|(via, page)| Op::UserMap { via, page }),
        1 => (1u64..3000).prop_map(Op::Vmalloc),
        1 => (0usize..8).prop_map(Op::Vfree),
        1 => Just(Op::Stack),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// Random kernel maps and unmaps through random directories, processes coming and
    /// going: after every step all directories agree on the kernel half (same entries, same
    /// pages, the same as the kernel's), no kernel page or entry is user-accessible, every
    /// hierarchy passes its invariants; at the end every frame is back.
    #[test]
    fn all_directories_agree_on_the_kernel_half(ops in prop::collection::vec(op(), 1..40)) {
        let mut m = machine();
        let start = m.free();
        let mut k = kernel(&mut m);
        // The raw maps work in a range taken from the pool first; vmalloc gets the rest.
        let pool = k.alloc_range(5000 * PAGE).unwrap();
        let mut procs: Vec<ProcessSpace> = vec![process(&mut k, &mut m), process(&mut k, &mut m)];
        let mut vm: Vec<u64> = Vec::new();
        let mut stacks = Vec::new();
        for o in ops {
            let touched = match &o {
                Op::Map { page, n, .. } | Op::Unmap { page, n, .. } => Some(pool + (page + n / 2) * PAGE),
                _ => None,
            };
            match o {
                Op::NewProcess => procs.push(process(&mut k, &mut m)),
                Op::Destroy(i) if !procs.is_empty() => {
                    let p = procs.remove(i % procs.len());
                    k.destroy_process(p, &mut m.ram, &mut m.frames).unwrap();
                }
                Op::Map { via, page, n } => {
                    let (va, pa) = (pool + page * PAGE, IMAGE_PA + (page % 512) * PAGE);
                    let n = n.min((IMAGE_PA + (4 << 20) - pa) / PAGE);
                    let r = if via == 0 || procs.is_empty() {
                        k.map(&mut m.ram, &mut m.frames, va, pa, n * PAGE, RW)
                    } else {
                        let i = (via - 1) % procs.len();
                        let p = &mut procs[i];
                        p.map_kernel(&k, &mut m.ram, &mut m.frames, va, pa, n * PAGE, RW)
                    };
                    // Clashes with earlier pages are refused whole.
                    prop_assert!(matches!(r, Ok(()) | Err(KernelError::Map(_))), "{:?}", r);
                }
                Op::Unmap { via, page, n } => {
                    let va = pool + page * PAGE;
                    let r = if via == 0 || procs.is_empty() {
                        k.unmap(&mut m.ram, &mut m.frames, va, n * PAGE, |_, _, _| {})
                    } else {
                        let i = (via - 1) % procs.len();
                        let p = &mut procs[i];
                        p.unmap_kernel(&k, &mut m.ram, &mut m.frames, va, n * PAGE, |_, _, _| {})
                    };
                    r.unwrap().ignore();
                }
                Op::UserMap { via, page } if !procs.is_empty() => {
                    let i = (via - 1) % procs.len();
                        let p = &mut procs[i];
                    let _ = p.map_user(&mut m.ram, &mut m.frames, 0x4000_0000 + page * 0x10_0000, PAGE, RW);
                }
                Op::Vmalloc(n) => {
                    if let Ok(b) = k.vmalloc(&mut m.ram, &mut m.frames, n * PAGE) {
                        vm.push(b);
                    }
                }
                Op::Vfree(i) if !vm.is_empty() => {
                    let b = vm.remove(i % vm.len());
                    k.vfree(&mut m.ram, &mut m.frames, b).unwrap().ignore();
                }
                Op::Stack => {
                    stacks.push(k.alloc_stack(&mut m.ram, &mut m.frames).unwrap());
                }
                _ => {}
            }
            // Every step: the same kernel entries everywhere (so the same tables), and the
            // pages this step touched translate the same through every directory.
            let want_pdes = kernel_pdes(&m, &k, k.page_table());
            for pde in &want_pdes {
                prop_assert_eq!(pde & 5, 1, "kernel PDE absent or user-accessible");
            }
            for p in &procs {
                prop_assert_eq!(&kernel_pdes(&m, &k, p.page_table()), &want_pdes);
            }
            if let Some(va) = touched {
                let want = k.translate(&m.ram, va).ok();
                for p in &procs {
                    prop_assert_eq!(p.translate(&m.ram, va).ok(), want);
                }
            }
        }
        // At the end, every page of the kernel half, walked through every directory.
        let want_pages = kernel_pages(&m, &k, k.page_table());
        for (va, _, raw) in &want_pages {
            prop_assert_eq!(raw & 4, 0, "kernel page {:#x} user-accessible", va);
        }
        k.page_table().check_invariants(&m.ram).unwrap();
        for p in &procs {
            prop_assert_eq!(&kernel_pages(&m, &k, p.page_table()), &want_pages);
            p.page_table().check_invariants(&m.ram).unwrap();
        }
        for s in stacks {
            k.free_stack(&mut m.ram, &mut m.frames, s).unwrap().ignore();
        }
        for p in procs {
            k.destroy_process(p, &mut m.ram, &mut m.frames).unwrap();
        }
        k.destroy(&mut m.ram, &mut m.frames, |_, _, _| {}).unwrap();
        prop_assert_eq!(m.free(), start, "every frame is back");
    }
}
