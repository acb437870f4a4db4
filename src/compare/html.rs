//! `report.html`: the table and inline SVG charts, drawn here from the report (no script, no
//! network, one file). Coordinates are computed in Rust; the template only places them.

use askama::Template;

use super::{
    report::{BackendReport, Report, footprint_sizes},
    table::{COLUMNS, Cell},
};
use crate::config::SessionBackend;

/// Chart size in SVG user units (the chart scales with the page).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
/// Room for the axis labels.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

/// The browser cookie limit the cookie chart draws as a rule.
const COOKIE_LIMIT: f64 = 4096.0;

/// One colour per backend row, the same in every chart (the cookie backend with
/// `cookie_revocation` gets a colour of its own).
fn colour(report: &BackendReport) -> &'static str {
    match report.backend {
        SessionBackend::Cookie if report.cookie_revocation => "#1a7f37",
        SessionBackend::Cookie => "#b4641e",
        SessionBackend::Memory => "#7a3fa0",
        SessionBackend::Database => "#1f6feb",
        SessionBackend::Redis => "#cf222e",
    }
}

/// Rounds to one decimal: SVG coordinates stay short.
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A position on an axis and its label.
pub struct Tick {
    /// SVG coordinate.
    pub pos: f64,
    /// Text.
    pub label: String,
}

/// The plotting area.
#[derive(Debug, Clone, Copy)]
pub struct Plot {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Right edge.
    pub right: f64,
    /// Bottom edge (the x axis).
    pub bottom: f64,
}

impl Plot {
    fn new() -> Self {
        Self {
            left: LEFT,
            top: TOP,
            right: WIDTH - RIGHT,
            bottom: HEIGHT - BOTTOM,
        }
    }

    fn x(&self, value: f64, max: f64) -> f64 {
        r1(self.left + (self.right - self.left) * value / max)
    }

    fn y(&self, value: f64, max: f64) -> f64 {
        r1(self.bottom - (self.bottom - self.top) * value / max)
    }

    /// The middle of the plot, for axis titles.
    pub fn mid_x(&self) -> f64 {
        r1(f64::midpoint(self.left, self.right))
    }

    /// The middle of the plot, for axis titles.
    pub fn mid_y(&self) -> f64 {
        r1(f64::midpoint(self.top, self.bottom))
    }
}

/// A legend entry.
pub struct Legend {
    /// Backend name.
    pub name: String,
    /// Its colour.
    pub colour: &'static str,
}

/// A point with a tooltip.
pub struct Dot {
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// Tooltip.
    pub title: String,
}

/// One backend's line.
pub struct Series {
    /// Its colour.
    pub colour: &'static str,
    /// `x,y x,y ...` for a polyline.
    pub points: String,
    /// The measured points.
    pub dots: Vec<Dot>,
}

/// A horizontal reference line.
pub struct Rule {
    /// y.
    pub y: f64,
    /// What it marks.
    pub label: String,
}

/// What every chart has: a heading and caption, the plot area, the y axis and the legend.
pub struct Frame {
    /// Heading.
    pub title: String,
    /// What to see in it.
    pub caption: String,
    /// Plot area.
    pub plot: Plot,
    /// y axis ticks.
    pub y_ticks: Vec<Tick>,
    /// y axis title.
    pub y_label: String,
    /// Which colour is which backend.
    pub legend: Vec<Legend>,
}

impl Frame {
    /// A frame whose y axis runs from 0 to a nice maximum above `max`; returns that maximum.
    fn new(report: &Report, title: &str, caption: &str, y_label: &str, max: f64) -> (Self, f64) {
        let plot = Plot::new();
        let (y_max, y_step) = nice_axis(max);
        let frame = Self {
            title: title.to_owned(),
            caption: caption.to_owned(),
            y_ticks: ticks(y_max, y_step, |v| plot.y(v, y_max)),
            y_label: y_label.to_owned(),
            legend: legend(report),
            plot,
        };
        (frame, y_max)
    }
}

/// Bytes against cart lines, one line per backend.
pub struct LineChart {
    /// Heading, axes, legend.
    pub frame: Frame,
    /// x axis ticks.
    pub x_ticks: Vec<Tick>,
    /// x axis title.
    pub x_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// A reference line, if any.
    pub rule: Option<Rule>,
}

/// One bar.
pub struct Bar {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// Colour.
    pub colour: &'static str,
    /// Tooltip.
    pub title: String,
    /// Value written above the bar.
    pub value: String,
}

/// The label under a group of bars.
pub struct Group {
    /// Centre of the group.
    pub pos: f64,
    /// The request, e.g. `GET /cart`.
    pub label: String,
    /// What it does to the session, e.g. `session read`.
    pub kind: String,
}

