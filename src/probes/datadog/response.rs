//! Reading Datadog's answers (TimeseriesFormulaQueryResponse, APIErrorResponse): each series'
//! points summed, per formula or per group; an error body, a partial answer or an answer that
//! does not add up is a failure that says why, never counts.

use std::collections::HashMap;

use serde::Deserialize;

use crate::check::ObjectKey;
use crate::probes::error::ProbeError;
use crate::probes::prometheus::QueryResult;

// The answer (TimeseriesFormulaQueryResponse) and the error body (APIErrorResponse).

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    data: Option<ResponseData>,
    #[serde(default)]
    errors: Option<Errors>,
}

#[derive(Debug, Deserialize)]
struct ResponseData {
    #[serde(default)]
    attributes: Option<ResponseAttributes>,
}

#[derive(Debug, Deserialize)]
struct ResponseAttributes {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    values: Vec<Vec<Option<f64>>>,
}

#[derive(Debug, Deserialize)]
struct Series {
    /// Index in the request's `formulas`.
    #[serde(default)]
    query_index: usize,
    /// `tag:value` of each `by {…}` tag.
    #[serde(default)]
    group_tags: Option<Vec<String>>,
}

/// One answered series: its formula, group tags, and its points summed (`None`: no point).
struct Summed {
    formula: usize,
    group_tags: Vec<String>,
    sum: Option<f64>,
}

/// `errors` is a list in error bodies and a single string in a partial timeseries answer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Errors {
    List(Vec<String>),
    One(String),
}

impl Errors {
    fn text(self) -> String {
        match self {
            Errors::List(list) => list.join("; "),
            Errors::One(s) => s,
        }
    }
}

/// Reads an answer to a request of `formulas` formulas into its series, each one's points
/// summed.
fn series(status: u16, body: &[u8], formulas: usize) -> Result<Vec<Summed>, ProbeError> {
    let response: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) if status != 200 => return Err(ProbeError::status(status, None)),
        Err(e) => return Err(ProbeError::BadResponse(format!("unreadable answer: {e}"))),
    };
    let errors = response.errors.map(Errors::text).filter(|e| !e.is_empty());
    if status != 200 {
        return Err(ProbeError::status(status, errors));
    }
    let Some(attributes) = response.data.and_then(|d| d.attributes) else {
        return Err(ProbeError::BadResponse(match errors {
            Some(e) => format!("error in the answer: {e}"),
            None => "no data in the answer".into(),
        }));
    };
    // Errors beside data: some of it could not be read, and what is missing could be the
    // errors' series. A partial answer is no evidence at all.
    if let Some(e) = errors {
        return Err(ProbeError::Partial(format!("partial answer: {e}")));
    }
    if attributes.series.len() != attributes.values.len() {
        return Err(ProbeError::BadResponse(format!(
            "{} series but {} value lists",
            attributes.series.len(),
            attributes.values.len()
        )));
    }
    attributes
        .series
        .into_iter()
        .zip(attributes.values)
        .map(|(series, values)| {
            if series.query_index >= formulas {
                return Err(ProbeError::BadResponse(format!(
                    "series for formula {} of {formulas}",
                    series.query_index
                )));
            }
            let sum = values
                .iter()
                .flatten()
                .fold(None, |sum: Option<f64>, v| Some(sum.unwrap_or(0.0) + v));
            Ok(Summed {
                formula: series.query_index,
                group_tags: series.group_tags.unwrap_or_default(),
                sum,
            })
        })
        .collect()
}

/// Reads an answer to a request of `formulas` formulas: each formula's points summed, `Empty`
/// when it has no series or no point. Pure, for tests.
pub fn parse(status: u16, body: &[u8], formulas: usize) -> Vec<QueryResult> {
    let series = match series(status, body, formulas) {
        Ok(s) => s,
        Err(e) => return vec![QueryResult::Failed(e); formulas],
    };
    let mut sums: Vec<Option<f64>> = vec![None; formulas];
    for s in series {
        if let Some(v) = s.sum {
            sums[s.formula] = Some(sums[s.formula].unwrap_or(0.0) + v);
        }
    }
    sums.into_iter()
        .map(|s| s.map_or(QueryResult::Empty, QueryResult::Value))
        .collect()
}

/// Reads a grouped answer of two formulas (requests, errors): per formula, one sum per
/// (namespace, Deployment) named by the group tags `namespace_tag:…` and `name_tag:…`, series
/// of the same pair added up. A series without both tags, or without a point, counts for no one.
pub fn parse_grouped(
    status: u16,
    body: &[u8],
    namespace_tag: &str,
    name_tag: &str,
) -> Result<[HashMap<ObjectKey, f64>; 2], ProbeError> {
    let mut out: [HashMap<ObjectKey, f64>; 2] = Default::default();
    for s in series(status, body, 2)? {
        let tag = |name: &str| {
            s.group_tags.iter().find_map(|t| {
                t.split_once(':')
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
        };
        let ns = match namespace_tag {
            "" => Some(String::new()),
            t => tag(t),
        };
        let (Some(ns), Some(name), Some(v)) = (ns, tag(name_tag), s.sum) else {
            continue;
        };
        *out[s.formula].entry(ObjectKey::new(ns, name)).or_default() += v;
    }
    Ok(out)
}
