//! `doctor`'s text: one line per finding, grouped by check, its fix under it; a summary last.

use std::fmt::Write;

use super::{Finding, Severity};

/// The findings as people read them; `colour` on a terminal.
pub fn text(findings: &[Finding], colour: bool) -> String {
    let paint = |severity: Severity, text: &str| -> String {
        let code = match severity {
            Severity::Ok => "\x1b[32m",
            Severity::Warning => "\x1b[33m",
            Severity::Blocking => "\x1b[31;1m",
        };
        if colour {
            format!("{code}{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let mut last = None;
    for f in findings {
        if last != Some(f.check) {
            let _ = writeln!(out, "{}", f.check.as_str());
            last = Some(f.check);
        }
        let mark = match f.severity {
            Severity::Ok => "ok      ",
            Severity::Warning => "WARNING ",
            Severity::Blocking => "BLOCKING",
        };
        let _ = writeln!(
            out,
            "  {} {}: {}",
            paint(f.severity, mark),
            f.subject,
            f.message
        );
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "           fix: {fix}");
        }
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (blocking, warnings) = (count(Severity::Blocking), count(Severity::Warning));
    let warnings = match warnings {
        1 => "1 warning".to_string(),
        n => format!("{n} warnings"),
    };
    let _ = writeln!(
        out,
        "\n{}",
        if blocking > 0 {
            paint(
                Severity::Blocking,
                &format!(
                    "{blocking} blocking, {warnings}: the watchdog cannot do its job until the blocking ones are fixed"
                ),
            )
        } else if count(Severity::Warning) > 0 {
            paint(Severity::Warning, &format!("{warnings}, nothing blocking"))
        } else {
            paint(Severity::Ok, "everything checked works")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::*;

    #[test]
    fn a_blocking_finding_is_named_with_its_fix_and_counted() {
        let findings = vec![
            Finding::ok(Check::Sinks, "notify.slack", "on"),
            Finding::problem(
                Severity::Blocking,
                Check::Sinks,
                "notify.pagerduty",
                "off: no routing key",
                "give the routing key",
            ),
        ];
        let t = text(&findings, false);
        assert!(!t.contains('\x1b'));
        assert!(
            t.contains("BLOCKING notify.pagerduty: off: no routing key"),
            "{t}"
        );
        assert!(t.contains("fix: give the routing key"), "{t}");
        assert!(t.contains("1 blocking, 0 warnings"), "{t}");
        assert_eq!(
            super::super::exit_code(&findings),
            super::super::EXIT_BLOCKING
        );
        assert_eq!(super::super::exit_code(&findings[..1]), 0);
    }
}