/// Values per scenario, one bar per backend.
pub struct BarChart {
    /// Heading, axes, legend.
    pub frame: Frame,
    /// Scenario labels under each group.
    pub groups: Vec<Group>,
    /// The bars.
    pub bars: Vec<Bar>,
}

/// A "nice" axis: a maximum and step of 1, 2, 2.5 or 5 times a power of ten, about 5 ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(value: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{value:.0}")
    } else {
        let decimals = (-step.log10()).ceil().clamp(1.0, 3.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let decimals = decimals as usize;
        format!("{value:.decimals$}")
    }
}

fn ticks(max: f64, step: f64, place: impl Fn(f64) -> f64) -> Vec<Tick> {
    let mut out = Vec::new();
    // Bounded: a nice axis has about five steps.
    for i in 0..=20 {
        let value = step * f64::from(i);
        if value > max * 1.000_001 {
            break;
        }
        out.push(Tick {
            pos: place(value),
            label: tick_label(value, step),
        });
    }
    out
}

fn legend(report: &Report) -> Vec<Legend> {
    report
        .backends
        .iter()
        .filter(|b| b.skipped.is_none())
        .map(|b| Legend {
            name: b.variant.clone(),
            colour: colour(b),
        })
        .collect()
}

fn footprint_chart(
    report: &Report,
    title: &str,
    caption: &str,
    value: impl Fn(&super::report::FootprintPoint) -> usize,
    rule: Option<f64>,
) -> LineChart {
    let all: Vec<(&BackendReport, Vec<(usize, usize)>)> = report
        .backends
        .iter()
        .filter_map(|b| {
            let f = b.footprint.measured()?;
            Some((b, f.points.iter().map(|p| (p.lines, value(p))).collect()))
        })
        .collect();
    let max_lines = all
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| p.0))
        .max()
        .unwrap_or(1) as f64;
    let max_bytes = all
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| p.1))
        .max()
        .unwrap_or(1) as f64;
    let (frame, y_max) = Frame::new(
        report,
        title,
        caption,
        "bytes",
        max_bytes.max(rule.unwrap_or(0.0)),
    );
    let plot = frame.plot;
    let (x_max, x_step) = nice_axis(max_lines);
    let series = all
        .iter()
        .map(|(b, points)| {
            let dots: Vec<Dot> = points
                .iter()
                .map(|&(lines, bytes)| Dot {
                    x: plot.x(lines as f64, x_max),
                    y: plot.y(bytes as f64, y_max),
                    title: format!("{}: {bytes} bytes at {lines} lines", b.variant),
                })
                .collect();
            Series {
                colour: colour(b),
                points: dots
                    .iter()
                    .map(|d| format!("{},{}", d.x, d.y))
                    .collect::<Vec<_>>()
                    .join(" "),
                dots,
            }
        })
        .collect();
    LineChart {
        x_ticks: ticks(x_max, x_step, |v| plot.x(v, x_max)),
        x_label: "cart lines".to_owned(),
        series,
        rule: rule.map(|limit| Rule {
            y: plot.y(limit, y_max),
            label: format!("browser limit, {limit:.0} B"),
        }),
        frame,
    }
}

fn speed_chart(
    report: &Report,
    title: &str,
    caption: &str,
    y_label: &str,
    value: impl Fn(&super::report::ScenarioResult) -> f64,
    unit: &str,
) -> BarChart {
    let measured: Vec<_> = report
        .backends
        .iter()
        .filter_map(|b| Some((b, b.speed.measured()?)))
        .collect();
    let mut scenarios: Vec<(String, String, String)> = Vec::new();
    for (_, speed) in &measured {
        for s in &speed.scenarios {
            if !scenarios.iter().any(|(name, _, _)| *name == s.name) {
                scenarios.push((s.name.clone(), s.request.clone(), s.kind.clone()));
            }
        }
    }
    let max = measured
        .iter()
        .flat_map(|(_, s)| s.scenarios.iter().map(&value))
        .fold(0.0, f64::max);
    let (frame, y_max) = Frame::new(report, title, caption, y_label, max);
    let plot = frame.plot;
    let group_count = scenarios.len().max(1);
    let group_width = (plot.right - plot.left) / f64::from(u32::try_from(group_count).unwrap_or(1));
    let per_group = measured.len().max(1);
    let bar_width = r1(group_width * 0.8 / f64::from(u32::try_from(per_group).unwrap_or(1)));
    let mut bars = Vec::new();
    let mut groups = Vec::new();
    for (g, (name, request, kind)) in scenarios.iter().enumerate() {
        let g = f64::from(u32::try_from(g).unwrap_or(0));
        let group_left = plot.left + group_width * g + group_width * 0.1;
        groups.push(Group {
            pos: r1(plot.left + group_width * (g + 0.5)),
            label: request.clone(),
            kind: kind.clone(),
        });
        for (i, (b, speed)) in measured.iter().enumerate() {
            let Some(s) = speed.scenario(name) else {
                continue;
            };
            let v = value(s);
            let y = plot.y(v, y_max);
            let i = f64::from(u32::try_from(i).unwrap_or(0));
            bars.push(Bar {
                x: r1(group_left + bar_width * i),
                y,
                w: bar_width,
                h: r1(plot.bottom - y),
                colour: colour(b),
                title: format!("{}, {request}: {v:.2} {unit}", b.variant),
                value: if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                },
            });
        }
    }
    BarChart {
        frame,
        groups,
        bars,
    }
}

