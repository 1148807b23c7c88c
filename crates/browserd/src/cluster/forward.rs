//! Forwarding a request to the node that owns its session: HTTP/1.1 to the node's
//! `--node-url`, the client's own credentials passed on (every node shares the store, the
//! API keys and the signing secret). A websocket upgrade is answered with the owner's
//! `101` and then the two connections are joined as bytes: no frame is parsed on this hop.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Set on a forwarded request (to the forwarding node's name): the owner serves it itself,
/// so a request is forwarded at most once, whatever two nodes believe about each other.
pub const FORWARDED_BY: &str = "x-browserd-forwarded-by";

/// Why the owner could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("bad node url {0:?}")]
    BadUrl(String),
    #[error("could not connect to node {node}: {source}")]
    Connect {
        node: String,
        source: std::io::Error,
    },
    #[error("node {node} did not answer: {source}")]
    Http { node: String, source: hyper::Error },
    #[error("node {0} did not answer in time")]
    Timeout(String),
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "forwarding to the owning node failed");
        let body = serde_json::json!({
            "statusCode": 502,
            "error": "Bad Gateway",
            "message": format!("the browserd node that runs this session could not be reached ({self}); retry shortly"),
        });
        let mut response = (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("true"));
        response
    }
}

/// `host:port` of an `http://host:port[/]` node URL.
fn authority(node_url: &str) -> Result<String, ForwardError> {
    let uri: Uri = node_url
        .parse()
        .map_err(|_| ForwardError::BadUrl(node_url.to_owned()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) if a.port().is_some() => Ok(a.to_string()),
        (Some("http"), Some(a)) => Ok(format!("{}:80", a.host())),
        _ => Err(ForwardError::BadUrl(node_url.to_owned())),
    }
}

/// Sends `req` to the node at `node_url` and returns its answer; an upgrade is joined
/// through. `me` names this node in [`FORWARDED_BY`].
pub async fn forward(
    mut req: Request,
    node_name: &str,
    node_url: &str,
    me: &str,
) -> Result<Response, ForwardError> {
    let address = authority(node_url)?;
    let connect = tokio::net::TcpStream::connect(&address);
    let stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| ForwardError::Timeout(node_name.to_owned()))?
        .map_err(|source| ForwardError::Connect {
            node: node_name.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let http = |source| ForwardError::Http {
        node: node_name.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // Drives the connection to the owner; `with_upgrades`: after a 101 it hands the socket on.
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "forwarded connection ended");
        }
    });

    let client_upgrade = hyper::upgrade::on(&mut req);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = path.parse().expect("a path and query parse as a URI");
    req.headers_mut().insert(
        FORWARDED_BY,
        HeaderValue::from_str(me).unwrap_or(HeaderValue::from_static("node")),
    );
    let mut response = sender.send_request(req).await.map_err(http)?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let owner_upgrade = hyper::upgrade::on(&mut response);
        // Joins the client and the owner once both sides have switched; lives as long as
        // either side keeps its connection.
        tokio::spawn(async move {
            let (client, owner) = match tokio::try_join!(client_upgrade, owner_upgrade) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "a forwarded upgrade did not complete");
                    return;
                }
            };
            let (mut client, mut owner) = (TokioIo::new(client), TokioIo::new(owner));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
        });
    }
    Ok(response.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_give_their_address() {
        assert_eq!(
            authority("http://127.0.0.2:3000").unwrap(),
            "127.0.0.2:3000"
        );
        assert_eq!(authority("http://10.0.0.5:3000/").unwrap(), "10.0.0.5:3000");
        assert_eq!(authority("http://node-b").unwrap(), "node-b:80");
        assert!(
            authority("https://node-b:443").is_err(),
            "TLS between nodes is not built in"
        );
        assert!(authority("node-b:3000").is_err());
    }
}
