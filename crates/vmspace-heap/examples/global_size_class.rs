//! A real program whose global allocator is the size-class heap on host segments:
//! collections, strings, threads trading boxes. Prints the heap's statistics at the end.
//!
//! Run: `cargo run -p vmspace-heap --example global_size_class`

use std::sync::mpsc::channel;
use vmspace_heap::{HostSource, SizeClassHeap};

#[global_allocator]
static HEAP: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());

fn main() {
    let (tx, rx) = channel::<Vec<String>>();
    let producer = std::thread::spawn(move || {
        for i in 0..2000 {
            tx.send(
                (0..50)
                    .map(|j| format!("{i}-{j}-{}", "x".repeat(j)))
                    .collect(),
            )
            .unwrap();
        }
    });
    let mut n = 0;
    for batch in rx {
        n += batch.iter().filter(|s| s.ends_with('x')).count();
    }
    producer.join().unwrap();
    assert_eq!(n, 2000 * 49);
    let big: Vec<u64> = (0..1_000_000).collect();
    assert_eq!(big.iter().sum::<u64>(), 499_999_500_000);
    drop(big);
    HEAP.collect();
    println!("size-class heap as global allocator: {:?}", HEAP.stats());
}
