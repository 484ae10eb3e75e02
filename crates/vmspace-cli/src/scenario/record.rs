//! What a scenario run records for its pictures: heap fragmentation and stack depth over
//! time (time = the run's operation count), and, at the end, the address space of a process
//! as bands to scale (from its VMAs, its threads' stacks and its heaps' regions).

use super::engine::{HeapSt, Run};
use crate::picture::{Band, BandKind, Chart, Panel, Series, SpacePicture};
use std::collections::BTreeMap;
use vmspace::space::vma::flags::VM_GROWSDOWN;
use vmspace_heap::SEGMENT_SIZE;
use vmspace_sim::heap_source::RegionKind;
use vmspace_sim::{Stack, ThreadEnd};

const PAGE: u64 = 4096;
/// Most points kept per series in a picture.
const MAX_POINTS: usize = 1500;
/// Above this many bands, runs of stacks are folded into one band each.
const MAX_BANDS: usize = 200;

/// Time series of a run.
#[derive(Default)]
pub struct Recorder {
    /// Heap name -> (time, fragmentation %).
    pub heaps: BTreeMap<String, Vec<(f64, f64)>>,
    /// Thread name -> (time, stack depth in KiB).
    pub stacks: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Recorder {
    /// Heap `name`'s fragmentation (percent) at time `t`.
    pub fn heap(&mut self, name: &str, t: u64, frag_pct: f64) {
        push(
            self.heaps.entry(name.into()).or_default(),
            t as f64,
            frag_pct,
        );
    }

    /// Thread `name`'s stack depth (bytes) at time `t`.
    pub fn stack(&mut self, name: &str, t: u64, depth: u64) {
        push(
            self.stacks.entry(name.into()).or_default(),
            t as f64,
            depth as f64 / 1024.0,
        );
    }
}

fn push(v: &mut Vec<(f64, f64)>, t: f64, y: f64) {
    // One point per instant: the last value wins.
    if let Some(last) = v.last_mut() {
        if last.0 == t {
            last.1 = y;
            return;
        }
    }
    v.push((t, y));
}

/// Keeps at most [`MAX_POINTS`] points, evenly spaced, the first and last included.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let step = points.len() as f64 / (MAX_POINTS - 1) as f64;
    let mut out: Vec<_> = (0..MAX_POINTS - 1)
        .map(|i| points[(i as f64 * step) as usize])
        .collect();
    out.push(*points.last().unwrap_or(&(0.0, 0.0)));
    out
}

/// Replaces whatever `bands` (sorted, disjoint) holds in `[start, end)` by one band.
fn paint(bands: &mut Vec<Band>, start: u64, end: u64, kind: BandKind, label: &str) {
    if start >= end {
        return;
    }
    let mut out = Vec::with_capacity(bands.len() + 2);
    // What of each band lies below `start` or above `end` stays, in order.
    for b in bands.drain(..) {
        if b.start < start {
            out.push(Band {
                start: b.start,
                end: b.end.min(start),
                kind: b.kind,
                label: b.label.clone(),
            });
        }
        if b.end > end {
            out.push(Band {
                start: b.start.max(end),
                end: b.end,
                kind: b.kind,
                label: b.label,
            });
        }
    }
    let at = out.partition_point(|b| b.start < start);
    out.insert(
        at,
        Band {
            start,
            end,
            kind,
            label: label.into(),
        },
    );
    *bands = out;
}

