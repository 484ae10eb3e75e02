//! Pictures: an address space as bands to scale, line charts over time, and figures of
//! several panels, as SVG documents (PNG rendered from the SVG on request).
//!
//! Every picture has a title, a legend and axis labels. The SVG carries classes tests and
//! scripts can rely on: bands are `rect.band` with `data-kind`, `data-start`, `data-end` and a
//! `<title>`; series are `polyline.series` with `data-name`; legend entries are `g.legend`,
//! axis labels `text.axis-label`, tick labels `text.tick`, break marks `path.axis-break`.

mod chart;
mod figure;
mod png;
mod space;

#[cfg(test)]
pub use chart::render_chart;
pub use figure::render_figure;
pub use png::write_picture;
pub use space::{render_space, render_space_with, Marker, SpaceExtras};

use svg::node::element::{Group, Line, Rectangle, Text};

/// What a band of an address space is; decides its colour and legend entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BandKind {
    /// Below mmap_min_addr: never mappable.
    NullGuard,
    Text,
    Data,
    Heap,
    /// Free, and the heap can grow into it.
    HeapRoom,
    /// A mapping in the mmap area.
    Mmap,
    /// Free, and the mmap area grows into it.
    MmapRoom,
    /// Free space nothing grows into by itself.
    Free,
    Stack,
    /// The committed part of a reserve/commit stack.
    StackCommitted,
    /// The reserved, uncommitted part of a stack (where it may still grow).
    StackReserved,
    /// A stack's guard page or guard gap.
    StackGuard,
    /// Reserved address space (Windows-style MEM_RESERVE) not committed.
    Reserved,
    /// Committed memory that is none of the above.
    Committed,
    KernelText,
    KernelStack,
    KernelHeap,
    KernelPool,
    /// The recursive page-directory slot's window onto the page tables.
    RecursivePd,
    Kernel,
    /// The non-canonical hole of x86-64.
    NonCanonical,
}

impl BandKind {
    /// Every kind, in legend order.
    pub const ALL: [BandKind; 21] = [
        BandKind::NullGuard,
        BandKind::Text,
        BandKind::Data,
        BandKind::Heap,
        BandKind::HeapRoom,
        BandKind::Mmap,
        BandKind::MmapRoom,
        BandKind::Free,
        BandKind::Stack,
        BandKind::StackCommitted,
        BandKind::StackReserved,
        BandKind::StackGuard,
        BandKind::Reserved,
        BandKind::Committed,
        BandKind::KernelText,
        BandKind::KernelStack,
        BandKind::KernelHeap,
        BandKind::KernelPool,
        BandKind::RecursivePd,
        BandKind::Kernel,
        BandKind::NonCanonical,
    ];

