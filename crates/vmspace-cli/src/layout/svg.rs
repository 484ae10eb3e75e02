//! The SVG picture of a layout: the space as bands to scale, high addresses on top.
//!
//! 32-bit spaces are drawn on one linear axis. In 64-bit spaces every band of 1 TiB or more
//! (the free hole, the non-canonical hole, the kernel half) is drawn with a fixed height and
//! zigzag break marks, and each run of bands between two breaks gets its own linear scale.
//! Every band is a `<rect class="band" data-kind=… data-start=… data-end=…>` with a `<title>`.

use super::{size128, Kind, Report};
use std::fmt::Write as _;

const BAR_X: f64 = 190.0;
const BAR_W: f64 = 170.0;
const TOP: f64 = 70.0;
const AXIS_H: f64 = 640.0;
const BROKEN_H: f64 = 46.0;
const LABEL_X: f64 = 400.0;
const LEGEND_X: f64 = 1120.0;
const WIDTH: f64 = 1320.0;

fn color(k: Kind) -> &'static str {
    match k {
        Kind::NullGuard => "#555555",
        Kind::Text => "#4e79a7",
        Kind::Data => "#76b7b2",
        Kind::Heap => "#59a14f",
        Kind::HeapRoom => "#c7e9c0",
        Kind::MmapRoom => "#fde0b0",
        Kind::Free => "#f4f4f4",
        Kind::Mapping => "#f28e2b",
        Kind::StackGap => "#e8d5f0",
        Kind::StackRoom => "#d4b9da",
        Kind::StackGuard => "#e15759",
        Kind::Stack => "#8e44ad",
        Kind::Kernel => "#333333",
        Kind::NonCanonical => "#bbbbbb",
    }
}