/// The address space of process `pi` at the end of the run, as bands to scale.
pub fn space_picture(run: &Run, pi: usize) -> Option<SpacePicture> {
    let p = &run.procs[pi];
    let m = run.machine.borrow();
    let proc = m.process(p.pid)?;
    let sp = proc.space();
    let lay = sp.layout();
    let bits = if lay.is32 { 32 } else { 64 };
    let mut bands: Vec<Band> = Vec::new();
    let start_brk = sp.start_brk();
    let brk = sp.brk_value();
    for v in sp.vmas() {
        let name = sp
            .maps_lines()
            .into_iter()
            .find(|l| l.start == v.start)
            .map(|l| l.name)
            .unwrap_or_default();
        let exec = v.flags & vmspace::space::vma::flags::VM_EXEC != 0;
        let (kind, label) = if v.flags & VM_GROWSDOWN != 0 {
            (BandKind::Stack, "main stack".to_string())
        } else if name == "[heap]"
            || (v.start >= start_brk && v.end <= brk.next_multiple_of(PAGE) && brk > start_brk)
        {
            (BandKind::Heap, "[heap] (brk)".to_string())
        } else if v.end <= start_brk && exec {
            (BandKind::Text, "text".to_string())
        } else if v.end <= start_brk {
            (BandKind::Data, "data/bss".to_string())
        } else if !name.is_empty() {
            (BandKind::Mmap, name)
        } else {
            let label = p
                .labels
                .iter()
                .find(|(s, e, _)| v.start < *e && *s < v.end)
                .map(|(_, _, l)| l.clone())
                .unwrap_or("anonymous mapping".into());
            (BandKind::Mmap, label)
        };
        paint(&mut bands, v.start, v.end, kind, &label);
    }
    // Heaps: segments and the break region.
    for h in run.heaps.iter().filter(|h| h.proc == pi && h.alive()) {
        paint_heap(&mut bands, run, pi, h);
    }
    // Thread stacks.
    for t in run.threads.iter().filter(|t| t.proc == pi) {
        let Some(th) = m.thread(t.tid) else { continue };
        if matches!(th.ended, Some(ThreadEnd::Exited)) {
            continue;
        }
        match th.stack {
            Stack::Reserved {
                base,
                reserve,
                committed,
                guard_pages,
                overflowed,
            } => {
                let top = base + reserve;
                let glow = if overflowed {
                    committed
                } else {
                    committed.saturating_sub(guard_pages * PAGE).max(base)
                };
                paint(
                    &mut bands,
                    base,
                    glow,
                    BandKind::StackReserved,
                    &format!("{} reserved", t.name),
                );
                paint(
                    &mut bands,
                    base,
                    base + PAGE,
                    BandKind::StackGuard,
                    &format!("{} hard guard", t.name),
                );
                paint(
                    &mut bands,
                    glow,
                    committed,
                    BandKind::StackGuard,
                    &format!("{} guard", t.name),
                );
                paint(
                    &mut bands,
                    committed,
                    top,
                    BandKind::StackCommitted,
                    &format!("{} committed", t.name),
                );
            }
            Stack::Pthread { base, size, guard } => {
                paint(
                    &mut bands,
                    base,
                    base + guard,
                    BandKind::StackGuard,
                    &format!("{} guard", t.name),
                );
                paint(
                    &mut bands,
                    base + guard,
                    base + size,
                    BandKind::Stack,
                    &format!("stack {}", t.name),
                );
            }
            Stack::Main { top } => {
                if let Some(v) = sp.vmas().find(|v| v.end == top) {
                    paint(
                        &mut bands,
                        v.start,
                        v.end,
                        BandKind::Stack,
                        &format!("stack {}", t.name),
                    );
                }
            }
        }
    }
    // Gaps: below mmap_min_addr, room for the heap above the break, free elsewhere.
    let min = sp.config().mmap_min_addr.max(sp.config().lsm_mmap_min_addr);
    let mut full = Vec::new();
    let mut at = 0u64;
    let g = Gaps {
        min,
        heap_top: brk.next_multiple_of(PAGE).max(start_brk),
        text: sp
            .vmas()
            .find(|v| v.flags & vmspace::space::vma::flags::VM_EXEC != 0 && v.end <= start_brk)
            .map_or(0, |v| v.start),
        lay: *lay,
    };
    for b in bands {
        if b.start > at {
            gap(&mut full, at, b.start, &g);
        }
        at = at.max(b.end);
        full.push(b);
    }
    if lay.task_size > at {
        gap(&mut full, at, lay.task_size, &g);
    }
    if bits == 32 {
        full.push(Band {
            start: lay.task_size,
            end: 1 << 32,
            kind: BandKind::Kernel,
            label: "kernel".into(),
        });
    } else {
        full.push(Band {
            start: lay.task_size,
            end: 0xffff_8000_0000_0000,
            kind: BandKind::NonCanonical,
            label: "non-canonical".into(),
        });
        full.push(Band {
            start: 0xffff_8000_0000_0000,
            end: u64::MAX,
            kind: BandKind::Kernel,
            label: "kernel".into(),
        });
    }
    Some(SpacePicture {
        title: format!(
            "{} (pid {}): {}-bit address space at the end",
            p.name, p.pid, bits
        ),
        bits,
        bands: merge(full),
    })
}

