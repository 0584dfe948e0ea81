//! The PNG chart: latency distributions (percentile curves) per pinning, round trip against the
//! busy-poll limit, timer lateness, and round trip against channels (a thread each, and on
//! shared workers).

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Each path's colour: the module's paths warm (solid with polling, light without), the
/// user-space floor cool, the polling peers green/olive, io_uring grey/black (each ring a
/// darker shade of its path's).
const PATHS: [(&str, RGBColor); 13] = [
    ("evnotify_ioctl", RED),
    ("evnotify_kickfd", MAGENTA),
    ("evnotify_ioctl_nopoll", RGBColor(250, 150, 120)),
    ("evnotify_kickfd_nopoll", RGBColor(200, 150, 230)),
    ("eventfd_threads", BLUE),
    ("pipe_threads", CYAN),
    ("spin_responder", GREEN),
    ("io_uring_sqpoll", BLACK),
    ("io_uring", RGBColor(150, 150, 150)),
    ("io_uring_iowq", RGBColor(150, 120, 40)),
    ("evnotify_ring_spin", RGBColor(200, 0, 0)),
    ("io_uring_sqpoll_spin", RGBColor(60, 60, 60)),
    ("evnotify_ring_eventfd", RGBColor(240, 100, 0)),
];

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn us(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / 1e3
}

