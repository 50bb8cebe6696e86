//! An idempotent producer whose sends can be waited for one by one: the
//! dead-letter path and the non-transactional egress must know a record is
//! acknowledged (`acks=all`) before they move on.

use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a send waits for room in librdkafka's local queue
/// (`queue.buffering.max.messages`) before it gives up.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between attempts to enqueue into a full local queue.
const ENQUEUE_RETRY: Duration = Duration::from_millis(10);

/// Routes each record's delivery report to the sender that waits for it.
pub struct Acks;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<mpsc::SyncSender<Result<(i32, i64), String>>>;

    fn delivery(&self, r: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(match r {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

/// The producer type: librdkafka's own thread serves delivery reports.
pub type Producer = ThreadedProducer<Acks>;

/// An idempotent producer (`enable.idempotence=true`, `acks=all`) on
/// `base`, transactional if `transactional_id` is given.
pub fn create(mut base: ClientConfig, transactional_id: Option<&str>) -> Result<Producer, String> {
    base.set("enable.idempotence", "true").set("acks", "all");
    if let Some(id) = transactional_id {
        base.set("transactional.id", id);
    }
    base.create_with_context(Acks)
        .map_err(|e: KafkaError| format!("creating a Kafka producer: {e}"))
}

/// A record handed to librdkafka, not yet acknowledged.
pub struct Pending(mpsc::Receiver<Result<(i32, i64), String>>);

impl Pending {
    /// Waits for the broker's acknowledgement: the record's
    /// `(partition, offset)`, or why it failed.
    pub fn wait(self, timeout: Duration) -> Result<(i32, i64), String> {
        match self.0.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("no acknowledgement within {timeout:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("the producer stopped before acknowledging".into())
            }
        }
    }
}

/// Hands one record to `p`, waiting (at most [`ENQUEUE_TIMEOUT`]) while
/// the local queue is full.
pub fn send(
    p: &Producer,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: OwnedHeaders,
) -> Result<Pending, String> {
    let (tx, rx) = mpsc::sync_channel(1);
    let mut opaque = Box::new(tx);
    let mut headers = Some(headers);
    let deadline = Instant::now() + ENQUEUE_TIMEOUT;
    loop {
        let mut r: BaseRecord<'_, [u8], [u8], _> =
            BaseRecord::with_opaque_to(topic, opaque).headers(headers.take().expect("kept"));
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(v) = payload {
            r = r.payload(v);
        }
        match p.send(r) {
            Ok(()) => return Ok(Pending(rx)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if Instant::now() < deadline =>
            {
                opaque = back.delivery_opaque;
                headers = back.headers;
                std::thread::sleep(ENQUEUE_RETRY);
            }
            Err((e, _)) => return Err(format!("producing to {topic}: {e}")),
        }
    }
}
