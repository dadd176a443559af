//! The scenario file format of `deploy-watchdog simulate` (docs/scenarios.md): parsing and validation.
//!
//! Parsing is strict: an unknown field, a bad duration or an event with two actions is an error
//! that names the file, the field and the problem, and nothing is run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::Error as _;

use super::behaviour::{AppKey, Behaviour};

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Hard stop; `rollout_timeout + window + 5s` of the merged config when absent.
    #[serde(default, with = "humantime_serde::option")]
    pub duration: Option<Duration>,
    /// Same schema as the config file, merged over the defaults.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    #[serde(default)]
    pub apps: BTreeMap<String, Behaviour>,
    #[serde(default)]
    pub script: Vec<ScriptEvent>,
    #[serde(default)]
    pub expect: BTreeMap<String, ExpectEntry>,
    /// Daemon replicas (an addition to the format): more than one elect a leader on a Lease.
    #[serde(default = "one_watchdog")]
    pub watchdogs: u32,
    /// How the simulated services behave (an addition to the format).
    #[serde(default)]
    pub simulation: SimulationSpec,
}

/// The top-level `simulation:` map.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationSpec {
    /// The simulated Prometheus stores each counter this often; default: a quarter of the
    /// sample window.
    #[serde(default, with = "humantime_serde::option")]
    pub scrape_interval: Option<Duration>,
    /// Resources (plurals, e.g. `applications`) the watchdog's ServiceAccount may not use in
    /// any namespace: every request on them is refused with 403, as RBAC does.
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// Verbs RBAC refuses the watchdog's ServiceAccount in every namespace, each `VERB
    /// RESOURCE` (`patch deployments`, `create events`, `get deployments/scale`): the request
    /// gets 403 Forbidden and a SelfSubjectAccessReview of it is not allowed.
    #[serde(default)]
    pub rbac_denied: Vec<RbacDenied>,
}

/// One `simulation.rbac_denied` entry: `VERB RESOURCE`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RbacDenied {
    pub verb: String,
    /// A plural, or `plural/subresource`.
    pub resource: String,
}

/// The verbs RBAC knows for resources (`*` is every verb).
const RBAC_VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

impl TryFrom<String> for RbacDenied {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let [verb, resource] = words.as_slice() else {
            return Err(format!(
                "{s:?} is not `VERB RESOURCE` (e.g. `patch deployments`)"
            ));
        };
        if !RBAC_VERBS.contains(verb) {
            return Err(format!(
                "{s:?}: {verb:?} is not an RBAC verb ({})",
                RBAC_VERBS.join(", ")
            ));
        }
        let plural = resource.split('/').next().unwrap_or_default();
        if plural.is_empty() || !plural.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "{s:?}: {resource:?} is not a resource's plural (e.g. `deployments`)"
            ));
        }
        Ok(RbacDenied {
            verb: verb.to_string(),
            resource: resource.to_string(),
        })
    }
}

impl SimulationSpec {
    /// The scrape interval to run with, given the scenario's sample window.
    pub fn scrape_interval(&self, sample_window: Duration) -> Duration {
        self.scrape_interval
            .unwrap_or(sample_window / 4)
            .max(Duration::from_millis(1))
    }
}

fn one_watchdog() -> u32 {
    1
}

/// A Deployment that exists, rolled out and healthy, before the script starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default = "one")]
    pub replicas: i32,
    pub version: String,
    #[serde(default = "yes")]
    pub opted_in: bool,
    #[serde(default)]
    pub paused: bool,
    /// Annotations put on the Deployment (per-Deployment overrides under `deploy-watchdog.io/`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Containers beside the app container (an addition to the format): `[istio-proxy]`, or
    /// `{name, image, position: first|last}`.
    #[serde(default)]
    pub sidecars: Vec<super::sidecars::Sidecar>,
    /// `spec.strategy.type`.
    #[serde(default)]
    pub strategy: Strategy,
    /// `spec.progressDeadlineSeconds` (whole seconds, at least 1); the API server's default
    /// (600 s) when absent.
    #[serde(default, with = "humantime_serde::option")]
    pub progress_deadline: Option<Duration>,
    /// The GitOps controller that manages the Deployment (an addition to the format).
    #[serde(default)]
    pub gitops: Option<GitopsSpec>,
}

/// `gitops:` of a Deployment: which GitOps controller the simulation runs for it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "GitopsFields")]
pub enum GitopsSpec {
    Argocd(ArgoSpec),
    Flux(FluxSpec),
}

/// `gitops:` as written: a map with exactly one of `argocd` and `flux`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GitopsFields {
    #[serde(default)]
    argocd: Option<ArgoSpec>,
    #[serde(default)]
    flux: Option<FluxSpec>,
}

impl TryFrom<GitopsFields> for GitopsSpec {
    type Error = String;
    fn try_from(f: GitopsFields) -> Result<Self, String> {
        match (f.argocd, f.flux) {
            (Some(a), None) => Ok(GitopsSpec::Argocd(a)),
            (None, Some(fl)) => Ok(GitopsSpec::Flux(fl)),
            _ => Err("names exactly one of argocd and flux".into()),
        }
    }
}

/// An Argo CD Application with automated sync.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoSpec {
    /// `NS/NAME` of the Application.
    pub application: String,
    #[serde(default = "yes")]
    pub self_heal: bool,
    /// How long after a drift self-heal re-applies Git (Argo CD's default: 5s).
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub self_heal_timeout: Duration,
    /// The ApplicationSet that generates the Application and re-applies its sync policy (it
    /// has no `ignoreApplicationDifferences`).
    #[serde(default)]
    pub application_set: Option<String>,
}

