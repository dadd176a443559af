//! The scenario runner: starts the simulation on loopback, runs the unmodified daemon against
//! it over HTTP, plays the script, and checks the expectations (docs/scenarios.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviours, PodMode};
use super::cluster::{DeploymentPatch, SimCluster};
use super::scenario::{
    self, Action, ExpectEntry, Expectation, ExpectedOutcome, ProviderName, Scenario, SinkName,
};
use super::services::{Apps, ClusterView, DatadogSim, PagerDutySim, PrometheusSim, SlackSim};
use crate::cluster::record::{self, EventReason, Outcome};
use crate::config::{
    Config, ConfigError, DatadogConfig, Delay, LeaseSpan, Period, PrometheusConfig, Secrets,
    UrlTemplate,
};
use crate::daemon;
use crate::phase::Phase;
use crate::telemetry::Metrics;

/// One rollout as the scenario saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub deployment: String,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub final_version: Option<String>,
    pub pages: u32,
    /// PagerDuty trigger events accepted (HTTP 202) for this rollout, duplicates included.
    pub triggers: u32,
    pub first_action_ms: Option<u64>,
    /// Rollback requests for this rollout that the API server accepted: PATCHes that write the
    /// pod template, a no-op write included.
    pub rollbacks: u32,
    /// Whether the watchdog verified its rollback.
    pub verified: bool,
    /// When the deploy that started this rollout played, since the run started.
    pub deployed_at_ms: Option<u64>,
    /// Times the simulated PagerDuty notified on-call for this rollout.
    pub notified: u32,
    #[serde(skip)]
    pub revision: i64,
    /// A final outcome was recorded (a rollback sent but not verified is not one).
    #[serde(skip)]
    settled: bool,
}

/// A `restart_watchdog` or `kill_leader` event as it played: which replicas it killed.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    pub at_ms: u64,
    pub event: &'static str,
    /// Identities of the replicas killed; empty when there was none to kill (no leader).
    pub killed: Vec<String>,
}

/// The `--json` line of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub ok: bool,
    pub failures: Vec<String>,
    pub rollouts: Vec<RolloutReport>,
    /// Every watchdog replica killed by the script, in order.
    pub kills: Vec<Kill>,
    pub duration_ms: u64,
}