fn paint_heap(bands: &mut Vec<Band>, run: &Run, pi: usize, h: &HeapSt) {
    let label = format!("heap {}", h.name);
    for r in run.procs[pi].space.regions() {
        match (r.kind, h.kind) {
            (RegionKind::Segments, super::format::HeapKind::SizeClass) => {
                let end = r.start + r.len.max(SEGMENT_SIZE as u64);
                paint(bands, r.start, end, BandKind::Heap, &label)
            }
            (RegionKind::Break, super::format::HeapKind::Chunk) if r.len > 0 => paint(
                bands,
                r.start & !(PAGE - 1),
                (r.start + r.len).next_multiple_of(PAGE),
                BandKind::Heap,
                &format!("{label} (brk)"),
            ),
            _ => {}
        }
    }
}

/// Where the free gaps of a space are: below mmap_min_addr, above the break, the mmap area.
struct Gaps {
    min: u64,
    heap_top: u64,
    text: u64,
    lay: vmspace::space::Layout,
}

fn gap(out: &mut Vec<Band>, start: u64, end: u64, g: &Gaps) {
    let min = g.min;
    let mut s = start;
    if s < min {
        let e = min.min(end);
        out.push(Band {
            start: s,
            end: e,
            kind: BandKind::NullGuard,
            label: "unmappable (mmap_min_addr)".into(),
        });
        s = e;
    }
    if s >= end {
        return;
    }
    let (kind, label) = if s == g.heap_top {
        (BandKind::HeapRoom, "room for the heap (brk)")
    } else if end <= g.text {
        (BandKind::Free, "free")
    } else if g.lay.topdown && s >= g.lay.mmap_base {
        (
            BandKind::Free,
            "gap kept for the main stack (above mmap_base)",
        )
    } else if g.lay.topdown || s >= g.lay.mmap_legacy_base {
        (BandKind::MmapRoom, "free: room for mappings")
    } else {
        (BandKind::Free, "free")
    };
    out.push(Band {
        start: s,
        end,
        kind,
        label: label.into(),
    });
}

/// Joins neighbours of one kind and label; with very many bands (hundreds of stacks), folds
/// each run of adjacent stack bands into one band that says how many stacks it holds.
fn merge(bands: Vec<Band>) -> Vec<Band> {
    let mut out: Vec<Band> = Vec::with_capacity(bands.len());
    for b in bands {
        if let Some(l) = out.last_mut() {
            if l.end == b.start && l.kind == b.kind && l.label == b.label {
                l.end = b.end;
                continue;
            }
        }
        out.push(b);
    }
    if out.len() <= MAX_BANDS {
        return out;
    }
    let stackish = |k: BandKind| {
        matches!(
            k,
            BandKind::Stack
                | BandKind::StackGuard
                | BandKind::StackCommitted
                | BandKind::StackReserved
        )
    };
    let mut folded: Vec<Band> = Vec::new();
    let mut run: Vec<Band> = Vec::new();
    let flush = |run: &mut Vec<Band>, folded: &mut Vec<Band>| {
        if run.len() > 3 {
            // A thread's stack is labelled "<thread> …" or "stack <thread>".
            let mut threads: Vec<&str> = run
                .iter()
                .map(|b| {
                    b.label
                        .trim_start_matches("stack ")
                        .split(' ')
                        .next()
                        .unwrap_or("")
                })
                .collect();
            threads.dedup();
            folded.push(Band {
                start: run[0].start,
                end: run[run.len() - 1].end,
                kind: BandKind::Stack,
                label: format!("{} thread stacks", threads.len()),
            });
            run.clear();
        } else {
            folded.append(run);
        }
    };
    for b in out {
        let joins = run.last().is_some_and(|l: &Band| l.end == b.start);
        if stackish(b.kind) && (run.is_empty() || joins) {
            run.push(b);
            continue;
        }
        flush(&mut run, &mut folded);
        if stackish(b.kind) {
            run.push(b);
        } else {
            folded.push(b);
        }
    }
    flush(&mut run, &mut folded);
    folded
}

