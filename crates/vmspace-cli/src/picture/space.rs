//! An address space as bands to scale, high addresses on top.
//!
//! Spaces up to 2^32 are drawn on one linear axis. In wider spaces every band of 1 TiB or more
//! (the free hole, the non-canonical hole, the kernel half) is drawn with a fixed height and
//! zigzag break marks, and each run of bands between two breaks gets its own linear scale.
//! Within a scale, a band too small to see is drawn at a minimum height taken from its larger
//! neighbours, so every band stays visible; labels on the right name each band and its size.

use super::{
    clip, document, legend, line, px, size128, text, BandKind, Drawn, SpacePicture, Swatch,
};
use svg::node::element::{Group, Path, Rectangle, Title};

const BAR_X: f64 = 190.0;
const BAR_W: f64 = 170.0;
const TOP: f64 = 70.0;
const BROKEN_H: f64 = 46.0;
const MIN_H: f64 = 3.0;
const LABEL_GAP: f64 = 14.0;
const LABEL_X: f64 = 400.0;
const LEGEND_X: f64 = 1120.0;
const WIDTH: f64 = 1340.0;
/// Bands at least this large are broken in spaces wider than 32 bits.
const BREAK_AT: u128 = 1 << 40;

/// A horizontal line across the bar at an address, with words.
#[derive(Clone, Debug)]
pub struct Marker {
    pub at: u64,
    pub text: String,
    /// Stroke and text colour.
    pub color: &'static str,
    /// Put the words below the line instead of above it.
    pub below: bool,
}

/// What a caller may add to a space picture besides its bands.
#[derive(Clone, Debug, Default)]
pub struct SpaceExtras {
    /// A line under the title (what the picture shows, its parameters).
    pub subtitle: Option<String>,
    pub markers: Vec<Marker>,
}

/// A band after normalisation: u128 bounds, sorted, non-empty, gaps filled with free.
#[derive(Clone, Debug)]
pub(crate) struct NBand {
    pub start: u128,
    pub end: u128,
    pub kind: BandKind,
    pub label: String,
}

/// The band's end as u128: `u64::MAX`, or 0 above a non-zero start, is the space's top.
fn end128(start: u64, end: u64, top: u128) -> u128 {
    if end == u64::MAX || (end == 0 && start > 0) {
        top.max(start as u128 + 1)
    } else {
        end as u128
    }
}

/// Sorts, clips overlaps, drops empty bands and fills gaps with free bands, over
/// `[0, 2^bits)` extended to the highest band end.
pub(crate) fn normalize(p: &SpacePicture) -> (Vec<NBand>, u128) {
    let top = 1u128 << p.bits.clamp(1, 64);
    let mut raw: Vec<(u128, u128, usize)> = p
        .bands
        .iter()
        .enumerate()
        .map(|(i, b)| (b.start as u128, end128(b.start, b.end, top), i))
        .collect();
    raw.sort();
    // Bands above 2^bits widen the drawn space rather than vanish.
    let space_end = raw.iter().map(|r| r.1).max().unwrap_or(0).max(top);
    let free = |start, end| NBand {
        start,
        end,
        kind: BandKind::Free,
        label: "free".into(),
    };
    let mut out = Vec::new();
    let mut at = 0u128;
    for (s, e, i) in raw {
        let s = s.max(at);
        if e <= s {
            continue;
        }
        if s > at {
            out.push(free(at, s));
        }
        out.push(NBand {
            start: s,
            end: e,
            kind: p.bands[i].kind,
            label: p.bands[i].label.clone(),
        });
        at = e;
    }
    if at < space_end {
        out.push(free(at, space_end));
    }
    (out, space_end)
}