/// One line of the live timeline.
#[derive(Debug, Clone)]
pub struct Moment {
    pub at: Duration,
    pub kind: MomentKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MomentKind {
    Script,
    Decision,
    Action,
    Page,
    Slack,
    /// A watch window began: `text` names the deployment.
    WindowStarted {
        window_ms: u64,
    },
    Expectation {
        met: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{file}: config: {source}")]
    Config {
        file: String,
        source: crate::config::ConfigError,
    },
    #[error("{0}: cannot start the simulation: {1}")]
    Start(String, std::io::Error),
}

impl ClusterView for SimCluster {
    fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)> {
        SimCluster::ready_pods_by_version(self, namespace, name)
    }
    fn deployments(&self) -> Vec<(String, String)> {
        SimCluster::deployments(self)
    }
    fn ready_changes_since(&self, generation: u64) -> (u64, Option<Vec<(String, String)>>) {
        let (generation, changed) = SimCluster::changed_since(self, generation);
        (generation, Some(changed))
    }
}

/// The daemon config a scenario runs with: its `config:` over the defaults, every URL at the
/// simulation.
pub fn daemon_config(s: &Scenario, file: &str) -> Result<Config, RunError> {
    let config_error = |source| RunError::Config {
        file: file.into(),
        source,
    };
    // Read as the daemon reads its file: the scenario's `config:` written out as YAML.
    let yaml = match &s.config {
        Some(value) => serde_norway::to_string(value)
            .map_err(|e| config_error(ConfigError::Load(e.to_string())))?,
        None => String::new(),
    };
    Config::from_yaml(&yaml).map_err(config_error)
}

/// The simulation of one scenario, up and serving.
pub struct Simulation {
    pub cluster: SimCluster,
    pub apps: Apps,
    pub prometheus: PrometheusSim,
    pub datadog: DatadogSim,
    pub pagerduty: PagerDutySim,
    pub slack: SlackSim,
    pub behaviours: Behaviours,
    pub config: Config,
    pub secrets: Secrets,
    pub api_url: String,
    /// Where the simulated apps answer (`/metrics` included), for a real Prometheus to scrape.
    pub apps_addr: std::net::SocketAddr,
}

impl Simulation {
    /// Starts every simulated service for `s` and points a copy of `config` at them.
    pub async fn start(
        s: &Scenario,
        mut config: Config,
        file: &str,
        shutdown: &CancellationToken,
    ) -> Result<Simulation, RunError> {
        let err = |e| RunError::Start(file.to_string(), e);
        // A duration the simulation derives for the daemon, out of the field's bounds.
        let bounded = |field: &str, problem: String| RunError::Config {
            file: file.to_string(),
            source: ConfigError::Invalid {
                field: field.into(),
                problem,
            },
        };
        let behaviours = Behaviours::default();
        for (key, b) in s.behaviours() {
            behaviours.set(key, b);
        }
        let cluster = SimCluster::new(behaviours.clone());
        let api = cluster.start(shutdown.child_token()).await.map_err(err)?;
        let apps = Apps::new(behaviours.clone(), Arc::new(cluster.clone()));
        let apps_addr = apps.start(shutdown.child_token()).await.map_err(err)?;
        let prometheus = PrometheusSim::new(&apps);
        let scrape_interval = s
            .simulation
            .scrape_interval(config.judge.sample_window.get());
        prometheus.set_scrape_interval(scrape_interval);
        let prom_addr = prometheus
            .start(shutdown.child_token())
            .await
            .map_err(err)?;
        let datadog = DatadogSim::new(&apps);
        let dd_addr = datadog.start(shutdown.child_token()).await.map_err(err)?;
        let pagerduty = PagerDutySim::new();
        let pd_addr = pagerduty.start(shutdown.child_token()).await.map_err(err)?;
        let slack = SlackSim::new();
        let slack_addr = slack.start(shutdown.child_token()).await.map_err(err)?;

        let app_base = format!("http://{apps_addr}/apps/{{namespace}}/{{name}}");
        // Every URL here is the simulation's own: `http://` and a socket address.
        let at = |url: String| UrlTemplate::parse(&url).map_err(|e| err(std::io::Error::other(e)));
        config.health.url = at(format!("{app_base}/health"))?;
        for check in &mut config.smoke {
            check.url = at(format!("{app_base}{}", path_of(&check.url)))?;
        }
        // URL-valued annotations the allow-list accepts go to the simulated app too; refused
        // ones stay as written, so a scenario can test the refusal.
        for d in &s.deployments {
            let mut d = d.clone();
            for (key, value) in d.annotations.iter_mut() {
                let (ns, name) = (
                    d.reference.split('/').next().unwrap_or_default(),
                    d.reference.rsplit('/').next().unwrap_or_default(),
                );
                let allowed = |u: &str| {
                    crate::overrides::allowed_url(&config.annotations, u, ns, name).is_ok()
                };
                if key == "deploy-watchdog.io/health-url" && allowed(value) {
                    *value = format!("{app_base}{}", path_of(value));
                } else if key == "deploy-watchdog.io/smoke"
                    && let Ok(mut checks) =
                        serde_json::from_str::<Vec<crate::config::SmokeCheck>>(value)
                    && checks.iter().all(|c| allowed(&c.url))
                {
                    for c in &mut checks {
                        c.url = at(format!("{app_base}{}", path_of(&c.url)))?;
                    }
                    *value = serde_json::to_string(&checks).unwrap_or_default();
                }
            }
            cluster.add_deployment(&d);
        }
        for plural in &s.simulation.forbidden {
            cluster.forbid_everywhere(plural);
        }
        for d in &s.simulation.rbac_denied {
            cluster.deny(&d.verb, &d.resource);
        }
        config
            .annotations
            .allowed_hosts
            .push(apps_addr.ip().to_string());
        let named = s
            .config
            .as_ref()
            .and_then(|c| c.get("providers"))
            .and_then(|p| p.as_object());
        if named.is_none_or(|p| p.is_empty()) || named.is_some_and(|p| p.contains_key("prometheus"))
        {
            let p = config
                .providers
                .prometheus
                .get_or_insert_with(PrometheusConfig::default);
            p.url = at(format!("http://{prom_addr}"))?;
            p.scrape_interval = Period::new(scrape_interval)
                .map_err(|e| bounded("providers.prometheus.scrape_interval", e))?;
        }
        let (dd_api_key, dd_app_key) = (
            "0SIMULATED0DATADOG0API0KEY000000",
            "0SIMULATED0DATADOG0APPLICATION0KEY000000",
        );
        if named.is_some_and(|p| p.contains_key("datadog")) {
            let d = config
                .providers
                .datadog
                .get_or_insert_with(DatadogConfig::default);
            d.url = Some(at(format!("http://{dd_addr}"))?);
            datadog.set_api_keys(dd_api_key, dd_app_key);
            // The apps report the environment the config looks for; Datadog makes points
            // queryable a quarter of a sample window late, and the daemon waits that long
            // unless the scenario says otherwise.
            if let Some(env) = &d.env {
                datadog.set_env(env);
            }
            let delay = config.judge.sample_window.get() / 4;
            datadog.set_ingestion_delay(delay);
            let delay_set = named
                .and_then(|p| p.get("datadog"))
                .and_then(|d| d.get("ingestion_delay"))
                .is_some();
            if !delay_set {
                d.ingestion_delay = Delay::new(delay)
                    .map_err(|e| bounded("providers.datadog.ingestion_delay", e))?;
            }
        }
        config.notify.pagerduty.url = format!("http://{pd_addr}");
        // The daemon is told Argo CD's self-heal timeout, as an operator would configure it.
        let heal_set = s
            .config
            .as_ref()
            .and_then(|c| c.get("gitops"))
            .and_then(|g| g.get("argocd_self_heal_timeout"))
            .is_some();
        let heal = s
            .deployments
            .iter()
            .filter_map(|d| match &d.gitops {
                Some(scenario::GitopsSpec::Argocd(a)) => Some(a.self_heal_timeout),
                _ => None,
            })
            .max();
        if let (false, Some(heal)) = (heal_set, heal) {
            config.gitops.argocd_self_heal_timeout = crate::config::Timeout::new(heal)
                .map_err(|e| bounded("gitops.argocd_self_heal_timeout", e))?;
        }
        if s.watchdogs > 1 {
            let configured = s
                .config
                .as_ref()
                .and_then(|c| c.get("leader_election"))
                .is_some();
            let le = &mut config.leader_election;
            le.enabled = true;
            if le.namespace.is_empty() {
                le.namespace = "deploy-watchdog".into();
            }
            if !configured {
                // Short timings so a takeover fits a scenario's seconds (Lease durations are whole seconds).
                le.lease_duration = const { LeaseSpan::from_secs(2) };
                le.renew_deadline = const { LeaseSpan::from_millis(1500) };
                le.retry_period = const { LeaseSpan::from_millis(200) };
            }
        }
        let secrets = Secrets {
            pagerduty_routing_key: Some("R0UTING0KEY0SIMULATED00000000000".into()),
            slack_webhook_url: Some(format!(
                "http://{slack_addr}/services/T0SIM/B0SIM/simulated"
            )),
            datadog_api_key: Some(dd_api_key.into()),
            datadog_app_key: Some(dd_app_key.into()),
        };
        Ok(Simulation {
            cluster,
            apps,
            prometheus,
            datadog,
            pagerduty,
            slack,
            behaviours,
            config,
            secrets,
            api_url: format!("http://{api}"),
            apps_addr,
        })
    }

