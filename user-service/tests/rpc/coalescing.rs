//! Coalesced reads, counted on the wire: a proxy between the service and Postgres counts the
//! statements the service executes (Postgres protocol `Execute` messages) and can hold what
//! the service sends, so the test decides when a query is "running".

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::future::join_all;
use tests::DEADLINE;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::support::{TestApp, new_user, test_env};

/// A TCP proxy in front of Postgres that counts the `Execute` messages clients send and
/// holds their bytes while its gate is closed.
struct StatementCounter {
    addr: SocketAddr,
    executes: Arc<AtomicU64>,
    gate: watch::Sender<bool>,
}

impl StatementCounter {
    async fn start(upstream: SocketAddr) -> StatementCounter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let executes = Arc::new(AtomicU64::new(0));
        let (gate, open) = watch::channel(true);
        let counted = Arc::clone(&executes);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                tokio::spawn(relay(client, server, Arc::clone(&counted), open.clone()));
            }
        });
        StatementCounter { addr, executes, gate }
    }

    fn executes(&self) -> u64 {
        self.executes.load(Ordering::SeqCst)
    }

    fn hold(&self) {
        self.gate.send_replace(false);
    }

    fn release(&self) {
        self.gate.send_replace(true);
    }
}

/// Server → client as is; client → server message by message, counting `Execute`s as they
/// arrive and forwarding them while the gate is open.
async fn relay(client: TcpStream, server: TcpStream, executes: Arc<AtomicU64>, mut open: watch::Receiver<bool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let downstream = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    // Messages are read (and counted) as they come, and forwarded when the gate is open.
    let (held, mut to_forward) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let upstream = tokio::spawn(async move {
        while let Some(message) = to_forward.recv().await {
            if open.wait_for(|open| *open).await.is_err() || server_write.write_all(&message).await.is_err() {
                break;
            }
        }
    });
    // The startup phase has untyped messages (SSLRequest, StartupMessage); then every
    // message is a type byte and a length that counts itself.
    let mut started = false;
    loop {
        let mut message = Vec::new();
        if started {
            let mut kind = [0u8; 1];
            if client_read.read_exact(&mut kind).await.is_err() {
                break;
            }
            message.push(kind[0]);
        }
        let mut length = [0u8; 4];
        if client_read.read_exact(&mut length).await.is_err() {
            break;
        }
        message.extend_from_slice(&length);
        let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
        if client_read.read_exact(&mut body).await.is_err() {
            break;
        }
        if !started {
            // SSLRequest and GSSENCRequest are answered with one byte and followed by the
            // StartupMessage; a StartupMessage ends the untyped phase.
            let code = body.get(..4).map(|code| u32::from_be_bytes(code.try_into().unwrap()));
            started = !matches!(code, Some(80_877_103 | 80_877_104));
        } else if message[0] == b'E' {
            executes.fetch_add(1, Ordering::SeqCst);
        }
        message.extend_from_slice(&body);
        if held.send(message).is_err() {
            break;
        }
    }
    drop(held);
    let _forwarded = upstream.await;
    downstream.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_arriving_while_a_query_runs_are_answered_by_one_more_query() {
    const WAITING: usize = 20;
    let env = test_env().await;
    let database_url = env.lookup("DATABASE_URL").unwrap();
    let counter = StatementCounter::start(tests::urls::socket_addr(&database_url).await).await;
    let through_counter = tests::urls::with_host_port(&database_url, &counter.addr.to_string());
    let separator = if through_counter.contains('?') { '&' } else { '?' };
    let env = env.set("DATABASE_URL", format!("{through_counter}{separator}sslmode=disable"));
    let app = TestApp::spawn_in(env).await;
    let users: Vec<_> = (0..=WAITING).map(|n| new_user(&format!("User {n}"))).collect();
    for user in &users {
        app.seed(user).await;
    }
    // Warm: the reader's connection is open and its statement prepared.
    app.get_user(users[0].id).await.unwrap();

    // A lone lookup starts a query, which the proxy holds: the query is "running".
    counter.hold();
    let before = counter.executes();
    let lone = tokio::spawn({
        let client = app.client.clone();
        let id = users[0].id;
        async move { client.send(&shared::contracts::GetUser { id: id.to_string() }).await }
    });
    tests::eventually(DEADLINE, || async {
        if counter.executes() > before { Ok(()) } else { Err("the lone lookup's query has not been sent") }
    })
    .await;
    // Meanwhile WAITING more lookups arrive and wait for the reader; once the broker has
    // delivered them all, the running query is let through.
    let waiting = join_all(users[1..].iter().map(|user| app.get_user(user.id)));
    let release = async {
        tests::eventually(DEADLINE, || async {
            match app.probe.message_count(&app.queue).await {
                0 => Ok(()),
                n => Err(format!("{n} requests not yet delivered")),
            }
        })
        .await;
        counter.release();
    };
    let (answers, ()) = tokio::join!(waiting, release);

    assert_eq!(lone.await.unwrap().unwrap().id, users[0].id);
    for (user, answer) in users[1..].iter().zip(answers) {
        assert_eq!(answer.unwrap().id, user.id);
    }
    // One query for the lone lookup, one for all that waited (a straggler that reached the
    // reader after the second query started may need a third): never one per lookup.
    let queries = counter.executes() - before;
    assert!((2..=3).contains(&queries), "{queries} statements for {} lookups", WAITING + 1);
    app.finish().await;
}

/// The reader's two query forms on real rows: a batch answers each id it holds once, however
/// often it was asked, and leaves out the ids it does not hold; a lone id the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_every_known_id_with_its_row_and_leaves_out_unknown_ones() {
    let app = TestApp::spawn().await;
    let (first, second) = (new_user("First"), new_user("Second"));
    app.seed(&first).await;
    app.seed(&second).await;
    let users = user_service::users::Users::new(app.pool.clone(), std::time::Duration::from_secs(5));
    let mut reader = users.reader();
    let unknown = uuid::Uuid::new_v4();

    let mut found = reader.find_many(&[first.id, unknown, first.id, second.id]).await.unwrap();
    found.sort_by_key(|user| user.name.clone());
    found.dedup_by_key(|user| user.id);
    let found: Vec<_> = found.iter().map(|user| (user.id, user.email.as_str(), user.name.as_str())).collect();
    assert_eq!(
        found,
        [(first.id, first.email.as_str(), "First"), (second.id, second.email.as_str(), "Second")],
        "each known id with its own row, the unknown one left out"
    );
    let found = reader.find_many(&[second.id]).await.unwrap();
    assert_eq!(found.iter().map(|user| user.id).collect::<Vec<_>>(), [second.id]);
    assert!(reader.find_many(&[unknown]).await.unwrap().is_empty());
    assert!(reader.find_many(&[unknown, uuid::Uuid::new_v4()]).await.unwrap().is_empty());
    // The reader holds a pooled connection, which closing the pool waits for.
    drop(reader);
    app.finish().await;
}
