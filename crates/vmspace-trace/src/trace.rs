//! Trace parsing: JSON Lines into [`Trace`], with the format's typo protection and id rules.

use crate::value::{
    parse_advice, parse_flags, parse_int, parse_prot, MLOCK_FLAGS, MMAP_FLAGS, MREMAP_FLAGS,
    PROT_FLAGS,
};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// What an address expression is relative to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// An absolute address (the offset is the address).
    Abs,
    /// An id bound by an earlier op.
    Id(String),
    /// `$brk0`: the break before the first op.
    Brk0,
    /// `$brk`: the break when the op runs.
    Brk,
    /// `$start_brk` from `/proc/self/stat`.
    StartBrk,
    /// `$stack`: start of `[stack]` in the before snapshot.
    Stack,
    /// `$stack_end`: end of `[stack]` in the before snapshot.
    StackEnd,
    /// `$vma:NAME`: start of the first before VMA named NAME.
    Vma(String),
    /// `$vma_end:NAME`: end of the last before VMA named NAME.
    VmaEnd(String),
}

/// An address expression: a base plus a byte offset (64-bit wrapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrExpr {
    pub base: Base,
    pub off: u64,
}

impl AddrExpr {
    /// An absolute address.
    pub fn abs(a: u64) -> Self {
        AddrExpr {
            base: Base::Abs,
            off: a,
        }
    }
}

/// brk's argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrkArg {
    /// Neither `addr` nor `delta`: `brk(0)`.
    Query,
    /// `addr`: absolute target.
    Target(AddrExpr),
    /// `delta`: current break + delta.
    Delta(u64),
}

/// One operation of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Mmap {
        addr: AddrExpr,
        len: u64,
        prot: u64,
        flags: u64,
        memfd: bool,
        offset: u64,
    },
    Munmap {
        addr: AddrExpr,
        len: u64,
    },
    Mprotect {
        addr: AddrExpr,
        len: u64,
        prot: u64,
    },
    Mremap {
        addr: AddrExpr,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: Option<AddrExpr>,
    },
    Brk {
        arg: BrkArg,
    },
    Touch {
        addr: AddrExpr,
        write: bool,
        value: u8,
        len: Option<u64>,
    },
    Madvise {
        addr: AddrExpr,
        len: u64,
        advice: u64,
    },
    Mlock {
        addr: AddrExpr,
        len: u64,
        flags: u64,
    },
    Munlock {
        addr: AddrExpr,
        len: u64,
    },
    Mseal {
        addr: AddrExpr,
        len: u64,
    },
    Query {
        addr: AddrExpr,
    },
    Snapshot,
    Let {
        addr: AddrExpr,
    },
}

impl OpKind {
    /// The op's canonical name, as written in results.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Mmap { .. } => "mmap",
            OpKind::Munmap { .. } => "munmap",
            OpKind::Mprotect { .. } => "mprotect",
            OpKind::Mremap { .. } => "mremap",
            OpKind::Brk { .. } => "brk",
            OpKind::Touch { .. } => "touch",
            OpKind::Madvise { .. } => "madvise",
            OpKind::Mlock { .. } => "mlock",
            OpKind::Munlock { .. } => "munlock",
            OpKind::Mseal { .. } => "mseal",
            OpKind::Query { .. } => "query",
            OpKind::Snapshot => "snapshot",
            OpKind::Let { .. } => "let",
        }
    }
}

/// An expectation attached to an op (`expect` or `expect@SEL`).
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// `+`-separated tags that must all match the configuration; empty = always.
    pub selector: Vec<String>,
    pub fields: Map<String, Value>,
}

/// One parsed op with its line number (1-based) and trace-level extras.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub line: usize,
    pub kind: OpKind,
    pub id: Option<String>,
    /// `"unsafe":true`: bypass self-protection.
    pub unsafe_: bool,
    pub expects: Vec<Expect>,
}

