//! The table of counts, one row per scenario, printed with `eprintln!` (`--nocapture` shows it).

use std::fmt::Write as _;

use crate::tally::Tally;

/// The column headings and what each means (printed under the table).
const LEGEND: &str = "\
  201: signups accepted of those sent; other: other answers (status×n, conn = no answer)\n\
  creds: credential rows; outbox: rows not yet published; users: users projected;\n\
  mailed: distinct recipients; dup (same): duplicate mails (of which same Message-ID, allowed);\n\
  lost s/p/m: 201s without credential / credentials not projected / not mailed;\n\
  dlq: messages parked; queued: messages left elsewhere; get_user: sampled lookups that matched";

/// Renders the table of `rows` (scenario name, its tally, seconds it took).
pub fn table(rows: &[(String, Tally, f64)]) -> String {
    let mut out = String::new();
    let header = [
        "scenario",
        "201",
        "other",
        "creds",
        "outbox",
        "users",
        "mailed",
        "dup (same, allowed)",
        "lost s/p/m",
        "dlq",
        "queued",
        "get_user",
        "settled",
        "took",
        "verdict",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for (name, tally, took) in rows {
        lines.push(vec![
            name.clone(),
            format!("{}/{}", tally.accepted, tally.attempted),
            tally.other_answers.clone(),
            tally.credentials.to_string(),
            tally.outbox_left.to_string(),
            tally.projected.to_string(),
            tally.mailed.to_string(),
            format!("{} ({}, {})", tally.duplicates, tally.duplicates_same_id, tally.allowed_duplicates),
            format!("{}/{}/{}", tally.lost_signups, tally.lost_projections, tally.lost_mails),
            tally.parked.to_string(),
            tally.queued.to_string(),
            format!("{}/{}", tally.get_user_ok, tally.get_user_sampled),
            tally.settled_after.map_or_else(|| "no".to_owned(), |after| format!("{:.1} s", after.as_secs_f64())),
            format!("{took:.0} s"),
            if tally.failures().is_empty() { "PASS".to_owned() } else { "FAIL".to_owned() },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| lines.iter().map(|line| line[column].chars().count()).max().unwrap_or(0))
        .collect();
    for (n, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    out.push_str(LEGEND);
    out.push('\n');
    out
}
