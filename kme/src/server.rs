//! The ETSI GS QKD 014 server: routes, the caller's SAE ID from its certificate, and answers.
//! A connection whose client certificate does not chain to the CA fails in the TLS handshake
//! and never reaches a handler; a valid certificate whose name is not mapped to an SAE of this
//! KME gets 401 for every request.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use qkd_store::Store;
use qkd_store::pool::{DeliveryRefusal, ServedKey};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{ApiError, Key, KeyContainer, KeyIds, KeyRequest, Limits, Pair, Status};
use crate::link::{Link, Order, OrderFailure, Side};
use crate::tls::peer_name;

/// Largest request body read (a Key IDs request of `max_key_per_request` IDs fits).
const MAX_BODY: usize = 1 << 20;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server answers from.
#[derive(Debug)]
pub struct Service {
    /// This KME's ID (its certificate's name).
    pub kme_id: String,
    /// The peer KME's ID.
    pub peer_kme_id: String,
    /// Certificate common name → SAE ID, for this KME's SAEs.
    pub saes: Vec<(String, String)>,
    /// SAEs of the peer KME.
    pub peer_saes: Vec<String>,
    /// Sizes and counts.
    pub limits: Limits,
    /// Which end of the link.
    pub side: Side,
    /// The store.
    pub store: Store,
    /// The link to the peer KME.
    pub link: Link,
}

