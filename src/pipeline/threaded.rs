//! Stage 2 on a thread of its own: an [`Exchange`] that sends stage 1's output through a
//! bounded channel, in the order stage 1 made it, to a judging thread that owns the [`Judge`]
//! and the [`Outputs`] ([`judge_thread`]).
//!
//! `replay -jN` uses it for regular files: closing a window (merging, detection, writing) then
//! runs beside the thread that aggregates, instead of stopping it. The judge sees the same
//! items in the same order as through [`super::local::Local`], so the output is the same.
//! Items cross in batches (a window's mark is a few bytes, and waking the judging thread for
//! each cost more than judging it: NGINX logs with a window every few lines ran 60 % slower);
//! the channel holds [`QUEUE`] batches: when the judge falls behind, stage 1 waits (memory
//! stays bounded).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use detect::merge::Mark;
use detect::pair::PartialWindow;
use schemas::FlowRecord;

use super::{DeadLetter, Exchange, InputId, Judge, JudgeItem, Outputs, Payload, Stage, StageError};

/// Batches in the channel at most.
pub const QUEUE: usize = 4;

/// A batch goes when it holds this many items...
const BATCH_ITEMS: usize = 512;

/// ...or partial windows of this many pairs in all (a partial window holds every pair of one
/// input's window: 100 k at scale).
const BATCH_PAIRS: usize = 16_384;

/// What stage 1 sends the judging thread.
#[derive(Debug)]
enum ToJudge {
    Partial(InputId, PartialWindow),
    Mark(InputId, Mark),
    DeadLetter(Box<OwnedDeadLetter>),
    /// Every input has ended: close every window still open, then stop.
    End,
}

/// A [`DeadLetter`] that owns its parts, to cross to the judging thread.
#[derive(Debug)]
struct OwnedDeadLetter {
    input: InputId,
    position: Option<i64>,
    reason: String,
    detail: String,
    payload: OwnedPayload,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
enum OwnedPayload {
    Bytes(Vec<u8>),
    Record(Box<FlowRecord>),
}

impl OwnedDeadLetter {
    fn of(d: &DeadLetter<'_>) -> Self {
        OwnedDeadLetter {
            input: d.input.clone(),
            position: d.position,
            reason: d.reason.to_owned(),
            detail: d.detail.to_owned(),
            payload: match d.payload {
                Payload::Bytes(b) => OwnedPayload::Bytes(b.to_vec()),
                Payload::Record(r) => OwnedPayload::Record(Box::new(r.clone())),
            },
            key: d.key.map(<[u8]>::to_vec),
            headers: d
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
        }
    }

    fn send<O: Outputs + ?Sized>(&self, out: &mut O) -> Result<(), O::Error> {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        out.dead_letter(&DeadLetter {
            input: &self.input,
            position: self.position,
            reason: &self.reason,
            detail: &self.detail,
            payload: match &self.payload {
                OwnedPayload::Bytes(b) => Payload::Bytes(b),
                OwnedPayload::Record(r) => Payload::Record(r),
            },
            key: self.key.as_deref(),
            headers: &headers,
        })
    }
}

/// The judging thread has stopped: its own result says why (see [`judge_thread`]).
#[derive(Debug, thiserror::Error)]
#[error("the judging thread has stopped")]
pub struct JudgeStopped;

/// Stage 1's end of the channel.
#[derive(Debug)]
pub struct ToThread {
    tx: SyncSender<Vec<ToJudge>>,
    batch: Vec<ToJudge>,
    /// Pairs of the partial windows in `batch`.
    pairs: usize,
}

/// The judging thread's end of the channel.
#[derive(Debug)]
pub struct FromStage1 {
    rx: Receiver<Vec<ToJudge>>,
}

/// A channel from stage 1 to a judging thread.
pub fn channel() -> (ToThread, FromStage1) {
    let (tx, rx) = sync_channel(QUEUE);
    (
        ToThread {
            tx,
            batch: Vec::new(),
            pairs: 0,
        },
        FromStage1 { rx },
    )
}

impl ToThread {
    /// Tells the judging thread that every input has ended: it closes every window still
    /// open (as [`super::local::Pipeline::flush`]) and returns.
    ///
    /// # Errors
    /// [`JudgeStopped`].
    pub fn end(mut self) -> Result<(), JudgeStopped> {
        self.batch.push(ToJudge::End);
        self.send_batch()
    }

