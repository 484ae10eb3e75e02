//! `vmspace bench windows`: Windows reserve/commit in the model against the same work done
//! with real syscalls on this machine's kernel, with 1, 1,000 and 10,000 live 1 MiB
//! reservations (each with its top page committed, like thread stacks), in one run.
//!
//! Cases, each timed per operation:
//! - `reserve+release`: reserve 1 MiB anywhere and release it (one op = pair); Linux:
//!   `mmap(PROT_NONE)` + `munmap`;
//! - `commit+decommit`: commit one page in the middle of a live reservation and decommit it;
//!   Linux: `mprotect(RW)` + `madvise(DONTNEED)` + `mprotect(NONE)`, what decommit costs there;
//! - `fault-decision`: what the fault path asks first about a random address of the
//!   reservations: `segment-map` (2 bits per 64 KiB, O(1)) against `table-lookup` (the
//!   allocation table's B-tree and the page's run).
//!
//! Times are this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, kernel time of the syscalls
//! included): the shared machine's load makes wall clock swing several-fold.

use super::os::{self, cpu_time_ns as time_ns};
use super::{median_ns_per_op, randoms, scaled, Record};
use vmspace::space::abi::*;
use vmspace::space::windows::table::WinPage;
use vmspace::space::{AddressSpace, SpaceConfig, TaskKind, WinProt};

const GROUP: &str = "windows";
const ROUNDS: usize = 5;
const SIZES: [u64; 3] = [1, 1_000, 10_000];
const MODEL: &str = "vmspace-win";
const LINUX: &str = "linux";
const MIB: u64 = 1 << 20;
const P: u64 = 4096;

/// The operations both implementations provide.
trait Win {
    fn reserve(&mut self, len: u64) -> Result<u64, String>;
    fn release(&mut self, base: u64, len: u64) -> Result<(), String>;
    fn commit(&mut self, addr: u64, len: u64) -> Result<(), String>;
    fn decommit(&mut self, addr: u64, len: u64) -> Result<(), String>;
}

struct Model(AddressSpace);

impl Win for Model {
    #[inline]
    fn reserve(&mut self, len: u64) -> Result<u64, String> {
        self.0.reserve(None, len, false).map_err(|e| e.to_string())
    }
    #[inline]
    fn release(&mut self, base: u64, _len: u64) -> Result<(), String> {
        self.0.release(base, 0).map_err(|e| e.to_string())
    }
    #[inline]
    fn commit(&mut self, addr: u64, len: u64) -> Result<(), String> {
        self.0
            .commit(addr, len, WinProt::READWRITE)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    #[inline]
    fn decommit(&mut self, addr: u64, len: u64) -> Result<(), String> {
        self.0.decommit(addr, len).map_err(|e| e.to_string())
    }
}

/// The real kernel, in this process.
struct Linux;

impl Win for Linux {
    #[inline]
    fn reserve(&mut self, len: u64) -> Result<u64, String> {
        os::mmap(len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
    }
    #[inline]
    fn release(&mut self, base: u64, len: u64) -> Result<(), String> {
        os::munmap(base, len)
    }
    #[inline]
    fn commit(&mut self, addr: u64, len: u64) -> Result<(), String> {
        os::mprotect(addr, len, PROT_READ | PROT_WRITE)
    }
    #[inline]
    fn decommit(&mut self, addr: u64, len: u64) -> Result<(), String> {
        os::madvise(addr, len, libc::MADV_DONTNEED)?;
        os::mprotect(addr, len, PROT_NONE)
    }
}

/// N reservations of 1 MiB with the top page committed. Returns their bases.
fn populate<W: Win>(w: &mut W, n: u64) -> Result<Vec<u64>, String> {
    let mut bases = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let b = w.reserve(MIB)?;
        w.commit(b + MIB - P, P)?;
        bases.push(b);
    }
    Ok(bases)
}

fn measure<W: Win>(
    w: &mut W,
    name: &str,
    n: u64,
    scale: f64,
    out: &mut Vec<Record>,
) -> Result<Vec<u64>, String> {
    let bases = populate(w, n)?;
    let mut err = None;
    let pairs = scaled(if name == MODEL { 50_000 } else { 20_000 }, scale);
    let ns = median_ns_per_op(ROUNDS, pairs, || {
        time_ns(|| {
            for _ in 0..pairs {
                if let Err(e) = w.reserve(MIB).and_then(|b| w.release(b, MIB)) {
                    err = Some(e);
                }
            }
        })
    });
    out.push(
        Record::new(GROUP, &format!("reserve+release/{n}"), name, ns, pairs)
            .with("reservations", n),
    );
    let r = randoms(4096);
    let ns = median_ns_per_op(ROUNDS, pairs, || {
        time_ns(|| {
            for i in 0..pairs as usize {
                let b = bases[r[i % r.len()] as usize % bases.len()];
                let page = b + MIB / 2;
                if let Err(e) = w.commit(page, P).and_then(|_| w.decommit(page, P)) {
                    err = Some(e);
                }
            }
        })
    });
    out.push(
        Record::new(GROUP, &format!("commit+decommit/{n}"), name, ns, pairs)
            .with("reservations", n),
    );
    match err {
        Some(e) => Err(format!("{name} with {n} reservations: {e}")),
        None => Ok(bases),
    }
}

/// The fault path's first question, both ways, over random addresses of the reservations.
fn decision(s: &AddressSpace, bases: &[u64], n: u64, scale: f64, out: &mut Vec<Record>) {
    let probes: Vec<u64> = randoms(8192)
        .iter()
        .map(|x| bases[*x as usize % bases.len()] + (x >> 32) % MIB)
        .collect();
    let ops = scaled(2_000_000, scale);
    let t = s.win_table();
    let mut acc = 0u64;
    let ns = median_ns_per_op(ROUNDS, ops, || {
        time_ns(|| {
            for i in 0..ops as usize {
                acc += matches!(t.page(probes[i % probes.len()]), WinPage::Reserved) as u64;
            }
        })
    });
    out.push(
        Record::new(
            GROUP,
            &format!("fault-decision/{n}"),
            "segment-map",
            ns,
            ops,
        )
        .with("reservations", n),
    );
    let ns = median_ns_per_op(ROUNDS, ops, || {
        time_ns(|| {
            for i in 0..ops as usize {
                let a = probes[i % probes.len()];
                acc += t
                    .containing(a)
                    .is_some_and(|r| !r.entry((a - r.base) / P).is_committed())
                    as u64;
            }
        })
    });
    out.push(
        Record::new(
            GROUP,
            &format!("fault-decision/{n}"),
            "table-lookup",
            ns,
            ops,
        )
        .with("reservations", n),
    );
    std::hint::black_box(acc);
}

/// Runs the group.
pub fn run(scale: f64) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for n in SIZES {
        let mut model = Model(AddressSpace::new(SpaceConfig::linux_default(
            TaskKind::X86_64,
        )));
        let bases = measure(&mut model, MODEL, n, scale, &mut out)?;
        model.0.check_invariants()?;
        decision(&model.0, &bases, n, scale, &mut out);
        let mut linux = Linux;
        let lb = measure(&mut linux, LINUX, n, scale, &mut out)?;
        for b in lb {
            linux.release(b, MIB)?;
        }
    }
    // Per case, the model first so the table's ratio column is peer/model.
    out.sort_by(|a, b| {
        let key = |r: &Record| {
            let (case, n) = r.case.split_once('/').unwrap_or((&r.case, "0"));
            (
                case.to_string(),
                n.parse::<u64>().unwrap_or(0),
                r.impl_name != MODEL && r.impl_name != "segment-map",
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(out)
}
