//! The configuration's tests: layering, the manual's examples, and every
//! refusal naming its setting.
// figment's Jail closures return its large error type by design.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;
use tenantd_core::plan::OpClass;
use tenantd_core::Role;
use tenantd_store::PoolLocation;

fn load(overrides: &Overrides) -> Result<ValidConfig, ConfigError> {
    Config::load(None, overrides)
}

/// The pages of the manual that show configuration.
const MANUAL: [&str; 4] = [
    include_str!("../../../../docs/admission.md"),
    include_str!("../../../../docs/governance.md"),
    include_str!("../../../../docs/gateway.md"),
    include_str!("../../../../docs/configuration.md"),
];

/// The manual's example configuration that begins with `first_lines`.
fn manual_example(first_lines: &str) -> &'static str {
    let page = MANUAL
        .iter()
        .find(|page| page.contains(first_lines))
        .expect("the example");
    let start = page.find(first_lines).expect("the example");
    let end = start + page[start..].find("```").expect("its end");
    &page[start..end]
}

/// Asserts that a config file `text` is refused, naming `setting`.
fn assert_invalid(text: &str, setting: &str) {
    Jail::expect_with(|jail| {
        jail.create_file("tenantd.toml", text)?;
        match load(&Overrides::default()) {
            Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
        Ok(())
    });
}

#[test]
fn defaults_need_no_file_and_no_environment() {
    Jail::expect_with(|_| {
        let config = load(&Overrides::default()).unwrap();
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.data_dir, PathBuf::from("./tenantd-data"));
        assert_eq!(config.log_format, LogFormat::Human);
        Ok(())
    });
}

#[test]
fn the_manual_admission_example_is_valid_configuration() {
    let example = manual_example(
        "[[plans]]
id = \"pro\"",
    );
    Jail::expect_with(|jail| {
        jail.create_file("tenantd.toml", example)?;
        let config = load(&Overrides::default()).unwrap();
        let pro = config.plan(&"pro".parse().unwrap()).unwrap();
        assert_eq!(pro.weight, 4);
        assert_eq!(pro.concurrency_cap(), Some(16));
        assert!(pro.class_rate(OpClass::Write).is_some());
        assert!(
            config.plan(&PlanId::default_plan()).is_some(),
            "default added"
        );
        assert_eq!(config.admission.classes.write.width, 2);
        assert_eq!(
            config.admission.classes.read.width, 1,
            "other classes keep defaults"
        );
        let redis = config.admission.redis.as_ref().unwrap();
        assert_eq!(redis.on_unavailable, FailMode::FailOpen);
        Ok(())
    });
}

#[test]
fn the_manual_self_service_example_is_valid_configuration() {
    let example = manual_example(
        "[[plans]]
id = \"team\"",
    );
    Jail::expect_with(|jail| {
        jail.create_file("tenantd.toml", example)?;
        let config = load(&Overrides::default()).unwrap();
        let team = config.plan(&"team".parse().unwrap()).unwrap();
        assert!(team.self_service.rate_requests.is_some());
        assert_eq!(team.self_service.quotas.len(), 1);
        Ok(())
    });
}

