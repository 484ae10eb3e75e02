//! Trace values: integers (JSON ints or decimal/hex strings), prot, flags and advice names.

use serde_json::Value;

/// Parses a trace integer: a JSON integer, or a string with an optional `-`, decimal or
/// `0x` hex digits and `_` separators. Negative values wrap to two's complement.
pub fn parse_int(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else if let Some(i) = n.as_i64() {
                Ok(i as u64)
            } else {
                Err(format!("not an integer: {n}"))
            }
        }
        Value::String(s) => parse_int_str(s),
        other => Err(format!("expected an integer, got {other}")),
    }
}

/// Parses the string form of a trace integer (see [`parse_int`]).
pub fn parse_int_str(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let cleaned: String = body.chars().filter(|&c| c != '_').collect();
    let (digits, radix) = match cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
    {
        Some(h) => (h.to_string(), 16),
        None => (cleaned.clone(), 10),
    };
    if digits.is_empty() {
        return Err(format!("not an integer: {s:?}"));
    }
    let mag = u64::from_str_radix(&digits, radix).map_err(|_| format!("not an integer: {s:?}"))?;
    Ok(if neg { mag.wrapping_neg() } else { mag })
}

/// Formats an address the way result documents do: lower-case hex with `0x`.
pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

pub const PROT_READ: u64 = 1;
pub const PROT_WRITE: u64 = 2;
pub const PROT_EXEC: u64 = 4;
pub const PROT_SEM: u64 = 8;
pub const PROT_GROWSDOWN: u64 = 0x0100_0000;
pub const PROT_GROWSUP: u64 = 0x0200_0000;

pub const MAP_SHARED: u64 = 0x01;
pub const MAP_PRIVATE: u64 = 0x02;
pub const MAP_SHARED_VALIDATE: u64 = 0x03;
pub const MAP_DROPPABLE: u64 = 0x08;
pub const MAP_FIXED: u64 = 0x10;
pub const MAP_ANONYMOUS: u64 = 0x20;
pub const MAP_32BIT: u64 = 0x40;
pub const MAP_GROWSDOWN: u64 = 0x100;
pub const MAP_DENYWRITE: u64 = 0x800;
pub const MAP_EXECUTABLE: u64 = 0x1000;
pub const MAP_LOCKED: u64 = 0x2000;
pub const MAP_NORESERVE: u64 = 0x4000;
pub const MAP_POPULATE: u64 = 0x8000;
pub const MAP_NONBLOCK: u64 = 0x10000;
pub const MAP_STACK: u64 = 0x20000;
pub const MAP_HUGETLB: u64 = 0x40000;
pub const MAP_SYNC: u64 = 0x80000;
pub const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
pub const MAP_UNINITIALIZED: u64 = 0x400_0000;

pub const MREMAP_MAYMOVE: u64 = 1;
pub const MREMAP_FIXED: u64 = 2;
pub const MREMAP_DONTUNMAP: u64 = 4;
pub const MLOCK_ONFAULT: u64 = 1;

/// mmap flag names of the trace format.
pub const MMAP_FLAGS: &[(&str, u64)] = &[
    ("shared", MAP_SHARED),
    ("private", MAP_PRIVATE),
    ("shared_validate", MAP_SHARED_VALIDATE),
    ("fixed", MAP_FIXED),
    ("fixed_noreplace", MAP_FIXED_NOREPLACE),
    ("anonymous", MAP_ANONYMOUS),
    ("anon", MAP_ANONYMOUS),
    ("32bit", MAP_32BIT),
    ("growsdown", MAP_GROWSDOWN),
    ("denywrite", MAP_DENYWRITE),
    ("executable", MAP_EXECUTABLE),
    ("locked", MAP_LOCKED),
    ("noreserve", MAP_NORESERVE),
    ("populate", MAP_POPULATE),
    ("nonblock", MAP_NONBLOCK),
    ("stack", MAP_STACK),
    ("hugetlb", MAP_HUGETLB),
    ("sync", MAP_SYNC),
    ("uninitialized", MAP_UNINITIALIZED),
    ("droppable", MAP_DROPPABLE),
];

/// mremap flag names.
pub const MREMAP_FLAGS: &[(&str, u64)] = &[
    ("maymove", MREMAP_MAYMOVE),
    ("fixed", MREMAP_FIXED),
    ("dontunmap", MREMAP_DONTUNMAP),
];

/// mlock flag names (`onfault` turns mlock into mlock2).
pub const MLOCK_FLAGS: &[(&str, u64)] = &[("onfault", MLOCK_ONFAULT)];

/// `prot_flags` names.
pub const PROT_FLAGS: &[(&str, u64)] = &[
    ("growsdown", PROT_GROWSDOWN),
    ("growsup", PROT_GROWSUP),
    ("sem", PROT_SEM),
];

