//! The comparison as tables: the summary row of each backend (with what contradicts the
//! backend table marked), the plain-text report for the terminal, and the cells and short
//! numbers the HTML report shares.

use std::fmt::Write as _;

use super::report::{
    BackendReport, Expected, Footprint, Outcome, Report, ScenarioResult, Seen, footprint_sizes,
};

/// One table cell: its text and whether it contradicts the backend table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// What the cell says.
    pub text: String,
    /// `ok`, `bad` (differs from the design, or failed), `skip` or `info`.
    pub class: &'static str,
}

impl Cell {
    fn new(text: impl Into<String>, class: &'static str) -> Self {
        Self {
            text: text.into(),
            class,
        }
    }

    fn of<T>(outcome: &Outcome<T>, measured: impl FnOnce(&T) -> Cell) -> Self {
        match outcome {
            Outcome::Measured(t) => measured(t),
            Outcome::Failed(_) => Self::new("failed", "bad"),
            Outcome::Skipped(_) => Self::new("skipped", "skip"),
        }
    }

    fn judged(text: impl Into<String>, as_designed: bool) -> Self {
        if as_designed {
            Self::new(text, "ok")
        } else {
            Self::new(format!("{}!", text.into()), "bad")
        }
    }
}

/// Headers of the summary table: the backend, then one column per experiment.
pub const COLUMNS: [&str; 11] = [
    "backend",
    "restart",
    "crash",
    "2 instances",
    "logout replay",
    "idle expiry",
    "parallel writes",
    "guests",
    "revoke one device",
    "footprint",
    "speed (req/s)",
];

fn seen_cell(seen: &Seen, expected: bool, shared: bool) -> Cell {
    let text = match (seen.kept(), seen.logged_in, shared) {
        (true, _, false) => "kept".to_owned(),
        (true, _, true) => "shared".to_owned(),
        (false, false, false) => "lost".to_owned(),
        (false, false, true) => "not shared".to_owned(),
        (false, true, _) => format!(
            "login only, {}/{} lines",
            seen.cart_lines, seen.cart_lines_before
        ),
    };
    Cell::judged(text, seen.kept() == expected)
}

/// Short byte counts: `930 B`, `3.9 kB`.
pub fn bytes(n: usize) -> String {
    if n < 1000 {
        format!("{n} B")
    } else {
        let kb = n as f64 / 1000.0;
        format!("{kb:.1} kB")
    }
}

/// A byte count the platform may not have given: `n/a` then.
pub fn measured_bytes(n: Option<u64>) -> String {
    n.map_or_else(
        || "n/a".to_owned(),
        |n| bytes(usize::try_from(n).unwrap_or(usize::MAX)),
    )
}

/// Short rates: `830`, `4.2k`.
pub fn rate(rps: f64) -> String {
    if rps < 1000.0 {
        format!("{rps:.0}")
    } else {
        format!("{:.1}k", rps / 1000.0)
    }
}

