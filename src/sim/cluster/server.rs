//! The HTTP API: discovery, and get/list/watch/create/update/patch/delete on every served
//! resource, with Kubernetes' paths, status codes and `Status` error bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use super::discovery;
use super::error::ApiError;
use super::list::list;
use super::patch::{self, PatchType};
use super::scale::{apply_scale, to_scale};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Kind, meta_str};
use super::table::{self, Include};
use super::watch::{self, WatchRequest};
use super::write::{create, generate_name, update};
use super::{DeploymentPatch, Shared};

/// The `MicroTime` fields of the kinds the API server decodes with `metav1.RFC3339Micro`: a
/// body it cannot decode is a 400 before anything else is looked at.
fn check_times(res: &discovery::Resource, version: &str, body: &Value) -> Result<(), ApiError> {
    let fields: &[&str] = match res.kind {
        Kind::Event => &["/eventTime", "/series/lastObservedTime"],
        Kind::Lease => &["/spec/acquireTime", "/spec/renewTime"],
        _ => return Ok(()),
    };
    super::events::check_micro_times(res.kind_name, version, body, fields)
}

/// Binds with SO_REUSEADDR so `up` can take the same port again right after `down`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub fn bind_retrying(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

/// The API server as a service: every request answered in this process.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Serves until `epoch` is cancelled (`down` or shutdown): stops accepting, ends connections.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, epoch: CancellationToken) {
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(epoch.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "simulated API server stopped");
    }
}

pub fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

/// One parsed API request.
pub struct Req {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Req {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| !v.is_empty())
    }
}