    /// Plays one script action.
    pub fn play(&self, action: &Action) {
        let split = |r: &str| {
            r.split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default()
        };
        let result = match action {
            Action::Deploy {
                deployment,
                version,
            } => {
                let (ns, n) = split(deployment);
                self.cluster.deploy(&ns, &n, version)
            }
            Action::App { target, changes } => {
                let current = self.behaviours.get(target);
                if let Ok(b) = scenario::apply_changes(&current, changes) {
                    self.behaviours.set(target.clone(), b);
                }
                self.cluster.behaviours_changed();
                Ok(())
            }
            Action::Scale {
                deployment,
                replicas,
            } => {
                let (ns, n) = split(deployment);
                self.cluster.scale(&ns, &n, *replicas)
            }
            Action::Pause { deployment } | Action::Resume { deployment } => {
                let (ns, n) = split(deployment);
                self.cluster
                    .set_paused(&ns, &n, matches!(action, Action::Pause { .. }))
            }
            Action::Delete { deployment } => {
                let (ns, n) = split(deployment);
                self.cluster.delete(&ns, &n)
            }
            Action::Provider {
                name: ProviderName::Prometheus,
                state,
            } => {
                self.prometheus.set_state(*state);
                Ok(())
            }
            Action::Provider {
                name: ProviderName::Datadog,
                state,
            } => {
                self.datadog.set_state(*state);
                Ok(())
            }
            Action::Sink {
                name: SinkName::Pagerduty,
                state,
            } => {
                self.pagerduty.set_state(*state);
                Ok(())
            }
            Action::Sink {
                name: SinkName::Slack,
                state,
            } => {
                self.slack.set_state(*state);
                Ok(())
            }
            Action::Api { state } => {
                self.cluster.set_api_state(*state);
                Ok(())
            }
            Action::SetImage {
                deployment,
                version,
                container,
            } => {
                let (ns, n) = split(deployment);
                self.cluster
                    .set_image(&ns, &n, container.as_deref(), version)
            }
            Action::Ack { deployment } => {
                let (ns, n) = split(deployment);
                self.pagerduty.acknowledge_open(|event| {
                    let d = &event["payload"]["custom_details"];
                    d["namespace"] == ns.as_str() && d["deployment"] == n.as_str()
                });
                Ok(())
            }
            Action::RestartWatchdog { .. } | Action::KillLeader => Ok(()),
            Action::Controller { running } => {
                self.cluster.set_controller_running(*running);
                Ok(())
            }
            Action::GitCommit {
                deployment,
                version,
            } => {
                let (ns, n) = split(deployment);
                self.cluster.git_commit(&ns, &n, version);
                Ok(())
            }
            Action::GitopsResume { deployment } => {
                let (ns, n) = split(deployment);
                self.cluster.gitops_resume_by_hand(&ns, &n);
                Ok(())
            }
            Action::Undo { deployment } => {
                let (ns, n) = split(deployment);
                self.cluster.undo(&ns, &n).map(|undone| {
                    if let super::cluster::Undone::Skipped(revision) = undone {
                        tracing::info!(%deployment, revision, "kubectl rollout undo: skipped rollback (current template already matches)");
                    }
                })
            }
            Action::Create {
                deployment,
                version,
                replicas,
                opted_in,
            } => self.cluster.create_deployment(&scenario::DeploymentSpec {
                reference: deployment.clone(),
                replicas: *replicas,
                version: version.clone(),
                opted_in: *opted_in,
                paused: false,
                annotations: BTreeMap::new(),
                strategy: scenario::Strategy::default(),
                progress_deadline: None,
                gitops: None,
                sidecars: Vec::new(),
            }),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "script event not applied");
        }
    }
}

/// The path (and query) of a URL template, for pointing smoke checks at the simulated app.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}

/// A daemon in its own runtime: dropping the runtime stops it abruptly, like a killed process.
struct DaemonProcess {
    runtime: Option<tokio::runtime::Runtime>,
    status: daemon::Status,
    /// The daemon's metrics, as its `/metrics` would show them.
    metrics: Arc<Metrics>,
    identity: String,
}

