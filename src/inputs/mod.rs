//! Where payloads come from: the HTTP ingest endpoint, the Event Hubs Kafka endpoint, and
//! pollers of the Microsoft APIs. Inputs hand payloads to the [`crate::pipeline::Pipeline`] and
//! acknowledge their source only once it answered.

pub mod api;
pub mod auth;
pub mod checkpoint;
pub mod http;
pub mod kafka;
pub mod poller;
pub mod tls;
