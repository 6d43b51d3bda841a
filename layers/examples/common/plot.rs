//! A two-panel SVG figure written by hand: learning curves (mean over runs with a
//! band, log scale) on the left, grouped bars with error bars on the right.

use std::fmt::Write as _;

/// One learning curve: points `(x, mean, band low, band high)`.
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// CSS colour.
    pub colour: &'static str,
    /// `(x, mean, low, high)`, in increasing `x`.
    pub points: Vec<(f64, f64, f64, f64)>,
    /// Drawn dashed (for a reference that is not trained).
    pub dashed: bool,
}

/// One series of bars: a value and an error bar per group.
pub struct BarSeries {
    /// Legend text.
    pub label: String,
    /// CSS colour.
    pub colour: &'static str,
    /// `(value, error)` per group, in the order of [`Figure::groups`].
    pub values: Vec<(f64, f64)>,
}

/// What the figure shows.
pub struct Figure {
    /// The title above both panels.
    pub title: String,
    /// Left panel: axis labels and curves.
    pub x_label: String,
    /// Left panel's y axis (log scale).
    pub y_label: String,
    /// The learning curves.
    pub curves: Vec<Curve>,
    /// Right panel: its caption, group names and series.
    pub bars_caption: String,
    /// Names of the bar groups.
    pub groups: Vec<String>,
    /// The bar series.
    pub bars: Vec<BarSeries>,
}

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Decades `(low, high)` (powers of ten) spanning the positive finite `values`.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (1e-3, 1.0);
    }
    let llo = lo.log10().floor();
    (llo, hi.log10().ceil().max(llo + 1.0))
}

/// Grid lines and labels at 1, 2 and 5 times every power of ten of a log axis.
fn log_ticks(
    s: &mut String,
    (x0, pw): (f64, f64),
    (llo, lhi): (f64, f64),
    ymap: impl Fn(f64) -> f64,
) {
    let mut e = llo;
    while e <= lhi + 1e-9 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(e);
            if v.log10() > lhi + 1e-9 {
                break;
            }
            let y = ymap(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 + pw,
                x0 - 5.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        e += 1.0;
    }
}

fn fmt_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let digits = (-v.log10()).ceil() as usize;
        format!("{v:.digits$}")
    }
}

impl Figure {
    /// The figure as a standalone SVG document.
    pub fn svg(&self) -> String {
        let (w, h) = (1200.0, 520.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            w / 2.0,
            esc(&self.title)
        );
        self.curves_panel(&mut s, (70.0, 50.0, 500.0, 360.0));
        self.bars_panel(&mut s, (660.0, 50.0, 510.0, 360.0));
        self.legend(&mut s, 70.0, 460.0);
        let _ = writeln!(s, "</svg>");
        s
    }

