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
    pub kind: Box<str>,
    pub group: Box<str>,
    /// What few errors carry besides (boxed: most errors have none).
    pub extra: Option<Box<Extra>>,
}

/// The rarer parts of an API error.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// `details.causes`: one per field error of a 422 Invalid.
    pub causes: Vec<FieldError>,
    /// Render `details: {}` even with nothing in it (the API server's generic responses do).
    pub empty_details: bool,
}

/// One field error, as `k8s.io/apimachinery/pkg/util/validation/field` words it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueForbidden`.
    pub reason: &'static str,
    pub field: String,
    /// The error without the field: `Required value`, `Invalid value: "x": why`.
    pub body: String,
}

impl FieldError {
    pub fn required(field: &str) -> Self {
        FieldError {
            reason: "FieldValueRequired",
            field: field.into(),
            body: "Required value".into(),
        }
    }

    /// `value` is already rendered as Go's `%q` (strings) or `%d` (numbers) renders it.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            body: format!("Invalid value: {value}: {detail}"),
        }
    }

    pub fn forbidden(field: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden",
            field: field.into(),
            body: format!("Forbidden: {detail}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body)
    }
}

/// A string as Go's `%q` prints it (enough for the values validation echoes back).
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            name: String::new(),
            kind: "".into(),
            group: "".into(),
            extra: None,
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
            format!("{} \"{name}\" is invalid: {detail}", qualified(kind, group)),
        );
        e.name = name.into();
        e.kind = kind.into();
        e.group = group.into();
        e
    }

    /// `errors.NewInvalid`: the field errors in the message (one alone, several as `[a, b]`)
    /// and each in `details.causes`.
    pub fn invalid_fields(kind: &str, group: &str, name: &str, errs: Vec<FieldError>) -> Self {
        let list = errs.iter().map(ToString::to_string).collect::<Vec<_>>();
        let detail = match list.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut e = Self::invalid(kind, group, name, &detail);
        e.extra = Some(Box::new(Extra {
            causes: errs,
            empty_details: false,
        }));
        e
    }

    /// `errors.NewForbidden`, as RBAC words a denied request.
    pub fn forbidden(plural: &str, group: &str, name: &str, verb: &str, namespace: &str) -> Self {
        let user = "system:serviceaccount:deploy-watchdog:deploy-watchdog";
        let group_words = if group.is_empty() {
            String::new()
        } else {
            format!(" in API group \"{group}\"")
        };
        let what = if name.is_empty() {
            qualified(plural, group)
        } else {
            format!("{} \"{name}\"", qualified(plural, group))
        };
        // A request for every namespace is refused "at the cluster scope".
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        let mut e = Self::new(
            403,
            "Forbidden",
            format!(
                "{what} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\"{group_words} {scope}"
            ),
        );
        e.name = name.into();
        e.kind = plural.into();
        e.group = group.into();
        e.with_empty_details()
    }

    /// A `details: {}` in the body even when nothing goes in it.
    pub fn with_empty_details(mut self) -> Self {
        self.extra.get_or_insert_default().empty_details = true;
        self
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

    /// A create whose body is in a format this server does not decode.
    pub fn unsupported_body(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (got {ct})"
            ),
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
        let extra = self.extra.as_deref();
        let empty_details = extra.is_some_and(|x| x.empty_details);
        if !self.name.is_empty() || !self.kind.is_empty() || empty_details {
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
            if let Some(causes) = extra.map(|x| &x.causes).filter(|c| !c.is_empty()) {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.body, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
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
