//! An ETSI 014 client over mutual TLS (keep-alive): the project's own SAE, for `qkd kme
//! status`, `qkd bench kme` and tests.

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::api::{KeyContainer, Status};
use crate::tls::{Identity, TlsError, host_of, server_name};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, TLS or HTTP failed.
    #[error("{0}")]
    Connection(String),
    /// TLS set-up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The KME answered with an error.
    #[error("the KME answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The Error body.
        body: Value,
    },
    /// The answer is not what the standard says.
    #[error("the KME's answer does not decode: {0}")]
    Decode(String),
}

/// A key fetched: its ID and bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct FetchedKey {
    /// The key's ID.
    pub key_id: String,
    /// The key.
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for FetchedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FetchedKey({}, <{} bytes>)",
            self.key_id,
            self.bytes.len()
        )
    }
}

/// One connection to a KME as one SAE.
#[derive(Debug)]
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

fn connection(e: impl std::fmt::Display) -> ClientError {
    ClientError::Connection(e.to_string())
}

impl Client {
    /// Connects to the KME at `address` (`host:port`) as the SAE of `identity`.
    pub async fn connect(address: &str, identity: &Identity) -> Result<Self, ClientError> {
        let host = host_of(address).to_owned();
        let connector = tokio_rustls::TlsConnector::from(identity.client()?);
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| connection(format!("connecting to {address}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let tls = connector
            .connect(server_name(&host)?, tcp)
            .await
            .map_err(|e| connection(format!("TLS with {address}: {e}")))?;
        let (sender, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(connection)?;
        tokio::spawn(driver);
        Ok(Client { sender, host })
    }

    /// Sends a request and returns the status and JSON body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))
            .map_err(connection)?;
        self.sender.ready().await.map_err(connection)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(connection)?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(connection)?
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?
        };
        Ok((status, value))
    }

    async fn expect_ok(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        match self.call(method, path, body).await? {
            (200, value) => Ok(value),
            (status, body) => Err(ClientError::Refused { status, body }),
        }
    }

    /// Get status for slave `slave`.
    pub async fn status(&mut self, slave: &str) -> Result<Status, ClientError> {
        let value = self
            .expect_ok("GET", &format!("/api/v1/keys/{slave}/status"), None)
            .await?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Get key: `number` keys of `size` bits for slave `slave`.
    pub async fn enc_keys(
        &mut self,
        slave: &str,
        number: u64,
        size: u64,
    ) -> Result<Vec<FetchedKey>, ClientError> {
        let body = json!({ "number": number, "size": size });
        let value = self
            .expect_ok(
                "POST",
                &format!("/api/v1/keys/{slave}/enc_keys"),
                Some(&body),
            )
            .await?;
        keys(value)
    }

    /// Get key with key IDs `ids`, from master `master`.
    pub async fn dec_keys(
        &mut self,
        master: &str,
        ids: &[String],
    ) -> Result<Vec<FetchedKey>, ClientError> {
        let body =
            json!({ "key_IDs": ids.iter().map(|id| json!({ "key_ID": id })).collect::<Vec<_>>() });
        let value = self
            .expect_ok(
                "POST",
                &format!("/api/v1/keys/{master}/dec_keys"),
                Some(&body),
            )
            .await?;
        keys(value)
    }
}

fn keys(value: Value) -> Result<Vec<FetchedKey>, ClientError> {
    let container: KeyContainer =
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))?;
    container
        .keys
        .into_iter()
        .map(|k| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&k.key)
                .map_err(|e| ClientError::Decode(format!("key {}: {e}", k.key_ID)))?;
            Ok(FetchedKey {
                key_id: k.key_ID,
                bytes: zeroize::Zeroizing::new(bytes),
            })
        })
        .collect()
}