impl BackendReport {
    /// The summary row, one cell per entry of [`COLUMNS`].
    pub fn cells(&self, cart_max_lines: usize) -> Vec<Cell> {
        let expected = Expected::of(self.backend, self.cookie_revocation);
        let footprint = Cell::of(&self.footprint, |f| {
            let at_max = f.at(cart_max_lines).or(f.points.last());
            let mut text = at_max.map_or_else(String::new, |p| {
                format!(
                    "{} lines: cookie {}, server {}",
                    p.lines,
                    bytes(p.cookie_bytes),
                    bytes(p.server_bytes)
                )
            });
            match f.probe.refused_at {
                Some(n) => {
                    let _ = write!(text, "; refuses line {n}");
                }
                None => {
                    let _ = write!(text, "; took all {}", f.probe.cap);
                }
            }
            Cell::new(text, "info")
        });
        let speed = Cell::of(&self.speed, |s| {
            let part = |name: &str| s.scenario(name).map_or("-".to_owned(), |r| rate(r.rps));
            Cell::new(
                format!(
                    "{} / {} / {}",
                    part("home"),
                    part("cart_read"),
                    part("cart_write")
                ),
                "info",
            )
        });
        vec![
            Cell::new(self.variant.clone(), "info"),
            Cell::of(&self.restart, |s| seen_cell(s, expected.restart, false)),
            Cell::of(&self.crash, |s| seen_cell(s, expected.crash, false)),
            Cell::of(&self.instances, |s| seen_cell(s, expected.instances, true)),
            Cell::of(&self.logout_replay, |r| {
                let text = if r.accepted { "accepted" } else { "rejected" };
                Cell::judged(text, r.accepted == expected.replay_accepted && r.logged_out)
            }),
            Cell::of(&self.expiry, |e| {
                let text = if e.ended {
                    format!("ended after {:.0} s", e.idle_secs)
                } else {
                    format!("alive after {:.0} s", e.idle_secs)
                };
                Cell::judged(text, e.ended && e.logged_in_before)
            }),
            Cell::of(&self.parallel_writes, |p| {
                let text = format!("lost {} of {}", p.lost, p.acknowledged);
                // The cookie backend's loss is its documented behaviour, not a defect.
                Cell::judged(text, p.lost == 0 || !expected.parallel_lossless)
            }),
            Cell::of(&self.guests, |g| {
                let restart = if g.kept_after_restart == g.sampled_after_restart {
                    "kept"
                } else if g.kept_after_restart == 0 {
                    "lost"
                } else {
                    "partly kept"
                };
                let text = format!(
                    "{} each: cookie {}, server {}; restart: {restart}; flood: {} of {} refused",
                    g.guests,
                    bytes(g.cookie_bytes),
                    bytes(g.server_bytes_each),
                    g.flood_refused,
                    g.flood_sent
                );
                let all_kept = g.kept_after_restart == g.sampled_after_restart;
                // A backend that keeps guest state must bound it; the cookie one has none.
                let bounded = (g.flood_refused > 0) == (g.server_bytes_each > 0);
                Cell::judged(text, all_kept == expected.restart && bounded)
            }),
            Cell::of(&self.revoke_one, |r| {
                let text = match (r.listed, r.ended) {
                    (0, false) => "cannot list".to_owned(),
                    (_, true) => "ended".to_owned(),
                    (_, false) => "not ended".to_owned(),
                };
                Cell::judged(text, r.ended == expected.revoke_one && r.first_kept)
            }),
            footprint,
            speed,
        ]
    }
}

impl Report {
    /// The summary table and the details, as plain text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let rows: Vec<Vec<String>> = self
            .backends
            .iter()
            .map(|b| {
                b.cells(self.cart_max_lines)
                    .into_iter()
                    .map(|c| c.text)
                    .collect()
            })
            .collect();
        out.push_str(&text_table(&COLUMNS, &rows));
        let _ = writeln!(
            out,
            "\n\"!\" marks a result that differs from the README's backend table. Footprint: \
             at cart_max_lines = {}, one unit per line. Speed: GET / / GET /cart / POST \
             /cart/add|update.",
            self.cart_max_lines
        );

        let mut speed_rows = Vec::new();
        for b in &self.backends {
            if let Some(speed) = b.speed.measured() {
                for s in &speed.scenarios {
                    speed_rows.push(speed_row(&b.variant, s));
                }
            }
        }
        if !speed_rows.is_empty() {
            let _ = writeln!(
                out,
                "\nSpeed: {} concurrent clients sharing one login, {} s per scenario, {} build, \
                 {} cores shared by client and server; CPU us/req is the server process's CPU \
                 time per answered request, the figure that holds best across machines",
                self.load.concurrency,
                self.load.duration_secs,
                self.machine.build,
                self.machine.cores
            );
            out.push_str(&text_table(&SPEED_HEADERS, &speed_rows));
        }

        let sizes = footprint_sizes(self);
        let size_rows: Vec<Vec<String>> = self
            .backends
            .iter()
            .filter_map(|b| {
                let mut row = vec![b.variant.clone()];
                row.extend(footprint_row(b.footprint.measured()?, &sizes));
                Some(row)
            })
            .collect();
        if !size_rows.is_empty() {
            let _ = writeln!(
                out,
                "\nFootprint: cookie bytes / server bytes by cart lines"
            );
            let headers = footprint_headers(&sizes);
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            out.push_str(&text_table(&headers, &size_rows));
        }