    /// The `data-kind` attribute value (snake case).
    pub fn id(self) -> &'static str {
        match self {
            BandKind::NullGuard => "null_guard",
            BandKind::Text => "text",
            BandKind::Data => "data",
            BandKind::Heap => "heap",
            BandKind::HeapRoom => "heap_room",
            BandKind::Mmap => "mmap",
            BandKind::MmapRoom => "mmap_room",
            BandKind::Free => "free",
            BandKind::Stack => "stack",
            BandKind::StackCommitted => "stack_committed",
            BandKind::StackReserved => "stack_reserved",
            BandKind::StackGuard => "stack_guard",
            BandKind::Reserved => "reserved",
            BandKind::Committed => "committed",
            BandKind::KernelText => "kernel_text",
            BandKind::KernelStack => "kernel_stack",
            BandKind::KernelHeap => "kernel_heap",
            BandKind::KernelPool => "kernel_pool",
            BandKind::RecursivePd => "recursive_pd",
            BandKind::Kernel => "kernel",
            BandKind::NonCanonical => "non_canonical",
        }
    }

    /// The legend's words for the kind.
    pub fn name(self) -> &'static str {
        match self {
            BandKind::NullGuard => "below mmap_min_addr",
            BandKind::Text => "text",
            BandKind::Data => "data/bss",
            BandKind::Heap => "heap",
            BandKind::HeapRoom => "heap can grow",
            BandKind::Mmap => "mapping",
            BandKind::MmapRoom => "mmap area can grow",
            BandKind::Free => "free",
            BandKind::Stack => "stack",
            BandKind::StackCommitted => "stack committed",
            BandKind::StackReserved => "stack reserved (can grow)",
            BandKind::StackGuard => "stack guard",
            BandKind::Reserved => "reserved",
            BandKind::Committed => "committed",
            BandKind::KernelText => "kernel text",
            BandKind::KernelStack => "kernel stack",
            BandKind::KernelHeap => "kernel heap",
            BandKind::KernelPool => "kernel pool",
            BandKind::RecursivePd => "recursive page directory",
            BandKind::Kernel => "kernel",
            BandKind::NonCanonical => "non-canonical",
        }
    }

    /// Fill colour.
    pub fn color(self) -> &'static str {
        match self {
            BandKind::NullGuard => "#555555",
            BandKind::Text => "#4e79a7",
            BandKind::Data => "#76b7b2",
            BandKind::Heap => "#59a14f",
            BandKind::HeapRoom => "#c7e9c0",
            BandKind::Mmap => "#f28e2b",
            BandKind::MmapRoom => "#fde0b0",
            BandKind::Free => "#f4f4f4",
            BandKind::Stack => "#8e44ad",
            BandKind::StackCommitted => "#6a3d9a",
            BandKind::StackReserved => "#d4b9da",
            BandKind::StackGuard => "#e15759",
            BandKind::Reserved => "#e8d5f0",
            BandKind::Committed => "#edc948",
            BandKind::KernelText => "#1b1b3a",
            BandKind::KernelStack => "#5b2a86",
            BandKind::KernelHeap => "#2e5e4e",
            BandKind::KernelPool => "#7a5230",
            BandKind::RecursivePd => "#9c755f",
            BandKind::Kernel => "#333333",
            BandKind::NonCanonical => "#bbbbbb",
        }
    }
}

/// One band `[start, end)` of a space. An `end` of `u64::MAX`, or of 0 above a non-zero
/// `start` (wrapped), stands for the top of the space: 2^64 in a 64-bit space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    pub start: u64,
    pub end: u64,
    pub kind: BandKind,
    pub label: String,
}

/// An address space drawn as bands to scale, high addresses on top.
#[derive(Clone, Debug)]
pub struct SpacePicture {
    pub title: String,
    /// Width of the drawn space in bits (32, 47/48, 57, 64); clamped to 1..=64.
    pub bits: u32,
    /// Need not cover the space nor be sorted; gaps are drawn as free, overlaps clipped.
    pub bands: Vec<Band>,
}

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// (x, y) in drawing order; non-finite points are left out.
    pub points: Vec<(f64, f64)>,
}

/// A line chart: axes with ticks and labels, one line per series, a legend.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// One panel of a figure.
#[derive(Clone, Debug)]
pub enum Panel {
    Space(SpacePicture),
    Chart(Chart),
}

/// Font stack: DejaVu (what `.ci/run` installs, and what PNG rendering asks for) first.
pub(crate) const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

/// A drawn panel in its own coordinates, (0, 0) at the top left.
pub(crate) struct Drawn {
    /// The document's `<title>` when drawn alone.
    pub title: String,
    pub group: Group,
    pub width: f64,
    pub height: f64,
}

/// Rounds a coordinate to 1/100 px so the SVG stays short.
pub(crate) fn px(v: f64) -> f64 {
    if v.is_finite() {
        (v * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// Attribute text: the svg crate escapes `&`, `<`, `>` but not quotes.
pub(crate) fn attr(s: &str) -> String {
    s.replace('"', "'")
}

/// `12 KiB`, `1.50 GiB`, `16 EiB`.
pub fn size128(n: u128) -> String {
    if n == u64::MAX as u128 {
        return "unlimited".into();
    }
    const U: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    let mut v = n as f64;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.2} {}", U[i])
    }
}

/// Shortens text to `max` characters with an ellipsis.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub(crate) fn text(x: f64, y: f64, s: &str) -> Text {
    Text::new(s).set("x", px(x)).set("y", px(y))
}