/// A Flux Kustomization or HelmRelease (exactly one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FluxSpec {
    /// `NS/NAME` of the Kustomization that applies the Deployment.
    #[serde(default)]
    pub kustomization: Option<String>,
    /// `NS/NAME` of the HelmRelease whose chart renders the Deployment (drift detection on).
    #[serde(default)]
    pub helmrelease: Option<String>,
    /// `spec.interval`.
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub interval: Duration,
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn one_minute() -> Duration {
    Duration::from_secs(60)
}

/// A Deployment's update strategy (`spec.strategy.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// `RollingUpdate`.
    #[default]
    Rolling,
    /// `Recreate`: every old pod goes before a new one starts.
    Recreate,
}

fn one() -> i32 {
    1
}
fn yes() -> bool {
    true
}

impl DeploymentSpec {
    pub fn namespace(&self) -> &str {
        self.reference
            .split_once('/')
            .map(|(ns, _)| ns)
            .unwrap_or("default")
    }
    pub fn name(&self) -> &str {
        self.reference
            .split_once('/')
            .map(|(_, n)| n)
            .unwrap_or(&self.reference)
    }
}

/// One timed step of the script.
#[derive(Debug, Clone)]
pub struct ScriptEvent {
    /// Time since the run started.
    pub at: Duration,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Deploy {
        deployment: String,
        version: String,
    },
    /// Changes the named fields of a version's behaviour from now on.
    App {
        target: AppKey,
        changes: serde_json::Map<String, serde_json::Value>,
    },
    Scale {
        deployment: String,
        replicas: i32,
    },
    Pause {
        deployment: String,
    },
    Resume {
        deployment: String,
    },
    Delete {
        deployment: String,
    },
    Provider {
        name: ProviderName,
        state: ProviderState,
    },
    Sink {
        name: SinkName,
        state: SinkState,
    },
    Api {
        state: ApiState,
    },
    /// Every daemon replica stops abruptly; as many start again `after` that (at once by
    /// default): meanwhile no watchdog runs.
    RestartWatchdog {
        after: Duration,
    },
    /// `kubectl set image`: only one container's image tag changes (the app container's, unless
    /// `container` names a sidecar); labels keep their values.
    SetImage {
        deployment: String,
        version: String,
        container: Option<String>,
    },
    /// Kill the replica holding the leader Lease; a replacement starts (an addition to the format).
    KillLeader,
    /// The version in Git changes; the Deployment's GitOps controller applies it at its next sync.
    GitCommit {
        deployment: String,
        version: String,
    },
    /// Someone turns the Deployment's GitOps sync back on by hand (the owner's own switch),
    /// leaving the watchdog's record of its pause in place.
    GitopsResume {
        deployment: String,
    },
    /// The deployment controller stops (a controller-manager failover) or starts again.
    Controller {
        running: bool,
    },
    /// Someone runs `kubectl rollout undo` on the Deployment.
    Undo {
        deployment: String,
    },
    /// A Deployment is created (again) at revision 1.
    Create {
        deployment: String,
        version: String,
        replicas: i32,
        opted_in: bool,
    },
    /// On-call acknowledges every open PagerDuty incident of the Deployment.
    Ack {
        deployment: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderName {
    Prometheus,
    Datadog,
}

/// A provider's fault state (`provider` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderState {
    #[default]
    Up,
    /// Connection refused.
    Down,
    /// HTTP 500.
    Error,
    /// Answers after 30 s.
    Slow,
    /// Answers with an empty result.
    NoData,
    /// 429 with Retry-After.
    RateLimited,
    /// A 200 answer flagged partial (Prometheus `warnings`, Datadog `errors`) that lacks the
    /// series of failed requests: an addition to the format.
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkName {
    Pagerduty,
    Slack,
}

/// A notification sink's fault state (`sink` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    #[default]
    Up,
    Down,
    Error,
    RateLimited,
}

/// The simulated API server's fault state (`api` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiState {
    /// Every open watch ends.
    DropWatches,
    /// The next watch gets 410 Gone.
    Expire,
    /// Connections are refused.
    Down,
    Up,
}

/// `expect:` for one deployment: its last rollout, or its rollouts in order.
#[derive(Debug, Clone)]
pub enum ExpectEntry {
    Last(Expectation),
    InOrder(Vec<Expectation>),
}

/// A map or a list, told apart by the YAML itself, so a misspelled field inside is reported by
/// name (an untagged enum would only say that nothing matched).
impl<'de> Deserialize<'de> for ExpectEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = ExpectEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of expectations, or a list of them (one per rollout, in order)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ExpectEntry, A::Error> {
                Expectation::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ExpectEntry::Last)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<ExpectEntry, A::Error> {
                Vec::<Expectation>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(ExpectEntry::InOrder)
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

/// What a scenario expects of one rollout. Every field is optional, but an expectation must
/// name at least one: an empty one would check nothing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub outcome: Option<ExpectedOutcome>,
    pub reason: Option<String>,
    pub final_version: Option<String>,
    pub pages: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub first_action_within: Option<Duration>,
    /// Rollback requests the watchdog sent for the rollout that the API server accepted.
    pub rollbacks: Option<u32>,
    /// Times the simulated PagerDuty notified on-call for the rollout.
    pub notified: Option<u32>,
    /// PagerDuty trigger events accepted for the rollout, duplicates included.
    pub triggers: Option<u32>,
    /// Whether the watchdog verified its rollback.
    pub verified: Option<bool>,
    /// Whether the run ends with the Deployment's GitOps sync paused by the watchdog.
    pub gitops_paused: Option<bool>,
}