#[test]
fn a_typo_names_its_file_line_key_and_the_setting_meant() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "tenantd.toml",
            "log_level = \"info\"\nlisen = \"127.0.0.1:1\"\n\n[admission]\nseats = 8\n",
        )?;
        let error = load(&Overrides::default()).unwrap_err().to_string();
        assert!(
            error.contains("tenantd.toml:2: unknown setting `lisen`; did you mean `listen`?"),
            "{error}"
        );
        jail.create_file("tenantd.toml", "[admission]\nseets = 8\n")?;
        let error = load(&Overrides::default()).unwrap_err().to_string();
        assert!(
            error.contains(":2: unknown setting `admission.seets`; did you mean `seats`?"),
            "{error}"
        );
        jail.create_file("tenantd.toml", "")?;
        jail.set_env("TENANTD_LISTN", "127.0.0.1:1");
        let error = load(&Overrides::default()).unwrap_err().to_string();
        assert!(
            error.contains("environment variable TENANTD_LISTN: unknown setting `listn`; did you mean `listen`?"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn a_tenants_seat_ceiling_is_seats_or_a_percentage() {
    let parse = |text: &str| serde_json::from_str::<SeatShare>(text);
    assert_eq!(parse("\"50%\"").unwrap().of(64), 32);
    assert_eq!(parse("\"25 %\"").unwrap().of(10), 2);
    assert_eq!(parse("12").unwrap().of(64), 12);
    assert_eq!(parse("\"12\"").unwrap().of(64), 12);
    assert_eq!(parse("100").unwrap().of(64), 64, "at most every seat");
    assert_eq!(parse("\"1%\"").unwrap().of(10), 1, "at least one seat");
    for bad in ["0", "\"0%\"", "\"101%\"", "\"half\""] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        AdmissionConfig::default().tenant_max_seats.of(64),
        32,
        "half by default"
    );
    Jail::expect_with(|jail| {
        jail.create_file("tenantd.toml", "[admission]\ntenant_max_seats = \"150%\"\n")?;
        let error = load(&Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("150% is not a percentage"), "{error}");
        Ok(())
    });
}

#[test]
fn bad_plans_and_admission_settings_name_the_setting() {
    for (text, setting) in [
        (
            "[[plans]]\nid = \"a\"\nrate = { requests = 1, per = \"1s\", burst = 1 }\nweight = 0\n",
            "plans",
        ),
        ("[admission]\nseats = 0\n", "admission"),
        (
            "[admission.classes.write]\nwidth = 100\ndeadline = \"1s\"\nestimate = \"1ms\"\n",
            "admission",
        ),
        (
            "[admission.redis]\nurl = \"http://x\"\non_unavailable = \"fail_open\"\n",
            "admission",
        ),
        // TLS files are for rediss://, and a certificate needs its key.
        (
            "[admission.redis]\nurl = \"redis://x\"\non_unavailable = \"fail_open\"\ntls = { ca_file = \"ca.pem\" }\n",
            "admission",
        ),
        (
            "[admission.redis]\nurl = \"rediss://x\"\non_unavailable = \"fail_open\"\ntls = { client_cert_file = \"c.pem\" }\n",
            "admission",
        ),
    ] {
        assert_invalid(text, setting);
    }
}

#[test]
fn the_manual_gateway_example_is_valid_configuration() {
    let example = manual_example(
        "[[gateway.services]]
name = \"billing\"",
    );
    Jail::expect_with(|jail| {
        jail.create_file("tenantd.toml", example)?;
        let config = load(&Overrides::default()).unwrap();
        let billing = &config.gateway.services[0];
        assert_eq!(billing.upstreams.len(), 2);
        assert_eq!(
            String::from(billing.upstreams[1].clone()),
            "http://10.0.0.6:9000"
        );
        assert_eq!(billing.path_prefix, "/api");
        assert_eq!(billing.allowed_roles, [Role::Admin, Role::Developer]);
        assert_eq!(billing.seats, Some(32));
        assert_eq!(billing.breaker.min_calls, 5);
        assert_eq!(
            config.gateway.context.publish_ahead,
            Duration::from_secs(600)
        );
        assert_eq!(config.gateway.cache.max_entry_bytes, 1_048_576);
        Ok(())
    });
}

#[test]
fn bad_gateway_settings_are_rejected_with_the_setting_named() {
    let service = |extra: &str| {
        format!("[[gateway.services]]\nname = \"billing\"\nupstreams = [\"http://127.0.0.1:9\"]\n{extra}")
    };
    let cases = [
        (service("path_prefix = \"api\"\n"), "gateway.services"),
        (service("path_prefix = \"/api/\"\n"), "gateway.services"),
        (
            service("allowed_roles = [\"operator\"]\n"),
            "gateway.services",
        ),
        (
            service("max_in_flight_per_tenant = 0\n"),
            "gateway.services",
        ),
        (service("request_timeout = \"30s\"\n"), "gateway.services"),
        (
            service("breaker = { failure_percent = 0 }\n"),
            "gateway.services",
        ),
        (
            format!("{}{}", service(""), service("")),
            "gateway.services",
        ),
        // TLS files are for https:// upstreams, and a certificate needs its key.
        (service("tls = { ca_file = \"ca.pem\" }\n"), "gateway.services"),
        (
            "[[gateway.services]]\nname = \"billing\"\nupstreams = [\"https://h:1\"]\ntls = { client_cert_file = \"c.pem\" }\n".to_owned(),
            "gateway.services",
        ),
        (
            "[[gateway.services]]\nname = \"billing\"\nupstreams = [\"https://h:1\", \"http://h:2\"]\nhttp2 = true\n".to_owned(),
            "gateway.services",
        ),
        (
            "[gateway.context]\njwks_max_age = \"10m\"\npublish_ahead = \"5m\"\n".to_owned(),
            "gateway.context.publish_ahead",
        ),
    ];
    for (text, setting) in cases {
        assert_invalid(&text, setting);
    }
    // Upstream URLs are parsed when read: a path, another scheme or no host
    // is a parse error.
    for upstream in ["http://h:1/base", "ftp://h:1", "h:1", "http://h:1/?q=1"] {
        Jail::expect_with(|jail| {
            let text =
                format!("[[gateway.services]]\nname = \"billing\"\nupstreams = [\"{upstream}\"]\n");
            jail.create_file("tenantd.toml", &text)?;
            let error = load(&Overrides::default()).unwrap_err();
            assert!(
                matches!(&error, ConfigError::InvalidValue { key, line: Some(3), .. } if key == "gateway.services.0.upstreams.0"),
                "{upstream}: {error}"
            );
            assert!(
                error.to_string().contains("upstream"),
                "{upstream}: {error}"
            );
            Ok(())
        });
    }
}

#[test]
fn each_layer_overrides_the_one_before() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "tenantd.toml",
            r#"
                listen = "127.0.0.1:9001"
                data_dir = "/from/file"
                log_format = "json"
                request_timeout = "5s"
            "#,
        )?;
        jail.set_env("TENANTD_DATA_DIR", "/from/env");
        jail.set_env("TENANTD_LOG_FORMAT", "human");
        let flags = Overrides {
            log_format: Some(LogFormat::Json),
            ..Overrides::default()
        };
        let config = load(&flags).unwrap();
        assert_eq!(config.listen.port(), 9001, "file over default");
        assert_eq!(
            config.request_timeout.get(),
            Duration::from_secs(5),
            "file over default"
        );
        assert_eq!(config.data_dir, PathBuf::from("/from/env"), "env over file");
        assert_eq!(config.log_format, LogFormat::Json, "flag over env");
        Ok(())
    });
}

