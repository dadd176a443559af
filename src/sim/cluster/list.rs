//! LIST: one page of a collection, filtered by label and field selectors, as a typed List or a
//! Table.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::Shared;
use super::discovery::Resource;
use super::error::ApiError;
use super::selector::{FieldSelector, LabelSelector};
use super::server::{Req, json_response};
use super::table::{self, Include};

/// Serves a LIST request.
pub fn list(
    shared: &Arc<Shared>,
    res: &Resource,
    ns: Option<&str>,
    req: &Req,
    table: Option<Include>,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = req
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // Continue token: "ns/name" of the last item returned; names never contain '/'.
    let after = req
        .q("continue")
        .filter(|c| !c.is_empty())
        .and_then(|c| c.split_once('/'))
        .map(|(a, b)| (a.to_string(), b.to_string()));
    let st = shared.lock();
    let rv = st.store.resource_version().to_string();
    let (items, next) = st.store.page(res.kind, ns, after.as_ref(), limit, |o| {
        labels.matches_labels(Some(&o.labels)) && (fields.is_empty() || fields.matches(&o.value()))
    });
    drop(st);
    let cont = next.map(|(n, name)| format!("{n}/{name}"));
    if let Some(include) = table {
        let parsed: Vec<Value> = items.iter().map(|o| o.value()).collect();
        let refs: Vec<&Value> = parsed.iter().collect();
        return Ok(json_response(
            StatusCode::OK,
            &table::table(res, &refs, include, Some(rv), cont),
        ));
    }
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    // The stored JSON text is spliced into the list as-is when no conversion is needed.
    let mut body = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
        res.kind_name,
        res.api_version()
    );
    for (i, obj) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        if res.storage_form_is_view() {
            body.push_str(&obj.json);
        } else {
            body.push_str(&res.view(&obj.value()).to_string());
        }
    }
    body.push_str("]}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
