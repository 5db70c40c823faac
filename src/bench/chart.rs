//! The sweep chart (SVG): added latency against concurrent calls on top; server CPU-ms per
//! call-second (left axis) and KiB per call (right axis) below.
//!
//! plotters' SVG backend writes text as `<text>` elements and, without a font feature, lays it
//! out with a built-in estimate, so axis labels need no font files or extra features.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::report::RunReport;

/// Chart size (px).
const SIZE: (u32, u32) = (1000, 760);

/// Writes the chart of `runs` (one point per run, by `calls`) to `path`.
///
/// # Errors
/// If there are no runs or the file cannot be written.
pub(crate) fn write_svg(path: &Path, runs: &[RunReport]) -> anyhow::Result<()> {
    if runs.is_empty() {
        return Err(anyhow!("no runs to chart"));
    }
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "callbridge bench: {}, hold {:.0} s, ramp {}/s",
        runs[0].provider.name(),
        runs[0].hold_s,
        runs[0].ramp_per_s
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 48 / 100);

    let x_max = runs.iter().map(|r| r.calls).max().unwrap_or(1) as f64 * 1.08;
    let x_range = 0f64..x_max.max(1.0);

    // Top: latency.
    let p50: Vec<(f64, f64)> =
        runs.iter().map(|r| (r.calls as f64, r.latency_us.p50_us as f64 / 1000.0)).collect();
    let p99: Vec<(f64, f64)> =
        runs.iter().map(|r| (r.calls as f64, r.latency_us.p99_us as f64 / 1000.0)).collect();
    let y_max = p99.iter().chain(&p50).map(|p| p.1).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("added round-trip latency (bridge + Realtime echo)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(x_range.clone(), 0f64..nice_max(y_max))?;
    chart
        .configure_mesh()
        .x_desc("concurrent calls")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    for (data, name, color) in [(&p99, "p99", RED), (&p50, "p50", BLUE)] {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(data.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;

    // Bottom: server cost per call.
    let cpu: Vec<(f64, f64)> = runs
        .iter()
        .filter_map(|r| Some((r.calls as f64, r.server.as_ref()?.cpu_ms_per_call_second?)))
        .collect();
    let kib: Vec<(f64, f64)> =
        runs.iter().filter_map(|r| Some((r.calls as f64, r.server.as_ref()?.kib_per_call?))).collect();
    let cpu_max = cpu.iter().map(|p| p.1).fold(0.0, f64::max);
    let kib_max = kib.iter().map(|p| p.1).fold(0.0, f64::max);
    let kib_min = kib.iter().map(|p| p.1).fold(0.0, f64::min);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("server cost per call", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(x_range.clone(), 0f64..nice_max(cpu_max))?
        .set_secondary_coord(x_range, -nice_max(-kib_min)..nice_max(kib_max));
    chart
        .configure_mesh()
        .x_desc("concurrent calls")
        .y_desc("server CPU-ms per call-second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()?;
    chart.configure_secondary_axes().y_desc("server KiB per call").draw()?;
    if cpu.is_empty() && kib.is_empty() {
        bottom.draw(&Text::new(
            "no server figures (run with --server-pid or --metrics-url)",
            (SIZE.0 as i32 / 2 - 220, 150),
            ("sans-serif", 16),
        ))?;
    }
    let green = RGBColor(0, 140, 70);
    chart
        .draw_series(LineSeries::new(cpu.iter().copied(), green.stroke_width(2)))?
        .label("CPU-ms per call-second (left)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green.stroke_width(2)));
    chart.draw_series(cpu.iter().map(|&p| Circle::new(p, 4, green.filled())))?;
    let purple = RGBColor(120, 60, 170);
    chart
        .draw_secondary_series(LineSeries::new(kib.iter().copied(), purple.stroke_width(2)))?
        .label("KiB per call (right)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], purple.stroke_width(2)));
    chart.draw_secondary_series(kib.iter().map(|&p| TriangleMarker::new(p, 5, purple.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A round upper bound a bit above `v` (at least 1).
fn nice_max(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let target = v * 1.15;
    let step = 10f64.powf(target.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * step).find(|&c| c >= target).unwrap_or(10.0 * step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::sample_run;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(4.3), 5.0);
        assert_eq!(nice_max(9.0), 20.0);
        assert_eq!(nice_max(0.031), 0.05);
    }

    #[test]
    fn svg_has_axis_labels_and_both_panels() {
        let dir = std::env::temp_dir().join(format!("callbridge-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        let mut runs = vec![sample_run(100, true), sample_run(200, true), sample_run(500, true)];
        runs[2].latency_us.p99_us = 12_000;
        write_svg(&path, &runs).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for label in [
            "concurrent calls",
            "latency (ms)",
            "server CPU-ms per call-second",
            "server KiB per call",
            "p99",
            "p50",
        ] {
            assert!(svg.contains(label), "missing {label:?}");
        }
        // Without server figures the lower panel says so.
        write_svg(&path, &[sample_run(100, false)]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("no server figures"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
