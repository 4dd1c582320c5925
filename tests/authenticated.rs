//! Authenticated media (MSC3916): the homeserver decides who may download.

mod support;

use std::time::Duration;

use http::StatusCode;

use support::gateway::GatewayStub;
use support::homeserver::HomeserverStub;
use support::{client, control, json, warm, Proxy, ProxyBuilder, WARM_ROUNDS};

const BYTES: &[u8] = b"some media bytes";

/// How often the fail-closed cases below are repeated, and how many requests run at once.
const ROUNDS: usize = 20;
const CONCURRENT: usize = 10;

/// Descriptors above the warm baseline once the repeats are over: the homeserver pool keeps
/// an idle connection per whoami it had in flight at once (two descriptors each, the stub's
/// end is in this process too); the baseline is taken after a few rounds, but rounds overlap
/// differently. Bounded by the concurrency: one per request would be hundreds.
const FD_SLACK: usize = 2 * CONCURRENT + 4;

/// RSS above the warm baseline: the stub records every request (headers and all, a few
/// hundred bytes each); hundreds of requests that each kept their buffers would be past it.
const RSS_SLACK: u64 = 8 << 20;

async fn setup(extra: &str) -> (HomeserverStub, GatewayStub, Proxy, String) {
    support::proxy_serving(BYTES, extra).await
}

fn path(cid: &str) -> String {
    format!("/_matrix/client/v1/media/download/example.org/ipfs:{cid}")
}

#[tokio::test]
async fn accepted_token_is_served_and_remembered() {
    support::serially(30, async {
        let (hs, _gw, proxy, cid) = setup("").await;
        for _ in 0..5 {
            let r = support::get_as(&proxy, &path(&cid), "good").await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap().as_ref(), BYTES);
        }
        assert_eq!(hs.whoami_calls(), 1, "one check for five requests");
        // The query-parameter form of the same token shares the remembered answer.
        let r = support::get(&proxy, &format!("{}?access_token=good", path(&cid))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(hs.whoami_calls(), 1);
        // The check carried the caller's credentials and origin.
        let check = hs.last();
        assert_eq!(check.target, "/_matrix/client/v3/account/whoami");
        assert_eq!(check.headers["authorization"], "Bearer good");
        assert_eq!(check.headers["x-forwarded-for"], "127.0.0.1");
    })
    .await;
}

#[tokio::test]
async fn unstable_alias_and_query_token() {
    support::serially(30, async {
        let (hs, _gw, proxy, cid) = setup("").await;
        let url = proxy.url(&format!(
            "/_matrix/client/unstable/org.matrix.msc3916/media/download/x/ipfs%3A{cid}/f.bin?access_token=good"
        ));
        let r = client().get(url).header("user-agent", "nio-test").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let check = hs.last();
        assert_eq!(check.target, "/_matrix/client/v3/account/whoami?access_token=good");
        assert_eq!(check.headers["user-agent"], "nio-test");
    })
    .await;
}

#[tokio::test]
async fn refusals_are_the_homeservers_own_and_never_remembered() {
    support::serially(30, async {
        let (hs, gw, proxy, cid) = setup("").await;
        let cases: [(Option<&str>, u16, &str); 3] = [
            (None, 401, "M_MISSING_TOKEN"),
            (Some("bad"), 401, "M_UNKNOWN_TOKEN"),
            (Some("gone"), 403, "M_FORBIDDEN"),
        ];
        for (token, status, errcode) in cases {
            for _ in 0..2 {
                let r = support::get_with(&proxy, &path(&cid), token).await;
                assert_eq!(r.status(), status, "{token:?}");
                assert_eq!(
                    r.headers()["x-homeserver"],
                    "said-so",
                    "passed through unchanged"
                );
                assert_eq!(support::errcode(r).await, errcode);
            }
        }
        assert_eq!(hs.whoami_calls(), 6, "refusals are asked again every time");
        assert_eq!(gw.hits(&cid), 0, "nothing is fetched for a refused caller");
    })
    .await;
}