/// Splits `total` px over `sizes` proportionally, but gives every entry at least `MIN_H`
/// (taken from the larger ones), unless there is not even room for that.
fn fit(sizes: &[u128], total: f64) -> Vec<f64> {
    let n = sizes.len();
    if n == 0 {
        return Vec::new();
    }
    if total <= MIN_H * n as f64 {
        return vec![total / n as f64; n];
    }
    let mut pinned = vec![false; n];
    loop {
        let free_px = total - MIN_H * pinned.iter().filter(|p| **p).count() as f64;
        let free_sum: f64 = sizes
            .iter()
            .zip(&pinned)
            .filter(|(_, p)| !**p)
            .map(|(s, _)| *s as f64)
            .sum();
        let h: Vec<f64> = sizes
            .iter()
            .zip(&pinned)
            .map(|(s, p)| {
                if *p {
                    MIN_H
                } else if free_sum > 0.0 {
                    free_px * *s as f64 / free_sum
                } else {
                    MIN_H
                }
            })
            .collect();
        let mut changed = false;
        for i in 0..n {
            if !pinned[i] && h[i] < MIN_H {
                pinned[i] = true;
                changed = true;
            }
        }
        if !changed {
            return h;
        }
    }
}

/// Renders a space picture as a complete SVG document.
pub fn render_space(p: &SpacePicture) -> String {
    render_space_with(p, &SpaceExtras::default())
}

/// Renders a space picture with a subtitle and markers.
pub fn render_space_with(p: &SpacePicture, extras: &SpaceExtras) -> String {
    document(draw(p, extras))
}

