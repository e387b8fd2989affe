//! The few charts greentrain draws: lines (accuracy against energy, energy per
//! epoch, best-so-far curves of a sweep) and bars with error bars (a bench's
//! precisions side by side).
//!
//! A [`Figure`] is one or more panels side by side. [`render`] returns SVG
//! (for papers) and PNG (for a quick look) as bytes and does no I/O, so the
//! caller writes them the way it writes everything else (atomically).
//! The text uses an embedded DejaVu Sans, so a PNG looks the same on every
//! machine and needs no system fonts.

use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One named line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A panel of lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Lines {
    /// Panel title.
    pub title: String,
    /// X axis label, with its unit.
    pub x_label: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// The lines; the legend beside the panel names each.
    pub series: Vec<Series>,
    /// Draw as a staircase (a best-so-far curve holds its value until the next point).
    pub step: bool,
}

/// One bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Label under the bar.
    pub label: String,
    /// Height.
    pub value: f64,
    /// Half-length of the error bar (for example a standard deviation).
    pub error: Option<f64>,
    /// Text above the bar (for example `98.47 ± 0.06`).
    pub text: String,
}

/// A panel of bars, starting from zero (a bar that starts elsewhere misleads).
#[derive(Clone, Debug, PartialEq)]
pub struct Bars {
    /// Panel title.
    pub title: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
}

/// A panel of points, some of them joined and ringed (a Pareto front
/// among all the trials of a sweep).
#[derive(Clone, Debug, PartialEq)]
pub struct Scatter {
    /// Panel title.
    pub title: String,
    /// X axis label, with its unit.
    pub x_label: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// Every point, as a dot.
    pub points: Series,
    /// The marked points, joined in drawing order and ringed.
    pub marked: Series,
}

/// One panel of a figure.
#[derive(Clone, Debug, PartialEq)]
pub enum Panel {
    /// Lines.
    Lines(Lines),
    /// Bars with error bars.
    Bars(Bars),
    /// Points with some marked.
    Scatter(Scatter),
}

/// Panels side by side under a title, with an optional footnote (where the
/// numbers came from: measured, integrated or estimated).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Title at the top.
    pub title: String,
    /// Panels, left to right.
    pub panels: Vec<Panel>,
    /// Footnote at the bottom.
    pub note: Option<String>,
}

/// A rendered figure.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// SVG document.
    pub svg: String,
    /// PNG file bytes.
    pub png: Vec<u8>,
    /// Size in pixels.
    pub size: (u32, u32),
}

/// Why a figure could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The embedded font did not load.
    #[error("the embedded font could not be loaded")]
    Font,
    /// Drawing failed.
    #[error("drawing {what} failed: {why}")]
    Draw {
        /// The panel or element.
        what: String,
        /// The backend's message.
        why: String,
    },
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

const PANEL_W: u32 = 600;
const LEGEND_W: u32 = 230;
const PANEL_H: u32 = 460;
const TITLE_H: u32 = 44;
const NOTE_H: u32 = 22;
const FONT: &str = "sans-serif";

/// Tableau 10: distinguishable, and readable when printed in greyscale order.
const COLOURS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    let (r, g, b) = COLOURS[i % COLOURS.len()];
    RGBColor(r, g, b)
}

fn fonts() -> Result<(), PlotError> {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *OK.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

fn width(fig: &Figure) -> u32 {
    fig.panels.iter().map(panel_width).sum::<u32>().max(PANEL_W)
}

/// Figure size in pixels.
pub fn size(fig: &Figure) -> (u32, u32) {
    let lines = note_lines(fig).len() as u32;
    (width(fig), TITLE_H + PANEL_H + lines * NOTE_H)
}

/// The note, wrapped at spaces to the figure's width (about 7.6 px per
/// character at 14 px).
fn note_lines(fig: &Figure) -> Vec<String> {
    let Some(note) = &fig.note else {
        return vec![];
    };
    let max = ((width(fig) - 28) as f64 / 7.6) as usize;
    let mut lines = vec![];
    let mut cur = String::new();
    for word in note.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > max {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

fn panel_width(p: &Panel) -> u32 {
    match p {
        Panel::Lines(l) if !l.series.is_empty() => PANEL_W + LEGEND_W,
        Panel::Scatter(_) => PANEL_W + LEGEND_W,
        Panel::Bars(b) => PANEL_W.max(110 * b.bars.len() as u32 + 120),
        _ => PANEL_W,
    }
}

/// Renders a figure to SVG and PNG.
pub fn render(fig: &Figure) -> Result<Rendered, PlotError> {
    fonts()?;
    let size = size(fig);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root, fig)?;
        root.present().map_err(|e| err("the SVG", e))?;
    }
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root, fig)?;
        root.present().map_err(|e| err("the PNG", e))?;
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, size.0, size.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| PlotError::Png(e.to_string()))?;
        w.write_image_data(&rgb)
            .map_err(|e| PlotError::Png(e.to_string()))?;
    }
    Ok(Rendered { svg, png, size })
}

