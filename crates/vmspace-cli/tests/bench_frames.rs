//! `vmspace bench frames --json` runs (scaled down) and prints one well-formed record per
//! case and allocator.

#[path = "support/json_lines.rs"]
mod json_lines;

#[test]
fn bench_frames_prints_every_case_for_both_allocators() {
    let records = json_lines::records(&["bench", "frames", "--json", "--scale", "0.01"]);
    assert_eq!(records.len(), 16);
    for r in &records {
        assert_eq!(r["group"], "frames");
        assert!(r["ns_per_op"].as_f64().is_some_and(|n| n > 0.0), "{r}");
        assert!(r["ops"].as_u64().is_some_and(|n| n > 0), "{r}");
    }
    for case in [
        "alloc (fragmented)",
        "alloc+free same frame",
        "alloc+free random frame",
        "free (coalescing)",
    ] {
        for name in ["vmspace-buddy", "buddy_system_allocator"] {
            assert!(
                records
                    .iter()
                    .any(|r| r["case"] == case && r["impl"] == name),
                "missing {case} / {name}"
            );
        }
    }
}