/// Run-wide settings from `config` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub smaps: bool,
    pub smaps_before: bool,
    pub snapshot_each: bool,
    pub unprivileged: bool,
    pub memfd_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            smaps: false,
            smaps_before: false,
            snapshot_each: false,
            unprivileged: false,
            memfd_size: 4 << 20,
        }
    }
}

impl Config {
    /// The `config` object of a result document (without `uid`).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("smaps".into(), self.smaps.into());
        m.insert("smaps_before".into(), self.smaps_before.into());
        m.insert("snapshot_each".into(), self.snapshot_each.into());
        m.insert("unprivileged".into(), self.unprivileged.into());
        m.insert("memfd_size".into(), self.memfd_size.into());
        m
    }
}

/// A parsed trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    pub ops: Vec<Op>,
    pub config: Config,
}

/// A parse error with the 1-based line it occurred on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Keys every op accepts besides its own fields.
const COMMON: &[&str] = &["op", "id", "unsafe"];

fn allowed_fields(op: &str) -> Option<&'static [&'static str]> {
    Some(match op {
        "mmap" => &["addr", "len", "prot", "prot_flags", "flags", "fd", "offset"],
        "munmap" => &["addr", "len"],
        "mprotect" => &["addr", "len", "prot", "prot_flags"],
        "mremap" => &[
            "addr", "old_addr", "old_len", "len", "new_len", "flags", "new_addr",
        ],
        "brk" | "sbrk" => &["addr", "delta", "incr"],
        "touch" => &["addr", "mode", "value", "len"],
        "madvise" => &["addr", "len", "advice"],
        "mlock" => &["addr", "len", "flags"],
        "munlock" | "mseal" => &["addr", "len"],
        "query" => &["addr"],
        "snapshot" => &[],
        "let" => &["addr"],
        "config" => &[
            "smaps",
            "smaps_before",
            "snapshot_each",
            "unprivileged",
            "memfd_size",
        ],
        _ => return None,
    })
}

fn is_ignored_key(k: &str) -> bool {
    k.starts_with('_') || k == "comment" || k == "note" || k.starts_with("expect")
}

struct LineParser<'a> {
    obj: &'a Map<String, Value>,
    defined: &'a HashSet<String>,
}

impl LineParser<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.obj.get(k)
    }

    fn int(&self, k: &str) -> Result<Option<u64>, String> {
        self.get(k)
            .map(|v| parse_int(v).map_err(|e| format!("{k}: {e}")))
            .transpose()
    }

    fn req_int(&self, k: &str) -> Result<u64, String> {
        self.int(k)?.ok_or_else(|| format!("missing {k:?}"))
    }

    fn int_alias(&self, a: &str, b: &str) -> Result<Option<u64>, String> {
        match (self.int(a)?, self.int(b)?) {
            (Some(_), Some(_)) => Err(format!("both {a:?} and {b:?} given")),
            (x, y) => Ok(x.or(y)),
        }
    }

    fn addr_of(&self, v: &Value) -> Result<AddrExpr, String> {
        parse_addr_expr(v, Some(self.defined))
    }

    fn addr(&self, k: &str) -> Result<Option<AddrExpr>, String> {
        self.get(k)
            .map(|v| self.addr_of(v).map_err(|e| format!("{k}: {e}")))
            .transpose()
    }

    fn req_addr(&self, k: &str) -> Result<AddrExpr, String> {
        self.addr(k)?.ok_or_else(|| format!("missing {k:?}"))
    }

    fn prot(&self) -> Result<u64, String> {
        let p = parse_prot(self.get("prot").ok_or("missing \"prot\"")?)?;
        let pf = match self.get("prot_flags") {
            Some(v) => parse_flags(v, PROT_FLAGS, "prot")?,
            None => 0,
        };
        Ok(p | pf)
    }

    fn bool(&self, k: &str) -> Result<bool, String> {
        match self.get(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("{k}: expected true/false, got {v}")),
        }
    }
}

