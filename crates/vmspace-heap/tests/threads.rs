//! Two threads allocating and freeing each other's blocks: through the global allocator
//! (this test binary runs on the size-class heap) and through an explicit heap instance.

use std::alloc::Layout;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use vmspace_heap::{HostSource, SizeClassHeap};

#[global_allocator]
static GLOBAL: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn boxes_cross_threads_through_the_global_heap() {
    let (tx_a, rx_b) = sync_channel::<Vec<Box<[u8]>>>(8);
    let (tx_b, rx_a) = sync_channel::<Vec<Box<[u8]>>>(8);
    let worker = move |id: u8,
                       tx: std::sync::mpsc::SyncSender<Vec<Box<[u8]>>>,
                       rx: std::sync::mpsc::Receiver<Vec<Box<[u8]>>>| {
        let mut seed = 0x1234_5678 + id as u64;
        let mut kept: Vec<Box<[u8]>> = Vec::new();
        for round in 0..300u32 {
            let batch: Vec<Box<[u8]>> = (0..64)
                .map(|_| {
                    let n = (rng(&mut seed) % 3000) as usize + 1;
                    vec![id.wrapping_add(round as u8); n].into_boxed_slice()
                })
                .collect();
            tx.send(batch).unwrap();
            let got = rx.recv().unwrap();
            for b in &got {
                let v = b[0];
                assert!(b.iter().all(|&x| x == v), "a block was overwritten");
            }
            // keep some for a while, drop the rest here (cross-thread frees)
            kept.extend(got.into_iter().step_by(4));
            if kept.len() > 500 {
                kept.drain(..250);
            }
            let mut local: Vec<Vec<u64>> = (0..32).map(|i| vec![i; (i as usize) * 7 + 1]).collect();
            local.retain(|v| v.len() % 2 == 0);
        }
    };
    let a = std::thread::spawn(move || worker(1, tx_a, rx_a));
    let b = std::thread::spawn(move || worker(2, tx_b, rx_b));
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn an_explicit_heap_collects_remote_frees_and_reaches_zero_live() {
    let heap = Arc::new(SizeClassHeap::new(HostSource::new()));
    let (tx, rx) = sync_channel::<Vec<usize>>(16);
    let h1 = heap.clone();
    let producer = std::thread::spawn(move || {
        let mut seed = 99u64;
        for _ in 0..500 {
            let v: Vec<usize> = (0..100)
                .map(|_| {
                    let n = (rng(&mut seed) % 9000) as usize + 1;
                    let p = h1.alloc(Layout::from_size_align(n, 8).unwrap());
                    unsafe { p.write_bytes(0xa5, n) };
                    p as usize
                })
                .collect();
            tx.send(v).unwrap();
            // churn locally as well
            for i in 1..50 {
                let p = h1.alloc(Layout::from_size_align(i * 16, 16).unwrap());
                unsafe { h1.try_free(p) }.unwrap();
            }
        }
    });
    let h2 = heap.clone();
    let consumer = std::thread::spawn(move || {
        for v in rx {
            for p in v {
                let p = p as *mut u8;
                assert_eq!(unsafe { *p }, 0xa5);
                unsafe { h2.try_free(p) }.unwrap();
            }
        }
    });
    producer.join().unwrap();
    consumer.join().unwrap();
    // The producer's local heap was abandoned on thread exit, with remote frees still
    // arriving; a new thread adopts it (with its segments) and collects them.
    let h3 = heap.clone();
    std::thread::spawn(move || {
        let p = h3.alloc(Layout::from_size_align(24, 8).unwrap());
        unsafe { h3.try_free(p) }.unwrap();
        h3.collect();
        assert_eq!(h3.stats().live_bytes, 0, "every remote free was collected");
    })
    .join()
    .unwrap();
    assert!(heap.stats().committed_bytes > 0);
}

/// Both heaps serve as the global allocator of a real program: the examples are built with
/// the tests; run them and check they finish cleanly.
#[test]
fn the_example_programs_run_on_each_heap() {
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    for name in ["global_size_class", "global_chunk"] {
        let path = examples.join(name);
        if !path.exists() {
            eprintln!("{} not built; skipped", path.display());
            continue;
        }
        let out = std::process::Command::new(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("as global allocator"));
    }
}

/// A double free through the global allocator stops the program with a clear message
/// (checked in a child process: this test binary re-runs itself for this one test), also
/// when a use-after-free write between the two frees overwrote the freed block's free-list
/// link with the address of a live block: the block's state is in its segment's bitmap.
#[test]
fn a_double_free_through_the_global_allocator_aborts_with_a_message() {
    const CHILD: &str = "VMSPACE_HEAP_DOUBLE_FREE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let l = Layout::from_size_align(48, 8).unwrap();
        unsafe {
            let live = std::alloc::alloc(l);
            let p = std::alloc::alloc(l);
            std::alloc::dealloc(p, l);
            // the use-after-free write: a plausible link, then junk
            p.write_bytes(0x41, 48);
            (p as *mut usize).write(live as usize);
            std::alloc::dealloc(p, l);
        }
        return; // not reached: the second free aborts
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_double_free_through_the_global_allocator_aborts_with_a_message",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vmspace-heap: double free of 0x"), "{err}");
}

/// Freeing, through the global allocator, a pointer whose 64 KiB-aligned segment base is
/// unmapped reports a foreign pointer instead of faulting on the missing header (child
/// process, as above).
#[test]
fn freeing_an_unmapped_pointer_through_the_global_allocator_is_reported() {
    const CHILD: &str = "VMSPACE_HEAP_UNMAPPED_FREE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let l = Layout::from_size_align(48, 8).unwrap();
        unsafe {
            let len = 1 << 20;
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(m, libc::MAP_FAILED);
            libc::munmap(m, len);
            std::alloc::dealloc((m as *mut u8).add(len / 2 + 16), l);
        }
        return; // not reached: the free reports and aborts
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "freeing_an_unmapped_pointer_through_the_global_allocator_is_reported",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Aborted (SIGABRT) with the message, not killed by SIGSEGV.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vmspace-heap: free of a pointer this heap never handed out: 0x"),
        "{err}"
    );
}