impl Expectation {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Expectation::default()
    }
}

/// Outcomes a scenario can expect: the daemon's outcomes, plus `undecided` (still open when the
/// run ended) and `none` (no rollout of the deployment was judged at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutcome {
    Passed,
    RolledBack,
    WouldRollBack,
    Degraded,
    RollbackFailed,
    Superseded,
    Deleted,
    Undecided,
    None,
}

impl ExpectedOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedOutcome::Passed => "passed",
            ExpectedOutcome::RolledBack => "rolled_back",
            ExpectedOutcome::WouldRollBack => "would_roll_back",
            ExpectedOutcome::Degraded => "degraded",
            ExpectedOutcome::RollbackFailed => "rollback_failed",
            ExpectedOutcome::Superseded => "superseded",
            ExpectedOutcome::Deleted => "deleted",
            ExpectedOutcome::Undecided => "undecided",
            ExpectedOutcome::None => "none",
        }
    }
}

/// A scenario file that cannot be run: names the file, the field and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {field}: {problem}")]
    Invalid {
        file: String,
        field: String,
        problem: String,
    },
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Scenario::parse(&text, &file)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let invalid = |field: String, problem: String| ScenarioError::Invalid {
            file: file.to_string(),
            field,
            problem,
        };
        let de = serde_norway::Deserializer::from_str(text);
        let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let field = match field.as_str() {
                "." => "(top level)".to_string(),
                "?" => "(YAML syntax)".to_string(),
                _ => field,
            };
            invalid(field, e.into_inner().to_string())
        })?;
        scenario
            .validate()
            .map_err(|(field, problem)| invalid(field, problem))?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=5).contains(&self.watchdogs) {
            return Err((
                "watchdogs".into(),
                format!("{} is not from 1 to 5", self.watchdogs),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(("name".into(), "must not be empty".into()));
        }
        if self
            .simulation
            .scrape_interval
            .is_some_and(|d| d < Duration::from_millis(1))
        {
            return Err((
                "simulation.scrape_interval".into(),
                "must be at least 1ms".into(),
            ));
        }
        let mut refs = std::collections::BTreeSet::new();
        for (i, d) in self.deployments.iter().enumerate() {
            check_ref(&d.reference).map_err(|p| (format!("deployments[{i}].ref"), p))?;
            if !refs.insert(d.reference.clone()) {
                return Err((
                    format!("deployments[{i}].ref"),
                    format!("{} is listed twice", d.reference),
                ));
            }
            if d.replicas < 0 {
                return Err((
                    format!("deployments[{i}].replicas"),
                    "must be 0 or more".into(),
                ));
            }
            if d.version.is_empty() {
                return Err((
                    format!("deployments[{i}].version"),
                    "must not be empty".into(),
                ));
            }
            super::sidecars::check(&d.sidecars, d.name(), &format!("deployments[{i}].sidecars"))?;
            if let Some(g) = &d.gitops {
                check_gitops(g).map_err(|(f, p)| (format!("deployments[{i}].gitops.{f}"), p))?;
            }
            if let Some(deadline) = d.progress_deadline
                && (deadline < Duration::from_secs(1) || deadline.subsec_nanos() != 0)
            {
                return Err((
                    format!("deployments[{i}].progress_deadline"),
                    format!(
                        "{} is not a whole number of seconds of at least 1s (spec.progressDeadlineSeconds)",
                        humantime::format_duration(deadline)
                    ),
                ));
            }
        }
        for (key, b) in &self.apps {
            if AppKey::parse(key).is_none() {
                return Err((
                    format!("apps.{key}"),
                    "key must be namespace/name@version".into(),
                ));
            }
            check_behaviour(b).map_err(|(f, p)| (format!("apps.{key}.{f}"), p))?;
        }
        // A Deployment created by the script is one of the scenario's from then on.
        for (i, ev) in self.script.iter().enumerate() {
            if let Action::Create {
                deployment,
                version,
                replicas,
                ..
            } = &ev.action
            {
                let field = format!("script[{i}].create");
                check_ref(deployment).map_err(|p| (format!("{field}.deployment"), p))?;
                if version.is_empty() {
                    return Err((format!("{field}.version"), "must not be empty".into()));
                }
                if *replicas < 0 {
                    return Err((format!("{field}.replicas"), "must be 0 or more".into()));
                }
                refs.insert(deployment.clone());
            }
        }
        let known = |r: &str| refs.contains(r);
        for (i, ev) in self.script.iter().enumerate() {
            let field = format!("script[{i}]");
            let deployment = match &ev.action {
                Action::Deploy {
                    deployment,
                    version,
                } => {
                    if version.is_empty() {
                        return Err((
                            format!("{field}.deploy.version"),
                            "must not be empty".into(),
                        ));
                    }
                    Some(deployment)
                }
                Action::Scale {
                    deployment,
                    replicas,
                } => {
                    if *replicas < 0 {
                        return Err((
                            format!("{field}.scale.replicas"),
                            "must be 0 or more".into(),
                        ));
                    }
                    Some(deployment)
                }
                Action::GitCommit {
                    deployment,
                    version,
                } => {
                    let managed = self
                        .deployments
                        .iter()
                        .any(|d| &d.reference == deployment && d.gitops.is_some());
                    if !managed {
                        return Err((
                            format!("{field}.git_commit.deployment"),
                            format!("{deployment} has no `gitops` controller to apply a commit"),
                        ));
                    }
                    if version.is_empty() {
                        return Err((
                            format!("{field}.git_commit.version"),
                            "must not be empty".into(),
                        ));
                    }
                    Some(deployment)
                }
                Action::GitopsResume { deployment } => {
                    let managed = self
                        .deployments
                        .iter()
                        .any(|d| &d.reference == deployment && d.gitops.is_some());
                    if !managed {
                        return Err((
                            format!("{field}.gitops_resume.deployment"),
                            format!("{deployment} has no `gitops` controller to resume"),
                        ));
                    }
                    Some(deployment)
                }
                Action::Pause { deployment }
                | Action::Resume { deployment }
                | Action::Delete { deployment }
                | Action::Undo { deployment }
                | Action::Ack { deployment } => Some(deployment),
                Action::SetImage {
                    deployment,
                    version,
                    container,
                } => {
                    self.check_set_image(&field, deployment, version, container.as_deref())?;
                    Some(deployment)
                }
                _ => None,
            };
            if let Some(d) = deployment
                && !known(d)
            {
                return Err((
                    format!("{field}.{}.deployment", ev.action.name()),
                    format!("{d} is not one of the scenario's deployments"),
                ));
            }
        }
        self.validate_expect()
    }

    /// The stricter reading: every key is a Deployment of the scenario and every expectation
    /// checks something, so a typo cannot turn into a check that always passes.
    fn validate_expect(&self) -> Result<(), (String, String)> {
        let known = self.deployment_refs();
        for (reference, entry) in &self.expect {
            let field = format!("expect.{reference}");
            check_ref(reference).map_err(|p| (field.clone(), p))?;
            if !known.contains(reference.as_str()) {
                let listed: Vec<&str> = known.iter().copied().collect();
                return Err((
                    field,
                    format!(
                        "{reference} is not one of the scenario's deployments ({})",
                        listed.join(", ")
                    ),
                ));
            }
            match entry {
                ExpectEntry::Last(e) if e.is_empty() => {
                    return Err((field, "an empty expectation checks nothing".into()));
                }
                ExpectEntry::InOrder(list) if list.is_empty() => {
                    return Err((field, "an empty list expects nothing".into()));
                }
                ExpectEntry::InOrder(list) => {
                    if let Some(i) = list.iter().position(Expectation::is_empty) {
                        return Err((
                            format!("{field}[{i}]"),
                            "an empty expectation checks nothing".into(),
                        ));
                    }
                }
                ExpectEntry::Last(_) => {}
            }
        }
        Ok(())
    }

    /// A `set_image` event: a tag Kubernetes accepts, a container the Deployment has.
    fn check_set_image(
        &self,
        field: &str,
        deployment: &str,
        version: &str,
        container: Option<&str>,
    ) -> Result<(), (String, String)> {
        let tag_ok = !version.is_empty()
            && version.len() <= 128
            && !version.starts_with(['.', '-'])
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !tag_ok {
            return Err((
                format!("{field}.set_image.version"),
                format!("{version:?} is not an image tag"),
            ));
        }
        if let (Some(c), Some(d)) = (
            container,
            self.deployments.iter().find(|d| d.reference == deployment),
        ) && c != d.name()
            && !d.sidecars.iter().any(|s| s.name == c)
        {
            return Err((
                format!("{field}.set_image.container"),
                format!("{deployment} has no container {c:?}"),
            ));
        }
        Ok(())
    }

    /// A scenario that is run to be checked must expect something (`--serve` only serves its
    /// cluster, and needs no expectation).
    pub fn require_expectations(&self, file: &str) -> Result<(), ScenarioError> {
        if self.expect.is_empty() {
            return Err(ScenarioError::Invalid {
                file: file.to_string(),
                field: "expect".into(),
                problem: "missing or empty: a scenario must expect something of at least one \
                          deployment"
                    .into(),
            });
        }
        Ok(())
    }

    /// Every Deployment the scenario has: those listed under `deployments` and those its
    /// script creates.
    pub fn deployment_refs(&self) -> std::collections::BTreeSet<&str> {
        let listed = self.deployments.iter().map(|d| d.reference.as_str());
        let created = self.script.iter().filter_map(|e| e.action.created());
        listed.chain(created).collect()
    }

    /// The behaviour table the scenario starts with.
    pub fn behaviours(&self) -> Vec<(AppKey, Behaviour)> {
        self.apps
            .iter()
            .filter_map(|(k, b)| AppKey::parse(k).map(|key| (key, b.clone())))
            .collect()
    }

    /// When the last script event plays.
    pub fn script_end(&self) -> Duration {
        self.script.iter().map(|e| e.at).max().unwrap_or_default()
    }
}