impl DaemonProcess {
    fn start(sim: &Simulation, identity: String) -> std::io::Result<DaemonProcess> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let metrics = Arc::new(
            Metrics::register(&prometheus::Registry::new()).map_err(std::io::Error::other)?,
        );
        let status = daemon::Status::default().with_metrics(metrics.clone());
        let (mut config, secrets, status2) =
            (sim.config.clone(), sim.secrets.clone(), status.clone());
        config.leader_election.identity = identity.clone();
        let url = sim.api_url.clone();
        let counted = metrics.clone();
        runtime.spawn(async move {
            let Ok(uri) = url.parse() else { return };
            let client = match crate::telemetry::kube_client(kube::Config::new(uri), &counted) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the Kubernetes client");
                    return;
                }
            };
            if let Err(e) =
                daemon::run(config, secrets, client, CancellationToken::new(), status2).await
            {
                tracing::error!(error = %e, "daemon stopped");
            }
        });
        Ok(DaemonProcess {
            runtime: Some(runtime),
            status,
            metrics,
            identity,
        })
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The daemon replicas of a run: one, or several electing a leader.
struct Replicas {
    daemons: Vec<DaemonProcess>,
    started: usize,
    /// Replicas stopped by a `restart_watchdog` with `after`: when they start, and how many.
    due: Option<(Instant, usize)>,
}

impl Replicas {
    fn start(sim: &Simulation, n: u32) -> std::io::Result<Replicas> {
        let mut r = Replicas {
            daemons: Vec::new(),
            started: 0,
            due: None,
        };
        for _ in 0..n {
            r.add(sim)?;
        }
        Ok(r)
    }

    fn add(&mut self, sim: &Simulation) -> std::io::Result<()> {
        self.started += 1;
        self.daemons.push(DaemonProcess::start(
            sim,
            format!("watchdog-{}", self.started),
        )?);
        Ok(())
    }

    fn ready(&self) -> bool {
        self.daemons.iter().all(|d| d.status.ready())
    }

    fn in_flight(&self) -> usize {
        self.daemons
            .iter()
            .map(|d| usize::try_from(d.metrics.notifications_in_flight()).unwrap_or(0))
            .sum()
    }

    /// Whether one live replica holds the Lease (always, without an election).
    fn leading(&self, sim: &Simulation) -> bool {
        let le = &sim.config.leader_election;
        if !le.enabled {
            return !self.daemons.is_empty();
        }
        let holder = sim
            .cluster
            .lease_json(&le.namespace, &le.lease_name)
            .and_then(|l| {
                l.pointer("/spec/holderIdentity")
                    .and_then(|h| h.as_str())
                    .map(str::to_string)
            });
        holder.is_some_and(|h| self.daemons.iter().any(|d| d.identity == h))
    }

    /// Every replica killed and started again, `after` that (at once when zero): nothing in
    /// memory survives. Returns the identities killed.
    fn restart_all(&mut self, sim: &Simulation, after: Duration) -> std::io::Result<Vec<String>> {
        let killed: Vec<String> = self.daemons.iter().map(|d| d.identity.clone()).collect();
        let n = killed.len() + self.due.take().map_or(0, |(_, n)| n);
        self.kill_all();
        self.due = Some((Instant::now() + after, n));
        self.start_due(sim, Instant::now())?;
        Ok(killed)
    }

    /// Starts the replicas a delayed restart stopped, once their time has come.
    fn start_due(&mut self, sim: &Simulation, now: Instant) -> std::io::Result<()> {
        if let Some((at, n)) = self.due
            && at <= now
        {
            self.due = None;
            for _ in 0..n {
                self.add(sim)?;
            }
        }
        Ok(())
    }

    /// The replica holding the Lease is killed; a replacement starts, as its ReplicaSet would.
    fn kill_leader(&mut self, sim: &Simulation) -> std::io::Result<Option<String>> {
        let le = &sim.config.leader_election;
        let holder = sim
            .cluster
            .lease_json(&le.namespace, &le.lease_name)
            .and_then(|l| {
                l.pointer("/spec/holderIdentity")
                    .and_then(|h| h.as_str())
                    .map(str::to_string)
            });
        let Some(holder) = holder else {
            return Ok(None);
        };
        let before = self.daemons.len();
        self.daemons.retain(|d| d.identity != holder);
        if self.daemons.len() < before {
            self.add(sim)?;
            return Ok(Some(holder));
        }
        Ok(None)
    }

    fn kill_all(&mut self) {
        for d in &mut self.daemons {
            d.kill();
        }
        self.daemons.clear();
    }
}

/// How long a run goes on after its last script event, and after its replicas are back and one
/// leads, before it may end early: time for the daemon to act on what it just saw.
const SETTLE: Duration = Duration::from_millis(300);
/// Sync periods of a GitOps controller a rollback must hold before a run may end early.
const GITOPS_HOLD: u32 = 3;

/// How long the daemon may take to sync before the script starts anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs one scenario; `moments` receives the timeline as it happens.
pub async fn run(
    s: &Scenario,
    file: &str,
    moments: Option<mpsc::UnboundedSender<Moment>>,
) -> Result<ScenarioReport, RunError> {
    let config = daemon_config(s, file)?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = Simulation::start(s, config, file, &shutdown).await?;
    run_in(&sim, s, file, moments).await
}

