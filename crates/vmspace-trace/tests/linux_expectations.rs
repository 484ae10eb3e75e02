//! The hand-written traces' `expect` fields hold on the real kernel in every configuration
//! (x86-64 and i386, top-down and legacy, static and glibc-PIE helper): Linux is the judge of
//! the traces themselves.

use std::path::Path;
use vmspace_trace::linux::{self, Arch, LinuxOptions};
use vmspace_trace::trace;

#[test]
fn handwritten_expectations_hold_on_linux() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/traces")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut runs = 0;
    for arch in [Arch::X86_64, Arch::I386] {
        if arch == Arch::I386 {
            if let Some(why) = linux::i386_unavailable() {
                eprintln!("SKIPPING i386: {why}");
                continue;
            }
        }
        for (legacy, pie) in [(false, false), (true, false), (false, true), (true, true)] {
            if pie {
                if let Some(why) = linux::pie_unavailable(arch) {
                    eprintln!("SKIPPING {}-pie: {why}", arch.name());
                    continue;
                }
            }
            for f in files
                .iter()
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            {
                let t = trace::parse(&std::fs::read_to_string(f).expect("read")).expect("parse");
                let (doc, out) = linux::run(
                    &t,
                    LinuxOptions {
                        initial_heap: 0,
                        pie,
                        arch,
                        legacy,
                        smaps: false,
                    },
                )
                .expect("run");
                runs += 1;
                let name = format!(
                    "{} {}{}{}",
                    f.file_name().unwrap().to_string_lossy(),
                    arch.name(),
                    if pie { "-pie" } else { "" },
                    if legacy { " legacy" } else { "" }
                );
                if let Some(fatal) = doc.fatal {
                    failures.push(format!("{name}: died: {fatal}"));
                }
                failures.extend(out.expect_failures.iter().map(|e| format!("{name}: {e}")));
                assert_eq!(doc.results.len(), t.ops.len(), "{name}: one result per op");
            }
        }
    }
    assert!(runs >= 20, "too few runs: {runs}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_broken_expectation_is_reported() {
    let t = trace::parse(r#"{"op":"mmap","len":4096,"prot":"rw","flags":["private","anonymous"],"id":"a","expect":{"err":"EINVAL"}}"#).unwrap();
    let (_, out) = linux::run(
        &t,
        LinuxOptions {
            initial_heap: 0,
            pie: false,
            arch: Arch::X86_64,
            legacy: false,
            smaps: false,
        },
    )
    .unwrap();
    assert_eq!(out.expect_failures.len(), 1);
}
