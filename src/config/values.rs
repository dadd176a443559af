//! Values checked once, while the config is read: a [`UrlTemplate`], an [`HttpMethod`] or an
//! [`HttpStatus`] that exists is usable as it is, so nothing falls back at the point of use.
//! Durations are bounded by their type (`duration.rs`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Fills `{name}`, `{namespace}` (and any `extra` pairs) into a template.
pub fn fill(template: &str, namespace: &str, name: &str, extra: &[(&str, &str)]) -> String {
    let mut out = template
        .replace("{namespace}", namespace)
        .replace("{name}", name);
    for (k, v) in extra {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// An `http` or `https` URL in which `{name}` and `{namespace}` stand for a Deployment's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct UrlTemplate(String);

impl UrlTemplate {
    /// Checks that `template`, filled with any Deployment's name and namespace, is an http(s) URL.
    pub fn parse(template: &str) -> Result<UrlTemplate, String> {
        let sample = fill(template, "namespace", "name", &[]);
        let url =
            url::Url::parse(&sample).map_err(|e| format!("{template:?} is not a URL: {e}"))?;
        match url.scheme() {
            "http" | "https" => Ok(UrlTemplate(template.to_string())),
            other => Err(format!(
                "{template:?}: scheme {other:?} is not http or https"
            )),
        }
    }

    /// A template written in this program (a default): checked by the config's tests.
    pub(crate) fn known(template: &str) -> UrlTemplate {
        UrlTemplate(template.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL for one Deployment.
    pub fn fill(&self, namespace: &str, name: &str) -> String {
        fill(&self.0, namespace, name, &[])
    }
}

impl TryFrom<String> for UrlTemplate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        UrlTemplate::parse(&s)
    }
}

impl std::str::FromStr for UrlTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        UrlTemplate::parse(s)
    }
}

impl From<UrlTemplate> for String {
    fn from(t: UrlTemplate) -> String {
        t.0
    }
}

impl std::ops::Deref for UrlTemplate {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An HTTP method (`GET`, `HEAD`, `POST`, …), as written: methods are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpMethod(http::Method);

impl HttpMethod {
    pub const GET: HttpMethod = HttpMethod(http::Method::GET);

    pub fn parse(method: &str) -> Result<HttpMethod, String> {
        // `http` takes any token, even lower case; a typo (`get`, `GTE`) would reach the app
        // as a method it does not serve, so only the methods HTTP defines are accepted.
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        if !KNOWN.contains(&method) {
            return Err(format!(
                "{method:?} is not an HTTP method ({})",
                KNOWN.join(", ")
            ));
        }
        http::Method::from_bytes(method.as_bytes())
            .map(HttpMethod)
            .map_err(|_| format!("{method:?} is not an HTTP method"))
    }

    pub fn get(&self) -> &http::Method {
        &self.0
    }
}

impl Default for HttpMethod {
    fn default() -> Self {
        HttpMethod::GET
    }
}

impl TryFrom<String> for HttpMethod {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HttpMethod::parse(&s)
    }
}

impl std::str::FromStr for HttpMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HttpMethod::parse(s)
    }
}

impl From<HttpMethod> for String {
    fn from(m: HttpMethod) -> String {
        m.0.as_str().to_string()
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// An HTTP status code an answer is expected to have: 100 to 599.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct HttpStatus(u16);

impl HttpStatus {
    pub const OK: HttpStatus = HttpStatus(200);

    pub fn new(status: u16) -> Result<HttpStatus, String> {
        if (100..=599).contains(&status) {
            Ok(HttpStatus(status))
        } else {
            Err(format!("{status} is not an HTTP status (100 to 599)"))
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for HttpStatus {
    fn default() -> Self {
        HttpStatus::OK
    }
}

impl TryFrom<u16> for HttpStatus {
    type Error = String;
    fn try_from(s: u16) -> Result<Self, String> {
        HttpStatus::new(s)
    }
}

impl From<HttpStatus> for u16 {
    fn from(s: HttpStatus) -> u16 {
        s.0
    }
}

impl PartialEq<u16> for HttpStatus {
    fn eq(&self, other: &u16) -> bool {
        self.0 == *other
    }
}

impl PartialEq<HttpStatus> for u16 {
    fn eq(&self, other: &HttpStatus) -> bool {
        *self == other.0
    }
}

impl fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
