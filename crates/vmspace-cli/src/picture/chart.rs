//! A line chart: x and y axes with round-numbered ticks, labels, one polyline per series
//! (dots on each point when there are few) and a legend naming the series.

use super::{clip, legend, line, px, text, Chart, Drawn, Swatch};
use svg::node::element::{Circle, Group, Polyline, Rectangle, Title};

const WIDTH: f64 = 940.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 56.0;
const PLOT_W: f64 = 600.0;
const PLOT_H: f64 = 320.0;
const LEGEND_X: f64 = LEFT + PLOT_W + 30.0;

/// Colours of the series, in order (Tableau 10).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// Renders a chart as a complete SVG document (the commands draw charts as panels of a
/// figure; the tests look at one chart on its own).
#[cfg(test)]
pub fn render_chart(c: &Chart) -> String {
    super::document(draw(c))
}

/// A round tick step (1, 2 or 5 times a power of ten) giving about `n` ticks over `range`.
fn nice_step(range: f64, n: f64) -> f64 {
    let raw = (range / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The axis range (widened to whole steps) and its step for data in `[lo, hi]`.
fn axis(lo: f64, hi: f64) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (lo, hi);
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()).max(1.0) {
        // One value: a range around it, a tenth of its size (at least 1) each way.
        let pad = (hi.abs() / 10.0).max(1.0);
        lo -= pad;
        hi += pad;
    }
    // Of the round steps giving 3 to 10 intervals, the one wasting the least room (ties: the
    // larger step), so 0..1040 runs to 1200 in steps of 200 rather than to 1500.
    let range = hi - lo;
    let widen = |step: f64| ((lo / step).floor() * step, (hi / step).ceil() * step);
    let k0 = (range / 10.0).log10().floor() as i32;
    let mut best: Option<(f64, f64, f64)> = None;
    for k in k0..=k0 + 2 {
        for m in [1.0, 2.0, 5.0] {
            let step = m * 10f64.powi(k);
            let (a, b) = widen(step);
            let intervals = ((b - a) / step).round();
            if !(3.0..=10.0).contains(&intervals) || !a.is_finite() || !b.is_finite() {
                continue;
            }
            if best.is_none_or(|(ba, bb, bs)| b - a < bb - ba || (b - a == bb - ba && step > bs)) {
                best = Some((a, b, step));
            }
        }
    }
    best.unwrap_or_else(|| {
        let step = nice_step(range, 5.0);
        let (a, b) = widen(step);
        (a, b, step)
    })
}

/// A tick value with as many decimals as the step needs.
fn tick_text(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        ((-step.log10()).ceil() as usize).min(9)
    };
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s.trim_start_matches(['-', '0', '.']).is_empty() {
        s[1..].to_string()
    } else {
        s
    }
}

