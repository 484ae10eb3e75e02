//! The trace generator: valid but tricky op sequences, deterministic per seed.
//!
//! It works in the scratch zone `$brk0 + 256 MiB` (MAP_FIXED / FIXED_NOREPLACE / hints) and
//! with hint-less mappings, and mixes partial unmaps that split, mprotect of middles,
//! adjacent mappings that should merge, brk up and down, mremap in every form, growsdown
//! neighbours and touches below them, reads/writes, madvise, mlock and memfd mappings.

use serde_json::{json, Value};

/// A small deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, including 0).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const PAGE: i64 = 4096;
/// Pages of the scratch zone the generator uses.
const ZONE_PAGES: i64 = 1024;

struct Gen {
    rng: Rng,
    lines: Vec<Value>,
    /// Ids the generator has defined (regions; their runtime binding may still fail).
    regions: Vec<(String, i64)>,
    growsdown: Vec<String>,
    next_id: usize,
    bits32: bool,
}

impl Gen {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    fn prot(&mut self) -> &'static str {
        const PROTS: [&str; 8] = ["rw", "rw", "rw", "r", "none", "rwx", "rx", "w"];
        PROTS[self.rng.below(8) as usize]
    }

    fn pages(&mut self) -> i64 {
        match self.rng.below(10) {
            0 => self.rng.range(17, 64),
            1 => 512, // 2 MiB: THP-aligned placement
            2 => 513,
            _ => self.rng.range(1, 8),
        }
    }

    fn zone(&mut self, page: i64) -> Value {
        json!({"ref": "F", "pages": page})
    }

    fn region(&mut self) -> Option<(String, i64)> {
        if self.regions.is_empty() {
            None
        } else {
            let i = self.rng.below(self.regions.len() as u64) as usize;
            Some(self.regions[i].clone())
        }
    }

    /// An address inside or just around a known region, or in the zone.
    fn somewhere(&mut self) -> (Value, i64) {
        match self.region() {
            Some((id, pages)) if self.rng.chance(80) => {
                let p = self.rng.range(-1, pages);
                (json!({"ref": id, "pages": p}), pages)
            }
            _ => {
                let p = self.rng.range(0, ZONE_PAGES);
                (self.zone(p), 8)
            }
        }
    }

    fn anon_flags(&mut self) -> Vec<&'static str> {
        let mut f = vec![
            if self.rng.chance(10) {
                "shared"
            } else {
                "private"
            },
            "anonymous",
        ];
        if self.rng.chance(8) {
            f.push("noreserve");
        }
        if self.rng.chance(5) {
            f.push("stack");
        }
        if self.rng.chance(3) {
            f.push("locked");
        }
        if self.rng.chance(3) {
            f.push("populate");
        }
        f
    }

    fn op(&mut self) {
        let choice = self.rng.below(112);
        let line = match choice {
            // Hint-less anonymous mappings (stack downward and merge top-down).
            0..=9 => {
                let id = self.new_id();
                let pages = self.pages();
                let flags = self.anon_flags();
                self.regions.push((id.clone(), pages));
                let prot = self.prot();
                json!({"op": "mmap", "len": pages * PAGE, "prot": prot, "flags": flags, "id": id})
            }
            // MAP_FIXED in the zone, often over or next to earlier mappings.
            10..=21 => {
                let id = self.new_id();
                let pages = self.pages().min(64);
                let at = self.rng.range(0, ZONE_PAGES - pages);
                let mut flags = self.anon_flags();
                flags.push(if self.rng.chance(80) {
                    "fixed"
                } else {
                    "fixed_noreplace"
                });
                let prot = self.prot();
                // Often exactly adjacent to (or over the edge of) a known region, so that
                // merges and partial replacements happen.
                let addr = match self.region() {
                    Some((rid, rpages)) if self.rng.chance(45) => {
                        let p = match self.rng.below(3) {
                            0 => rpages,
                            1 => -pages,
                            _ => self.rng.range(-pages + 1, rpages.max(2) - 1),
                        };
                        json!({"ref": rid, "pages": p})
                    }
                    _ => self.zone(at),
                };
                self.regions.push((id.clone(), pages));
                json!({"op": "mmap", "addr": addr, "len": pages * PAGE, "prot": prot, "flags": flags, "id": id})
            }
            // A hint next to an existing region (may be honoured, may be ignored).
            22..=26 => {
                let id = self.new_id();
                let pages = self.rng.range(1, 8);
                let (addr, _) = self.somewhere();
                self.regions.push((id.clone(), pages));
                let prot = self.prot();
                json!({"op": "mmap", "addr": addr, "len": pages * PAGE, "prot": prot, "flags": ["private", "anonymous"], "id": id})
            }
            // Growsdown neighbours.
            27..=29 => {
                let id = self.new_id();
                let pages = self.rng.range(1, 4);
                let at = self.rng.range(300, ZONE_PAGES - pages);
                let addr = self.zone(at);
                self.regions.push((id.clone(), pages));
                self.growsdown.push(id.clone());
                json!({"op": "mmap", "addr": addr, "len": pages * PAGE, "prot": "rw", "flags": ["private", "anonymous", "growsdown", "fixed"], "id": id})
            }
            // Partial unmaps that split.
            30..=39 => {
                let (addr, pages) = self.somewhere();
                let len = self.rng.range(1, pages.clamp(1, 16)) * PAGE;
                json!({"op": "munmap", "addr": addr, "len": len})
            }
            // mprotect of middles, edges and across holes.
            40..=51 => {
                let (addr, pages) = self.somewhere();
                let len = self.rng.range(1, pages.clamp(1, 16)) * PAGE;
                let prot = self.prot();
                json!({"op": "mprotect", "addr": addr, "len": len, "prot": prot})
            }
            // mremap in every form.
            52..=63 => {
                let Some((id, pages)) = self.region() else {
                    return;
                };
                let form = self.rng.below(6);
                let (old, new) = match form {
                    0 => (pages, self.rng.range(1, pages.max(1))),
                    _ => (pages, pages + self.rng.range(0, 8)),
                };
                let old_len = old.max(1) * PAGE;
                let new_len = new.max(1) * PAGE;
                let mut o = json!({"op": "mremap", "addr": {"ref": id}, "old_len": old_len, "new_len": new_len});
                match form {
                    0 | 1 => {}
                    2 | 3 => o["flags"] = json!(["maymove"]),
                    4 => {
                        let at = self.rng.range(0, ZONE_PAGES - new.max(1));
                        o["flags"] = json!(["maymove", "fixed"]);
                        o["new_addr"] = self.zone(at);
                    }
                    _ => {
                        let at = self.rng.range(0, ZONE_PAGES - old.max(1));
                        o["new_len"] = json!(old_len);
                        o["flags"] = json!(["maymove", "dontunmap"]);
                        if self.rng.chance(50) {
                            o["flags"] = json!(["maymove", "dontunmap", "fixed"]);
                            o["new_addr"] = self.zone(at);
                        }
                    }
                }
                if self.rng.chance(70) {
                    o["id"] = json!(id);
                    if let Some(r) = self.regions.iter_mut().find(|r| r.0 == id) {
                        r.1 = new.max(1);
                    }
                }
                o
            }
            // brk up and down.
            64..=69 => match self.rng.below(4) {
                0 => json!({"op": "brk", "delta": self.rng.range(1, 16) * PAGE}),
                1 => json!({"op": "brk", "delta": -self.rng.range(1, 8) * PAGE}),
                2 => {
                    json!({"op": "brk", "addr": {"ref": "$brk0", "off": self.rng.range(0, 40) * PAGE + self.rng.range(0, 3) * 100}})
                }
                _ => json!({"op": "sbrk", "incr": self.rng.range(-3, 3) * 1000}),
            },
            // Touches, reads and writes, including below growsdown regions.
            70..=84 => {
                let write = self.rng.chance(50);
                let mode = if write { "w" } else { "r" };
                let value = self.rng.range(1, 255);
                if !self.growsdown.is_empty() && self.rng.chance(25) {
                    let g = self.rng.pick(&self.growsdown).clone();
                    let below = *self.rng.pick(&[1, 2, 16, 255, 256, 257, 300]);
                    json!({"op": "touch", "addr": {"ref": g, "pages": -below, "off": 8}, "mode": mode, "value": value})
                } else {
                    let (addr, pages) = self.somewhere();
                    let mut o = json!({"op": "touch", "addr": addr, "mode": mode, "value": value});
                    if self.rng.chance(15) {
                        o["len"] = json!(self.rng.range(1, pages.clamp(1, 8)) * PAGE);
                    }
                    o
                }
            }
            // madvise: dontneed drops contents; others change flags.
            85..=89 => {
                let (addr, pages) = self.somewhere();
                let len = self.rng.range(1, pages.clamp(1, 8)) * PAGE;
                let advice = *self.rng.pick(&[
                    "dontneed",
                    "dontneed",
                    "dontfork",
                    "dofork",
                    "nohugepage",
                    "hugepage",
                    "dontdump",
                    "willneed",
                    "free",
                    "normal",
                ]);
                json!({"op": "madvise", "addr": addr, "len": len, "advice": advice})
            }
            // mlock / munlock.
            90..=92 => {
                let (addr, pages) = self.somewhere();
                let len = self.rng.range(1, pages.clamp(1, 4)) * PAGE;
                match self.rng.below(3) {
                    0 => json!({"op": "mlock", "addr": addr, "len": len}),
                    1 => json!({"op": "mlock", "addr": addr, "len": len, "flags": ["onfault"]}),
                    _ => json!({"op": "munlock", "addr": addr, "len": len}),
                }
            }
            // memfd mappings, including beyond EOF (SIGBUS on touch).
            93..=94 => {
                let id = self.new_id();
                let pages = self.rng.range(1, 8);
                let off = *self.rng.pick(&[0, 1, 1020, 1023, 1100]) * PAGE;
                self.regions.push((id.clone(), pages));
                let shared = if self.rng.chance(70) {
                    "shared"
                } else {
                    "private"
                };
                json!({"op": "mmap", "len": pages * PAGE, "prot": "rw", "flags": [shared], "fd": "memfd", "offset": off, "id": id})
            }
            // Queries.
            95..=97 => {
                let (addr, _) = self.somewhere();
                json!({"op": "query", "addr": addr})
            }
            // Wide and unusual ranges: spans over many regions and holes, mappings against
            // the break, PROT_GROWSDOWN, mseal.
            100..=111 => match self.rng.below(7) {
                0 => {
                    let id = self.new_id();
                    let pages = self.rng.range(1, 4);
                    let fixed = if self.rng.chance(60) {
                        "fixed"
                    } else {
                        "fixed_noreplace"
                    };
                    let addr = json!({"ref": "$brk", "pages": self.rng.range(0, 3)});
                    self.regions.push((id.clone(), pages));
                    json!({"op": "mmap", "addr": addr, "len": pages * PAGE, "prot": "rw", "flags": ["private", "anonymous", fixed], "id": id})
                }
                1 => {
                    let at = self.rng.range(0, ZONE_PAGES);
                    let addr = self.zone(at);
                    json!({"op": "munmap", "addr": addr, "len": self.rng.range(16, 200) * PAGE})
                }
                2 => {
                    let at = self.rng.range(0, ZONE_PAGES);
                    let addr = self.zone(at);
                    let prot = self.prot();
                    json!({"op": "mprotect", "addr": addr, "len": self.rng.range(16, 200) * PAGE, "prot": prot})
                }
                3 if !self.growsdown.is_empty() => {
                    let g = self.rng.pick(&self.growsdown).clone();
                    let prot = if self.rng.chance(50) { "r" } else { "rw" };
                    json!({"op": "mprotect", "addr": {"ref": g, "pages": self.rng.range(0, 1)}, "len": PAGE, "prot": prot, "prot_flags": ["growsdown"]})
                }
                4 => {
                    let (addr, pages) = self.somewhere();
                    json!({"op": "mseal", "addr": addr, "len": self.rng.range(1, pages.clamp(1, 4)) * PAGE})
                }
                5 => {
                    let at = self.rng.range(0, ZONE_PAGES);
                    let addr = self.zone(at);
                    json!({"op": "madvise", "addr": addr, "len": self.rng.range(16, 200) * PAGE, "advice": "dontneed"})
                }
                _ => {
                    let at = self.rng.range(0, ZONE_PAGES);
                    let addr = self.zone(at);
                    let op = if self.rng.chance(50) {
                        "mlock"
                    } else {
                        "munlock"
                    };
                    json!({"op": op, "addr": addr, "len": self.rng.range(4, 64) * PAGE})
                }
            },
            // Edge arguments: zero/unaligned lengths, unknown bits, huge lengths.
            _ => {
                let (addr, _) = self.somewhere();
                match self.rng.below(5) {
                    0 => json!({"op": "munmap", "addr": addr, "len": 0}),
                    1 => json!({"op": "mprotect", "addr": addr, "len": 100, "prot": 16}),
                    2 => {
                        json!({"op": "mmap", "len": if self.bits32 { "0xfffff000" } else { "0x7ffffffff000" }, "prot": "rw", "flags": ["private", "anonymous"]})
                    }
                    3 => {
                        json!({"op": "mremap", "addr": addr, "old_len": 0, "new_len": PAGE, "flags": ["maymove"]})
                    }
                    _ => {
                        json!({"op": "mmap", "addr": addr, "len": PAGE, "prot": "rw", "flags": ["private", "anonymous", "fixed"], "offset": 1})
                    }
                }
            }
        };
        self.lines.push(line);
    }
}

