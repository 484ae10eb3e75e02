//! `vmspace gen-trace`: prints a generated trace (see `vmspace_trace::gen`).

/// Arguments of `vmspace gen-trace`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  vmspace gen-trace --seed 7 --ops 150 > t.jsonl   a trace to replay (vmspace replay t.jsonl --diff)
  vmspace gen-trace --arch i386 --seed 3            values within 32 bits for an i386 task

The output is a trace in JSON Lines (docs/trace-format.md): one op per line after a `#` comment
naming the seed; --json leaves the comment out.")]
pub struct GenTraceArgs {
    /// Random seed; the same seed gives the same trace.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of ops (besides the leading scratch-zone `let`).
    #[arg(long, default_value_t = 150)]
    ops: usize,
    /// Target architecture (i386 keeps every value within 32 bits).
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// Only the JSON lines: leave out the `#` comment lines (the header naming the seed).
    #[arg(long)]
    json: bool,
}

/// Runs `vmspace gen-trace`.
pub fn run(args: GenTraceArgs) -> Result<(), String> {
    let i386 = match args.arch.as_str() {
        "x86_64" => false,
        "i386" => true,
        other => return Err(format!("unknown arch {other:?} (x86_64 or i386)")),
    };
    let trace = vmspace_trace::gen::generate(args.seed, args.ops, i386);
    if args.json {
        for l in trace.lines().filter(|l| !l.trim_start().starts_with('#')) {
            println!("{l}");
        }
    } else {
        print!("{trace}");
    }
    Ok(())
}
