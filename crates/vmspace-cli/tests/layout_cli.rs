//! `vmspace layout` end to end: the table's key facts, the JSON report, and the SVG picture
//! parsed as XML with the expected regions, legend and axis labels.

use std::process::Command;

fn vmspace(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vmspace {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&vmspace(&a)).unwrap()
}

fn limit<'a>(r: &'a serde_json::Value, layout: &str) -> &'a serde_json::Value {
    r["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layout"] == layout && l["kernel"] == r["limits"][0]["kernel"])
        .unwrap()
}

#[test]
fn i386_compat_limits_follow_l4_l5_and_b5() {
    let r = json(&["layout", "--arch", "i386"]);
    assert_eq!(r["task_size"], 0xffff_e000u64);
    let td = limit(&r, "topdown");
    let lg = limit(&r, "legacy");
    // L4: mmap_base 0xf7ffe000 with an 8 MiB stack; L18: 8 vDSO pages right below it;
    // B5: one page stays free below the vvar.
    assert_eq!(td["mmap_base"], 0xf7ff_e000u64);
    assert_eq!(td["max_brk"], 0xf7ff_e000u64 - 8 * 4096 - 4096);
    // L5: the legacy mmap area starts at TASK_SIZE/3 = 0x55555000 with the vDSO first.
    assert_eq!(lg["mmap_base"], 0x5555_5000u64);
    assert_eq!(lg["max_brk"], 0x5555_4000u64);
    assert!(td["max_heap"].as_u64().unwrap() > 3 * lg["max_heap"].as_u64().unwrap());
    // The largest legacy mmap runs from the vDSO's end to the stack's guard gap.
    assert_eq!(lg["max_mmap_at"], 0x5555_d000u64);
    let kinds: Vec<&str> = r["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    for k in [
        "text",
        "data",
        "heap_room",
        "mapping",
        "stack",
        "stack_guard",
        "kernel",
    ] {
        assert!(kinds.contains(&k), "missing {k} in {kinds:?}");
    }
}

#[test]
fn native_split_and_stack_limit_move_mmap_base() {
    let r = json(&["layout", "--arch", "i386", "--native"]);
    assert_eq!(r["task_size"], 0xc000_0000u64);
    assert_eq!(limit(&r, "topdown")["mmap_base"], 0xb800_0000u64);
    assert_eq!(limit(&r, "legacy")["mmap_base"], 0x4000_0000u64);
    // L4: a 1 GiB stack rlimit pushes mmap_base down to 0x7fffbfeff000 on x86-64.
    let r = json(&["layout", "--stack-limit", "1G"]);
    assert_eq!(limit(&r, "topdown")["mmap_base"], 0x7fff_bfef_f000u64);
    let r = json(&["layout", "--stack-limit", "unlimited"]);
    assert_eq!(limit(&r, "topdown")["mmap_base"], 0x1555_5555_6000u64);
}

#[test]
fn bands_tile_the_space() {
    for args in [
        &["layout", "--arch", "i386"][..],
        &["layout", "--arch", "i386", "--layout", "legacy"],
        &["layout", "--arch", "i386", "--native"],
        &["layout"],
        &["layout", "--layout", "legacy", "--stack-limit", "300M"],
    ] {
        let r = json(args);
        let bands = r["bands"].as_array().unwrap();
        let num = |v: &serde_json::Value| {
            v.as_u64()
                .map(u128::from)
                .unwrap_or_else(|| v.as_f64().unwrap() as u128)
        };
        let mut at = 0u128;
        for b in bands {
            assert_eq!(num(&b["start"]), at, "{args:?}: gap or overlap at {b}");
            assert!(num(&b["end"]) > at);
            at = num(&b["end"]);
        }
        let end = num(&r["space_end"]);
        assert_eq!(at, end, "{args:?}");
    }
}

#[test]
fn text_table_names_both_layouts() {
    let t = vmspace(&["layout", "--arch", "i386", "--layout", "legacy"]);
    assert!(t.contains("legacy layout"));
    assert!(t.contains("compat legacy   55555000  55554000"), "{t}");
    assert!(t.contains("compat topdown  f7ffe000  f7ff5000"), "{t}");
    // The native 3G/1G kernel's limits are listed with the compat ones.
    assert!(t.contains("native legacy   40000000  3ffff000"), "{t}");
    assert!(t.contains("native topdown  b8000000  b7ff7000"), "{t}");
    let o = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(["layout", "--stack-limit", "8Q"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad size unit"));
}

fn svg_of(args: &[&str], name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut a = args.to_vec();
    let ps = p.to_str().unwrap().to_string();
    a.push("--svg");
    a.push(&ps);
    vmspace(&a);
    std::fs::read_to_string(&p).unwrap()
}

fn check_svg(text: &str, want: &[&str], broken: bool) {
    let doc = roxmltree::Document::parse(text).expect("well-formed SVG");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let bands: Vec<_> = root
        .descendants()
        .filter(|n| n.attribute("class") == Some("band"))
        .collect();
    let kinds: Vec<&str> = bands
        .iter()
        .filter_map(|n| n.attribute("data-kind"))
        .collect();
    for k in want {
        assert!(kinds.contains(k), "SVG lacks a {k} band: {kinds:?}");
    }
    for b in &bands {
        let h: f64 = b.attribute("height").unwrap().parse().unwrap();
        assert!(h >= 1.0, "invisible band");
        assert!(b.children().any(|c| c.tag_name().name() == "title"));
    }
    assert!(root
        .descendants()
        .any(|n| n.attribute("class") == Some("legend")));
    assert!(root
        .descendants()
        .any(|n| n.attribute("class") == Some("axis-label")));
    assert!(
        root.descendants()
            .filter(|n| n.attribute("class") == Some("tick"))
            .count()
            >= 4
    );
    assert_eq!(
        root.descendants()
            .filter(|n| n.attribute("class") == Some("marker"))
            .count(),
        2,
        "mmap base and heap limit markers"
    );
    let breaks = root
        .descendants()
        .filter(|n| n.attribute("class") == Some("axis-break"))
        .count();
    assert_eq!(breaks > 0, broken, "axis breaks: {breaks}");
}

#[test]
fn svg_is_xml_with_the_regions() {
    // The picture's kinds (picture::BandKind): a layout "mapping" is drawn as "mmap", the
    // room a stack may grow into as "stack_reserved".
    let want32 = [
        "text",
        "data",
        "heap_room",
        "mmap",
        "stack",
        "stack_reserved",
        "stack_guard",
        "kernel",
    ];
    check_svg(
        &svg_of(&["layout", "--arch", "i386"], "l-i386.svg"),
        &want32,
        false,
    );
    check_svg(
        &svg_of(
            &["layout", "--arch", "i386", "--layout", "legacy"],
            "l-i386-legacy.svg",
        ),
        &[&want32[..], &["mmap_room"]].concat(),
        false,
    );
    // 64-bit: the free hole, the non-canonical hole and the kernel half are broken.
    check_svg(
        &svg_of(&["layout"], "l-x86_64.svg"),
        &[
            "text",
            "heap_room",
            "mmap",
            "stack",
            "non_canonical",
            "kernel",
        ],
        true,
    );
}
