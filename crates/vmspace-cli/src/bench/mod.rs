//! `vmspace bench GROUP`: benchmarks that measure vmspace and its peers in the same run.
//!
//! Every group produces [`Record`]s; `--json` prints one JSON object per line, otherwise a
//! table in which each impl's time is also given as a ratio to the group's first impl of the
//! same case. Times are wall-clock medians over several rounds.

mod fault;
mod frames;
mod heap;
mod os;
mod paging;
mod range;
mod space;
mod windows;

use serde::Serialize;
use std::time::Instant;

/// Arguments of `vmspace bench`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  vmspace bench frames                   a table: ns/op per case and impl, ratio to the first impl
  vmspace bench heap --json > heap.jsonl one JSON object per (case, impl) line
  vmspace bench range --scale 0.1        a quick run with a tenth of the operations

Peers are measured in the same run, so ratios hold even on a loaded machine; build with
--release (cargo run --release -p vmspace-cli -- bench GROUP) for meaningful numbers. A spinner
shows progress on a terminal's stderr.")]
pub struct BenchArgs {
    /// Which group to run.
    #[arg(value_enum)]
    group: Group,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Scale the operation counts down (e.g. 0.1) for a quick run.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Group {
    /// Order-0 frame allocation on a fragmented 1,000,000-frame pool, against
    /// `buddy_system_allocator`.
    Frames,
    /// Mapping, translating and unmapping 1 GiB in 4 KiB pages on i386 and x86-64: range
    /// operations against page-at-a-time.
    Paging,
    /// Address-space operations: model vs the real kernel (mmap, mprotect, lookup).
    Space,
    /// Size-class and chunk heaps against malloc-style peers.
    Heap,
    /// The simulated CPU and fault handler: TLB-hit translation, demand-zero and COW faults
    /// against memset/memcpy of a 4 KiB page.
    Fault,
    /// Range arenas: alloc+free with 10 to 1,000,000 live segments, vmem policies against
    /// linear-scan crates and a `BTreeMap` best-fit.
    Range,
    /// Windows reserve/commit: reserve+release and commit+decommit against the syscalls
    /// that do the same on Linux, and the fault path's segment-map decision.
    Windows,
}

impl Group {
    /// The group's name on the command line.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// One measured (group, case, impl) cell.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub group: String,
    pub case: String,
    #[serde(rename = "impl")]
    pub impl_name: String,
    pub ns_per_op: f64,
    pub ops: u64,
    /// Extra numbers a group reports (memory ratios, sizes…), flattened into the object.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// A record without extra fields.
    pub fn new(group: &str, case: &str, impl_name: &str, ns_per_op: f64, ops: u64) -> Self {
        crate::progress::bench_step(&format!("{case} / {impl_name}"));
        Record {
            group: group.into(),
            case: case.into(),
            impl_name: impl_name.into(),
            ns_per_op,
            ops,
            extra: serde_json::Map::new(),
        }
    }

    /// Adds an extra field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// Runs `round` `rounds` times; each call performs `ops` operations and returns the elapsed
/// nanoseconds of its timed part. Returns the median ns per op.
pub fn median_ns_per_op(rounds: usize, ops: u64, mut round: impl FnMut() -> u128) -> f64 {
    crate::progress::bench_tick();
    let mut v: Vec<f64> = (0..rounds.max(1))
        .map(|_| round() as f64 / ops.max(1) as f64)
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `f` once, in nanoseconds.
pub fn time_ns(f: impl FnOnce()) -> u128 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos()
}

/// `count` pseudo-random words (xorshift64 from a fixed seed): the same every run.
pub fn randoms(count: usize) -> Vec<u64> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

/// Scales an operation count, keeping at least 1.
pub fn scaled(n: u64, scale: f64) -> u64 {
    ((n as f64 * scale) as u64).max(1)
}

/// Runs a group and prints its records.
pub fn run(args: BenchArgs) -> Result<(), String> {
    // A spinner on a terminal's stderr while the group runs; cleared when this returns.
    let _progress = crate::progress::BenchProgress::start(args.group.name());
    let records = match args.group {
        Group::Frames => frames::run(args.scale)?,
        Group::Paging => paging::run(args.scale)?,
        Group::Space => space::run(args.scale)?,
        Group::Heap => heap::run(args.scale)?,
        Group::Fault => fault::run(args.scale)?,
        Group::Range => range::run(args.scale)?,
        Group::Windows => windows::run(args.scale)?,
    };
    print_records(&records, args.json);
    Ok(())
}

/// Prints records as JSON lines or as a table with ratios to the first impl of each case.
pub fn print_records(records: &[Record], json: bool) {
    if json {
        for r in records {
            println!("{}", serde_json::to_string(r).expect("records serialize"));
        }
        return;
    }
    println!(
        "{:<10} {:<28} {:<26} {:>12} {:>10} {:>8}",
        "group", "case", "impl", "ns/op", "ops", "ratio"
    );
    for r in records {
        let base = records
            .iter()
            .find(|b| b.group == r.group && b.case == r.case)
            .map(|b| b.ns_per_op)
            .unwrap_or(r.ns_per_op);
        let extra = if r.extra.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(r.extra.clone()).to_string()
        };
        println!(
            "{:<10} {:<28} {:<26} {:>12.2} {:>10} {:>7.2}x {}",
            r.group,
            r.case,
            r.impl_name,
            r.ns_per_op,
            r.ops,
            r.ns_per_op / base,
            extra
        );
    }
}
