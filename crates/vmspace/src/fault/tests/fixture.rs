//! The world the fault tests run in: emulated RAM full of garbage under a buddy allocator
//! that can be told to fail, an address space with its page table, short forms of the
//! calls every test makes, and the invariants every test ends with.

use crate::addr::{Frame, FrameRange, PhysAddr};
use crate::arch::{Arch, I386, X86_64};
use crate::fault::{FaultError, Mm, Phys, RefFrames};
use crate::paging::NoTlb;
use crate::phys::{EmulatedRam, FrameAllocator, OwnedBuddyAllocator, PhysError};
use crate::space::abi::*;
use crate::space::{FaultCode, SpaceConfig, TaskKind};
use alloc::collections::BTreeMap;

/// A frame allocator that fails every allocation once `budget` reaches 0.
pub(crate) struct Flaky {
    pub inner: OwnedBuddyAllocator,
    pub budget: Option<u64>,
}

impl FrameAllocator for Flaky {
    fn allocate(&mut self, order: u8) -> Result<Frame, PhysError> {
        if let Some(b) = &mut self.budget {
            if *b == 0 {
                return Err(PhysError::OutOfMemory { order });
            }
            *b -= 1;
        }
        self.inner.allocate(order)
    }
    fn deallocate(&mut self, frame: Frame, order: u8) -> Result<(), PhysError> {
        self.inner.deallocate(frame, order)
    }
}

impl RefFrames for Flaky {
    fn inc_ref(&mut self, f: Frame) -> Result<u32, PhysError> {
        self.inner.inc_ref(f)
    }
    fn put(&mut self, f: Frame) -> Result<bool, PhysError> {
        RefFrames::put(&mut self.inner, f)
    }
    fn ref_count(&self, f: Frame) -> Result<u32, PhysError> {
        self.inner.ref_count(f)
    }
    fn free_frames(&self) -> u64 {
        self.inner.stats().free_frames
    }
}

/// The physical memory of the tests.
pub(crate) type P = Phys<EmulatedRam, Flaky>;

/// RAM of [`setup`]'s machine.
pub(crate) const RAM: u64 = 8 << 20;
/// Read and write.
pub(crate) const RW: u64 = PROT_READ | PROT_WRITE;
/// Private anonymous memory.
pub(crate) const PA: u64 = MAP_PRIVATE | MAP_ANONYMOUS;
/// Shared anonymous memory.
pub(crate) const SA: u64 = MAP_SHARED | MAP_ANONYMOUS;

/// `ram` bytes of emulated RAM filled with 0xa5 (so that a frame handed out unzeroed
/// shows), all of it free in a buddy allocator that does not fail until told to.
pub(crate) fn phys(ram: u64) -> P {
    let base = PhysAddr::new(0);
    let mut mem = EmulatedRam::new(base, ram).unwrap();
    for i in 0..ram / 4096 {
        mem.frame_mut(Frame::from_number(i).unwrap())
            .unwrap()
            .fill(0xa5);
    }
    let all = FrameRange::new(Frame::from_number(0).unwrap(), ram / 4096).unwrap();
    let inner = OwnedBuddyAllocator::new_owned(&[all], &[]).unwrap();
    Phys::new(
        mem,
        Flaky {
            inner,
            budget: None,
        },
    )
    .unwrap()
}

/// A Linux x86-64 task's address space in `p`.
pub(crate) fn mm64(p: &mut P) -> Mm<X86_64> {
    Mm::new(X86_64, SpaceConfig::linux_default(TaskKind::X86_64), p).unwrap()
}

/// A native i386 task's address space in `p`.
pub(crate) fn mm32(p: &mut P) -> Mm<I386> {
    Mm::new(
        I386::new(),
        SpaceConfig::linux_default(TaskKind::I386Native),
        p,
    )
    .unwrap()
}

/// [`RAM`] bytes of physical memory and an x86-64 task in it.
pub(crate) fn setup() -> (P, Mm<X86_64>) {
    let mut p = phys(RAM);
    let mm = mm64(&mut p);
    (p, mm)
}

/// [`RAM`] bytes of physical memory and an i386 task in it.
pub(crate) fn setup_i386() -> (P, Mm<I386>) {
    let mut p = phys(RAM);
    let mm = mm32(&mut p);
    (p, mm)
}