/// Draws the chart in its own coordinates.
pub(crate) fn draw(c: &Chart) -> Drawn {
    let pts: Vec<Vec<(f64, f64)>> = c
        .series
        .iter()
        .map(|s| {
            // Beyond ±1e300 the axis arithmetic would overflow: such values are drawn there.
            s.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (x.clamp(-1e300, 1e300), y.clamp(-1e300, 1e300)))
                .collect()
        })
        .collect();
    let all = || pts.iter().flatten();
    let empty = all().next().is_none();
    let fold = |f: fn(&(f64, f64)) -> f64| {
        all()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (xl, xh) = if empty { (0.0, 1.0) } else { fold(|p| p.0) };
    let (yl, yh) = if empty { (0.0, 1.0) } else { fold(|p| p.1) };
    // Counts and sizes start at zero: keep zero on the y axis when all values are positive.
    let (x0, x1, xs) = axis(xl, xh);
    let (y0, y1, ys) = axis(yl.min(0.0), yh);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * PLOT_W;
    let sy = |y: f64| TOP + PLOT_H - (y - y0) / (y1 - y0) * PLOT_H;

    let mut g = Group::new().set("class", "chart");
    g = g.add(
        text(20.0, 26.0, &c.title)
            .set("font-size", 15)
            .set("font-weight", "bold")
            .set("class", "title"),
    );
    g = g.add(
        Rectangle::new()
            .set("x", LEFT)
            .set("y", TOP)
            .set("width", PLOT_W)
            .set("height", PLOT_H)
            .set("fill", "none")
            .set("stroke", "#cccccc"),
    );
    // Grid and ticks.
    let mut v = x0;
    let mut n = 0;
    while v <= x1 + xs * 1e-9 && n < 100 {
        let x = sx(v);
        g = g.add(line(x, TOP, x, TOP + PLOT_H, "#eeeeee"));
        g = g.add(line(x, TOP + PLOT_H, x, TOP + PLOT_H + 5.0, "black"));
        g = g.add(
            text(x, TOP + PLOT_H + 18.0, &tick_text(v, xs))
                .set("class", "tick")
                .set("text-anchor", "middle"),
        );
        v += xs;
        n += 1;
    }
    let mut v = y0;
    let mut n = 0;
    while v <= y1 + ys * 1e-9 && n < 100 {
        let y = sy(v);
        g = g.add(line(LEFT, y, LEFT + PLOT_W, y, "#eeeeee"));
        g = g.add(line(LEFT - 5.0, y, LEFT, y, "black"));
        g = g.add(
            text(LEFT - 8.0, y + 4.0, &tick_text(v, ys))
                .set("class", "tick")
                .set("text-anchor", "end"),
        );
        v += ys;
        n += 1;
    }
    g = g.add(line(LEFT, TOP + PLOT_H, LEFT + PLOT_W, TOP + PLOT_H, "black").set("class", "axis"));
    g = g.add(line(LEFT, TOP, LEFT, TOP + PLOT_H, "black").set("class", "axis"));
    g = g.add(
        text(LEFT + PLOT_W / 2.0, TOP + PLOT_H + 42.0, &c.x_label)
            .set("class", "axis-label")
            .set("text-anchor", "middle"),
    );
    let mid = TOP + PLOT_H / 2.0;
    g = g.add(
        text(24.0, mid, &c.y_label)
            .set("class", "axis-label")
            .set("text-anchor", "middle")
            .set("transform", format!("rotate(-90 24 {})", px(mid))),
    );
    if empty {
        g = g.add(
            text(LEFT + PLOT_W / 2.0, mid, "no data")
                .set("class", "no-data")
                .set("text-anchor", "middle")
                .set("fill", "#888888"),
        );
    }
    // Series.
    let mut entries = Vec::new();
    for (i, (s, p)) in c.series.iter().zip(&pts).enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        let coords: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{},{}", px(sx(x)), px(sy(y))))
            .collect();
        let mut sg = Group::new().set("class", "series-group");
        sg = sg.add(
            Polyline::new()
                .set("class", "series")
                .set("data-name", super::attr(&s.name))
                .set("data-points", p.len())
                .set("points", coords.join(" "))
                .set("fill", "none")
                .set("stroke", col)
                .set("stroke-width", 2)
                .set("stroke-linejoin", "round")
                .add(Title::new(s.name.clone())),
        );
        if p.len() <= 60 {
            for &(x, y) in p {
                sg = sg.add(
                    Circle::new()
                        .set("cx", px(sx(x)))
                        .set("cy", px(sy(y)))
                        .set("r", 2.5)
                        .set("fill", col)
                        .add(Title::new(format!("{}: ({x}, {y})", s.name))),
                );
            }
        }
        g = g.add(sg);
        entries.push((Swatch::Stroke(col), clip(&s.name, 26)));
    }
    if entries.is_empty() {
        entries.push((Swatch::Stroke("#888888"), "(no series)".into()));
    }
    let (lg, lh) = legend(LEGEND_X, TOP, &entries);
    g = g.add(lg);
    Drawn {
        title: c.title.clone(),
        group: g,
        width: WIDTH,
        height: HEIGHT.max(TOP + lh + 30.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.3, 5.0), 0.1);
        assert_eq!(axis(3.0, 97.0), (0.0, 100.0, 20.0));
        assert_eq!(axis(5.0, 5.0), (4.0, 6.0, 0.5));
        assert_eq!(axis(0.0, 1040.0), (0.0, 1200.0, 200.0));
        assert_eq!(axis(730.0, 901.0), (720.0, 920.0, 20.0));
        assert_eq!(axis(0.0, 1.0), (0.0, 1.0, 0.2));
        let (lo, hi, step) = axis(-1e200, -1e200);
        assert!(lo < -1e200 && hi > -1e200 && step > 0.0 && (hi - lo) / step <= 10.0);
    }

    #[test]
    fn tick_text_uses_the_decimals_the_step_needs() {
        assert_eq!(tick_text(20.0, 20.0), "20");
        assert_eq!(tick_text(0.30000000000000004, 0.1), "0.3");
        assert_eq!(tick_text(-0.0, 0.5), "0.0");
        assert_eq!(tick_text(-1e-17, 0.5), "0.0");
    }

    use super::super::testutil::{class, parse, texts};
    use super::super::Series;

    fn chart(series: Vec<Series>) -> Chart {
        Chart {
            title: "heap fragmentation".into(),
            x_label: "time (operations)".into(),
            y_label: "free bytes / largest free block".into(),
            series,
        }
    }

    #[test]
    fn a_chart_has_its_series_legend_axis_labels_and_ticks() {
        let c = chart(vec![
            Series {
                name: "heap A".into(),
                points: (0..100).map(|i| (i as f64, (i * i) as f64)).collect(),
            },
            Series {
                name: "heap <B>".into(),
                points: vec![(0.0, 5.0), (50.0, 2500.0), (99.0, 10.0)],
            },
        ]);
        let svg = render_chart(&c);
        let doc = parse(&svg);
        let series = class(&doc, "series");
        let names: Vec<_> = series
            .iter()
            .map(|s| s.attribute("data-name").unwrap())
            .collect();
        assert_eq!(names, ["heap A", "heap <B>"]);
        assert_eq!(series[0].attribute("data-points"), Some("100"));
        assert_eq!(series[1].attribute("points").unwrap().split(' ').count(), 3);
        assert_eq!(texts(&doc, "legend"), ["heap A", "heap <B>"]);
        assert_eq!(
            texts(&doc, "axis-label"),
            ["time (operations)", "free bytes / largest free block"]
        );
        let ticks = texts(&doc, "tick");
        assert!(ticks.len() >= 8, "{ticks:?}");
        assert!(
            ticks.contains(&"0".to_string()) && ticks.contains(&"10000".to_string()),
            "{ticks:?}"
        );
        // Every point lies within the plot area.
        for s in &series {
            for p in s.attribute("points").unwrap().split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT - 0.01..=LEFT + PLOT_W + 0.01).contains(&x), "{x}");
                assert!((TOP - 0.01..=TOP + PLOT_H + 0.01).contains(&y), "{y}");
            }
        }
    }

    #[test]
    fn degenerate_charts_render() {
        let one = |pts: Vec<(f64, f64)>| Series {
            name: "s".into(),
            points: pts,
        };
        for c in [
            chart(vec![]),
            chart(vec![one(vec![])]),
            chart(vec![one(vec![(3.0, 7.0)])]),
            chart(vec![one(vec![(1.0, 1.0); 5])]),
            chart(vec![one(vec![(f64::NAN, 1.0), (2.0, f64::INFINITY)])]),
            chart(vec![one(vec![(-1e300, -1e300), (1e300, 1e300)])]),
            chart(vec![one(vec![(0.0, 1e-12), (1.0, 2e-12)])]),
        ] {
            let svg = render_chart(&c);
            let doc = parse(&svg);
            assert!(!class(&doc, "legend").is_empty());
            assert_eq!(class(&doc, "axis-label").len(), 2);
            assert!(texts(&doc, "tick").len() >= 2, "{svg}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any points (NaN, infinities, huge, tiny, equal) give a well-formed chart whose
        /// finite points all lie in the plot area and whose text holds no NaN or infinity.
        #[test]
        fn any_points_stay_in_the_plot(
            series in proptest::collection::vec(
                proptest::collection::vec(
                    (
                        proptest::prop_oneof![proptest::num::f64::ANY, -1e6f64..1e6],
                        proptest::prop_oneof![proptest::num::f64::ANY, -1e6f64..1e6],
                    ),
                    0..30,
                ),
                0..4,
            )
        ) {
            let c = chart(series.iter().enumerate().map(|(i, p)| Series {
                name: format!("s{i}"),
                points: p.clone(),
            }).collect());
            let svg = render_chart(&c);
            let doc = parse(&svg);
            proptest::prop_assert!(!svg.contains("NaN") && !svg.contains("inf"));
            let lines = class(&doc, "series");
            proptest::prop_assert_eq!(lines.len(), series.len());
            for (l, p) in lines.iter().zip(&series) {
                let finite = p.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).count();
                let pts: Vec<&str> = l
                    .attribute("points")
                    .unwrap()
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .collect();
                proptest::prop_assert_eq!(pts.len(), finite);
                for p in pts {
                    let (x, y) = p.split_once(',').unwrap();
                    let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                    proptest::prop_assert!((LEFT - 0.01..=LEFT + PLOT_W + 0.01).contains(&x), "x {}", x);
                    proptest::prop_assert!((TOP - 0.01..=TOP + PLOT_H + 0.01).contains(&y), "y {}", y);
                }
            }
        }
    }
}
