//! Application services that misbehave, against the real binary: a service
//! answering 500, one that never answers, one refusing our `hs_token`, one
//! that never answers user queries. They are small http.server scripts
//! (tests/clients/plain_appservice.py: real HTTP on loopback); python3 must
//! be installed, without it this test fails, it does not skip.
//! Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-events>.

mod common;

use std::time::Duration;

use common::appservice::*;
use common::{eventually, free_port};
use serde_json::json;

/// A transaction the service answers with 500 is sent again, with the same
/// transaction ID and the same events, until the service takes it; the
/// events after it follow in later transactions, in order.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-events>
/// ("If the homeserver does not receive a response, or receives an error
/// response, it should retry the request ... with the same transaction ID").
#[test]
fn a_transaction_answered_500_is_sent_again_with_the_same_id_and_events() {
    check_python();
    let as_port = free_port();
    let service = Service::plain(as_port, HS_TOKEN, "fail:2");
    let (node, _dir) = node_with_service(as_port);
    let room_id = bot_speaks(&as_client(&node), &["one", "two", "three"]);
    let received =
        service.wait_for_transactions(|received| accepted_bodies(received) == ["one", "two", "three"]);
    let first = &received[0];
    assert_eq!(first.answer, Some(500), "{received:#?}");
    assert_eq!(
        (&received[1], received[2].accepted()),
        (&Received { answer: Some(500), ..first.clone() }, true)
    );
    assert_eq!(received[2], Received { answer: Some(200), ..first.clone() }, "{received:#?}");
    // Later transactions take the next IDs, each delivered once.
    let ids: Vec<u64> = received[2..].iter().map(|received| received.txn.parse().unwrap()).collect();
    let first_id: u64 = first.txn.parse().unwrap();
    assert_eq!(ids, (first_id..first_id + ids.len() as u64).collect::<Vec<_>>(), "{received:#?}");
    assert!(node.log_text().contains(&format!("transaction {first_id} failed")), "{}", node.log_text());

    send_text(&as_client(&node), &room_id, "four");
    service.wait_for_transactions(|received| {
        accepted_bodies(received).last().is_some_and(|body| body == "four")
    });
}

/// A service that never answers: the transaction times out (the node's
/// bound on an outbound request, 60 s), is sent again (same ID) after a
/// backoff, and meanwhile a second service of the same node gets its
/// transactions as they happen.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#pushing-events>.
#[test]
fn a_service_that_never_answers_times_out_and_holds_up_no_other() {
    check_python();
    let (silent_port, live_port) = (free_port(), free_port());
    let silent = Service::plain(silent_port, HS_TOKEN, "silent");
    let live = Service::plain(live_port, "second_hs_token", "ok");
    let (node, _dir) = node_with_registrations(&[
        ("silent.yaml", registration(silent_port)),
        ("live.yaml", second_registration(&format!("http://127.0.0.1:{live_port}"))),
    ]);
    bot_speaks(&as_client(&node), &["into the void"]);
    let hung = silent.wait_for_transactions(|received| !received.is_empty());
    let started = std::time::Instant::now();

    // While the first service holds its transaction, the second one gets
    // each message within a few seconds of its sending.
    let mut second = node.client();
    second.token = Some("second_as_token".into());
    let (status, room) = second.post("/_matrix/client/v3/createRoom", &json!({}));
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().unwrap();
    for n in 0..5 {
        let body = format!("on time {n}");
        let sent = std::time::Instant::now();
        send_text(&second, room_id, &body);
        live.wait_for_transactions(|received| accepted_bodies(received).contains(&body));
        assert!(sent.elapsed() < Duration::from_secs(5), "{body} took {:?}", sent.elapsed());
    }
    assert_eq!(silent.transactions().len(), 1, "{:#?}", silent.transactions());

    // The hung transaction is given up after the timeout and sent again.
    let again = eventually(Duration::from_secs(120), || {
        let received = silent.transactions();
        (2 <= received.len()).then(|| received[1].clone())
    });
    let waited = started.elapsed();
    assert!(Duration::from_secs(55) <= waited && waited < Duration::from_secs(90), "{waited:?}");
    assert_eq!(again, hung[0]);
    assert!(node.log_text().contains("no answer in time"), "{}", node.log_text());
}

/// A service that refuses our `hs_token` (403 `M_FORBIDDEN`, as mautrix
/// answers): the transaction is retried and the failure logged; once the
/// registration is fixed and reloaded (SIGHUP), everything sent meanwhile
/// arrives, in order, nothing lost.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#authorization>.
#[test]
fn a_service_refusing_our_hs_token_loses_nothing_once_the_token_matches() {
    check_python();
    let as_port = free_port();
    let service = Service::plain(as_port, HS_TOKEN, "ok");
    let wrong = registration(as_port).replace(HS_TOKEN, "an_outdated_hs_token");
    let (node, dir) = node_with_registrations(&[("registration.yaml", wrong)]);
    let bot = as_client(&node);
    let room_id = bot_speaks(&bot, &["one", "two"]);
    let refused = service.wait_for_transactions(|received| 2 <= received.len());
    assert!(refused.iter().all(|received| received.answer == Some(403)), "{refused:#?}");
    assert_eq!(refused[0].txn, refused[1].txn, "{refused:#?}");
    send_text(&bot, &room_id, "three");
    eventually(WAIT, || node.log_text().contains("status 403").then_some(()));

    std::fs::write(dir.0.join("registration.yaml"), registration(as_port)).unwrap();
    node.signal("HUP");
    let received = service.wait_for_transactions(|received| accepted_bodies(received).len() == 3);
    assert_eq!(accepted_bodies(&received), ["one", "two", "three"]);
    let first_accepted = received.iter().find(|received| received.accepted()).unwrap();
    assert_eq!(first_accepted.events, refused[0].events, "the refused transaction, as it was");
    send_text(&bot, &room_id, "four");
    let received = service.wait_for_transactions(|received| accepted_bodies(received).len() == 4);
    assert_eq!(accepted_bodies(&received), ["one", "two", "three", "four"]);
}

/// A service that never answers user queries (as a matrix-bot-sdk bot
/// without a `query.user` handler): the query before a transaction is
/// given up after 10 s, no other user is asked for that transaction, and
/// the transaction goes; it is not held for a request timeout per user.
/// Spec: <https://spec.matrix.org/latest/application-service-api/#get_matrixappv1usersuserid>.
#[test]
fn unanswered_user_queries_hold_a_transaction_for_a_bounded_time() {
    check_python();
    let as_port = free_port();
    let service = Service::plain(as_port, HS_TOKEN, "deaf");
    let (node, _dir) = node_with_service(as_port);
    let ghosts = [node.user_id("ghost_a"), node.user_id("ghost_b"), node.user_id("ghost_c")];
    let started = std::time::Instant::now();
    let (status, room) = as_client(&node).post("/_matrix/client/v3/createRoom", &json!({"invite": ghosts}));
    assert_eq!(status, 200, "{room}");
    service.wait_for_transactions(|received| received.iter().any(Received::accepted));
    let waited = started.elapsed();
    assert!(Duration::from_secs(9) <= waited && waited < Duration::from_secs(25), "{waited:?}");
    let lines = service.lines();
    let before_first: Vec<&String> = lines.iter().take_while(|line| !line.starts_with("{\"txn\"")).collect();
    let queries = before_first.iter().filter(|line| line.starts_with("{\"query\"")).count();
    assert_eq!(queries, 1, "{lines:#?}");
    assert!(node.log_text().contains("user query failed"), "{}", node.log_text());
}
