//! `vmspace demo` and `vmspace run` end to end: every example scenario runs through the
//! binary and its expected outcomes hold (checked again here from the JSON report); the
//! demo's story has its key facts on both architectures; the picture is well-formed SVG with
//! the expected regions; bad files and failed expectations give clear errors.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> String {
    root()
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn vmspace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

fn ok_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = vmspace(&a);
    assert!(
        o.status.success(),
        "vmspace {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    for e in v["expectations"].as_array().unwrap() {
        assert_eq!(e["ok"], true, "{e}");
    }
    v
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vmspace-test-{}-{name}", std::process::id()))
}

fn thread<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["thread"] == name)
        .unwrap_or_else(|| panic!("no thread {name}"))
}

fn heap<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["heaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no heap {name}"))
}

/// The demo's story, from its JSON report.
fn demo_facts(v: &Value) {
    // The overflow was caught on worker-2 only, at the bottom of its reservation.
    let w2 = thread(v, "worker-2");
    assert!(w2["state"]
        .as_str()
        .unwrap()
        .starts_with("stopped: stack overflow"));
    let reserved = w2["reserved"].as_u64().unwrap();
    assert!(
        w2["max_depth"].as_u64().unwrap() > reserved - 4 * 4096,
        "{w2}"
    );
    // Every page but the hard guard ended up committed (W19).
    assert_eq!(w2["committed_pages"].as_u64().unwrap(), reserved / 4096 - 1);
    assert_eq!(v["counters"]["stack_overflows"], 1);
    // The other threads finished their work; worker-1 and -3 committed through their guards.
    for t in ["app-main", "worker-1", "worker-3", "app-child-main"] {
        assert_eq!(thread(v, t)["state"], "running", "{t}");
    }
    for t in ["worker-1", "worker-3"] {
        let s = thread(v, t);
        assert!(s["committed_pages"].as_u64().unwrap() > 2, "{s}");
        assert_eq!(s["guard_pages"], 2);
    }
    let commits = v["counters"]["guard_commits"].as_u64().unwrap();
    assert!(commits > 50);
    // Every commit came from a guard-page exception; the last one was the overflow.
    assert!(v["counters"]["guard_page_violations"].as_u64().unwrap() > commits);
    // OOM named the leaking process, and only it.
    let oom = v["oom"].as_array().unwrap();
    assert_eq!(oom.len(), 1);
    assert_eq!(oom[0]["victim"], "leaker");
    assert!(oom[0]["message"]
        .as_str()
        .unwrap()
        .contains("Out of memory: killed process"));
    let procs = v["processes"].as_array().unwrap();
    let state = |n: &str| procs.iter().find(|p| p["name"] == n).unwrap()["state"].clone();
    assert_eq!(state("leaker"), "OomKilled");
    assert_eq!(state("app"), "running");
    assert_eq!(state("app-child"), "running");
    // Fork: the child's writes copied pages.
    assert!(v["counters"]["cow_copies"].as_u64().unwrap() > 0);
    // Two heaps of different kinds in app, with live blocks and committed memory.
    let small = heap(v, "small");
    let big = heap(v, "big");
    assert_eq!(small["kind"], "size-class");
    assert_eq!(big["kind"], "chunk best-fit");
    for h in [small, big] {
        assert!(h["live_bytes"].as_u64().unwrap() > 0);
        assert!(h["committed_bytes"].as_u64().unwrap() >= h["live_bytes"].as_u64().unwrap());
    }
    assert!(small["segments"].as_u64().unwrap() > 0);
    assert_eq!(heap(v, "leaky")["alive"], false);
    // The maps of app name its heaps and stacks.
    let maps = v["maps"].as_array().unwrap();
    let app = maps.iter().find(|m| m["process"] == "app").unwrap();
    let whats: Vec<String> = app["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["what"].as_str().map(str::to_string))
        .collect();
    for w in [
        "heap small",
        "heap big",
        "stack of worker-1",
        "stack of worker-2",
    ] {
        assert!(whats.iter().any(|x| x == w), "{w} not in {whats:?}");
    }
    assert!(maps.iter().all(|m| m["process"] != "leaker"));
}

#[test]
fn demo_tells_the_whole_story_on_i386() {
    let svg = tmp("demo32.svg");
    let v = ok_json(&["demo", "--svg", svg.to_str().unwrap()]);
    assert_eq!(v["arch"], "i386");
    demo_facts(&v);
    // 32-bit addresses.
    let w1 = thread(&v, "worker-1");
    assert!(w1["end"].as_u64().unwrap() <= 0xc000_0000);
    check_svg(&svg, &["kernel", "worker-2", "heap small", "heap big"]);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn demo_tells_the_whole_story_on_x86_64() {
    let svg = tmp("demo64.svg");
    let v = ok_json(&["demo", "--arch", "x86_64", "--svg", svg.to_str().unwrap()]);
    assert_eq!(v["arch"], "x86_64");
    demo_facts(&v);
    // A 64-bit space: the main stack sits below the 47-bit top.
    let main = thread(&v, "app-main");
    assert_eq!(main["end"].as_u64().unwrap(), 0x7fff_ffff_f000);
    check_svg(&svg, &["kernel", "non-canonical", "worker-2", "heap small"]);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn demo_text_says_what_happened() {
    let svg = tmp("demo-text.svg");
    let o = vmspace(&["demo", "--svg", svg.to_str().unwrap()]);
    assert!(o.status.success());
    let t = String::from_utf8(o.stdout).unwrap();
    for fact in [
        "STACK OVERFLOW in worker-2",
        "worker-2 is stopped; 3 other thread(s) of process \"app\" carry on (app-main, worker-1, worker-3)",
        "it chose process \"leaker\"",
        "copy-on-write copies",
        "Address space of \"app\"",
        "[heap]",
        "Stacks",
        "Heaps",
        "guard commits",
        "[ok] stack_overflow",
        "Picture: ",
    ] {
        assert!(t.contains(fact), "{fact:?} missing from:\n{t}");
    }
    assert!(!t.contains("FAILED"));
    let _ = std::fs::remove_file(svg);
}

#[test]
fn demo_writes_its_picture_to_the_current_directory_by_default() {
    let dir = tmp("cwd");
    std::fs::create_dir_all(&dir).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .arg("demo")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success());
    check_svg(&dir.join("vmspace-demo.svg"), &["worker-1"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// Parses the picture as XML and finds the regions and charts it must show.
fn check_svg(path: &Path, regions: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let all: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    for r in regions
        .iter()
        .chain(&["Heap fragmentation", "Stack depth", "legend", "operations"])
    {
        assert!(all.contains(r), "{r:?} not in the picture's text");
    }
    assert!(doc.descendants().filter(|n| n.has_tag_name("rect")).count() > 10);
}

#[test]
fn run_the_demo_file_gives_the_built_in_demo() {
    let a = ok_json(&["run", &example("demo.toml")]);
    let b = ok_json(&["demo"]);
    assert_eq!(a["steps"], b["steps"]);
    assert_eq!(a["counters"], b["counters"]);
}

#[test]
fn brk_collides_with_the_first_mapping_in_the_legacy_layout() {
    let v = ok_json(&["run", &example("brk-collision.toml")]);
    let legacy = heap(&v, "legacy-brk")["exhausted"]
        .as_str()
        .unwrap()
        .to_string();
    let topdown = heap(&v, "topdown-brk")["exhausted"]
        .as_str()
        .unwrap()
        .to_string();
    // B5/L1: the legacy break stops below TASK_UNMAPPED_BASE, where the segments are.
    assert!(
        legacy.contains("cannot grow into the mapping at 0x40000000"),
        "{legacy}"
    );
    let brk_of = |s: &str| {
        let h = s.split("break at 0x").nth(1).unwrap();
        u64::from_str_radix(h.split_whitespace().next().unwrap(), 16).unwrap()
    };
    let lb = brk_of(&legacy);
    assert!(
        lb < 0x4000_0000 && lb > 0x4000_0000 - (4 << 20) - 0x20000,
        "{lb:#x}"
    );
    // Top-down: the break runs up to the mmap area below the stack, far higher.
    let tb = brk_of(&topdown);
    assert!(tb > 0xb000_0000, "{tb:#x}");
    assert_eq!(v["counters"]["oom_kills"], 0);
}

#[test]
fn many_stacks_fill_the_32_bit_space() {
    let v = ok_json(&["run", &example("many-stacks.toml")]);
    let stacks = v["stacks"].as_array().unwrap();
    let pthread = stacks.iter().filter(|s| s["style"] == "pthread").count();
    let rc = stacks
        .iter()
        .filter(|s| s["style"] == "reserve/commit")
        .count();
    // 3 GiB less a 512 MiB heap and the program: about 320 stacks of 8 MiB, then the
    // gaps hold some hundred 64 KiB reservations.
    assert!((300..=330).contains(&pthread), "{pthread}");
    assert!(rc > 50, "{rc}");
    let rc1 = thread(&v, "rc-1");
    assert!(rc1["committed_pages"].as_u64().unwrap() >= 12);
    let p = &v["processes"][0];
    assert_eq!(p["state"], "running");
}

#[test]
fn a_leak_ends_in_the_oom_killer_naming_the_leaker() {
    for arch in ["i386", "x86_64"] {
        let v = ok_json(&["run", &example("leak-oom.toml"), "--arch", arch]);
        assert_eq!(v["oom"].as_array().unwrap().len(), 1, "{arch}");
        assert_eq!(v["oom"][0]["victim"], "leaker");
        // The editor allocated again after the kill.
        assert_eq!(heap(&v, "buffers")["blocks"], 96);
    }
}

#[test]
fn each_kind_of_stack_overflows_its_own_way() {
    let v = ok_json(&["run", &example("stacks.toml")]);
    let main = thread(&v, "app-main");
    let posix = thread(&v, "posix");
    let windows = thread(&v, "windows");
    // S1: the main stack stops at RLIMIT_STACK (256 KiB), grown on faults (S4).
    assert_eq!(main["committed_pages"], 64);
    assert!(v["counters"]["stack_growths"].as_u64().unwrap() >= 31);
    // The pthread's guard page stays; the reserve/commit stack committed all but the hard guard.
    assert_eq!(posix["guard_pages"], 1);
    assert_eq!(windows["committed_pages"], 63);
    assert_eq!(windows["guard_pages"], 0);
    assert_eq!(v["counters"]["stack_overflows"], 3);
    assert_eq!(thread(&v, "bystander")["state"], "running");
}

#[test]
fn fork_copies_on_write_and_reuses_exclusive_frames() {
    let v = ok_json(&["run", &example("fork-cow.toml")]);
    let c = &v["counters"];
    assert!(c["cow_copies"].as_u64().unwrap() >= 100);
    // The pages the worker copied away are the parent's alone again: reused in place.
    assert!(c["cow_reuses"].as_u64().unwrap() > 0);
    assert!(c["cow_reuses"].as_u64().unwrap() < c["cow_copies"].as_u64().unwrap());
}

#[test]
fn every_example_runs_with_its_expectations_met() {
    let dir = root().join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let svg = tmp(&format!("{}.svg", p.file_stem().unwrap().to_string_lossy()));
            ok_json(&["run", p.to_str().unwrap(), "--svg", svg.to_str().unwrap()]);
            roxmltree::Document::parse(&std::fs::read_to_string(&svg).unwrap()).unwrap();
            let _ = std::fs::remove_file(svg);
            n += 1;
        }
    }
    assert!(n >= 6, "{n} examples");
}

#[test]
fn a_malformed_scenario_names_the_line_and_column() {
    let f = tmp("bad.toml");
    std::fs::write(
        &f,
        "name = \"bad\"\n[machine]\nram = \"16 MiB\"\n\n[[step]]\ndo = \"alloc\"\nheap = \"h\"\ncount = \"many\"\n",
    )
    .unwrap();
    let o = vmspace(&["run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8(o.stderr).unwrap();
    let want = format!("{}:8:9:", f.display());
    assert!(e.contains(&want), "{e}");
    assert!(e.contains("invalid type"), "{e}");
    let _ = std::fs::remove_file(f);
}

#[test]
fn a_failed_expectation_exits_1_and_names_it() {
    let f = tmp("fail.toml");
    std::fs::write(
        &f,
        r#"name = "fail"
[machine]
ram = "8 MiB"
[[process]]
name = "p"
[[process.thread]]
name = "t"
stack = { style = "reserve-commit", reserve = "128 KiB" }
[[step]]
do = "recurse"
thread = "t"
frame = 1024
depth = 10
[expect]
stack_overflow = { thread = "t" }
"#,
    )
    .unwrap();
    let o = vmspace(&["run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8(o.stderr).unwrap();
    assert!(
        e.contains("1 expectation(s) failed") && e.contains("\"t\""),
        "{e}"
    );
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(t.contains("[FAILED] stack_overflow"), "{t}");
    // A reference to a thread that does not exist is an input error.
    std::fs::write(
        &f,
        "name = \"x\"\n[machine]\nram = \"8 MiB\"\n[[step]]\ndo = \"recurse\"\nthread = \"nobody\"\nframe = 64\n",
    )
    .unwrap();
    let o = vmspace(&["run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8(o.stderr).unwrap();
    assert!(
        e.contains("step 1 (recurse): no thread named \"nobody\""),
        "{e}"
    );
    let _ = std::fs::remove_file(f);
}