        let fleet_rows: Vec<Vec<String>> = self
            .fleet_parts()
            .map(|(variant, p)| fleet_row(variant, p))
            .collect();
        if !fleet_rows.is_empty() {
            let _ = writeln!(
                out,
                "\nFleet: 3 instances behind a health-checking balancer, 12 shoppers"
            );
            out.push_str(&text_table(&FLEET_HEADERS, &fleet_rows));
        }

        for note in self.notes() {
            let _ = writeln!(out, "\n{note}");
        }
        out
    }
}

/// Headings of the fleet table.
pub const FLEET_HEADERS: [&str; 9] = [
    "backend",
    "part",
    "routing",
    "requests",
    "5xx",
    "unanswered",
    "logged out",
    "adds lost",
    "well again after",
];

/// One fleet part as a row of [`FLEET_HEADERS`].
pub fn fleet_row(variant: &str, p: &super::report::FleetPart) -> Vec<String> {
    vec![
        variant.to_owned(),
        p.part.clone(),
        p.routing.as_str().to_owned(),
        p.requests.to_string(),
        p.server_errors.to_string(),
        p.unanswered.to_string(),
        format!("{} of {}", p.shoppers_logged_out, p.shoppers),
        p.adds_lost.to_string(),
        format!("{:.1} s", p.recovered_after_secs),
    ]
}

/// The headings of the footprint tables (terminal and HTML) for these cart sizes.
pub fn footprint_headers(sizes: &[usize]) -> Vec<String> {
    let mut headers = vec!["backend".to_owned()];
    headers.extend(sizes.iter().map(|n| format!("{n} lines")));
    headers.push("refuses".to_owned());
    headers
}

/// One backend's footprint cells after its name: cookie / server bytes at each size, and
/// where the probe was refused.
pub fn footprint_row(f: &Footprint, sizes: &[usize]) -> Vec<String> {
    let mut cells: Vec<String> = sizes
        .iter()
        .map(|&n| {
            f.at(n).map_or("-".to_owned(), |p| {
                format!("{} / {}", p.cookie_bytes, p.server_bytes)
            })
        })
        .collect();
    cells.push(f.probe.refused_at.map_or_else(
        || format!("none up to {} lines", f.probe.cap),
        |n| format!("line {n} ({})", f.probe.refusal_status.unwrap_or_default()),
    ));
    cells
}

/// The headings of [`speed_row`]'s cells.
pub const SPEED_HEADERS: [&str; 9] = [
    "backend",
    "request",
    "kind",
    "req/s",
    "p50 ms",
    "p99 ms",
    "CPU us/req",
    "requests",
    "errors",
];

/// One scenario's row of the speed tables (terminal and HTML): backend, request, kind, req/s,
/// p50, p99, CPU per request, requests, errors.
pub fn speed_row(variant: &str, s: &ScenarioResult) -> Vec<String> {
    vec![
        variant.to_owned(),
        s.request.clone(),
        s.kind.clone(),
        format!("{:.0}", s.rps),
        format!("{:.2}", s.p50_ms),
        format!("{:.2}", s.p99_ms),
        s.cpu_text(),
        s.requests.to_string(),
        s.errors.to_string(),
    ]
}

/// Left-aligned columns separated by two spaces, with a rule under the header.
fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            if i + 1 < widths.len() {
                s.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|&w| "-".repeat(w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_against_the_design_is_marked() {
        let lost = Seen {
            logged_in: false,
            cart_lines: 0,
            cart_lines_before: 3,
            cart_intact: false,
        };
        assert_eq!(seen_cell(&lost, false, false), Cell::new("lost", "ok"));
        assert_eq!(seen_cell(&lost, true, false), Cell::new("lost!", "bad"));
    }

    #[test]
    fn text_tables_align_columns() {
        let table = text_table(&["a", "bb"], &[vec!["long".to_owned(), "x".to_owned()]]);
        assert_eq!(table, "a     bb\n----  --\nlong  x\n");
    }

    #[test]
    fn sizes_and_rates_read_short() {
        assert_eq!(bytes(930), "930 B");
        assert_eq!(bytes(3_912), "3.9 kB");
        assert_eq!(rate(830.4), "830");
        assert_eq!(rate(4_210.0), "4.2k");
    }
}
