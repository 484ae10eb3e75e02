//! The result document of trace-format.md: types that serialize to exactly its shape and
//! read documents written by other implementations leniently (integers or hex strings).

use crate::value::{hex, parse_int};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An address or number printed as `"0x…"` and read from an integer or a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hex(pub u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        parse_int(&v).map(Hex).map_err(serde::de::Error::custom)
    }
}

/// An integer printed as a JSON number and read from a number or a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Int(pub u64);

impl Serialize for Int {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Int(b as u64)),
            v => parse_int(&v).map(Int).map_err(serde::de::Error::custom),
        }
    }
}

/// Reads a map whose values may be strings, numbers or booleans, as strings.
fn lenient_strings<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect())
}

/// One `/proc/self/maps` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: Hex,
    pub end: Hex,
    pub perms: String,
    #[serde(default)]
    pub offset: Hex,
    #[serde(default = "default_dev")]
    pub dev: String,
    #[serde(default)]
    pub inode: Int,
    #[serde(default)]
    pub name: String,
}

fn default_dev() -> String {
    "00:00".into()
}

impl Vma {
    /// The fields two documents must agree on: start, end, perms, offset, name.
    pub fn key(&self) -> (u64, u64, &str, u64, &str) {
        (
            self.start.0,
            self.end.0,
            &self.perms,
            self.offset.0,
            &self.name,
        )
    }

    /// Whether this is a shmem object whose inode comes from a global counter.
    pub fn has_shmem_inode(&self) -> bool {
        self.name.starts_with("/dev/zero")
            || self.name.starts_with("/memfd:")
            || self.name.starts_with("/SYSV")
    }
}

/// One `/proc/self/smaps` entry (the fields the format keeps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Smaps {
    pub start: Hex,
    pub end: Hex,
    pub perms: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub rss_kb: Int,
    #[serde(default)]
    pub anon_kb: Int,
    #[serde(default)]
    pub anon_huge_kb: Int,
    #[serde(default)]
    pub locked_kb: Int,
    #[serde(default)]
    pub thp_eligible: Int,
    #[serde(default)]
    pub vmflags: String,
}

fn some_opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The result of one op.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    pub i: usize,
    pub line: usize,
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_addr: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<Int>,
    /// `"0x…"`, `0` or `"ok"` (see [`RetVal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<Int>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_hidden: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_addr: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_opt"
    )]
    pub vma: Option<Option<Vma>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maps: Option<Vec<Vma>>,
}

/// A normalized `ret`, so that `"0x0"`, `0` and `"0"` compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetVal {
    Num(u64),
    Ok,
    Other(String),
}

impl RetVal {
    /// Normalizes a `ret` value of a result.
    pub fn of(v: &Value) -> RetVal {
        match v {
            Value::String(s) if s == "ok" => RetVal::Ok,
            other => match parse_int(other) {
                Ok(n) => RetVal::Num(n),
                Err(_) => RetVal::Other(other.to_string()),
            },
        }
    }
}

/// A whole result document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultDoc {
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub build: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub machine: String,
    #[serde(default)]
    pub personality: Hex,
    #[serde(default)]
    pub page_size: u64,
    #[serde(default)]
    pub ops: usize,
    #[serde(default)]
    pub config: Map<String, Value>,
    #[serde(default, deserialize_with = "lenient_strings")]
    pub sysctl: BTreeMap<String, String>,
    #[serde(default)]
    pub rlimits: BTreeMap<String, Value>,
    #[serde(default)]
    pub auxv: BTreeMap<String, Hex>,
    #[serde(default)]
    pub stat: BTreeMap<String, Hex>,
    #[serde(default)]
    pub brk0: Hex,
    #[serde(default)]
    pub before: Vec<Vma>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_smaps: Option<Vec<Smaps>>,
    #[serde(default)]
    pub results: Vec<OpResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brk_end: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<Vma>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_smaps: Option<Vec<Smaps>>,
    /// Set when the run died part way; printed as a separate `{"fatal":…}` line.
    #[serde(skip)]
    pub fatal: Option<String>,
}

/// The personality bit that selects the legacy layout.
pub const ADDR_COMPAT_LAYOUT: u64 = 0x0020_0000;
/// The personality bit that turns ASLR off.
pub const ADDR_NO_RANDOMIZE: u64 = 0x0004_0000;

