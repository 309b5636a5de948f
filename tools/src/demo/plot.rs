//! A small line plot drawn with the `image` crate alone (the demo's trajectory plot): a white
//! canvas, axes with round-numbered ticks, a legend, and one or more series.

use ::image::{Rgb, RgbImage};

use super::overlay::{draw_segment, draw_text_on, text_height, text_width};

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A thick line through the points.
    Line,
    /// A dot at each point, joined by a thin line.
    Dots,
    /// A ring around each point, not joined.
    Rings,
}

/// One series of a plot. Points are joined only where x steps by at most 1 (one frame), so a
/// gap in the data stays a gap in the line.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub colour: [u8; 3],
    pub mark: Mark,
    pub points: Vec<[f64; 2]>,
}

/// What the plot says around the data.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub title: String,
    pub x: String,
    pub y: String,
    /// Whether to list the series (a swatch and its label, one row each) under the title.
    pub legend: bool,
}

const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [225, 225, 225];

/// Ticks for `lo..=hi`: round numbers (1, 2 or 5 times a power of ten apart), about `n` of them.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    let span = (hi - lo).max(1e-9);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick's label: no more decimals than the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let text = format!("{v:.decimals$}");
    if text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        "0".into()
    } else {
        text
    }
}

/// Draws `series` on a `width`×`height` canvas. Empty series are listed in the legend but draw
/// nothing; with no points at all the axes span 0 to 1.
pub fn plot(width: u32, height: u32, labels: &Labels, series: &[Series]) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let unit = (width.max(height) as f32 / 400.0).max(1.0);
    let scale = (1.5 * unit).round().max(1.0) as u32;
    let th = text_height(scale);
    let (left, right) = (text_width("-00000", scale) + 3 * th / 2, 2 * th);
    let rows = if labels.legend {
        series.len() as u32
    } else {
        0
    };
    let top = 2 * th + (th + scale) * rows + th / 2;
    let bottom = 3 * th;
    let (x0, x1) = (
        left as f64,
        width.saturating_sub(right).max(left + 1) as f64,
    );
    let (y0, y1) = (
        top as f64,
        height.saturating_sub(bottom).max(top + 1) as f64,
    );

    let points = || series.iter().flat_map(|s| s.points.iter());
    let finite = |p: &&[f64; 2]| p[0].is_finite() && p[1].is_finite();
    let (mut xlo, mut xhi, mut ylo, mut yhi) = points().filter(finite).fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), p| (a.min(p[0]), b.max(p[0]), c.min(p[1]), d.max(p[1])),
    );
    if !xlo.is_finite() {
        (xlo, xhi, ylo, yhi) = (0.0, 1.0, 0.0, 1.0);
    }
    if xhi - xlo < 1e-9 {
        (xlo, xhi) = (xlo - 0.5, xhi + 0.5);
    }
    let pad = ((yhi - ylo) * 0.08).max(1e-6);
    (ylo, yhi) = (ylo - pad, yhi + pad);
    let px = |x: f64| (x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)) as f32;
    let py = |y: f64| (y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)) as f32;

    // Grid and tick labels.
    let yt = ticks(ylo, yhi, 6);
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    for &v in &yt {
        let y = py(v);
        draw_segment(&mut img, [x0 as f32, y], [x1 as f32, y], 0.5, GRID);
        let text = tick_label(v, ystep);
        let tx = (x0 as u32).saturating_sub(text_width(&text, scale) + scale);
        let ty = (y as u32).saturating_sub(th / 2);
        draw_text_on(&mut img, tx, ty, &text, scale, INK, None);
    }
    let xt = ticks(xlo, xhi, 8);
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    for &v in &xt {
        let x = px(v);
        draw_segment(&mut img, [x, y0 as f32], [x, y1 as f32], 0.5, GRID);
        let text = tick_label(v, xstep);
        let tx = (x as u32).saturating_sub(text_width(&text, scale) / 2);
        draw_text_on(&mut img, tx, y1 as u32 + scale, &text, scale, INK, None);
    }
    // Axes.
    let (a, b, c) = (
        [x0 as f32, y0 as f32],
        [x0 as f32, y1 as f32],
        [x1 as f32, y1 as f32],
    );
    draw_segment(&mut img, a, b, unit * 0.6, INK);
    draw_segment(&mut img, b, c, unit * 0.6, INK);
    // Axis titles and the plot's title.
    let xl = (((x0 + x1) / 2.0) as u32).saturating_sub(text_width(&labels.x, scale) / 2);
    draw_text_on(
        &mut img,
        xl,
        y1 as u32 + th + 2 * scale,
        &labels.x,
        scale,
        INK,
        None,
    );
    draw_text_on(&mut img, scale, scale, &labels.title, scale, INK, None);
    draw_text_on(&mut img, scale, th + scale, &labels.y, scale, INK, None);

    // Legend, one row per series under the title.
    for (i, s) in series.iter().enumerate().filter(|_| labels.legend) {
        let y = 2 * th + scale + (th + scale) * i as u32;
        let mid = (y + th / 2) as f32;
        let sx = x0 as f32;
        let sw = 8.0 * scale as f32;
        draw_mark(&mut img, s.mark, [sx, mid], [sx + sw, mid], s.colour, unit);
        let tx = (sx + sw) as u32 + 2 * scale;
        draw_text_on(&mut img, tx, y, &s.label, scale, INK, None);
    }

    // The data, in the order given (later series on top).
    for s in series {
        let pts: Vec<[f64; 2]> = s.points.iter().copied().filter(|p| finite(&p)).collect();
        let joined = |a: &[f64; 2], b: &[f64; 2]| b[0] > a[0] && b[0] - a[0] <= 1.0 + 1e-9;
        match s.mark {
            Mark::Line | Mark::Dots => {
                let r = if s.mark == Mark::Line {
                    1.1 * unit
                } else {
                    0.45 * unit
                };
                for w in pts.windows(2) {
                    if joined(&w[0], &w[1]) {
                        let a = [px(w[0][0]), py(w[0][1])];
                        let b = [px(w[1][0]), py(w[1][1])];
                        draw_segment(&mut img, a, b, r, s.colour);
                    }
                }
                for p in &pts {
                    let q = [px(p[0]), py(p[1])];
                    let dot = if s.mark == Mark::Dots {
                        1.6 * unit
                    } else {
                        1.1 * unit
                    };
                    draw_segment(&mut img, q, q, dot, s.colour);
                }
            }
            Mark::Rings => {
                for p in &pts {
                    ring(
                        &mut img,
                        [px(p[0]), py(p[1])],
                        3.2 * unit,
                        0.8 * unit,
                        s.colour,
                    );
                }
            }
        }
    }
    img
}

