//! Reading the mail the system sent: from the in-process SMTP sink, or a Mailpit API.

use serde_json::Value;

/// One received mail, reduced to what the tests check.
#[derive(Debug, Clone)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub message_id: String,
}

/// Where the tests read mail from.
pub enum Mailbox {
    Sink(Box<tests::smtp::SmtpSink>),
    Mailpit { api: String, http: reqwest::Client },
}

impl Mailbox {
    pub fn sink(sink: tests::smtp::SmtpSink) -> Self {
        Self::Sink(Box::new(sink))
    }

    pub fn mailpit(api: String) -> Self {
        Self::Mailpit { api, http: reqwest::Client::new() }
    }

    /// Every mail received so far for `address`.
    pub async fn mails_to(&self, address: &str) -> Vec<Mail> {
        match self {
            Self::Sink(sink) => sink
                .mails()
                .into_iter()
                .filter(|mail| mail.rcpt_to.iter().any(|to| to.eq_ignore_ascii_case(address)))
                .map(|mail| Mail {
                    subject: mail.subject().unwrap_or_default(),
                    text: mail.text_body().unwrap_or_default(),
                    message_id: mail.message_id().unwrap_or_default(),
                })
                .collect(),
            Self::Mailpit { api, http } => {
                let list: Value =
                    http.get(format!("{api}/api/v1/messages?limit=1000")).send().await.unwrap().json().await.unwrap();
                let mut mails = Vec::new();
                for summary in list["messages"].as_array().cloned().unwrap_or_default() {
                    let to: Vec<String> = summary["To"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|to| to["Address"].as_str().map(str::to_owned))
                        .collect();
                    if !to.iter().any(|to| to.eq_ignore_ascii_case(address)) {
                        continue;
                    }
                    let id = summary["ID"].as_str().unwrap();
                    let message: Value =
                        http.get(format!("{api}/api/v1/message/{id}")).send().await.unwrap().json().await.unwrap();
                    mails.push(Mail {
                        subject: message["Subject"].as_str().unwrap_or_default().to_owned(),
                        text: message["Text"].as_str().unwrap_or_default().to_owned(),
                        message_id: message["MessageID"].as_str().unwrap_or_default().to_owned(),
                    });
                }
                mails
            }
        }
    }
}
