//! The differential suite: every trace runs on the real kernel (the judge) and in the vmspace
//! model started from that run's before state; the documents must agree (trace-format.md).
//!
//! - Hand-written traces under `tests/traces/` (one file per rule group, with `expect`
//!   fields, which must hold on Linux in every configuration).
//! - 400 generated traces of 150 ops (`vmspace_trace::gen`), spread over x86-64 and i386,
//!   top-down and legacy, static and glibc-PIE helpers.
//!
//! Cases known to fail because the model is still incomplete are listed, with the first
//! difference, in `tests/known-failures.txt`; such a case must still fail (a listed case that
//! now passes is an error too, so the list stays true). Comparisons are never weakened.
//! `VMSPACE_UPDATE_KNOWN_FAILURES=1 cargo test -p vmspace-trace --test differential` rewrites
//! the list's section for each test from the current failures instead of failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vmspace_trace::compare::first_difference;
use vmspace_trace::linux::{self, Arch, LinuxOptions};
use vmspace_trace::{gen, model, trace};

const GENERATED: u64 = 400;
const GENERATED_OPS: usize = 150;

/// The static-helper configurations: x86-64 and i386, top-down and legacy.
fn configs() -> Vec<LinuxOptions> {
    let mut v = Vec::new();
    for arch in [Arch::X86_64, Arch::I386] {
        if arch == Arch::I386 {
            if let Some(why) = linux::i386_unavailable() {
                eprintln!("SKIPPING the i386 configurations: {why}");
                continue;
            }
        }
        for legacy in [false, true] {
            v.push(LinuxOptions {
                initial_heap: 0,
                pie: false,
                arch,
                legacy,
                smaps: false,
            });
        }
    }
    v
}

/// The same with the dynamically linked glibc PIE helper (ld.so and libc in the before state).
fn pie_configs() -> Vec<LinuxOptions> {
    configs()
        .into_iter()
        .filter(|o| match linux::pie_unavailable(o.arch) {
            Some(why) => {
                eprintln!("SKIPPING {}-pie: {why}", o.arch.name());
                false
            }
            None => true,
        })
        .map(|o| LinuxOptions { pie: true, ..o })
        .collect()
}

/// Every configuration of the generated traces.
fn all_configs() -> Vec<LinuxOptions> {
    configs().into_iter().chain(pie_configs()).collect()
}

fn config_name(o: &LinuxOptions) -> String {
    let heap = if o.initial_heap > 0 { "-preheap" } else { "" };
    let build = if o.pie { "-pie" } else { "" };
    format!(
        "{}{build}-{}{heap}",
        o.arch.name(),
        if o.legacy { "legacy" } else { "topdown" }
    )
}

/// Extra configurations for the hand-written traces: runs that start with a `[heap]` and
/// `$start_brk < $brk0`, the shape of static glibc builds (expectations are written for fresh
/// layouts and are not checked there).
fn preheap_configs() -> Vec<LinuxOptions> {
    configs()
        .into_iter()
        .filter(|o| (o.arch == Arch::X86_64) != o.legacy)
        .map(|o| LinuxOptions {
            initial_heap: 3 * 4096,
            ..o
        })
        .collect()
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn known_failures_path() -> PathBuf {
    dir().join("known-failures.txt")
}

/// `case config` → reason, from tests/known-failures.txt (`case config -- reason` lines).
fn known_failures() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(known_failures_path()).unwrap_or_default();
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, reason) = line.split_once(" -- ").unwrap_or((line, ""));
        let mut parts = key.split_whitespace();
        if let (Some(case), Some(cfg)) = (parts.next(), parts.next()) {
            m.insert(format!("{case} {cfg}"), reason.to_string());
        }
    }
    m
}

/// Outcome of one (trace, configuration) case.
enum Outcome {
    Agree,
    Differ(String),
}

