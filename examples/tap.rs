//! Print every message published to an exchange, decoded. Binds a private queue.
//!
//! `cargo run --example tap -- [--url rabbit://...] [--exchange nova] [--key '#']`
//! Replies go to the default exchange, which cannot be bound: for them run
//! `rabbitmqctl trace_on` and tap `--exchange amq.rabbitmq.trace --key 'publish.#'`.

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = support::Args::parse()?;
    let url = corral::rpc::TransportUrl::parse(
        args.get("url")
            .unwrap_or("rabbit://guest:guest@127.0.0.1:5672/"),
    )?;
    let b = url
        .brokers()
        .into_iter()
        .next()
        .ok_or("no broker in the url")?;
    let vhost: String =
        percent_encoding::utf8_percent_encode(url.vhost(), percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let amqp = format!(
        "amqp://{}:{}@{}:{}/{vhost}",
        b.username, b.password, b.host, b.port
    );
    let conn = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let exchange = args.get("exchange").unwrap_or("nova");
    let key = args.get("key").unwrap_or("#");
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    eprintln!("tapping exchange '{exchange}' key '{key}'");
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    while let Some(d) = consumer.next().await {
        let d = d?;
        println!(
            "--- exchange '{}' routing key '{}' properties {:?}\n{}",
            d.exchange,
            d.routing_key,
            d.properties,
            support::describe(&d.data)
        );
    }
    Ok(())
}
