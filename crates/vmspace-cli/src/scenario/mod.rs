//! Scenarios: a simulated machine, its processes, threads, stacks and heaps, and a story of
//! steps, written in TOML ([`format`]), run on `vmspace_sim::Machine` ([`engine`]), shown as
//! text or JSON ([`report`]) and drawn ([`record`]). `vmspace demo` runs the built-in
//! `examples/demo.toml`; `vmspace run FILE` runs any scenario.

pub mod engine;
pub mod format;
pub mod record;
pub mod report;

use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The built-in demo scenario.
pub const DEMO: &str = include_str!("../../../../examples/demo.toml");

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ArchArg {
    I386,
    #[value(name = "x86_64", alias = "x86-64")]
    X86_64,
}

impl From<ArchArg> for format::Arch {
    fn from(a: ArchArg) -> Self {
        match a {
            ArchArg::I386 => format::Arch::I386,
            ArchArg::X86_64 => format::Arch::X86_64,
        }
    }
}

#[derive(Args)]
pub struct DemoArgs {
    /// The machine: i386 (32-bit, the default) or x86_64 (64-bit).
    #[arg(long, value_enum, default_value = "i386")]
    arch: ArchArg,
    /// Where to write the picture (.svg, or .png).
    #[arg(long, default_value = "vmspace-demo.svg")]
    svg: PathBuf,
    /// Print one JSON document instead of the story.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// The scenario file (TOML; see examples/ and the format's documentation).
    scenario: PathBuf,
    /// Run it on this machine instead of the file's.
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// Also write a picture (.svg, or .png).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print one JSON document instead of the story.
    #[arg(long)]
    json: bool,
}

/// `vmspace demo`.
pub fn demo(args: DemoArgs) -> Result<ExitCode, String> {
    execute(
        "examples/demo.toml",
        DEMO,
        Some(args.arch.into()),
        Some(args.svg),
        args.json,
    )
}

/// `vmspace run`.
pub fn run(args: RunArgs) -> Result<ExitCode, String> {
    let name = args.scenario.display().to_string();
    let text = std::fs::read_to_string(&args.scenario).map_err(|e| format!("{name}: {e}"))?;
    execute(&name, &text, args.arch.map(Into::into), args.svg, args.json)
}

/// Parses, runs, prints and draws a scenario; exit 1 when an expectation failed.
fn execute(
    name: &str,
    text: &str,
    arch: Option<format::Arch>,
    svg: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, String> {
    let sc = format::parse(name, text)?;
    // A progress bar on stderr (only on a terminal) once a run has taken a second.
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::hidden();
    bar.set_length(sc.steps.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] step {pos}/{len}")
            .map_err(|e| e.to_string())?,
    );
    bar.set_message(sc.name.clone());
    let mut shown = false;
    let run = engine::run_with_progress(&sc, arch, |i| {
        if !shown && started.elapsed() > std::time::Duration::from_secs(1) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_position(i as u64);
    });
    bar.finish_and_clear();
    let run = run.map_err(|e| format!("{name}: {e}"))?;
    if json {
        println!("{}", report::json(&run));
    } else {
        print!("{}", report::text(&run));
    }
    if let Some(path) = svg {
        let (title, panels) = record::figure(&run);
        let svg = crate::picture::render_figure(&title, &panels);
        crate::picture::write_picture(&path, &svg)?;
        if !json {
            println!();
            println!("Picture: {}", path.display());
        }
    }
    if run.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<&str> = run
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.what.as_str())
            .collect();
        eprintln!(
            "vmspace: {name}: {} expectation(s) failed: {}",
            failed.len(),
            failed.join("; ")
        );
        Ok(ExitCode::from(1))
    }
}
