//! librdkafka client configuration shared by every producer and consumer.

use rdkafka::ClientConfig;
use std::collections::BTreeMap;

/// Properties Synod sets itself for correctness; a user's passthrough
/// property with one of these names is refused rather than silently
/// weakening a guarantee.
pub const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "isolation.level",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "transactional.id",
    "group.id",
];

/// A property the user may not set (see [`RESERVED`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedProperty(pub String);

impl std::fmt::Display for ReservedProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kafka.properties.{}: set by Synod itself and cannot be overridden",
            self.0
        )
    }
}

impl std::error::Error for ReservedProperty {}

/// A client config with `bootstrap.servers = brokers` and the user's
/// passthrough properties.
pub fn base(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
) -> Result<ClientConfig, ReservedProperty> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in passthrough {
        if RESERVED.contains(&k.as_str()) {
            return Err(ReservedProperty(k.clone()));
        }
        c.set(k, v);
    }
    Ok(c)
}

/// Sets `key` unless the user's passthrough properties already did: for
/// Synod's defaults that a user may tune (unlike [`RESERVED`] ones).
pub fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_properties_reach_the_config_and_reserved_ones_are_refused() {
        let mut p = BTreeMap::new();
        p.insert("security.protocol".to_string(), "SASL_SSL".to_string());
        let c = base("b:9092", &p).unwrap();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        p.insert("acks".to_string(), "1".to_string());
        assert_eq!(
            base("b:9092", &p).unwrap_err(),
            ReservedProperty("acks".into())
        );
    }
}