/// Runs one scenario in a simulation already started, with whatever its `config` now says
/// (e.g. a real Prometheus in place of the simulated query API).
pub async fn run_in(
    sim: &Simulation,
    s: &Scenario,
    file: &str,
    moments: Option<mpsc::UnboundedSender<Moment>>,
) -> Result<ScenarioReport, RunError> {
    let config = &sim.config;
    let duration = s.duration.unwrap_or(
        config.watch.rollout_timeout.get() + config.watch.window.get() + Duration::from_secs(5),
    );
    let mut daemon =
        Replicas::start(sim, s.watchdogs).map_err(|e| RunError::Start(file.into(), e))?;
    // The script's clock starts once the daemon has synced, as it would have in a cluster where
    // the watchdog was running before the deploy.
    let ready_by = Instant::now() + READY_TIMEOUT;
    let lease = (
        sim.config.leader_election.namespace.clone(),
        sim.config.leader_election.lease_name.clone(),
    );
    let elected = || {
        !sim.config.leader_election.enabled || sim.cluster.lease_json(&lease.0, &lease.1).is_some()
    };
    while !(daemon.ready() && elected()) && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let mut obs = Observer::new(started, moments);

    let mut script: Vec<_> = s.script.iter().collect();
    script.sort_by_key(|e| e.at);
    let mut next = 0;
    let mut deploys: Vec<(String, String, Instant)> = Vec::new();
    let mut kills: Vec<Kill> = Vec::new();
    // Since when every replica has been ready and one has led (None while not).
    let mut steady_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        daemon
            .start_due(sim, now)
            .map_err(|e| RunError::Start(file.into(), e))?;
        while next < script.len() && started + script[next].at <= now {
            let ev = script[next];
            sim.play(&ev.action);
            if let Action::Deploy {
                deployment,
                version,
            } = &ev.action
            {
                deploys.push((deployment.clone(), version.clone(), now));
            }
            if let Action::GitCommit {
                deployment,
                version,
            } = &ev.action
            {
                // The GitOps controller rolls it out at its next sync.
                deploys.push((deployment.clone(), version.clone(), now));
            }
            if let Action::SetImage { deployment, .. } = &ev.action {
                // A rollout of whatever the app container runs now (unchanged when only a
                // sidecar's image changed).
                let (ns, n) = deployment.split_once('/').unwrap_or_default();
                let version = sim.cluster.current_version(ns, n).unwrap_or_default();
                deploys.push((deployment.clone(), version, now));
            }
            if let Action::RestartWatchdog { after } = ev.action {
                let killed = daemon
                    .restart_all(sim, after)
                    .map_err(|e| RunError::Start(file.into(), e))?;
                kills.push(Kill {
                    at_ms: (now - started).as_millis() as u64,
                    event: ev.action.name(),
                    killed,
                });
            }
            if ev.action == Action::KillLeader {
                let killed = daemon
                    .kill_leader(sim)
                    .map_err(|e| RunError::Start(file.into(), e))?;
                match &killed {
                    Some(who) => obs.say(MomentKind::Script, format!("killed the leader, {who}")),
                    None => obs.say(MomentKind::Script, "no leader to kill".into()),
                }
                kills.push(Kill {
                    at_ms: (now - started).as_millis() as u64,
                    event: ev.action.name(),
                    killed: killed.into_iter().collect(),
                });
            }
            obs.say(MomentKind::Script, describe(&ev.action));
            next += 1;
        }
        obs.collect(sim);
        let elapsed = now - started;
        if elapsed >= duration {
            break;
        }
        let script_done = next == script.len();
        // A replica the script killed must be back, and one must lead, before the run may end:
        // what a replacement does on taking over is part of what the scenario checks.
        steady_since = if daemon.ready() && daemon.leading(sim) {
            steady_since.or(Some(now))
        } else {
            None
        };
        let steady = steady_since.is_some_and(|t| now - t >= SETTLE);
        // Under a GitOps controller a rollback must hold for several of its sync periods before
        // the run may end: a controller that re-applies Git needs that long to show it.
        let held = sim.cluster.gitops_period().is_none_or(|period| {
            sim.cluster
                .deployment_patches()
                .last()
                .is_none_or(|p| now - p.at >= period * GITOPS_HOLD)
        });
        let all_seen = deploys.iter().all(|(d, v, at)| {
            obs.rollouts
                .values()
                .any(|r| &r.deployment == d && r.to_version.as_deref() == Some(v))
                || now - *at > Duration::from_secs(2)
                || !opted_in(s, d)
        });
        if script_done
            && all_seen
            && !obs.rollouts.is_empty()
            && obs.rollouts.values().all(|r| r.settled)
            && daemon.in_flight() == 0
            && steady
            && held
            && now - started > script.last().map(|e| e.at).unwrap_or_default() + SETTLE
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    obs.collect(sim);
    let duration_ms = started.elapsed().as_millis() as u64;
    daemon.kill_all();
    let rollouts = obs.finish(sim, &deploys);
    let failures = check(s, &rollouts, sim);
    for f in &failures {
        obs.say(MomentKind::Expectation { met: false }, f.clone());
    }
    if failures.is_empty() {
        obs.say(
            MomentKind::Expectation { met: true },
            "every expectation met".into(),
        );
    }
    Ok(ScenarioReport {
        scenario: s.name.clone(),
        ok: failures.is_empty(),
        failures,
        rollouts,
        kills,
        duration_ms,
    })
}

fn opted_in(s: &Scenario, reference: &str) -> bool {
    s.deployments
        .iter()
        .find(|d| d.reference == reference)
        .is_none_or(|d| d.opted_in && !d.paused)
}

