//! The `vmspace` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod capacity;
mod gen_trace;
mod layout;
mod picture;
mod progress;
mod ptdump;
mod replay;
mod rng;
mod scenario;

/// vmspace: a virtual-memory manager of the kind an OS kernel has, and tools to run it.
#[derive(Parser)]
#[command(name = "vmspace", version, about, long_about = None)]
#[command(after_help = "Examples:
  vmspace layout --arch i386 --svg i386.svg   the layout of a 32-bit task, drawn to scale
  vmspace gen-trace --seed 7 > t.jsonl && vmspace replay t.jsonl --diff

Each command explains itself with --help; those that print results take --json.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure vmspace against its peers in the same run.
    ///
    /// Example: `vmspace bench frames --json` prints one JSON object per line with
    /// group, case, impl, ns_per_op and ops; without --json a table with ratios.
    Bench(bench::BenchArgs),
    /// Build an example i386 and x86-64 address space and dump their page tables.
    ///
    /// Prints coalesced ranges `start-end  size  flags  level` the way Linux's
    /// /sys/kernel/debug/page_tables does, plus a summary; `--json` for one object per space.
    Ptdump(ptdump::PtdumpArgs),
    /// Run a trace on the real kernel and/or in the vmspace model.
    ///
    /// Example: `vmspace replay t.jsonl --backend linux --json > linux.json`, then
    /// `vmspace replay t.jsonl --backend model --start-from linux.json --json`; or
    /// `vmspace replay --diff t.jsonl` to run both and print the first difference.
    Replay(replay::ReplayArgs),
    /// Generate a valid but tricky trace (deterministic per seed).
    ///
    /// Example: `vmspace gen-trace --seed 7 --ops 150 > t.jsonl`.
    GenTrace(gen_trace::GenTraceArgs),
    /// Print (and draw) the layout of a fresh static program's address space.
    ///
    /// Text, data/bss, heap, mmap area, stack and kernel to scale, where each can grow and
    /// where they collide, and for both layouts the largest heap (brk until refused, B5) and
    /// the largest single mmap. Example: `vmspace layout --arch i386 --layout legacy
    /// --svg i386.svg` (`--arch i386` is a 32-bit task on a 64-bit kernel; add `--native`
    /// for a native i386 kernel's 3G/1G split).
    Layout(layout::LayoutArgs),
    /// The whole story on a simulated 32-bit machine: threads with reserve/commit stacks, a
    /// size-class and a chunk heap, a recursion stopped by a stack overflow while the other
    /// threads carry on, a leak ended by the OOM killer, a fork with copy-on-write.
    ///
    /// Prints what happens step by step, then the address space, the stacks, the heaps and
    /// the fault counters, and draws a picture. Example: `vmspace demo` (writes
    /// vmspace-demo.svg); `vmspace demo --arch x86_64 --svg demo64.svg`; `--json`.
    Demo(scenario::DemoArgs),
    /// Run a scenario file: machine, processes, threads and stacks, heaps, steps, expected
    /// outcomes (TOML; see examples/*.toml).
    ///
    /// Sections: `[machine]` (ram, arch, layout, overflow), `[[process]]` with
    /// `[[process.thread]]` (stack = pthread or reserve-commit) and `[[process.heap]]` (kind =
    /// size-class or chunk, fit), `[[step]]` (do = alloc, free, leak, recurse, touch, write,
    /// fork, mmap, spawn, exit) and `[expect]` (stack_overflow, oom_killed, oom_kills,
    /// threads_finished, min_cow_copies, heap_exhausted, min_threads, max_threads,
    /// processes_alive); every field is documented in crates/vmspace-cli/src/scenario/format.rs.
    /// Exits 1 naming each expectation that failed, 2 on a bad file (with its line and
    /// column). Example: `vmspace run examples/leak-oom.toml --svg leak.svg`.
    Run(scenario::RunArgs),
    /// How many threads fit in a 32-bit space next to a heap, per layout, and at what cost.
    ///
    /// Legacy and top-down Linux layouts and reserve/commit at 64 KiB granularity: threads
    /// with `--stack` stacks next to a `--heap` heap, the largest heap, the largest single
    /// mapping, page-table memory. Example: `vmspace capacity --heap 1G --json`.
    Capacity(capacity::CapacityArgs),
}

/// Lets a closed stdout (`vmspace … | head`) end the process quietly, as in C tools, instead
/// of panicking in `println!`.
fn default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE and no Rust code relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Ptdump(args) => ptdump::run(args),
        Command::Replay(args) => match replay::run(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::GenTrace(args) => gen_trace::run(args),
        Command::Layout(args) => layout::run(args),
        Command::Demo(args) => match scenario::demo(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Run(args) => match scenario::run(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Capacity(args) => capacity::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmspace: {e}");
            ExitCode::from(2)
        }
    }
}