pub(crate) fn line(x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str) -> Line {
    Line::new()
        .set("x1", px(x1))
        .set("y1", px(y1))
        .set("x2", px(x2))
        .set("y2", px(y2))
        .set("stroke", stroke)
}

/// What a legend entry shows next to its words.
pub(crate) enum Swatch {
    Fill(&'static str),
    Stroke(&'static str),
    ZigZag,
}

/// A legend box at (x, y): a bold "legend" heading and one `g.legend` per entry.
pub(crate) fn legend(x: f64, y: f64, entries: &[(Swatch, String)]) -> (Group, f64) {
    let mut g = Group::new().set("class", "legend-box");
    g = g.add(
        text(x, y, "legend")
            .set("font-weight", "bold")
            .set("class", "legend-title"),
    );
    let mut yy = y + 10.0;
    for (sw, name) in entries {
        let mut e = Group::new().set("class", "legend");
        e = match sw {
            Swatch::Fill(c) => e.add(
                Rectangle::new()
                    .set("x", px(x))
                    .set("y", px(yy))
                    .set("width", 14)
                    .set("height", 12)
                    .set("fill", *c)
                    .set("stroke", "black")
                    .set("stroke-width", 0.5),
            ),
            Swatch::Stroke(c) => {
                e.add(line(x, yy + 6.0, x + 14.0, yy + 6.0, c).set("stroke-width", 2.5))
            }
            Swatch::ZigZag => e.add(
                svg::node::element::Path::new()
                    .set(
                        "d",
                        format!(
                            "M {x} {} L {} {} L {} {} L {} {}",
                            yy + 8.0,
                            x + 4.0,
                            yy + 3.0,
                            x + 9.0,
                            yy + 9.0,
                            x + 14.0,
                            yy + 4.0
                        ),
                    )
                    .set("fill", "none")
                    .set("stroke", "black")
                    .set("stroke-width", 1.5),
            ),
        };
        e = e.add(text(x + 20.0, yy + 10.0, name));
        g = g.add(e);
        yy += 18.0;
    }
    (g, yy - y)
}

/// Wraps a drawing into a complete SVG document with a white background.
pub(crate) fn document(d: Drawn) -> String {
    let (w, h) = (d.width.ceil().max(1.0), d.height.ceil().max(1.0));
    let doc = svg::Document::new()
        .set("width", w)
        .set("height", h)
        .set("viewBox", (0, 0, w, h))
        .set("font-family", FONT)
        .set("font-size", 11)
        .add(svg::node::element::Title::new(d.title))
        .add(
            Rectangle::new()
                .set("x", 0)
                .set("y", 0)
                .set("width", w)
                .set("height", h)
                .set("fill", "white"),
        )
        .add(d.group);
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{doc}\n")
}

/// Helpers the picture tests share: parse an SVG and pick out elements by class.
#[cfg(test)]
pub(crate) mod testutil {
    /// Parses `svg` (panicking with the parser's message if it is not well-formed XML) and
    /// returns it with its root checked to be an SVG element.
    pub fn parse(svg: &str) -> roxmltree::Document<'_> {
        let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        doc
    }

    /// Elements whose class is `class`.
    pub fn class<'a, 'i>(
        doc: &'a roxmltree::Document<'i>,
        class: &str,
    ) -> Vec<roxmltree::Node<'a, 'i>> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .collect()
    }

    /// The text content of elements of a class.
    pub fn texts(doc: &roxmltree::Document<'_>, cls: &str) -> Vec<String> {
        class(doc, cls)
            .iter()
            .map(|n| {
                n.descendants()
                    .filter(|t| t.is_text())
                    .filter_map(|t| t.text())
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .collect()
    }
}
