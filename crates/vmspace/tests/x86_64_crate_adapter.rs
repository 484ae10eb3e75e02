//! The buddy allocator as the `x86_64` crate's frame allocator: an `OffsetPageTable` of that
//! crate maps, translates and unmaps pages with frames (data and page tables) from vmspace,
//! and gives its empty tables back through the deallocator.
//!
//! "Physical memory" is a page-aligned host buffer: physical address `p` lives at host address
//! `buffer + p`, so the buffer's address is the physical-memory offset the crate adds to every
//! physical address it dereferences.

use vmspace::addr::{Frame, FrameRange};
use vmspace::phys::x86_64_crate::from_x86_64_frame;
use vmspace::phys::{FrameAllocator as _, OwnedBuddyAllocator};
use x86_64::structures::paging::mapper::{CleanUp, MappedFrame, TranslateResult};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, Size2MiB,
    Size4KiB, Translate,
};
use x86_64::VirtAddr;

/// 4 MiB of emulated RAM: 1024 frames, enough for an order-9 (2 MiB) block.
const FRAMES: usize = 1024;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct HostPage([u8; 4096]);

/// RAM at host addresses, zeroed, and the buddy allocator over its frames (frame 0 reserved,
/// as firmware would have it).
fn setup() -> (Vec<HostPage>, OwnedBuddyAllocator) {
    let ram = vec![HostPage([0; 4096]); FRAMES];
    let all = FrameRange::new(Frame::from_number(0).unwrap(), FRAMES as u64).unwrap();
    let low = FrameRange::new(Frame::from_number(0).unwrap(), 1).unwrap();
    let frames = OwnedBuddyAllocator::new_owned(&[all], &[low]).unwrap();
    (ram, frames)
}

#[test]
fn offset_page_table_maps_with_vmspace_frames() {
    let (mut ram, mut frames) = setup();
    let free0 = frames.stats().free_frames;
    let offset = VirtAddr::new(ram.as_mut_ptr() as u64);

    let l4_frame = FrameAllocator::<Size4KiB>::allocate_frame(&mut frames).unwrap();
    let l4_index = (l4_frame.start_address().as_u64() / 4096) as usize;
    assert!(l4_index > 0 && l4_index < FRAMES);
    let l4_ptr = ram[l4_index].0.as_mut_ptr().cast::<PageTable>();
    // SAFETY: `l4_ptr` points to a zeroed, 4 KiB-aligned page of `ram`, which outlives the
    // mapper; no other reference to that page exists while the mapper holds this one.
    let l4 = unsafe { &mut *l4_ptr };
    // SAFETY: every frame the allocator hands out is a page of `ram`, which starts at host
    // address `offset`, so physical address `p` is mapped at `offset + p` as the crate needs.
    let mut mapper = unsafe { OffsetPageTable::new(l4, offset) };

    // Pages spread over several level-4, level-3 and level-2 entries, so that the mapper
    // allocates page tables as well.
    let starts = [0x40_0000u64, 0x7fff_c000, 0xc000_0000, 0x7f00_0000_0000];
    let mut mapped = Vec::new();
    for (k, &base) in starts.iter().enumerate() {
        for i in 0..8u64 {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(base + i * 4096));
            let frame = FrameAllocator::<Size4KiB>::allocate_frame(&mut frames).unwrap();
            let flags = F::PRESENT
                | F::WRITABLE
                | if k % 2 == 0 {
                    F::NO_EXECUTE
                } else {
                    F::empty()
                };
            // SAFETY: the frame is fresh from the allocator and mapped nowhere else.
            unsafe { mapper.map_to(page, frame, flags, &mut frames) }
                .unwrap()
                .ignore();
            mapped.push((page, frame, flags));
        }
    }
    // A 2 MiB page with an order-9 block.
    let huge = Page::<Size2MiB>::containing_address(VirtAddr::new(0x4000_0000));
    let huge_frame = FrameAllocator::<Size2MiB>::allocate_frame(&mut frames).unwrap();
    assert_eq!(huge_frame.start_address().as_u64() % (2 << 20), 0);
    // SAFETY: as above.
    unsafe { mapper.map_to(huge, huge_frame, F::PRESENT | F::WRITABLE, &mut frames) }
        .unwrap()
        .ignore();

    let s = frames.stats();
    // Level-3 tables: for 0..512 GiB and for 0x7f00_0000_0000; level-2: for each of the
    // first four GiB (the second holds the 2 MiB page and the run up to 2 GiB, the third the
    // rest of that run) and the last; level-1: one per run, two for the one crossing 2 GiB.
    // All of them came from vmspace.
    let tables = s.allocated_frames - 1 - mapped.len() as u64 - 512;
    assert_eq!(tables, 2 + 5 + 5);
    frames.check_invariants().unwrap();

    for &(page, frame, flags) in &mapped {
        match mapper.translate(page.start_address() + 0x123u64) {
            TranslateResult::Mapped {
                frame: MappedFrame::Size4KiB(f),
                offset,
                flags: got,
            } => {
                assert_eq!(f, frame);
                assert_eq!(offset, 0x123);
                assert_eq!(got & (F::PRESENT | F::WRITABLE | F::NO_EXECUTE), flags);
            }
            other => panic!("{page:?}: {other:?}"),
        }
        // The frame is an allocated head in vmspace, with one owner.
        assert_eq!(frames.ref_count(from_x86_64_frame(frame)), Ok(1));
    }
    assert_eq!(
        mapper.translate_addr(VirtAddr::new(0x4000_0000 + 0x12_3456)),
        Some(huge_frame.start_address() + 0x12_3456u64)
    );
    assert_eq!(mapper.translate_addr(VirtAddr::new(0x1000)), None);

    // Unmap everything and give the data frames back, then the empty tables.
    for &(page, frame, _) in &mapped {
        let (f, flush) = mapper.unmap(page).unwrap();
        flush.ignore();
        assert_eq!(f, frame);
        frames.deallocate(from_x86_64_frame(f), 0).unwrap();
    }
    let (f, flush) = mapper.unmap(huge).unwrap();
    flush.ignore();
    frames.deallocate_x86_64_frame(f).unwrap();
    assert_eq!(frames.stats().allocated_frames, 1 + tables);
    // SAFETY: nothing is mapped any more, so no table the clean-up frees is in use.
    unsafe { mapper.clean_up(&mut frames) };
    assert_eq!(
        frames.stats().allocated_frames,
        1,
        "only the level-4 table is left"
    );
    frames.deallocate(from_x86_64_frame(l4_frame), 0).unwrap();
    assert_eq!(frames.stats().free_frames, free0);
    frames.check_invariants().unwrap();
}