/// Generates a trace of `ops` ops (plus a leading `let` for the scratch zone) for `seed`.
pub fn generate(seed: u64, ops: usize, arch_i386: bool) -> String {
    let mut g = Gen {
        rng: Rng::new(seed),
        lines: Vec::new(),
        regions: Vec::new(),
        growsdown: Vec::new(),
        next_id: 0,
        bits32: arch_i386,
    };
    let mut out = format!(
        "# vmspace gen-trace --seed {seed} --ops {ops}{}\n",
        if arch_i386 { " --arch i386" } else { "" }
    );
    out.push_str(
        &json!({"op": "let", "addr": {"ref": "$brk0", "off": 256 << 20}, "id": "F"}).to_string(),
    );
    out.push('\n');
    while g.lines.len() < ops {
        g.op();
    }
    for l in &g.lines {
        out.push_str(&l.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_traces_parse_and_are_deterministic() {
        for seed in 0..50 {
            let t = generate(seed, 150, seed % 2 == 1);
            assert_eq!(t, generate(seed, 150, seed % 2 == 1));
            let parsed =
                crate::trace::parse(&t).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{t}"));
            assert_eq!(parsed.ops.len(), 151);
        }
        assert_ne!(generate(1, 20, false), generate(2, 20, false));
    }
}