/// Parses an address expression. With `defined`, refs to ids must be in it.
pub fn parse_addr_expr(v: &Value, defined: Option<&HashSet<String>>) -> Result<AddrExpr, String> {
    match v {
        Value::Object(o) => {
            for k in o.keys() {
                if !["ref", "off", "pages"].contains(&k.as_str()) {
                    return Err(format!("unknown key {k:?} in address expression"));
                }
            }
            let name = match o.get("ref") {
                Some(Value::String(s)) => s.as_str(),
                Some(other) => return Err(format!("ref must be a string, got {other}")),
                None => return Err("address object without \"ref\"".into()),
            };
            let base = parse_base(name, defined)?;
            let off = o.get("off").map(parse_int).transpose()?.unwrap_or(0);
            let pages = o.get("pages").map(parse_int).transpose()?.unwrap_or(0);
            Ok(AddrExpr {
                base,
                off: off.wrapping_add(pages.wrapping_mul(4096)),
            })
        }
        Value::String(s) if s.starts_with('$') => Ok(AddrExpr {
            base: parse_base(s, defined)?,
            off: 0,
        }),
        other => Ok(AddrExpr::abs(parse_int(other)?)),
    }
}

fn parse_base(name: &str, defined: Option<&HashSet<String>>) -> Result<Base, String> {
    if let Some(special) = name.strip_prefix('$') {
        return Ok(match special {
            "brk0" => Base::Brk0,
            "brk" => Base::Brk,
            "start_brk" => Base::StartBrk,
            "stack" => Base::Stack,
            "stack_end" => Base::StackEnd,
            _ => {
                if let Some(n) = special.strip_prefix("vma_end:") {
                    Base::VmaEnd(n.to_string())
                } else if let Some(n) = special.strip_prefix("vma:") {
                    Base::Vma(n.to_string())
                } else {
                    return Err(format!("unknown special {name:?}"));
                }
            }
        });
    }
    if let Some(d) = defined {
        if !d.contains(name) {
            return Err(format!(
                "reference to {name:?}, which no earlier line defines"
            ));
        }
    }
    Ok(Base::Id(name.to_string()))
}