/// One fleet part as a strip of quarter-second columns: requests answered well (green) and
/// failures (red) stacked, with a mark where the disruption began and a shade while it lasted.
pub struct Timeline {
    /// `sqlite: rolling restart (round-robin)`.
    pub title: String,
    /// Width of the strip.
    pub width: f64,
    /// Height of the strip.
    pub height: f64,
    /// One stacked column per bucket.
    pub columns: Vec<TimelineColumn>,
    /// The disruption's span, in x.
    pub disrupted_from: f64,
    /// Width of that span.
    pub disrupted_width: f64,
}

/// One bucket of a [`Timeline`].
pub struct TimelineColumn {
    /// Left edge.
    pub x: f64,
    /// Column width.
    pub w: f64,
    /// Top of the green part, and its height.
    pub ok_y: f64,
    /// Height of the green part.
    pub ok_h: f64,
    /// Top of the red part.
    pub failed_y: f64,
    /// Height of the red part.
    pub failed_h: f64,
    /// Tooltip.
    pub title: String,
}

impl Timeline {
    const HEIGHT: f64 = 60.0;
    const COLUMN: f64 = 6.0;

    fn of(variant: &str, part: &super::report::FleetPart) -> Self {
        let most = part
            .timeline
            .iter()
            .map(|b| b.ok + b.failed)
            .max()
            .unwrap_or(1)
            .max(1);
        let scale = Self::HEIGHT / f64::from(most);
        let columns = part
            .timeline
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let ok_h = f64::from(b.ok) * scale;
                let failed_h = f64::from(b.failed) * scale;
                TimelineColumn {
                    x: i as f64 * Self::COLUMN,
                    w: Self::COLUMN - 1.0,
                    ok_y: Self::HEIGHT - ok_h,
                    ok_h,
                    failed_y: Self::HEIGHT - ok_h - failed_h,
                    failed_h,
                    title: format!("{:.2} s: {} ok, {} failed", b.at_secs, b.ok, b.failed),
                }
            })
            .collect::<Vec<_>>();
        let per_sec = Self::COLUMN * 4.0;
        Self {
            title: format!("{variant}: {} ({})", part.part, part.routing.as_str()),
            width: (columns.len() as f64 * Self::COLUMN).max(Self::COLUMN),
            height: Self::HEIGHT,
            columns,
            disrupted_from: part.disrupted_at_secs * per_sec,
            disrupted_width: (part.disruption_secs * per_sec).max(1.0),
        }
    }
}

/// A table of details below a chart: a row per backend (or per backend and scenario).
pub struct DetailTable {
    /// Its `data-test` name.
    pub test: &'static str,
    /// Column headings, first the backend.
    pub headers: Vec<String>,
    /// Cells, first the backend.
    pub rows: Vec<Vec<String>>,
    /// How many leading columns are text; the rest are numbers.
    pub text_columns: usize,
}

impl DetailTable {
    /// The rows `rows_of` gives each backend, each led by the backend's name.
    fn new(
        test: &'static str,
        headers: Vec<String>,
        report: &Report,
        rows_of: impl Fn(&BackendReport) -> Vec<Vec<String>>,
    ) -> Self {
        let rows = report
            .backends
            .iter()
            .flat_map(|b| {
                rows_of(b).into_iter().map(|cells| {
                    let mut row = vec![b.variant.clone()];
                    row.extend(cells);
                    row
                })
            })
            .collect();
        Self {
            test,
            headers,
            rows,
            text_columns: 1,
        }
    }
}

fn headers(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

#[derive(Template)]
#[template(path = "compare_report.html")]
struct ReportPage<'a> {
    report: &'a Report,
    columns: &'static [&'static str],
    rows: Vec<Vec<Cell>>,
    footprint: DetailTable,
    parallel: DetailTable,
    guests: DetailTable,
    fleet: DetailTable,
    timelines: Vec<Timeline>,
    speed: DetailTable,
    line_charts: Vec<LineChart>,
    bar_charts: Vec<BarChart>,
    notes: Vec<String>,
}

