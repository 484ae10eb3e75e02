//! "Two documents agree" (trace-format.md, Model backend): every op's `ret`, `err`, `fault`,
//! `code`, `val`, `skip` and `vma` (start, end, perms, offset, name) are equal, and so are the
//! `after` maps (start, end, perms, offset, name).
//!
//! When both documents have `after_smaps` (`"smaps":true`), the resident sizes `rss_kb` and
//! `anon_kb` must agree too, on the part of memory the trace controls:
//!
//! - An `after_smaps` entry that intersects no VMA of the `before` snapshot was created by
//!   the trace (mmap, mremap, brk from a fresh break, stack-free growth): its `rss_kb` and
//!   `anon_kb` must be equal.
//! - An entry that grew out of the before snapshot's `[stack]` (stack growth below it) and
//!   intersects no other before VMA is compared by delta when the Linux document has
//!   `before_smaps` (`"smaps_before":true`): Linux's after value minus its before value of
//!   `[stack]` must equal the model's after value. This is sound because the model starts
//!   with nothing resident, self-protection skips every write, unmap and advice in the
//!   before range (a read there maps the zero page or an already-resident page, which adds
//!   nothing to `Rss` on either side), and the Linux helper neither grows its stack nor
//!   takes signals on it (its handler runs on a sigaltstack, its buffers are static).
//! - Any other entry holds pages that were resident before the trace started (the binary,
//!   libc, ld.so, vdso, a pre-existing `[heap]`, the helper's own stack and statics): how
//!   many is the real process's history, not the trace's doing, so it is not compared.

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
    smaps_difference(a, b)
}

/// Whether `[a0, a1)` and `[b0, b1)` overlap.
fn overlaps(a0: u64, a1: u64, b0: u64, b1: u64) -> bool {
    a0 < b1 && b0 < a1
}

/// The first difference in `rss_kb`/`anon_kb` of the `after_smaps` entries the trace
/// controls (see the module documentation), `a` being the Linux document.
pub fn smaps_difference(a: &ResultDoc, b: &ResultDoc) -> Option<String> {
    let (Some(sa), Some(sb)) = (&a.after_smaps, &b.after_smaps) else {
        return None;
    };
    for e in sa {
        let (s, t) = (e.start.0, e.end.0);
        let inside: Vec<&Vma> = a
            .before
            .iter()
            .filter(|v| overlaps(s, t, v.start.0, v.end.0))
            .collect();
        let base = if inside.is_empty() {
            (0, 0)
        } else if inside.len() == 1 && inside[0].name == "[stack]" && s < inside[0].start.0 {
            let before = a.before_smaps.as_ref().and_then(|bs| {
                bs.iter()
                    .find(|x| x.start == inside[0].start && x.end == inside[0].end)
            });
            match before {
                Some(x) => (x.rss_kb.0, x.anon_kb.0),
                None => continue,
            }
        } else {
            continue;
        };
        let m = sb.iter().find(|x| x.start == e.start && x.end == e.end);
        let Some(m) = m else {
            return Some(format!(
                "after_smaps {s:#x}-{t:#x}: missing in the second document"
            ));
        };
        let (rss, anon) = (
            e.rss_kb.0.saturating_sub(base.0),
            e.anon_kb.0.saturating_sub(base.1),
        );
        if (rss, anon) != (m.rss_kb.0, m.anon_kb.0) {
            let delta = if base == (0, 0) {
                ""
            } else {
                " (less the before state)"
            };
            return Some(format!(
                "after_smaps {s:#x}-{t:#x} {}: rss_kb/anon_kb{delta} {rss}/{anon} vs {}/{}",
                e.name, m.rss_kb.0, m.anon_kb.0
            ));
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

    fn smaps(s: u64, e: u64, name: &str, rss: u64, anon: u64) -> crate::doc::Smaps {
        crate::doc::Smaps {
            start: Hex(s),
            end: Hex(e),
            perms: "rw-p".into(),
            name: name.into(),
            rss_kb: Int(rss),
            anon_kb: Int(anon),
            anon_huge_kb: Int(0),
            locked_kb: Int(0),
            thp_eligible: Int(0),
            vmflags: String::new(),
        }
    }

    #[test]
    fn smaps_compare_what_the_trace_controls() {
        let mut a = ResultDoc::default();
        let mut stack = vma(0x7000, 0x9000, 0);
        stack.name = "[stack]".into();
        a.before = vec![vma(0x1000, 0x2000, 0), stack];
        a.after_smaps = Some(vec![
            smaps(0x1000, 0x2000, "", 40, 40),
            smaps(0x3000, 0x5000, "", 8, 4),
            smaps(0x6000, 0x9000, "[stack]", 12, 12),
        ]);
        let mut b = a.clone();
        b.after_smaps = Some(vec![
            smaps(0x1000, 0x2000, "", 0, 0),
            smaps(0x3000, 0x5000, "", 8, 4),
            smaps(0x6000, 0x9000, "[stack]", 0, 0),
        ]);
        // A before-snapshot VMA is not compared; the stack's growth only with before_smaps.
        assert!(agree(&a, &b));
        b.after_smaps.as_mut().unwrap()[1].anon_kb = Int(8);
        assert!(first_difference(&a, &b).unwrap().contains("0x3000-0x5000"));
        b.after_smaps.as_mut().unwrap()[1].anon_kb = Int(4);
        a.before_smaps = Some(vec![smaps(0x7000, 0x9000, "[stack]", 8, 8)]);
        assert!(first_difference(&a, &b).unwrap().contains("[stack]"));
        b.after_smaps.as_mut().unwrap()[2].rss_kb = Int(4);
        b.after_smaps.as_mut().unwrap()[2].anon_kb = Int(4);
        assert!(agree(&a, &b));
        // An entry the trace created that the other document lacks is a difference.
        b.after_smaps.as_mut().unwrap().remove(1);
        assert!(first_difference(&a, &b).unwrap().contains("missing"));
    }
}
