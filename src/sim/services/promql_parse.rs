//! The parser of the PromQL subset in [`super::promql`], with Prometheus' error wording
//! (`1:5: parse error: …`).

use super::promql::{
    AggregateOp, Expr, Function, Grouping, Matcher, PromqlError, has_non_empty_matcher, matcher,
};

/// Functions Prometheus knows but the simulation does not evaluate.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "irate",
    "delta",
    "idelta",
    "deriv",
    "resets",
    "changes",
    "abs",
    "absent",
    "avg_over_time",
    "sum_over_time",
    "max_over_time",
    "min_over_time",
    "count_over_time",
    "histogram_quantile",
    "label_replace",
    "label_join",
    "scalar",
    "vector",
    "time",
    "clamp_min",
    "clamp_max",
    "round",
];

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

/// Parses a query of the supported subset.
pub fn parse(text: &str) -> Result<Expr, PromqlError> {
    let mut p = Parser { text, pos: 0 };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("no expression found in input"));
    }
    let expr = p.expr()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(&format!(
            "unexpected character: {:?}",
            p.rest().chars().next().unwrap_or(' ')
        )));
    }
    Ok(expr)
}

impl Parser<'_> {
    fn error(&self, message: &str) -> PromqlError {
        PromqlError::Parse {
            position: self.pos,
            message: message.to_string(),
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.rest().chars().next()
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), PromqlError> {
        if self.eat(token) {
            Ok(())
        } else if self.at_end() {
            Err(self.error(&format!("unexpected end of input, expected \"{token}\"")))
        } else {
            Err(self.error(&format!(
                "unexpected {:?}, expected \"{token}\"",
                self.rest().chars().next().unwrap_or(' ')
            )))
        }
    }

    fn ident(&mut self) -> Option<&str> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
            })
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        if len == 0 {
            return None;
        }
        let start = self.pos;
        self.pos += len;
        Some(&self.text[start..start + len])
    }

    fn expr(&mut self) -> Result<Expr, PromqlError> {
        let start = self.pos;
        let Some(name) = self.ident().map(str::to_string) else {
            if self.peek() == Some('{') {
                return self.selector(None);
            }
            return Err(self.error("unexpected character, expected an expression"));
        };
        let op = match name.as_str() {
            "sum" => Some(AggregateOp::Sum),
            "avg" => Some(AggregateOp::Avg),
            "min" => Some(AggregateOp::Min),
            "max" => Some(AggregateOp::Max),
            "count" => Some(AggregateOp::Count),
            _ => None,
        };
        if let Some(op) = op {
            let mut grouping = self.grouping()?;
            self.expect("(")?;
            let arg = self.expr()?;
            self.expect(")")?;
            if grouping.is_none() {
                grouping = self.grouping()?;
            }
            return Ok(Expr::Aggregate {
                op,
                grouping,
                arg: Box::new(arg),
            });
        }
        if self.peek() == Some('(') {
            let function = match name.as_str() {
                "increase" => Function::Increase,
                "rate" => Function::Rate,
                other if KNOWN_UNSUPPORTED.contains(&other) => {
                    self.pos = start;
                    return Err(self.error(&format!(
                        "function \"{other}\" is not supported by the simulation"
                    )));
                }
                other => {
                    self.pos = start;
                    return Err(self.error(&format!("unknown function with name \"{other}\"")));
                }
            };
            self.expect("(")?;
            let arg = self.expr()?;
            self.expect(")")?;
            if !matches!(arg, Expr::Selector { range: Some(_), .. }) {
                return Err(self.error(&format!(
                    "expected type range vector in call to function \"{}\", got instant vector",
                    function.name()
                )));
            }
            return Ok(Expr::Call {
                function,
                arg: Box::new(arg),
            });
        }
        self.selector(Some(name))
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, PromqlError> {
        let save = self.pos;
        let kind = match self.ident() {
            Some("by") => true,
            Some("without") => false,
            _ => {
                self.pos = save;
                return Ok(None);
            }
        };
        self.expect("(")?;
        let mut labels = Vec::new();
        while !self.eat(")") {
            let Some(label) = self.ident() else {
                return Err(self.error("unexpected character in grouping opts, expected label"));
            };
            labels.push(label.to_string());
            if !self.eat(",") {
                self.expect(")")?;
                break;
            }
        }
        Ok(Some(if kind {
            Grouping::By(labels)
        } else {
            Grouping::Without(labels)
        }))
    }

    fn selector(&mut self, name: Option<String>) -> Result<Expr, PromqlError> {
        let start = self.pos;
        let mut matchers = Vec::new();
        if let Some(name) = &name {
            matchers.push(Matcher::Equal("__name__".into(), name.clone()));
        }
        if self.eat("{") {
            while !self.eat("}") {
                let Some(label) = self.ident().map(str::to_string) else {
                    return Err(self.error("unexpected character inside braces, expected label"));
                };
                self.skip_ws();
                let op = ["=~", "!~", "!=", "="]
                    .into_iter()
                    .find(|op| self.rest().starts_with(op));
                let Some(op) = op else {
                    return Err(self.error(
                        "unexpected character inside braces, expected label matching operator",
                    ));
                };
                self.pos += op.len();
                let value = self.string()?;
                matchers.push(matcher(&label, op, &value).map_err(|m| self.error(&m))?);
                if !self.eat(",") {
                    self.expect("}")?;
                    break;
                }
            }
        }
        if !has_non_empty_matcher(&matchers) {
            self.pos = start;
            return Err(self.error("vector selector must contain at least one non-empty matcher"));
        }
        let range = if self.eat("[") {
            let end = self
                .rest()
                .find(']')
                .ok_or_else(|| self.error("unclosed left bracket"))?;
            let text = self.rest()[..end].trim().to_string();
            let seconds = parse_duration(&text)
                .ok_or_else(|| self.error(&format!("bad number or duration syntax: \"{text}\"")))?;
            self.pos += end + 1;
            Some(seconds)
        } else {
            None
        };
        Ok(Expr::Selector { matchers, range })
    }

    fn string(&mut self) -> Result<String, PromqlError> {
        self.skip_ws();
        let mut chars = self.rest().char_indices();
        let Some((_, quote)) = chars.next().filter(|(_, c)| matches!(c, '"' | '\'' | '`')) else {
            return Err(self.error("unexpected character inside braces, expected string"));
        };
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                out.push(match c {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' && quote != '`' {
                escaped = true;
            } else if c == quote {
                self.pos += i + 1;
                return Ok(out);
            } else {
                out.push(c);
            }
        }
        Err(self.error("unterminated quoted string"))
    }
}

/// A Prometheus duration (`500ms`, `30s`, `1m30s`, `2h`, `1d`, `1w`, `1y`) in seconds; a plain
/// number is seconds too, as Prometheus 3 allows.
pub fn parse_duration(text: &str) -> Option<f64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds > 0.0).then_some(seconds);
    }
    let units = [
        ("ms", 0.001),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("d", 86400.0),
        ("w", 604800.0),
        ("y", 31536000.0),
    ];
    let mut rest = text;
    let mut total = 0.0;
    let mut last_rank = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // Longest unit first so "ms" is not read as "m".
        let (index, (unit, factor)) = units
            .iter()
            .enumerate()
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        // Units must go from largest to smallest, each at most once.
        let rank = units.len() - index;
        if rank <= last_rank {
            return None;
        }
        last_rank = rank;
        rest = &rest[unit.len()..];
        total += number as f64 * factor;
    }
    (total > 0.0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Some(90.0));
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("1h"), Some(3600.0));
        assert_eq!(parse_duration("30s1m"), None);
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration(""), None);
    }
}