/// Draws the space picture in its own coordinates.
pub(crate) fn draw(p: &SpacePicture, extras: &SpaceExtras) -> Drawn {
    let (bands, space_end) = normalize(p);
    let wide = space_end > 1 << 32;
    let broken: Vec<bool> = bands
        .iter()
        .map(|b| wide && b.end - b.start >= BREAK_AT)
        .collect();
    // Segments: maximal runs of unbroken bands; each gets an equal share of the axis.
    let mut seg_of = vec![usize::MAX; bands.len()];
    let mut segs: Vec<Vec<usize>> = Vec::new();
    for i in 0..bands.len() {
        if broken[i] {
            continue;
        }
        if i == 0 || broken[i - 1] {
            segs.push(Vec::new());
        }
        seg_of[i] = segs.len() - 1;
        segs.last_mut().expect("pushed above").push(i);
    }
    let nbroken = broken.iter().filter(|b| **b).count() as f64;
    let axis_total = (bands.len() as f64 * LABEL_GAP).max(640.0);
    let seg_px = if segs.is_empty() {
        0.0
    } else {
        (axis_total - nbroken * BROKEN_H).max(100.0) / segs.len() as f64
    };
    let mut heights = vec![BROKEN_H; bands.len()];
    for seg in &segs {
        let sizes: Vec<u128> = seg.iter().map(|&i| bands[i].end - bands[i].start).collect();
        // A crowded segment grows so each of its bands keeps MIN_H (and some to spare).
        let px = seg_px.max(2.0 * MIN_H * seg.len() as f64);
        for (&i, h) in seg.iter().zip(fit(&sizes, px)) {
            heights[i] = h;
        }
    }
    let axis_h: f64 = heights.iter().sum();
    let bottom = TOP + axis_h;
    // y of each band's bottom edge.
    let mut ys = Vec::with_capacity(bands.len());
    let mut y = bottom;
    for h in &heights {
        ys.push(y);
        y -= h;
    }

    // Where an address is drawn (linear within its band).
    let addr_y = |a: u128| {
        bands
            .iter()
            .enumerate()
            .find(|(_, b)| b.start <= a && a < b.end)
            .map(|(i, b)| ys[i] - heights[i] * (a - b.start) as f64 / (b.end - b.start) as f64)
    };
    let marker_y: Vec<Option<f64>> = extras
        .markers
        .iter()
        .map(|m| addr_y(m.at as u128))
        .collect();

    // Right-hand labels of bands (0..n) and markers (n..), top to bottom, pushed apart to
    // stay legible. A marker's words go just above or below its line's place in the order.
    let n = bands.len();
    let anchor = |i: usize| -> f64 {
        if i < n {
            ys[i] - heights[i] / 2.0
        } else {
            let m = &extras.markers[i - n];
            marker_y[i - n].unwrap_or(0.0) + if m.below { 0.01 } else { -0.01 }
        }
    };
    let mut order: Vec<usize> = (0..n)
        .rev()
        .chain(
            (0..extras.markers.len())
                .filter(|j| marker_y[*j].is_some())
                .map(|j| n + j),
        )
        .collect();
    order.sort_by(|&a, &b| anchor(a).total_cmp(&anchor(b)));
    let anchors: Vec<f64> = order.iter().map(|&i| anchor(i)).collect();
    let mut label_y = vec![0.0; n + extras.markers.len()];
    for (&i, y) in order.iter().zip(spread(&anchors, LABEL_GAP, TOP)) {
        label_y[i] = y;
    }
    let last = label_y.iter().copied().fold(TOP, f64::max);

    let mut g = Group::new().set("class", "space");
    g = g.add(
        text(20.0, 24.0, &p.title)
            .set("font-size", 15)
            .set("font-weight", "bold")
            .set("class", "title"),
    );
    let scale_note = if wide {
        "to scale within each segment; zigzag bands (>= 1 TiB) are shortened (broken axis)"
    } else {
        "to scale: one linear axis over the whole space"
    };
    let sub = match &extras.subtitle {
        Some(s) => format!("{s}; {scale_note}"),
        None => format!(
            "{}-bit space ({}); {scale_note}; bands under {MIN_H} px are drawn at {MIN_H} px",
            p.bits.clamp(1, 64),
            size128(space_end)
        ),
    };
    g = g.add(text(20.0, 42.0, &sub).set("class", "subtitle"));
    let mid = TOP + axis_h / 2.0;
    g = g.add(
        text(22.0, mid, "virtual address (hex), low at the bottom")
            .set("class", "axis-label")
            .set("transform", format!("rotate(-90 22 {})", px(mid)))
            .set("text-anchor", "middle"),
    );
    g = g.add(
        text(BAR_X + BAR_W / 2.0, bottom + 28.0, "address space")
            .set("class", "axis-label")
            .set("text-anchor", "middle"),
    );
    g = g.add(line(BAR_X - 6.0, TOP, BAR_X - 6.0, bottom, "black").set("class", "axis"));

    let mut last_tick = f64::INFINITY;
    for (i, b) in bands.iter().enumerate() {
        let (yb, h) = (ys[i], heights[i]);
        let top = yb - h;
        let full = format!(
            "{:#x}-{:#x} {} {}: {}",
            b.start,
            b.end,
            size128(b.end - b.start),
            b.kind.name(),
            b.label
        );
        g = g.add(
            Rectangle::new()
                .set("class", "band")
                .set("data-kind", b.kind.id())
                .set("data-start", format!("{:#x}", b.start))
                .set("data-end", format!("{:#x}", b.end))
                .set("x", BAR_X)
                .set("y", px(top))
                .set("width", BAR_W)
                .set("height", px(h))
                .set("fill", b.kind.color())
                .set("stroke", "black")
                .set("stroke-opacity", 0.25)
                .set("stroke-width", 0.5)
                .add(Title::new(full)),
        );
        if broken[i] {
            for yy in [top + 6.0, yb - 6.0] {
                g = g.add(zigzag(BAR_X - 10.0, BAR_X + BAR_W + 10.0, yy));
            }
        }
        // Tick at the band's lower edge.
        if last_tick - yb >= 12.0 || i == 0 {
            g = g.add(line(BAR_X - 10.0, yb, BAR_X, yb, "black"));
            g = g.add(
                text(BAR_X - 12.0, yb + 4.0, &format!("{:#x}", b.start))
                    .set("class", "tick")
                    .set("text-anchor", "end"),
            );
            last_tick = yb;
        }
        // Label with a leader line.
        let ly = label_y[i];
        g = g.add(
            line(BAR_X + BAR_W, yb - h / 2.0, LABEL_X - 4.0, ly, "gray").set("stroke-width", 0.6),
        );
        let words = if b.label.is_empty() || b.label == b.kind.name() {
            format!("{} ({})", b.kind.name(), size128(b.end - b.start))
        } else {
            format!(
                "{} ({}): {}",
                b.kind.name(),
                size128(b.end - b.start),
                b.label
            )
        };
        g = g.add(text(LABEL_X, ly + 4.0, &clip(&words, 104)).set("class", "label"));
    }
    if last_tick - TOP >= 12.0 {
        // The top of the axis is labelled with the space's last byte (0xffffffff in a 32-bit
        // space), an address the space has, as the ticks below label bands' first bytes.
        g = g.add(line(BAR_X - 10.0, TOP, BAR_X, TOP, "black"));
        g = g.add(
            text(BAR_X - 12.0, TOP + 4.0, &format!("{:#x}", space_end - 1))
                .set("class", "tick")
                .set("text-anchor", "end"),
        );
    }

    // Markers: a dashed line across the bar, words in the label column.
    for (j, m) in extras.markers.iter().enumerate() {
        if let Some(y) = marker_y[j] {
            let ly = label_y[n + j];
            g = g.add(
                Group::new()
                    .set("class", "marker")
                    .add(
                        line(BAR_X - 4.0, y, BAR_X + BAR_W + 4.0, y, m.color)
                            .set("stroke-width", 1.5)
                            .set("stroke-dasharray", "5,3"),
                    )
                    .add(
                        line(BAR_X + BAR_W + 4.0, y, LABEL_X - 4.0, ly, m.color)
                            .set("stroke-width", 0.8)
                            .set("stroke-dasharray", "2,2"),
                    )
                    .add(
                        text(LABEL_X, ly + 4.0, &clip(&m.text, 104))
                            .set("class", "marker-label")
                            .set("fill", m.color),
                    ),
            );
        }
    }

    // Legend: the kinds drawn, in a fixed order, then the break mark if any.
    let mut entries: Vec<(Swatch, String)> = BandKind::ALL
        .iter()
        .filter(|k| bands.iter().any(|b| b.kind == **k))
        .map(|k| (Swatch::Fill(k.color()), k.name().to_string()))
        .collect();
    if broken.iter().any(|b| *b) {
        entries.push((Swatch::ZigZag, "axis broken: band shortened".into()));
    }
    let (lg, lh) = legend(LEGEND_X, TOP, &entries);
    g = g.add(lg);
    let height = (last + 40.0).max(bottom + 50.0).max(TOP + lh + 30.0);
    Drawn {
        title: p.title.clone(),
        group: g,
        width: WIDTH,
        height,
    }
}

