//! "Two documents agree" (trace-format.md, Model backend): every op's `ret`, `err`, `fault`,
//! `code`, `val`, `skip` and `vma` (start, end, perms, offset, name) are equal, and so are the
//! `after` maps (start, end, perms, offset, name).

use crate::doc::{OpResult, ResultDoc, RetVal, Vma};

fn vma_str(v: &Vma) -> String {
    format!(
        "{:#x}-{:#x} {} {:#x} {}",
        v.start.0, v.end.0, v.perms, v.offset.0, v.name
    )
}

type VmaKey<'a> = (u64, u64, &'a str, u64, &'a str);

fn opt_vma(v: &Option<Option<Vma>>) -> Option<Option<VmaKey<'_>>> {
    v.as_ref().map(|o| o.as_ref().map(Vma::key))
}

fn result_diff(a: &OpResult, b: &OpResult) -> Option<String> {
    let mut d = Vec::new();
    let ra = a.ret.as_ref().map(RetVal::of);
    let rb = b.ret.as_ref().map(RetVal::of);
    if ra != rb {
        d.push(format!("ret {ra:?} vs {rb:?}"));
    }
    if a.err != b.err {
        d.push(format!("err {:?} vs {:?}", a.err, b.err));
    }
    if a.fault != b.fault {
        d.push(format!("fault {:?} vs {:?}", a.fault, b.fault));
    }
    if a.code != b.code {
        d.push(format!("code {:?} vs {:?}", a.code, b.code));
    }
    if a.val != b.val {
        d.push(format!(
            "val {:?} vs {:?}",
            a.val.map(|v| v.0),
            b.val.map(|v| v.0)
        ));
    }
    if a.skip != b.skip {
        d.push(format!("skip {:?} vs {:?}", a.skip, b.skip));
    }
    if opt_vma(&a.vma) != opt_vma(&b.vma) {
        let f = |v: &Option<Option<Vma>>| match v {
            None => "absent".to_string(),
            Some(None) => "null".to_string(),
            Some(Some(v)) => vma_str(v),
        };
        d.push(format!("vma {} vs {}", f(&a.vma), f(&b.vma)));
    }
    if d.is_empty() {
        None
    } else {
        Some(d.join(", "))
    }
}

/// The first difference between two documents (`a` is usually Linux, `b` the model), or
/// `None` when they agree.
pub fn first_difference(a: &ResultDoc, b: &ResultDoc) -> Option<String> {
    for (ra, rb) in a.results.iter().zip(&b.results) {
        if let Some(d) = result_diff(ra, rb) {
            return Some(format!("op {} (line {}, {}): {d}", ra.i, ra.line, ra.op));
        }
    }
    if a.results.len() != b.results.len() {
        return Some(format!(
            "{} results vs {}",
            a.results.len(),
            b.results.len()
        ));
    }
    if a.fatal != b.fatal {
        return Some(format!("fatal {:?} vs {:?}", a.fatal, b.fatal));
    }
    let empty = Vec::new();
    let (ma, mb) = (
        a.after.as_ref().unwrap_or(&empty),
        b.after.as_ref().unwrap_or(&empty),
    );
    for i in 0..ma.len().max(mb.len()) {
        let (x, y) = (ma.get(i), mb.get(i));
        if x.map(Vma::key) != y.map(Vma::key) {
            let f = |v: Option<&Vma>| v.map(vma_str).unwrap_or_else(|| "(none)".into());
            return Some(format!("after maps line {i}: {} vs {}", f(x), f(y)));
        }
    }
    None
}

/// Whether two documents agree.
pub fn agree(a: &ResultDoc, b: &ResultDoc) -> bool {
    first_difference(a, b).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{Hex, Int};
    use serde_json::json;

    fn vma(s: u64, e: u64, inode: u64) -> Vma {
        Vma {
            start: Hex(s),
            end: Hex(e),
            perms: "rw-p".into(),
            offset: Hex(0),
            dev: "00:00".into(),
            inode: Int(inode),
            name: String::new(),
        }
    }

    #[test]
    fn agreement_ignores_only_what_the_format_ignores() {
        let mut a = ResultDoc::default();
        a.results.push(OpResult {
            i: 0,
            line: 1,
            op: "mmap".into(),
            ret: Some(json!("0x1000")),
            addr: Some(Hex(0)),
            ..Default::default()
        });
        a.after = Some(vec![vma(0x1000, 0x2000, 0)]);
        let mut b = a.clone();
        b.results[0].addr = Some(Hex(5));
        b.results[0].ret = Some(json!(4096));
        b.after.as_mut().unwrap()[0].inode = Int(9);
        b.after.as_mut().unwrap()[0].dev = "00:01".into();
        assert!(agree(&a, &b));
        b.results[0].ret = Some(json!("0x2000"));
        assert!(first_difference(&a, &b).unwrap().contains("ret"));
        b.results[0].ret = a.results[0].ret.clone();
        b.after.as_mut().unwrap()[0].end = Hex(0x3000);
        assert!(first_difference(&a, &b).unwrap().contains("after maps"));
        b.after = a.after.clone();
        b.results[0].vma = Some(None);
        assert!(!agree(&a, &b));
    }
}