impl ResultDoc {
    /// Whether the run used the legacy (bottom-up) layout.
    pub fn legacy(&self) -> bool {
        self.personality.0 & ADDR_COMPAT_LAYOUT != 0
            || self
                .sysctl
                .get("vm.legacy_va_layout")
                .is_some_and(|v| v.trim() != "0")
    }

    /// An rlimit in bytes; `None` for unlimited or unknown.
    pub fn rlimit(&self, name: &str) -> Option<u64> {
        let v = self.rlimits.get(name)?;
        if v.as_str() == Some("unlimited") {
            return None;
        }
        parse_int(v).ok()
    }

    /// A sysctl as an integer.
    pub fn sysctl_int(&self, name: &str) -> Option<u64> {
        self.sysctl
            .get(name)
            .and_then(|s| crate::value::parse_int_str(s.trim()).ok())
    }

    /// Writes the document (and a trailing `{"fatal":…}` line if the run died) as text.
    pub fn to_text(&self, pretty: bool) -> String {
        let mut s = if pretty {
            serde_json::to_string_pretty(self).expect("documents serialize")
        } else {
            serde_json::to_string(self).expect("documents serialize")
        };
        s.push('\n');
        if let Some(f) = &self.fatal {
            let line = self.results.last().map(|r| r.line).unwrap_or(0);
            s.push_str(&serde_json::json!({"fatal": f, "line": line}).to_string());
            s.push('\n');
        }
        s
    }

    /// Reads a document; a trailing `{"fatal":…}` line sets [`ResultDoc::fatal`].
    pub fn from_text(text: &str) -> Result<ResultDoc, String> {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let first = stream
            .next()
            .ok_or("empty result document")?
            .map_err(|e| format!("invalid result document: {e}"))?;
        if let Some(f) = first.get("fatal") {
            return Err(format!("the run failed: {f}"));
        }
        let mut doc: ResultDoc =
            serde_json::from_value(first).map_err(|e| format!("invalid result document: {e}"))?;
        if let Some(Ok(next)) = stream.next() {
            if let Some(f) = next.get("fatal") {
                doc.fatal = Some(
                    f.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| f.to_string()),
                );
            }
        }
        Ok(doc)
    }
}

/// Parses `/proc/self/maps` text into VMAs.
pub fn parse_maps(text: &str) -> Result<Vec<Vma>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_maps_line)
        .collect()
}

fn parse_maps_line(line: &str) -> Result<Vma, String> {
    let bad = || format!("bad maps line {line:?}");
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field().to_string();
    let offset = field();
    let dev = field().to_string();
    let inode = field();
    let name = rest.trim_start().to_string();
    let (s, e) = range.split_once('-').ok_or_else(bad)?;
    let h = |x: &str| u64::from_str_radix(x, 16).map_err(|_| bad());
    Ok(Vma {
        start: Hex(h(s)?),
        end: Hex(h(e)?),
        perms,
        offset: Hex(h(offset)?),
        dev,
        inode: Int(inode.parse().map_err(|_| bad())?),
        name,
    })
}

/// Parses `/proc/self/smaps` text.
pub fn parse_smaps(text: &str) -> Result<Vec<Smaps>, String> {
    let mut out: Vec<Smaps> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let v = parse_maps_line(line)?;
            out.push(Smaps {
                start: v.start,
                end: v.end,
                perms: v.perms,
                name: v.name,
                rss_kb: Int(0),
                anon_kb: Int(0),
                anon_huge_kb: Int(0),
                locked_kb: Int(0),
                thp_eligible: Int(0),
                vmflags: String::new(),
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let (k, v) = match line.split_once(':') {
            Some(kv) => kv,
            None => continue,
        };
        let num = || {
            Int(v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0))
        };
        match k {
            "Rss" => cur.rss_kb = num(),
            "Anonymous" => cur.anon_kb = num(),
            "AnonHugePages" => cur.anon_huge_kb = num(),
            "Locked" => cur.locked_kb = num(),
            "THPeligible" => cur.thp_eligible = num(),
            "VmFlags" => cur.vmflags = v.trim().to_string(),
            _ => {}
        }
    }
    Ok(out)
}

