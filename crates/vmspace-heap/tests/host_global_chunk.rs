//! A real program whose global allocator is the chunk heap (best fit) on a host break
//! region (`HostBrk`): every allocation of the program — the test's own, the threads', the
//! standard library's — is a chunk of the region. Checks the blocks against the region and
//! the statistics against a known allocation.
//!
//! `harness = false`: this is `main`, with no test runner allocating beside it.

mod program;

use vmspace_heap::{FitPolicy, HostBrk, LockedChunkHeap};

#[global_allocator]
static GLOBAL: LockedChunkHeap<HostBrk> =
    LockedChunkHeap::new(HostBrk::lazy(1 << 32), FitPolicy::Best);

fn main() {
    let w = program::work();
    let (start, end) = GLOBAL.lock().region().expect("the heap has grown");
    for (p, len) in w.blocks() {
        let a = p as usize;
        assert!(start <= a && a + len <= end, "{a:#x} outside the region");
    }
    let before = GLOBAL.lock().stats();
    GLOBAL.lock().check_invariants().expect("consistent");
    assert_eq!(before.committed_bytes, end - start);
    let v: Vec<u8> = vec![7; 1 << 20];
    let during = GLOBAL.lock().stats();
    let grown = during.live_bytes - before.live_bytes;
    assert!((1 << 20..(1 << 20) + 64).contains(&grown), "{grown}");
    drop(v);
    assert_eq!(GLOBAL.lock().stats().live_bytes, before.live_bytes);
    w.verify();
    drop(w);
    let st = GLOBAL.lock().stats();
    GLOBAL.lock().check_invariants().expect("consistent");
    assert!(st.live_bytes < before.live_bytes);
    println!("chunk heap as the global allocator on the host: {st:?}");
}
