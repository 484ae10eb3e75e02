//! Pictures (placeholder on branch `demo` until branch `pictures` lands): the contract's
//! types with a plain SVG rendering, so the scenario code builds against them.

#![allow(dead_code)]
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BandKind {
    NullGuard,
    Text,
    Data,
    Heap,
    HeapRoom,
    Mmap,
    MmapRoom,
    Free,
    Stack,
    StackCommitted,
    StackReserved,
    StackGuard,
    Reserved,
    Committed,
    KernelText,
    KernelStack,
    KernelHeap,
    KernelPool,
    RecursivePd,
    Kernel,
    NonCanonical,
}

#[derive(Clone, Debug)]
pub struct Band {
    pub start: u64,
    pub end: u64,
    pub kind: BandKind,
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct SpacePicture {
    pub title: String,
    pub bits: u32,
    pub bands: Vec<Band>,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

#[derive(Clone, Debug)]
pub enum Panel {
    Space(SpacePicture),
    Chart(Chart),
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn body_space(p: &SpacePicture) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<text x=\"10\" y=\"20\">{}</text>", esc(&p.title));
    for (i, b) in p.bands.iter().enumerate() {
        let _ = writeln!(
            s,
            "<rect class=\"band {:?}\" x=\"10\" y=\"{}\" width=\"200\" height=\"8\"><title>{}</title></rect>",
            b.kind,
            30 + i * 9,
            esc(&b.label)
        );
    }
    s
}

fn body_chart(c: &Chart) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<text x=\"10\" y=\"20\">{}</text>", esc(&c.title));
    let _ = writeln!(s, "<text x=\"10\" y=\"300\">{}</text>", esc(&c.x_label));
    let _ = writeln!(s, "<text x=\"10\" y=\"40\">{}</text>", esc(&c.y_label));
    for ser in &c.series {
        let pts: Vec<String> = ser.points.iter().map(|(x, y)| format!("{x},{y}")).collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"black\" points=\"{}\"><title>{}</title></polyline>",
            pts.join(" "),
            esc(&ser.name)
        );
    }
    s
}

pub fn render_space(p: &SpacePicture) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\">{}</svg>",
        body_space(p)
    )
}

pub fn render_chart(c: &Chart) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\">{}</svg>",
        body_chart(c)
    )
}

pub fn render_figure(title: &str, panels: &[Panel]) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><text x=\"10\" y=\"12\">{}</text>",
        esc(title)
    );
    for p in panels {
        s.push_str("<g>");
        s.push_str(&match p {
            Panel::Space(sp) => body_space(sp),
            Panel::Chart(c) => body_chart(c),
        });
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

pub fn write_picture(path: &std::path::Path, svg: &str) -> Result<(), String> {
    std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))
}
