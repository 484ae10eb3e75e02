//! A figure: several panels (spaces and charts) stacked in one SVG under a common title.

use super::{chart, document, space, text, Drawn, Panel, SpaceExtras};
use svg::node::element::Group;

const TITLE_H: f64 = 44.0;
const GAP: f64 = 16.0;

/// Renders the panels top to bottom in one SVG document; each keeps its own title, axes and
/// legend, inside a `g.panel` with `data-index`.
pub fn render_figure(title: &str, panels: &[Panel]) -> String {
    let mut g = Group::new().set("class", "figure");
    g = g.add(
        text(20.0, 30.0, title)
            .set("font-size", 18)
            .set("font-weight", "bold")
            .set("class", "figure-title"),
    );
    let mut y = TITLE_H;
    let mut width: f64 = 400.0;
    for (i, p) in panels.iter().enumerate() {
        let d = match p {
            Panel::Space(s) => space::draw(s, &SpaceExtras::default()),
            Panel::Chart(c) => chart::draw(c),
        };
        g = g.add(
            Group::new()
                .set("class", "panel")
                .set("data-index", i)
                .set("transform", format!("translate(0 {y})"))
                .add(d.group),
        );
        // A thin rule between panels.
        y += d.height;
        if i + 1 < panels.len() {
            g = g.add(super::line(
                10.0,
                y + GAP / 2.0,
                d.width - 10.0,
                y + GAP / 2.0,
                "#dddddd",
            ));
        }
        y += GAP;
        width = width.max(d.width);
    }
    if panels.is_empty() {
        g = g.add(text(20.0, TITLE_H + 10.0, "(no panels)").set("class", "no-data"));
        y += 30.0;
    }
    document(Drawn {
        title: title.to_string(),
        group: g,
        width,
        height: y,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{class, parse, texts};
    use super::super::{Band, BandKind, Chart, Series, SpacePicture};
    use super::*;

    #[test]
    fn a_figure_holds_each_panel_with_its_own_legend() {
        let panels = [
            Panel::Space(SpacePicture {
                title: "space".into(),
                bits: 32,
                bands: vec![Band {
                    start: 0x1000,
                    end: 0x2000,
                    kind: BandKind::Heap,
                    label: "heap".into(),
                }],
            }),
            Panel::Chart(Chart {
                title: "stack depth".into(),
                x_label: "time".into(),
                y_label: "committed pages".into(),
                series: vec![Series {
                    name: "thread 1".into(),
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                }],
            }),
        ];
        let svg = render_figure("demo", &panels);
        let doc = parse(&svg);
        assert_eq!(class(&doc, "panel").len(), 2);
        assert_eq!(texts(&doc, "figure-title"), ["demo"]);
        assert!(class(&doc, "band")
            .iter()
            .any(|b| b.attribute("data-kind") == Some("heap")));
        assert_eq!(
            class(&doc, "series")[0].attribute("data-name"),
            Some("thread 1")
        );
        assert_eq!(class(&doc, "legend-box").len(), 2);
        assert_eq!(class(&doc, "axis-label").len(), 4);
        // The second panel sits below the first.
        let ys: Vec<&str> = class(&doc, "panel")
            .iter()
            .map(|p| p.attribute("transform").unwrap())
            .collect();
        assert_ne!(ys[0], ys[1]);
        // No panels at all still makes a document.
        parse(&render_figure("empty", &[]));
    }
}
