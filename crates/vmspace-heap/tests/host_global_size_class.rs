//! A real program whose global allocator is the size-class heap on host segments
//! (`HostSource`): every allocation of the program — the test's own, the threads', the
//! standard library's — is a block of the heap. Checks the statistics against known
//! allocations.
//!
//! `harness = false`: this is `main`, with no test runner allocating beside it.

mod program;

use vmspace_heap::{HostSource, SizeClassHeap, SEGMENT_SIZE};

#[global_allocator]
static GLOBAL: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());

fn main() {
    let w = program::work();
    // Every block the work keeps is the heap's: it frees without complaint at the end, and
    // a foreign pointer is refused.
    let mut on_stack = 0u64;
    assert!(unsafe { GLOBAL.try_free(&mut on_stack as *mut u64 as *mut u8) }.is_err());
    let before = GLOBAL.stats();
    assert!(before.live_bytes > 0 && before.live_bytes <= before.committed_bytes);
    let v: Vec<u8> = vec![7; 1 << 20];
    let during = GLOBAL.stats();
    let grown = during.live_bytes - before.live_bytes;
    assert!(
        (1 << 20..=(1 << 20) + SEGMENT_SIZE).contains(&grown),
        "{grown}"
    );
    assert_eq!(during.segments, before.segments + 1);
    drop(v);
    assert_eq!(GLOBAL.stats().live_bytes, before.live_bytes);
    w.verify();
    drop(w);
    GLOBAL.collect();
    let st = GLOBAL.stats();
    assert!(st.live_bytes < before.live_bytes);
    println!("size-class heap as the global allocator on the host: {st:?}");
}
