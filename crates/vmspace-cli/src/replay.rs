//! `vmspace replay TRACE.jsonl`: runs a trace on the real kernel (`--backend linux`), in the
//! vmspace model from a Linux run's before state (`--backend model --start-from DOC`), or both
//! (`--diff`), and prints the result document (`--json`) or a readable summary.

use std::path::PathBuf;
use std::process::ExitCode;
use vmspace_trace::compare::first_difference;
use vmspace_trace::doc::{OpResult, ResultDoc, RetVal, Vma};
use vmspace_trace::linux::{self, Arch, LinuxOptions};
use vmspace_trace::{model, trace};

/// Arguments of `vmspace replay`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  vmspace gen-trace --seed 7 > t.jsonl
  vmspace replay t.jsonl                          run on Linux, print a summary
  vmspace replay t.jsonl --json > linux.json      the result document (one JSON line)
  vmspace replay t.jsonl --start-from linux.json  run in the model from Linux's before state
  vmspace replay t.jsonl --diff                   both; exit 1 and name the line if they differ

Exit codes: 0 ok (or agree), 1 documents differ, 2 bad input (a trace error prints
{\"fatal\": …, \"line\": N} and, without --json, FILE:LINE: message on stderr), 3 a backend
recorded a fatal error. The trace format is docs/trace-format.md.")]
pub struct ReplayArgs {
    /// The trace (JSON Lines, see docs/trace-format.md).
    trace: PathBuf,
    /// Where to run it (default: `model` with --start-from, else `linux`).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Linux backend: use the legacy (bottom-up) layout (personality ADDR_COMPAT_LAYOUT).
    #[arg(long)]
    legacy: bool,
    /// Linux backend: task architecture (i386 runs a 32-bit helper on this 64-bit kernel).
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// Model backend: the Linux result document whose `before` state the model starts from.
    #[arg(long)]
    start_from: Option<PathBuf>,
    /// Add `after_smaps` to the document (model backend: `rss_kb`/`anon_kb` counted from the
    /// simulated page tables; `--diff` compares them on the VMAs the trace controls).
    #[arg(long)]
    smaps: bool,
    /// Run on Linux (or take --start-from's document), then in the model from its before
    /// state; print the first difference and exit 1 if the documents do not agree.
    #[arg(long)]
    diff: bool,
    /// Linux backend: which helper runs the trace: `static` (no libc, the default) or `pie`
    /// (a dynamically linked glibc PIE, so the run starts with ld.so and libc mapped).
    #[arg(long, default_value = "static", value_parser = ["static", "pie"])]
    build: String,
    /// Linux backend: grow the break by this many bytes before the first snapshot, so the
    /// run starts with a `[heap]` and `$start_brk < $brk0`, as static glibc builds do.
    #[arg(long, default_value_t = 0)]
    initial_heap: u64,
    /// Print the result document as JSON (one line) instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Linux,
    Model,
}

fn ret_text(r: &OpResult) -> String {
    if let Some(s) = &r.skip {
        return format!("skip {s}");
    }
    if let Some(f) = &r.fault {
        return format!(
            "{f} {} at {:#x}",
            r.code.as_deref().unwrap_or("?"),
            r.fault_addr.map(|h| h.0).unwrap_or(0)
        );
    }
    if let Some(e) = &r.err {
        return e.clone();
    }
    let mut s = match r.ret.as_ref().map(RetVal::of) {
        Some(RetVal::Num(n)) if n > 9 => format!("{n:#x}"),
        Some(RetVal::Num(n)) => format!("{n}"),
        Some(RetVal::Ok) => "ok".into(),
        Some(RetVal::Other(o)) => o,
        None => String::new(),
    };
    if let Some(v) = r.val {
        s.push_str(&format!(" val={}", v.0));
    }
    if r.val_hidden.is_some() {
        s.push_str(" val=(baseline)");
    }
    if let Some(v) = &r.vma {
        s.push_str(&match v {
            Some(v) => format!(" vma={}", vma_line(v)),
            None => " vma=null".into(),
        });
    }
    s
}

fn vma_line(v: &Vma) -> String {
    format!(
        "{:x}-{:x} {} {:08x} {} {} {}",
        v.start.0, v.end.0, v.perms, v.offset.0, v.dev, v.inode.0, v.name
    )
}

/// The human-readable summary of a document.
fn summary(doc: &ResultDoc) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} backend, {} ({}), kernel {}, personality {:#x}, brk0 {:#x}",
        doc.backend, doc.arch, doc.build, doc.kernel, doc.personality.0, doc.brk0.0
    );
    for r in &doc.results {
        let a = r.addr.map(|h| format!(" {:#x}", h.0)).unwrap_or_default();
        let _ = writeln!(
            o,
            "  #{:<3} line {:<4} {:<9}{a} -> {}",
            r.i,
            r.line,
            r.op,
            ret_text(r)
        );
    }
    if let Some(b) = doc.brk_end {
        let _ = writeln!(o, "brk at end: {:#x}", b.0);
    }
    if let Some(after) = &doc.after {
        let _ = writeln!(o, "maps after:");
        for v in after {
            let _ = writeln!(o, "  {}", vma_line(v));
        }
    }
    if let Some(f) = &doc.fatal {
        let _ = writeln!(o, "FATAL: {f}");
    }
    o
}

