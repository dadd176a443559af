//! RBAC as the daemon's ServiceAccount meets it: which requests are refused (403, as the
//! authorizer answers), and `SelfSubjectAccessReview` (`authorization.k8s.io/v1`), which asks
//! the same rules without making the request.
//!
//! Everything is allowed except what a scenario takes away: a resource everywhere
//! (`simulation.forbidden`, every verb), a resource in one namespace, or one verb on one
//! resource (`simulation.rbac_denied: ["patch deployments"]`).

use http::StatusCode;
use serde_json::{Value, json};

use super::error::{ApiError, FieldError};
use super::shared::ApiControl;

/// The ServiceAccount the simulated RBAC speaks of.
pub const SERVICE_ACCOUNT: (&str, &str) = ("deploy-watchdog", "deploy-watchdog");

/// One request as RBAC sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    /// Empty: cluster-wide (every namespace).
    pub namespace: &'a str,
}

impl ApiControl {
    /// Whether RBAC allows the request.
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        let resource_forbidden = self
            .forbidden
            .iter()
            .any(|(p, n)| p == a.resource && (n == "*" || *n == a.namespace));
        let full = match a.subresource {
            Some(s) => format!("{}/{s}", a.resource),
            None => a.resource.to_string(),
        };
        let verb_denied = self
            .denied
            .iter()
            .any(|(v, r)| (v == a.verb || v == "*") && *r == full);
        !(resource_forbidden || verb_denied)
    }
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: the review with its
/// `status`, 201 Created, as kube-apiserver answers (nothing is stored).
pub fn review(api: &ApiControl, body: &[u8]) -> Result<(StatusCode, Value), ApiError> {
    const GROUP: &str = "authorization.k8s.io";
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("decoding the body: {e}")))?;
    let resource = review
        .pointer("/spec/resourceAttributes")
        .filter(|v| v.is_object())
        .cloned();
    let non_resource = review
        .pointer("/spec/nonResourceAttributes")
        .filter(|v| v.is_object())
        .cloned();
    let allowed = match (&resource, &non_resource) {
        (Some(r), None) => {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
            api.allows(&Attributes {
                verb: s("verb"),
                resource: s("resource"),
                subresource: Some(s("subresource")).filter(|v| !v.is_empty()),
                namespace: s("namespace"),
            })
        }
        // Non-resource URLs (`/healthz`, `/metrics`): the default discovery roles allow reads.
        (None, Some(n)) => n.get("verb").and_then(Value::as_str) == Some("get"),
        _ => {
            return Err(ApiError::invalid_fields(
                "SelfSubjectAccessReview",
                GROUP,
                "",
                vec![FieldError::invalid(
                    "spec.resourceAttributes",
                    "\"null\"",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )],
            ));
        }
    };
    let (ns, sa) = SERVICE_ACCOUNT;
    // RBAC names the binding that allowed a request, and says nothing when none did.
    review["status"] = if allowed {
        json!({"allowed": true, "reason": format!(
            "RBAC: allowed by ClusterRoleBinding \"{sa}\" of ClusterRole \"{sa}\" to ServiceAccount \"{sa}/{ns}\""
        )})
    } else {
        json!({"allowed": false})
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({"creationTimestamp": null});
    Ok((StatusCode::CREATED, review))
}
