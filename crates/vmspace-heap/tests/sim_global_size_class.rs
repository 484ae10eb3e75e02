//! A real program whose global allocator is the size-class heap on segments of a simulated
//! i386 address space: every `Vec`, `String`, `Box` and `HashMap` of this program — the
//! test's own, the threads', the standard library's — is a block in a segment (or a large
//! block) that is an anonymous mapping of the model. Checks the blocks against the model's
//! maps and the heap's statistics against the mappings.
//!
//! `harness = false`: this is `main`, with no test runner allocating beside it.

mod program;

use program::{assert_in_maps, maps, model};
use vmspace::space::AddressSpace;
use vmspace_heap::space::{SimGlobal, SimSpace, SpaceSource};
use vmspace_heap::{SizeClassHeap, SEGMENT_SIZE};

type Heap = SizeClassHeap<SpaceSource<'static, AddressSpace>>;

fn heap(s: &'static SimSpace<AddressSpace>) -> Heap {
    SizeClassHeap::new(s.source())
}

#[global_allocator]
static GLOBAL: SimGlobal<AddressSpace, Heap> = SimGlobal::new(model, heap);

/// Checks the heap's statistics against the model: the heap's mappings are the model's
/// only ones; the heap counts the pages of its segments it has touched, so its committed
/// bytes are at most the mapped bytes and at least those less a segment per segment held;
/// live bytes fit inside.
fn check_stats(space: &SimSpace<AddressSpace>, h: &Heap) -> vmspace_heap::HeapStats {
    let st = h.stats();
    let lines = maps(space);
    let mapped: u64 = lines.iter().map(|l| l.end - l.start).sum();
    let committed = st.committed_bytes as u64;
    assert!(committed <= mapped, "{committed} > {mapped}");
    assert!(
        mapped - committed < (st.segments * SEGMENT_SIZE) as u64,
        "{committed} committed of {mapped} mapped in {} segments",
        st.segments
    );
    assert!(lines
        .iter()
        .all(|l| l.start % SEGMENT_SIZE as u64 == 0 && l.name.is_empty()));
    assert!(st.segments as u64 <= mapped / SEGMENT_SIZE as u64);
    assert!(st.segments > 0);
    assert!(st.live_bytes > 0 && st.live_bytes <= st.committed_bytes);
    assert!(
        space.with(|m| m.brk_value()) == program::START_BRK,
        "the break is untouched"
    );
    st
}

fn main() {
    let w = program::work();
    let (space, h) = GLOBAL.get().expect("the simulated space is built");
    let lines = maps(space);
    for (p, len) in w.blocks() {
        assert_in_maps(space, &lines, p, len);
    }
    let before = check_stats(space, h);

    // A 1 MiB vector is a large block: a mapping of its own, counted live and committed.
    let v: Vec<u8> = vec![7; 1 << 20];
    let during = check_stats(space, h);
    let grown = during.live_bytes - before.live_bytes;
    assert!(
        (1 << 20..=(1 << 20) + SEGMENT_SIZE).contains(&grown),
        "{grown}"
    );
    assert!(during.committed_bytes >= before.committed_bytes + (1 << 20));
    assert_eq!(during.segments, before.segments + 1);
    let sim_v = space.sim(v.as_ptr()).unwrap();
    let own = maps(space)
        .into_iter()
        .find(|l| l.start <= sim_v && sim_v < l.end)
        .expect("the large block is mapped");
    assert!(own.end - own.start >= 1 << 20);
    drop(v);
    let after = check_stats(space, h);
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.committed_bytes, before.committed_bytes);

    // A block of the model (allocated while inside it) is the system allocator's.
    let text = space.with(|m| m.render_maps());
    assert!(!space.contains(text.as_ptr()));
    drop(text);

    w.verify();
    drop(w);
    h.collect();
    let end = check_stats(space, h);
    assert!(end.live_bytes < before.live_bytes);
    println!("size-class heap as the global allocator in a simulated i386 space: {end:?}");
}
