//! `vmspace capacity` end to end: the JSON is one object per layout and parses, the Linux
//! columns' largest heap and mapping are what `vmspace layout` computes for the same space,
//! the table names every layout, and bad arguments are refused.

use serde_json::Value;
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "vmspace {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn capacity(args: &[&str]) -> Vec<Value> {
    let mut a = vec!["capacity", "--json"];
    a.extend_from_slice(args);
    stdout(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn json_has_one_object_per_layout_and_every_field() {
    let rows = capacity(&[]);
    let names: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["kernel"].as_str().unwrap().to_string(),
                r["layout"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("native", "legacy"),
        ("native", "topdown"),
        ("native", "reserve-commit"),
        ("compat", "legacy"),
        ("compat", "topdown"),
        ("compat", "reserve-commit"),
    ];
    assert_eq!(
        names,
        want.iter()
            .map(|(k, l)| (k.to_string(), l.to_string()))
            .collect::<Vec<_>>()
    );
    for r in &rows {
        assert_eq!(r["heap"], 512u64 << 20);
        assert_eq!(r["stack"], 1u64 << 20);
        assert_eq!(r["heap_fits"], true);
        let threads = r["threads"].as_u64().unwrap();
        assert!(threads > 1000, "{r}");
        assert_eq!(
            r["page_table_bytes"].as_u64().unwrap(),
            r["page_table_pages"].as_u64().unwrap() * 4096
        );
        // Every stack and the heap fit in the task size.
        let used = threads * (1 << 20) + (512u64 << 20);
        assert!(used <= r["task_size"].as_u64().unwrap());
        let gran = if r["layout"] == "reserve-commit" {
            65536
        } else {
            4096
        };
        assert_eq!(r["granularity"], gran);
        assert_eq!(
            r["threads_growsdown"].is_null(),
            r["layout"] == "reserve-commit"
        );
    }
    // Top-down leaves one hole for heap and mappings alike; legacy caps the heap at
    // TASK_UNMAPPED_BASE (linux-mm.md 1.8).
    assert!(rows[1]["largest_heap"].as_u64() > rows[0]["largest_heap"].as_u64());
}

#[test]
fn linux_columns_agree_with_vmspace_layout() {
    for (kernel, layout_args) in [
        (
            "native",
            vec!["layout", "--arch", "i386", "--native", "--json"],
        ),
        ("compat", vec!["layout", "--arch", "i386", "--json"]),
    ] {
        let rep: Value = serde_json::from_str(&stdout(&layout_args)).unwrap();
        let rows = capacity(&["--kernel", kernel, "--heap", "64M"]);
        for lim in rep["limits"].as_array().unwrap() {
            if lim["kernel"] != kernel {
                continue;
            }
            let row = rows
                .iter()
                .find(|r| r["layout"] == lim["layout"])
                .unwrap_or_else(|| panic!("no {kernel} {} row", lim["layout"]));
            assert_eq!(
                row["largest_heap"], lim["max_heap"],
                "{kernel} {}",
                lim["layout"]
            );
            assert_eq!(
                row["largest_mapping"], lim["max_mmap"],
                "{kernel} {}",
                lim["layout"]
            );
            assert_eq!(row["largest_mapping_at"], lim["max_mmap_at"]);
            assert_eq!(row["task_size"], rep["task_size"]);
        }
    }
}

#[test]
fn table_names_every_layout_and_its_assumptions() {
    let t = stdout(&[
        "capacity", "--kernel", "native", "--heap", "1G", "--stack", "256K",
    ]);
    assert!(t.starts_with(
        "32-bit address space capacity: threads with 256 KiB stacks next to a 1 GiB heap"
    ));
    for l in ["legacy", "topdown", "reserve-commit"] {
        assert!(
            t.lines().any(|x| x.starts_with("native") && x.contains(l)),
            "{t}"
        );
    }
    // A 1 GiB heap does not fit under the legacy TASK_UNMAPPED_BASE.
    assert!(
        t.lines()
            .any(|x| x.contains("legacy") && x.contains("no heap")),
        "{t}"
    );
    assert!(t.contains("assumed:"));
    assert!(t.contains("native kernel half (space::kernel, 3G/1G): 257 page tables = 1.00 MiB"));
}

#[test]
fn kernel_space_flag_prints_the_region_layout() {
    let t = stdout(&["capacity", "--kernel", "compat", "--kernel-space"]);
    assert!(t.starts_with("32-bit kernel address space, split at 0xc0000000"));
    assert!(t.contains("0xffc00000-0xffffffff     4 MiB  page tables (recursive PD)"));
    assert!(t.contains("kernel range pool           shared by every process"));
}

#[test]
fn bad_sizes_are_refused() {
    for args in [
        &["capacity", "--stack", "0"][..],
        &["capacity", "--heap", "8G"],
        &["capacity", "--heap", "lots"],
    ] {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} accepted");
    }
}