/// Renumbers shmem inodes 1, 2, … in order of first appearance across `lists`.
pub fn renumber_inodes<'a>(lists: impl IntoIterator<Item = &'a mut Vec<Vma>>) {
    let mut seen: Vec<u64> = Vec::new();
    for list in lists {
        for v in list.iter_mut() {
            if v.has_shmem_inode() {
                let idx = match seen.iter().position(|&x| x == v.inode.0) {
                    Some(i) => i,
                    None => {
                        seen.push(v.inode.0);
                        seen.len() - 1
                    }
                };
                v.inode = Int(idx as u64 + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let v = parse_maps(
            "00200000-00201000 r--p 00000000 fe:00 10010762                           /tmp/h64\n\
             00202000-00223000 rw-p 00000000 00:00 0 \n\
             7ffff7ffd000-7ffff7fff000 r-xp 00000000 00:00 0                          [vdso]\n\
             7ffff7fd0000-7ffff7fd1000 rw-s 00000000 00:01 1041                       /memfd:trace (deleted)\n",
        )
        .unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].name, "/tmp/h64");
        assert_eq!(v[0].inode, Int(10010762));
        assert_eq!(v[1].name, "");
        assert_eq!(v[2].start, Hex(0x7ffff7ffd000));
        assert_eq!(v[3].name, "/memfd:trace (deleted)");
    }

    #[test]
    fn documents_round_trip() {
        let mut doc = ResultDoc {
            backend: "linux".into(),
            version: 1,
            brk0: Hex(0x4000),
            ..Default::default()
        };
        doc.results.push(OpResult {
            i: 0,
            line: 1,
            op: "query".into(),
            vma: Some(None),
            ..Default::default()
        });
        let text = doc.to_text(false);
        assert!(text.contains("\"vma\":null"));
        assert!(text.contains("\"brk0\":\"0x4000\""));
        let back = ResultDoc::from_text(&text).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn foreign_documents_are_read_leniently() {
        let text = r#"{"backend":"linux","version":1,"arch":"x86_64","personality":262144,
            "sysctl":{"vm.max_map_count":65530,"vm.mmap_min_addr":"65536"},
            "rlimits":{"stack":"8388608","as":"unlimited"},"stat":{"start_brk":4198400},
            "brk0":"0x401000","before":[{"start":4096,"end":"0x2000","perms":"rw-p"}],
            "before_smaps":[{"start":"0x1000","end":"0x2000","perms":"rw-p","thp_eligible":true,"vmflags":"rd wr"}],
            "results":[{"i":0,"line":3,"op":"query","vma":null,"extra":1}],"unknown":{}}
            {"fatal":"helper died","line":3}"#;
        let d = ResultDoc::from_text(text).unwrap();
        assert_eq!(d.personality, Hex(0x40000));
        assert_eq!(d.sysctl_int("vm.max_map_count"), Some(65530));
        assert_eq!(d.rlimit("stack"), Some(8 << 20));
        assert_eq!(d.rlimit("as"), None);
        assert_eq!(d.before[0].start, Hex(0x1000));
        assert_eq!(d.before_smaps.as_ref().unwrap()[0].thp_eligible, Int(1));
        assert_eq!(d.results[0].vma, Some(None));
        assert_eq!(d.fatal.as_deref(), Some("helper died"));
    }

    #[test]
    fn inodes_are_renumbered() {
        let mk = |name: &str, inode| Vma {
            start: Hex(0),
            end: Hex(4096),
            perms: "rw-s".into(),
            offset: Hex(0),
            dev: "00:01".into(),
            inode: Int(inode),
            name: name.into(),
        };
        let mut a = vec![
            mk("/memfd:trace (deleted)", 77),
            mk("/dev/zero (deleted)", 5),
            mk("/bin/x", 9),
        ];
        let mut b = vec![
            mk("/dev/zero (deleted)", 5),
            mk("/memfd:trace (deleted)", 77),
        ];
        renumber_inodes([&mut a, &mut b]);
        assert_eq!(
            (a[0].inode, a[1].inode, a[2].inode),
            (Int(1), Int(2), Int(9))
        );
        assert_eq!((b[0].inode, b[1].inode), (Int(2), Int(1)));
    }
}
