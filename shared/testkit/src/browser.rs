//! A real Chromium, driven over WebDriver by chromedriver with fantoccini: headless, on a
//! fresh profile, with every background service of the browser off, so the only requests it
//! makes are the ones a test causes. Debian's `chromium` and `chromium-driver` packages
//! (`infra/local/test` installs them).
//!
//! nextest runs each test in its own process, so a browser cannot outlive its test: each test
//! starts one (about a second) and [`Browser::close`] ends it.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::process::{free_port, kill_group, spawn_child, stop_child};

/// The flags that keep Chromium off the network and fit for a container: no sandbox (it
/// needs user namespaces, and root has none to give), no GPU, `/tmp` instead of a small
/// `/dev/shm`, and none of the updates, syncs and first-run pages that phone home.
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// A desktop Chrome's user agent. Chromium's own says `HeadlessChrome`, which the bot
/// classifier (rightly) files as a bot; the journeys are a person's, so their clicks should
/// count as one.
pub const DESKTOP_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

/// How long a wait for the page may take before the test fails. Generous: a debug build on a
/// loaded two-core machine, not a speed claim.
pub const PATIENCE: Duration = Duration::from_secs(15);

#[allow(missing_debug_implementations)] // fantoccini's client is not `Debug`
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    /// Removed when the browser drops, after chromedriver is gone.
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a Chromium session through it, with a
    /// 1280 × 900 window.
    pub async fn start() -> Self {
        let profile = tempfile::Builder::new()
            .prefix("kurz-chromium-")
            .tempdir()
            .expect("a profile directory");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut driver = spawn_driver(port, &profile);
            match connect(port, &profile).await {
                Ok(client) => {
                    return Self {
                        client: Some(client),
                        driver,
                        _profile: profile,
                    };
                }
                Err(e) => {
                    last_error = e;
                    stop_driver(&mut driver);
                }
            }
        }
        panic!(
            "Chromium did not start through chromedriver: {last_error}\nchromedriver log:\n{}",
            std::fs::read_to_string(profile.path().join("chromedriver.log")).unwrap_or_default()
        );
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn open(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The element `css` once it exists, or a failed test after [`PATIENCE`].
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting for `{css}`: {e}"))
    }

    /// Clicks the element `css` once it exists.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    /// Types `text` into the element `css` once it exists (after what it holds).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
    }

    /// Waits until `script` (a function body that returns a boolean) returns true.
    pub async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self
                .client()
                .execute(script, vec![])
                .await
                .unwrap_or_else(|e| panic!("{what}: the script failed: {e}"));
            if answer == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not after {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of `css`, trimmed.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("the text of `{css}`: {e}"))
            .trim()
            .to_owned()
    }

    /// Saves a PNG of the window as a test artifact, `<artifacts>/<name>.png`, and returns its
    /// path. The directory is `KURZ_TEST_ARTIFACTS`, or `target/test-artifacts/browser`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client()
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("a screenshot: {e}"));
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Every request the browser sent since the last call (or since it started), by URL, in
    /// order, as its network log (the DevTools `Network.requestWillBeSent` events) has them:
    /// documents, scripts, styles, images, fetches and redirects alike.
    pub async fn requests(&self) -> Vec<Request> {
        let log = self
            .client()
            .issue_cmd(Log("performance"))
            .await
            .unwrap_or_else(|e| panic!("reading the performance log: {e}"));
        log.as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["message"].as_str())
            .filter_map(|message| serde_json::from_str::<Value>(message).ok())
            .filter(|event| event["message"]["method"] == "Network.requestWillBeSent")
            .map(|event| {
                let params = &event["message"]["params"];
                Request {
                    url: params["request"]["url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    document: params["documentURL"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    method: params["request"]["method"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    redirected_by: params["redirectResponse"]["status"].as_u64().map(|status| {
                        let from = params["redirectResponse"]["url"].as_str();
                        (status, from.unwrap_or_default().to_owned())
                    }),
                }
            })
            .collect()
    }

    /// The console messages since the last call, as text: errors of the page's script, and
    /// Content-Security-Policy violations (Chromium reports each one there).
    pub async fn console(&self) -> Vec<String> {
        let log = self
            .client()
            .issue_cmd(Log("browser"))
            .await
            .unwrap_or_else(|e| panic!("reading the console: {e}"));
        log.as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["message"].as_str().map(str::to_owned))
            .collect()
    }

    /// Ends the session (chromedriver then stops Chromium) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
        stop_driver(&mut self.driver);
    }
}

impl Drop for Browser {
    /// A test that panicked never reached [`Browser::close`]: kill chromedriver's whole
    /// process group, Chromium and its helpers included.
    fn drop(&mut self) {
        stop_driver(&mut self.driver);
    }
}

/// One request from the network log.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    /// The document the request was made for: the page's own address for what it loads and
    /// fetches, the new address for a navigation.
    pub document: String,
    pub method: String,
    /// The status and URL of the redirect that led to this request, if one did.
    pub redirected_by: Option<(u64, String)>,
}

fn artifacts_dir() -> PathBuf {
    std::env::var_os("KURZ_TEST_ARTIFACTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/browser"),
        PathBuf::from,
    )
}

/// chromedriver in a process group of its own, so that stopping it can take Chromium (its
/// child) along, and killed if the test process dies first.
fn spawn_driver(port: u16, profile: &TempDir) -> Child {
    let mut command = Command::new("chromedriver");
    command
        .arg(format!("--port={port}"))
        .arg(format!(
            "--log-path={}",
            profile.path().join("chromedriver.log").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if std::process::Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("no chromedriver: install Debian's chromium and chromium-driver");
    }
    spawn_child(command)
}

/// SIGTERM to chromedriver, then SIGKILL to what is left of its process group.
fn stop_driver(driver: &mut Child) {
    stop_child(driver, libc::SIGTERM, Duration::from_secs(2));
    kill_group(driver);
}

async fn connect(port: u16, profile: &TempDir) -> Result<Client, String> {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // chromedriver answers /status once it listens.
    let http = reqwest::Client::new();
    loop {
        if http
            .get(format!("{url}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("chromedriver did not answer /status".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
    args.push(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ));
    args.push("--window-size=1280,900".to_owned());
    args.push(format!("--user-agent={DESKTOP_CHROME}"));
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "args": args },
        // The network log, read by `Browser::requests`.
        "goog:loggingPrefs": { "performance": "ALL", "browser": "ALL" },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&url)
        .await
        .map_err(|e| e.to_string())
}

/// chromedriver's log endpoint (`POST /session/{id}/se/log`), which WebDriver itself lacks:
/// `performance` (DevTools events) or `browser` (the console).
#[derive(Debug)]
struct Log(&'static str);

impl WebDriverCompatibleCommand for Log {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": self.0 }).to_string()),
        )
    }
}
