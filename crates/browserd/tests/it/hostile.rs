//! Hostile input on the wire: garbage instead of HTTP, handshakes cut short, broken and
//! oversized frames, malformed connect URLs. Each gets a clear answer (or a closed socket);
//! nothing crashes, and the sessions involved keep their state.

use crate::common;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads whatever the server answers until it closes (or 10 s pass).
async fn answer_to(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The server still serves the API.
async fn still_serving(server: &TestServer) {
    let resp = server
        .req(reqwest::Method::GET, "/v1/projects")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn garbage_instead_of_http_gets_a_400_or_a_closed_socket() {
    let server = TestServer::start().await;
    let answer = answer_to(
        server.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    )
    .await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let answer = answer_to(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_handshake_cut_short_holds_no_client_place() {
    // One client at a time: a place a cut handshake kept would lock every client out.
    let server = TestServer::start_with(Options {
        max_clients_per_session: 1,
        ..Options::default()
    })
    .await;
    let s = server
        .create(json!({"keepAlive": true, "timeout": 600}))
        .await;
    let url = s["connectUrl"].as_str().unwrap();
    let path = url.split_once(&server.addr.to_string()).unwrap().1;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        server.addr
    );
    // Cut inside the headers, and cut (reset) right after a complete, valid request,
    // before its 101 is read.
    for request in [head.clone(), format!("{head}\r\n")] {
        for _ in 0..5 {
            let mut tcp = TcpStream::connect(server.addr).await.unwrap();
            tcp.write_all(request.as_bytes()).await.unwrap();
            tcp.set_zero_linger().unwrap();
            drop(tcp);
        }
    }
    still_serving(&server).await;
    // A real client gets the one place (once the server noticed the resets).
    let mut refused = None;
    let mut cdp = common::wait_until!(
        {
            match tokio_tungstenite::connect_async(url).await {
                Ok((ws, _)) => Some(Cdp::from_ws(ws)),
                Err(e) => {
                    refused = Some(e);
                    None
                }
            }
        },
        "a cut handshake kept the client place: {refused:?}"
    );
    assert_eq!(cdp.eval_in_page("1").await, 1);
    assert_eq!(
        server.get(s["id"].as_str().unwrap()).await["status"],
        "RUNNING"
    );
    server.stop().await;
}

#[tokio::test]
async fn broken_and_oversized_frames_close_that_client_only() {
    let server = TestServer::start_with(Options {
        max_message_mib: 1,
        ..Options::default()
    })
    .await;
    let s = server.create(json!({"keepAlive": true})).await;
    let url = s["connectUrl"].as_str().unwrap();

    // A complete frame with the reserved bits set and a reserved opcode: not websocket.
    let mut tcp = raw_upgrade(server.addr, url).await;
    tcp.write_all(&[0xFB, 0x80, 1, 2, 3, 4]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(patience(), tcp.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the server closes a client that sends garbage frames"
    );

    // A masked text frame announcing 1 TiB, over the 1 MiB limit.
    let mut tcp = raw_upgrade(server.addr, url).await;
    let mut header = vec![0x81u8, 0xFF];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(patience(), tcp.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the server closes a client that announces a huge frame"
    );

    // The session and its other clients are unharmed.
    assert_eq!(
        server.get(s["id"].as_str().unwrap()).await["status"],
        "RUNNING"
    );
    let mut cdp = Cdp::connect(url).await;
    assert_eq!(cdp.eval_in_page("6 * 7").await, 42);
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_connect_urls_get_clear_refusals() {
    let server = TestServer::start().await;
    let ws = format!("ws://{}", server.addr);
    for (query, want) in [
        ("/?signingKey=", 401),
        ("/?signingKey=%ZZ%ZZ", 401),
        ("/?signingKey=....", 401),
        ("/?sessionId=abc", 401),
        ("/?apiKey=", 401),
        (&format!("/?signingKey={}", "x".repeat(4000)), 401),
        ("/nowhere?signingKey=abc", 404),
    ] {
        let (status, body) = refused_handshake(&format!("{ws}{query}")).await;
        assert_eq!(status, want, "{query}: {body}");
        assert!(body["message"].is_string(), "{query}: {body}");
    }
    still_serving(&server).await;
    server.stop().await;
}
