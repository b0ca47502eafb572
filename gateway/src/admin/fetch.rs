//! `all_sockets` across the fleet: the adapter's fetchSockets request
//! (REMOTE_FETCH on `<key>-request#<nsp>#`), answered on
//! `<key>-response#<nsp>#` by every other gateway and every Node server on
//! the same Redis, as `nsp.fetchSockets()` does in Node. The number of
//! answers to wait for is the number of subscribers of the request channel
//! (`PUBSUB NUMSUB`) minus this gateway, bounded by a timeout.

use std::{collections::HashMap, time::Duration};

use parking_lot::Mutex;
use serde_json::Value;
use switchboard_wire::{Request, RequestOpts, Response, decode_response, encode_request};
use tokio::sync::mpsc;

use super::serialize;
use crate::socketio::SocketIo;

/// How long `all_sockets` waits for the other servers (the adapter's own
/// default is 5 s; the UI is waiting for a first picture).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// fetchSockets requests this gateway is waiting answers for.
#[derive(Default)]
pub struct Fetches {
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Vec<Value>>>>,
}

impl Fetches {
    /// A message on a response channel: an answer to one of ours, or not.
    pub fn on_response(&self, nsp: &str, payload: &[u8]) {
        if self.pending.lock().is_empty() {
            return;
        }
        let Ok(Response::FetchSockets {
            request_id,
            sockets,
        }) = decode_response(payload)
        else {
            return;
        };
        if let Some(tx) = self.pending.lock().get(&request_id) {
            let _ = tx.send(sockets.iter().map(|s| serialize::fetched(s, nsp)).collect());
        }
    }

    /// The sockets of `nsp` on every other server, serialized for the UI.
    pub async fn remote_sockets(&self, io: &SocketIo, nsp: &str) -> Vec<Value> {
        let channel = io.channels.request(nsp);
        // The embedded bus has no peers: the count fails and nobody is asked.
        let others = io
            .bus
            .subscribers(&channel)
            .await
            .map_or(0, |n| n.saturating_sub(1));
        if others == 0 {
            return Vec::new();
        }
        let request_id = engineioxide_core::Sid::new().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(request_id.clone(), tx);
        let request = encode_request(&Request::RemoteFetch {
            uid: Some(io.uid.clone()),
            request_id: request_id.clone(),
            opts: RequestOpts::default(),
        });
        let mut sockets = Vec::new();
        if let Err(err) = io.bus.publish(&channel, request).await {
            tracing::warn!(%err, "admin: fetchSockets request not published; showing this gateway only");
        } else {
            let collect = async {
                for _ in 0..others {
                    match rx.recv().await {
                        Some(batch) => sockets.extend(batch),
                        None => break,
                    }
                }
            };
            if tokio::time::timeout(FETCH_TIMEOUT, collect).await.is_err() {
                tracing::debug!(nsp, "admin: not every server answered fetchSockets in time");
            }
        }
        self.pending.lock().remove(&request_id);
        sockets
    }
}