fn describe(a: &Action) -> String {
    match a {
        Action::Deploy {
            deployment,
            version,
        } => format!("deploy {version} to {deployment}"),
        Action::App { target, changes } => {
            format!(
                "{target} now behaves: {}",
                serde_json::Value::Object(changes.clone())
            )
        }
        Action::Scale {
            deployment,
            replicas,
        } => format!("scale {deployment} to {replicas}"),
        Action::Pause { deployment } => format!("pause {deployment}"),
        Action::Resume { deployment } => format!("resume {deployment}"),
        Action::Delete { deployment } => format!("delete {deployment}"),
        Action::Provider { name, state } => {
            format!("provider {name:?} is now {state:?}").to_lowercase()
        }
        Action::Sink { name, state } => format!("sink {name:?} is now {state:?}").to_lowercase(),
        Action::Api { state } => format!("API server: {state:?}").to_lowercase(),
        Action::RestartWatchdog { after } if after.is_zero() => {
            "watchdog killed and restarted".into()
        }
        Action::RestartWatchdog { after } => format!(
            "watchdog killed; it starts again in {}",
            humantime::format_duration(*after)
        ),
        Action::SetImage {
            deployment,
            version,
            container,
        } => match container {
            Some(c) => format!("kubectl set image {deployment}: container {c} to tag {version}"),
            None => format!("kubectl set image {deployment} to {version} (labels unchanged)"),
        },
        Action::KillLeader => "the leading watchdog replica is killed; a replacement starts".into(),
        Action::Controller { running: true } => "the deployment controller starts again".into(),
        Action::Controller { running: false } => "the deployment controller stops".into(),
        Action::Undo { deployment } => format!("someone runs kubectl rollout undo on {deployment}"),
        Action::GitCommit {
            deployment,
            version,
        } => format!("a commit puts {version} in Git for {deployment}"),
        Action::GitopsResume { deployment } => {
            format!("someone turns the GitOps sync of {deployment} back on by hand")
        }
        Action::Create {
            deployment,
            version,
            ..
        } => format!("create {deployment} at {version}"),
        Action::Ack { deployment } => {
            format!("on-call acknowledges the open PagerDuty incidents of {deployment}")
        }
    }
}

/// Watches what the daemon did, through what the simulation received.
struct Observer {
    started: Instant,
    moments: Option<mpsc::UnboundedSender<Moment>>,
    events_seen: usize,
    pages_seen: usize,
    slack_seen: usize,
    changes_seen: usize,
    /// By Deployment, the object it is (its UIDs in the order seen: a Deployment deleted and
    /// created again starts its revisions over) and revision.
    rollouts: BTreeMap<(String, usize, i64), RolloutReport>,
    incarnations: BTreeMap<String, Vec<String>>,
}

impl Observer {
    fn new(started: Instant, moments: Option<mpsc::UnboundedSender<Moment>>) -> Self {
        Observer {
            started,
            moments,
            events_seen: 0,
            pages_seen: 0,
            slack_seen: 0,
            changes_seen: 0,
            rollouts: BTreeMap::new(),
            incarnations: BTreeMap::new(),
        }
    }

    fn say(&self, kind: MomentKind, text: String) {
        if let Some(tx) = &self.moments {
            let _ = tx.send(Moment {
                at: self.started.elapsed(),
                kind,
                text,
            });
        }
    }

