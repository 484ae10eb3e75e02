//! `vmspace gen-trace`: prints a generated trace (see `vmspace_trace::gen`).

/// Arguments of `vmspace gen-trace`.
#[derive(clap::Args)]
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
}

/// Runs `vmspace gen-trace`.
pub fn run(args: GenTraceArgs) -> Result<(), String> {
    let i386 = match args.arch.as_str() {
        "x86_64" => false,
        "i386" => true,
        other => return Err(format!("unknown arch {other:?} (x86_64 or i386)")),
    };
    print!(
        "{}",
        vmspace_trace::gen::generate(args.seed, args.ops, i386)
    );
    Ok(())
}
