//! Where payloads come from: the HTTP ingest endpoint, Event Hubs (through its Kafka endpoint or
//! over AMQP, behind one stream contract), and pollers of the Microsoft APIs. Inputs hand payloads to the [`crate::pipeline::Pipeline`] and
//! acknowledge their source only once it answered.

pub mod amqp;
pub mod api;
pub mod auth;
pub mod checkpoint;
pub mod http;
pub mod kafka;
pub mod kafka_oauth;
pub mod poller;
pub mod server;
pub mod stream;
pub mod tls;