fn parse_op(
    obj: &Map<String, Value>,
    line: usize,
    defined: &HashSet<String>,
    config: &mut Config,
) -> Result<Option<Op>, String> {
    let op = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => return Err(format!("\"op\" must be a string, got {v}")),
        None => return Err("missing \"op\"".into()),
    };
    let fields = allowed_fields(op).ok_or_else(|| format!("unknown op {op:?}"))?;
    for k in obj.keys() {
        if !(COMMON.contains(&k.as_str()) || fields.contains(&k.as_str()) || is_ignored_key(k)) {
            return Err(format!("unknown key {k:?} for op {op:?}"));
        }
    }
    let p = LineParser { obj, defined };
    if op == "config" {
        for (k, v) in obj {
            match k.as_str() {
                "smaps" => config.smaps = p.bool(k)?,
                "smaps_before" => config.smaps_before = p.bool(k)?,
                "snapshot_each" => config.snapshot_each = p.bool(k)?,
                "unprivileged" => config.unprivileged = p.bool(k)?,
                "memfd_size" => config.memfd_size = parse_int(v)?,
                _ => {}
            }
        }
        return Ok(None);
    }
    let kind = match op {
        "mmap" => {
            let memfd = match p.get("fd") {
                None => false,
                Some(Value::String(s)) if s == "memfd" => true,
                Some(v) => return Err(format!("fd must be \"memfd\", got {v}")),
            };
            OpKind::Mmap {
                addr: p.addr("addr")?.unwrap_or(AddrExpr::abs(0)),
                len: p.req_int("len")?,
                prot: p.prot()?,
                flags: match p.get("flags") {
                    Some(v) => parse_flags(v, MMAP_FLAGS, "mmap")?,
                    None => return Err("missing \"flags\"".into()),
                },
                memfd,
                offset: p.int("offset")?.unwrap_or(0),
            }
        }
        "munmap" => OpKind::Munmap {
            addr: p.req_addr("addr")?,
            len: p.req_int("len")?,
        },
        "mprotect" => OpKind::Mprotect {
            addr: p.req_addr("addr")?,
            len: p.req_int("len")?,
            prot: p.prot()?,
        },
        "mremap" => {
            let addr = match (p.addr("addr")?, p.addr("old_addr")?) {
                (Some(_), Some(_)) => return Err("both \"addr\" and \"old_addr\" given".into()),
                (a, b) => a.or(b).ok_or("missing \"addr\"")?,
            };
            OpKind::Mremap {
                addr,
                old_len: p
                    .int_alias("old_len", "len")?
                    .ok_or("missing \"old_len\"")?,
                new_len: p.req_int("new_len")?,
                flags: match p.get("flags") {
                    Some(v) => parse_flags(v, MREMAP_FLAGS, "mremap")?,
                    None => 0,
                },
                new_addr: p.addr("new_addr")?,
            }
        }
        "brk" | "sbrk" => {
            let delta = p.int_alias("delta", "incr")?;
            let arg = match (p.addr("addr")?, delta) {
                (Some(_), Some(_)) => return Err("brk takes either \"addr\" or \"delta\"".into()),
                (Some(a), None) => BrkArg::Target(a),
                (None, Some(d)) => BrkArg::Delta(d),
                (None, None) => BrkArg::Query,
            };
            OpKind::Brk { arg }
        }
        "touch" => {
            let write = match p.get("mode") {
                Some(Value::String(m)) if m == "r" => false,
                Some(Value::String(m)) if m == "w" => true,
                Some(v) => return Err(format!("mode must be \"r\" or \"w\", got {v}")),
                None => return Err("missing \"mode\"".into()),
            };
            OpKind::Touch {
                addr: p.req_addr("addr")?,
                write,
                value: p.int("value")?.unwrap_or(1) as u8,
                len: p.int("len")?,
            }
        }
        "madvise" => OpKind::Madvise {
            addr: p.req_addr("addr")?,
            len: p.req_int("len")?,
            advice: parse_advice(p.get("advice").ok_or("missing \"advice\"")?)?,
        },
        "mlock" => OpKind::Mlock {
            addr: p.req_addr("addr")?,
            len: p.req_int("len")?,
            flags: match p.get("flags") {
                Some(v) => parse_flags(v, MLOCK_FLAGS, "mlock")?,
                None => 0,
            },
        },
        "munlock" => OpKind::Munlock {
            addr: p.req_addr("addr")?,
            len: p.req_int("len")?,
        },
        "mseal" => OpKind::Mseal {
            addr: p.req_addr("addr")?,
            len: p.req_int("len")?,
        },
        "query" => OpKind::Query {
            addr: p.req_addr("addr")?,
        },
        "snapshot" => OpKind::Snapshot,
        "let" => {
            if obj.get("id").is_none() {
                return Err("let needs an \"id\"".into());
            }
            OpKind::Let {
                addr: p.req_addr("addr")?,
            }
        }
        _ => unreachable!("allowed_fields covers every op"),
    };
    let id = match obj.get("id") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && !s.starts_with('$') => Some(s.clone()),
        Some(v) => {
            return Err(format!(
                "id must be a non-empty string not starting with $, got {v}"
            ))
        }
    };
    let mut expects = Vec::new();
    for (k, v) in obj {
        if let Some(rest) = k.strip_prefix("expect") {
            let selector = if rest.is_empty() {
                Vec::new()
            } else if let Some(sel) = rest.strip_prefix('@') {
                sel.split('+').map(str::to_string).collect()
            } else {
                continue;
            };
            match v {
                Value::Object(fields) => expects.push(Expect {
                    selector,
                    fields: fields.clone(),
                }),
                other => return Err(format!("{k} must be an object, got {other}")),
            }
        }
    }
    Ok(Some(Op {
        line,
        kind,
        id,
        unsafe_: p.bool("unsafe")?,
        expects,
    }))
}

