//! Three `tenantd serve` processes on one PostgreSQL catalog and one Redis,
//! as an operator runs them: what one node changes is in effect on the
//! others within a second, a hard quota holds over all three, a node killed
//! with SIGKILL leaves its background work to another, a rolling restart
//! fails no request, and concurrent writes keep the audit chain whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tenantd_testkit::{Postgres, Redis};

use super::{start_at, Running};

/// Longest a change may take to reach another node in these tests: the
/// bound is one second; the margin is for a loaded machine.
const PROPAGATION: Duration = Duration::from_secs(3);

/// The monotonic clock, through the one place that reads it: these tests
/// measure real processes.
fn now() -> std::time::Instant {
    tenantd_core::Clock::instant(&tenantd_core::SystemClock)
}

fn since(at: std::time::Instant) -> Duration {
    now() - at
}

/// A free port on 127.0.0.1, for a node that must come back on its address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The configuration every node shares (its own name and nothing else
/// apart): the catalog and the pool on `postgres`, quotas and rates in
/// `redis`, and a plan with a hard quota of 1,000 requests a day.
fn write_config(
    dir: &Path,
    name: &str,
    postgres: &Postgres,
    redis: &Redis,
    databases: &(String, String),
    secret: &str,
) {
    let (catalog, data) = databases;
    let config = format!(
        r#"node_name = "{name}"
catalog_url = "{catalog_url}"
server_secret = "{secret}"
shutdown_notice = "1s"
shutdown_timeout = "10s"
purge_interval = "1s"

[admission.redis]
url = "{redis_url}"
on_unavailable = "fail_closed"
# Three debug builds, PostgreSQL, Redis and 32 clients share two cores: a
# call to Redis may wait here far longer than in production, and this test
# is about what is admitted, not how fast.
timeout = "2s"

[[plans]]
id = "unlimited"
rate = {{ requests = 1000000, per = "1s", burst = 1000000 }}

[[plans]]
id = "metered"
rate = {{ requests = 100000, per = "1s", burst = 100000 }}
quotas = [{{ metric = "requests", period = "day", hard = 1000 }}]

[[pools]]
name = "main"
engine = "postgres"
location = "{app_url}"
owner_location = "{owner_url}"
models = ["pooled", "schema"]
"#,
        catalog_url = postgres.owner_url(catalog),
        redis_url = redis.url(),
        app_url = postgres.app_url(data),
        owner_url = postgres.owner_url(data),
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tenantd.toml"), config).unwrap();
}

/// One node: its directory, its fixed address, and its process while it runs.
struct Node {
    dir: PathBuf,
    port: u16,
    running: Option<Running>,
}

impl Node {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        self.running = Some(start_at(&self.dir, &format!("127.0.0.1:{}", self.port)));
    }

    /// SIGTERM, and the exit code once it stopped.
    fn terminate(&mut self) -> Option<i32> {
        self.running.take().unwrap().terminate()
    }

    fn kill_9(&mut self) {
        let mut running = self.running.take().unwrap();
        running.child.kill().unwrap();
        running.child.wait().unwrap();
    }
}

struct Cluster {
    nodes: Vec<Node>,
    operator: String,
    http: reqwest::Client,
    _dirs: tempfile::TempDir,
}

/// Three nodes started at the same moment on an empty catalog.
fn cluster(postgres: &Postgres, redis: &Redis, databases: (String, String)) -> Cluster {
    let dirs = tempfile::tempdir().unwrap();
    let secret: String = (0..64)
        .map(|i| b"0123456789abcdef"[(i * 7 + 3) % 16] as char)
        .collect();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|n| {
            let dir = dirs.path().join(format!("node-{n}"));
            write_config(
                &dir,
                &format!("node-{n}"),
                postgres,
                redis,
                &databases,
                &secret,
            );
            Node {
                dir,
                port: free_port(),
                running: None,
            }
        })
        .collect();
    std::thread::scope(|s| {
        for node in nodes.iter_mut() {
            s.spawn(move || node.start());
        }
    });
    let printed: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            let stdout = &n.running.as_ref().unwrap().stdout;
            stdout
                .split_whitespace()
                .find(|w| w.starts_with("tk_"))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        printed.len(),
        1,
        "exactly one of three nodes started at once on an empty catalog makes the first operator key"
    );
    Cluster {
        operator: printed[0].clone(),
        nodes,
        http: reqwest::Client::new(),
        _dirs: dirs,
    }
}

