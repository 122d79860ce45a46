//! `archc train --plot`: a PNG of the run's curves over steps, one panel per scalar the step
//! reports (the loss first, then the model's other scalar outputs, such as the collapse
//! metrics, then the gradient norm and the learning rate).
//!
//! Drawn in process by plotters with a font compiled into the binary (assets/, an ASCII
//! subset of DejaVu Sans), so a plot needs no system fonts.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// The embedded font and the family name it is registered under.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "archc-sans";

/// Pixels per panel.
const PANEL: (u32, u32) = (560, 330);

/// The values of each scalar over steps, in the order they were first seen.
#[derive(Default)]
pub(super) struct Curves {
    series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Curves {
    /// Records `value` of scalar `name` at `step`.
    pub fn record(&mut self, step: u64, name: &str, value: f64) {
        let at = match self.series.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.series.push((name.to_string(), Vec::new()));
                self.series.len() - 1
            }
        };
        self.series[at].1.push((step as f64, value));
    }

    /// Draws every curve into the PNG `path`, under `title`.
    pub fn draw(&self, path: &Path, title: &str) -> Result<(), String> {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded plot font is not a font".to_string())?;
        let panels = self.series.len().max(1);
        let cols = panels.min(2);
        let rows = panels.div_ceil(cols);
        let size = (PANEL.0 * cols as u32, PANEL.1 * rows as u32 + 40);
        let root = BitMapBackend::new(path, size).into_drawing_area();
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let root = root
            .titled(title, (FAMILY, 22).into_font())
            .map_err(|e| failed(&e))?;
        for ((name, points), area) in self.series.iter().zip(root.split_evenly((rows, cols))) {
            let points: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|(_, y)| y.is_finite())
                .collect();
            let Some(((x0, x1), (y0, y1))) = extent(&points) else {
                continue;
            };
            // A loss that falls by orders of magnitude reads better on a log axis.
            let result = if y0 > 0.0 && y1 / y0 > 50.0 {
                panel(&area, name, x0..x1, (y0..y1).log_scale(), &points)
            } else {
                panel(&area, name, x0..x1, y0..y1, &points)
            };
            result.map_err(|e| failed(&e))?;
        }
        root.present().map_err(|e| failed(&e))
    }
}

/// The x and y ranges of `points`, widened where they are a single value.
fn extent(points: &[(f64, f64)]) -> Option<((f64, f64), (f64, f64))> {
    let first = points.first()?;
    let (mut x, mut y) = ((first.0, first.0), (first.1, first.1));
    for &(px, py) in points {
        x = (x.0.min(px), x.1.max(px));
        y = (y.0.min(py), y.1.max(py));
    }
    if x.1 <= x.0 {
        x.1 = x.0 + 1.0;
    }
    if y.1 <= y.0 {
        let pad = (y.0.abs() * 0.05).max(1e-6);
        y = (y.0 - pad, y.1 + pad);
    }
    Some((x, y))
}

/// One panel: `name` as its caption, steps across, the values up `y`.
fn panel<Y>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    name: &str,
    x: std::ops::Range<f64>,
    y: Y,
    points: &[(f64, f64)],
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
    RangedCoordf64: Ranged<ValueType = f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(name, (FAMILY, 17).into_font())
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .label_style((FAMILY, 12).into_font())
        .axis_desc_style((FAMILY, 13).into_font())
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    Ok(())
}
