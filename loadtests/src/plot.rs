//! The SVG plot of a report: the latency percentile distribution above, throughput and p99 per
//! second below.
//!
//! The upper panel is the classic HDR percentile plot: the x axis is 1 / (1 - p) on a log scale,
//! so 90%, 99%, 99.9% and 99.99% are evenly spaced and the tail, where the trouble is, gets as
//! much room as the median.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{Report, scenario_name};

#[derive(Debug, thiserror::Error)]
#[error("drawing the plot: {0}")]
pub struct PlotError(String);

/// Plotters' errors are generic over the backend; only their message matters here.
fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// Writes the plot of `report` to `path` as SVG.
pub fn write_svg(path: &Path, report: &Report) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (upper, lower) = root.split_vertically(450);
    draw_percentiles(&upper, report)?;
    draw_timeseries(&lower, report)?;
    root.present().map_err(err)
}

fn draw_percentiles(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &Report,
) -> Result<(), PlotError> {
    let points: Vec<(f64, f64)> = report
        .percentiles
        .iter()
        .map(|p| {
            (
                1.0 / (1.0 - p.percentile / 100.0),
                p.latency_us as f64 / 1_000.0,
            )
        })
        .collect();
    let x_max = points.last().map_or(10.0, |p| p.0).max(10.0);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.1;
    let caption = format!(
        "{}: latency by percentile ({} responses)",
        scenario_name(report.settings.scenario),
        report.summary.responses
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(err)?;
    Ok(())
}

fn draw_timeseries(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &Report,
) -> Result<(), PlotError> {
    let series = &report.timeseries;
    let x_max = (series.len() as f64).max(1.0);
    let rps_max = series
        .iter()
        .map(|t| t.throughput_rps)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let p99_max = series
        .iter()
        .map(|t| t.p99_us as f64 / 1_000.0)
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput and p99 per second", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..rps_max)
        .map_err(err)?
        .set_secondary_coord(0f64..x_max, 0f64..p99_max);
    chart
        .configure_mesh()
        .x_desc("seconds after warm-up")
        .y_desc("responses per second")
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 latency (ms)")
        .draw()
        .map_err(err)?;
    // Each point sits in the middle of the second it covers.
    let throughput = series
        .iter()
        .map(|t| (t.second as f64 + 0.5, t.throughput_rps));
    chart
        .draw_series(LineSeries::new(throughput, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("throughput (req/s, left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let p99 = series
        .iter()
        .map(|t| (t.second as f64 + 0.5, t.p99_us as f64 / 1_000.0));
    chart
        .draw_secondary_series(LineSeries::new(p99, RED.stroke_width(2)))
        .map_err(err)?
        .label("p99 (ms, right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// The percentile at x = 1 / (1 - p), with as many decimals as it needs: 1 → "0%",
/// 10 → "90%", 200 → "99.5%", 1000 → "99.9%".
pub fn percentile_label(x: f64) -> String {
    let percentile = 100.0 * (1.0 - 1.0 / x.max(1.0));
    let decimals = ((x.max(1.0).log10() - 1e-9).ceil() as i32 - 2).max(0) as usize;
    format!("{percentile:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_show_the_nines() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(200.0), "99.5%");
        assert_eq!(percentile_label(1_000.0), "99.9%");
        assert_eq!(percentile_label(10_000.0), "99.99%");
    }
}
