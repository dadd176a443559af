//! `status` as text: one block per rollout, then the recent verdicts. Plain when piped; on a
//! terminal, coloured and cut to its width.

use std::fmt::Write;

use super::{CheckState, Report, RolloutView, VerdictView};

/// How to draw.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
    /// Lines are cut to this many characters.
    pub width: Option<usize>,
}

impl Style {
    pub const PLAIN: Style = Style {
        colour: false,
        width: None,
    };
}

const RESET: &str = "\x1b[0m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";

fn paint(style: Style, colour: &str, text: &str) -> String {
    if style.colour {
        format!("{colour}{text}{RESET}")
    } else {
        text.to_string()
    }
}

fn phase_colour(phase: &str) -> &'static str {
    match phase {
        "passed" => GREEN,
        "rolled_back" | "rollback_failed" | "would_roll_back" | "rolling_back" => RED,
        "degraded" | "watching" | "rolling_out" => YELLOW,
        _ => DIM,
    }
}

/// `4m 12s`.
pub fn seconds(s: u64) -> String {
    crate::judge::human(std::time::Duration::from_secs(s))
}

fn time(t: Option<jiff::Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "?".into())
}

fn version(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("?")
}

/// The whole report.
pub fn report(r: &Report, style: Style) -> String {
    let mut out = String::new();
    if r.rollouts.is_empty() {
        out.push_str("No rollouts recorded by deploy-watchdog here.\n");
    }
    for v in &r.rollouts {
        rollout(&mut out, v, style);
        out.push('\n');
    }
    if !r.recent.is_empty() {
        let _ = writeln!(out, "{}", paint(style, BOLD, "RECENT VERDICTS"));
        for v in &r.recent {
            verdict_line(&mut out, v, style, true);
        }
    }
    cut(&out, style)
}

fn rollout(out: &mut String, v: &RolloutView, style: Style) {
    let phase = match &v.reason {
        Some(r) if r != "none" && v.outcome.is_some() => format!("{} ({r})", v.phase),
        _ => v.phase.clone(),
    };
    let _ = writeln!(
        out,
        "{}  {} → {}  revision {}  {}",
        paint(style, BOLD, &format!("{}/{}", v.namespace, v.name)),
        version(&v.from_version),
        version(&v.to_version),
        v.revision,
        paint(style, phase_colour(&v.phase), &phase)
    );
    let window = match (v.window_started_at, v.window_left_seconds, v.window_seconds) {
        (None, _, _) => "not started (rolling out)".to_string(),
        (Some(_), Some(left), Some(len)) => format!("{} left of {}", seconds(left), seconds(len)),
        (Some(started), None, Some(len)) => {
            format!("{} from {}", seconds(len), time(Some(started)))
        }
        (Some(started), _, None) => format!("started {}", time(Some(started))),
    };
    let _ = writeln!(out, "  window   {window}");
    if v.checks.is_empty() {
        let _ = writeln!(out, "  checks   no values recorded yet");
    } else {
        let _ = writeln!(out, "  checks   as of {}", time(v.checks_at));
        let name_width = v
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        for c in &v.checks {
            let (mark, colour) = match c.state {
                CheckState::Ok => ("✓", GREEN),
                CheckState::Failing => ("✗", RED),
                CheckState::Unknown => ("?", YELLOW),
            };
            let baseline = c
                .baseline
                .as_ref()
                .map(|b| format!("  baseline {b}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {} {:<name_width$}  {}  (want {}){baseline}",
                paint(style, colour, mark),
                c.name,
                c.value,
                c.condition
            );
        }
    }
    if let Some(p) = &v.pods {
        let _ = writeln!(
            out,
            "  pods     new {}/{} ready, old {} ready, {} restart{}",
            p.new_ready,
            p.new_desired,
            p.old_ready,
            p.restarts,
            if p.restarts == 1 { "" } else { "s" }
        );
    }
    if let Some(g) = &v.gitops_owner {
        let _ = writeln!(out, "  gitops   {g}");
    }
    if let Some(a) = &v.last_action {
        let reason = if a.warning {
            paint(style, RED, &a.reason)
        } else {
            a.reason.clone()
        };
        let _ = writeln!(out, "  last     {reason} at {}: {}", time(a.at), a.note);
    }
}

fn verdict_line(out: &mut String, v: &VerdictView, style: Style, with_name: bool) {
    let who = if with_name {
        format!("{}/{}  ", v.namespace, v.name)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  {}  {who}revision {}  {} → {}  {}  {}: {}",
        time(v.at),
        v.revision,
        version(&v.from_version),
        version(&v.to_version),
        paint(style, phase_colour(&v.outcome), &v.outcome),
        v.reason.as_deref().unwrap_or("none"),
        v.note
    );
}

/// `history`: the verdicts of each Deployment, newest first.
pub fn history(r: &Report, style: Style) -> String {
    let mut out = String::new();
    let mut by: std::collections::BTreeMap<(String, String), Vec<&VerdictView>> =
        std::collections::BTreeMap::new();
    for v in &r.recent {
        by.entry((v.namespace.clone(), v.name.clone()))
            .or_default()
            .push(v);
    }
    if by.is_empty() {
        out.push_str("No verdicts recorded by deploy-watchdog here.\n");
    }
    for ((ns, name), list) in by {
        let _ = writeln!(out, "{}", paint(style, BOLD, &format!("{ns}/{name}")));
        for v in list {
            verdict_line(&mut out, v, style, false);
        }
    }
    cut(&out, style)
}

/// Each line cut to the width, counting characters (escape codes are not counted).
fn cut(text: &str, style: Style) -> String {
    let Some(width) = style.width else {
        return text.to_string();
    };
    let mut out = String::new();
    for line in text.lines() {
        let mut shown = 0;
        let mut in_escape = false;
        let mut cut_at = line.len();
        for (i, ch) in line.char_indices() {
            if ch == '\x1b' {
                in_escape = true;
            }
            if in_escape {
                if ch == 'm' {
                    in_escape = false;
                }
                continue;
            }
            shown += 1;
            if shown > width {
                cut_at = i;
                break;
            }
        }
        out.push_str(&line[..cut_at]);
        if cut_at < line.len() && style.colour {
            out.push_str(RESET);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_cut_to_the_width_without_counting_colour() {
        let style = Style {
            colour: true,
            width: Some(5),
        };
        let line = format!("{RED}abcdefgh{RESET}\nxy\n");
        assert_eq!(cut(&line, style), format!("{RED}abcde{RESET}\nxy\n"));
        assert_eq!(
            cut(
                "é€😀abcdef\n",
                Style {
                    colour: false,
                    width: Some(4)
                }
            ),
            "é€😀a\n"
        );
    }

    #[test]
    fn plain_text_has_no_escape_codes() {
        let r = Report {
            rollouts: Vec::new(),
            recent: vec![VerdictView {
                namespace: "ns".into(),
                name: "app".into(),
                revision: 2,
                from_version: Some("v1".into()),
                to_version: Some("v2".into()),
                outcome: "rolled_back".into(),
                reason: Some("error_rate".into()),
                note: "error rate 5 % > 1 %".into(),
                at: None,
            }],
            findings: Vec::new(),
        };
        let plain = report(&r, Style::PLAIN);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(plain.contains(
            "ns/app  revision 2  v1 → v2  rolled_back  error_rate: error rate 5 % > 1 %"
        ));
        let coloured = report(
            &r,
            Style {
                colour: true,
                width: None,
            },
        );
        assert!(coloured.contains(RED));
    }
}
