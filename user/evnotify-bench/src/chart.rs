//! The PNG chart: latency distributions (percentile curves) and round trip vs. channels.

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const PATHS: [(&str, RGBColor); 6] = [
    ("evnotify_ioctl", RED),
    ("evnotify_kickfd", MAGENTA),
    ("eventfd_threads", BLUE),
    ("pipe_threads", GREEN),
    ("evnotify_ioctl_nopoll", RGBColor(250, 150, 120)),
    ("evnotify_kickfd_nopoll", RGBColor(200, 150, 230)),
];

pub fn draw(results: &Path, png: &Path) -> Result<()> {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(results)?)?;
    let font = std::fs::read(FONT).with_context(|| format!("read {FONT}"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("bad font {FONT}"))?;
    let root = BitMapBackend::new(png, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "rust_evnotify, one {} VM run ({} CPUs): only ratios carry over",
        r["vm"]["accel"].as_str().unwrap_or("?").to_uppercase(),
        r["vm"]["cpus"]
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(900);

    // Latency: value at each percentile, up to p99, per path and pinning.
    let us = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e3;
    let ymax = PATHS
        .iter()
        .flat_map(|(p, _)| {
            ["same_cpu", "cross_cpu"].map(|pin| us(&r["rtt_ns_by_pinning"][pin][p]["p99"]))
        })
        .fold(1.0, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&left)
        .caption(
            "round-trip latency distribution (solid: different CPUs, dashed: same CPU)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..99f64, 0f64..ymax)?;
    c.configure_mesh()
        .x_desc("percentile")
        .y_desc("µs")
        .draw()?;
    for (path, color) in PATHS {
        for (pin, dashed) in [("cross_cpu", false), ("same_cpu", true)] {
            let pts: Vec<(f64, f64)> = r["rtt_ns_by_pinning"][pin][path]["percentiles"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .take(100)
                        .map(|(i, v)| (i as f64, us(v)))
                        .collect()
                })
                .unwrap_or_default();
            if dashed {
                c.draw_series(DashedLineSeries::new(pts, 6, 4, color.stroke_width(2)))?;
            } else {
                c.draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                    .label(path)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
        }
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .draw()?;

    // Scaling: p50 round trip against channels open and active.
    let rows = r["scaling"].as_array().cloned().unwrap_or_default();
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .map(|row| {
            (
                row["channels"].as_f64().unwrap_or(1.0),
                us(&row["rtt_p50_ns"]),
            )
        })
        .collect();
    let ymax = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.3;
    let mut c = ChartBuilder::on(&right)
        .caption(
            "ioctl round trip p50 (different CPUs) vs. active channels",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..2048f64).log_scale(), 0f64..ymax)?;
    c.configure_mesh()
        .x_desc("channels (a kernel thread each)")
        .y_desc("µs")
        .draw()?;
    c.draw_series(LineSeries::new(pts.clone(), RED.stroke_width(2)))?;
    c.draw_series(pts.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
    root.present()?;
    Ok(())
}
