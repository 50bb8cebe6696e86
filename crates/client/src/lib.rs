//! Synod's client side: the HTTP/JSON wire types ([`wire`]) and a small
//! blocking HTTP/1.1 client.
#![deny(missing_docs)]

pub mod wire;
