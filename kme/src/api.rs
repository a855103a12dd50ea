//! ETSI GS QKD 014 v1.1.1 data formats (§6) and the checks the standard names for requests.
//! Field names are the standard's; a request with a field it does not define is refused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key sizes and counts a KME serves (bits; Status fields of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Default key size.
    pub key_size: u64,
    /// Smallest key served.
    pub min_key_size: u64,
    /// Largest key served.
    pub max_key_size: u64,
    /// Most keys in one request.
    pub max_key_per_request: u64,
    /// Most keys the pool reports holding.
    pub max_key_count: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_size: 256,
            min_key_size: 64,
            max_key_size: 8192,
            max_key_per_request: 128,
            max_key_count: 1_000_000,
        }
    }
}

/// Why a KME configuration's limits are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kme: {0}")]
pub struct LimitsError(&'static str);

impl Limits {
    /// Checks the limits are consistent.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let sizes = [self.key_size, self.min_key_size, self.max_key_size];
        if sizes.iter().any(|s| *s == 0 || !s.is_multiple_of(8)) {
            return Err(LimitsError(
                "key_size, min_key_size and max_key_size must be positive multiples of 8",
            ));
        }
        if !(self.min_key_size..=self.max_key_size).contains(&self.key_size) {
            return Err(LimitsError(
                "key_size must lie within [min_key_size, max_key_size]",
            ));
        }
        if self.max_key_size > MAX_KEY_SIZE {
            return Err(LimitsError("max_key_size may be at most 1048576 bits"));
        }
        if self.max_key_per_request == 0 || self.max_key_per_request > MAX_KEYS_PER_REQUEST {
            return Err(LimitsError(
                "max_key_per_request must lie within [1, 10000]",
            ));
        }
        Ok(())
    }
}

/// The largest key size a configuration may allow (bits): one request's keys stay in memory.
const MAX_KEY_SIZE: u64 = 1 << 20;
/// The most keys per request a configuration may allow.
const MAX_KEYS_PER_REQUEST: u64 = 10_000;

/// Status (§6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Status {
    /// This KME.
    pub source_KME_ID: String,
    /// The slave SAE's KME.
    pub target_KME_ID: String,
    /// The calling SAE.
    pub master_SAE_ID: String,
    /// The SAE named in the path.
    pub slave_SAE_ID: String,
    /// Default key size (bits).
    pub key_size: u64,
    /// Keys of the default size the pool can still give.
    pub stored_key_count: u64,
    /// Most keys the pool holds.
    pub max_key_count: u64,
    /// Most keys per request.
    pub max_key_per_request: u64,
    /// Largest key (bits).
    pub max_key_size: u64,
    /// Smallest key (bits).
    pub min_key_size: u64,
    /// Additional slave SAEs a request may name (none: no multicast).
    pub max_SAE_ID_count: u64,
}

/// The two KMEs and SAEs a status is about.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// This KME.
    pub kme: &'a str,
    /// The peer KME.
    pub peer_kme: &'a str,
    /// The asking SAE.
    pub master: &'a str,
    /// The SAE it names.
    pub slave: &'a str,
}

impl Status {
    /// The status of `pair` under `limits` with `pool_bits` uncut bits in the pool.
    pub fn of(pair: Pair<'_>, limits: &Limits, pool_bits: u64) -> Self {
        Status {
            source_KME_ID: pair.kme.to_owned(),
            target_KME_ID: pair.peer_kme.to_owned(),
            master_SAE_ID: pair.master.to_owned(),
            slave_SAE_ID: pair.slave.to_owned(),
            key_size: limits.key_size,
            stored_key_count: (pool_bits / limits.key_size).min(limits.max_key_count),
            max_key_count: limits.max_key_count,
            max_key_per_request: limits.max_key_per_request,
            max_key_size: limits.max_key_size,
            min_key_size: limits.min_key_size,
            max_SAE_ID_count: 0,
        }
    }
}

/// Key request (§6.2).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct KeyRequest {
    /// Number of keys (default 1).
    pub number: Option<u64>,
    /// Size of each key in bits (default `key_size`).
    pub size: Option<u64>,
    /// Further slaves (multicast).
    pub additional_slave_SAE_IDs: Option<Vec<String>>,
    /// Extensions the KME must support.
    pub extension_mandatory: Option<Vec<Value>>,
    /// Extensions the KME may ignore.
    pub extension_optional: Option<Vec<Value>>,
}

/// One key of a key container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Key {
    /// The key's ID (UUID).
    pub key_ID: String,
    /// The key, base64.
    pub key: String,
}

/// Key container (§6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyContainer {
    /// The keys.
    pub keys: Vec<Key>,
}