/// Parses a whole trace. Comments (`#`, `//`) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Trace, ParseError> {
    let mut trace = Trace::default();
    let mut defined = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("//") {
            continue;
        }
        let err = |message: String| ParseError { line, message };
        let v: Value = serde_json::from_str(t).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = match &v {
            Value::Object(o) => o,
            _ => return Err(err("each line must be a JSON object".into())),
        };
        if let Some(op) = parse_op(obj, line, &defined, &mut trace.config).map_err(err)? {
            if let Some(id) = &op.id {
                defined.insert(id.clone());
            }
            trace.ops.push(op);
        }
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_from_the_format() {
        let t = parse(concat!(
            "# two pages\n",
            "{\"op\":\"mmap\",\"addr\":0,\"len\":8192,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\"],\"id\":\"a\"}\n",
            "{\"op\":\"touch\",\"addr\":{\"ref\":\"a\",\"off\":4096},\"mode\":\"w\",\"value\":7}\n",
            "\n// comment\n",
            "{\"op\":\"madvise\",\"addr\":{\"ref\":\"a\",\"pages\":1},\"len\":4096,\"advice\":\"dontneed\"}\n",
            "{\"op\":\"touch\",\"addr\":{\"ref\":\"a\",\"pages\":1},\"mode\":\"r\",\"expect\":{\"val\":0}}\n",
        ))
        .unwrap();
        assert_eq!(t.ops.len(), 4);
        assert_eq!(t.ops[0].line, 2);
        assert_eq!(t.ops[3].line, 7);
        assert_eq!(
            t.ops[2].kind,
            OpKind::Madvise {
                addr: AddrExpr {
                    base: Base::Id("a".into()),
                    off: 4096
                },
                len: 4096,
                advice: 4
            }
        );
        assert_eq!(t.ops[3].expects.len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("{\"op\":\"munmap\",\"addr\":0,\"len\":1,\"lenn\":2}").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("lenn"));
        let e = parse("\n{\"op\":\"munmap\",\"addr\":{\"ref\":\"x\"},\"len\":1}").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse("{\"op\":\"nope\"}").is_err());
        assert!(parse("{\"op\":\"touch\",\"addr\":0,\"mode\":\"x\"}").is_err());
        assert!(parse("{\"op\":\"brk\",\"addr\":0,\"delta\":1}").is_err());
    }

    #[test]
    fn ignored_keys_specials_and_config() {
        let t = parse(concat!(
            "{\"op\":\"config\",\"smaps\":true,\"memfd_size\":\"0x1000\"}\n",
            "{\"op\":\"let\",\"addr\":{\"ref\":\"$brk0\",\"off\":268435456},\"id\":\"F\",\"_x\":1,\"note\":\"n\",\"comment\":\"c\",\"expect@x86_64+legacy\":{\"ret\":\"$brk0\"}}\n",
            "{\"op\":\"query\",\"addr\":\"$vma:[vdso]\"}\n",
            "{\"op\":\"sbrk\",\"incr\":\"-4096\"}\n",
            "{\"op\":\"mremap\",\"old_addr\":{\"ref\":\"F\"},\"len\":4096,\"new_len\":8192,\"flags\":[\"maymove\"],\"id\":\"F\"}\n",
        ))
        .unwrap();
        assert!(t.config.smaps);
        assert_eq!(t.config.memfd_size, 4096);
        assert_eq!(t.ops[0].expects[0].selector, vec!["x86_64", "legacy"]);
        assert_eq!(
            t.ops[1].kind,
            OpKind::Query {
                addr: AddrExpr {
                    base: Base::Vma("[vdso]".into()),
                    off: 0
                }
            }
        );
        assert_eq!(
            t.ops[2].kind,
            OpKind::Brk {
                arg: BrkArg::Delta((-4096i64) as u64)
            }
        );
        assert!(matches!(
            t.ops[3].kind,
            OpKind::Mremap {
                old_len: 4096,
                new_len: 8192,
                flags: 1,
                ..
            }
        ));
    }
}