/// madvise advice names and values.
pub const ADVICE: &[(&str, u64)] = &[
    ("normal", 0),
    ("random", 1),
    ("sequential", 2),
    ("willneed", 3),
    ("dontneed", 4),
    ("free", 8),
    ("remove", 9),
    ("dontfork", 10),
    ("dofork", 11),
    ("mergeable", 12),
    ("unmergeable", 13),
    ("hugepage", 14),
    ("nohugepage", 15),
    ("dontdump", 16),
    ("dodump", 17),
    ("wipeonfork", 18),
    ("keeponfork", 19),
    ("cold", 20),
    ("pageout", 21),
    ("populate_read", 22),
    ("populate_write", 23),
    ("dontneed_locked", 24),
    ("collapse", 25),
    ("guard_install", 102),
    ("guard_remove", 103),
];

/// Parses `prot`: letters `rwx` (`-` ignored), `"none"`/`""`, or an integer passed raw.
pub fn parse_prot(v: &Value) -> Result<u64, String> {
    match v {
        Value::String(s) => {
            if s == "none" || s.is_empty() {
                return Ok(0);
            }
            if s.starts_with(|c: char| {
                c.is_ascii_digit()
                    || c == '-' && s.len() > 1 && s[1..].starts_with(|d: char| d.is_ascii_digit())
            }) {
                return parse_int_str(s);
            }
            let mut p = 0;
            for c in s.chars() {
                p |= match c {
                    'r' => PROT_READ,
                    'w' => PROT_WRITE,
                    'x' => PROT_EXEC,
                    '-' => 0,
                    _ => {
                        return Err(format!(
                            "bad prot {s:?}: {c:?} is none of r, w, x, - (or use \"none\")"
                        ))
                    }
                };
            }
            Ok(p)
        }
        other => parse_int(other),
    }
}

/// Parses a flag set: an array of names or number strings ORed together, or a raw integer.
pub fn parse_flags(v: &Value, names: &[(&str, u64)], what: &str) -> Result<u64, String> {
    match v {
        Value::Array(items) => {
            let mut f = 0;
            for item in items {
                match item {
                    Value::String(s) => {
                        if let Some(&(_, bit)) = names.iter().find(|(n, _)| n == s) {
                            f |= bit;
                        } else if let Ok(n) = parse_int_str(s) {
                            f |= n;
                        } else {
                            return Err(format!(
                                "unknown {what} flag {s:?} (known: {})",
                                names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            ));
                        }
                    }
                    other => f |= parse_int(other)?,
                }
            }
            Ok(f)
        }
        Value::String(s) => {
            if let Some(&(_, bit)) = names.iter().find(|(n, _)| n == s) {
                Ok(bit)
            } else {
                parse_int_str(s).map_err(|_| format!("unknown {what} flag {s:?}"))
            }
        }
        other => parse_int(other),
    }
}

/// Parses `advice`: a name or an integer.
pub fn parse_advice(v: &Value) -> Result<u64, String> {
    if let Value::String(s) = v {
        if let Some(&(_, a)) = ADVICE.iter().find(|(n, _)| n == s) {
            return Ok(a);
        }
    }
    parse_int(v).map_err(|_| format!("unknown advice {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers() {
        assert_eq!(parse_int(&json!(4096)).unwrap(), 4096);
        assert_eq!(parse_int(&json!(-4096)).unwrap(), (-4096i64) as u64);
        assert_eq!(
            parse_int(&json!("0x7fff_f7ff_f000")).unwrap(),
            0x7fff_f7ff_f000
        );
        assert_eq!(parse_int(&json!("-4096")).unwrap(), (-4096i64) as u64);
        assert_eq!(parse_int(&json!("1_000")).unwrap(), 1000);
        assert_eq!(parse_int(&json!("0xffffffffffffffff")).unwrap(), u64::MAX);
        assert!(parse_int(&json!("12a")).is_err());
        assert!(parse_int(&json!(1.5)).is_err());
        assert!(parse_int(&json!("")).is_err());
    }

    #[test]
    fn prot_and_flags() {
        assert_eq!(parse_prot(&json!("rw")).unwrap(), 3);
        assert_eq!(parse_prot(&json!("r-x")).unwrap(), 5);
        assert_eq!(parse_prot(&json!("none")).unwrap(), 0);
        assert_eq!(parse_prot(&json!(16)).unwrap(), 16);
        assert!(parse_prot(&json!("rq")).is_err());
        let f = parse_flags(&json!(["private", "anon", "0x200"]), MMAP_FLAGS, "mmap").unwrap();
        assert_eq!(f, 0x222);
        assert_eq!(parse_flags(&json!(0x22), MMAP_FLAGS, "mmap").unwrap(), 0x22);
        assert!(parse_flags(&json!(["privat"]), MMAP_FLAGS, "mmap").is_err());
        assert_eq!(parse_advice(&json!("dontneed")).unwrap(), 4);
        assert_eq!(parse_advice(&json!(102)).unwrap(), 102);
    }
}