impl Cluster {
    async fn call(
        &self,
        node: usize,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.nodes[node].url()))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn operator(
        &self,
        node: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, answer) = self
            .call(node, method.clone(), path, &self.operator, body)
            .await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} on node {node}: {status} {answer}"
        );
        answer
    }

    /// Waits until `check` holds on `node`, and says how long it took.
    async fn until(&self, what: &str, check: impl AsyncFn() -> bool) -> Duration {
        let started = now();
        while !check().await {
            assert!(
                since(started) < PROPAGATION,
                "{what}: not in effect after {PROPAGATION:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        since(started)
    }

    /// Which node holds `lease` now, as node `asked` sees the cluster.
    async fn holder(&self, asked: usize, lease: &str) -> Option<String> {
        let view = self
            .operator(asked, reqwest::Method::GET, "/v1/cluster", None)
            .await;
        view["leases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["lease"] == lease)
            .and_then(|l| l["holder"].as_str().map(str::to_owned))
    }

    async fn node_id(&self, node: usize) -> String {
        let ready: Value = self
            .http
            .get(format!("{}/readyz", self.nodes[node].url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["node"]["id"].as_str().unwrap().to_owned()
    }
}

/// Creates `tenant` on `plan` through node 0, and an admin key for it.
async fn tenant_with_key(c: &Cluster, tenant: &str, plan: &str) -> String {
    use reqwest::Method;
    c.operator(
        0,
        Method::POST,
        "/v1/tenants",
        Some(json!({ "id": tenant, "name": tenant, "plan": plan })),
    )
    .await;
    let key = c
        .operator(
            0,
            Method::POST,
            &format!("/v1/tenants/{tenant}/keys"),
            Some(json!({ "role": "admin", "name": "test" })),
        )
        .await;
    key["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_one_catalog_behave_as_one_service() {
    use reqwest::Method;
    let postgres = Postgres::shared();
    let redis = Redis::start();
    let databases = (
        postgres.tenantd_database().await,
        postgres.tenantd_database().await,
    );
    let mut c = cluster(postgres, &redis, databases);

    // Every node is registered and beating.
    let view = c.operator(1, Method::GET, "/v1/cluster", None).await;
    let up: Vec<&Value> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "up")
        .collect();
    assert_eq!(up.len(), 3, "{view}");
    // And the command line shows the same, as a table for people.
    let (code, table, _) = super::printed(
        &c.nodes[2].dir,
        &c.nodes[2].url(),
        &c.operator,
        &["cluster", "status"],
    );
    assert_eq!(code, Some(0));
    for n in 1..=3 {
        assert!(table.contains(&format!("node-{n}")), "{table}");
    }
    assert!(table.contains("purge_sweep"), "{table}");

    // --- Changes on one node are in effect on the others within a second.
    let admin = tenant_with_key(&c, "acme", "default").await;
    for node in 0..3 {
        let (status, _) = c.call(node, Method::GET, "/v1/me", &admin, None).await;
        assert_eq!(status, 200);
    }
    let spare = c
        .operator(
            0,
            Method::POST,
            "/v1/tenants/acme/keys",
            Some(json!({ "role": "reader", "name": "spare" })),
        )
        .await;
    let (spare_id, spare_token) = (
        spare["key"]["id"].as_str().unwrap().to_owned(),
        spare["token"].as_str().unwrap().to_owned(),
    );
    for node in 0..3 {
        assert_eq!(
            c.call(node, Method::GET, "/v1/me", &spare_token, None)
                .await
                .0,
            200
        );
    }
    c.operator(
        1,
        Method::POST,
        &format!("/v1/tenants/acme/keys/{spare_id}/revoke"),
        None,
    )
    .await;
    for node in [0, 2] {
        let took = c
            .until("a key revoked on node 1", async || {
                c.call(node, Method::GET, "/v1/me", &spare_token, None)
                    .await
                    .0
                    == 401
            })
            .await;
        println!("key revoked on node 1: refused on node {node} after {took:?}");
    }
    c.operator(2, Method::POST, "/v1/tenants/acme/suspend", None)
        .await;
    for node in [0, 1] {
        let took = c
            .until("a tenant suspended on node 2", async || {
                c.call(node, Method::GET, "/v1/me", &admin, None).await.0 == 403
            })
            .await;
        println!("tenant suspended on node 2: refused on node {node} after {took:?}");
    }
    c.operator(0, Method::POST, "/v1/tenants/acme/resume", None)
        .await;

    // A plan edited on node 1, then a policy applied on node 2: the rate
    // in effect for the tenant changes on the other nodes.
    let plan = |requests: u32| json!({ "id": "tiny", "rate": { "requests": requests, "per": "1s", "burst": 50 } });
    c.operator(
        0,
        Method::POST,
        "/v1/plans",
        Some(json!({ "plan": plan(50), "reason": "a test plan" })),
    )
    .await;
    tenant_with_key(&c, "hooli", "tiny").await;
    let rate_on = async |node: usize| {
        let policy = c
            .operator(node, Method::GET, "/v1/tenants/hooli/policy", None)
            .await;
        policy["effective"]["rate"]["requests"].as_u64()
    };
    let edit = json!({ "plan": plan(7), "reason": "slower", "replaces": 1 });
    c.operator(1, Method::PUT, "/v1/plans/tiny", Some(edit))
        .await;
    for node in [0, 2] {
        let took = c
            .until("a plan edited on node 1", async || {
                rate_on(node).await == Some(7)
            })
            .await;
        println!("plan edited on node 1: in effect on node {node} after {took:?}");
    }
    let policy = json!({ "overrides": { "rate_requests": 3 }, "reason": "slower still" });
    c.operator(
        2,
        Method::POST,
        "/v1/tenants/hooli/policy/versions",
        Some(policy),
    )
    .await;
    for node in [0, 1] {
        let took = c
            .until("a policy applied on node 2", async || {
                rate_on(node).await == Some(3)
            })
            .await;
        println!("policy applied on node 2: in effect on node {node} after {took:?}");
    }

    // --- A hard quota of 1,000 a day holds over three nodes and 32 clients.
    let metered = tenant_with_key(&c, "globex", "metered").await;
    let admitted = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..32 {
        let (http, key, admitted) = (c.http.clone(), metered.clone(), admitted.clone());
        let urls: Vec<String> = c.nodes.iter().map(Node::url).collect();
        clients.push(tokio::spawn(async move {
            for n in 0..60 {
                let url = &urls[(client + n) % urls.len()];
                let answer = http
                    .get(format!("{url}/v1/collections"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap();
                match answer.status().as_u16() {
                    200 => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {}
                    other => panic!("{url}: {other} {}", answer.text().await.unwrap_or_default()),
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed);
    println!("1,920 requests for a hard quota of 1,000 over 3 nodes: {admitted} admitted");
    assert!((1000..=1010).contains(&admitted), "admitted {admitted}");
    // Each node reports the count Redis holds once it has replayed.
    let mut counts = Vec::new();
    for node in 0..3 {
        let started = now();
        loop {
            let usage = c
                .operator(node, Method::GET, "/v1/tenants/globex/usage", None)
                .await;
            let used = usage["quotas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["metric"] == "requests")
                .unwrap()["used"]
                .as_u64()
                .unwrap();
            if used >= admitted || since(started) > PROPAGATION {
                counts.push(used);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        counts.iter().all(|&n| n == admitted),
        "admitted {admitted}, usage by node {counts:?}"
    );

    // --- Audit entries appended from three nodes at once form one chain.
    let mut writers = Vec::new();
    for node in 0..3 {
        let (http, url, key) = (c.http.clone(), c.nodes[node].url(), c.operator.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..10 {
                let answer = http
                    .post(format!("{url}/v1/tenants/acme/keys"))
                    .bearer_auth(&key)
                    .json(&json!({ "role": "reader", "name": format!("n{node}-{n}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 201);
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    for path in ["/v1/platform/audit/verify", "/v1/tenants/acme/audit/verify"] {
        let verified = c.operator(2, Method::GET, path, None).await;
        assert_eq!(verified["intact"], true, "{path}: {verified}");
    }

    // --- The node running the purge sweep dies mid-move; another takes both.
    let leader = c
        .holder(0, "purge_sweep")
        .await
        .expect("a node runs the purge sweep");
    let mut ids = Vec::new();
    for node in 0..3 {
        ids.push(c.node_id(node).await);
    }
    let leader = ids.iter().position(|id| *id == leader).unwrap();
    let bulk = tenant_with_key(&c, "initech", "default").await;
    c.call(
        leader,
        Method::POST,
        "/v1/collections",
        &bulk,
        Some(json!({ "name": "rows" })),
    )
    .await;
    for part in 0..20 {
        let ops: Vec<Value> = (0..500)
            .map(|i| json!({ "op": "create", "id": format!("r{part}-{i}"), "data": { "n": i, "pad": "x".repeat(200) } }))
            .collect();
        let (status, answer) = c
            .call(
                leader,
                Method::POST,
                "/v1/collections/rows/batch",
                &bulk,
                Some(json!({ "operations": ops })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let job = c
        .operator(
            leader,
            Method::POST,
            "/v1/tenants/initech/move",
            Some(json!({ "isolation": "schema" })),
        )
        .await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    c.nodes[leader].kill_9();
    let survivor = (leader + 1) % 3;
    let started = now();
    let (sweeper, done) = loop {
        let sweeper = c.holder(survivor, "purge_sweep").await;
        let job = c
            .operator(survivor, Method::GET, &format!("/v1/jobs/{job_id}"), None)
            .await;
        if let (Some(sweeper), true) = (&sweeper, job["state"] != "running") {
            break (sweeper.clone(), job);
        }
        assert!(
            since(started) < Duration::from_secs(30),
            "no node took over: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "node {leader} killed: the sweep and the move taken over after {:?}",
        since(started)
    );
    assert_ne!(sweeper, ids[leader]);
    assert_eq!(
        (done["state"].as_str(), done["step"].as_str()),
        (Some("succeeded"), Some("done")),
        "{done}"
    );
    let tenant = c
        .operator(survivor, Method::GET, "/v1/tenants/initech", None)
        .await;
    assert_eq!(tenant["isolation"], "schema");
    let listed = c
        .call(survivor, Method::GET, "/v1/collections/rows", &bulk, None)
        .await;
    assert_eq!(listed.0, 200, "{}", listed.1);
    c.nodes[leader].start();

    // --- Each node restarted in turn under load: no request fails. The
    // client acts as a load balancer: it sends only to nodes whose /readyz
    // says ready, checked every 100 ms (below the nodes' 1 s notice).
    let ready: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(true)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicU64::new(0));
    let urls: Arc<Vec<String>> = Arc::new(c.nodes.iter().map(Node::url).collect());
    let checker = {
        let (ready, stop, urls, http) = (ready.clone(), stop.clone(), urls.clone(), c.http.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (n, url) in urls.iter().enumerate() {
                    let answer = http
                        .get(format!("{url}/readyz"))
                        .timeout(Duration::from_millis(500))
                        .send()
                        .await;
                    ready[n].store(answer.is_ok_and(|a| a.status() == 200), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // On a plan whose rate no load here reaches: any refusal is a failure.
    let steady = tenant_with_key(&c, "umbrella", "unlimited").await;
    let mut load = Vec::new();
    for client in 0..8usize {
        let (ready, stop, urls, http, key, failures, served) = (
            ready.clone(),
            stop.clone(),
            urls.clone(),
            c.http.clone(),
            steady.clone(),
            failures.clone(),
            served.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut n = client;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let Some(url) = (0..3)
                    .map(|i| (n + i) % 3)
                    .find(|&i| ready[i].load(Ordering::Relaxed))
                    .map(|i| &urls[i])
                else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match http
                    .get(format!("{url}/v1/me"))
                    .bearer_auth(&key)
                    .send()
                    .await
                {
                    Ok(answer) if answer.status() == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(answer) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{url}: {}", answer.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{url}: {e}")),
                }
            }
        }));
    }
    for node in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let node_ref = &mut c.nodes[node];
        tokio::task::block_in_place(|| {
            assert_eq!(node_ref.terminate(), Some(0));
            node_ref.start();
        });
        // Back in the rotation before the next one goes.
        let started = now();
        while !ready[node].load(Ordering::Relaxed) {
            assert!(since(started) < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.await.unwrap();
    }
    checker.await.unwrap();
    let failures = failures.lock().unwrap();
    println!(
        "rolling restart of 3 nodes: {} requests served, {} failed",
        served.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(served.load(Ordering::Relaxed) > 100);
}