fn draw_mark(img: &mut RgbImage, mark: Mark, a: [f32; 2], b: [f32; 2], c: [u8; 3], unit: f32) {
    let mid = [(a[0] + b[0]) / 2.0, a[1]];
    match mark {
        Mark::Line => draw_segment(img, a, b, 1.1 * unit, c),
        Mark::Dots => {
            draw_segment(img, a, b, 0.45 * unit, c);
            draw_segment(img, mid, mid, 1.6 * unit, c);
        }
        Mark::Rings => ring(img, mid, 3.2 * unit, 0.8 * unit, c),
    }
}

/// A circle of radius `r` and line width `2 * half`.
fn ring(img: &mut RgbImage, c: [f32; 2], r: f32, half: f32, colour: [u8; 3]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let reach = (r + half).ceil() as i64;
    let (cx, cy) = (c[0].round() as i64, c[1].round() as i64);
    for y in (cy - reach).max(0)..=(cy + reach).min(h - 1) {
        for x in (cx - reach).max(0)..=(cx + reach).min(w - 1) {
            let d = (x as f32 - c[0]).hypot(y as f32 - c[1]);
            if (d - r).abs() <= half {
                img.put_pixel(x as u32, y as u32, Rgb(colour));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(img: &RgbImage, c: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == c).count()
    }

    #[test]
    fn ticks_are_round_numbers_inside_the_range() {
        // 47 / 8 is about 6: the next round step is 10.
        assert_eq!(ticks(0.0, 47.0, 8), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        assert_eq!(
            ticks(0.0, 47.0, 10),
            vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0]
        );
        assert_eq!(ticks(312.0, 398.0, 6), vec![320.0, 340.0, 360.0, 380.0]);
        let small = ticks(0.11, 0.19, 4);
        assert!(
            small.len() >= 3 && small.iter().all(|v| (0.11..=0.19).contains(v)),
            "{small:?}"
        );
        assert!(ticks(f64::NAN, 1.0, 4).is_empty());
        assert_eq!(tick_label(0.15000001, 0.05), "0.15");
        assert_eq!(tick_label(-0.0, 0.5), "0");
        assert_eq!(tick_label(340.0, 20.0), "340");
    }

    #[test]
    fn both_series_are_drawn_each_in_its_colour_and_a_gap_stays_open() {
        let raw: Vec<[f64; 2]> = (0..40)
            .filter(|&f| !(18..24).contains(&f))
            .map(|f| {
                [
                    f as f64,
                    300.0 + 10.0 * f as f64 + if f % 2 == 0 { 25.0 } else { -25.0 },
                ]
            })
            .collect();
        let smooth: Vec<[f64; 2]> = (0..40)
            .map(|f| [f as f64, 300.0 + 10.0 * f as f64])
            .collect();
        let (red, blue) = ([220, 60, 40], [20, 90, 200]);
        let labels = Labels {
            title: "track 1".into(),
            x: "frame".into(),
            y: "x px".into(),
            legend: true,
        };
        let series = [
            Series {
                label: "raw".into(),
                colour: red,
                mark: Mark::Dots,
                points: raw,
            },
            Series {
                label: "smoothed".into(),
                colour: blue,
                mark: Mark::Line,
                points: smooth,
            },
        ];
        let img = plot(800, 400, &labels, &series);
        assert_eq!(img.dimensions(), (800, 400));
        assert!(count(&img, red) > 300, "raw drawn: {}", count(&img, red));
        assert!(
            count(&img, blue) > 300,
            "smoothed drawn: {}",
            count(&img, blue)
        );
        // Raw has no points in frames 18-23: the column half-way through the gap holds the
        // smoothed line (and its legend) but no raw line.
        let only_data = |c: [u8; 3], x0: u32, x1: u32| {
            (x0..x1)
                .flat_map(|x| (120..400).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0 == c)
                .count()
        };
        // Frame 20.5 of 0-39 sits at this fraction of the plotting area.
        let frame = |f: f64| {
            let left = text_width("-00000", 3) + 3 * text_height(3) / 2;
            let right = 800 - 2 * text_height(3);
            (left as f64 + f / 39.0 * (right - left) as f64) as u32
        };
        assert_eq!(
            only_data(red, frame(20.3), frame(20.7)),
            0,
            "a gap in raw is not bridged"
        );
        assert!(
            only_data(blue, frame(20.3), frame(20.7)) > 0,
            "the smoothed line runs on"
        );
        assert!(
            only_data(red, frame(10.3), frame(10.7)) > 0,
            "raw is joined between frames"
        );
    }

    #[test]
    fn an_empty_plot_still_has_its_axes() {
        let img = plot(
            200,
            120,
            &Labels::default(),
            &[Series {
                label: "none".into(),
                colour: [1, 2, 3],
                mark: Mark::Rings,
                points: vec![],
            }],
        );
        assert!(count(&img, INK) > 100);
        // A single point is fine too.
        let one = [Series {
            label: "one".into(),
            colour: [1, 2, 3],
            mark: Mark::Line,
            points: vec![[3.0, 7.0], [f64::NAN, 1.0]],
        }];
        let img = plot(200, 120, &Labels::default(), &one);
        assert!(count(&img, [1, 2, 3]) > 0);
    }
}
