//! The cost of identifying a request once its key record is in memory:
//! parsing the presented token and verifying it (HMAC-SHA256, constant-time
//! compare, expiry and tenant checks). Run with
//! `cargo bench -p tenantd-core --bench identify`.

// Set-up that cannot fail on these fixed inputs; a panic would be the report.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::rngs::OsRng;
use tenantd_core::identity::verify;
use tenantd_core::{
    ApiKeyToken, KeyHasher, KeyOwner, KeyRecord, PlanId, RegionId, Role, ServerSecret, Tenant,
    TenantId,
};
use time::macros::datetime;

fn identify(c: &mut Criterion) {
    let now = datetime!(2026-06-01 00:00 UTC);
    let hasher = KeyHasher::new(ServerSecret::generate(&mut OsRng));
    let token = ApiKeyToken::generate(&mut OsRng);
    let tenant = Tenant::new(
        TenantId::parse("acme").unwrap(),
        "Acme",
        PlanId::default_plan(),
        RegionId::default_region(),
        now,
    );
    let record = KeyRecord::issue(
        &token,
        KeyOwner::Tenant(tenant.id.clone()),
        Role::Developer,
        "",
        &hasher,
        now,
    );
    let presented = token.expose();
    let wrong = ApiKeyToken {
        id: token.id.clone(),
        secret: ApiKeyToken::generate(&mut OsRng).secret,
    };

    let mut group = c.benchmark_group("identify");
    group.bench_function("parse_token", |b| {
        b.iter(|| ApiKeyToken::parse(black_box(&presented)))
    });
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            let token = ApiKeyToken::parse(black_box(&presented)).unwrap();
            verify(&token, &record, Some(&tenant), &hasher, now).unwrap()
        })
    });
    group.bench_function("verify_wrong_secret", |b| {
        b.iter(|| verify(black_box(&wrong), &record, Some(&tenant), &hasher, now).unwrap_err())
    });
    group.finish();
}

criterion_group!(benches, identify);
criterion_main!(benches);
