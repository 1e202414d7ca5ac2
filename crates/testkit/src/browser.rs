//! A real headless Chromium for browser tests, driven over WebDriver: each
//! `Browser::start()` runs Debian's `chromedriver` on a free port of
//! 127.0.0.1 and opens a session of `/usr/bin/chromium` with a fresh profile,
//! both gone when the `Browser` is dropped.
//!
//! Chromium runs with its background networking off: this machine's network
//! is closed, and its attempts would only slow it down.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};

/// How tests find elements on a page.
pub use fantoccini::Locator;

use crate::{free_port, kill_after_exit_of};

/// The Chromium binary the tests drive (Debian's `chromium` package).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A running chromedriver and one browser session on it.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver session: navigate, find, click, screenshot.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium. Panics saying what is
    /// missing when either is not installed (`scripts/test` installs both).
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver: {e} (install Debian's chromium-driver package)")
            });
        kill_after_exit_of(std::process::id(), driver.id());
        let profile = tempfile::Builder::new()
            .prefix("tenantd-chromium-")
            .tempdir()
            .expect("temp dir");
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        // chromedriver takes a moment to listen; a session then takes as
        // long as Chromium takes to start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            match builder.connect(&url).await {
                Ok(client) => break client,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver on {url}: {e}"),
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Saves a screenshot of the page shown as `name`.png among the test
    /// artifacts (`target/test-artifacts/`), and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).expect("the artifacts directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// Where tests leave files for people to look at: `target/test-artifacts/`
/// of the workspace.
pub fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts")
}