fn check_gitops(g: &GitopsSpec) -> Result<(), (String, String)> {
    let at_least = |field: &str, d: Duration, min: Duration| {
        if d < min {
            Err((
                field.to_string(),
                format!("must be at least {}", humantime::format_duration(min)),
            ))
        } else {
            Ok(())
        }
    };
    match g {
        GitopsSpec::Argocd(a) => {
            check_ref(&a.application).map_err(|p| ("argocd.application".into(), p))?;
            if let Some(set) = &a.application_set
                && (set.is_empty() || set.contains('/'))
            {
                return Err((
                    "argocd.application_set".into(),
                    format!("{set:?} must be a name (the Application's namespace is its own)"),
                ));
            }
            at_least(
                "argocd.self_heal_timeout",
                a.self_heal_timeout,
                Duration::from_millis(10),
            )
        }
        GitopsSpec::Flux(f) => {
            match (&f.kustomization, &f.helmrelease) {
                (Some(r), None) => {
                    check_ref(r).map_err(|p| ("flux.kustomization".to_string(), p))?
                }
                (None, Some(r)) => check_ref(r).map_err(|p| ("flux.helmrelease".to_string(), p))?,
                _ => {
                    return Err((
                        "flux".into(),
                        "names exactly one of kustomization and helmrelease".into(),
                    ));
                }
            }
            at_least("flux.interval", f.interval, Duration::from_millis(10))
        }
    }
}