pub fn draw(results: &Path, png: &Path) -> Result<()> {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(results)?)?;
    let font = std::fs::read(FONT).with_context(|| format!("read {FONT}"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("bad font {FONT}"))?;
    let root = BitMapBackend::new(png, (1500, 1160)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "rust_evnotify, one {} VM run ({} CPUs{}): only ratios carry over",
        r["vm"]["accel"].as_str().unwrap_or("?").to_uppercase(),
        r["vm"]["cpus"],
        if r["vm"]["lockdep"] == true {
            ", lockdep"
        } else {
            ""
        }
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(600);
    let (cross, same) = top.split_horizontally(750);
    latency(&r, &cross, "cross_cpu", "different CPUs")?;
    latency(&r, &same, "same_cpu", "same CPU")?;
    let parts = bottom.split_evenly((1, 3));
    sweep(&r, &parts[0])?;
    lateness(&r, &parts[1])?;
    scaling(&r, &parts[2])?;
    root.present()?;
    Ok(())
}

/// Value at each percentile, up to p99, per path.
fn latency(r: &Value, area: &Area, pin: &str, what: &str) -> Result<()> {
    let rows = &r["rtt_ns_by_pinning"][pin];
    let ymax = PATHS
        .iter()
        .map(|(p, _)| us(&rows[p]["p99"]))
        .fold(10.0, f64::max)
        * 1.5;
    // Logarithmic: the paths differ by orders of magnitude.
    let mut c = ChartBuilder::on(area)
        .caption(
            format!("round trip by percentile, {what}"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..99f64, (1f64..ymax).log_scale())?;
    c.configure_mesh()
        .x_desc("percentile")
        .y_desc("µs (log)")
        .draw()?;
    for (path, color) in PATHS {
        let pts: Vec<(f64, f64)> = rows[path]["percentiles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .take(100)
                    .map(|(i, v)| (i as f64, us(v).max(1.0)))
                    .collect()
            })
            .unwrap_or_default();
        c.draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(path)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The different-CPU ioctl round trip (p50, p99) at each busy-poll limit, with the thread's
/// CPU share written at each point.
fn sweep(r: &Value, area: &Area) -> Result<()> {
    let rows = r["busypoll_sweep"].as_array().cloned().unwrap_or_default();
    let ymax = rows
        .iter()
        .map(|row| us(&row["p99_ns"]))
        .fold(1.0, f64::max)
        * 1.2;
    let labels: Vec<String> = rows
        .iter()
        .map(|row| format!("{} µs", row["limit_ns"].as_u64().unwrap_or(0) / 1000))
        .collect();
    let n = rows.len().max(1) as f64;
    let mut c = ChartBuilder::on(area)
        .caption(
            "ioctl round trip vs. busy-poll limit (different CPUs)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..ymax)?;
    c.configure_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&|x| labels.get(x.round() as usize).cloned().unwrap_or_default())
        .x_desc("limit (thread CPU share at each point)")
        .y_desc("µs")
        .draw()?;
    for (key, dashed) in [("p50_ns", false), ("p99_ns", true)] {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| (i as f64, us(&row[key])))
            .collect();
        let style = RED.stroke_width(2);
        let label = key.trim_end_matches("_ns");
        if dashed {
            c.draw_series(DashedLineSeries::new(pts, 6, 4, style))?
        } else {
            c.draw_series(LineSeries::new(pts, style))?
        }
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    c.draw_series(rows.iter().enumerate().map(|(i, row)| {
        let share = row["thread_cpu_share"].as_f64().unwrap_or(0.0);
        Text::new(
            format!("CPU {:.0}%", share * 100.0),
            (i as f64 - 0.2, us(&row["p50_ns"]) + ymax * 0.05),
            ("sans-serif", 14),
        )
    }))?;
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Timer lateness p50 and p99 per source and period, as bars.
fn lateness(r: &Value, area: &Area) -> Result<()> {
    let ms = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e6;
    let mut groups = vec![];
    for period in ["1ms", "10ms"] {
        for (src, color) in [("evnotify", RED), ("timerfd", BLUE)] {
            let l = &r["timer_lateness_ns"][src][period];
            groups.push((
                format!("{src} {period}"),
                color,
                ms(&l["p50"]),
                ms(&l["p99"]),
            ));
        }
    }
    let ymax = groups.iter().map(|g| g.3).fold(0.01, f64::max) * 1.15;
    let mut c = ChartBuilder::on(area)
        .caption(
            "timer lateness per tick (solid: p50, light: p99)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..groups.len() as f64 - 0.5, 0f64..ymax)?;
    c.configure_mesh()
        .x_labels(groups.len())
        .x_label_formatter(&|x| {
            groups
                .get(x.round() as usize)
                .map(|g| g.0.clone())
                .unwrap_or_default()
        })
        .y_desc("ms late")
        .draw()?;
    for (i, (_, color, p50, p99)) in groups.iter().enumerate() {
        let x = i as f64;
        c.draw_series([
            Rectangle::new([(x - 0.3, 0.0), (x + 0.3, *p99)], color.mix(0.3).filled()),
            Rectangle::new([(x - 0.3, 0.0), (x + 0.3, *p50)], color.filled()),
        ])?;
    }
    Ok(())
}

/// p50 round trip against channels open: a kernel thread each (active, 1 s timers), and on
/// shared workers (idle).
fn scaling(r: &Value, area: &Area) -> Result<()> {
    let points = |key: &str| -> Vec<(f64, f64)> {
        r[key]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|row| {
                (
                    row["channels"].as_f64().unwrap_or(1.0).max(1.0),
                    us(&row["rtt_p50_ns"]),
                )
            })
            .collect()
    };
    let shared = format!(
        "{} shared kernel threads",
        r["shared_workers"]["workers"].as_u64().unwrap_or(0)
    );
    let series = [
        ("a kernel thread each".to_string(), points("scaling"), RED),
        (shared, points("scaling_shared"), BLUE),
    ];
    let pts = || series.iter().flat_map(|s| s.1.iter());
    let ymax = pts().map(|p| p.1).fold(1.0, f64::max) * 1.3;
    let xmax = pts().map(|p| p.0).fold(1024.0, f64::max) * 2.0;
    let mut c = ChartBuilder::on(area)
        .caption(
            "ioctl round trip p50 (different CPUs) vs. open channels",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..xmax).log_scale(), 0f64..ymax)?;
    c.configure_mesh().x_desc("channels").y_desc("µs").draw()?;
    for (name, pts, color) in series {
        c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_path_has_a_colour() {
        for path in crate::rtt::PATHS {
            assert!(super::PATHS.iter().any(|(p, _)| *p == path), "{path}");
        }
    }
}
