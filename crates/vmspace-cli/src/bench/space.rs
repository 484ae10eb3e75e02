//! `vmspace bench space`: address-space operations with 1, 1,000, 10,000 and 65,000 existing
//! VMAs, in the vmspace model and as real syscalls on this machine's kernel, in one run.
//!
//! The VMA population is one region of N pages whose every other page is mprotected to
//! read-write, so it holds N non-mergeable VMAs (65,000 stays under vm.max_map_count 65530
//! in the real process too). Cases, each timed per operation:
//! - `mmap+munmap`: map one anonymous read-write page with no hint, unmap it (one op = pair);
//! - `mprotect split+merge`: make the middle page of a 3-page read-write mapping read-only
//!   (a split into three) and back (a merge into one); one op = one mprotect;
//! - `lookup`: find the VMA of a random address inside the region (model: `find_vma`; Linux:
//!   `mincore` of that page, the cheapest syscall that looks a VMA up).
//!
//! Goals (issue 3): every model op 10x faster than the syscall, and at 65,000 VMAs at most 2x
//! its time at 1 VMA. mmap+munmap and mprotect meet the 2x goal (B-tree of 32-entry nodes:
//! 1.2–1.6x in runs on the shared 2-core machine); the 10x goal holds in most runs but the
//! kernel's own times swing 2x there. `lookup` cannot meet the 2x goal with any tree: at 1 VMA
//! it is a 3–5 ns hit of the last-VMA cache, at 65,000 a 4-level walk of 30–180 ns (random
//! probes miss the cache and, under load, the CPU caches), still 20–40x faster than `mincore`.

use super::os;
use super::{median_ns_per_op, randoms, scaled, time_ns, Record};
use vmspace::space::abi::*;
use vmspace::space::{AddressSpace, SpaceConfig, TaskKind};

const GROUP: &str = "space";
const ROUNDS: usize = 5;
const SIZES: [u64; 4] = [1, 1_000, 10_000, 65_000];
const MODEL: &str = "vmspace-model";
const LINUX: &str = "linux";
const PA: u64 = MAP_PRIVATE | MAP_ANONYMOUS;
const RW: u64 = PROT_READ | PROT_WRITE;

/// The operations both implementations provide.
trait Space {
    fn mmap(&mut self, len: u64, prot: u64) -> Result<u64, String>;
    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), String>;
    fn mprotect(&mut self, addr: u64, len: u64, prot: u64) -> Result<(), String>;
    fn lookup(&mut self, addr: u64) -> bool;
}

struct Model(AddressSpace);

impl Space for Model {
    #[inline]
    fn mmap(&mut self, len: u64, prot: u64) -> Result<u64, String> {
        self.0
            .mmap(0, len, prot, PA, None, 0)
            .map_err(|e| e.to_string())
    }
    #[inline]
    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), String> {
        self.0.munmap(addr, len).map_err(|e| e.to_string())
    }
    #[inline]
    fn mprotect(&mut self, addr: u64, len: u64, prot: u64) -> Result<(), String> {
        self.0.mprotect(addr, len, prot).map_err(|e| e.to_string())
    }
    #[inline]
    fn lookup(&mut self, addr: u64) -> bool {
        self.0.find_vma(addr).is_some()
    }
}

/// The real kernel, in this process.
struct Linux;

impl Space for Linux {
    #[inline]
    fn mmap(&mut self, len: u64, prot: u64) -> Result<u64, String> {
        os::mmap(len, prot, PA | MAP_NORESERVE)
    }
    #[inline]
    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), String> {
        os::munmap(addr, len)
    }
    #[inline]
    fn mprotect(&mut self, addr: u64, len: u64, prot: u64) -> Result<(), String> {
        os::mprotect(addr, len, prot)
    }
    #[inline]
    fn lookup(&mut self, addr: u64) -> bool {
        let mut vec = 0u8;
        // SAFETY: one page of a mapping this benchmark owns; `vec` holds the one result byte.
        unsafe { libc::mincore(addr as *mut libc::c_void, 4096, &mut vec) == 0 }
    }
}

/// Builds N VMAs: N pages read-only, every other page made read-write. Returns the base.
fn populate<S: Space>(s: &mut S, n: u64) -> Result<u64, String> {
    let base = s.mmap(n * 4096, PROT_READ)?;
    for i in (1..n).step_by(2) {
        s.mprotect(base + i * 4096, 4096, RW)?;
    }
    Ok(base)
}

fn addrs(base: u64, n: u64, count: usize) -> Vec<u64> {
    randoms(count)
        .into_iter()
        .map(|x| base + (x % n) * 4096)
        .collect()
}

fn measure<S: Space>(
    s: &mut S,
    name: &str,
    n: u64,
    scale: f64,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let base = populate(s, n)?;
    let pairs = scaled(if name == MODEL { 50_000 } else { 20_000 }, scale);
    let mut err = None;
    let ns = median_ns_per_op(ROUNDS, pairs, || {
        time_ns(|| {
            for _ in 0..pairs {
                match s.mmap(4096, RW).and_then(|a| s.munmap(a, 4096)) {
                    Ok(()) => {}
                    Err(e) => err = Some(e),
                }
            }
        })
    });
    out.push(Record::new(GROUP, &format!("mmap+munmap/{n}"), name, ns, pairs).with("vmas", n));

    let tri = s.mmap(3 * 4096, RW)?;
    let ops = scaled(if name == MODEL { 50_000 } else { 20_000 }, scale);
    let ns = median_ns_per_op(ROUNDS, ops, || {
        time_ns(|| {
            for i in 0..ops {
                let p = if i % 2 == 0 { PROT_READ } else { RW };
                if let Err(e) = s.mprotect(tri + 4096, 4096, p) {
                    err = Some(e);
                }
            }
        })
    });
    s.mprotect(tri, 3 * 4096, RW)?;
    s.munmap(tri, 3 * 4096)?;
    out.push(
        Record::new(GROUP, &format!("mprotect split+merge/{n}"), name, ns, ops).with("vmas", n),
    );

    let probes = addrs(base, n, 4096);
    let ops = scaled(if name == MODEL { 400_000 } else { 100_000 }, scale);
    let mut found = 0u64;
    let ns = median_ns_per_op(ROUNDS, ops, || {
        time_ns(|| {
            for i in 0..ops as usize {
                found += s.lookup(probes[i % probes.len()]) as u64;
            }
        })
    });
    if found == 0 {
        return Err(format!("{name}: lookups found nothing"));
    }
    out.push(Record::new(GROUP, &format!("lookup/{n}"), name, ns, ops).with("vmas", n));
    s.munmap(base, n * 4096)?;
    match err {
        Some(e) => Err(format!("{name} with {n} VMAs: {e}")),
        None => Ok(()),
    }
}

/// Runs the group.
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for n in SIZES {
        let mut cfg = SpaceConfig::linux_default(TaskKind::X86_64);
        cfg.mmap_min_addr = 4096;
        let mut model = Model(AddressSpace::new(cfg));
        measure(&mut model, MODEL, n, scale, &mut out)?;
        model.0.check_invariants()?;
        measure(&mut Linux, LINUX, n, scale, &mut out)?;
    }
    // Order: per case, the model first so the table's ratio column is linux/model.
    out.sort_by(|a, b| {
        let key = |r: &Record| {
            let (case, n) = r.case.split_once('/').unwrap_or((&r.case, "0"));
            (
                case.to_string(),
                n.parse::<u64>().unwrap_or(0),
                r.impl_name != MODEL,
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(out)
}
