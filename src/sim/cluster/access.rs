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

/// The media type of Kubernetes' protobuf encoding.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: the review with its
/// `status`, 201 Created, as kube-apiserver answers (nothing is stored). The body is JSON, or
/// protobuf as kubectl's typed client sends it (`kubectl auth can-i`); the answer is JSON,
/// which such a client also accepts.
pub fn review(
    api: &ApiControl,
    content_type: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    const GROUP: &str = "authorization.k8s.io";
    let mut review: Value = if content_type.starts_with(PROTOBUF) {
        protobuf::review(body).ok_or_else(|| {
            ApiError::bad_request("decoding the body: not a protobuf SelfSubjectAccessReview")
        })?
    } else if content_type.is_empty() || content_type.starts_with("application/json") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("decoding the body: {e}")))?
    } else {
        return Err(ApiError::unsupported_body(content_type));
    };
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

/// Just enough of Kubernetes' protobuf encoding to read a SelfSubjectAccessReview: the `k8s\0`
/// envelope (`runtime.Unknown`: 1 typeMeta, 2 raw) around the object (`authorization/v1`
/// generated.proto: 2 spec; spec: 1 resourceAttributes, 2 nonResourceAttributes).
mod protobuf {
    use serde_json::{Map, Value, json};

    const MAGIC: &[u8] = b"k8s\0";

    /// (field number, bytes) of each length-delimited field; varints and fixed-size fields are
    /// skipped (nothing read here is one). `None` on a malformed message.
    fn fields(mut buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
        fn varint(buf: &mut &[u8]) -> Option<u64> {
            let mut value = 0u64;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = buf.split_first()?;
                *buf = rest;
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return Some(value);
                }
            }
            None
        }
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf)?;
            let skip = match key & 7 {
                0 => {
                    varint(&mut buf)?;
                    0
                }
                1 => 8,
                2 => {
                    let len = usize::try_from(varint(&mut buf)?).ok()?;
                    let (field, rest) = (buf.get(..len)?, buf.get(len..)?);
                    out.push((key >> 3, field));
                    buf = rest;
                    0
                }
                5 => 4,
                _ => return None,
            };
            buf = buf.get(skip..)?;
        }
        Some(out)
    }

    fn field(buf: &[u8], number: u64) -> Option<&[u8]> {
        fields(buf)?
            .into_iter()
            .find(|(n, _)| *n == number)
            .map(|(_, b)| b)
    }

    /// The string fields of `buf` named by `names` (field number, JSON name); empty ones left
    /// out, as the JSON encoding leaves them out.
    fn strings(buf: &[u8], names: &[(u64, &str)]) -> Option<Value> {
        let mut out = Map::new();
        for (n, bytes) in fields(buf)? {
            if let Some((_, name)) = names.iter().find(|(k, _)| *k == n)
                && !bytes.is_empty()
            {
                out.insert((*name).to_string(), json!(std::str::from_utf8(bytes).ok()?));
            }
        }
        Some(Value::Object(out))
    }

    /// The review as JSON.
    pub fn review(body: &[u8]) -> Option<Value> {
        let unknown = body.strip_prefix(MAGIC)?;
        let raw = field(unknown, 2)?;
        let spec = field(raw, 2).unwrap_or_default();
        let mut out = Map::new();
        for (n, bytes) in fields(spec)? {
            match n {
                1 => {
                    let attributes = strings(
                        bytes,
                        &[
                            (1, "namespace"),
                            (2, "verb"),
                            (3, "group"),
                            (4, "version"),
                            (5, "resource"),
                            (6, "subresource"),
                            (7, "name"),
                        ],
                    )?;
                    out.insert("resourceAttributes".into(), attributes);
                }
                2 => {
                    let attributes = strings(bytes, &[(1, "path"), (2, "verb")])?;
                    out.insert("nonResourceAttributes".into(), attributes);
                }
                _ => {}
            }
        }
        Some(json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": out,
        }))
    }

    #[cfg(test)]
    mod tests {
        /// What kubectl 1.33 sends for `auth can-i patch deployments.apps/scale -n production`
        /// (a name, not a subresource: `RESOURCE/NAME`).
        const KUBECTL: &[u8] = b"k8s\0\x0a\x32\x0a\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\
\x12\x51\x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\
\x12\x33\x0a\x31\x0a\x0aproduction\x12\x05patch\x1a\x04apps\x22\x00\x2a\x0bdeployments\x32\x00\x3a\x05scale\
\x1a\x08\x08\x00\x12\x00\x1a\x00\x20\x00\x1a\x00\x22\x00";

        #[test]
        fn kubectls_review_reads_as_its_json() {
            let review = super::review(KUBECTL).expect("decodes");
            assert_eq!(
                review["spec"]["resourceAttributes"],
                serde_json::json!({"namespace": "production", "verb": "patch", "group": "apps",
                    "resource": "deployments", "name": "scale"})
            );
            assert!(super::review(&KUBECTL[..40]).is_none());
            assert!(super::review(b"{}").is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(api: &ApiControl, attributes: Value) -> Result<(StatusCode, Value), ApiError> {
        let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": attributes});
        review(api, "application/json", body.to_string().as_bytes())
    }

    #[test]
    fn a_review_answers_what_the_api_server_would_do_with_the_request() {
        let mut api = ApiControl::default();
        api.denied.push(("patch".into(), "deployments".into()));
        api.forbidden.push(("leases".into(), "kube-system".into()));
        let allowed = |api: &ApiControl, verb: &str, resource: &str, ns: &str| {
            let (code, r) = ask(
                api,
                json!({"resourceAttributes": {"verb": verb, "group": "apps", "resource": resource, "namespace": ns}}),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(code, StatusCode::CREATED);
            assert_eq!(r["kind"], "SelfSubjectAccessReview");
            r["status"]["allowed"] == true
        };
        assert!(!allowed(&api, "patch", "deployments", ""));
        assert!(!allowed(&api, "patch", "deployments", "production"));
        assert!(allowed(&api, "get", "deployments", "production"));
        assert!(!allowed(&api, "get", "leases", "kube-system"));
        assert!(allowed(&api, "get", "leases", "ops"));
        // The request itself meets the same rules.
        assert!(!api.allows(&Attributes {
            verb: "patch",
            resource: "deployments",
            subresource: None,
            namespace: "production",
        }));
        assert!(api.allows(&Attributes {
            verb: "patch",
            resource: "deployments",
            subresource: Some("scale"),
            namespace: "production",
        }));
    }

    #[test]
    fn a_review_without_exactly_one_kind_of_attributes_is_invalid() {
        let api = ApiControl::default();
        let e = ask(&api, json!({})).err().map(|e| (e.code, e.reason));
        assert_eq!(e, Some((422, "Invalid")));
        let e = review(&api, "text/plain", b"x").err().map(|e| e.code);
        assert_eq!(e, Some(415));
    }
}