/// Runs one case: Linux (expectations must hold), then the model; returns the comparison.
fn run_case(name: &str, text: &str, o: LinuxOptions, linux_errors: &mut Vec<String>) -> Outcome {
    let t = trace::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (ldoc, lout) =
        linux::run(&t, o).unwrap_or_else(|e| panic!("{name}: cannot run on Linux: {e}"));
    if let Some(f) = &ldoc.fatal {
        linux_errors.push(format!(
            "{name} {}: the Linux run died: {f}",
            config_name(&o)
        ));
    }
    for f in lout.expect_failures.iter().filter(|_| o.initial_heap == 0) {
        linux_errors.push(format!(
            "{name} {}: Linux disagrees with the trace's expectation: {f}",
            config_name(&o)
        ));
    }
    match model::run(&t, &ldoc, false) {
        Err(e) => Outcome::Differ(format!("model backend failed: {e}")),
        Ok((mdoc, _)) => match first_difference(&ldoc, &mdoc) {
            None => Outcome::Agree,
            Some(d) => Outcome::Differ(d),
        },
    }
}

/// Replaces the lines of `prefix` cases in the known-failures file by `fails`.
fn update_known_failures(prefix: &str, fails: &[(String, String)]) {
    static FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let path = known_failures_path();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        lines.push("# Differential cases where the model does not yet agree with Linux: `case config -- first difference`.".into());
        lines.push(
            "# Read by tests/differential.rs; regenerate with VMSPACE_UPDATE_KNOWN_FAILURES=1."
                .into(),
        );
    }
    for (key, reason) in fails {
        lines.push(format!("{key} -- {reason}"));
    }
    std::fs::write(&path, lines.join("\n") + "\n").expect("writing known-failures.txt");
}

/// Runs `cases` on two threads and checks them against the known-failures list.
fn check_all(prefix: &str, cases: Vec<(String, String, LinuxOptions)>) {
    let results: Vec<(String, Outcome, Vec<String>)> = std::thread::scope(|s| {
        let chunks: Vec<_> = cases.chunks(cases.len().div_ceil(2).max(1)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(name, text, o)| {
                            let mut errs = Vec::new();
                            let out = run_case(name, text, *o, &mut errs);
                            (format!("{name} {}", config_name(o)), out, errs)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    if std::env::var_os("VMSPACE_UPDATE_KNOWN_FAILURES").is_some() {
        let fails: Vec<(String, String)> = results
            .iter()
            .filter_map(|(key, o, _)| match o {
                Outcome::Differ(d) => Some((key.clone(), d.replace('\n', " "))),
                Outcome::Agree => None,
            })
            .collect();
        eprintln!(
            "{}: {} of {} cases differ; known-failures.txt updated",
            prefix,
            fails.len(),
            results.len()
        );
        update_known_failures(prefix, &fails);
    }
    let known = known_failures();
    let mut problems = Vec::new();
    let (mut agree, mut known_fail) = (0, 0);
    for (key, outcome, errs) in &results {
        problems.extend(errs.iter().cloned());
        match (outcome, known.get(key)) {
            (Outcome::Agree, None) => agree += 1,
            (Outcome::Agree, Some(_)) => problems.push(format!(
                "{key}: listed in known-failures.txt but now agrees; remove it"
            )),
            (Outcome::Differ(d), Some(_)) => {
                known_fail += 1;
                eprintln!("known failure {key}: {d}");
            }
            (Outcome::Differ(d), None) => {
                problems.push(format!("{key}: model differs from Linux: {d}"))
            }
        }
    }
    eprintln!(
        "{} cases: {agree} agree, {known_fail} known failures, {} problems",
        results.len(),
        problems.len()
    );
    if !problems.is_empty() {
        panic!("differential suite:\n{}", problems.join("\n"));
    }
}

#[test]
fn handwritten_traces() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("traces"))
        .expect("tests/traces")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "expected the rule-group traces");
    let mut cases = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("trace");
        let name = format!("traces/{}", f.file_name().unwrap().to_string_lossy());
        for o in all_configs().into_iter().chain(preheap_configs()) {
            cases.push((name.clone(), text.clone(), o));
        }
        // With `smaps_before` the model also gets the before state's VmFlags.
        let with_flags = format!("{{\"op\":\"config\",\"smaps_before\":true}}\n{text}");
        for o in all_configs().into_iter().filter(|o| o.pie != o.legacy) {
            cases.push((format!("{name}+smaps_before"), with_flags.clone(), o));
        }
    }
    check_all("traces/", cases);
}