fn err<E: std::fmt::Debug>(what: &str, e: E) -> PlotError {
    PlotError::Draw {
        what: what.to_string(),
        why: format!("{e:?}"),
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| err("the background", e))?;
    let (_, h) = root.dim_in_pixel();
    let (top, rest) = root.split_vertically(TITLE_H);
    top.draw(&Text::new(
        fig.title.clone(),
        (14, 12),
        (FONT, 22).into_font().color(&BLACK),
    ))
    .map_err(|e| err("the title", e))?;
    let notes = note_lines(fig);
    let (mut body, foot) = rest.split_vertically(h - TITLE_H - notes.len() as u32 * NOTE_H);
    for (i, line) in notes.into_iter().enumerate() {
        foot.draw(&Text::new(
            line,
            (14, 4 + (i as u32 * NOTE_H) as i32),
            (FONT, 14).into_font().color(&RGBColor(70, 70, 70)),
        ))
        .map_err(|e| err("the note", e))?;
    }
    for (i, p) in fig.panels.iter().enumerate() {
        let area = if i + 1 == fig.panels.len() {
            body.clone()
        } else {
            let (a, b) = body.split_horizontally(panel_width(p));
            body = b;
            a
        };
        match p {
            Panel::Lines(l) => draw_lines(&area, l)?,
            Panel::Bars(b) => draw_bars(&area, b)?,
            Panel::Scatter(p) => draw_scatter(&area, p)?,
        }
    }
    Ok(())
}

/// Axis tick text: 3 significant figures, no trailing zeros.
pub fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 5) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn span(vals: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * hi.abs().max(1.0) {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * pad;
    (lo - d, hi + d)
}

/// A best-so-far curve: each value holds until the next x.
fn staircase(p: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(p.len() * 2);
    for (i, &(x, y)) in p.iter().enumerate() {
        if i > 0 {
            out.push((x, p[i - 1].1));
        }
        out.push((x, y));
    }
    out
}

fn draw_lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Lines) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let what = format!("the panel '{}'", p.title);
    let (plot_area, legend) = if !p.series.is_empty() {
        let w = area.dim_in_pixel().0;
        let (a, b) = area.split_horizontally(w.saturating_sub(LEGEND_W));
        (a, Some(b))
    } else {
        (area.clone(), None)
    };
    let xs = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0));
    let ys = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1));
    let mut chart = xy_chart(&plot_area, [&p.title, &p.x_label, &p.y_label], xs, ys)?;
    for (i, s) in p.series.iter().enumerate() {
        let c = colour(i);
        let pts = if p.step {
            staircase(&s.points)
        } else {
            s.points.clone()
        };
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| err(&what, e))?;
        if s.points.len() <= 60 {
            chart
                .draw_series(s.points.iter().map(|&q| Circle::new(q, 3, c.filled())))
                .map_err(|e| err(&what, e))?;
        }
    }
    if let Some(lg) = legend {
        draw_legend(&lg, &p.series, &what)?;
    }
    Ok(())
}

type XyChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Axes and grid for x-y data; `text` is the title and the two axis labels.
fn xy_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    text: [&str; 3],
    xs: impl Iterator<Item = f64>,
    ys: impl Iterator<Item = f64>,
) -> Result<XyChart<'a, DB>, PlotError>
where
    DB::ErrorType: 'static,
{
    let what = format!("the panel '{}'", text[0]);
    let (x0, x1) = span(xs, 0.03);
    let (y0, y1) = span(ys, 0.06);
    let mut chart = ChartBuilder::on(area)
        .caption(text[0], (FONT, 18))
        .margin(14)
        .x_label_area_size(50)
        .y_label_area_size(78)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&what, e))?;
    chart
        .configure_mesh()
        .x_desc(text[1])
        .y_desc(text[2])
        .x_labels(7)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&what, e))?;
    Ok(chart)
}

/// All points as small dots, the marked ones joined and ringed.
fn draw_scatter<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Scatter,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let what = format!("the panel '{}'", p.title);
    let w = area.dim_in_pixel().0;
    let (plot_area, legend) = area.split_horizontally(w.saturating_sub(LEGEND_W));
    let all = || p.points.points.iter().chain(&p.marked.points);
    let mut chart = xy_chart(
        &plot_area,
        [&p.title, &p.x_label, &p.y_label],
        all().map(|q| q.0),
        all().map(|q| q.1),
    )?;
    let (dots, front) = (colour(0), colour(1));
    chart
        .draw_series(
            p.points
                .points
                .iter()
                .map(|&q| Circle::new(q, 3, dots.filled())),
        )
        .map_err(|e| err(&what, e))?;
    chart
        .draw_series(LineSeries::new(
            p.marked.points.clone(),
            front.stroke_width(2),
        ))
        .map_err(|e| err(&what, e))?;
    chart
        .draw_series(
            p.marked
                .points
                .iter()
                .map(|&q| Circle::new(q, 6, front.stroke_width(2))),
        )
        .map_err(|e| err(&what, e))?;
    draw_legend(&legend, &[p.points.clone(), p.marked.clone()], &what)
}