/// `mmap(NULL, len, prot, flags)` of anonymous memory, which must succeed: where the
/// kernel put it.
pub(crate) fn map<A: Arch>(mm: &mut Mm<A>, p: &mut P, len: u64, prot: u64, flags: u64) -> u64 {
    mm.mmap(p, &mut NoTlb, 0, len, prot, flags, None, 0)
        .unwrap()
}

/// `mmap(at, len, prot, flags | MAP_FIXED)` of anonymous memory, which must succeed: a
/// mapping at `at`, replacing what was there.
pub(crate) fn map_at<A: Arch>(
    mm: &mut Mm<A>,
    p: &mut P,
    at: u64,
    len: u64,
    prot: u64,
    flags: u64,
) -> u64 {
    mm.mmap(p, &mut NoTlb, at, len, prot, flags | MAP_FIXED, None, 0)
        .unwrap()
}

/// Runs `f` with at most `budget` frame allocations succeeding (`None`: no limit), then
/// lifts the limit; what `f` returned.
pub(crate) fn with_budget<R>(p: &mut P, budget: Option<u64>, f: impl FnOnce(&mut P) -> R) -> R {
    p.frames.budget = budget;
    let r = f(p);
    p.frames.budget = None;
    r
}

/// The byte page `page` of the test pattern holds at offset `off` (never 0).
pub(crate) fn byte(page: u64, off: u64) -> u8 {
    (page.wrapping_mul(31) ^ off.wrapping_mul(7) ^ 0x5a) as u8 | 1
}

/// The offsets in a page [`write`] and [`assert_pattern`] touch.
const OFFS: [u64; 4] = [0, 1, 2047, 4095];

/// Writes the test pattern of pages `0..n` into `[at, at + n pages)`.
pub(crate) fn write<A: Arch>(mm: &mut Mm<A>, p: &mut P, at: u64, n: u64) {
    for i in 0..n {
        for off in OFFS {
            mm.touch(p, &mut NoTlb, at + i * 4096 + off, true, byte(i, off))
                .unwrap();
        }
    }
}

/// Pages `0..n` of the pattern are readable at `at`.
pub(crate) fn assert_pattern<A: Arch>(mm: &mut Mm<A>, p: &mut P, at: u64, n: u64) {
    for i in 0..n {
        for off in OFFS {
            let a = at + i * 4096 + off;
            assert_eq!(
                mm.touch(p, &mut NoTlb, a, false, 0),
                Ok(Some(byte(i, off))),
                "{a:#x}"
            );
        }
    }
}

/// A read at `at` raises SIGSEGV with SEGV_MAPERR: nothing is mapped there.
pub(crate) fn assert_unmapped<A: Arch>(mm: &mut Mm<A>, p: &mut P, at: u64) {
    match mm.touch(p, &mut NoTlb, at, false, 0) {
        Err(FaultError::Signal(f)) => assert_eq!(f.code, FaultCode::SegvMaperr, "{at:#x}"),
        r => panic!("{at:#x} readable: {r:?}"),
    }
}

/// Every frame's reference count equals its mappings (plus one for the page cache), RSS
/// equals present pages, and allocated frames = zero page + tables + mapped/cached frames.
pub(crate) fn check_all<A: Arch>(p: &P, mms: &[&Mm<A>]) {
    let zero = p.zero_page();
    let mut refs: BTreeMap<Frame, u32> = BTreeMap::new();
    let mut tables = 0;
    for mm in mms {
        mm.check(p).unwrap();
        tables += mm.page_table().table_pages();
        for (_, f, _) in mm.user_pages(&p.mem) {
            if f != zero {
                *refs.entry(f).or_default() += 1;
            }
        }
    }
    for (_, _, f) in p.cache_entries() {
        *refs.entry(f).or_default() += 1;
    }
    for (f, n) in &refs {
        assert_eq!(p.frames.ref_count(*f), Ok(*n), "refcount of {f:?}");
    }
    let st = p.frames.inner.stats();
    assert_eq!(
        st.allocated_frames,
        1 + tables + refs.len() as u64,
        "frames in use"
    );
    assert_eq!(st.free_frames + st.allocated_frames, RAM / 4096);
    p.frames.inner.check_invariants().unwrap();
}

/// Every task has exited: the only frame still allocated is the zero page.
pub(crate) fn assert_only_zero_page(p: &P) {
    assert_eq!(
        p.frames.inner.stats().allocated_frames,
        1,
        "only the zero page"
    );
}