fn check_ref(reference: &str) -> Result<(), String> {
    match reference.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(()),
        _ => Err(format!("{reference:?} must be namespace/name")),
    }
}

fn check_behaviour(b: &Behaviour) -> Result<(), (String, String)> {
    use super::behaviour::PodMode;
    if b.recovers_after.is_some()
        && !matches!(
            b.pods,
            PodMode::ImagePullError | PodMode::ConfigError | PodMode::Pending
        )
    {
        return Err((
            "recovers_after".into(),
            "applies only to pods: image_pull_error, config_error or pending".into(),
        ));
    }
    if let Some(m) = &b.image_pull_message {
        if b.pods != PodMode::ImagePullError {
            return Err((
                "image_pull_message".into(),
                "applies only to pods: image_pull_error".into(),
            ));
        }
        if m.trim().is_empty() {
            return Err(("image_pull_message".into(), "must not be empty".into()));
        }
    }
    if !(0.0..=1.0).contains(&b.error_ratio) || b.error_ratio.is_nan() {
        return Err((
            "error_ratio".into(),
            format!("{} is not a fraction from 0 to 1", b.error_ratio),
        ));
    }
    if !b.rps.is_finite() || b.rps < 0.0 {
        return Err((
            "rps".into(),
            format!("{} is not a rate of 0 or more", b.rps),
        ));
    }
    if let Some(status) = b.health.status
        && !(100..=599).contains(&status)
    {
        return Err((
            "health.status".into(),
            format!("{status} is not an HTTP status"),
        ));
    }
    for (path, status) in &b.routes {
        if !path.starts_with('/') {
            return Err((format!("routes.{path}"), "a route must start with /".into()));
        }
        if !(100..=599).contains(status) {
            return Err((
                format!("routes.{path}"),
                format!("{status} is not an HTTP status"),
            ));
        }
    }
    Ok(())
}

impl Action {
    /// The Deployment this event brings into being, if it creates one.
    pub fn created(&self) -> Option<&str> {
        match self {
            Action::Create { deployment, .. } => Some(deployment),
            _ => None,
        }
    }

