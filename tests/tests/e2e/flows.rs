//! The user-visible flows across all three services.

use std::collections::HashMap;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{DEADLINE, mailbox::Mail, stack::Stack};

fn new_email(tag: &str) -> String {
    format!("{}@example.com", tests::unique(tag))
}

async fn signup(http: &reqwest::Client, stack: &Stack, email: &str, name: &str) -> (StatusCode, Value) {
    let response = http
        .post(format!("{}/auth/signup", stack.auth_url))
        .json(&json!({"email": email, "password": "correct horse battery", "name": name}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn login(http: &reqwest::Client, stack: &Stack, email: &str) -> String {
    let response = http
        .post(format!("{}/auth/login", stack.auth_url))
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    body["accessToken"].as_str().unwrap().to_owned()
}

/// `GET /users/{id}` until the projection has the user (it is eventually consistent).
async fn get_user_eventually(http: &reqwest::Client, stack: &Stack, token: &str, id: &str) -> Value {
    tests::eventually(DEADLINE, || async {
        let response = http
            .get(format!("{}/users/{id}", stack.auth_url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status() {
            StatusCode::OK => response.json::<Value>().await.map_err(|e| e.to_string()),
            status => Err(format!("GET /users/{id} answered {status}")),
        }
    })
    .await
}

async fn mails_eventually(stack: &Stack, email: &str, count: usize) -> Vec<Mail> {
    tests::eventually(DEADLINE, || async {
        let mails = stack.mailbox.mails_to(email).await;
        if mails.len() >= count { Ok(mails) } else { Err(format!("{} of {count} mails to {email}", mails.len())) }
    })
    .await
}

#[tokio::test]
async fn signup_login_then_the_profile_and_exactly_one_welcome_mail() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let email = new_email("ada");
    let (status, created) = signup(&http, &stack, &email, "Ada Lovelace").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let token = login(&http, &stack, &email).await;

    let profile = get_user_eventually(&http, &stack, &token, &id).await;
    assert_eq!(profile, created, "the projection holds exactly what signup answered");
    let me = http.get(format!("{}/users/me", stack.auth_url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.json::<Value>().await.unwrap(), created);

    mails_eventually(&stack, &email, 1).await;
    // Counted only once every publication of the event was handled: a late duplicate fails.
    stack.settle(&http).await;
    let mails = stack.mailbox.mails_to(&email).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].subject.contains("Ada Lovelace"), "{:?}", mails[0].subject);
    assert!(mails[0].text.contains("Ada Lovelace"), "{:?}", mails[0].text);
    assert!(!mails[0].message_id.is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_signups_give_fifty_users_and_fifty_mails_none_twice() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let emails: Vec<String> = (0..50).map(|n| new_email(&format!("crowd{n}"))).collect();
    let created = join_all(emails.iter().map(|email| signup(&http, &stack, email, "Crowd"))).await;
    let mut ids = HashMap::new();
    for ((status, body), email) in created.into_iter().zip(&emails) {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.insert(email.clone(), body["id"].as_str().unwrap().to_owned());
    }
    let token = login(&http, &stack, &emails[0]).await;
    for id in ids.values() {
        get_user_eventually(&http, &stack, &token, id).await;
    }
    for email in &emails {
        mails_eventually(&stack, email, 1).await;
    }
    stack.settle(&http).await;
    let mut message_ids = std::collections::HashSet::new();
    for email in &emails {
        let mails = stack.mailbox.mails_to(email).await;
        assert_eq!(mails.len(), 1, "{email} got {} mails", mails.len());
        assert!(message_ids.insert(mails[0].message_id.clone()), "Message-ID reused: {}", mails[0].message_id);
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_duplicate_signup_is_409_and_sends_no_second_mail() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let email = new_email("dup");
    assert_eq!(signup(&http, &stack, &email, "First").await.0, StatusCode::CREATED);
    mails_eventually(&stack, &email, 1).await;
    let (status, problem) = signup(&http, &stack, &email.to_uppercase(), "Second").await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    stack.settle(&http).await;
    let mails = stack.mailbox.mails_to(&email).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].subject.contains("First"));
    stack.stop().await;
}

#[tokio::test]
async fn a_nestjs_client_gets_a_user_created_through_the_http_api() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let email = new_email("nest");
    let (status, created) = signup(&http, &stack, &email, "Grace").await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();
    let user = tests::eventually(DEADLINE, || async {
        let timeout = std::time::Duration::from_secs(10);
        tests::nest::nest_send(
            &stack.amqp_url,
            &stack.user_queue,
            json!({"cmd": "get_user"}),
            json!({"id": id}),
            timeout,
        )
        .await
    })
    .await;
    assert_eq!(user, created);
    stack.stop().await;
}
