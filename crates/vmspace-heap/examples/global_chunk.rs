//! A real program whose global allocator is the chunk heap (best fit) on a host break
//! region: collections, strings, threads. Prints the heap's statistics at the end.
//!
//! Run: `cargo run -p vmspace-heap --example global_chunk`

use std::collections::{BTreeMap, HashMap};
use vmspace_heap::{FitPolicy, HostBrk, LockedChunkHeap};

#[global_allocator]
static HEAP: LockedChunkHeap<HostBrk> =
    LockedChunkHeap::new(HostBrk::lazy(1 << 32), FitPolicy::Best);

fn main() {
    let mut words: HashMap<String, usize> = HashMap::new();
    let text = "the quick brown fox jumps over the lazy dog ".repeat(2000);
    for w in text.split_whitespace() {
        *words.entry(w.to_string()).or_default() += 1;
    }
    assert_eq!(words["the"], 4000);
    let handles: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let mut m = BTreeMap::new();
                for i in 0..20_000u64 {
                    m.insert(i * 7 + t, vec![i as u8; (i % 300) as usize]);
                }
                m.retain(|k, _| k % 3 == 0);
                m.values().map(|v| v.len()).sum::<usize>()
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    let st = HEAP.lock().stats();
    HEAP.lock()
        .check_invariants()
        .expect("chunk heap consistent");
    println!("chunk heap as global allocator: {st:?}");
}