/// Serves `service` on `listener` with TLS `acceptor` until the task is dropped.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, service: Arc<Service>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors and the like: pause instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, service) = (acceptor.clone(), Arc::clone(&service));
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let caller = peer_name(tls.get_ref().1.peer_certificates())
                .ok()
                .and_then(|name| service.sae_of(&name));
            let handler = hyper::service::service_fn(move |request| {
                let (service, caller) = (Arc::clone(&service), caller.clone());
                async move { Ok::<_, std::convert::Infallible>(service.answer(caller, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), handler)
                .await;
        });
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The API call a request path names.
enum Call<'a> {
    Status(&'a str),
    EncKeys(&'a str),
    DecKeys(&'a str),
}

impl Service {
    /// The SAE ID a certificate name maps to.
    fn sae_of(&self, common_name: &str) -> Option<String> {
        self.saes
            .iter()
            .find(|(name, _)| name == common_name)
            .map(|(_, id)| id.clone())
    }

    async fn answer(
        &self,
        caller: Option<String>,
        request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        match self.route(caller, request).await {
            Ok(body) => json_response(200, &body),
            Err(e) => json_response(e.status, &e.body()),
        }
    }

    async fn route(
        &self,
        caller: Option<String>,
        request: Request<Incoming>,
    ) -> Result<Value, ApiError> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let call = path
            .strip_prefix("/api/v1/keys/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(id, method)| match method {
                "status" => Some(Call::Status(id)),
                "enc_keys" => Some(Call::EncKeys(id)),
                "dec_keys" => Some(Call::DecKeys(id)),
                _ => None,
            })
            .ok_or_else(|| ApiError {
                status: 404,
                message: "no such API path".to_owned(),
                details: vec![json!({ "path": path })],
            })?;
        let caller = caller.ok_or_else(|| {
            ApiError::unauthorized("the client certificate names no SAE of this KME")
        })?;
        let method = request.method().clone();
        let body = match (&method, &call) {
            (&Method::GET, _) => None,
            (&Method::POST, Call::EncKeys(_) | Call::DecKeys(_)) => Some(read_body(request).await?),
            _ => {
                return Err(ApiError {
                    status: 405,
                    message: "method not allowed here".to_owned(),
                    details: vec![json!({ "method": method.as_str() })],
                });
            }
        };
        match call {
            Call::Status(slave) => {
                if !query.is_empty() {
                    return Err(ApiError::bad_request(
                        "Get status takes no parameters",
                        json!({ "query": query }),
                    ));
                }
                self.status(&caller, &self.peer_sae(slave, "slave_SAE_ID")?)
            }
            Call::EncKeys(slave) => {
                let slave = self.peer_sae(slave, "slave_SAE_ID")?;
                let request = match body {
                    Some(body) => parse::<KeyRequest>(&body)?,
                    None => KeyRequest::from_query(&query)?,
                };
                let (number, size) = request.checked(&self.limits)?;
                self.enc_keys(caller, slave, number, size).await
            }
            Call::DecKeys(master) => {
                let master = self.peer_sae(master, "master_SAE_ID")?;
                let ids = match body {
                    Some(body) => parse::<KeyIds>(&body)?,
                    None => KeyIds::from_query(&query)?,
                };
                let ids = ids.checked(&self.limits)?;
                self.dec_keys(&master, &caller, &ids)
            }
        }
    }

    /// `id` if it names an SAE of the peer KME.
    fn peer_sae(&self, id: &str, field: &str) -> Result<String, ApiError> {
        if self.peer_saes.iter().any(|s| s == id) {
            Ok(id.to_owned())
        } else {
            Err(ApiError::bad_request(
                &format!("{field} is not an SAE of the peer KME"),
                json!({ field: id }),
            ))
        }
    }

    /// Uncut bits both nodes hold.
    fn pool_bits(&self) -> Result<u64, ApiError> {
        let through = match self.side {
            Side::Sequencer => self.link.settled_through(),
            Side::Follower => self.store.settled_through().map_err(|e| store_error(&e))?,
        };
        match through {
            Some(through) => self.store.pool_bits(through).map_err(|e| store_error(&e)),
            None => Ok(0),
        }
    }

    fn status(&self, master: &str, slave: &str) -> Result<Value, ApiError> {
        let pair = Pair {
            kme: &self.kme_id,
            peer_kme: &self.peer_kme_id,
            master,
            slave,
        };
        let status = Status::of(pair, &self.limits, self.pool_bits()?);
        serde_json::to_value(status).map_err(|e| {
            ApiError::unavailable("encoding the status", json!({ "error": e.to_string() }))
        })
    }

    async fn enc_keys(
        &self,
        master: String,
        slave: String,
        number: u64,
        size: u64,
    ) -> Result<Value, ApiError> {
        let order = Order {
            master,
            slave,
            count: number as u32,
            bits: size,
        };
        match self.link.order(order).await {
            Ok(keys) => Ok(container(&keys)),
            Err(OrderFailure::NotEnough { available_bits }) => Err(ApiError::bad_request(
                "not enough key material in the KME for the request",
                json!({ "requested_bits": number * size, "available_bits": available_bits }),
            )),
            Err(e) => Err(ApiError::unavailable(
                "the KME cannot serve keys now",
                json!({ "reason": e.to_string() }),
            )),
        }
    }

    fn dec_keys(&self, master: &str, slave: &str, ids: &[String]) -> Result<Value, ApiError> {
        match self
            .store
            .deliver(master, slave, ids)
            .map_err(|e| store_error(&e))?
        {
            Ok(keys) => Ok(container(&keys)),
            Err(DeliveryRefusal::NotFound(id)) => Err(ApiError::bad_request(
                "one or more keys specified are not found on KME",
                json!({ "key_ID": id }),
            )),
            Err(DeliveryRefusal::NotYours(_)) => Err(ApiError::unauthorized(
                "a key asked for is not reserved for this SAE",
            )),
        }
    }
}

fn container(keys: &[ServedKey]) -> Value {
    let engine = base64::engine::general_purpose::STANDARD;
    let container = KeyContainer {
        keys: keys
            .iter()
            .map(|k| Key {
                key_ID: k.key_id.clone(),
                key: engine.encode(k.bytes.as_slice()),
            })
            .collect(),
    };
    json!(container)
}

fn store_error(e: &qkd_store::StoreFailure) -> ApiError {
    ApiError::unavailable(
        "the KME's key store failed",
        json!({ "reason": e.to_string() }),
    )
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let collected = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::bad_request(
                "the request body could not be read",
                json!({ "reason": e.to_string() }),
            )
        })?;
    Ok(collected.to_bytes())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "the request body is not a valid request of this method",
            json!({ "reason": e.to_string() }),
        )
    })
}
