//! Line plots as standalone SVG: axes with ticks, one polyline per curve, a legend. Readable
//! without colour (each curve also has its own dash pattern).

use std::fmt::Write;

/// One labelled curve of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A plot of curves over shared axes.
#[derive(Debug, Clone)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic y axis; points with y ≤ 0 are left out (a rate of zero has no logarithm).
    pub log_y: bool,
    pub curves: Vec<Curve>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const DASHES: [&str; 6] = ["", "8 4", "2 3", "10 3 2 3", "4 4", "1 6"];
const COLOURS: [&str; 6] = [
    "#000000", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b",
];

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The data range drawn and where it lands on the page.
#[derive(Debug, Clone, Copy)]
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
    const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

    /// The smallest frame holding every point (whole decades on a log axis).
    fn around<'a>(points: impl Iterator<Item = &'a (f64, f64)>, log_y: bool) -> Self {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if log_y {
            (y0, y1) = (y0.floor(), y1.ceil());
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-12 {
            y1 = y0 + 1.0;
        }
        Frame { x0, x1, y0, y1 }
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * Self::PLOT_W
    }

    fn py(&self, y: f64) -> f64 {
        TOP + (1.0 - (y - self.y0) / (self.y1 - self.y0)) * Self::PLOT_H
    }
}

impl LinePlot {
    /// The plot as an SVG document.
    pub fn to_svg(&self) -> String {
        let points: Vec<Vec<(f64, f64)>> = self
            .curves
            .iter()
            .map(|c| {
                c.points
                    .iter()
                    .filter(|&&(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0))
                    .map(|&(x, y)| (x, if self.log_y { y.log10() } else { y }))
                    .collect()
            })
            .collect();
        let frame = Frame::around(points.iter().flatten(), self.log_y);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        self.axes(&mut svg, frame);
        self.lines(&mut svg, frame, &points);
        svg.push_str("</svg>\n");
        svg
    }

    /// Title, frame, ticks and axis labels.
    fn axes(&self, svg: &mut String, frame: Frame) {
        let (plot_w, plot_h) = (Frame::PLOT_W, Frame::PLOT_H);
        let _ = writeln!(
            svg,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
            LEFT + plot_w / 2.0,
            escape(&self.title)
        );
        let _ = writeln!(
            svg,
            r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
        );
        for i in 0..=5 {
            let x = frame.x0 + (frame.x1 - frame.x0) * f64::from(i) / 5.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="black"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"#,
                frame.px(x),
                TOP + plot_h,
                TOP + plot_h + 5.0,
                TOP + plot_h + 20.0,
                format_tick(x)
            );
        }
        let y_ticks: Vec<f64> = if self.log_y {
            let decades = (frame.y1 - frame.y0).round() as i64;
            let step = usize::try_from((decades / 8).max(1)).unwrap_or(1);
            (0..=decades)
                .step_by(step)
                .map(|d| frame.y0 + d as f64)
                .collect()
        } else {
            (0..=5)
                .map(|i| frame.y0 + (frame.y1 - frame.y0) * f64::from(i) / 5.0)
                .collect()
        };
        for y in y_ticks {
            let label = if self.log_y {
                format!("1e{}", y.round() as i64)
            } else {
                format_tick(y)
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{0}" y1="{2}" x2="{1}" y2="{2}" stroke="black"/><text x="{3}" y="{4}" text-anchor="end">{label}</text>"#,
                LEFT - 5.0,
                LEFT,
                frame.py(y),
                LEFT - 8.0,
                frame.py(y) + 4.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 15.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{0}" text-anchor="middle" transform="rotate(-90 20 {0})">{1}</text>"#,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
    }

    /// One polyline per curve and its legend entry.
    fn lines(&self, svg: &mut String, frame: Frame, points: &[Vec<(f64, f64)>]) {
        for (i, (curve, pts)) in self.curves.iter().zip(points).enumerate() {
            let (dash, colour) = (DASHES[i % DASHES.len()], COLOURS[i % COLOURS.len()]);
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x), frame.py(y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
                path.join(" ")
            );
            let ly = TOP + 20.0 + 20.0 * i as f64;
            let lx = WIDTH - RIGHT + 15.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{}</text>"#,
                lx + 30.0,
                lx + 36.0,
                ly + 4.0,
                escape(&curve.label)
            );
        }
    }
}

/// A tick label with as few digits as it needs.
fn format_tick(v: f64) -> String {
    if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_curve_and_leaves_out_what_a_log_axis_cannot_show() {
        let plot = LinePlot {
            title: "a < b".into(),
            x_label: "km".into(),
            y_label: "bit/s".into(),
            log_y: true,
            curves: vec![
                Curve {
                    label: "one".into(),
                    points: vec![(0.0, 10.0), (1.0, 1000.0), (2.0, 0.0)],
                },
                Curve {
                    label: "two".into(),
                    points: vec![(0.0, 5.0), (2.0, 50.0)],
                },
            ],
        };
        let svg = plot.to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b"));
        // The zero-rate point is not drawn: the first curve has two points.
        let first = svg.lines().find(|l| l.contains("<polyline")).unwrap();
        let pts = first.split("points=\"").nth(1).unwrap();
        assert_eq!(pts.split(' ').count(), 2, "{first}");
        assert!(svg.contains(">1e0<") && svg.contains(">1e3<"));
    }
}