/// Escapes text for XML content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the report as a standalone SVG document.
pub fn render(r: &Report) -> String {
    let wide = r.space_end > 1 << 32;
    let broken: Vec<bool> = r
        .bands
        .iter()
        .map(|b| wide && b.end - b.start >= 1 << 40)
        .collect();
    // Segments: maximal runs of unbroken bands; each gets an equal share of the axis.
    let mut seg_of = vec![usize::MAX; r.bands.len()];
    let mut seg_total: Vec<u128> = Vec::new();
    for (i, b) in r.bands.iter().enumerate() {
        if broken[i] {
            continue;
        }
        if i == 0 || broken[i - 1] {
            seg_total.push(0);
        }
        seg_of[i] = seg_total.len() - 1;
        *seg_total.last_mut().unwrap() += b.end - b.start;
    }
    let nbroken = broken.iter().filter(|b| **b).count() as f64;
    let seg_px = if seg_total.is_empty() {
        0.0
    } else {
        (AXIS_H - nbroken * BROKEN_H).max(100.0) / seg_total.len() as f64
    };
    let heights: Vec<f64> = r
        .bands
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if broken[i] {
                BROKEN_H
            } else {
                seg_px * (b.end - b.start) as f64 / seg_total[seg_of[i]] as f64
            }
        })
        .collect();
    let axis_h: f64 = heights.iter().sum();
    let bottom = TOP + axis_h;
    // y of each band's bottom edge.
    let mut ys = Vec::with_capacity(r.bands.len());
    let mut y = bottom;
    for h in &heights {
        ys.push(y);
        y -= h;
    }

    // Right-hand labels, top to bottom, pushed apart to stay legible.
    let mut order: Vec<usize> = (0..r.bands.len()).rev().collect();
    order.sort_by(|&a, &b| {
        let ca = ys[a] - heights[a] / 2.0;
        let cb = ys[b] - heights[b] / 2.0;
        ca.partial_cmp(&cb).unwrap()
    });
    let mut label_y = vec![0.0; r.bands.len()];
    let mut last = TOP - 14.0;
    for &i in &order {
        let c = ys[i] - heights[i] / 2.0;
        let ly = c.max(last + 14.0);
        label_y[i] = ly;
        last = ly;
    }
    let height = (last + 40.0)
        .max(bottom + 60.0)
        .max(TOP + 40.0 + 18.0 * 15.0);

    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        o,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="white"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="20" y="24" font-size="15" font-weight="bold">{}</text>"#,
        esc(&format!("{}: {} layout", r.title, r.layout))
    );
    let scale_note = if wide {
        "to scale within each segment; zigzag bands (>= 1 TiB) are shortened (broken axis)"
    } else {
        "to scale: one linear axis over the whole 4 GiB"
    };
    let _ = writeln!(
        o,
        r#"<text x="20" y="42">{}</text>"#,
        esc(&format!(
            "TASK_SIZE {:#x}, RLIMIT_STACK {}, stack_guard_gap {}; {scale_note}",
            r.task_size,
            size128(r.stack_limit as u128),
            size128(r.stack_guard_gap as u128)
        ))
    );
    // Axis title.
    let mid = TOP + axis_h / 2.0;
    let _ = writeln!(
        o,
        r#"<text class="axis-label" x="22" y="{mid:.1}" transform="rotate(-90 22 {mid:.1})" text-anchor="middle">virtual address (hex), low at the bottom</text>"#
    );
    let _ = writeln!(
        o,
        r#"<line x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="black"/>"#,
        x = BAR_X - 6.0
    );

    let mut last_tick = f64::INFINITY;
    for (i, b) in r.bands.iter().enumerate() {
        let (yb, h) = (ys[i], heights[i]);
        let top = yb - h;
        let shown_h = h.max(1.0);
        let kind = serde_json::to_value(b.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            r#"<rect class="band" data-kind="{kind}" data-start="{:#x}" data-end="{:#x}" x="{BAR_X}" y="{:.2}" width="{BAR_W}" height="{:.2}" fill="{}" stroke="black" stroke-opacity="0.25" stroke-width="0.5"><title>{}</title></rect>"#,
            b.start,
            b.end,
            yb - shown_h,
            shown_h,
            color(b.kind),
            esc(&format!(
                "{:#x}-{:#x} {} {}: {}",
                b.start,
                b.end,
                size128(b.end - b.start),
                b.kind.name(),
                b.label
            ))
        );
        if broken[i] {
            // Zigzag break marks at both edges.
            for yy in [top + 6.0, yb - 6.0] {
                let mut d = format!("M {:.1} {:.1}", BAR_X - 10.0, yy);
                let mut x = BAR_X - 10.0;
                let mut up = true;
                while x < BAR_X + BAR_W + 10.0 {
                    x += 8.0;
                    d += &format!(" L {:.1} {:.1}", x, if up { yy - 4.0 } else { yy + 4.0 });
                    up = !up;
                }
                let _ = writeln!(
                    o,
                    r#"<path class="axis-break" d="{d}" fill="none" stroke="black" stroke-width="1.5"/>"#
                );
            }
        }
        // Tick at the band's lower edge.
        if last_tick - yb >= 12.0 || i == 0 {
            let _ = writeln!(
                o,
                r#"<line x1="{:.1}" y1="{yb:.2}" x2="{BAR_X}" y2="{yb:.2}" stroke="black"/><text class="tick" x="{:.1}" y="{:.2}" text-anchor="end">{:#x}</text>"#,
                BAR_X - 10.0,
                BAR_X - 12.0,
                yb + 4.0,
                b.start
            );
            last_tick = yb;
        }
        // Label with a leader line.
        let ly = label_y[i];
        let _ = writeln!(
            o,
            r#"<line x1="{:.1}" y1="{:.2}" x2="{:.1}" y2="{ly:.2}" stroke="gray" stroke-width="0.6"/><text class="label" x="{LABEL_X}" y="{:.2}">{}</text>"#,
            BAR_X + BAR_W,
            yb - h / 2.0,
            LABEL_X - 4.0,
            ly + 4.0,
            esc(&format!(
                "{} ({}): {}",
                b.kind.name(),
                size128(b.end - b.start),
                b.label
            ))
        );
    }
    if let Some(b) = r.bands.last().filter(|_| last_tick - TOP >= 12.0) {
        let _ = writeln!(
            o,
            r#"<text class="tick" x="{:.1}" y="{:.2}" text-anchor="end">{:#x}</text>"#,
            BAR_X - 12.0,
            TOP + 4.0,
            b.end
        );
    }

    // Markers: where the mmap area starts and where the heap must stop (B5).
    let addr_y = |a: u128| {
        r.bands
            .iter()
            .enumerate()
            .find(|(_, b)| b.start <= a && a < b.end)
            .map(|(i, b)| ys[i] - heights[i] * (a - b.start) as f64 / (b.end - b.start) as f64)
    };
    if let Some(l) = r.limits.iter().find(|l| l.layout == r.layout) {
        let base = if r.layout == "topdown" {
            "mmap_base"
        } else {
            "mmap_legacy_base"
        };
        // The base's text above its line, the break's below, so close markers stay legible.
        for (a, what, col, dy) in [
            (
                l.mmap_base,
                format!("{base} {:#x}", l.mmap_base),
                "#1f4e9a",
                -3.0,
            ),
            (
                l.max_brk,
                format!("largest break {:#x} (B5)", l.max_brk),
                "#c0392b",
                11.0,
            ),
        ] {
            if let Some(y) = addr_y(a as u128) {
                let _ = writeln!(
                    o,
                    r#"<g class="marker"><line x1="{:.1}" y1="{y:.2}" x2="{:.1}" y2="{y:.2}" stroke="{col}" stroke-width="1.5" stroke-dasharray="5,3"/><text x="{:.1}" y="{:.2}" text-anchor="end" fill="{col}">{}</text></g>"#,
                    BAR_X - 4.0,
                    BAR_X + BAR_W + 4.0,
                    BAR_X + BAR_W - 4.0,
                    y + dy,
                    esc(&what)
                );
            }
        }
    }

    // Legend.
    let _ = writeln!(
        o,
        r#"<text x="{LEGEND_X}" y="{:.1}" font-weight="bold">legend</text>"#,
        TOP
    );
    let mut seen: Vec<Kind> = Vec::new();
    for b in &r.bands {
        if !seen.contains(&b.kind) {
            seen.push(b.kind);
        }
    }
    for (j, k) in seen.iter().enumerate() {
        let y = TOP + 12.0 + j as f64 * 18.0;
        let _ = writeln!(
            o,
            r#"<g class="legend"><rect x="{LEGEND_X}" y="{y:.1}" width="14" height="12" fill="{}" stroke="black" stroke-width="0.5"/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
            color(*k),
            LEGEND_X + 20.0,
            y + 10.0,
            esc(k.name())
        );
    }
    let _ = writeln!(o, "</svg>");
    o
}
