//! `vmspace bench range --json` runs (scaled down) and prints, for every live-segment count,
//! one alloc+free-pair record (case `N`) and one random-free record (case `N/random-free`)
//! per implementation, the peers with their ratio to instant-fit.

#[path = "support/json_lines.rs"]
mod json_lines;

const IMPLS: [&str; 6] = [
    "vmspace-instant-fit",
    "vmspace-best-fit",
    "vmspace-next-fit",
    "free-list",
    "range-alloc",
    "btreemap-best-fit",
];

#[test]
fn bench_range_prints_both_patterns_for_every_impl() {
    let records = json_lines::records(&["bench", "range", "--json", "--scale", "0.0005"]);
    // Scaled live counts: 10, 10 (10,000 × 0.0005 → at least 10), 50, 500.
    assert_eq!(records.len(), 4 * 2 * IMPLS.len());
    for r in &records {
        assert_eq!(r["group"], "range");
        assert!(r["ns_per_op"].as_f64().is_some_and(|n| n > 0.0), "{r}");
        let case = r["case"].as_str().expect("case");
        let (count, pattern) = match case.split_once('/') {
            Some((n, p)) => (n, p),
            None => (case, "alloc-free-pair"),
        };
        assert!(count.parse::<u64>().is_ok(), "live count first in {case}");
        assert_eq!(r["pattern"], pattern, "{r}");
        let name = r["impl"].as_str().expect("impl");
        assert!(IMPLS.contains(&name), "{name}");
        assert_eq!(
            r.get("ratio_to_instant_fit").is_some(),
            name != "vmspace-instant-fit",
            "{r}"
        );
    }
    for case in ["500", "500/random-free"] {
        for name in IMPLS {
            assert!(
                records
                    .iter()
                    .any(|r| r["case"] == case && r["impl"] == name),
                "{case} {name}"
            );
        }
    }
}
