//! `vmspace replay` and `vmspace gen-trace` as a user runs them.

use std::process::Command;

fn vmspace(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .output()
        .expect("run vmspace")
}

fn write_trace(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vmspace-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn replay_linux_prints_the_result_document() {
    let p = write_trace(
        "ok.jsonl",
        "{\"op\":\"mmap\",\"len\":8192,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\"],\"id\":\"a\"}\n\
         {\"op\":\"touch\",\"addr\":{\"ref\":\"a\",\"off\":4096},\"mode\":\"w\",\"value\":7}\n\
         {\"op\":\"touch\",\"addr\":{\"ref\":\"a\",\"off\":4096},\"mode\":\"r\"}\n",
    );
    let out = vmspace(&[
        "replay",
        p.to_str().unwrap(),
        "--backend",
        "linux",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["backend"], "linux");
    assert_eq!(doc["personality"], "0x40000");
    assert_eq!(doc["results"][2]["val"], 7);
    assert!(doc["after"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "[stack]"));
}

#[test]
fn a_parse_error_is_a_fatal_document_with_exit_code_2() {
    let p = write_trace(
        "bad.jsonl",
        "# ok\n{\"op\":\"munmap\",\"addr\":0,\"len\":4096,\"lne\":1}\n",
    );
    let out = vmspace(&["replay", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["line"], 2);
    assert!(doc["fatal"].as_str().unwrap().contains("lne"));
}

#[test]
fn gen_trace_is_deterministic_and_replayable() {
    let a = vmspace(&["gen-trace", "--seed", "5", "--ops", "40"]);
    let b = vmspace(&["gen-trace", "--seed", "5", "--ops", "40"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let p = write_trace("gen.jsonl", std::str::from_utf8(&a.stdout).unwrap());
    let out = vmspace(&["replay", p.to_str().unwrap(), "--legacy", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["results"].as_array().unwrap().len(), 41);
    assert_eq!(doc["personality"], "0x240000");
}

#[test]
fn model_backend_and_diff_start_from_a_linux_document() {
    let trace = "{\"op\":\"let\",\"addr\":{\"ref\":\"$brk0\",\"off\":268435456},\"id\":\"F\"}\n\
         {\"op\":\"mmap\",\"addr\":{\"ref\":\"F\"},\"len\":16384,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\",\"fixed\"]}\n\
         {\"op\":\"mprotect\",\"addr\":{\"ref\":\"F\",\"pages\":1},\"len\":4096,\"prot\":\"r\"}\n\
         {\"op\":\"touch\",\"addr\":{\"ref\":\"F\",\"pages\":1},\"mode\":\"w\"}\n";
    let p = write_trace("diff.jsonl", trace);
    let out = vmspace(&["replay", p.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let doc = write_trace("diff-linux.json", std::str::from_utf8(&out.stdout).unwrap());
    let model = vmspace(&[
        "replay",
        p.to_str().unwrap(),
        "--start-from",
        doc.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        model.status.success(),
        "{}",
        String::from_utf8_lossy(&model.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&model.stdout).unwrap();
    assert_eq!(m["backend"], "model");
    assert_eq!(m["results"][3]["code"], "SEGV_ACCERR");
    let diff = vmspace(&[
        "replay",
        p.to_str().unwrap(),
        "--diff",
        "--start-from",
        doc.to_str().unwrap(),
    ]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    // A document whose results were tampered with no longer agrees.
    let tampered = std::str::from_utf8(&out.stdout)
        .unwrap()
        .replace("SEGV_ACCERR", "SEGV_MAPERR");
    let bad = write_trace("diff-bad.json", &tampered);
    let diff = vmspace(&[
        "replay",
        p.to_str().unwrap(),
        "--diff",
        "--start-from",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(diff.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&diff.stderr).contains("code"));
}
