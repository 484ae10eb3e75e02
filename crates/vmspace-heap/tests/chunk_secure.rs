//! The chunk heap's `secure` checks: a use-after-free write into a free chunk's links or
//! footer, or into the link of a block parked in the block cache, is caught when the chunk
//! next leaves its bin or the cache or is merged with, reported as
//! corrupted metadata, and the program stops (checked in a child process: this test binary
//! re-runs itself for the one case).

use std::alloc::Layout;
use std::process::Command;
use vmspace_heap::chunk::DEFER;
use vmspace_heap::{ArenaBrk, ChunkHeap, FitPolicy, HostSource, SizeClassHeap};

/// This test binary, like every test binary of the crate, runs on the size-class heap.
#[global_allocator]
static GLOBAL: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());

const CHILD: &str = "VMSPACE_CHUNK_SECURE_CASE";

fn l(n: usize) -> Layout {
    Layout::from_size_align(n, 8).unwrap()
}

/// In the child: corrupts the heap as `case` says, then makes the heap use the metadata.
fn corrupt(case: &str) {
    let mut h = ChunkHeap::new(
        ArenaBrk::from_static(vec![0u8; 1 << 20].leak()),
        FitPolicy::Best,
    );
    let a = h.alloc(l(100));
    let _g1 = h.alloc(l(16));
    let b = h.alloc(l(100));
    let _g2 = h.alloc(l(16));
    unsafe {
        match case {
            "link" => {
                h.free(a);
                h.free(b); // the bin: b -> a
                           // use after free: b's forward link (its payload's first word)
                (b as *mut usize).write(0x4141_4141_4141_4140);
                h.alloc(l(100)); // pops b: its link is checked first
            }
            "footer" => {
                let c = h.alloc(l(100)); // right after _g2
                h.free(b); // b's footer lies in _g2's prev_foot
                           // use after free: the last word of b's payload is that footer
                (b.add(96) as *mut usize).write(48);
                let _ = c;
                h.free(_g2); // merges with b: the footer must match b's head
            }
            "cache" => {
                // a deferred free of a small block parks it in the block cache once
                // DEFER more frees are queued
                let small: Vec<_> = (0..=DEFER).map(|_| h.alloc(l(40))).collect();
                let _g3 = h.alloc(l(16));
                for &p in &small {
                    h.free_deferred(p, 40);
                }
                // use after free: the cached block's link (its payload's first word)
                (small[0] as *mut usize).write(0x4141_4141_4141_4140);
                h.alloc(l(40)); // pops it: its link is checked first
            }
            _ => unreachable!(),
        }
    }
    println!("not caught");
}

fn run(case: &str, test: &str) {
    if let Ok(c) = std::env::var(CHILD) {
        if c == case {
            corrupt(case);
        }
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("heap metadata corrupted"),
        "{case}: status {:?}, stderr {err}, stdout {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!out.status.success());
}

#[test]
fn a_free_chunk_link_overwritten_after_free_is_caught() {
    run("link", "a_free_chunk_link_overwritten_after_free_is_caught");
}

#[test]
fn a_free_chunk_footer_overwritten_after_free_is_caught() {
    run(
        "footer",
        "a_free_chunk_footer_overwritten_after_free_is_caught",
    );
}

#[test]
fn a_cached_block_link_overwritten_after_free_is_caught() {
    run(
        "cache",
        "a_cached_block_link_overwritten_after_free_is_caught",
    );
}