/// Writes to stdout, ignoring a closed pipe (`| head`).
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn emit(doc: &ResultDoc, json: bool) {
    if json {
        out(&doc.to_text(false));
    } else {
        out(&summary(doc));
    }
}

/// Whether two results of the same op disagree (the ops part of "two documents agree").
fn first_difference_of(a: &OpResult, b: &OpResult) -> bool {
    let one = |r: &OpResult| ResultDoc {
        results: vec![r.clone()],
        ..Default::default()
    };
    first_difference(&one(a), &one(b)).is_some()
}

/// Runs `vmspace replay`; returns the process exit code.
pub fn run(args: ReplayArgs) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(&args.trace)
        .map_err(|e| format!("reading {}: {e}", args.trace.display()))?;
    let trace = match trace::parse(&text) {
        Ok(t) => t,
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"fatal": e.message, "line": e.line})
            );
            if !args.json {
                eprintln!(
                    "vmspace: {}:{}: {} (see docs/trace-format.md)",
                    args.trace.display(),
                    e.line,
                    e.message
                );
            }
            return Ok(ExitCode::from(2));
        }
    };
    let ops = trace.ops.len();
    // Spinners on a terminal's stderr while a backend runs the trace.
    let on_linux = |trace: &trace::Trace, opts| {
        let pb = crate::progress::spinner("replay");
        pb.set_message(format!("{ops} ops on Linux (a traced child process)"));
        let r = linux::run(trace, opts);
        pb.finish_and_clear();
        r
    };
    let on_model = |trace: &trace::Trace, start: &ResultDoc, smaps| {
        let pb = crate::progress::spinner("replay");
        pb.set_message(format!("{ops} ops in the vmspace model"));
        let r = model::run(trace, start, smaps);
        pb.finish_and_clear();
        r
    };
    let arch = Arch::from_name(&args.arch)
        .ok_or_else(|| format!("unknown arch {:?} (x86_64 or i386)", args.arch))?;
    let opts = LinuxOptions {
        initial_heap: args.initial_heap,
        pie: args.build == "pie",
        arch,
        legacy: args.legacy,
        smaps: args.smaps,
    };
    let report_expects = |fails: &[String]| {
        for f in fails {
            eprintln!("expectation failed: {f}");
        }
    };
    if args.diff {
        // With --start-from, compare against that (Linux) document instead of a new run.
        let ldoc = match &args.start_from {
            Some(path) => {
                let t = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                ResultDoc::from_text(&t).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => {
                let (ldoc, lout) = on_linux(&trace, opts)?;
                report_expects(&lout.expect_failures);
                ldoc
            }
        };
        if let Some(f) = &ldoc.fatal {
            emit(&ldoc, args.json);
            return Err(format!("the Linux run failed: {f}"));
        }
        let (mdoc, _) = on_model(&trace, &ldoc, args.smaps)?;
        let diff = first_difference(&ldoc, &mdoc);
        let diff_line = ldoc
            .results
            .iter()
            .zip(&mdoc.results)
            .find(|(a, b)| first_difference_of(a, b))
            .map(|(a, _)| a.line);
        if args.json {
            out(&ldoc.to_text(false));
            out(&mdoc.to_text(false));
            // A third line with the verdict.
            out(&format!(
                "{}\n",
                serde_json::json!({
                    "agree": diff.is_none(),
                    "first_difference": diff,
                    "line": diff_line,
                    "ops": ldoc.results.len(),
                })
            ));
        }
        return Ok(match diff {
            None => {
                eprintln!("linux and model agree ({} ops)", ldoc.results.len());
                ExitCode::SUCCESS
            }
            Some(d) => {
                eprintln!("first difference (linux vs model): {d}");
                if let Some((l, text)) =
                    diff_line.and_then(|l| Some((l, text.lines().nth(l.checked_sub(1)?)?)))
                {
                    eprintln!("  at {}:{l}: {text}", args.trace.display());
                }
                ExitCode::from(1)
            }
        });
    }
    let backend = args.backend.unwrap_or(if args.start_from.is_some() {
        Backend::Model
    } else {
        Backend::Linux
    });
    let (doc, out) = match backend {
        Backend::Linux => on_linux(&trace, opts)?,
        Backend::Model => {
            let path = args
                .start_from
                .as_ref()
                .ok_or("--backend model needs --start-from RESULT.json")?;
            let start_text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let start = ResultDoc::from_text(&start_text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            on_model(&trace, &start, args.smaps)?
        }
    };
    report_expects(&out.expect_failures);
    emit(&doc, args.json);
    Ok(if doc.fatal.is_some() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
