//! Label-cardinality abuse: random paths, made-up methods and hostile `X-Request-Id` values
//! must not grow `/metrics` (every label takes values from a fixed set) nor reach the logs
//! and response headers unbounded.

use std::collections::BTreeSet;

use reqwest::Method;

use crate::{
    common::{self, Variant},
    hostile::driver::*,
    metrics::{Sample, scrape, value},
};

/// A made-up method token, new each call.
fn odd_method() -> Method {
    let token = format!("X{:X}", rand::random::<u32>());
    Method::from_bytes(token.as_bytes()).expect("a method token")
}

/// A path no route matches, new each call.
fn random_path() -> String {
    format!("/zz{:x}/{:x}", rand::random::<u64>(), rand::random::<u32>())
}

/// `rounds` of every kind of abuse, each with fresh random paths, methods and ids.
fn flood(rounds: usize) -> Vec<Case> {
    (0..rounds)
        .flat_map(|_| {
            [
                get("random path", &random_path(), &[404]),
                case(
                    "odd method, random path",
                    odd_method(),
                    &random_path(),
                    &[404],
                )
                .anonymous(),
                case("odd method on /cart", odd_method(), "/cart", &[404, 405]),
                case("odd method on /", odd_method(), "/", &[404, 405]).anonymous(),
                get("huge request id", "/", &[200]).header(
                    "x-request-id",
                    &format!("{:x}-{}", rand::random::<u64>(), big(8000)),
                ),
                get("request id with spaces", "/", &[200])
                    .header("x-request-id", &format!("a b {:x}", rand::random::<u64>())),
            ]
        })
        .collect()
}

/// Each series by name and labels, without its value.
fn series(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .map(|s| format!("{}{:?}", s.name, s.labels))
        .collect()
}

/// After one round of each kind of abuse, fifty more add no series at all; the flood is
/// counted all the same, under `route="unmatched"` and `method="other"`.
async fn label_cardinality_abuse_adds_no_series(variant: Variant) {
    let shop = shop_with(variant, |s| {
        // Trust this client as a proxy, so its X-Request-Id is read (and must be bounded).
        s.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    shop.run("cardinality warm-up", flood(1)).await;
    // The first scrape's own series show up in the next.
    scrape(&shop.app).await;
    let before = scrape(&shop.app).await;
    shop.run("cardinality", flood(50)).await;
    let after = scrape(&shop.app).await;
    let new: Vec<String> = series(&after)
        .difference(&series(&before))
        .cloned()
        .collect();
    assert!(
        new.is_empty(),
        "the flood added {} series, among them {:?}",
        new.len(),
        &new[..new.len().min(5)]
    );
    let unmatched_other = |samples: &[Sample]| {
        let labels = [
            ("route", "unmatched"),
            ("method", "other"),
            ("status", "404"),
        ];
        value(samples, "statecart_http_requests_total", &labels).unwrap_or(0.0)
    };
    assert_eq!(unmatched_other(&after) - unmatched_other(&before), 50.0);
}

/// A hostile `X-Request-Id`, even from a trusted proxy, is replaced by a generated id: the
/// echoed one is never longer than 64 plain characters.
async fn hostile_request_ids_are_replaced(variant: Variant) {
    let shop = shop_with(variant, |s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let before = shop.world().await;
    for hostile in [
        big(8000),
        "a b".to_owned(),
        "<script>alert(1)</script>".to_owned(),
        "../../etc/passwd".to_owned(),
        "id\"with\"quotes".to_owned(),
        "x".repeat(65),
    ] {
        let res = common::client()
            .get(shop.app.url("/"))
            .header("x-request-id", &hostile)
            .send()
            .await
            .expect("GET");
        let echoed = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("a request id")
            .to_owned();
        assert_ne!(echoed, hostile);
        assert!(
            echoed.len() <= 64 && echoed.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{echoed:?}"
        );
    }
    shop.assert_unharmed("request ids", &before).await;
}

for_each_backend!(
    label_cardinality_abuse_adds_no_series,
    hostile_request_ids_are_replaced
);