/// A chart over operations of the recorded series that have points (`None` when none has),
/// each named by `name` and thinned to what a picture shows.
fn time_chart(
    recorded: &BTreeMap<String, Vec<(f64, f64)>>,
    name: impl Fn(&str) -> String,
    title: &str,
    y_label: &str,
) -> Option<Chart> {
    let series: Vec<Series> = recorded
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| Series {
            name: name(n),
            points: thin(v),
        })
        .collect();
    (!series.is_empty()).then(|| Chart {
        title: title.into(),
        x_label: "operations".into(),
        y_label: y_label.into(),
        series,
    })
}

/// The figure of a run: the spaces of its running processes, heap fragmentation over time,
/// stack depth over time.
pub fn figure(run: &Run) -> (String, Vec<Panel>) {
    let mut panels = Vec::new();
    // Every running process that was not forked (a child looks like its parent), at most 3.
    let live: Vec<usize> = (0..run.procs.len())
        .filter(|&pi| run.procs[pi].parent.is_none())
        .filter(|&pi| run.machine.borrow().process(run.procs[pi].pid).is_some())
        .take(3)
        .collect();
    for pi in live {
        if let Some(sp) = space_picture(run, pi) {
            panels.push(Panel::Space(sp));
        }
    }
    let heaps = time_chart(
        &run.rec.heaps,
        |n| format!("heap {n}"),
        "Heap fragmentation over time (1 - live / committed)",
        "fragmentation (%)",
    );
    let stacks = time_chart(
        &run.rec.stacks,
        |n| n.to_string(),
        "Stack depth over time",
        "depth below the stack top (KiB)",
    );
    panels.extend(heaps.into_iter().chain(stacks).map(Panel::Chart));
    let bits = if run.arch == super::format::Arch::I386 {
        32
    } else {
        64
    };
    (
        format!("vmspace {}: a simulated {bits}-bit machine", run.name),
        panels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: u64, e: u64, l: &str) -> Band {
        Band {
            start: s,
            end: e,
            kind: BandKind::Mmap,
            label: l.into(),
        }
    }

    #[test]
    fn paint_cuts_and_replaces() {
        let mut v = vec![b(0, 10, "a"), b(20, 30, "b")];
        paint(&mut v, 5, 25, BandKind::Heap, "h");
        let got: Vec<_> = v
            .iter()
            .map(|b| (b.start, b.end, b.label.as_str()))
            .collect();
        assert_eq!(got, vec![(0, 5, "a"), (5, 25, "h"), (25, 30, "b")]);
        paint(&mut v, 40, 50, BandKind::Heap, "x");
        paint(&mut v, 12, 13, BandKind::Heap, "y");
        let starts: Vec<_> = v.iter().map(|b| b.start).collect();
        assert_eq!(starts, vec![0, 5, 12, 13, 25, 40]);
        let got: Vec<_> = v.iter().map(|b| (b.start, b.end)).collect();
        assert_eq!(got[2], (12, 13));
    }

    #[test]
    fn thin_keeps_ends_and_bounds_the_count() {
        let pts: Vec<_> = (0..10_000).map(|i| (i as f64, i as f64)).collect();
        let t = thin(&pts);
        assert_eq!(t.len(), MAX_POINTS);
        assert_eq!(t[0], (0.0, 0.0));
        assert_eq!(*t.last().unwrap(), (9999.0, 9999.0));
    }
}
