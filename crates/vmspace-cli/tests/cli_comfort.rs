//! The command as a user meets it: every command's `--help` explains it with an example,
//! every command that prints results prints parseable JSON with `--json` (and nothing on
//! stderr, so progress never mixes in), bad input is named with where it is wrong, and
//! pictures come out as SVG or PNG by file name.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vmspace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .output()
        .expect("run vmspace")
}

fn ok(args: &[&str]) -> String {
    let o = vmspace(args);
    assert!(
        o.status.success(),
        "vmspace {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 output")
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-comfort");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The subcommands listed by `vmspace --help`.
fn commands() -> Vec<String> {
    let help = ok(&["--help"]);
    let list = help.split("Commands:").nth(1).expect("a Commands: section");
    let names: Vec<String> = list
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    for want in ["bench", "ptdump", "replay", "gen-trace", "layout"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
    names
}

#[test]
fn every_command_explains_itself_with_an_example() {
    for c in commands() {
        let help = ok(&[&c, "--help"]);
        assert!(
            help.to_lowercase().contains("example"),
            "`vmspace {c} --help` gives no example:\n{help}"
        );
        assert!(
            help.contains(&format!("vmspace {c}")),
            "`vmspace {c} --help` shows no command line:\n{help}"
        );
        assert!(help.contains("Usage:"), "{help}");
    }
}

/// Parses stdout as JSON Lines and checks stderr stayed empty (no progress drawn off a
/// terminal).
fn json_lines(args: &[&str]) -> Vec<serde_json::Value> {
    let o = vmspace(args);
    assert!(
        o.status.success(),
        "vmspace {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty() || args.contains(&"--diff"),
        "vmspace {args:?} wrote to stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("vmspace {args:?}: not JSON ({e}): {l}"))
        })
        .collect();
    assert!(!lines.is_empty(), "vmspace {args:?} printed nothing");
    lines
}

#[test]
fn every_command_prints_json() {
    let pt = json_lines(&["ptdump", "--json"]);
    assert_eq!(pt.len(), 2);
    assert_eq!(pt[0]["arch"], "i386");
    assert_eq!(pt[1]["arch"], "x86_64");

    let b = json_lines(&["bench", "frames", "--json", "--scale", "0.005"]);
    assert!(b.iter().all(|r| r["group"] == "frames"));

    let l = json_lines(&["layout", "--arch", "i386", "--json"]);
    assert_eq!(l.len(), 1);
    assert!(l[0]["bands"].as_array().is_some_and(|b| b.len() > 5));

    let t = json_lines(&["gen-trace", "--seed", "3", "--ops", "20", "--json"]);
    assert_eq!(t.len(), 21);
    assert!(t.iter().all(|op| op["op"].is_string()));
    // The same trace as without --json, less the comment lines.
    let plain = ok(&["gen-trace", "--seed", "3", "--ops", "20"]);
    let ops: Vec<&str> = plain.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(ops.len(), 21);
    for (a, b) in ops.iter().zip(&t) {
        assert_eq!(serde_json::from_str::<serde_json::Value>(a).unwrap(), *b);
    }

    let trace = tmp("t.jsonl");
    std::fs::write(&trace, ok(&["gen-trace", "--seed", "3", "--ops", "20"])).unwrap();
    let tr = trace.to_str().unwrap();
    let r = json_lines(&["replay", tr, "--json"]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["backend"], "linux");
    // --diff --json: the Linux document, the model's, and the verdict.
    let d = json_lines(&["replay", tr, "--diff", "--json"]);
    assert_eq!(d.len(), 3);
    assert_eq!(d[0]["backend"], "linux");
    assert_eq!(d[1]["backend"], "model");
    assert_eq!(d[2]["agree"], true, "{}", d[2]);
    assert_eq!(d[2]["ops"], 21);
}

#[test]
fn a_malformed_trace_is_named_by_file_line_and_field() {
    let p = tmp("bad.jsonl");
    std::fs::write(
        &p,
        "{\"op\":\"mmap\",\"len\":8192,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\"],\"id\":\"a\"}\n\
         # a comment\n\
         {\"op\":\"mprotect\",\"addr\":{\"ref\":\"a\"},\"len\":\"lots\",\"prot\":\"r\"}\n",
    )
    .unwrap();
    let o = vmspace(&["replay", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:3: len:", p.display())),
        "stderr: {err}"
    );
    assert!(err.contains("\"lots\""), "{err}");
    // With --json only the document, on stdout.
    let o = vmspace(&["replay", p.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.is_empty());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["line"], 3);

    // A flag name that does not exist lists the ones that do.
    std::fs::write(
        &p,
        "{\"op\":\"mmap\",\"len\":4096,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymos\"]}\n",
    )
    .unwrap();
    let o = vmspace(&["replay", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(":1: unknown mmap flag \"anonymos\""), "{err}");
    assert!(err.contains("anonymous"), "{err}");

    // A bad --start-from document is named.
    let good = tmp("good.jsonl");
    std::fs::write(&good, "{\"op\":\"brk\",\"addr\":0}\n").unwrap();
    let doc = tmp("bad-doc.json");
    std::fs::write(&doc, "{\"backend\":\"linux\",\"results\":5}").unwrap();
    let o = vmspace(&[
        "replay",
        good.to_str().unwrap(),
        "--start-from",
        doc.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}: invalid result document", doc.display())),
        "{err}"
    );

    // A missing file is named.
    let o = vmspace(&["replay", "/nonexistent/t.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/t.jsonl"));
}

#[test]
fn pictures_are_svg_or_png_by_name() {
    let png = tmp("layout.png");
    ok(&["layout", "--arch", "i386", "--svg", png.to_str().unwrap()]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let svg = tmp("layout.svg");
    ok(&["layout", "--arch", "i386", "--svg", svg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    // The PNG is the same picture at the SVG's size.
    let dim = |a| -> u32 {
        let v: f64 = doc.root_element().attribute(a).unwrap().parse().unwrap();
        v as u32
    };
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (dim("width"), dim("height")));

    let o = vmspace(&["layout", "--svg", tmp("layout.jpg").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown picture format .jpg"));
}

#[test]
fn ptdump_draws_what_the_tables_map() {
    let p = tmp("tables.svg");
    ok(&["ptdump", "--svg", p.to_str().unwrap()]);
    let text = std::fs::read_to_string(&p).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let panels: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("panel"))
        .collect();
    assert_eq!(panels.len(), 2);
    let kinds = |panel: &roxmltree::Node| -> Vec<(String, String)> {
        panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("band"))
            .map(|n| {
                (
                    n.attribute("data-kind").unwrap().to_string(),
                    n.attribute("data-start").unwrap().to_string(),
                )
            })
            .collect()
    };
    let breaks = |panel: &roxmltree::Node| {
        panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("axis-break"))
            .count()
    };
    let i386 = kinds(&panels[0]);
    let has = |v: &[(String, String)], k: &str, at: &str| {
        v.iter()
            .any(|(kk, s)| kk == k && (at.is_empty() || s == at))
    };
    // The recursive slot 1023, kernel lowmem at PAGE_OFFSET in 4 MiB pages, the program.
    assert!(has(&i386, "recursive_pd", "0xffc00000"), "{i386:?}");
    assert!(has(&i386, "kernel_text", "0xc0000000"), "{i386:?}");
    assert!(has(&i386, "text", "0x8048000"), "{i386:?}");
    for k in ["data", "heap", "stack", "kernel", "free"] {
        assert!(has(&i386, k, ""), "no {k} in {i386:?}");
    }
    assert_eq!(breaks(&panels[0]), 0);
    let x64 = kinds(&panels[1]);
    assert!(has(&x64, "kernel", "0xffff888000000000"), "{x64:?}");
    assert!(has(&x64, "non_canonical", "0x800000000000"), "{x64:?}");
    for k in ["kernel_text", "kernel_stack", "text", "heap", "stack"] {
        assert!(has(&x64, k, ""), "no {k} in {x64:?}");
    }
    assert!(breaks(&panels[1]) >= 6);
    // One architecture: one space, no figure around it.
    ok(&["ptdump", "--arch", "i386", "--svg", p.to_str().unwrap()]);
    let one = std::fs::read_to_string(&p).unwrap();
    assert!(!one.contains("class=\"panel\""));
    assert!(one.contains("recursive_pd"));
}
