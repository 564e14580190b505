//! Scale-out: stage 1 publishes to a repartition topic keyed by node; stage 2 reads it.
//!
//! ```text
//!  instance A                               repartition topic                instance B
//!  input partitions ─▶ Aggregate ─┬─ pair (a→b) ─▶ partition_of("a") ──▶ Judge (owns "a")
//!                                 ├─ pair (a→b) ─▶ partition_of("b") ──▶ Judge (owns "b")
//!                                 └─ mark ──────▶ every partition
//! ```
//!
//! - A **pair** message carries one pair's mergeable aggregates in one window, as its input
//!   (the producer) saw it: counts, sums, the serialized HDR histogram, the concurrency
//!   slots — not quantiles. It goes to its source node's partition and to its destination
//!   node's partition (once when they are the same), keyed by that node, so each node's judge
//!   gets all of the node's inflow and outflow.
//! - A **mark** carries an input's watermark and whether it is idle, to every partition: a
//!   judge closes a window when every input that is not idle has passed it.
//! - An **approve** carries an operator's approval (`POST /admin/approve`) that the instance
//!   taking it could not apply (no judge of its holds the command), to every partition: the
//!   judge holding the proposed command enforces it, in order with its windows.
//!
//! Value: a format byte ([`FORMAT`]), then MessagePack of [`Message`]. Stage 2's state for a
//! repartition partition (merger, baselines, commands in force, open incidents) is published to
//! the **state topic**'s partition of the same number, with the repartition offset it covers,
//! so that a partition that moves to another instance takes its state along.

use std::sync::Arc;

use detect::merge::Mark;
use detect::pair::{PairStateData, PartialWindow};
use schemas::Window;
use serde::{Deserialize, Serialize};

use super::outputs::{KafkaOutputError, KafkaOutputs};
use crate::pipeline::judge::{JudgeState, partition_of};
use crate::pipeline::{DeadLetter, Exchange, InputId, Outputs};

/// The format byte that starts every repartition and state message.
pub const FORMAT: u8 = 1;

/// A repartition message (see the [module docs](self)).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    /// One pair of one input's window.
    Pair {
        /// The input (producer), `<topic>/<partition>`.
        producer: String,
        /// The window.
        window: Window,
        /// Calling service.
        source: String,
        /// Called service.
        destination: String,
        /// Its aggregates.
        state: PairStateData,
    },
    /// An input's progress.
    Mark {
        /// The input, `<topic>/<partition>`.
        producer: String,
        /// Its watermark and idleness.
        mark: Mark,
    },
    /// An operator's approval of the proposed command `id`, taken by an instance none of
    /// whose judges holds the command, to every partition: the judge holding it enforces it.
    Approve {
        /// The command's id.
        id: String,
        /// The revision approved, when the operator named it.
        revision: Option<u32>,
        /// The instance whose admin endpoint took the approval.
        from: String,
    },
}

/// Encodes a message (or a state) with the format byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    rmp_serde::encode::write(&mut out, value).expect("plain data encodes");
    out
}

/// Encodes a state with the format byte, its fields by name (schemas' documents skip absent
/// optional fields, which by position would shift the next field into their place); decoded
/// by [`decode`] as a message is.
pub fn encode_named<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    rmp_serde::encode::write_named(&mut out, value).expect("plain data encodes");
    out
}

/// Decodes what [`encode`] or [`encode_named`] made.
///
/// # Errors
/// Another format byte, or bytes that do not decode.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => rmp_serde::from_slice(rest).map_err(|e| e.to_string()),
        Some((f, _)) => Err(format!("format {f}, this graywatch reads format {FORMAT}")),
        None => Err("empty message".into()),
    }
}

/// Stage 2's state for one repartition partition, as the state topic holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionState {
    /// The repartition offset it covers: the next one to read.
    pub position: i64,
    /// The judge.
    pub judge: JudgeState,
}

/// [`Exchange`] of stage 1 onto the repartition topic.
pub struct TopicExchange<'a> {
    /// Producer and dead letters.
    pub out: &'a mut KafkaOutputs,
    /// The repartition topic.
    pub topic: &'a Arc<str>,
    /// Its partition count.
    pub partitions: i32,
}

impl Exchange for TopicExchange<'_> {
    type Error = KafkaOutputError;

    fn partial_window(
        &mut self,
        from: &InputId,
        partial: PartialWindow,
    ) -> Result<(), Self::Error> {
        for p in partial.pairs {
            let message = encode(&Message::Pair {
                producer: from.to_string(),
                window: partial.window,
                source: p.source.to_string(),
                destination: p.destination.to_string(),
                state: p.state.to_data(),
            });
            let s = partition_of(p.source.as_bytes(), self.partitions);
            let d = partition_of(p.destination.as_bytes(), self.partitions);
            self.out.send(
                self.topic,
                Some(p.source.as_bytes()),
                Some(s),
                &message,
                None,
            )?;
            if d != s {
                self.out.send(
                    self.topic,
                    Some(p.destination.as_bytes()),
                    Some(d),
                    &message,
                    None,
                )?;
            }
        }
        Ok(())
    }

    fn mark(&mut self, from: &InputId, mark: Mark) -> Result<(), Self::Error> {
        let message = encode(&Message::Mark {
            producer: from.to_string(),
            mark,
        });
        for p in 0..self.partitions {
            self.out.send(
                self.topic,
                Some(from.as_str().as_bytes()),
                Some(p),
                &message,
                None,
            )?;
        }
        Ok(())
    }

    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), Self::Error> {
        self.out.dead_letter(d)
    }
}

/// Sends an operator's approval of `id` to every partition of `topic` (`partitions`):
/// [`Message::Approve`].
///
/// # Errors
/// The producer's.
pub fn forward_approval(
    out: &mut KafkaOutputs,
    topic: &str,
    partitions: i32,
    id: &str,
    revision: Option<u32>,
    from: &str,
) -> Result<(), KafkaOutputError> {
    let message = encode(&Message::Approve {
        id: id.to_owned(),
        revision,
        from: from.to_owned(),
    });
    for p in 0..partitions {
        out.send(topic, Some(id.as_bytes()), Some(p), &message, None)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_other_formats_are_refused() {
        let m = Message::Mark {
            producer: "access-logs/3".into(),
            mark: Mark {
                watermark_us: Some(1_714_521_600_000_000),
                idle: true,
            },
        };
        let bytes = encode(&m);
        assert_eq!(bytes[0], FORMAT);
        match decode::<Message>(&bytes).unwrap() {
            Message::Mark { producer, mark } => {
                assert_eq!(producer, "access-logs/3");
                assert_eq!(mark.watermark_us, Some(1_714_521_600_000_000));
                assert!(mark.idle);
            }
            other => panic!("{other:?}"),
        }
        let mut other = bytes.clone();
        other[0] = 7;
        assert_eq!(
            decode::<Message>(&other).unwrap_err(),
            "format 7, this graywatch reads format 1"
        );
        assert!(decode::<Message>(&[]).is_err());
    }
}
