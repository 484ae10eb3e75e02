//! A real program whose global allocator is the chunk heap (best fit) on the program break
//! of a simulated i386 address space: every `Vec`, `String`, `Box` and `HashMap` of this
//! program — the test's own, the threads', the standard library's — is a block of the
//! chunk heap, inside the model's `[heap]` mapping. Checks the blocks against the model's
//! maps and the heap's statistics against the break.
//!
//! `harness = false`: this is `main`, with no test runner allocating beside it.

mod program;

use program::{assert_in_maps, maps, model, START_BRK};
use std::alloc::Layout;
use vmspace::space::AddressSpace;
use vmspace_heap::space::{SimGlobal, SimSpace, SpaceBrk};
use vmspace_heap::{FitPolicy, LockedChunkHeap};

type Heap = LockedChunkHeap<SpaceBrk<'static, AddressSpace>>;

fn heap(s: &'static SimSpace<AddressSpace>) -> Heap {
    LockedChunkHeap::new(s.brk_source().expect("break set"), FitPolicy::Best)
}

#[global_allocator]
static GLOBAL: SimGlobal<AddressSpace, Heap> = SimGlobal::new(model, heap);

/// Checks the heap's statistics against the model: committed bytes are the break's
/// distance from its start, the `[heap]` line spans them, live bytes fit inside.
fn check_stats(space: &SimSpace<AddressSpace>, h: &Heap) -> vmspace_heap::HeapStats {
    let st = h.lock().stats();
    h.lock().check_invariants().expect("chunk heap consistent");
    let brk = space.with(|m| m.brk_value());
    assert_eq!(st.committed_bytes as u64, brk - START_BRK);
    let lines = maps(space);
    let heap_line = lines
        .iter()
        .find(|l| l.name == "[heap]")
        .expect("a [heap] line");
    assert_eq!(heap_line.start, START_BRK);
    assert_eq!(heap_line.end, (brk + 4095) & !4095);
    assert!(st.live_bytes > 0 && st.live_bytes <= st.committed_bytes);
    assert_eq!(st.segments, 0);
    st
}

fn main() {
    let w = program::work();
    let (space, h) = GLOBAL.get().expect("the simulated space is built");
    let lines = maps(space);
    for (p, len) in w.blocks() {
        assert_eq!(assert_in_maps(space, &lines, p, len), "[heap]");
    }
    let before = check_stats(space, h);

    // A 1 MiB vector: the live count grows by its chunk, the break grows to hold it.
    let v: Vec<u8> = vec![7; 1 << 20];
    let during = check_stats(space, h);
    let grown = during.live_bytes - before.live_bytes;
    assert!((1 << 20..(1 << 20) + 64).contains(&grown), "{grown}");
    assert_in_maps(space, &maps(space), v.as_ptr(), v.len());
    drop(v);
    let after = check_stats(space, h);
    assert_eq!(after.live_bytes, before.live_bytes);

    // A block of the model (allocated while inside it) is the system allocator's, outside
    // the space; freeing it from here goes back there.
    let text = space.with(|m| m.render_maps());
    assert!(!space.contains(text.as_ptr()));
    drop(text);
    // And an aligned block of the program is the heap's.
    let l = Layout::from_size_align(5000, 4096).unwrap();
    // SAFETY: a nonzero layout, freed with it.
    unsafe {
        let p = std::alloc::alloc(l);
        assert_eq!(p as usize % 4096, 0);
        assert_in_maps(space, &maps(space), p, 5000);
        std::alloc::dealloc(p, l);
    }

    w.verify();
    drop(w);
    let end = check_stats(space, h);
    assert!(end.live_bytes < before.live_bytes);
    println!("chunk heap as the global allocator in a simulated i386 space: {end:?}");
    println!("{}", space.with(|m| m.render_maps()));
}
