//! Event streams are bounded (SECURITY.md, "The HTTP API"): a client (an IP address) holds at
//! most `--max-streams-per-client` open streams, and a stream that falls behind the server's
//! events ends with an `error` event instead of silently skipping what it missed (a run's stream
//! that skipped its `finished` event would never end).

use crate::error::ServerError;
use crate::server::StreamEvent;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// Open streams per client.
#[derive(Debug)]
pub struct StreamSlots {
    per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open stream; its slot is given back when dropped (the stream ended or the client left).
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    client: IpAddr,
}

impl StreamSlots {
    pub fn new(per_client: usize) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            per_client,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `client`, or 429 when it holds `per_client` streams already.
    pub fn take(self: &Arc<Self>, client: IpAddr) -> Result<StreamSlot, ServerError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.per_client {
            return Err(ServerError::TooMany(format!(
                "{client} already has {n} event streams open (--max-streams-per-client); close \
                 one first"
            )));
        }
        *n += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            client,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// What a live stream yields: an event, or that it fell `n` events behind (and ends).
pub enum Live {
    Event(StreamEvent),
    Lagged(u64),
}

/// The server's events as [`Live`] items, ending after the first lag; `slot` is held until the
/// stream ends.
pub fn live(
    events: BroadcastStream<StreamEvent>,
    slot: StreamSlot,
) -> impl Stream<Item = Live> + Send + 'static {
    futures::stream::unfold(
        (Box::pin(events), Some(slot)),
        |(mut events, slot)| async move {
            let slot = slot?;
            match events.next().await? {
                Ok(e) => Some((Live::Event(e), (events, Some(slot)))),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    drop(slot);
                    Some((Live::Lagged(n), (events, None)))
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_streams_and_gets_them_back() {
        let slots = StreamSlots::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = slots.take(ip).unwrap();
        let _b = slots.take(ip).unwrap();
        let e = slots.take(ip).unwrap_err();
        assert_eq!(e.status(), 429);
        assert!(slots.take("10.0.0.1".parse().unwrap()).is_ok());
        drop(a);
        assert!(slots.take(ip).is_ok());
    }

    #[tokio::test]
    async fn a_lagging_stream_says_so_and_ends() {
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        let slots = StreamSlots::new(1);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let stream = live(BroadcastStream::new(rx), slots.take(ip).unwrap());
        for i in 0..5 {
            tx.send(StreamEvent {
                run: i,
                at_ms: 0,
                event: crate::events::RunEventBody::Progress(Default::default()),
            })
            .unwrap();
        }
        drop(tx);
        let items: Vec<Live> = stream.collect().await;
        assert!(matches!(items[0], Live::Lagged(3)));
        assert_eq!(items.len(), 1, "the stream ends at the lag");
        assert!(slots.take(ip).is_ok(), "the slot came back");
    }
}