/// One entry of a key IDs request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct KeyIdEntry {
    /// The key's ID.
    pub key_ID: String,
    /// An extension (accepted, unused).
    pub key_ID_extension: Option<Value>,
}

/// Key IDs (§6.4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct KeyIds {
    /// The keys asked for.
    pub key_IDs: Vec<KeyIdEntry>,
    /// An extension (accepted, unused).
    pub key_IDs_extension: Option<Value>,
}

/// An answer other than 200: the status code and, except for 401, an Error body (§6.5).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status: 400, 401 or 503 (404/405 outside the API's paths and methods).
    pub status: u16,
    /// The Error's `message`.
    pub message: String,
    /// The Error's `details`.
    pub details: Vec<Value>,
}

impl ApiError {
    /// 400 with `message` and one detail.
    pub fn bad_request(message: &str, detail: Value) -> Self {
        ApiError {
            status: 400,
            message: message.to_owned(),
            details: vec![detail],
        }
    }

    /// 401.
    pub fn unauthorized(message: &str) -> Self {
        ApiError {
            status: 401,
            message: message.to_owned(),
            details: Vec::new(),
        }
    }

    /// 503 with `message`.
    pub fn unavailable(message: &str, detail: Value) -> Self {
        ApiError {
            status: 503,
            message: message.to_owned(),
            details: vec![detail],
        }
    }

    /// The Error body.
    pub fn body(&self) -> Value {
        let mut body = serde_json::json!({ "message": self.message });
        if !self.details.is_empty() {
            body["details"] = Value::Array(self.details.clone());
        }
        body
    }
}

impl KeyRequest {
    /// From a GET request's query (`number`, `size`; nothing else).
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        let mut request = KeyRequest::default();
        for (name, value) in pairs(query)? {
            let slot = match name.as_str() {
                "number" => &mut request.number,
                "size" => &mut request.size,
                _ => {
                    return Err(ApiError::bad_request(
                        "unknown query parameter",
                        serde_json::json!({ "parameter": name }),
                    ));
                }
            };
            let parsed = value.parse::<u64>().map_err(|_| {
                ApiError::bad_request(
                    "query parameter is not a non-negative integer",
                    serde_json::json!({ "parameter": name, "value": value }),
                )
            })?;
            if slot.replace(parsed).is_some() {
                return Err(ApiError::bad_request(
                    "query parameter given twice",
                    serde_json::json!({ "parameter": name }),
                ));
            }
        }
        Ok(request)
    }

    /// The number and size of keys asked for, checked as the standard says.
    pub fn checked(&self, limits: &Limits) -> Result<(u64, u64), ApiError> {
        if self
            .extension_mandatory
            .as_ref()
            .is_some_and(|e| !e.is_empty())
        {
            return Err(ApiError::bad_request(
                "not all extension_mandatory parameters are supported",
                serde_json::json!({ "extension_mandatory": self.extension_mandatory }),
            ));
        }
        if self
            .additional_slave_SAE_IDs
            .as_ref()
            .is_some_and(|ids| !ids.is_empty())
        {
            return Err(ApiError::bad_request(
                "additional_slave_SAE_IDs: this KME does not deliver to more than one slave SAE \
                 (max_SAE_ID_count is 0)",
                serde_json::json!({ "additional_slave_SAE_IDs": self.additional_slave_SAE_IDs }),
            ));
        }
        let number = self.number.unwrap_or(1);
        if number == 0 {
            return Err(ApiError::bad_request(
                "number shall be at least 1",
                serde_json::json!({ "number": number }),
            ));
        }
        if number > limits.max_key_per_request {
            return Err(ApiError::bad_request(
                "requested number of keys exceeds max_key_per_request",
                serde_json::json!({ "number": number, "max_key_per_request": limits.max_key_per_request }),
            ));
        }
        let size = self.size.unwrap_or(limits.key_size);
        if !size.is_multiple_of(8) {
            return Err(ApiError::bad_request(
                "size shall be a multiple of 8",
                serde_json::json!({ "size": size }),
            ));
        }
        if !(limits.min_key_size..=limits.max_key_size).contains(&size) {
            return Err(ApiError::bad_request(
                "size is out of the range [min_key_size, max_key_size]",
                serde_json::json!({
                    "size": size,
                    "min_key_size": limits.min_key_size,
                    "max_key_size": limits.max_key_size,
                }),
            ));
        }
        Ok((number, size))
    }
}