#[test]
fn an_explicit_config_file_must_exist() {
    Jail::expect_with(|_| {
        let err = Config::load(Some(Path::new("nope.toml")), &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile(_)), "{err}");
        Ok(())
    });
}

#[test]
fn bad_values_are_rejected_with_the_setting_named() {
    let cases: [(&str, &str, &str); 7] = [
        ("TENANTD_LISTEN", "not-an-address", "listen"),
        ("TENANTD_REQUEST_TIMEOUT", "soon", "request_timeout"),
        ("TENANTD_REQUEST_TIMEOUT", "0s", "request_timeout"),
        ("TENANTD_SERVER_SECRET", "abc", "server_secret"),
        ("TENANTD_BOOTSTRAP_KEY", "password", "bootstrap_key"),
        ("TENANTD_MAX_BODY_BYTES", "10", "max_body_bytes"),
        ("TENANTD_LISTNE", "127.0.0.1:1", "listne"),
    ];
    for (var, value, named) in cases {
        Jail::expect_with(|jail| {
            jail.set_env(var, value);
            let err = load(&Overrides::default()).unwrap_err().to_string();
            assert!(err.to_lowercase().contains(named), "{var}={value}: {err}");
            Ok(())
        });
    }
}

#[test]
fn pools_come_from_the_file_and_are_checked() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "tenantd.toml",
            r#"
                default_region = "eu"
                [[pools]]
                name = "eu-1"
                engine = "sqlite"
                location = "pools/eu-1"
                models = ["pooled"]
                [[pools]]
                name = "us-1"
                engine = "sqlite"
                location = "/srv/us-1"
                region = "us"
                models = ["pooled", "dedicated"]
            "#,
        )?;
        let config = load(&Overrides::default()).unwrap();
        let specs = config.pool_specs();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].region.as_str(), "eu", "the default region");
        assert_eq!(specs[1].region.as_str(), "us");
        let dirs: Vec<_> = config
            .storage_pools()
            .into_iter()
            .map(|p| match p.location {
                PoolLocation::Sqlite { dir } => dir,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(dirs[0], PathBuf::from("./tenantd-data/pools/eu-1"));
        assert_eq!(dirs[1], PathBuf::from("/srv/us-1"));
        Ok(())
    });
    let bad = [
        ("pools = []", "at least one"),
        ("[[pools]]\nname = \"a\"\nengine = \"sqlite\"\nlocation = \"a\"\nmodels = [\"schema\"]", "postgresql"),
        ("[[pools]]\nname = \"a\"\nengine = \"mysql\"\nlocation = \"a\"\nmodels = [\"pooled\"]", "mysql"),
        ("[[pools]]\nname = \"a\"\nengine = \"postgres\"\nlocation = \"postgres://app@db/t\"\nmodels = [\"pooled\"]", "owner_location"),
        ("[[pools]]\nname = \"a\"\nengine = \"postgres\"\nlocation = \"mysql://app:hunter2@db/t\"\nowner_location = \"postgres://o@db/t\"\nmodels = [\"pooled\"]", "location is not a postgresql url"),
        ("[[pools]]\nname = \"a\"\nengine = \"sqlite\"\nlocation = \"a\"\nowner_location = \"postgres://o@db/t\"\nmodels = [\"pooled\"]", "for postgresql pools only"),
    ];
    for (toml, named) in bad {
        Jail::expect_with(|jail| {
            jail.create_file("tenantd.toml", toml)?;
            let err = load(&Overrides::default()).unwrap_err().to_string();
            assert!(err.to_lowercase().contains(named), "{toml}: {err}");
            Ok(())
        });
    }
}

#[test]
fn pool_urls_are_shown_without_their_passwords() {
    let pool = PoolConfig {
        name: PoolName::default_pool(),
        engine: Engine::Postgres,
        location: "postgres://app:hunter2@db:5432/t".into(),
        owner_location: Some("postgresql://owner:s3cret@db/t".into()),
        region: None,
        models: vec![Isolation::Pooled],
    };
    let shown = format!("{pool:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
    assert!(shown.contains("postgres://app:***@db:5432/t"), "{shown}");
    assert_eq!(
        without_password("postgres://app@db/t"),
        "postgres://app@db/t"
    );
}

#[test]
fn client_variables_are_not_server_settings() {
    Jail::expect_with(|jail| {
        jail.set_env("TENANTD_URL", "http://127.0.0.1:8080");
        jail.set_env("TENANTD_KEY", "tk_x");
        assert!(load(&Overrides::default()).is_ok());
        Ok(())
    });
}