    /// The event's key in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Deploy { .. } => "deploy",
            Action::App { .. } => "app",
            Action::Scale { .. } => "scale",
            Action::Pause { .. } => "pause",
            Action::Resume { .. } => "resume",
            Action::Delete { .. } => "delete",
            Action::Provider { .. } => "provider",
            Action::Sink { .. } => "sink",
            Action::Api { .. } => "api",
            Action::RestartWatchdog { .. } => "restart_watchdog",
            Action::SetImage { .. } => "set_image",
            Action::KillLeader => "kill_leader",
            Action::Controller { .. } => "controller",
            Action::GitCommit { .. } => "git_commit",
            Action::GitopsResume { .. } => "gitops_resume",
            Action::Undo { .. } => "undo",
            Action::Create { .. } => "create",
            Action::Ack { .. } => "ack",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployFields {
    deployment: String,
    version: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetImageFields {
    deployment: String,
    version: String,
    #[serde(default)]
    container: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleFields {
    deployment: String,
    replicas: i32,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartFields {
    #[serde(default, with = "humantime_serde")]
    after: Duration,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentField {
    deployment: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFields {
    name: ProviderName,
    state: ProviderState,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkFields {
    name: SinkName,
    state: SinkState,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFields {
    state: ApiState,
}
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ControllerState {
    Down,
    Up,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControllerFields {
    state: ControllerState,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateFields {
    deployment: String,
    version: String,
    #[serde(default = "one")]
    replicas: i32,
    #[serde(default = "yes")]
    opted_in: bool,
}

impl<'de> Deserialize<'de> for ScriptEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let at = match map.remove("at") {
            Some(serde_json::Value::String(s)) => humantime::parse_duration(&s)
                .map_err(|e| D::Error::custom(format!("at: {s:?} is not a duration: {e}")))?,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "at: {other} is not a duration like 300ms"
                )));
            }
            None => return Err(D::Error::custom("missing field `at`")),
        };
        if map.len() != 1 {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(D::Error::custom(format!(
                "an event has `at` and exactly one action, found {keys:?}"
            )));
        }
        let Some((key, value)) = map.into_iter().next() else {
            return Err(D::Error::custom("an event needs an action"));
        };
        let field = |e: serde_json::Error| D::Error::custom(format!("{key}: {e}"));
        let action = match key.as_str() {
            "deploy" => {
                let f: DeployFields = serde_json::from_value(value).map_err(field)?;
                Action::Deploy {
                    deployment: f.deployment,
                    version: f.version,
                }
            }
            "app" => {
                let serde_json::Value::Object(mut changes) = value else {
                    return Err(D::Error::custom(
                        "app: must be a map with `target` and behaviour fields",
                    ));
                };
                let target = match changes.remove("target") {
                    Some(serde_json::Value::String(t)) => AppKey::parse(&t).ok_or_else(|| {
                        D::Error::custom(format!(
                            "app.target: {t:?} must be namespace/name@version"
                        ))
                    })?,
                    _ => {
                        return Err(D::Error::custom(
                            "app.target: missing (namespace/name@version)",
                        ));
                    }
                };
                // Check the fields against the behaviour schema now, not when the event plays.
                let probe = serde_json::to_value(Behaviour::default()).map_err(field)?;
                let mut merged = probe;
                if let serde_json::Value::Object(m) = &mut merged {
                    m.extend(changes.clone());
                }
                let b: Behaviour = serde_json::from_value(merged).map_err(field)?;
                check_behaviour(&b).map_err(|(f, p)| D::Error::custom(format!("app.{f}: {p}")))?;
                Action::App { target, changes }
            }
            "scale" => {
                let f: ScaleFields = serde_json::from_value(value).map_err(field)?;
                Action::Scale {
                    deployment: f.deployment,
                    replicas: f.replicas,
                }
            }
            "ack" => {
                let f: DeploymentField = serde_json::from_value(value).map_err(field)?;
                Action::Ack {
                    deployment: f.deployment,
                }
            }
            "pause" | "resume" | "delete" => {
                let f: DeploymentField = serde_json::from_value(value).map_err(field)?;
                match key.as_str() {
                    "pause" => Action::Pause {
                        deployment: f.deployment,
                    },
                    "resume" => Action::Resume {
                        deployment: f.deployment,
                    },
                    _ => Action::Delete {
                        deployment: f.deployment,
                    },
                }
            }
            "provider" => {
                let f: ProviderFields = serde_json::from_value(value).map_err(field)?;
                Action::Provider {
                    name: f.name,
                    state: f.state,
                }
            }
            "sink" => {
                let f: SinkFields = serde_json::from_value(value).map_err(field)?;
                Action::Sink {
                    name: f.name,
                    state: f.state,
                }
            }
            "api" => {
                let f: ApiFields = serde_json::from_value(value).map_err(field)?;
                Action::Api { state: f.state }
            }
            "restart_watchdog" => {
                let f: RestartFields = serde_json::from_value(value).map_err(field)?;
                Action::RestartWatchdog { after: f.after }
            }
            "set_image" => {
                let f: SetImageFields = serde_json::from_value(value).map_err(field)?;
                Action::SetImage {
                    deployment: f.deployment,
                    version: f.version,
                    container: f.container,
                }
            }
            "kill_leader" => Action::KillLeader,
            "controller" => {
                let f: ControllerFields = serde_json::from_value(value).map_err(field)?;
                Action::Controller {
                    running: matches!(f.state, ControllerState::Up),
                }
            }
            "git_commit" => {
                let f: DeployFields = serde_json::from_value(value).map_err(field)?;
                Action::GitCommit {
                    deployment: f.deployment,
                    version: f.version,
                }
            }
            "gitops_resume" => {
                let f: DeploymentField = serde_json::from_value(value).map_err(field)?;
                Action::GitopsResume {
                    deployment: f.deployment,
                }
            }
            "undo" => {
                let f: DeploymentField = serde_json::from_value(value).map_err(field)?;
                Action::Undo {
                    deployment: f.deployment,
                }
            }
            "create" => {
                let f: CreateFields = serde_json::from_value(value).map_err(field)?;
                Action::Create {
                    deployment: f.deployment,
                    version: f.version,
                    replicas: f.replicas,
                    opted_in: f.opted_in,
                }
            }
            other => {
                return Err(D::Error::custom(format!(
                    "unknown event `{other}` (deploy, app, scale, pause, resume, delete, provider, sink, api, restart_watchdog, kill_leader, set_image, controller, undo, create, ack, git_commit, gitops_resume)"
                )));
            }
        };
        Ok(ScriptEvent { at, action })
    }
}

/// Applies an `app` event's changes to a behaviour.
pub fn apply_changes(
    current: &Behaviour,
    changes: &serde_json::Map<String, serde_json::Value>,
) -> Result<Behaviour, serde_json::Error> {
    let mut value = serde_json::to_value(current)?;
    if let serde_json::Value::Object(m) = &mut value {
        for (k, v) in changes {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name: error-spike-rolls-back
description: free text
duration: 8s
config:
  mode: enforce
  watch: {window: 4s, interval: 100ms, rollout_timeout: 3s, pending_timeout: 1s}
deployments:
  - ref: production/app
    replicas: 3
    version: v1.2.2
apps:
  production/app@v1.2.2: {pods: running, rps: 200, error_ratio: 0.001}
  production/app@v1.2.3: {pods: running, rps: 200, error_ratio: 0.05}
script:
  - {at: 300ms, deploy: {deployment: production/app, version: v1.2.3}}
  - {at: 1s, app: {target: production/app@v1.2.3, error_ratio: 0.5}}
  - {at: 2s, restart_watchdog: {}}
  - {at: 2s, provider: {name: prometheus, state: rate_limited}}
expect:
  production/app:
    outcome: rolled_back
    reason: error_rate
    final_version: v1.2.2
    pages: 1
    first_action_within: 2s
"#;

    #[test]
    fn the_documented_example_parses() {
        let s = Scenario::parse(EXAMPLE, "example.yaml").expect("valid");
        assert_eq!(s.name, "error-spike-rolls-back");
        assert_eq!(s.duration, Some(Duration::from_secs(8)));
        assert_eq!(s.deployments[0].namespace(), "production");
        assert_eq!(s.script.len(), 4);
        assert_eq!(s.script[0].at, Duration::from_millis(300));
        assert_eq!(
            s.script[2].action,
            Action::RestartWatchdog {
                after: Duration::ZERO
            }
        );
        let ExpectEntry::Last(e) = &s.expect["production/app"] else {
            panic!("a map")
        };
        assert_eq!(e.outcome, Some(ExpectedOutcome::RolledBack));
        assert_eq!(e.first_action_within, Some(Duration::from_secs(2)));
    }

    fn error_of(text: &str) -> String {
        match Scenario::parse(text, "bad.yaml") {
            Ok(_) => panic!("should not parse: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_scenarios_name_the_file_and_the_field() {
        let cases = [
            (
                "name: x\ndeployments: [{ref: a/b, version: v1, replicaz: 3}]\n",
                "deployments[0]",
            ),
            (
                "name: x\nscript: [{at: soon, deploy: {deployment: a/b, version: v2}}]\n",
                "script[0]",
            ),
            (
                "name: x\nscript: [{at: 1s, deploy: {deployment: a/b, version: v2}}]\n",
                "script[0].deploy.deployment",
            ),
            (
                "name: x\napps: {app-without-version: {}}\n",
                "apps.app-without-version",
            ),
            (
                "name: x\napps: {a/b@v1: {error_ratio: 2}}\n",
                "apps.a/b@v1.error_ratio",
            ),
            ("name: x\nexpect: {a/b: {outcome: exploded}}\n", "expect"),
            (
                "name: x\nscript: [{at: 1s, provider: {name: graphite, state: down}}]\n",
                "script[0]",
            ),
            ("description: no name\n", "name"),
            (
                "name: x\nscript: [{at: 1s, scale: {deployment: a/b, replicas: 2}, pause: {deployment: a/b}}]\n",
                "exactly one action",
            ),
        ];
        for (text, needle) in cases {
            let msg = error_of(text);
            assert!(msg.starts_with("bad.yaml: "), "{msg}");
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }

    #[test]
    fn controller_undo_and_create_events_and_rollout_fields_parse() {
        let s = Scenario::parse(
            r#"
name: x
deployments:
  - {ref: a/b, version: v1, strategy: recreate, progress_deadline: 2s}
script:
  - {at: 1s, controller: {state: down}}
  - {at: 2s, undo: {deployment: a/b}}
  - {at: 3s, delete: {deployment: a/b}}
  - {at: 4s, create: {deployment: a/b, version: v1, replicas: 2}}
  - {at: 5s, create: {deployment: a/c, version: v1, opted_in: false}}
  - {at: 6s, deploy: {deployment: a/c, version: v2}}
  - {at: 7s, controller: {state: up}}
"#,
            "f",
        )
        .expect("valid");
        assert_eq!(s.deployments[0].strategy, Strategy::Recreate);
        assert_eq!(
            s.deployments[0].progress_deadline,
            Some(Duration::from_secs(2))
        );
        assert_eq!(s.script[0].action, Action::Controller { running: false });
        assert_eq!(
            s.script[1].action,
            Action::Undo {
                deployment: "a/b".into()
            }
        );
        assert_eq!(
            s.script[4].action,
            Action::Create {
                deployment: "a/c".into(),
                version: "v1".into(),
                replicas: 1,
                opted_in: false
            }
        );
        assert_eq!(s.script[6].action, Action::Controller { running: true });
        let cases = [
            (
                "name: x\nscript: [{at: 1s, controller: {state: sideways}}]\n",
                "script[0]",
            ),
            (
                "name: x\nscript: [{at: 1s, undo: {deployment: a/b}}]\n",
                "script[0].undo.deployment",
            ),
            (
                "name: x\nscript: [{at: 1s, create: {deployment: a/b, version: v1, replicaz: 2}}]\n",
                "script[0]",
            ),
            (
                "name: x\nscript: [{at: 1s, create: {deployment: b, version: v1}}]\n",
                "script[0].create.deployment",
            ),
            (
                "name: x\ndeployments: [{ref: a/b, version: v1, strategy: canary}]\n",
                "deployments[0]",
            ),
            (
                "name: x\ndeployments: [{ref: a/b, version: v1, progress_deadline: 1500ms}]\n",
                "deployments[0].progress_deadline",
            ),
        ];
        for (text, needle) in cases {
            let msg = error_of(text);
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }

    #[test]
    fn expectations_are_read_strictly() {
        let file = |expect: &str| {
            format!(
                "name: x\ndeployments: [{{ref: production/app, version: v1}}]\nexpect:\n{expect}"
            )
        };
        let cases = [
            // A key that is not a Deployment of the scenario: a typo must not pass unchecked.
            (
                file("  production/ap: {pages: 0}\n"),
                "bad.yaml: expect.production/ap: production/ap is not one of the scenario's deployments",
            ),
            (
                file("  production/app: {}\n"),
                "bad.yaml: expect.production/app: an empty expectation checks nothing",
            ),
            (
                file("  production/app: [{outcome: superseded}, {}]\n"),
                "bad.yaml: expect.production/app[1]: an empty expectation checks nothing",
            ),
            (
                file("  production/app: []\n"),
                "bad.yaml: expect.production/app: an empty list expects nothing",
            ),
            // A misspelled field is named, in a map and in a list alike.
            (
                file("  production/app: {outcome: passed, tiggers: 1}\n"),
                "bad.yaml: expect.production/app.tiggers: ",
            ),
            (
                file("  production/app:\n    - {outcome: superseded}\n    - {rollback: 1}\n"),
                "bad.yaml: expect.production/app[1].rollback: ",
            ),
            (
                file("  production/app: {verified: maybe}\n"),
                "bad.yaml: expect.production/app.verified: ",
            ),
            (
                file("  production/app: passed\n"),
                "bad.yaml: expect.production/app: ",
            ),
        ];
        for (text, needle) in cases {
            let msg = error_of(&text);
            assert!(msg.starts_with(needle), "{needle:?} does not start {msg:?}");
            if needle.ends_with("tiggers: ") || needle.ends_with("rollback: ") {
                assert!(msg.contains("unknown field `"), "{msg}");
                assert!(
                    msg.contains("`triggers`, `verified`"),
                    "the known fields: {msg}"
                );
            }
            if text.ends_with("production/app: passed\n") {
                assert!(
                    msg.contains("expected a map of expectations, or a list"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn a_scenario_that_is_checked_must_expect_something() {
        for text in [
            "name: x\ndeployments: [{ref: a/b, version: v1}]\n",
            "name: x\ndeployments: [{ref: a/b, version: v1}]\nexpect: {}\n",
        ] {
            let s = Scenario::parse(text, "f.yaml").expect("a cluster to serve is valid");
            let err = s
                .require_expectations("f.yaml")
                .expect_err("nothing to check")
                .to_string();
            assert!(err.starts_with("f.yaml: expect: missing or empty"), "{err}");
        }
        let s = Scenario::parse(EXAMPLE, "example.yaml").expect("valid");
        assert!(s.require_expectations("example.yaml").is_ok());
    }

    #[test]
    fn gitops_fields_parse_and_bad_ones_are_named() {
        let s = Scenario::parse(
            "name: x\ndeployments:\n  - {ref: a/b, version: v1, gitops: {argocd: {application: argocd/b, self_heal_timeout: 500ms}}}\n  - {ref: a/c, version: v1, gitops: {flux: {helmrelease: a/c, interval: 1s}}}\nscript:\n  - {at: 1s, git_commit: {deployment: a/b, version: v2}}\nexpect:\n  a/b: {gitops_paused: true}\n",
            "f",
        )
        .expect("valid");
        let Some(GitopsSpec::Argocd(a)) = &s.deployments[0].gitops else {
            panic!("argocd")
        };
        assert_eq!(
            (a.self_heal, a.self_heal_timeout),
            (true, Duration::from_millis(500))
        );
        assert!(matches!(s.deployments[1].gitops, Some(GitopsSpec::Flux(_))));
        let both = error_of(
            "name: x\ndeployments: [{ref: a/b, version: v1, gitops: {flux: {kustomization: f/k, helmrelease: a/b}}}]\nexpect: {a/b: {pages: 0}}\n",
        );
        assert!(
            both.contains("deployments[0].gitops.flux") && both.contains("exactly one"),
            "{both}"
        );
        let unmanaged = error_of(
            "name: x\ndeployments: [{ref: a/b, version: v1}]\nscript: [{at: 1s, git_commit: {deployment: a/b, version: v2}}]\nexpect: {a/b: {pages: 0}}\n",
        );
        assert!(
            unmanaged.contains("script[0].git_commit.deployment"),
            "{unmanaged}"
        );
        let resume = error_of(
            "name: x\ndeployments: [{ref: a/b, version: v1}]\nscript: [{at: 1s, gitops_resume: {deployment: a/b}}]\nexpect: {a/b: {pages: 0}}\n",
        );
        assert!(
            resume.contains("script[0].gitops_resume.deployment"),
            "{resume}"
        );
    }

    #[test]
    fn the_new_expectations_parse() {
        let s = Scenario::parse(
            "name: x\ndeployments: [{ref: a/b, version: v1}]\nexpect:\n  a/b: {triggers: 1, rollbacks: 0, verified: false}\n",
            "f",
        )
        .expect("valid");
        let ExpectEntry::Last(e) = &s.expect["a/b"] else {
            panic!("a map")
        };
        assert_eq!(
            (e.triggers, e.rollbacks, e.verified),
            (Some(1), Some(0), Some(false))
        );
    }

    #[test]
    fn an_expectation_can_be_a_list_in_order() {
        let s = Scenario::parse(
            "name: x\ndeployments: [{ref: a/b, version: v1}]\nexpect:\n  a/b:\n    - {outcome: superseded}\n    - {outcome: passed}\n",
            "f",
        )
        .expect("valid");
        assert!(matches!(&s.expect["a/b"], ExpectEntry::InOrder(v) if v.len() == 2));
    }

    #[test]
    fn app_changes_keep_the_fields_they_do_not_name() {
        let base = Behaviour {
            rps: 250.0,
            ..Behaviour::default()
        };
        let mut changes = serde_json::Map::new();
        changes.insert("error_ratio".into(), serde_json::json!(0.2));
        let b = apply_changes(&base, &changes).expect("valid");
        assert_eq!(b.rps, 250.0);
        assert_eq!(b.error_ratio, 0.2);
    }
}