impl KeyIds {
    /// From a GET request's query (`key_ID`, once).
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        let mut id = None;
        for (name, value) in pairs(query)? {
            if name != "key_ID" {
                return Err(ApiError::bad_request(
                    "unknown query parameter",
                    serde_json::json!({ "parameter": name }),
                ));
            }
            if id.replace(value).is_some() {
                return Err(ApiError::bad_request(
                    "the GET form takes one key_ID; POST Key IDs for more",
                    serde_json::json!({ "parameter": "key_ID" }),
                ));
            }
        }
        let key_id = id.ok_or_else(|| {
            ApiError::bad_request(
                "key_ID is required",
                serde_json::json!({ "parameter": "key_ID" }),
            )
        })?;
        Ok(KeyIds {
            key_IDs: vec![KeyIdEntry {
                key_ID: key_id,
                key_ID_extension: None,
            }],
            key_IDs_extension: None,
        })
    }

    /// The IDs asked for, checked against the limits.
    pub fn checked(&self, limits: &Limits) -> Result<Vec<String>, ApiError> {
        if self.key_IDs.is_empty() {
            return Err(ApiError::bad_request(
                "key_IDs is empty",
                serde_json::json!({ "key_IDs": [] }),
            ));
        }
        if self.key_IDs.len() as u64 > limits.max_key_per_request {
            return Err(ApiError::bad_request(
                "requested number of keys exceeds max_key_per_request",
                serde_json::json!({ "number": self.key_IDs.len(), "max_key_per_request": limits.max_key_per_request }),
            ));
        }
        let mut ids: Vec<String> = self.key_IDs.iter().map(|k| k.key_ID.clone()).collect();
        let count = ids.len();
        ids.sort();
        ids.dedup();
        if ids.len() != count {
            return Err(ApiError::bad_request(
                "a key_ID is asked for twice",
                serde_json::json!({ "key_IDs": count }),
            ));
        }
        Ok(self.key_IDs.iter().map(|k| k.key_ID.clone()).collect())
    }
}

/// A query's `name=value` pairs, percent-decoded.
fn pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Percent-decoding (and `+` as space) of a query component.
fn decode(text: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "the query is not valid percent-encoded UTF-8",
            serde_json::json!({ "query": text }),
        )
    };
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'%' => {
                let hex = rest.get(..2).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                rest = &rest[2..];
            }
            b'+' => bytes.push(b' '),
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_and_the_standards_refusals() {
        let limits = Limits::default();
        assert_eq!(KeyRequest::default().checked(&limits), Ok((1, 256)));
        let size = |s| KeyRequest {
            size: Some(s),
            ..KeyRequest::default()
        };
        assert_eq!(
            size(100).checked(&limits).unwrap_err().message,
            "size shall be a multiple of 8"
        );
        assert_eq!(size(8).checked(&limits).unwrap_err().status, 400);
        assert_eq!(size(1024).checked(&limits), Ok((1, 1024)));
        let many = KeyRequest {
            number: Some(129),
            ..KeyRequest::default()
        };
        assert!(
            many.checked(&limits)
                .unwrap_err()
                .message
                .contains("max_key_per_request")
        );
        let extension = KeyRequest {
            extension_mandatory: Some(vec![serde_json::json!({"abc_route_type": "direct"})]),
            ..KeyRequest::default()
        };
        assert_eq!(
            extension.checked(&limits).unwrap_err().message,
            "not all extension_mandatory parameters are supported"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<KeyRequest>(r#"{"number": 1, "colour": "red"}"#).is_err());
        assert!(serde_json::from_str::<KeyIds>(r#"{"key_IDs": [], "x": 1}"#).is_err());
        assert!(
            serde_json::from_str::<KeyIds>(r#"{"key_IDs": [{"key_ID": "a", "y": 2}]}"#).is_err()
        );
        assert!(KeyRequest::from_query("number=1&colour=red").is_err());
        assert!(KeyIds::from_query("key_ID=a&key_ID=b").is_err());
    }

    #[test]
    fn queries_decode() {
        let request = KeyRequest::from_query("number=3&size=512").unwrap();
        assert_eq!((request.number, request.size), (Some(3), Some(512)));
        let ids = KeyIds::from_query("key_ID=bc490419-7d60-487f-adc1-4ddcc177c139").unwrap();
        assert_eq!(
            ids.key_IDs[0].key_ID,
            "bc490419-7d60-487f-adc1-4ddcc177c139"
        );
        assert_eq!(
            KeyIds::from_query("key_ID=a%2Db").unwrap().key_IDs[0].key_ID,
            "a-b"
        );
        assert!(KeyIds::from_query("key_ID=%zz").is_err());
        assert!(KeyIds::from_query("key_ID=%").is_err());
        assert!(KeyRequest::from_query("number=-1").is_err());
    }

    proptest! {
        #[test]
        fn any_query_is_an_answer_not_a_panic(query in ".{0,80}") {
            let _ = KeyRequest::from_query(&query);
            let _ = KeyIds::from_query(&query);
        }
    }
}