    fn collect(&mut self, sim: &Simulation) {
        let events = sim.cluster.events();
        for e in events.iter().skip(self.events_seen) {
            if e["reportingController"] != record::CONTROLLER {
                continue;
            }
            let a = &e["metadata"]["annotations"];
            let s = |k: &str| a[k].as_str().map(str::to_string);
            let ns = e["regarding"]["namespace"].as_str().unwrap_or_default();
            let deployment = format!(
                "{ns}/{}",
                e["regarding"]["name"].as_str().unwrap_or_default()
            );
            let revision = s(record::EVENT_REVISION)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let reason = e["reason"].as_str().unwrap_or_default().to_string();
            let note = e["note"].as_str().unwrap_or_default().to_string();
            let uids = self.incarnations.entry(deployment.clone()).or_default();
            let uid = e["regarding"]["uid"].as_str().unwrap_or_default();
            let incarnation = match uids.iter().position(|u| u == uid) {
                Some(i) => i,
                None => {
                    uids.push(uid.to_string());
                    uids.len() - 1
                }
            };
            let entry = self
                .rollouts
                .entry((deployment.clone(), incarnation, revision))
                .or_insert_with(|| RolloutReport {
                    deployment: deployment.clone(),
                    from_version: s(record::EVENT_FROM_VERSION),
                    to_version: s(record::EVENT_TO_VERSION),
                    outcome: ExpectedOutcome::Undecided.as_str().into(),
                    reason: None,
                    final_version: None,
                    pages: 0,
                    triggers: 0,
                    first_action_ms: None,
                    rollbacks: 0,
                    verified: false,
                    deployed_at_ms: None,
                    notified: 0,
                    revision,
                    settled: false,
                });
            // The rollout's recorded phase, as the Event carries it: settled is final, and an
            // interim Event retried late does not reopen it.
            let phase: Option<Phase> = a[record::EVENT_PHASE]
                .as_str()
                .and_then(|p| serde_json::from_str(p).ok());
            // A rollback decided or sent, not yet final: its reason is known already.
            if let Some(reason) = phase.as_ref().and_then(Phase::reason)
                && !entry.settled
            {
                entry.reason = Some(reason.as_str().into());
            }
            if let Some(Phase::Settled { outcome, reason }) = &phase
                && !entry.settled
            {
                entry.outcome = outcome.as_str().into();
                entry.reason = Some(reason.as_str().into());
                entry.settled = true;
            }
            if matches!(
                phase,
                Some(Phase::Settled {
                    outcome: Outcome::RolledBack,
                    ..
                })
            ) {
                entry.verified = true;
            }
            let kind = match &phase {
                Some(Phase::Watching {
                    since,
                    until: Some(until),
                }) if reason == EventReason::WindowStarted.as_str() => MomentKind::WindowStarted {
                    window_ms: until
                        .duration_since(*since)
                        .as_millis()
                        .try_into()
                        .unwrap_or(0),
                },
                _ => MomentKind::Decision,
            };
            self.say(kind, format!("{deployment}: {reason}: {note}"));
        }
        self.events_seen = events.len();

        let changes = sim.cluster.template_changes();
        for c in changes.iter().skip(self.changes_seen) {
            self.say(
                MomentKind::Action,
                format!(
                    "{}/{}: template patch received by the API server{}",
                    c.namespace,
                    c.name,
                    if c.user_agent.is_empty() {
                        String::new()
                    } else {
                        format!(" (from {})", c.user_agent)
                    }
                ),
            );
        }
        self.changes_seen = changes.len();

        let pages = sim.pagerduty.received();
        for p in pages.iter().skip(self.pages_seen) {
            let action = p.body["event_action"].as_str().unwrap_or("?");
            let summary = p.body["payload"]["summary"].as_str().unwrap_or_default();
            let key = p.body["dedup_key"].as_str().unwrap_or_default();
            self.say(
                MomentKind::Page,
                format!(
                    "PagerDuty {action} (HTTP {}): {}",
                    p.status,
                    if summary.is_empty() { key } else { summary }
                ),
            );
        }
        self.pages_seen = pages.len();

        let posts = sim.slack.received();
        for p in posts.iter().skip(self.slack_seen) {
            self.say(
                MomentKind::Slack,
                format!(
                    "Slack (HTTP {}): {}",
                    p.status,
                    p.body["text"].as_str().unwrap_or_default()
                ),
            );
        }
        self.slack_seen = posts.len();
    }

    fn finish(
        &self,
        sim: &Simulation,
        deploys: &[(String, String, Instant)],
    ) -> Vec<RolloutReport> {
        let pages = sim.pagerduty.received();
        let patches = sim.cluster.deployment_patches();
        let notifications = sim.pagerduty.notifications();
        let mut out: Vec<RolloutReport> = self.rollouts.values().cloned().collect();
        // The judged rollouts' revisions per Deployment: a rollback request belongs to the
        // latest of them at or below the revision the Deployment was at when it arrived (a
        // rollback's own revision is not a rollout).
        let revisions: Vec<(String, i64)> = out
            .iter()
            .map(|r| (r.deployment.clone(), r.revision))
            .collect();
        let rollout_of = |p: &DeploymentPatch| {
            let reference = format!("{}/{}", p.namespace, p.name);
            revisions
                .iter()
                .filter(|(d, rev)| *d == reference && p.revision.is_some_and(|at| *rev <= at))
                .map(|(_, rev)| *rev)
                .max()
        };
        for r in &mut out {
            if !r.settled {
                // Still open, or a rollback sent and never verified: not a final outcome.
                r.outcome = ExpectedOutcome::Undecided.as_str().into();
            }
            let (ns, name) = r.deployment.split_once('/').unwrap_or_default();
            r.final_version = sim.cluster.current_version(ns, name);
            // Every trigger sent for this rollout, accepted or not.
            let triggers: Vec<&super::services::Received> = pages
                .iter()
                .filter(|p| p.body["event_action"] == "trigger")
                .filter(|p| {
                    let d = &p.body["payload"]["custom_details"];
                    d["namespace"] == ns && d["deployment"] == name && d["revision"] == r.revision
                })
                .collect();
            let keys: BTreeSet<&str> = triggers
                .iter()
                .filter(|p| (200..300).contains(&p.status))
                .filter_map(|p| p.body["dedup_key"].as_str())
                .collect();
            r.pages = keys.len() as u32;
            r.triggers = triggers.iter().filter(|p| p.status == 202).count() as u32;
            // Rollback requests: accepted PATCHes writing the template, by anyone but kubectl
            // (a person's `rollout undo` is not the watchdog's).
            let rollbacks: Vec<Instant> = patches
                .iter()
                .filter(|p| p.writes_template && !p.user_agent.starts_with("kubectl"))
                .filter(|p| p.namespace == ns && p.name == name)
                .filter(|p| rollout_of(p) == Some(r.revision))
                .map(|p| p.at)
                .collect();
            r.rollbacks = rollbacks.len() as u32;
            r.notified = notifications
                .iter()
                .filter(|n| {
                    let d = &n.event["payload"]["custom_details"];
                    d["namespace"] == ns && d["deployment"] == name && d["revision"] == r.revision
                })
                .count() as u32;
            // The deploy that started this rollout: the last one of its version before the action.
            let deployed = deploys
                .iter()
                .filter(|(d, v, _)| d == &r.deployment && Some(v) == r.to_version.as_ref())
                .map(|(_, _, at)| *at)
                .next_back();
            if let Some(deployed) = deployed {
                r.deployed_at_ms = Some(deployed.duration_since(self.started).as_millis() as u64);
                let patch = rollbacks.iter().min().copied();
                // Any page sent for this rollout, accepted or not, is an action taken.
                let page = triggers
                    .iter()
                    .map(|p| p.at)
                    .filter(|at| *at > deployed)
                    .min();
                let first = [patch, page].into_iter().flatten().min();
                r.first_action_ms = first.map(|t| (t - deployed).as_millis() as u64);
            }
        }
        out
    }
}

