//! The Datadog queries: a Deployment's two queries with their placeholders filled, and the
//! grouped queries that name many rollouts at once in `IN (…)` lists, split into batches that
//! keep each query short enough.

use std::collections::BTreeSet;

use super::Datadog;
use crate::check::ObjectKey;
use crate::config::{self, DatadogGrouped};

/// The longest grouped query sent: past it, the members are split over several requests. The
/// API documents no limit, but a query of thousands of tag values is slow to parse and risks
/// a refusal; 8 KiB still holds several hundred rollouts per request.
pub const MAX_GROUPED_QUERY: usize = 8 * 1024;

/// Splits `members` into batches whose grouped queries stay within `max` bytes, each batch as
/// large as fits (at least one member). `length(namespaces, names)` is the longest of the
/// queries once filled with lists of that many bytes. Members sharing a namespace come
/// together, so most batches name few namespaces.
pub fn batches(
    members: &[ObjectKey],
    max: usize,
    length: impl Fn(usize, usize) -> usize,
) -> Vec<Vec<&ObjectKey>> {
    let mut sorted: Vec<&ObjectKey> = members.iter().collect();
    sorted.sort_unstable();
    let mut out: Vec<Vec<&ObjectKey>> = Vec::new();
    let (mut namespaces, mut names) = (BTreeSet::new(), BTreeSet::new());
    let (mut ns_len, mut names_len) = (0, 0);
    // The length of a list once `value` joins it, separators included.
    let grown = |list: &BTreeSet<&str>, len: usize, value: &str| {
        if list.contains(value) {
            len
        } else if list.is_empty() {
            value.len()
        } else {
            len + LIST_SEPARATOR.len() + value.len()
        }
    };
    for key in sorted {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let (ns_next, names_next) = (
            grown(&namespaces, ns_len, ns),
            grown(&names, names_len, name),
        );
        match out.last_mut() {
            Some(batch) if length(ns_next, names_next) <= max => {
                batch.push(key);
                (ns_len, names_len) = (ns_next, names_next);
            }
            _ => {
                out.push(vec![key]);
                (namespaces, names) = (BTreeSet::new(), BTreeSet::new());
                (ns_len, names_len) = (ns.len(), name.len());
            }
        }
        namespaces.insert(ns);
        names.insert(name);
    }
    out
}

/// Between the values of an `IN (…)` list.
const LIST_SEPARATOR: &str = ", ";

/// An `IN (…)` list of `values`. A value that is one of the scope's operator words (valid
/// Kubernetes names all) would end the list or change its meaning: it goes in double quotes.
pub fn list(values: &[&str]) -> String {
    let quoted = |v: &&str| {
        if ["in", "not", "and", "or"]
            .iter()
            .any(|k| v.eq_ignore_ascii_case(k))
        {
            format!("\"{v}\"")
        } else {
            v.to_string()
        }
    };
    values
        .iter()
        .map(quoted)
        .collect::<Vec<_>>()
        .join(LIST_SEPARATOR)
}

impl Datadog {
    /// The two queries of one Deployment, placeholders filled.
    pub fn queries(&self, namespace: &str, name: &str) -> (String, String) {
        (
            self.fill(&self.cfg.requests_query, namespace, name, &[]),
            self.fill(&self.cfg.errors_query, namespace, name, &[]),
        )
    }

    /// The `service` tag value of a Deployment's traces.
    pub fn service(&self, namespace: &str, name: &str) -> String {
        config::fill(&self.cfg.service, namespace, name, &[])
    }

    /// Fills a query: the Deployment and its service, `{operation}`, both forms of the env
    /// filter and `lists`.
    pub(super) fn fill(
        &self,
        query: &str,
        namespace: &str,
        name: &str,
        lists: &[(&str, &str)],
    ) -> String {
        let env = self.cfg.env.as_deref();
        let env_filter = env.map(|e| format!(",env:{e}")).unwrap_or_default();
        let env_and = env.map(|e| format!(" AND env:{e}")).unwrap_or_default();
        let service = self.service(namespace, name);
        let mut extra = vec![
            ("operation", self.cfg.operation.as_str()),
            ("env_filter", env_filter.as_str()),
            ("env_and", env_and.as_str()),
            ("service_name", service.as_str()),
        ];
        extra.extend_from_slice(lists);
        config::fill(query, namespace, name, &extra)
    }

    /// The two grouped queries for `namespaces`, `names` and `services`, lists as `IN (…)`
    /// takes them.
    pub fn grouped_queries(
        &self,
        g: &DatadogGrouped,
        namespaces: &[&str],
        names: &[&str],
        services: &[&str],
    ) -> (String, String) {
        let (namespaces, names, services) = (list(namespaces), list(names), list(services));
        let lists = [
            ("namespaces", namespaces.as_str()),
            ("names", names.as_str()),
            ("services", services.as_str()),
        ];
        (
            self.fill(&g.requests_query, "", "", &lists),
            self.fill(&g.errors_query, "", "", &lists),
        )
    }
}
