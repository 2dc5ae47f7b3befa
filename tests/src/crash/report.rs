//! Per-cell sums of the trials, the run's verdict, and the three outputs:
//! `durability.md` (a Markdown table), `durability.json` (cells and every
//! trial) and `durability.svg` (a hand-written bar chart).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::trial::TrialResult;
use super::{Fault, Mode};

/// The sums for one (mode, fault) cell.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cell {
    pub mode: String,
    pub fault: String,
    /// Why the cell did not run (e.g. not root), if it did not.
    pub skipped: Option<String>,
    pub trials: u64,
    pub attempted: u64,
    pub acked: u64,
    pub acked_lost: u64,
    pub trials_with_acked_loss: u64,
    /// 95% upper bound on the per-trial probability of losing an
    /// acknowledged write when none was lost (rule of three: 3/N).
    pub loss_probability_upper_95: Option<f64>,
    pub acked_lost_bytes: u64,
    pub acked_lost_span_ms_max: f64,
    pub failed_present: u64,
    pub failed_absent: u64,
    pub unknown_present: u64,
    pub unknown_absent: u64,
    pub rewinds: u64,
    pub rewound_records: u64,
    pub rewound_bytes: u64,
    pub promote_ms_median: Option<f64>,
    pub promote_ms_max: Option<f64>,
    pub converged_trials: u64,
    pub phantom_values: u64,
    pub harness_errors: u64,
    pub delay_via: String,
    /// Broken invariants, one line per trial.
    pub violations: Vec<String>,
}

impl Cell {
    pub fn new(mode: Mode, fault: Fault) -> Cell {
        Cell {
            mode: mode.to_string(),
            fault: fault.to_string(),
            ..Cell::default()
        }
    }

    pub fn skipped(mode: Mode, fault: Fault, why: &str) -> Cell {
        Cell {
            skipped: Some(why.to_string()),
            ..Cell::new(mode, fault)
        }
    }

    /// Sums `trials` (all of this cell).
    pub fn from_trials(mode: Mode, fault: Fault, trials: &[&TrialResult]) -> Cell {
        let mut c = Cell::new(mode, fault);
        let mut promote: Vec<f64> = Vec::new();
        for t in trials {
            c.trials += 1;
            c.attempted += t.attempted;
            c.acked += t.acked;
            c.acked_lost += t.acked_lost;
            c.trials_with_acked_loss += u64::from(t.acked_lost > 0);
            c.acked_lost_bytes += t.acked_lost_bytes;
            c.acked_lost_span_ms_max = c.acked_lost_span_ms_max.max(t.acked_lost_span_ms);
            c.failed_present += t.failed_present;
            c.failed_absent += t.failed_absent;
            c.unknown_present += t.unknown_present;
            c.unknown_absent += t.unknown_absent;
            c.rewinds += t.rewinds;
            c.rewound_records += t.rewound_records;
            c.rewound_bytes += t.rewound_bytes;
            c.converged_trials += u64::from(t.converged);
            c.phantom_values += t.phantoms.len() as u64;
            c.harness_errors += u64::from(t.error.is_some() && t.promote_ms.is_none());
            promote.extend(t.promote_ms);
            if c.delay_via.is_empty() {
                c.delay_via.clone_from(&t.delay_via);
            }
            if let Some(v) = t.violation(mode) {
                c.violations.push(format!(
                    "trial {} (seed {}): {v}{}",
                    t.trial,
                    t.seed,
                    t.kept_dir
                        .as_ref()
                        .map(|d| format!(" [logs: {d}]"))
                        .unwrap_or_default()
                ));
            }
        }
        if c.trials > 0 && c.trials_with_acked_loss == 0 {
            c.loss_probability_upper_95 = Some((3.0 / c.trials as f64).min(1.0));
        }
        promote.sort_by(f64::total_cmp);
        c.promote_ms_median = median(&promote);
        c.promote_ms_max = promote.last().copied();
        c
    }

    pub fn all_converged(&self) -> bool {
        self.converged_trials == self.trials
    }

