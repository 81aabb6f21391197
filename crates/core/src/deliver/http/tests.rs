//! Unit tests of [`super`].

use super::*;
use crate::limit::Rate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A peer that answers every request `400` with a body that never ends.
async fn endless_body_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    format!("http://{addr}/api/v2/batch")
}

fn sender(destination_timeout_ms: u64, retry: RetryConfig) -> RetryingClient {
    let destination: DestinationConfig = toml::from_str(&format!(
        "kind = \"customerio\"\nconnect_timeout_ms = 1000\n\
         request_timeout_ms = {destination_timeout_ms}\npool_size = 1\n"
    ))
    .unwrap();
    let rate = Rate {
        site: "s".into(),
        per_second: 1_000.0,
        burst: 10,
    };
    let limiter = Arc::new(Limiter::new([("ws".to_string(), rate)], 4, 1.0));
    RetryingClient::new(&destination, retry, limiter, Metrics::new()).unwrap()
}

/// One small batch for workspace `ws`, sent until its answer is final.
async fn post(sender: &RetryingClient, url: &str) -> Answer {
    let body = Bytes::from_static(b"{}");
    sender
        .send(
            "ws",
            &Credentials::Basic {
                user: "s".into(),
                password: crate::config::Secret::new("k"),
            },
            Method::POST,
            url,
            body,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_do_not_spend_the_retry_budget() {
    // Nothing listens for a while (an outage), then the API answers 503 twice and
    // accepts: with a budget of 3 attempts the request must still succeed, since
    // only the attempts that reached the API count.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let retry = RetryConfig {
        max_attempts: 3,
        initial_backoff_ms: crate::config::Millis::new(5),
        max_backoff_ms: crate::config::Millis::new(20),
        ..RetryConfig::default()
    };
    let sender = sender(5_000, retry);
    let url = format!("http://127.0.0.1:{port}/api/v2/batch");
    let send = tokio::spawn(async move { post(&sender, &url).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        for answer in [
            "503 Service Unavailable",
            "503 Service Unavailable",
            "200 OK",
        ] {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let reply =
                format!("HTTP/1.1 {answer}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
            socket.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .expect("answered")
        .unwrap();
    assert!(matches!(answer, Answer::Accepted(_)), "{answer:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn an_endless_answer_is_cut_off_and_judged_by_its_status() {
    let url = endless_body_server().await;
    // A request timeout far beyond the test's own bound: only the cap can end the
    // read.
    let sender = sender(3_600_000, RetryConfig::default());
    let answer = tokio::time::timeout(Duration::from_secs(60), post(&sender, &url))
        .await
        .expect("the read stops at the cap, not at the request timeout");
    match answer {
        Answer::Rejected(f) => {
            assert_eq!(f.reason, FailureReason::Http(400));
            assert_eq!(f.attempts, 1);
            assert!(f.detail.starts_with("xxx") && f.detail.len() <= EXCERPT_BYTES);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}
