//! Drawing a diagnosis: per BatchNorm, running vs data mean and variance per channel.
//!
//! One figure per BatchNorm with two panels: the mean per channel (running, data with its
//! sampling error, and as run), and the variance per channel on a log axis (a never-updated
//! layer's 1.0 against data at 300 is only readable on a log scale). An SVG report stacks every
//! figure in one image; an HTML report has the table and one inline SVG per BatchNorm.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;

use super::diagnose::{BnCheck, Diagnosis, Verdict};

/// Width and height of one BatchNorm's figure in pixels.
const FIGURE: (u32, u32) = (960, 300);

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the report failed: {e:?}")
}

fn verdict_color(v: Verdict) -> RGBColor {
    match v {
        Verdict::Healthy => RGBColor(30, 130, 60),
        Verdict::Suspicious => RGBColor(200, 130, 0),
        Verdict::Stale => RGBColor(200, 30, 30),
    }
}

/// Padded `[lo, hi]` of some values (never empty, never zero-width).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08)
        .max(1e-3 * hi.abs().max(lo.abs()))
        .max(1e-6);
    (lo - pad, hi + pad)
}

/// Draws one BatchNorm into `area`.
fn draw_bn<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    b: &BnCheck,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(plot_err)?;
    let title = format!(
        "{} — {} channels — {}{}",
        b.origin.name,
        b.channel_count(),
        b.verdict,
        if b.never_updated {
            " (never updated)"
        } else {
            ""
        }
    );
    let area = area
        .titled(
            &title,
            ("sans-serif", 16)
                .into_font()
                .color(&verdict_color(b.verdict)),
        )
        .map_err(plot_err)?;
    let (left, right) = area.split_horizontally(FIGURE.0 / 2);
    let n = b.channel_count().max(1) as f64;
    let xs = -0.5..n - 0.5;
    let blue = RGBColor(40, 90, 200);
    let red = verdict_color(Verdict::Stale);
    let grey = RGBColor(150, 150, 150);

    // Means.
    let as_run_mean: Vec<f64> = b
        .as_run
        .as_ref()
        .map(|s| s.mean.clone())
        .unwrap_or_default();
    let (lo, hi) = span(
        b.channels
            .iter()
            .flat_map(|c| [c.running_mean, c.data_mean])
            .chain(as_run_mean.iter().copied()),
    );
    let mut chart = ChartBuilder::on(&left)
        .margin(8)
        .caption("mean per channel", ("sans-serif", 13))
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(xs.clone(), lo..hi)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("channel")
        .disable_x_mesh()
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(b.channels.iter().map(|c| {
            let se = c.shift_se * (c.running_var + b.epsilon as f64).sqrt();
            ErrorBar::new_vertical(
                c.channel as f64,
                c.data_mean - 2.0 * se,
                c.data_mean,
                c.data_mean + 2.0 * se,
                red.filled(),
                4,
            )
        }))
        .map_err(plot_err)?
        .label("data (+-2 s.e.)")
        .legend(move |(x, y)| Circle::new((x, y), 3, red.filled()));
    chart
        .draw_series(
            b.channels
                .iter()
                .map(|c| Cross::new((c.channel as f64, c.running_mean), 4, blue.stroke_width(2))),
        )
        .map_err(plot_err)?
        .label("running (stored)")
        .legend(move |(x, y)| Cross::new((x, y), 4, blue.stroke_width(2)));
    if !as_run_mean.is_empty() {
        chart
            .draw_series(
                as_run_mean
                    .iter()
                    .enumerate()
                    .map(|(c, &m)| Circle::new((c as f64, m), 2, grey.filled())),
            )
            .map_err(plot_err)?
            .label("as run")
            .legend(move |(x, y)| Circle::new((x, y), 2, grey.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;

    // Variances on a log axis (epsilon added, as the layer does, so zero stays drawable).
    let eps = b.epsilon as f64;
    let as_run_var: Vec<f64> = b
        .as_run
        .as_ref()
        .map(|s| s.var.iter().map(|v| v + eps).collect())
        .unwrap_or_default();
    let all: Vec<f64> = b
        .channels
        .iter()
        .flat_map(|c| [c.running_var + eps, c.data_var + eps])
        .chain(as_run_var.iter().copied())
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let vlo = all.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) / 1.5;
    let vhi = all.iter().copied().fold(0f64, f64::max).max(1.0) * 1.5;
    let mut chart = ChartBuilder::on(&right)
        .margin(8)
        .caption("variance + eps per channel (log)", ("sans-serif", 13))
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(xs, (vlo..vhi).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("channel")
        .disable_x_mesh()
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(
            b.channels
                .iter()
                .map(|c| Circle::new((c.channel as f64, c.data_var + eps), 3, red.filled())),
        )
        .map_err(plot_err)?;
    chart
        .draw_series(b.channels.iter().map(|c| {
            Cross::new(
                (c.channel as f64, c.running_var + eps),
                4,
                blue.stroke_width(2),
            )
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(
            as_run_var
                .iter()
                .enumerate()
                .map(|(c, &v)| Circle::new((c as f64, v), 2, grey.filled())),
        )
        .map_err(plot_err)?;
    area.present().map_err(plot_err)?;
    Ok(())
}

/// One SVG image with a figure per BatchNorm, stacked.
pub fn svg(d: &Diagnosis) -> Result<String> {
    if d.bns.is_empty() {
        bail!(
            "no BatchNorm node to draw: {}",
            super::diagnose::NO_BATCHNORM
        );
    }
    let mut out = String::new();
    {
        let height = FIGURE.1 * d.bns.len() as u32;
        let root = SVGBackend::with_string(&mut out, (FIGURE.0, height)).into_drawing_area();
        let rows = root.split_evenly((d.bns.len(), 1));
        for (area, b) in rows.iter().zip(&d.bns) {
            draw_bn(area, b)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

/// The SVG figure of one BatchNorm.
pub fn svg_one(b: &BnCheck) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, FIGURE).into_drawing_area();
        draw_bn(&root, b)?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A self-contained HTML page: the table and one inline SVG per BatchNorm.
pub fn html(d: &Diagnosis, title: &str) -> Result<String> {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em;\
         overflow-x:auto}} .Stale{{color:#c81e1e}} .Suspicious{{color:#c88200}} \
         .Healthy{{color:#1e823c}}</style></head><body>\n<h1>{t}</h1>\n<pre>{table}</pre>\n",
        t = escape(title),
        table = escape(&d.table())
    );
    for b in &d.bns {
        let _ = write!(
            s,
            "<h2 class=\"{:?}\">{} — {}</h2>\n<p>{}</p>\n{}\n",
            b.verdict,
            escape(&b.origin.to_string()),
            b.verdict,
            escape(&b.reason()),
            svg_one(b)?
        );
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

/// Writes the report to `path`: `.svg` for one stacked image, `.html`/`.htm` for a page.
/// The file is written atomically and never over one of `inputs`.
pub fn write(d: &Diagnosis, path: &Path, title: &str, inputs: &[&Path]) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let text = match ext.as_deref() {
        Some("svg") => svg(d)?,
        Some("html" | "htm") => html(d, title)?,
        _ => bail!("report {}: use a .svg or .html file name", path.display()),
    };
    crate::io::write_atomic(path, text.as_bytes(), inputs)
}
