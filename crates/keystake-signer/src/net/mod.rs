//! Network adapters: the mutual-TLS listener and its accept loop (`listen`), rustls set-up and
//! client identities (`tls`), the REST API (`rest`), gRPC (`grpc`), Prometheus (`metrics`),
//! certificates and PKCS#12 identities (`pki`), the mTLS HTTP client (`client`), and the one
//! mapping of every layer's errors to HTTP statuses and gRPC codes (`error`).
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod grpc;
pub mod listen;
pub mod metrics;
pub mod pinned;
pub mod pki;
pub mod rest;
pub mod tls;