    fn push(&mut self, item: ToJudge, pairs: usize) -> Result<(), JudgeStopped> {
        self.batch.push(item);
        self.pairs += pairs;
        if self.batch.len() >= BATCH_ITEMS || self.pairs >= BATCH_PAIRS {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<(), JudgeStopped> {
        self.pairs = 0;
        let batch = std::mem::take(&mut self.batch);
        self.tx.send(batch).map_err(|_| JudgeStopped)
    }
}

impl Exchange for ToThread {
    type Error = JudgeStopped;

    fn partial_window(
        &mut self,
        from: &InputId,
        partial: PartialWindow,
    ) -> Result<(), JudgeStopped> {
        let pairs = partial.pairs.len();
        self.push(ToJudge::Partial(from.clone(), partial), pairs)
    }

    fn mark(&mut self, from: &InputId, mark: Mark) -> Result<(), JudgeStopped> {
        self.push(ToJudge::Mark(from.clone(), mark), 0)
    }

    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), JudgeStopped> {
        self.push(ToJudge::DeadLetter(Box::new(OwnedDeadLetter::of(d))), 0)
    }
}

/// The judging thread's work: every item into `judge`, which writes to `out`, until stage 1
/// says the inputs ended ([`ToThread::end`]: every open window is then closed) or drops its
/// end of the channel (a failure on its side: nothing more is closed).
///
/// # Errors
/// The judge's or the output's; stage 1's next send then fails with [`JudgeStopped`].
pub fn judge_thread<O: Outputs + ?Sized>(
    judge: &mut Judge,
    out: &mut O,
    from: FromStage1,
) -> Result<(), StageError<O::Error>> {
    for batch in from.rx {
        for item in batch {
            match item {
                ToJudge::Partial(input, p) => {
                    judge.process(&input, JudgeItem::Partial(p), out)?;
                }
                ToJudge::Mark(input, m) => judge.process(&input, JudgeItem::Mark(m), out)?,
                ToJudge::DeadLetter(d) => d.send(out).map_err(StageError::Output)?,
                ToJudge::End => return judge.flush(out),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_crosses_whole() {
        struct Kept(Vec<String>);
        impl Outputs for Kept {
            type Error = std::io::Error;
            fn pair_window(&mut self, _: &schemas::PairWindow) -> Result<(), Self::Error> {
                Ok(())
            }
            fn node_window(&mut self, _: &schemas::NodeWindow) -> Result<(), Self::Error> {
                Ok(())
            }
            fn finding(&mut self, _: &schemas::Finding) -> Result<(), Self::Error> {
                Ok(())
            }
            fn command(&mut self, _: &schemas::RemediationCommand) -> Result<(), Self::Error> {
                Ok(())
            }
            fn alert(&mut self, _: &schemas::Alert) -> Result<(), Self::Error> {
                Ok(())
            }
            fn audit(&mut self, _: &schemas::AuditRecord) -> Result<(), Self::Error> {
                Ok(())
            }
            fn flush(&mut self) -> Result<(), Self::Error> {
                Ok(())
            }
            fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), Self::Error> {
                let Payload::Bytes(b) = d.payload else {
                    panic!("bytes were sent")
                };
                self.0.push(format!(
                    "{} {:?} {} {} {} {:?} {:?}",
                    d.input,
                    d.position,
                    d.reason,
                    d.detail,
                    String::from_utf8_lossy(b),
                    d.key,
                    d.headers
                ));
                Ok(())
            }
        }
        let input = InputId::new("access.log");
        let headers: [(&str, &[u8]); 1] = [("graywatch-service", b"cart")];
        let d = DeadLetter {
            input: &input,
            position: Some(17),
            reason: "malformed",
            detail: "no status",
            payload: Payload::Bytes(b"GET / HTTP/1.1"),
            key: Some(b"k"),
            headers: &headers,
        };
        let mut out = Kept(Vec::new());
        OwnedDeadLetter::of(&d).send(&mut out).unwrap();
        assert_eq!(
            out.0,
            [
                "access.log Some(17) malformed no status GET / HTTP/1.1 Some([107]) \
                 [(\"graywatch-service\", [99, 97, 114, 116])]"
            ]
        );
    }
}