/// Places labels wanted at sorted `anchors` at least `gap` apart and not above `top`, each
/// run of crowded labels centred on its anchors' mean (so labels stay near their bands
/// rather than all being pushed down).
fn spread(anchors: &[f64], gap: f64, top: f64) -> Vec<f64> {
    // Clusters: (first label's y, labels, sum of their anchors).
    let mut cl: Vec<(f64, usize, f64)> = Vec::new();
    for &a in anchors {
        cl.push((a.max(top), 1, a));
        while cl.len() > 1 {
            let (s1, n1, a1) = cl[cl.len() - 2];
            let (s2, n2, a2) = cl[cl.len() - 1];
            if s1 + n1 as f64 * gap <= s2 {
                break;
            }
            cl.pop();
            let (nn, aa) = (n1 + n2, a1 + a2);
            let start = (aa / nn as f64 - (nn - 1) as f64 * gap / 2.0).max(top);
            *cl.last_mut().expect("two clusters") = (start, nn, aa);
        }
    }
    cl.iter()
        .flat_map(|&(s, k, _)| (0..k).map(move |j| s + j as f64 * gap))
        .collect()
}

/// A zigzag break mark across the bar at `y`.
fn zigzag(x0: f64, x1: f64, y: f64) -> Path {
    let mut d = format!("M {:.1} {:.1}", x0, y);
    let mut x = x0;
    let mut up = true;
    while x < x1 {
        x += 8.0;
        d += &format!(" L {:.1} {:.1}", x, if up { y - 4.0 } else { y + 4.0 });
        up = !up;
    }
    Path::new()
        .set("class", "axis-break")
        .set("d", d)
        .set("fill", "none")
        .set("stroke", "black")
        .set("stroke-width", 1.5)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{class, parse, texts};
    use super::super::Band;
    use super::*;

    fn pic(bits: u32, bands: Vec<Band>) -> SpacePicture {
        SpacePicture {
            title: "t".into(),
            bits,
            bands,
        }
    }

    fn band(start: u64, end: u64, kind: BandKind) -> Band {
        Band {
            start,
            end,
            kind,
            label: format!("{kind:?}"),
        }
    }

    #[test]
    fn normalize_fills_gaps_clips_overlaps_and_drops_empty_bands() {
        let p = pic(
            32,
            vec![
                band(0x3000, 0x5000, BandKind::Heap),
                band(0x1000, 0x2000, BandKind::Text),
                band(0x4000, 0x6000, BandKind::Mmap),
                band(0x8000, 0x8000, BandKind::Stack),
            ],
        );
        let (b, end) = normalize(&p);
        assert_eq!(end, 1 << 32);
        let got: Vec<(u128, u128, BandKind)> = b.iter().map(|b| (b.start, b.end, b.kind)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0x1000, BandKind::Free),
                (0x1000, 0x2000, BandKind::Text),
                (0x2000, 0x3000, BandKind::Free),
                (0x3000, 0x5000, BandKind::Heap),
                (0x5000, 0x6000, BandKind::Mmap),
                (0x6000, 1 << 32, BandKind::Free),
            ]
        );
    }

    #[test]
    fn ends_at_two_to_the_64_are_u64_max_or_zero() {
        for end in [u64::MAX, 0] {
            let p = pic(64, vec![band(0xffff_8000_0000_0000, end, BandKind::Kernel)]);
            let (b, space_end) = normalize(&p);
            assert_eq!(space_end, 1 << 64);
            assert_eq!(b.last().unwrap().end, 1 << 64);
            assert_eq!(b.last().unwrap().kind, BandKind::Kernel);
        }
    }

    #[test]
    fn fit_keeps_the_total_and_the_minimum() {
        let h = fit(&[1, 1 << 30, 4096, 1 << 31], 600.0);
        assert!((h.iter().sum::<f64>() - 600.0).abs() < 1e-6);
        assert!(h.iter().all(|h| *h >= MIN_H - 1e-9), "{h:?}");
        assert!(h[3] > h[1] && h[1] > h[2] - 1e-9);
        // Not even room for the minimum: equal shares.
        let h = fit(&[1; 10], 20.0);
        assert!(h.iter().all(|h| (*h - 2.0).abs() < 1e-9));
    }

    fn kinds(svg: &str) -> Vec<String> {
        let doc = parse(svg);
        class(&doc, "band")
            .iter()
            .map(|n| n.attribute("data-kind").unwrap().to_string())
            .collect()
    }

    fn thirty_two() -> SpacePicture {
        pic(
            32,
            vec![
                band(0, 0x1_0000, BandKind::NullGuard),
                band(0x0804_8000, 0x0810_0000, BandKind::Text),
                band(0x0810_0000, 0x0820_0000, BandKind::Heap),
                band(0xbf00_0000, 0xbff0_0000, BandKind::StackReserved),
                band(0xbff0_0000, 0xbfff_f000, BandKind::StackCommitted),
                band(0xbfef_f000, 0xbff0_0000, BandKind::StackGuard),
                Band {
                    start: 0xc000_0000,
                    end: 0,
                    kind: BandKind::Kernel,
                    label: "kernel <3G/1G> & \"more\"".into(),
                },
            ],
        )
    }

    #[test]
    fn a_32_bit_space_has_its_bands_legend_axis_labels_and_no_breaks() {
        let svg = render_space(&thirty_two());
        let doc = parse(&svg);
        let k = kinds(&svg);
        for want in [
            "null_guard",
            "text",
            "heap",
            "stack_reserved",
            "stack_committed",
            "kernel",
            "free",
        ] {
            assert!(k.iter().any(|x| x == want), "no {want} band in {k:?}");
        }
        // The guard overlapping the reserved part is clipped, not dropped: it starts at
        // the reserved band's end... which is where the committed part starts, so it vanishes.
        assert!(!k.iter().any(|x| x == "stack_guard"), "{k:?}");
        let bands = class(&doc, "band");
        for b in &bands {
            let h: f64 = b.attribute("height").unwrap().parse().unwrap();
            assert!(h >= MIN_H - 0.01, "band drawn {h} px high");
            assert!(b.children().any(|c| c.tag_name().name() == "title"));
            assert!(b.attribute("data-start").unwrap().starts_with("0x"));
        }
        // Bands tile the space from 0 to 2^32, drawn bottom-up.
        let kernel = bands
            .iter()
            .find(|b| b.attribute("data-kind") == Some("kernel"))
            .unwrap();
        assert_eq!(kernel.attribute("data-end"), Some("0x100000000"));
        // One legend entry per kind drawn; axis labels; tick labels.
        assert_eq!(class(&doc, "legend").len(), 7);
        assert!(texts(&doc, "legend").iter().any(|t| t == "stack committed"));
        assert_eq!(class(&doc, "axis-label").len(), 2);
        let ticks = texts(&doc, "tick");
        assert!(ticks.len() >= 4);
        // The axis ends at the last byte of the 32-bit space, not at 2^32.
        assert!(ticks.iter().any(|t| t == "0xffffffff"), "{ticks:?}");
        assert!(!ticks.iter().any(|t| t == "0x100000000"), "{ticks:?}");
        assert!(class(&doc, "axis-break").is_empty());
        // Labels with markup characters survive as text.
        assert!(texts(&doc, "label")
            .iter()
            .any(|t| t.contains("<3G/1G> & \"more\"")));
    }

    #[test]
    fn a_64_bit_space_breaks_its_huge_bands() {
        let p = pic(
            64,
            vec![
                band(0x40_0000, 0x48_0000, BandKind::Text),
                band(0x7fff_f000_0000, 0x8000_0000_0000, BandKind::Stack),
                band(
                    0x8000_0000_0000,
                    0xffff_8000_0000_0000,
                    BandKind::NonCanonical,
                ),
                band(0xffff_8000_0000_0000, u64::MAX, BandKind::Kernel),
            ],
        );
        let svg = render_space(&p);
        let doc = parse(&svg);
        // The free hole, the non-canonical hole and the kernel half (not the 4 MiB below
        // the text): three broken bands with two marks each.
        assert_eq!(class(&doc, "axis-break").len(), 6);
        assert!(texts(&doc, "legend")
            .iter()
            .any(|t| t.contains("axis broken")));
        let k = kinds(&svg);
        assert_eq!(
            k,
            ["free", "text", "free", "stack", "non_canonical", "kernel"]
        );
        // The small bands share the unbroken axis and stay visible.
        for b in class(&doc, "band") {
            let h: f64 = b.attribute("height").unwrap().parse().unwrap();
            assert!(h >= MIN_H - 0.01);
        }
    }

    #[test]
    fn degenerate_spaces_render() {
        let cases = vec![
            pic(32, vec![]),
            pic(64, vec![]),
            pic(0, vec![band(0, 0, BandKind::Heap)]),
            pic(200, vec![band(5, 3, BandKind::Heap)]),
            pic(64, vec![band(0, u64::MAX, BandKind::Kernel)]),
            pic(64, vec![band(u64::MAX - 4096, 0, BandKind::Kernel)]),
            pic(32, vec![band(0x1000, 0x1000, BandKind::Text)]),
            pic(32, vec![band(0x1000, 0x2000, BandKind::Text); 3]),
            pic(
                48,
                (0..400u64)
                    .map(|i| band(i << 12, (i + 1) << 12, BandKind::Mmap))
                    .collect(),
            ),
        ];
        for p in &cases {
            let svg = render_space(p);
            let doc = parse(&svg);
            assert!(!class(&doc, "band").is_empty(), "{p:?}");
            assert!(!class(&doc, "legend").is_empty());
            for b in class(&doc, "band") {
                let y: f64 = b.attribute("y").unwrap().parse().unwrap();
                let h: f64 = b.attribute("height").unwrap().parse().unwrap();
                assert!(y.is_finite() && h.is_finite() && h > 0.0, "{p:?}");
            }
        }
    }

    #[test]
    fn markers_and_subtitle_are_drawn() {
        let extras = SpaceExtras {
            subtitle: Some("TASK_SIZE 0xc0000000".into()),
            markers: vec![
                Marker {
                    at: 0x0820_0000,
                    text: "brk".into(),
                    color: "red",
                    below: true,
                },
                // Outside the space: left out, no panic.
                Marker {
                    at: u64::MAX,
                    text: "nowhere".into(),
                    color: "red",
                    below: false,
                },
            ],
        };
        let svg = render_space_with(&thirty_two(), &extras);
        let doc = parse(&svg);
        assert_eq!(class(&doc, "marker").len(), 1);
        assert!(texts(&doc, "subtitle")[0].starts_with("TASK_SIZE 0xc0000000"));
    }

    #[test]
    fn spread_keeps_labels_apart_and_near_their_anchors() {
        assert_eq!(spread(&[100.0, 200.0], 14.0, 70.0), [100.0, 200.0]);
        // Three at one place: centred on it.
        assert_eq!(
            spread(&[100.0, 100.0, 100.0], 14.0, 70.0),
            [86.0, 100.0, 114.0]
        );
        // Near the top: pushed down, never above it.
        assert_eq!(spread(&[70.0, 70.0], 14.0, 70.0), [70.0, 84.0]);
        // A cluster that grows into the one before it merges with it.
        let y = spread(&[100.0, 110.0, 120.0, 120.0, 120.0], 14.0, 0.0);
        assert!(y.windows(2).all(|w| w[1] - w[0] >= 14.0 - 1e-9), "{y:?}");
        let mean = y.iter().sum::<f64>() / 5.0;
        assert!((mean - 114.0).abs() < 1e-9, "{y:?}");
    }

    #[test]
    fn labels_and_marker_words_never_overlap() {
        let extras = SpaceExtras {
            subtitle: None,
            markers: vec![
                Marker {
                    at: 0x0810_0000,
                    text: "a".into(),
                    color: "red",
                    below: false,
                },
                Marker {
                    at: 0x0810_1000,
                    text: "b".into(),
                    color: "blue",
                    below: true,
                },
            ],
        };
        let svg = render_space_with(&thirty_two(), &extras);
        let doc = parse(&svg);
        let mut ys: Vec<f64> = class(&doc, "label")
            .iter()
            .chain(class(&doc, "marker-label").iter())
            .map(|n| n.attribute("y").unwrap().parse().unwrap())
            .collect();
        assert_eq!(class(&doc, "marker-label").len(), 2);
        ys.sort_by(f64::total_cmp);
        for w in ys.windows(2) {
            assert!(w[1] - w[0] >= LABEL_GAP - 0.01, "{ys:?}");
        }
    }

    fn any_kind() -> impl proptest::strategy::Strategy<Value = BandKind> {
        proptest::sample::select(BandKind::ALL.to_vec())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any bands (unsorted, overlapping, empty, reversed, past 2^bits, ending at 2^64)
        /// render as well-formed SVG whose bands tile the space exactly, bottom to top, each
        /// at least MIN_H high, with the same total height.
        #[test]
        fn any_bands_render_as_a_tiling(
            bits in proptest::sample::select(vec![0u32, 20, 32, 47, 48, 57, 64, 99]),
            raw in proptest::collection::vec(
                (
                    proptest::prop_oneof![proptest::num::u64::ANY, 0u64..(1 << 33)],
                    proptest::prop_oneof![
                        proptest::num::u64::ANY,
                        0u64..(1 << 33),
                        proptest::strategy::Just(u64::MAX),
                        proptest::strategy::Just(0u64),
                    ],
                    any_kind(),
                ),
                0..24,
            ),
        ) {
            let p = pic(bits, raw.iter().map(|&(s, e, k)| band(s, e, k)).collect());
            let svg = render_space(&p);
            let doc = parse(&svg);
            let mut bands: Vec<(u128, u128, f64, f64)> = class(&doc, "band")
                .iter()
                .map(|n| {
                    let hex = |a| u128::from_str_radix(n.attribute(a).unwrap().trim_start_matches("0x"), 16).unwrap();
                    let num = |a| n.attribute(a).unwrap().parse::<f64>().unwrap();
                    (hex("data-start"), hex("data-end"), num("y"), num("height"))
                })
                .collect();
            bands.sort_by_key(|b| b.0);
            let mut at = 0u128;
            let mut prev_top = f64::INFINITY;
            for &(s, e, y, h) in &bands {
                proptest::prop_assert_eq!(s, at);
                proptest::prop_assert!(e > s);
                proptest::prop_assert!(h.is_finite() && h >= MIN_H - 0.02, "height {}", h);
                // Higher addresses are drawn higher up, each band right on top of the last.
                proptest::prop_assert!((y + h - prev_top).abs() < 0.05 || prev_top.is_infinite());
                prev_top = y;
                at = e;
            }
            proptest::prop_assert!(at >= 1u128 << bits.clamp(1, 64));
            proptest::prop_assert!(at <= 1u128 << 64);
        }
    }
}
