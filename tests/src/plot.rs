//! The benchmarks' two SVG figures, drawn with `plotters` (SVG backend: text
//! is written as SVG `<text>`, so no font library or system font is needed).

use std::path::Path;

use plotters::prelude::*;

/// One measured series of the cost-growth figure: (N, value) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (fleet size, value) in the series' own unit.
    pub points: Vec<(f64, f64)>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Cost growth: every series divided by its value at the largest N, so
/// they share one axis, beside N*(N-1) (likewise normalized).
pub fn cost_growth(path: &Path, series: &[Series]) -> Result<(), String> {
    let n_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(2.0_f64, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cost growth with fleet size N (each series / its value at the largest N)",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..n_max * 1.05, 0.0..1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("front-ends N")
        .y_desc("fraction of the value at the largest N")
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err)?;
    let quad = |n: f64| n * (n - 1.0);
    let steps: Vec<(f64, f64)> = (1..=200)
        .map(|i| {
            let n = 1.0 + (n_max - 1.0) * f64::from(i) / 200.0;
            (n, quad(n) / quad(n_max))
        })
        .collect();
    chart
        .draw_series(LineSeries::new(steps, BLACK.stroke_width(2)))
        .map_err(err)?
        .label("N*(N-1) (analytic)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN];
    for (i, s) in series.iter().enumerate() {
        let top = s
            .points
            .iter()
            .filter(|p| (p.0 - n_max).abs() < 1e-9)
            .map(|p| p.1)
            .next()
            .or_else(|| s.points.iter().map(|p| p.1).reduce(f64::max))
            .unwrap_or(1.0)
            .max(1e-12);
        let c = colors[i % colors.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().map(|(n, v)| (*n, v / top)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// How a (fleet size, thread limit) cell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cell {
    /// Full mesh, no refused thread.
    Healthy,
    /// The kernel refused a peer thread: a shard map became unusable.
    Tipped,
    /// `cascade up` refused the fleet: it could exceed the run's task budget.
    Refused,
    /// Neither within the deadline.
    Undecided,
}

/// The incident's phase diagram: measured cells over the analytic boundary
/// `base + (N - 1) = L` and the run's budget `N * L = budget`.
pub fn phase_diagram(
    path: &Path,
    cells: &[(u64, u64, Cell)],
    base: u64,
    budget: u64,
) -> Result<(), String> {
    let n_max = cells.iter().map(|c| c.0).max().unwrap_or(8) as f64 * 1.3;
    // Room above the highest cells for the legend.
    let l_max = cells.iter().map(|c| c.1).max().unwrap_or(16) as f64 * 5.0;
    let n_min = cells.iter().map(|c| c.0).min().unwrap_or(2) as f64 / 1.3;
    let l_min = cells.iter().map(|c| c.1).min().unwrap_or(4) as f64 / 1.3;
    let root = SVGBackend::new(path, (900, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Incident phase diagram (base threads {base}, run budget {budget} tasks)"),
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((n_min..n_max).log_scale(), (l_min..l_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("front-ends N (log)")
        .y_desc("thread limit L per front-end (log)")
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    let steps = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
        (0..=300)
            .map(|i| n_min * (n_max / n_min).powf(f64::from(i) / 300.0))
            .map(|n| (n, f(n)))
            .filter(|p| p.1 >= l_min && p.1 <= l_max)
            .collect()
    };
    let b = base as f64;
    chart
        .draw_series(LineSeries::new(
            steps(&|n| b + n - 1.0),
            BLACK.stroke_width(2),
        ))
        .map_err(err)?
        .label("base + (N-1) = L: below it the mesh cannot fit (tips)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    let bud = budget as f64;
    chart
        .draw_series(LineSeries::new(steps(&|n| bud / n), BLUE.stroke_width(2)))
        .map_err(err)?
        .label("N * L = run budget: above it `cascade up` refuses")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let style = |c: Cell| match c {
        Cell::Healthy => GREEN,
        Cell::Tipped => RED,
        Cell::Refused => RGBColor(140, 140, 140),
        Cell::Undecided => MAGENTA,
    };
    for kind in [Cell::Healthy, Cell::Tipped, Cell::Refused, Cell::Undecided] {
        let color = style(kind);
        let label = match kind {
            Cell::Healthy => "measured: healthy (full mesh)",
            Cell::Tipped => "measured: tipped (a peer thread refused)",
            Cell::Refused => "measured: refused by cascade up",
            Cell::Undecided => "measured: undecided within the deadline",
        };
        let cells_of: Vec<(f64, f64)> = cells
            .iter()
            .filter(|c| c.2 == kind)
            .map(|c| (c.0 as f64, c.1 as f64))
            .collect();
        if cells_of.is_empty() {
            continue;
        }
        chart
            .draw_series(
                cells_of
                    .into_iter()
                    .map(|p| Circle::new(p, 9, color.filled())),
            )
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