    pub fn acked_lost_per_trial(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.acked_lost as f64 / self.trials as f64
        }
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// What the run was, for the headers of every output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunInfo {
    pub seed: u64,
    pub command: String,
    pub trials_per_cell: u64,
    pub clients: u32,
    pub started_unix: u64,
    pub duration_s: f64,
    pub binary: String,
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

/// The Markdown table.
pub fn markdown(run: &RunInfo, cells: &[Cell]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Crash-recovery harness: seed {}, {} trials per cell, {} clients, {:.0} s.\n\
         Replay: `{}`\n",
        run.seed, run.trials_per_cell, run.clients, run.duration_s, run.command
    );
    s.push_str(
        "| mode | fault | trials | writes attempted | acked | **acked lost** | trials with acked loss (95% bound) | unknown present / absent | failed present / absent | records rewound | lost bytes | lost span ms (max) | promote ms median / max | converged |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for c in cells {
        if let Some(why) = &c.skipped {
            let _ = writeln!(
                s,
                "| {} | {} | skipped: {why} |||||||||||||",
                c.mode, c.fault
            );
            continue;
        }
        let bound = match c.loss_probability_upper_95 {
            Some(b) => format!("0 (≤ {:.1}%)", b * 100.0),
            None => format!("{}", c.trials_with_acked_loss),
        };
        let _ = writeln!(
            s,
            "| {} | {}{} | {} | {} | {} | **{}** | {} | {} / {} | {} / {} | {} | {} | {:.0} | {} / {} | {} |",
            c.mode,
            c.fault,
            if c.delay_via == "proxy" { " (proxy)" } else { "" },
            c.trials,
            c.attempted,
            c.acked,
            c.acked_lost,
            bound,
            c.unknown_present,
            c.unknown_absent,
            c.failed_present,
            c.failed_absent,
            c.rewound_records,
            c.acked_lost_bytes,
            c.acked_lost_span_ms_max,
            opt_ms(c.promote_ms_median),
            opt_ms(c.promote_ms_max),
            if c.all_converged() {
                "yes".to_string()
            } else {
                format!("**{} of {}**", c.converged_trials, c.trials)
            }
        );
    }
    let violations: Vec<&String> = cells.iter().flat_map(|c| &c.violations).collect();
    if violations.is_empty() {
        s.push_str("\nInvariants held: no acknowledged write lost in a synchronous mode, every node converged, no value nobody wrote.\n");
    } else {
        s.push_str("\nInvariant violations:\n\n");
        for v in violations {
            let _ = writeln!(s, "- {v}");
        }
    }
    s
}

/// The SVG bar chart: acknowledged writes lost per trial, by fault (groups)
/// and mode (bars).
pub fn svg(run: &RunInfo, cells: &[Cell]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 380.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 70.0;
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let faults: Vec<&str> = {
        let mut f: Vec<&str> = Vec::new();
        for c in cells {
            if !f.contains(&c.fault.as_str()) {
                f.push(&c.fault);
            }
        }
        f
    };
    let modes: Vec<String> = Mode::ALL.iter().map(|m| m.to_string()).collect();
    let max = cells
        .iter()
        .map(Cell::acked_lost_per_trial)
        .fold(0.0f64, f64::max);
    let top_value = nice_ceiling(max.max(1.0));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let group_w = plot_w / faults.len().max(1) as f64;
    let bar_w = group_w * 0.8 / modes.len() as f64;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top_value);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Acknowledged writes lost per trial after failover</text>"#,
        W / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="40" text-anchor="middle" fill="#555">seed {}, {} trials per cell, {} clients (a missing bar: cell skipped)</text>"##,
        W / 2.0,
        run.seed,
        run.trials_per_cell,
        run.clients
    );
    for i in 0..=4 {
        let v = top_value * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            fmt_num(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">acked writes lost / trial</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (fi, fault) in faults.iter().enumerate() {
        let gx = LEFT + group_w * fi as f64 + group_w * 0.1;
        for (mi, mode) in modes.iter().enumerate() {
            let Some(c) = cells
                .iter()
                .find(|c| c.fault == *fault && c.mode == *mode && c.skipped.is_none())
            else {
                continue;
            };
            let v = c.acked_lost_per_trial();
            let x = gx + bar_w * mi as f64;
            let top = y(v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{mode} / {fault}: {} acked lost in {} trials</title></rect>"#,
                bar_w * 0.9,
                (TOP + plot_h - top).max(0.0),
                colors[mi],
                c.acked_lost,
                c.trials
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                x + bar_w * 0.45,
                top - 3.0,
                fmt_num(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{fault}</text>"#,
            LEFT + group_w * (fi as f64 + 0.5),
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        TOP + plot_h,
        W - RIGHT,
        TOP + plot_h
    );
    for (mi, mode) in modes.iter().enumerate() {
        let x = LEFT + 150.0 * mi as f64;
        let yy = H - 22.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{yy:.1}">{}</text>"#,
            yy - 10.0,
            colors[mi],
            x + 16.0,
            match mode.as_str() {
                "async" => "async",
                "first1" => "FIRST 1 (s1, s2)",
                "any1" => "ANY 1 (s1, s2)",
                _ => "ANY 2 (s1, s2)",
            }
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// 1, 2, 5 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mut base = 1.0;
    while base * 10.0 < v {
        base *= 10.0;
    }
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&c| c >= v)
        .unwrap_or(base * 10.0)
}

/// Writes `durability.md`, `.json` and `.svg` into `out`.
pub fn write_all(out: &Path, run: &RunInfo, cells: &[Cell], trials: &[TrialResult]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("durability.md"), markdown(run, cells))?;
    std::fs::write(out.join("durability.svg"), svg(run, cells))?;
    let json = serde_json::json!({ "run": run, "cells": cells, "trials": trials });
    std::fs::write(
        out.join("durability.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}
