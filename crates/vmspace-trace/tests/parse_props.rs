//! Bad input never panics the parser or the document reader; generated traces always parse.

use proptest::prelude::*;
use vmspace_trace::doc::ResultDoc;
use vmspace_trace::{gen, trace};

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-4096".to_string()),
        Just("\"0xffffffffffffffff\"".to_string()),
        Just("\"-0x1_000\"".to_string()),
        Just("\"$brk0\"".to_string()),
        Just("\"$vma:[vdso]\"".to_string()),
        Just("{\"ref\":\"a\",\"pages\":-1}".to_string()),
        Just("{\"ref\":\"$stack\",\"off\":\"0x10\"}".to_string()),
        Just("[\"private\",\"anon\",\"0x20\"]".to_string()),
        Just("\"rwx\"".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("1.5".to_string()),
        "[a-z$_]{0,6}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn line() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just("mmap"),
        Just("munmap"),
        Just("mprotect"),
        Just("mremap"),
        Just("brk"),
        Just("sbrk"),
        Just("touch"),
        Just("madvise"),
        Just("mlock"),
        Just("munlock"),
        Just("mseal"),
        Just("query"),
        Just("snapshot"),
        Just("let"),
        Just("config"),
        Just("bogus")
    ];
    let key = prop_oneof![
        Just("addr"),
        Just("len"),
        Just("prot"),
        Just("flags"),
        Just("id"),
        Just("mode"),
        Just("value"),
        Just("new_len"),
        Just("old_len"),
        Just("new_addr"),
        Just("delta"),
        Just("advice"),
        Just("fd"),
        Just("offset"),
        Just("prot_flags"),
        Just("expect"),
        Just("_x"),
        Just("smaps"),
        Just("memfd_size"),
        Just("typo")
    ];
    (op, proptest::collection::vec((key, json_value()), 0..6)).prop_map(|(op, kv)| {
        let mut s = format!("{{\"op\":\"{op}\"");
        for (k, v) in kv {
            s.push_str(&format!(",\"{k}\":{v}"));
        }
        s.push('}');
        s
    })
}

proptest! {
    #[test]
    fn parser_never_panics(lines in proptest::collection::vec(line(), 0..8), junk in ".{0,40}") {
        let mut text = lines.join("\n");
        let _ = trace::parse(&text);
        text.push('\n');
        text.push_str(&junk);
        if let Err(e) = trace::parse(&text) {
            prop_assert!(e.line >= 1);
        }
    }

    #[test]
    fn document_reader_never_panics(s in ".{0,200}") {
        let _ = ResultDoc::from_text(&s);
    }

    #[test]
    fn generated_traces_parse(seed in any::<u64>(), ops in 1usize..200, i386 in any::<bool>()) {
        let t = trace::parse(&gen::generate(seed, ops, i386)).unwrap();
        prop_assert_eq!(t.ops.len(), ops + 1);
    }
}
