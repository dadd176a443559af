//! API errors, rendered as `Status` objects like the API server's.

use serde_json::{Map, Value, json};

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub name: String,
    pub kind: String,
    pub group: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            name: String::new(),
            kind: String::new(),
            group: String::new(),
        }
    }

    /// `deployments.apps "x" not found`.
    pub fn not_found(plural: &str, group: &str, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(plural, group)),
        );
        e.name = name.into();
        e.kind = plural.into();
        e.group = group.into();
        e
    }

    pub fn already_exists(plural: &str, group: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(plural, group)),
        );
        e.name = name.into();
        e.kind = plural.into();
        e.group = group.into();
        e
    }

    pub fn conflict(plural: &str, group: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(plural, group)
            ),
        );
        e.name = name.into();
        e.kind = plural.into();
        e.group = group.into();
        e
    }

    pub fn invalid(kind: &str, group: &str, name: &str, detail: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind}.{group} \"{name}\" is invalid: {detail}"),
        );
        e.name = name.into();
        e.kind = kind.into();
        e.group = group.into();
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        )
    }

    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct})"
            ),
        )
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if !self.name.is_empty() || !self.kind.is_empty() {
            let mut details = Map::new();
            if !self.name.is_empty() {
                details.insert("name".into(), json!(self.name));
            }
            if !self.group.is_empty() {
                details.insert("group".into(), json!(self.group));
            }
            if !self.kind.is_empty() {
                details.insert("kind".into(), json!(self.kind));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}