#[test]
fn generated_traces() {
    let configs = all_configs();
    let mut cases = Vec::new();
    for seed in 0..GENERATED {
        let o = configs[seed as usize % configs.len()];
        let mut text = gen::generate(seed, GENERATED_OPS, o.arch == Arch::I386);
        // Every other trace also compares resident sizes (`after_smaps`), every fourth with
        // the before state's smaps, so [stack] growth is compared too.
        if seed % 4 == 0 {
            text = format!("{{\"op\":\"config\",\"smaps\":true,\"smaps_before\":true}}\n{text}");
        } else if seed % 2 == 0 {
            text = format!("{{\"op\":\"config\",\"smaps\":true}}\n{text}");
        }
        cases.push((format!("gen/seed-{seed}"), text, o));
    }
    check_all("gen/", cases);
}

/// A longer exploration: 2,000 more generated traces, reporting every disagreement with its
/// first difference (not checked against the known-failures list). Run with
/// `cargo test -p vmspace-trace --release --test differential -- --ignored --nocapture`.
#[test]
#[ignore = "exploration run; a few seconds per hundred traces"]
fn generated_traces_long_exploration() {
    let configs = all_configs();
    let mut differ = 0;
    for seed in 10_000..12_000u64 {
        let o = configs[seed as usize % configs.len()];
        let text = gen::generate(seed, GENERATED_OPS, o.arch == Arch::I386);
        let mut errs = Vec::new();
        if let Outcome::Differ(d) = run_case(&format!("gen/seed-{seed}"), &text, o, &mut errs) {
            differ += 1;
            eprintln!("gen/seed-{seed} {}: {d}", config_name(&o));
        }
        assert!(errs.is_empty(), "{errs:?}");
    }
    eprintln!("{differ} of 2000 generated traces differ");
}

/// M-count (2.8, U3): vm.max_map_count. Every other page of one large mapping is made
/// read-only until splits fail with ENOMEM; then mmap, munmap and mprotect at the limit.
#[test]
fn map_count_limit() {
    let mut t = String::from("# M-count: splitting up to vm.max_map_count\n");
    t.push_str("{\"op\":\"mmap\",\"len\":\"0x11000000\",\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\",\"noreserve\"],\"id\":\"a\"}\n");
    for i in 0..33_000u64 {
        t.push_str(&format!(
            "{{\"op\":\"mprotect\",\"addr\":{{\"ref\":\"a\",\"pages\":{}}},\"len\":4096,\"prot\":\"r\"}}\n",
            2 * i + 1
        ));
    }
    for (op, pages) in [
        ("mmap", 0),
        ("munmap", 67_001),
        ("mprotect", 67_003),
        ("munmap", 1),
        ("mmap", 0),
        ("mmap", 0),
    ] {
        t.push_str(&match op {
            "mmap" => "{\"op\":\"mmap\",\"len\":4096,\"prot\":\"r\",\"flags\":[\"private\",\"anonymous\"]}\n".to_string(),
            "munmap" => format!("{{\"op\":\"munmap\",\"addr\":{{\"ref\":\"a\",\"pages\":{pages}}},\"len\":4096}}\n"),
            _ => format!("{{\"op\":\"mprotect\",\"addr\":{{\"ref\":\"a\",\"pages\":{pages}}},\"len\":4096,\"prot\":\"r\"}}\n"),
        });
    }
    let o = LinuxOptions {
        arch: Arch::X86_64,
        legacy: false,
        smaps: false,
        initial_heap: 0,
        pie: false,
    };
    check_all("limits/", vec![("limits/map-count".into(), t, o)]);
}