/// Renders the self-contained `report.html`.
pub fn render(report: &Report) -> anyhow::Result<String> {
    let sizes = footprint_sizes(report);
    let footprint = DetailTable::new(
        "footprint",
        super::table::footprint_headers(&sizes),
        report,
        |b| {
            b.footprint
                .measured()
                .map(|f| super::table::footprint_row(f, &sizes))
                .into_iter()
                .collect()
        },
    );
    let parallel = DetailTable::new(
        "parallel-writes",
        headers(&[
            "backend",
            "adds at once",
            "rounds",
            "acknowledged",
            "in the cart",
            "lost",
        ]),
        report,
        |b| {
            b.parallel_writes.measured().map_or_else(Vec::new, |p| {
                vec![
                    [p.parallel, p.rounds, p.acknowledged, p.kept, p.lost]
                        .map(|n| n.to_string())
                        .to_vec(),
                ]
            })
        },
    );
    let guests = DetailTable::new(
        "guests",
        headers(&[
            "backend",
            "guests",
            "cookie bytes each",
            "server bytes each",
            "server RSS growth",
            "carts after a restart",
            "one address's flood refused",
        ]),
        report,
        |b| {
            b.guests.measured().map_or_else(Vec::new, |g| {
                vec![vec![
                    g.guests.to_string(),
                    g.cookie_bytes.to_string(),
                    g.server_bytes_each.to_string(),
                    super::table::measured_bytes(g.rss_growth_bytes),
                    format!("{} of {}", g.kept_after_restart, g.sampled_after_restart),
                    format!("{} of {}", g.flood_refused, g.flood_sent),
                ]]
            })
        },
    );
    let fleet = DetailTable {
        text_columns: 3,
        ..DetailTable::new(
            "fleet",
            headers(&super::table::FLEET_HEADERS),
            report,
            |b| {
                b.fleet.measured().map_or_else(Vec::new, |f| {
                    f.parts
                        .iter()
                        .map(|p| super::table::fleet_row(&b.variant, p).split_off(1))
                        .collect()
                })
            },
        )
    };
    let timelines = report
        .fleet_parts()
        .map(|(variant, p)| Timeline::of(variant, p))
        .collect();
    let speed = DetailTable {
        text_columns: 3,
        ..DetailTable::new(
            "speed",
            headers(&super::table::SPEED_HEADERS),
            report,
            |b| {
                b.speed.measured().map_or_else(Vec::new, |speed| {
                    speed
                        .scenarios
                        .iter()
                        .map(|s| super::table::speed_row(&b.variant, s).split_off(1))
                        .collect()
                })
            },
        )
    };
    let notes = report.notes();
    let page = ReportPage {
        report,
        columns: &COLUMNS,
        rows: report
            .backends
            .iter()
            .map(|b| b.cells(report.cart_max_lines))
            .collect(),
        footprint,
        parallel,
        guests,
        fleet,
        timelines,
        speed,
        line_charts: vec![
            footprint_chart(
                report,
                "Cookie bytes on the wire",
                "The cookie backend carries the whole cart in every request; the others send a \
                 key of constant size. The cookie backend refuses the line that would pass the \
                 browser limit.",
                |p| p.cookie_bytes,
                Some(COOKIE_LIMIT),
            ),
            footprint_chart(
                report,
                "Bytes stored on the server",
                "What the server (or its store) keeps per session. The cookie backend keeps \
                 nothing.",
                |p| p.server_bytes,
                None,
            ),
        ],
        bar_charts: vec![
            speed_chart(
                report,
                "Throughput",
                "Successful requests per second (higher is better).",
                "requests/s",
                |s| s.rps,
                "req/s",
            ),
            speed_chart(
                report,
                "Server CPU per request",
                "CPU time (user + system) the server process spent per answered request, from \
                 /proc/<pid>/stat; lower is better. It depends less on the machine than \
                 requests per second do.",
                "µs",
                |s| s.cpu_us_per_request.unwrap_or(0.0),
                "µs",
            ),
            speed_chart(
                report,
                "99th percentile latency",
                "One request in a hundred took longer than this (lower is better).",
                "ms",
                |s| s.p99_ms,
                "ms",
            ),
        ],
        notes,
    };
    Ok(page.render()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes_round_up_to_round_steps() {
        assert_eq!(nice_axis(4096.0), (5000.0, 1000.0));
        assert_eq!(nice_axis(93.0), (100.0, 20.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(12.0), (12.5, 2.5));
    }

    #[test]
    fn tick_labels_keep_the_decimals_the_step_needs() {
        assert_eq!(tick_label(2000.0, 1000.0), "2000");
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_label(0.05, 0.05), "0.05");
    }
}