#[tokio::test]
async fn remembered_tokens_expire() {
    support::serially(30, async {
        let (hs, _gw, proxy, cid) = setup("[auth]\ntoken_cache_ttl = \"300ms\"").await;
        let path = path(&cid);
        let get = || support::get_as(&proxy, &path, "good");
        assert_eq!(get().await.status(), 200);
        assert_eq!(get().await.status(), 200);
        assert_eq!(hs.whoami_calls(), 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(get().await.status(), 200);
        assert_eq!(hs.whoami_calls(), 2);
    })
    .await;
}

#[tokio::test]
async fn homeserver_that_cannot_be_asked_gives_502_never_access() {
    support::serially(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(BYTES);
        let proxy = ProxyBuilder::new(support::closed_port())
            .gateway(gw.start().await)
            .start()
            .await;
        let r = support::get_as(&proxy, &path(&cid), "good").await;
        assert_eq!(r.status(), 502);
        assert_eq!(support::errcode(r).await, "M_UNKNOWN");
        assert_eq!(gw.hits(&cid), 0);
        // The legacy route needs no homeserver at all.
        let r = support::get(&proxy, &format!("/_matrix/media/v3/download/x/ipfs:{cid}")).await;
        assert_eq!(r.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn invalid_cid_is_checked_after_the_token() {
    support::serially(30, async {
        let (_hs, _gw, proxy, _cid) = setup("").await;
        let r = support::get(&proxy, &path("notacid")).await;
        assert_eq!(
            r.status(),
            401,
            "no token: the client learns nothing about the ID"
        );
        let r = support::get_as(&proxy, &path("notacid"), "good").await;
        assert_eq!(r.status(), 404);
        assert_eq!(support::errcode(r).await, "M_NOT_FOUND");
    })
    .await;
}

#[tokio::test]
async fn logout_through_the_proxy_forgets_the_token() {
    support::serially(30, async {
        let (hs, _gw, proxy, cid) = setup("").await;
        let path = path(&cid);
        let download = || support::get_as(&proxy, &path, "good");
        assert_eq!(download().await.status(), 200);
        assert_eq!(download().await.status(), 200);
        assert_eq!(hs.whoami_calls(), 1);
        let r = client()
            .post(proxy.url("/_matrix/client/v3/logout"))
            .bearer_auth("good")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        assert_eq!(download().await.status(), 200);
        assert_eq!(hs.whoami_calls(), 2, "asked again after the logout");
        // logout/all forgets every token of the user.
        let r = client()
            .post(proxy.url("/_matrix/client/v3/logout/all"))
            .bearer_auth("good")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        assert_eq!(download().await.status(), 200);
        assert_eq!(hs.whoami_calls(), 3);
    })
    .await;
}

/// A `200` that is not a whoami answer (a maintenance page, an SPA fallback on the same host,
/// `{}`, a `user_id` that is not a string) is no access, with or without a token: 502.
#[tokio::test]
async fn a_200_that_is_not_a_whoami_answer_is_502_never_access() {
    support::serially(30, async {
        let (hs, gw, proxy, cid) = setup("").await;
        let not_answers = [
            (
                StatusCode::OK,
                "text/html",
                "<!doctype html><p>Down for maintenance</p>",
            ),
            (StatusCode::OK, "application/json", "{}"),
            (StatusCode::OK, "application/json", r#"{"user_id": 42}"#),
        ];
        let mut calls = 0;
        for fixed in not_answers {
            hs.answer_whoami(Some(fixed));
            for token in [None, Some("good")] {
                let r = support::get_with(&proxy, &path(&cid), token).await;
                assert_eq!(r.status(), 502, "{fixed:?} {token:?}");
                assert_eq!(r.headers()["content-type"], "application/json");
                let body = json(&r.bytes().await.unwrap());
                assert_eq!(body["errcode"], "M_UNKNOWN", "{fixed:?} {token:?}");
                calls += 1;
                assert_eq!(hs.whoami_calls(), calls);
            }
        }
        assert_eq!(gw.hits(&cid), 0, "no media was fetched for anyone");
        // Again, `CONCURRENT` at once each round (half with the token), each asking afresh
        // and refused, with a control request among them.
        let round = |fixed| {
            let (hs, proxy, cid) = (&hs, &proxy, &cid);
            async move {
                hs.answer_whoami(Some(fixed));
                let before = hs.whoami_calls();
                let refused = support::concurrently(CONCURRENT, |n| async move {
                    let token = (n % 2 == 1).then_some("good");
                    let r = support::get_with(proxy, &path(cid), token).await;
                    assert_eq!(r.status(), 502, "{fixed:?}");
                    assert_eq!(r.headers()["content-type"], "application/json");
                    let body = json(&r.bytes().await.unwrap());
                    assert_eq!(body["errcode"], "M_UNKNOWN", "{fixed:?}");
                });
                tokio::join!(refused, control(proxy));
                assert_eq!(hs.whoami_calls(), before + CONCURRENT, "each asked afresh");
            }
        };
        let mut warmups = not_answers.iter().cycle();
        let baseline = warm(&proxy, || round(*warmups.next().unwrap())).await;
        for r in 0..ROUNDS {
            round(not_answers[r % not_answers.len()]).await;
        }
        calls += (WARM_ROUNDS + ROUNDS) * CONCURRENT;
        assert_eq!(gw.hits(&cid), 0, "no media was fetched for anyone");
        // Nothing of that was remembered: with a real answer again, the token is asked about
        // afresh and served.
        hs.answer_whoami(None);
        let r = support::get_as(&proxy, &path(&cid), "good").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), BYTES);
        assert_eq!(hs.whoami_calls(), calls + 1);
        control(&proxy).await;
        // (The one accepted token is now remembered and the item cached: a few hundred bytes.)
        baseline
            .assert_back("after the false whoami answers", FD_SLACK, RSS_SLACK, 10)
            .await;
    })
    .await;
}

/// Both an `Authorization` header and an `access_token` parameter: Synapse's own refusal,
/// without asking the homeserver and without remembering anything under either token.
#[tokio::test]
async fn mixed_credentials_are_refused_as_synapse_does() {
    support::serially(30, async {
        let (hs, gw, proxy, cid) = setup("").await;
        // The stub lets the query token win, so a check of both would accept `forged`.
        for query in ["access_token=good", "access_token=", "access%5Ftoken=good"] {
            let r = support::get_as(&proxy, &format!("{}?{query}", path(&cid)), "forged").await;
            assert_eq!(r.status(), 401, "{query}");
            let body = json(&r.bytes().await.unwrap());
            assert_eq!(body["errcode"], "M_MISSING_TOKEN");
            assert_eq!(
                body["error"],
                "Mixing Authorization headers and access_token query parameters."
            );
        }
        assert_eq!(hs.whoami_calls(), 0, "the homeserver was not asked");
        assert_eq!(gw.hits(&cid), 0);
        // Again and again, `CONCURRENT` at once, with a control request among them.
        let round = || {
            let (proxy, cid) = (&proxy, &cid);
            let refused = support::concurrently(CONCURRENT, move |n| async move {
                let query = ["access_token=good", "access_token=", "access%5Ftoken=good"][n % 3];
                let r = support::get_as(proxy, &format!("{}?{query}", path(cid)), "forged").await;
                assert_eq!(r.status(), 401, "{query}");
                let body = json(&r.bytes().await.unwrap());
                assert_eq!(body["errcode"], "M_MISSING_TOKEN");
            });
            async move {
                tokio::join!(refused, control(proxy));
            }
        };
        let baseline = warm(&proxy, round).await;
        for _ in 0..ROUNDS {
            round().await;
        }
        assert_eq!(hs.whoami_calls(), 0, "the homeserver was not asked");
        assert_eq!(gw.hits(&cid), 0);
        // Nothing is asked of the homeserver or the gateway: nothing pooled or cached grows.
        baseline
            .assert_back("after the mixed credentials", 4, RSS_SLACK, 10)
            .await;
        // The header token alone is checked afresh, and refused by the homeserver.
        let r = support::get_as(&proxy, &path(&cid), "forged").await;
        assert_eq!(r.status(), 401);
        assert_eq!(support::errcode(r).await, "M_UNKNOWN_TOKEN");
        assert_eq!(hs.whoami_calls(), 1);
        assert_eq!(hs.last().headers["authorization"], "Bearer forged");
        // Each credential on its own still works.
        let r = support::get(&proxy, &format!("{}?access_token=good", path(&cid))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(hs.whoami_calls(), 2);
    })
    .await;
}