/// The legend column: a coloured stroke and the label per series.
fn draw_legend<DB: DrawingBackend>(
    lg: &DrawingArea<DB, Shift>,
    series: &[Series],
    what: &str,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let (_, h) = lg.dim_in_pixel();
    let rows = ((h.saturating_sub(40)) / 22) as usize;
    let shown = if series.len() > rows {
        rows.saturating_sub(1)
    } else {
        series.len()
    };
    for (i, s) in series.iter().take(shown).enumerate() {
        let y = 40 + 22 * i as i32;
        lg.draw(&PathElement::new(
            vec![(4, y), (30, y)],
            colour(i).stroke_width(3),
        ))
        .map_err(|e| err(what, e))?;
        lg.draw(&Text::new(
            shorten(&s.label, 24),
            (36, y - 8),
            (FONT, 14).into_font(),
        ))
        .map_err(|e| err(what, e))?;
    }
    if shown < series.len() {
        let y = 40 + 22 * shown as i32;
        lg.draw(&Text::new(
            format!("+{} more", series.len() - shown),
            (36, y - 8),
            (FONT, 14).into_font(),
        ))
        .map_err(|e| err(what, e))?;
    }
    Ok(())
}

/// Cuts a label to `n` characters, keeping its end (run names differ at the end).
fn shorten(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        s.to_string()
    } else {
        format!("…{}", c[c.len() - (n - 1)..].iter().collect::<String>())
    }
}

fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Bars) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let what = format!("the panel '{}'", p.title);
    let n = p.bars.len().max(1) as i32;
    let top = p
        .bars
        .iter()
        .map(|b| b.value + b.error.unwrap_or(0.0).abs())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let y1 = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 18))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(78)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y1)
        .map_err(|e| err(&what, e))?;
    let labels: Vec<String> = p.bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(&p.y_label)
        .y_labels(8)
        .y_label_formatter(&|v| tick(*v))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                labels.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&what, e))?;
    for (i, b) in p.bars.iter().enumerate() {
        let i = i as i32;
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(colour(i as usize).mix(0.85).filled())
                    .margin(22)
                    .data([(i, b.value)]),
            )
            .map_err(|e| err(&what, e))?;
        let e = b.error.unwrap_or(0.0).abs();
        if e > 0.0 {
            // Whiskers and caps only: plotters' ErrorBar also draws a disc at
            // the mean, which hides a short bar.
            let x = SegmentValue::CenterOf(i);
            let style = BLACK.stroke_width(2);
            chart
                .draw_series([PathElement::new(
                    vec![(x.clone(), b.value - e), (x.clone(), b.value + e)],
                    style,
                )])
                .map_err(|e| err(&what, e))?;
            for y in [b.value - e, b.value + e] {
                chart
                    .draw_series([EmptyElement::at((x.clone(), y))
                        + PathElement::new(vec![(-9, 0), (9, 0)], style)])
                    .map_err(|e| err(&what, e))?;
            }
        }
        let style =
            TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series([Text::new(
                b.text.clone(),
                (SegmentValue::CenterOf(i), b.value + e + y1 * 0.015),
                style,
            )])
            .map_err(|e| err(&what, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_have_three_significant_figures_and_no_trailing_zeros() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(98.47), "98.5");
        assert_eq!(tick(1500.0), "1500");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.0012345), "0.00123");
        assert_eq!(tick(2.0e7), "2.0e7");
    }

    #[test]
    fn a_staircase_holds_each_value_until_the_next_point() {
        assert_eq!(
            staircase(&[(0.0, 1.0), (2.0, 3.0), (5.0, 4.0)]),
            vec![(0.0, 1.0), (2.0, 1.0), (2.0, 3.0), (5.0, 3.0), (5.0, 4.0)]
        );
    }

    #[test]
    fn a_flat_or_empty_range_still_has_width() {
        assert_eq!(span([5.0, 5.0].into_iter(), 0.1), (4.5, 5.5));
        assert_eq!(span(std::iter::empty(), 0.1), (0.0, 1.0));
        assert_eq!(span([0.0, 10.0].into_iter(), 0.1), (-1.0, 11.0));
    }

    #[test]
    fn long_labels_keep_their_end() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("mnist_mlp-20261127-fp16-seed43", 10), "…16-seed43");
    }
}