    fn curves_panel(&self, s: &mut String, (x0, y0, pw, ph): (f64, f64, f64, f64)) {
        let (llo, lhi) = log_range(
            self.curves
                .iter()
                .flat_map(|c| c.points.iter().flat_map(|p| [p.1, p.2, p.3])),
        );
        let max_x = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.0))
            .fold(0.0f64, f64::max);
        let ymap = |v: f64| y0 + ph - (v.max(1e-12).log10() - llo) / (lhi - llo) * ph;
        let max_x = max_x.max(1.0);
        let xmap = |x: f64| x0 + x / max_x * pw;
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        log_ticks(s, (x0, pw), (llo, lhi), ymap);
        for i in 0..=5 {
            let v = max_x * i as f64 / 5.0;
            let x = xmap(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                y0 + ph,
                y0 + ph + 5.0,
                y0 + ph + 18.0,
                v.round()
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + pw / 2.0,
            y0 + ph + 36.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            y0 + ph / 2.0,
            y0 + ph / 2.0,
            esc(&self.y_label)
        );
        for c in &self.curves {
            let pts: Vec<&(f64, f64, f64, f64)> = c
                .points
                .iter()
                .filter(|p| p.1.is_finite() && p.2.is_finite() && p.3.is_finite())
                .collect();
            if pts.is_empty() {
                continue;
            }
            // The band: along the upper edge, back along the lower one.
            let mut band: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", xmap(p.0), ymap(p.3)))
                .collect();
            band.extend(
                pts.iter()
                    .rev()
                    .map(|p| format!("{:.1},{:.1}", xmap(p.0), ymap(p.2))),
            );
            let _ = writeln!(
                s,
                r#"<polygon fill="{}" fill-opacity="0.18" stroke="none" points="{}"/>"#,
                c.colour,
                band.join(" ")
            );
            let line: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", xmap(p.0), ymap(p.1)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2"{} points="{}"/>"#,
                c.colour,
                if c.dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                },
                line.join(" ")
            );
        }
    }

    fn bars_panel(&self, s: &mut String, (bx0, by0, bw, bh): (f64, f64, f64, f64)) {
        // Log scale: the values span more than a decade (the untrained reference on
        // skewed data), and the trained methods' gaps are ratios.
        let (llo, lhi) = log_range(self.bars.iter().flat_map(|b| {
            b.values
                .iter()
                .flat_map(|&(v, e)| [v, v + e.max(0.0), v - e.max(0.0)])
        }));
        let ymap = |v: f64| by0 + bh - (v.max(1e-12).log10() - llo) / (lhi - llo) * bh;
        let _ = writeln!(
            s,
            r##"<rect x="{bx0}" y="{by0}" width="{bw}" height="{bh}" fill="none" stroke="#333"/>"##
        );
        log_ticks(s, (bx0, bw), (llo, lhi), ymap);
        let groups = self.groups.len().max(1);
        let gw = bw / groups as f64;
        let bar = gw * 0.84 / self.bars.len().max(1) as f64;
        for (g, name) in self.groups.iter().enumerate() {
            let gx = bx0 + gw * g as f64 + gw * 0.08;
            for (m, series) in self.bars.iter().enumerate() {
                let (v, e) = series.values.get(g).copied().unwrap_or((f64::NAN, 0.0));
                let top_y = if v.is_finite() && v > 0.0 {
                    ymap(v)
                } else {
                    by0 + bh
                };
                let height = by0 + bh - top_y;
                let x = gx + bar * m as f64;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{top_y:.1}" width="{:.1}" height="{height:.1}" fill="{}"><title>{}: {v:.5} ± {e:.5}</title></rect>"#,
                    bar * 0.9,
                    series.colour,
                    esc(&series.label),
                );
                if e.is_finite() && e > 0.0 {
                    let cx = x + bar * 0.45;
                    let (ya, yb) = (ymap(v - e).min(by0 + bh), ymap(v + e));
                    let _ = writeln!(
                        s,
                        r##"<line x1="{cx:.1}" y1="{ya:.1}" x2="{cx:.1}" y2="{yb:.1}" stroke="#000" stroke-width="1.2"/>"##
                    );
                }
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bx0 + gw * (g as f64 + 0.5),
                by0 + bh + 18.0,
                esc(name)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bx0 + bw / 2.0,
            by0 + bh + 36.0,
            esc(&self.bars_caption)
        );
    }

    /// One legend for both panels (the curves' labels and colours, which the bars
    /// share), in rows of three below the panels.
    fn legend(&self, s: &mut String, x0: f64, y0: f64) {
        for (i, c) in self.curves.iter().enumerate() {
            let (col, row) = (i % 3, i / 3);
            let (x, y) = (x0 + 370.0 * col as f64, y0 + 20.0 * row as f64);
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="3"{}/><text x="{:.1}" y="{y:.1}">{}</text>"#,
                y - 4.0,
                x + 24.0,
                y - 4.0,
                c.colour,
                if c.dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                },
                x + 30.0,
                esc(&c.label)
            );
        }
    }
}
