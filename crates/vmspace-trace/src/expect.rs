//! `expect` / `expect@SEL` checks of test harnesses against one op's result.

use crate::doc::{OpResult, RetVal};
use crate::trace::{parse_addr_expr, AddrExpr, Op};
use crate::value::parse_int;
use serde_json::Value;

/// Whether a selector (`+`-separated tags) matches the configuration's tags.
pub fn selector_matches(selector: &[String], tags: &[String]) -> bool {
    selector.iter().all(|s| tags.iter().any(|t| t == s))
}

/// Checks every applicable expectation of `op` against `r`; returns failure messages.
pub fn check_expects(
    op: &Op,
    r: &OpResult,
    tags: &[String],
    resolve: &dyn Fn(&AddrExpr) -> Option<u64>,
) -> Vec<String> {
    let mut fails = Vec::new();
    let actual = serde_json::to_value(r).unwrap_or(Value::Null);
    for e in &op.expects {
        if !selector_matches(&e.selector, tags) {
            continue;
        }
        for (k, want) in &e.fields {
            if let Err(m) = check_one(k, want, r, &actual, resolve) {
                fails.push(format!("expect {k}: {m}"));
            }
        }
    }
    fails
}

fn addr_value(v: &Value, resolve: &dyn Fn(&AddrExpr) -> Option<u64>) -> Result<u64, String> {
    let e = parse_addr_expr(v, None)?;
    resolve(&e).ok_or_else(|| format!("cannot resolve {v}"))
}

fn ret_num(r: &OpResult) -> Result<u64, String> {
    match r.ret.as_ref().map(RetVal::of) {
        Some(RetVal::Num(n)) => Ok(n),
        _ => Err(format!(
            "no numeric ret (err {:?}, skip {:?})",
            r.err, r.skip
        )),
    }
}

fn check_one(
    k: &str,
    want: &Value,
    r: &OpResult,
    actual: &Value,
    resolve: &dyn Fn(&AddrExpr) -> Option<u64>,
) -> Result<(), String> {
    match k {
        "ret" => {
            let got = r.ret.as_ref().map(RetVal::of);
            let exp = if want.as_str() == Some("ok") {
                RetVal::Ok
            } else {
                RetVal::Num(addr_value(want, resolve)?)
            };
            if got.as_ref() != Some(&exp) {
                return Err(format!(
                    "want {exp:?}, got {got:?} (err {:?}, skip {:?})",
                    r.err, r.skip
                ));
            }
        }
        "ret_not" => {
            let n = ret_num(r)?;
            if n == addr_value(want, resolve)? {
                return Err(format!("got the excluded {n:#x}"));
            }
        }
        "ret_below" => {
            let (n, w) = (ret_num(r)?, addr_value(want, resolve)?);
            if n >= w {
                return Err(format!("{n:#x} is not below {w:#x}"));
            }
        }
        "ret_above" => {
            let (n, w) = (ret_num(r)?, addr_value(want, resolve)?);
            if n <= w {
                return Err(format!("{n:#x} is not above {w:#x}"));
            }
        }
        "aligned" | "not_aligned" => {
            let n = ret_num(r)?;
            let a = parse_int(want)?;
            if a == 0 {
                return Err("alignment 0".into());
            }
            if (n % a == 0) != (k == "aligned") {
                return Err(format!("{n:#x} alignment to {a:#x} is wrong"));
            }
        }
        "vma" => {
            let got = r.vma.as_ref().ok_or("no vma in the result")?;
            match (want, got) {
                (Value::Null, None) => {}
                (Value::Null, Some(v)) => return Err(format!("want null, got {v:?}")),
                (Value::Object(_), None) => return Err("want a VMA, got null".into()),
                (Value::Object(fields), Some(v)) => {
                    for (fk, fv) in fields {
                        let ok = match fk.as_str() {
                            "start" => v.start.0 == addr_value(fv, resolve)?,
                            "end" => v.end.0 == addr_value(fv, resolve)?,
                            "offset" => v.offset.0 == parse_int(fv)?,
                            "inode" => v.inode.0 == parse_int(fv)?,
                            "perms" => fv.as_str() == Some(v.perms.as_str()),
                            "name" => fv.as_str() == Some(v.name.as_str()),
                            "dev" => fv.as_str() == Some(v.dev.as_str()),
                            _ => return Err(format!("unknown vma field {fk:?}")),
                        };
                        if !ok {
                            return Err(format!("{fk}: want {fv}, got {v:?}"));
                        }
                    }
                }
                (other, _) => return Err(format!("vma must be null or an object, got {other}")),
            }
        }
        "addr" | "new_addr" | "old" | "target" | "fault_addr"
            if want.is_object() || want.as_str().is_some_and(|s| s.starts_with('$')) =>
        {
            let w = addr_value(want, resolve)?;
            let got = actual.get(k).map(parse_int);
            if got != Some(Ok(w)) {
                return Err(format!("want {w:#x}, got {:?}", actual.get(k)));
            }
        }
        field => {
            let got = actual.get(field).cloned().unwrap_or(Value::Null);
            let same = got == *want
                || match (parse_int(&got), parse_int(want)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                };
            if !same {
                return Err(format!("want {want}, got {got}"));
            }
        }
    }
    Ok(())
}
