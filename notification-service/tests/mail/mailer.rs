//! The SMTP side on its own (`Mailer`), against the kit's SMTP server.

use std::time::Duration;

use lettre::Message;
use notification_service::Mailer;
use tests::smtp::SmtpSink;

fn mail(to: &str) -> Message {
    Message::builder()
        .from("noreply@example.com".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("mailer test")
        .body(String::from("hello"))
        .unwrap()
}

#[tokio::test]
async fn a_mailer_that_was_shut_down_sends_nothing_more() {
    let sink = SmtpSink::start().await;
    let mailer = Mailer::new(&sink.url(), Duration::from_secs(5), 2).unwrap();
    mailer.send(mail("before@example.com")).await.unwrap();
    assert_eq!(sink.mails().len(), 1);

    tokio::time::timeout(Duration::from_secs(5), mailer.shutdown()).await.expect("shutdown returns in time");
    let after = tokio::time::timeout(Duration::from_secs(10), mailer.send(mail("after@example.com")))
        .await
        .expect("a send after shutdown ends in time");
    assert!(after.is_err(), "a send after shutdown went out");
    assert_eq!(sink.mails().len(), 1, "only the mail sent before the shutdown arrived");
}
