//! Watch streams: newline-delimited watch events replayed from a resourceVersion, then live;
//! bookmarks, `timeoutSeconds`, 410 Gone for compacted history, and the fault injections that
//! end streams (`drop_watches`, `expire`, `down`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::Shared;
use super::discovery::Resource;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Change, EventType, Stored};
use super::table::{Include, table};

/// What a watch request asked for.
pub struct WatchRequest {
    pub res: Resource,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    /// `sendInitialEvents=true` (a streaming list): the current state, then a bookmark.
    pub send_initial: bool,
    pub timeout: Option<Duration>,
    pub table: Option<Include>,
}

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

impl WatchRequest {
    /// Whether an object is in this watch's scope; parses it only for a field selector.
    fn matches_stored(&self, obj: &Stored) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| *obj.namespace == *ns)
            && self.labels.matches_labels(Some(&obj.labels))
            && (self.fields.is_empty() || self.fields.matches(&obj.value()))
    }

    /// The event a change shows to this watch, if any (a filtered watch sees an object that
    /// stops matching as DELETED and one that starts matching as ADDED, like the API server).
    fn translate(&self, ch: &Change) -> Option<Bytes> {
        if ch.kind != self.res.kind {
            return None;
        }
        let now = ch.ty != EventType::Deleted && self.matches_stored(&ch.object);
        let was = ch.prev.as_deref().is_some_and(|p| self.matches_stored(p));
        let ty = match ch.ty {
            EventType::Added if now => EventType::Added,
            EventType::Modified if now && was => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if was => EventType::Deleted,
            EventType::Deleted if self.matches_stored(&ch.object) => EventType::Deleted,
            _ => return None,
        };
        Some(self.stored_line(ty.as_str(), &ch.object))
    }

    /// A watch line; the stored text is spliced in as-is when no conversion is needed.
    fn stored_line(&self, ty: &str, obj: &Stored) -> Bytes {
        if self.table.is_none() && self.res.storage_form_is_view() {
            return Bytes::from(format!("{{\"type\":\"{ty}\",\"object\":{}}}\n", obj.json));
        }
        self.line(ty, &obj.value())
    }

    fn line(&self, ty: &str, obj: &Value) -> Bytes {
        let object = match self.table {
            Some(include) => table(&self.res, &[obj], include, None, None),
            None => self.res.view(obj),
        };
        event_line(ty, &object)
    }

    /// A BOOKMARK; `initial_end` marks the end of the initial events of a streaming list.
    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut object = json!({"kind": self.res.kind_name, "apiVersion": self.res.api_version(),
            "metadata": {"resourceVersion": rv.to_string()}});
        if initial_end {
            object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line("BOOKMARK", &object)
    }
}

fn event_line(ty: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": ty, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn gone(message: &str) -> Bytes {
    let status = super::error::ApiError::gone(message).to_status();
    event_line("ERROR", &status)
}

/// Starts a watch; the response streams until the watch ends.
pub fn start(shared: &Arc<Shared>, req: WatchRequest) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let (epoch, drop_watches, expire) = {
        let api = shared.api();
        (
            api.epoch.clone().unwrap_or_default(),
            api.drop_watches.clone(),
            api.expire_watches.clone(),
        )
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let mut sub: Option<broadcast::Receiver<Arc<Change>>> = None;
    let mut start_rv = 0;
    if shared.expire_next.swap(false, Ordering::SeqCst) {
        initial.push(gone(
            "too old resource version: the watch cache was compacted",
        ));
    } else {
        let st = shared.lock();
        start_rv = st.store.resource_version();
        let from = req
            .resource_version
            .filter(|rv| *rv > 0 && !req.send_initial);
        match from {
            Some(rv) => match st.store.changes_since(req.res.kind, rv) {
                Some(changes) => {
                    initial.extend(changes.iter().filter_map(|c| req.translate(c)));
                    sub = Some(st.store.subscribe());
                }
                None => initial.push(gone(&format!(
                    "too old resource version: {rv} ({})",
                    st.store.compacted(req.res.kind)
                ))),
            },
            None => {
                let ns = req.namespace.as_deref();
                for obj in st
                    .store
                    .list_stored(req.res.kind, ns, |o| req.matches_stored(o))
                {
                    initial.push(req.stored_line("ADDED", &obj));
                }
                if req.send_initial {
                    initial.push(req.bookmark(start_rv, true));
                }
                sub = Some(st.store.subscribe());
            }
        }
    }
    let deadline = req.timeout.map(|t| Instant::now() + t);
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(mut sub) = sub else { return };
        let mut last_rv = start_rv;
        let mut bookmarks =
            tokio::time::interval_at(Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        let far = Instant::now() + Duration::from_secs(365 * 86400);
        loop {
            tokio::select! {
                biased;
                _ = epoch.cancelled() => break,
                _ = drop_watches.cancelled() => break,
                _ = expire.cancelled() => {
                    let _ = tx.send(gone("too old resource version: the watch cache was compacted")).await;
                    break;
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => break,
                _ = tx.closed() => break,
                change = sub.recv() => match change {
                    Ok(ch) => {
                        if ch.rv <= last_rv {
                            continue;
                        }
                        last_rv = ch.rv;
                        if let Some(line) = req.translate(&ch)
                            && tx.send(line).await.is_err()
                        {
                            break;
                        }
                    }
                    // Too slow a reader: end the stream; the client resumes from its last RV.
                    Err(_) => break,
                },
                _ = bookmarks.tick(), if req.bookmarks => {
                    // Every change of every kind passes through `sub`, so last_rv is current.
                    if tx.send(req.bookmark(last_rv, false)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