/// One sentence per unmet expectation.
fn check(s: &Scenario, rollouts: &[RolloutReport], sim: &Simulation) -> Vec<String> {
    let mut failures = Vec::new();
    for (reference, entry) in &s.expect {
        let mine: Vec<&RolloutReport> = rollouts
            .iter()
            .filter(|r| &r.deployment == reference)
            .collect();
        let (ns, name) = reference.split_once('/').unwrap_or_default();
        let final_version = sim.cluster.current_version(ns, name);
        let paused = sim.cluster.gitops_paused(ns, name);
        match entry {
            ExpectEntry::Last(e) => check_one(
                reference,
                e,
                mine.last().copied(),
                &final_version,
                paused,
                &mine,
                &mut failures,
            ),
            ExpectEntry::InOrder(list) => {
                if list.len() != mine.len()
                    && !(list.len() == 1 && list[0].outcome == Some(ExpectedOutcome::None))
                {
                    failures.push(format!(
                        "{reference}: {} rollouts judged, expected {}",
                        mine.len(),
                        list.len()
                    ));
                }
                for (i, e) in list.iter().enumerate() {
                    let label = format!("{reference} rollout {}", i + 1);
                    check_one(
                        &label,
                        e,
                        mine.get(i).copied(),
                        &final_version,
                        paused,
                        &mine,
                        &mut failures,
                    );
                }
            }
        }
    }
    failures
}

// One row per expectation field; grouping them would only hide which is which.
#[allow(clippy::too_many_arguments)]
fn check_one(
    label: &str,
    e: &Expectation,
    r: Option<&RolloutReport>,
    final_version: &Option<String>,
    gitops_paused: bool,
    all: &[&RolloutReport],
    failures: &mut Vec<String>,
) {
    if e.outcome == Some(ExpectedOutcome::None) {
        if !all.is_empty() {
            failures.push(format!(
                "{label}: expected no rollout to be judged, but {} was",
                all.len()
            ));
        }
    } else if let Some(want) = e.outcome {
        match r {
            None => failures.push(format!(
                "{label}: expected outcome {}, but no rollout of it was judged",
                want.as_str()
            )),
            Some(r) if r.outcome != want.as_str() => failures.push(format!(
                "{label}: outcome was {}, expected {}",
                r.outcome,
                want.as_str()
            )),
            _ => {}
        }
    }
    if let Some(want) = &e.reason {
        let got = r
            .and_then(|r| r.reason.clone())
            .unwrap_or_else(|| "(none recorded)".into());
        if &got != want {
            failures.push(format!("{label}: reason was {got}, expected {want}"));
        }
    }
    if let Some(want) = &e.final_version
        && final_version.as_ref() != Some(want)
    {
        let got = final_version
            .clone()
            .unwrap_or_else(|| "(no deployment)".into());
        failures.push(format!("{label}: final version was {got}, expected {want}"));
    }
    // Counted and yes/no fields: one line each; a rollout never judged counts 0 and `false`.
    let mut field = |what: &str, want: Option<String>, got: String| {
        if let Some(want) = want
            && got != want
        {
            failures.push(format!("{label}: {what} {got}, expected {want}"));
        }
    };
    let text = |v: Option<u32>| v.map(|v| v.to_string());
    field(
        "distinct pages:",
        text(e.pages),
        r.map_or(0, |r| r.pages).to_string(),
    );
    field(
        "PagerDuty triggers accepted:",
        text(e.triggers),
        r.map_or(0, |r| r.triggers).to_string(),
    );
    field(
        "rollback requests accepted:",
        text(e.rollbacks),
        r.map_or(0, |r| r.rollbacks).to_string(),
    );
    field(
        "times PagerDuty notified on-call:",
        text(e.notified),
        r.map_or(0, |r| r.notified).to_string(),
    );
    field(
        "rollback verified:",
        e.verified.map(|v| v.to_string()),
        r.is_some_and(|r| r.verified).to_string(),
    );
    field(
        "GitOps sync paused at the end:",
        e.gitops_paused.map(|v| v.to_string()),
        gitops_paused.to_string(),
    );
    if let Some(within) = e.first_action_within {
        match r.and_then(|r| r.first_action_ms) {
            None => failures.push(format!(
                "{label}: no action taken, expected one within {}",
                crate::judge::human(within)
            )),
            Some(ms) if ms > within.as_millis() as u64 => failures.push(format!(
                "{label}: first action after {ms} ms, expected within {} ms",
                within.as_millis()
            )),
            _ => {}
        }
    }
}

/// Whether a behaviour leaves pods un-ready (for the human timeline's hints).
pub fn never_ready(mode: PodMode) -> bool {
    !matches!(
        mode,
        PodMode::Running | PodMode::SlowStart | PodMode::OomOnce
    )
}
