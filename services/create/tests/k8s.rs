//! The Kubernetes manifests (`infra/k8s`) against the services they run: every `KURZ_*`
//! variable they give a container is one its binary reads, and the ports and probes are the
//! ones the binaries serve, checked on the real services started with the manifests'
//! settings. Their shape is `infra/local/k8s-validate`'s (Kubernetes' own schemas); this is
//! what those schemas cannot know. Its own test binary: nothing else here reads YAML.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kurz_settings::Source;
use kurz_testkit::{RunningApp, TestEnv};
use serde::Deserialize;

// ---- The manifests, as far as these tests read them (serde ignores every other field) ----

#[derive(Debug, Deserialize)]
#[serde(tag = "kind")]
enum Resource {
    ConfigMap {
        metadata: Metadata,
        #[serde(default)]
        data: BTreeMap<String, String>,
    },
    Secret {
        metadata: Metadata,
        #[serde(default, rename = "stringData")]
        string_data: BTreeMap<String, String>,
    },
    Deployment {
        metadata: Metadata,
        spec: WorkloadSpec,
    },
    Job {
        metadata: Metadata,
        spec: WorkloadSpec,
    },
    Service {
        metadata: Metadata,
        spec: ServiceSpec,
    },
    Ingress {
        spec: IngressSpec,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
struct TemplateMetadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct WorkloadSpec {
    template: PodTemplate,
}

#[derive(Debug, Deserialize)]
struct PodTemplate {
    metadata: TemplateMetadata,
    spec: PodSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    enable_service_links: Option<bool>,
    #[serde(default)]
    init_containers: Vec<Container>,
    containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    command: Vec<String>,
    #[serde(default)]
    ports: Vec<ContainerPort>,
    #[serde(default)]
    env_from: Vec<EnvFrom>,
    #[serde(default)]
    env: Vec<EnvVar>,
    readiness_probe: Option<Probe>,
    liveness_probe: Option<Probe>,
    startup_probe: Option<Probe>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: Option<String>,
    container_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvFrom {
    config_map_ref: Option<NameRef>,
    secret_ref: Option<NameRef>,
}

#[derive(Debug, Deserialize)]
struct NameRef {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<ValueFrom>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValueFrom {
    secret_key_ref: Option<KeyRef>,
    config_map_key_ref: Option<KeyRef>,
    field_ref: Option<FieldRef>,
}

#[derive(Debug, Deserialize)]
struct KeyRef {
    name: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FieldRef {
    field_path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    http_get: Option<HttpGet>,
}

#[derive(Debug, Deserialize)]
struct HttpGet {
    path: String,
    port: PortRef,
}

/// A port by number or by the name of a container port (an IntOrString in Kubernetes).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(default)]
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePort {
    name: Option<String>,
    port: u16,
    target_port: Option<PortRef>,
}

#[derive(Debug, Deserialize)]
struct IngressSpec {
    rules: Vec<IngressRule>,
}

#[derive(Debug, Deserialize)]
struct IngressRule {
    http: IngressHttp,
}

#[derive(Debug, Deserialize)]
struct IngressHttp {
    paths: Vec<IngressPath>,
}

#[derive(Debug, Deserialize)]
struct IngressPath {
    path: String,
    backend: IngressBackend,
}

#[derive(Debug, Deserialize)]
struct IngressBackend {
    service: IngressService,
}

#[derive(Debug, Deserialize)]
struct IngressService {
    name: String,
    port: IngressPort,
}

#[derive(Debug, Deserialize)]
struct IngressPort {
    name: Option<String>,
    number: Option<u16>,
}

/// Every manifest of `infra/k8s`, read and indexed.
struct Manifests {
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Deployments and Jobs: (kind/name, pod template).
    workloads: Vec<(String, PodTemplate)>,
    services: Vec<(Metadata, ServiceSpec)>,
    ingress_paths: Vec<IngressPath>,
}

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/k8s")
}

impl Manifests {
    fn read() -> Self {
        let mut manifests = Self {
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            workloads: Vec::new(),
            services: Vec::new(),
            ingress_paths: Vec::new(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
            .expect("infra/k8s")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .filter(|path| !path.ends_with("kustomization.yaml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no manifests in infra/k8s");
        for path in files {
            let text = std::fs::read_to_string(&path).expect("a manifest");
            let resources: Vec<Resource> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for resource in resources {
                manifests.add(resource);
            }
        }
        manifests
    }

    fn add(&mut self, resource: Resource) {
        match resource {
            Resource::ConfigMap { metadata, data } => {
                self.config_maps.insert(metadata.name, data);
            }
            Resource::Secret {
                metadata,
                string_data,
            } => {
                self.secrets.insert(metadata.name, string_data);
            }
            Resource::Deployment { metadata, spec } => self
                .workloads
                .push((format!("Deployment/{}", metadata.name), spec.template)),
            Resource::Job { metadata, spec } => self
                .workloads
                .push((format!("Job/{}", metadata.name), spec.template)),
            Resource::Service { metadata, spec } => self.services.push((metadata, spec)),
            Resource::Ingress { spec } => self
                .ingress_paths
                .extend(spec.rules.into_iter().flat_map(|r| r.http.paths)),
            Resource::Other => {}
        }
    }

    /// The `KURZ_*` names a container gets, with where each comes from.
    fn variables_of(&self, container: &Container) -> BTreeMap<String, String> {
        let mut names = BTreeMap::new();
        for from in &container.env_from {
            let (source, kind, map) = match (&from.config_map_ref, &from.secret_ref) {
                (Some(r), _) => (r, "ConfigMap", &self.config_maps),
                (None, Some(r)) => (r, "Secret", &self.secrets),
                (None, None) => panic!("{}: an envFrom without a source", container.name),
            };
            let data = map
                .get(&source.name)
                .unwrap_or_else(|| panic!("{}: no {kind} named {}", container.name, source.name));
            for key in data.keys() {
                names.insert(key.clone(), format!("{kind} {}", source.name));
            }
        }
        for var in &container.env {
            if let Some(from) = &var.value_from {
                self.check_reference(container, var, from);
            }
            names.insert(var.name.clone(), "env".to_owned());
        }
        names.retain(|name, _| name.starts_with("KURZ_"));
        names
    }

    /// Fails unless the ConfigMap or Secret key `var` takes its value from exists.
    fn check_reference(&self, container: &Container, var: &EnvVar, from: &ValueFrom) {
        let refs = [
            (&from.secret_key_ref, &self.secrets, "Secret"),
            (&from.config_map_key_ref, &self.config_maps, "ConfigMap"),
        ];
        for (reference, map, kind) in refs {
            let Some(KeyRef { name, key }) = reference else {
                continue;
            };
            let found = map.get(name).is_some_and(|data| data.contains_key(key));
            assert!(
                found,
                "{}: {} refers to no key {key} of {kind} {name}",
                container.name, var.name
            );
        }
    }

    /// The environment a container would start with, secrets and pod fields given by `fill`.
    fn environment_of(&self, container: &Container, fill: impl Fn(&str) -> String) -> Source {
        let mut vars: Vec<(String, String)> = Vec::new();
        for from in &container.env_from {
            if let Some(r) = &from.config_map_ref {
                vars.extend(self.config_maps[&r.name].clone());
            }
            if let Some(r) = &from.secret_ref {
                vars.extend(self.secrets[&r.name].keys().map(|k| (k.clone(), fill(k))));
            }
        }
        for var in &container.env {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) if from.config_map_key_ref.is_some() => {
                    let r = from.config_map_key_ref.as_ref().expect("checked");
                    self.config_maps[&r.name][&r.key].clone()
                }
                (
                    None,
                    Some(ValueFrom {
                        field_ref: Some(field),
                        ..
                    }),
                ) => fill(&field.field_path),
                _ => fill(&var.name),
            };
            vars.push((var.name.clone(), value));
        }
        // Later entries win, as in Kubernetes (env over envFrom).
        vars.into_iter()
            .fold(Source::default(), |source, (k, v)| source.with(&k, v))
    }
}

/// The binary a container runs, from its command.
fn binary_of(container: &Container) -> &str {
    let program = container
        .command
        .first()
        .unwrap_or_else(|| panic!("{}: no command", container.name));
    program.rsplit('/').next().expect("a program name")
}

/// Every `KURZ_*` variable the binary reads.
fn variables_read_by(binary: &str) -> BTreeSet<String> {
    match binary {
        "kurz-redirect" => kurz_redirect::Settings::variables(),
        "kurz-create" => kurz_create::Settings::variables(),
        "kurz-keypool" => kurz_keypool::Settings::variables(),
        "kurz-analytics" => kurz_analytics::Settings::variables(),
        other => panic!("a container runs {other}, which is no Kurz binary"),
    }
}

/// The variables of `container` that its binary does not read, with where each is set.
fn unread_variables(manifests: &Manifests, container: &Container) -> Vec<String> {
    let known = variables_read_by(binary_of(container));
    manifests
        .variables_of(container)
        .into_iter()
        .filter(|(name, _)| !known.contains(name))
        .map(|(name, from)| format!("{name} (from {from})"))
        .collect()
}

fn all_containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.init_containers.iter().chain(&pod.containers)
}

#[test]
fn k8s_every_variable_a_container_gets_is_read_by_its_binary() {
    let manifests = Manifests::read();
    assert!(
        manifests.workloads.len() >= 5,
        "four Deployments and the Job"
    );
    let mut delivered = BTreeSet::new();
    let mut problems = Vec::new();
    for (workload, template) in &manifests.workloads {
        for container in all_containers(&template.spec) {
            for name in unread_variables(&manifests, container) {
                problems.push(format!(
                    "{workload}, container {}: {} reads no {name}",
                    container.name,
                    binary_of(container)
                ));
            }
            delivered.extend(manifests.variables_of(container).into_keys());
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // Nothing in a ConfigMap or the Secret is left unchecked because no container takes it.
    let set: BTreeSet<&String> = manifests
        .config_maps
        .values()
        .chain(manifests.secrets.values())
        .flat_map(BTreeMap::keys)
        .collect();
    let unused: Vec<_> = set
        .into_iter()
        .filter(|k| !delivered.contains(*k))
        .collect();
    assert!(
        unused.is_empty(),
        "set but given to no container: {unused:?}"
    );
}

#[test]
fn k8s_a_misspelt_variable_would_be_found() {
    let manifests = Manifests::read();
    let container: Container = serde_saphyr::from_str(
        "name: typo\ncommand: [/usr/local/bin/kurz-redirect]\nenv:\n  - name: KURZ_DATABSE_URL\n    value: postgres://x\n  - name: KURZ_LISTEN\n    value: 0.0.0.0:8080\n",
    )
    .expect("a container");

    let unread = unread_variables(&manifests, &container);

    assert_eq!(unread, vec!["KURZ_DATABSE_URL (from env)"]);
}

#[test]
fn k8s_pods_get_no_service_variables() {
    // A Service named kurz-redirect would give every pod KURZ_REDIRECT_PORT=tcp://... and
    // KURZ_REDIRECT_SERVICE_HOST, which look like settings to the binaries.
    let manifests = Manifests::read();
    for (workload, template) in &manifests.workloads {
        assert_eq!(
            template.spec.enable_service_links,
            Some(false),
            "{workload}: enableServiceLinks must be false"
        );
    }
}

/// The container port `port` refers to in `container`.
fn resolve(container: &Container, port: &PortRef) -> u16 {
    let found = container.ports.iter().find(|p| match port {
        PortRef::Number(n) => p.container_port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    });
    found
        .unwrap_or_else(|| panic!("{}: no container port {port:?}", container.name))
        .container_port
}

fn probes(container: &Container) -> impl Iterator<Item = (&'static str, &HttpGet)> {
    [
        ("readiness", &container.readiness_probe),
        ("liveness", &container.liveness_probe),
        ("startup", &container.startup_probe),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| {
        probe
            .as_ref()
            .map(|p| (kind, p.http_get.as_ref().expect("an httpGet probe")))
    })
}

/// The listen variable of a service's binary: the HTTP services serve everything (probes and
/// /metrics included) on KURZ_LISTEN, the workers on KURZ_METRICS_LISTEN.
fn listen_variable(binary: &str) -> &'static str {
    match binary {
        "kurz-redirect" | "kurz-create" => "KURZ_LISTEN",
        _ => "KURZ_METRICS_LISTEN",
    }
}

/// Starts `binary` in-process with `source` (its listener on a free port) and returns it.
async fn start(binary: &str, source: Source) -> RunningApp {
    match binary {
        "kurz-redirect" => {
            let settings = kurz_redirect::Settings::from_source(&source).expect("settings");
            let app = kurz_redirect::Application::build(settings)
                .await
                .expect("redirect starts");
            RunningApp::spawn(app.port(), |stop| app.run_until_stopped(stop))
        }
        "kurz-create" => {
            let settings = kurz_create::Settings::from_source(&source).expect("settings");
            let app = kurz_create::Application::build(settings)
                .await
                .expect("create starts");
            RunningApp::spawn(app.port(), |stop| app.run_until_stopped(stop))
        }
        "kurz-keypool" => {
            let settings = kurz_keypool::Settings::from_source(&source).expect("settings");
            let app = kurz_keypool::Application::build(&settings)
                .await
                .expect("keypool starts");
            RunningApp::spawn(app.port(), |stop| app.run_until_stopped(stop))
        }
        "kurz-analytics" => {
            let settings = kurz_analytics::Settings::from_source(&source).expect("settings");
            let app = kurz_analytics::Application::build(&settings)
                .await
                .expect("analytics starts");
            RunningApp::spawn(app.port(), |stop| app.run_until_stopped(stop))
        }
        other => panic!("{other} is no Kurz service"),
    }
}

#[tokio::test]
async fn k8s_ports_and_probes_are_the_ones_the_services_serve() {
    let manifests = Manifests::read();
    // The manifests' settings: PostgreSQL through PgBouncer, and a Redis Cluster.
    let env = TestEnv::start_with_cluster().await;
    let client = reqwest::Client::new();
    let mut deployments = 0;
    for (workload, template) in &manifests.workloads {
        if !workload.starts_with("Deployment/") {
            continue;
        }
        deployments += 1;
        let container = &template.spec.containers[0];
        let binary = binary_of(container);

        // Arrange: the container's own settings, its credentials and addresses this test's.
        let listen = listen_variable(binary);
        let source = manifests.environment_of(container, |name| match name {
            "KURZ_DATABASE_URL" => env.database_url(),
            "KURZ_DATABASE_DIRECT_URL" => env.direct_database_url(),
            "KURZ_REDIS_URL" => env.redis_url(),
            "KURZ_REDIS_CLUSTER_NODES" => env
                .cluster
                .as_ref()
                .expect("the env's cluster")
                .nodes_setting(),
            "KURZ_VISITOR_HASH_SECRET" => "k8s-test-secret-of-at-least-32-bytes".to_owned(),
            // The pod's name (a fieldRef), for the analytics worker's consumer name.
            "metadata.name" => "kurz-analytics-k8s-test".to_owned(),
            other => panic!("{workload}: no test value for {other}"),
        });
        let address = source
            .vars()
            .find(|(k, _)| *k == listen)
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|| panic!("{workload}: {listen} is not set"));
        let port: std::net::SocketAddr = address.parse().expect("address:port");

        // The port the binary listens on is the container port every probe asks.
        let mut probed = 0;
        for (kind, probe) in probes(container) {
            assert_eq!(
                resolve(container, &probe.port),
                port.port(),
                "{workload}: the {kind} probe's port is not {listen}'s"
            );
            probed += 1;
        }
        assert!(
            container.liveness_probe.is_some() && container.readiness_probe.is_some(),
            "{workload}: needs readiness and liveness probes"
        );
        assert!(probed >= 2);
        if listen == "KURZ_LISTEN" {
            let paths = |p: &Option<Probe>| {
                p.as_ref()
                    .map(|p| p.http_get.as_ref().map(|h| h.path.clone()))
            };
            assert_eq!(
                paths(&container.readiness_probe),
                Some(Some("/readyz".to_owned())),
                "{workload}"
            );
            assert_eq!(
                paths(&container.liveness_probe),
                Some(Some("/healthz".to_owned())),
                "{workload}"
            );
        }

        // Act: the real service, on a free port of this machine rather than the manifest's.
        let app = start(binary, source.with(listen, "127.0.0.1:0")).await;

        // Assert: every probe path answers 200 from the listener the probes point at.
        for (kind, probe) in probes(container) {
            let response = client
                .get(app.url(&probe.path))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{workload}: {kind} probe {}: {e}", probe.path));
            assert_eq!(
                response.status(),
                200,
                "{workload}: {kind} probe {} on {listen}",
                probe.path
            );
        }
        app.stop().await.expect("a clean stop");
    }
    assert_eq!(deployments, 4, "redirect, create, keypool, analytics");
}

#[test]
fn k8s_services_and_the_ingress_point_at_ports_that_exist() {
    let manifests = Manifests::read();
    let pods: Vec<(&PodTemplate, &String)> = manifests
        .workloads
        .iter()
        .map(|(name, template)| (template, name))
        .collect();
    for (metadata, spec) in &manifests.services {
        if spec.selector.is_empty() {
            continue; // kurz-not-public: no endpoints on purpose
        }
        let selected: Vec<_> = pods
            .iter()
            .filter(|(t, _)| {
                spec.selector
                    .iter()
                    .all(|(k, v)| t.metadata.labels.get(k) == Some(v))
            })
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "Service {}: selects {} workloads",
            metadata.name,
            selected.len()
        );
        let container = &selected[0].0.spec.containers[0];
        for port in &spec.ports {
            let target = port
                .target_port
                .clone()
                .unwrap_or(PortRef::Number(port.port));
            let _ = resolve(container, &target);
        }
    }
    assert!(!manifests.ingress_paths.is_empty());
    for path in &manifests.ingress_paths {
        let backend = &path.backend.service;
        let (_, spec) = manifests
            .services
            .iter()
            .find(|(m, _)| m.name == backend.name)
            .unwrap_or_else(|| panic!("Ingress {}: no Service {}", path.path, backend.name));
        let exists = spec
            .ports
            .iter()
            .any(|p| match (&backend.port.name, backend.port.number) {
                (Some(name), _) => p.name.as_deref() == Some(name.as_str()),
                (None, Some(number)) => p.port == number,
                (None, None) => false,
            });
        assert!(
            exists,
            "Ingress {}: Service {} has no such port",
            path.path, backend.name
        );
    }
}

/// Settings of a new, empty database `name` on `env`'s PostgreSQL: no schema at all.
async fn empty_database(env: &TestEnv, name: &str) -> kurz_settings::DatabaseSettings {
    env.postgres
        .client("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("an empty database");
    let source = Source::from_vars([("KURZ_DATABASE_URL", env.postgres.url(name))]);
    kurz_settings::DatabaseSettings::from_source(&source).expect("settings")
}

#[tokio::test]
async fn k8s_wait_for_schema_returns_once_the_migration_job_has_run() {
    // Arrange: an empty database, as a new cluster's PostgreSQL is before the Job.
    let env = TestEnv::start().await;
    let settings = empty_database(&env, "k8s_unmigrated").await;
    let waiting = tokio::spawn({
        let settings = settings.clone();
        async move { kurz_keypool::schema::wait_for_schema(&settings, Duration::from_secs(60)).await }
    });

    // Act: the init container waits; then the Job migrates.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "returned before the schema existed");
    kurz_repository::postgres::migrate(&settings)
        .await
        .expect("the migration");

    // Assert: it returns, well within a poll or two.
    let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("returned after the migration")
        .expect("no panic");
    waited.expect("the schema is ready");
}

#[tokio::test]
async fn k8s_wait_for_schema_gives_up_after_its_timeout() {
    let env = TestEnv::start().await;
    let settings = empty_database(&env, "k8s_never_migrated").await;

    let result = kurz_keypool::schema::wait_for_schema(&settings, Duration::from_secs(1)).await;

    let error = format!(
        "{:#}",
        result.expect_err("an unmigrated schema never becomes ready")
    );
    assert!(error.contains("not ready within 1 s"), "{error}");
}
