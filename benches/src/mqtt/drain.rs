//! The offline drain through mosquitto: N messages queued for a persistent session that
//! subscribed once and disconnected, then the time until it has them all after it
//! reconnects.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rumqttc::{Event, EventLoop, Outgoing, Packet, QoS};
use tokio::time::Instant;

use super::DRAIN_IDLE_TIMEOUT;
use super::broker::{Mosquitto, MqttTransport};
use super::client::Endpoint;
use super::summary::{DrainSummary, DrainTally};
use crate::load::cpu::{CpuMeter, Process};
use crate::load::message::Header;

/// Bound on each phase (subscribe, queue, drain), so a broken broker cannot hang a run.
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

const RECIPIENT: &str = "drain-recipient";
const SENDER: &str = "drain-sender";

/// Queues `messages` of `size` bytes for an offline subscriber, reconnects it, and times
/// the drain.
pub async fn run(
    broker: &Mosquitto,
    transport: MqttTransport,
    messages: u64,
    size: usize,
    inflight: u16,
) -> Result<DrainSummary> {
    let endpoint = Endpoint::new(broker, transport, inflight)?;
    let topic = format!("u/{RECIPIENT}");

    // 1. The recipient's persistent session subscribes once, then goes offline.
    let (client, mut eventloop) = endpoint.client(RECIPIENT);
    client.subscribe(topic.as_str(), QoS::AtLeastOnce).await?;
    timed("subscribing", async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        client.disconnect().await?;
        until_disconnected(&mut eventloop).await
    })
    .await?;

    // 2. The sender publishes everything at QoS 1 and waits for every PUBACK.
    let queue_started = Instant::now();
    let (client, mut eventloop) = endpoint.client(SENDER);
    let publisher = tokio::spawn({
        let client = client.clone();
        let topic = topic.clone();
        async move {
            for seq in 0..messages {
                let header = Header {
                    pair: 0,
                    seq,
                    intended_ns: 0,
                    actual_ns: 0,
                };
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, header.encode(size))
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    timed("queueing", async {
        let mut acknowledged = 0;
        while acknowledged < messages {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                acknowledged += 1;
            }
        }
        client.disconnect().await?;
        until_disconnected(&mut eventloop).await
    })
    .await?;
    publisher.await??;
    let queue_secs = queue_started.elapsed().as_secs_f64();

    // 3. The recipient comes back; the clock runs until it holds every message.
    let meter = CpuMeter::new(vec![Process::Pid(broker.pid())]);
    let cpu_before = meter.sample()?;
    let started = Instant::now();
    let (client, mut eventloop) = endpoint.client(RECIPIENT);
    let mut summary = DrainSummary {
        system: transport.name().into(),
        messages,
        queue_secs,
        ..DrainSummary::default()
    };
    let mut tally = DrainTally::new(started.into_std());
    timed("draining", async {
        while summary.received < messages {
            // Cancelling a poll mid-way is harmless here: the client is abandoned after.
            let Ok(event) = tokio::time::timeout(DRAIN_IDLE_TIMEOUT, eventloop.poll()).await else {
                break;
            };
            match event? {
                Event::Incoming(Packet::ConnAck(connack)) => {
                    summary.connect_ms = started.elapsed().as_secs_f64() * 1e3;
                    if !connack.session_present {
                        bail!("mosquitto lost the recipient's persistent session");
                    }
                }
                Event::Incoming(Packet::Publish(publish)) => {
                    let Some(stamp) = std::str::from_utf8(&publish.payload)
                        .ok()
                        .and_then(Header::decode)
                    else {
                        continue;
                    };
                    tally.message(stamp.seq, &mut summary);
                }
                _ => {}
            }
        }
        Ok(())
    })
    .await?;
    tally.finish(&mut summary);
    let cpu = meter.sample()?.since(&cpu_before);
    summary.server_cpu_ms = Some(cpu.server.as_secs_f64() * 1e3);
    summary.client_cpu_ms = Some(cpu.load_generator.as_secs_f64() * 1e3);
    // Best effort: the figures are taken; a slow goodbye changes nothing.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        client.disconnect().await?;
        until_disconnected(&mut eventloop).await
    })
    .await;
    summary.settle(&meter, &cpu_before).await?;
    Ok(summary)
}

/// Polls until our `DISCONNECT` has been written.
async fn until_disconnected(eventloop: &mut EventLoop) -> Result<()> {
    loop {
        if let Event::Outgoing(Outgoing::Disconnect) = eventloop.poll().await? {
            return Ok(());
        }
    }
}

/// Runs one phase within [`PHASE_TIMEOUT`].
async fn timed<T>(phase: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(PHASE_TIMEOUT, work)
        .await
        .with_context(|| format!("mosquitto drain: {phase} took over {PHASE_TIMEOUT:?}"))?
        .with_context(|| format!("mosquitto drain: {phase}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::BrokerOptions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offline_persistent_session_gets_its_whole_backlog_once_in_order() {
        // What the drain times must be the whole backlog, delivered to the session that
        // subscribed before going offline.
        let broker = Mosquitto::start(&BrokerOptions::default()).unwrap();
        let summary = run(&broker, MqttTransport::Tls, 300, 64, 100)
            .await
            .unwrap();
        assert!(summary.is_clean(), "{summary:?}");
        assert_eq!(summary.received, 300);
        summary.assert_timeline_and_cpu();
    }
}