async fn handle(AxState(shared): AxState<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading the body: {e}"))),
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        query,
        headers: parts.headers,
        body,
    };
    let path = parts.uri.path().trim_end_matches('/');
    let delay = shared
        .api()
        .latency
        .iter()
        .find(|(plural, _)| path.split('/').any(|seg| seg == plural))
        .map(|(_, d)| *d);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match route(&shared, path, &req) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn route(shared: &Arc<Shared>, path: &str, req: &Req) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let installed = shared.api().crds.clone();
    let installed: Vec<&str> = installed.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return ok(discovery::version()),
        ["healthz" | "readyz" | "livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => return ok(discovery::core_versions()),
        ["openapi", "v3"] => return ok(super::openapi::root()),
        ["openapi", "v3", gv @ ..] => {
            return super::openapi::group_version(&gv.join("/"))
                .map(ok)
                .unwrap_or_else(|| Err(ApiError::path_not_found()));
        }
        ["apis"] => return ok(discovery::group_list(&installed)),
        ["apis", g] if discovery::is_group(g, &installed) => {
            return ok(discovery::group(g, &installed));
        }
        ["api", v] => {
            return discovery::resource_list("", v, &installed)
                .map(ok)
                .unwrap_or_else(|| Err(ApiError::path_not_found()));
        }
        ["apis", g, v] => {
            return discovery::resource_list(g, v, &installed)
                .map(ok)
                .unwrap_or_else(|| Err(ApiError::path_not_found()));
        }
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] => {
            if req.method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            let ct = req.header(header::CONTENT_TYPE);
            let (code, review) = super::access::review(&shared.api(), ct, &req.body)?;
            return Ok(json_response(code, &review));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let (plural, ns, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => (
            *plural,
            Some(*ns),
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] => (*plural, None, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(ApiError::path_not_found()),
    };
    let res = discovery::find(group, version, plural)
        .filter(|r| !r.kind.is_custom() || installed.contains(&r.group))
        .ok_or_else(ApiError::path_not_found)?;
    let scalable = matches!(res.kind, Kind::Deployment | Kind::ReplicaSet);
    if sub.is_some_and(|s| s != "status" && !(s == "scale" && scalable)) {
        return Err(ApiError::path_not_found());
    }
    let ns = if res.namespaced {
        ns.map(str::to_string)
    } else {
        None
    };
    let verb = match (&req.method, name) {
        (&Method::GET, Some(_)) => "GET",
        (&Method::GET, None) if req.flag("watch") => "WATCH",
        (&Method::GET, None) => "LIST",
        (&Method::POST, None) => "CREATE",
        (&Method::PUT, Some(_)) => "UPDATE",
        (&Method::PATCH, Some(_)) => "PATCH",
        (&Method::DELETE, Some(_)) => "DELETE",
        (&Method::DELETE, None) => "DELETECOLLECTION",
        _ => return Err(ApiError::method_not_allowed()),
    };
    {
        let counter = match sub {
            Some(s) => format!("{verb} {}/{s}", res.plural),
            None => format!("{verb} {}", res.plural),
        };
        *shared.lock().counts.entry(counter).or_default() += 1;
    }
    if res.namespaced && ns.is_none() && !matches!(verb, "LIST" | "WATCH" | "DELETECOLLECTION") {
        return Err(ApiError::path_not_found());
    }
    let ns_str = ns.clone().unwrap_or_default();
    let rbac_verb = match verb {
        "GET" => "get",
        "LIST" => "list",
        "WATCH" => "watch",
        "CREATE" => "create",
        "UPDATE" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "deletecollection",
    };
    let allowed = shared.api().allows(&super::access::Attributes {
        verb: rbac_verb,
        resource: res.plural,
        subresource: sub,
        namespace: &ns_str,
    });
    if !allowed {
        return Err(ApiError::forbidden(
            res.plural,
            res.group,
            name.unwrap_or_default(),
            rbac_verb,
            &ns_str,
        ));
    }
    let ua = req.header(header::USER_AGENT).to_string();
    let table = table::wants_table(req.header(header::ACCEPT))
        .then(|| Include::parse(req.q("includeObject")));
    let respond = |code: StatusCode, obj: &Value| -> Response {
        match table {
            Some(include) => json_response(
                code,
                &table::table(
                    &res,
                    &[obj],
                    include,
                    meta_str(obj, "resourceVersion").map(String::from),
                    None,
                ),
            ),
            None => json_response(code, &res.view(obj)),
        }
    };
    let result = match verb {
        "GET" => {
            let name = name.unwrap_or_default();
            let obj = shared
                .lock()
                .store
                .get(res.kind, &ns_str, name)
                .ok_or_else(|| ApiError::not_found(res.plural, res.group, name))?;
            if sub == Some("scale") {
                return Ok(json_response(StatusCode::OK, &to_scale(&obj)));
            }
            respond(StatusCode::OK, &obj)
        }
        "LIST" => list(shared, &res, ns.as_deref(), req, table)?,
        "WATCH" => {
            let wr = WatchRequest {
                res,
                namespace: ns,
                labels: LabelSelector::parse(req.q("labelSelector").unwrap_or_default())
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
                fields: FieldSelector::parse(req.q("fieldSelector").unwrap_or_default())
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
                resource_version: req.q("resourceVersion").and_then(|v| v.parse().ok()),
                bookmarks: req.flag("allowWatchBookmarks"),
                send_initial: req.flag("sendInitialEvents"),
                timeout: req
                    .q("timeoutSeconds")
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs),
                table,
            };
            return Ok(watch::start(shared, wr));
        }
        "CREATE" => {
            let mut body: Value = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("decoding the body: {e}")))?;
            check_times(&res, version, &body)?;
            let mut st = shared.lock();
            if res.kind == Kind::Event {
                // Validated in the request's own version, with its final name and namespace.
                generate_name(&mut st, &res, &mut body)?;
                if body
                    .pointer("/metadata/namespace")
                    .is_none_or(Value::is_null)
                {
                    body["metadata"]["namespace"] = json!(ns_str);
                }
                super::events::validate_create(res.group, &body)?;
            }
            if res.kind == Kind::Lease {
                super::objects::validate_lease(&body)?;
            }
            let obj = create(
                &mut st,
                &res,
                &ns_str,
                res.storage_form(&body),
                req.dry_run(),
            )?;
            respond(StatusCode::CREATED, &obj)
        }
        "UPDATE" | "PATCH" => {
            let name = name.unwrap_or_default();
            let mut st = shared.lock();
            let old = st
                .store
                .get(res.kind, &ns_str, name)
                .ok_or_else(|| ApiError::not_found(res.plural, res.group, name))?;
            let base = if sub == Some("scale") {
                to_scale(&old)
            } else {
                res.view(&old)
            };
            let new = if verb == "UPDATE" {
                serde_json::from_slice(&req.body)
                    .map_err(|e| ApiError::bad_request(format!("decoding the body: {e}")))?
            } else {
                let ty = PatchType::from_content_type(req.header(header::CONTENT_TYPE))?;
                patch::apply(&base, ty, &req.body)?
            };
            check_times(&res, version, &new)?;
            if res.kind == Kind::Lease {
                super::objects::validate_lease(&new)?;
            }
            if sub == Some("scale") {
                let new = apply_scale(&old, &new);
                let obj = update(&mut st, &res, &old, new, None, &ua, req.dry_run())?;
                drop(st);
                shared.notify.notify_one();
                return Ok(json_response(StatusCode::OK, &to_scale(&obj)));
            }
            let obj = update(
                &mut st,
                &res,
                &old,
                res.storage_form(&new),
                sub,
                &ua,
                req.dry_run(),
            )?;
            if verb == "PATCH" && res.kind == Kind::Deployment && sub.is_none() && !req.dry_run() {
                let (namespace, name) = super::store::key_of(&old);
                st.deployment_patches.push(DeploymentPatch {
                    at: tokio::time::Instant::now(),
                    namespace,
                    name,
                    revision: Some(super::revisions::revision(&old)).filter(|r| *r > 0),
                    writes_template: patch::writes_template(&req.body),
                    user_agent: ua.clone(),
                });
            }
            respond(StatusCode::OK, &obj)
        }
        "DELETE" => {
            let name = name.unwrap_or_default();
            let mut st = shared.lock();
            let obj = if req.dry_run() {
                st.store.get(res.kind, &ns_str, name)
            } else {
                st.delete_cascade(res.kind, &ns_str, name)
            };
            let obj = obj.ok_or_else(|| ApiError::not_found(res.plural, res.group, name))?;
            respond(StatusCode::OK, &obj)
        }
        "DELETECOLLECTION" => {
            let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or_default())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut st = shared.lock();
            let (matching, _) = st.store.page(res.kind, ns.as_deref(), None, None, |o| {
                labels.matches_labels(Some(&o.labels))
                    && (fields.is_empty() || fields.matches(&o.value()))
            });
            let mut deleted = Vec::new();
            for obj in matching {
                let (ons, oname) = super::store::key_of(&obj.value());
                let gone = if req.dry_run() {
                    st.store.get(res.kind, &ons, &oname)
                } else {
                    st.delete_cascade(res.kind, &ons, &oname)
                };
                deleted.extend(gone.map(|o| res.view(&o)));
            }
            let rv = st.store.resource_version().to_string();
            let list = json!({"kind": format!("{}List", res.kind_name), "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": rv}, "items": deleted});
            json_response(StatusCode::OK, &list)
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    if matches!(
        verb,
        "CREATE" | "UPDATE" | "PATCH" | "DELETE" | "DELETECOLLECTION"
    ) {
        shared.notify.notify_one();
    }
    Ok(result)
}
