//! Self-protection: which ops the backends refuse because they would modify memory the
//! Linux backend's own process lives in (trace-format.md, "Self-protection").

use crate::doc::Vma;

/// The page-rounded range `[addr, addr+len)` as `u128` bounds; a wrapping range reaches 2^64.
pub fn rounded(addr: u64, len: u64) -> (u128, u128) {
    let start = (addr as u128) & !0xfff;
    let end = ((addr as u128 + len as u128 + 0xfff) & !0xfff).min(1u128 << 64);
    (start, end)
}

/// The ranges of the before snapshot, fixed for the whole run.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    ranges: Vec<(u128, u128)>,
    start_brk: u64,
    brk0: u64,
}

impl Protected {
    /// Protection for a run whose before snapshot is `before`.
    pub fn new(before: &[Vma], start_brk: u64, brk0: u64) -> Self {
        Protected {
            ranges: before
                .iter()
                .map(|v| (v.start.0 as u128, v.end.0 as u128))
                .collect(),
            start_brk,
            brk0,
        }
    }

    /// Whether the page-rounded `[addr, addr+len)` intersects a before VMA.
    pub fn hits(&self, addr: u64, len: u64) -> bool {
        let (s, e) = rounded(addr, len);
        s < e && self.ranges.iter().any(|&(vs, ve)| s < ve && vs < e)
    }

    /// Whether `addr` lies inside a before VMA (for `val_hidden`).
    pub fn contains(&self, addr: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(s, e)| s <= addr as u128 && (addr as u128) < e)
    }

    /// Whether a brk to `target` is refused: `[start_brk, brk0)` holds static glibc's TLS.
    pub fn brk_hits(&self, target: u64) -> bool {
        self.start_brk != self.brk0 && self.start_brk <= target && target < self.brk0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{Hex, Int};

    fn vma(s: u64, e: u64) -> Vma {
        Vma {
            start: Hex(s),
            end: Hex(e),
            perms: "rw-p".into(),
            offset: Hex(0),
            dev: "00:00".into(),
            inode: Int(0),
            name: String::new(),
        }
    }

    #[test]
    fn rounding_and_wrapping() {
        let p = Protected::new(
            &[
                vma(0x10000, 0x20000),
                vma(0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000),
            ],
            0x30000,
            0x31000,
        );
        assert!(p.hits(0xfff1, 0x10));
        assert!(!p.hits(0xf001, 0x10));
        assert!(!p.hits(0xe000, 0x2000));
        assert!(p.hits(0x1ffff, 0));
        assert!(!p.hits(0x20000, 0));
        assert!(p.hits(0x8000_0000_0000, u64::MAX));
        assert!(p.contains(0x10000));
        assert!(!p.contains(0x20000));
        assert!(p.brk_hits(0x30800));
        assert!(!p.brk_hits(0x31000));
    }
}
