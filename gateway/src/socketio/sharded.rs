//! The session layer's side of sharded pub/sub (`redis.pubsub =
//! "sharded"`, see `bus::sharded`): what a `ClusterMessage` from a Node
//! server on `createShardedAdapter` (or another gateway, or the publish API)
//! does here, and how this gateway answers the requests that expect answers.
//!
//! Requests are turned into the classic adapter's [`Request`]s and handled
//! by the same code as classic ones; their answers go back, as
//! `ClusterMessage`s on the requester's shard channel, because the request
//! id is remembered with the requester's uid ([`Requesters`]).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_wire::{
    BroadcastMessage, BusPacket, ClusterBody, ClusterMessage, DisconnectRequest, Request,
    RequestOpts, Response, RoomsRequest,
    cluster::{AckResponse, BroadcastClientCount, FetchSocketsResponse, RoomsChange},
    decode_broadcast, sharded,
};

use super::SocketIo;

/// How long a sharded request's requester is remembered when the request
/// names no ack timeout (Node's `requestsTimeout` default is 5 s).
const REQUESTER_TTL: Duration = Duration::from_secs(60);

/// Request id -> (requester uid, forget after), for requests that came over
/// sharded pub/sub (or the streams adapter's pub/sub): their answers go to
/// the requester's own channel.
#[derive(Default)]
pub(crate) struct Requesters(Mutex<HashMap<String, (String, Instant)>>);

/// How long the requester of a broadcast with acks is remembered: its ack
/// timeout (the flag Node sends) plus [`REQUESTER_TTL`], since client acks
/// may arrive until the very end of that timeout.
pub(super) fn ack_requester_ttl(timeout_ms: Option<u64>) -> Duration {
    timeout_ms.map_or(REQUESTER_TTL, |ms| {
        Duration::from_millis(ms) + REQUESTER_TTL
    })
}

/// A classic [`Response`] as the `ClusterMessage` body of the same meaning
/// (what sharded and streams requesters wait for); `None` for answers the
/// cluster protocol has no requests for (allRooms, sockets, serverStatus).
pub(super) fn cluster_response(response: Response) -> Option<ClusterBody> {
    Some(match response {
        Response::FetchSockets {
            request_id,
            sockets,
        } => ClusterBody::FetchSocketsResponse(FetchSocketsResponse {
            request_id,
            sockets,
        }),
        Response::ServerSideEmit { request_id, data } => {
            ClusterBody::ServerSideEmitResponse(AckResponse {
                request_id,
                packet: Some(data),
            })
        }
        Response::BroadcastClientCount {
            request_id,
            client_count,
        } => ClusterBody::BroadcastClientCount(BroadcastClientCount {
            request_id,
            client_count,
        }),
        Response::BroadcastAck { request_id, packet } => ClusterBody::BroadcastAck(AckResponse {
            request_id,
            packet: Some(packet),
        }),
        _ => return None,
    })
}

impl Requesters {
    /// Remembers that `uid` waits for the answers to `request_id`.
    pub(super) fn insert(&self, request_id: &str, uid: &str, ttl: Duration) {
        self.0.lock().insert(
            request_id.to_string(),
            (uid.to_string(), Instant::now() + ttl),
        );
    }

    /// The requester of `request_id`, if it came over sharded pub/sub.
    pub(crate) fn get(&self, request_id: &str) -> Option<String> {
        self.0.lock().get(request_id).map(|(uid, _)| uid.clone())
    }

    /// Forgets requesters whose answers can no longer be awaited.
    pub(crate) fn expire(&self, now: Instant) {
        self.0.lock().retain(|_, (_, until)| *until > now);
    }
}

impl SocketIo {
    /// The shard channels every gateway subscribes: per namespace, the
    /// namespace channel and this gateway's own.
    pub(super) fn shard_base_channels(&self) -> Vec<String> {
        let Some(sharded) = self.bus.sharded() else {
            return Vec::new();
        };
        self.namespaces
            .iter()
            .flat_map(|nsp| sharded.options().base_subscriptions(nsp, &self.uid))
            .collect()
    }

    /// A message on a shard channel: a `ClusterMessage` (JSON or msgpack).
    /// An emitter-format array (what `switchboard publish` SPUBLISHes) is
    /// delivered as a classic broadcast.
    pub(super) fn on_shard_message(&self, channel: &str, payload: Bytes) {
        let msg = match sharded::decode(&payload) {
            Ok(msg) => msg,
            Err(err) => {
                if let Ok(classic) = decode_broadcast(&payload) {
                    if classic.uid != self.uid {
                        self.metrics.bus_in.with_label_values(&["broadcast"]).inc();
                        self.deliver(&classic);
                    }
                    return;
                }
                return self.bus_decode_error("sharded", &err);
            }
        };
        if msg.uid == self.uid {
            return;
        }
        let Some(nsp) = self.namespace(&msg.nsp).cloned() else {
            tracing::debug!(
                channel,
                nsp = msg.nsp,
                "sharded message for a namespace this gateway does not serve"
            );
            return;
        };
        let uid = Some(msg.uid.clone());
        let request = match msg.body {
            ClusterBody::Broadcast(b) => {
                let packet = BusPacket {
                    packet_type: b.packet.packet_type,
                    data: b.packet.data,
                    nsp: msg.nsp,
                    id: b.packet.id,
                };
                match b.request_id {
                    None => {
                        self.metrics.bus_in.with_label_values(&["broadcast"]).inc();
                        return self.deliver(&BroadcastMessage {
                            uid: msg.uid,
                            packet,
                            opts: b.opts,
                        });
                    }
                    Some(request_id) => {
                        let ttl = ack_requester_ttl(b.opts.flags.timeout);
                        self.sharded_requesters.insert(&request_id, &msg.uid, ttl);
                        Request::Broadcast {
                            uid,
                            request_id,
                            packet,
                            opts: b.opts,
                        }
                    }
                }
            }
            ClusterBody::SocketsJoin(r) => Request::RemoteJoin(rooms_request(uid, r)),
            ClusterBody::SocketsLeave(r) => Request::RemoteLeave(rooms_request(uid, r)),
            ClusterBody::DisconnectSockets(d) => Request::RemoteDisconnect(DisconnectRequest {
                uid,
                opts: Some(RequestOpts {
                    rooms: d.opts.rooms,
                    except: d.opts.except,
                }),
                close: d.close,
                ..DisconnectRequest::default()
            }),
            ClusterBody::FetchSockets(f) => {
                self.sharded_requesters
                    .insert(&f.request_id, &msg.uid, REQUESTER_TTL);
                Request::RemoteFetch {
                    uid,
                    request_id: f.request_id,
                    opts: RequestOpts {
                        rooms: f.opts.rooms,
                        except: f.opts.except,
                    },
                }
            }
            ClusterBody::ServerSideEmit(e) => {
                if let Some(id) = &e.request_id {
                    self.sharded_requesters.insert(id, &msg.uid, REQUESTER_TTL);
                }
                Request::ServerSideEmit {
                    uid,
                    request_id: e.request_id,
                    data: e.packet,
                }
            }
            other => {
                // Responses to requests this gateway never sends, heartbeats.
                tracing::debug!(channel, body = ?std::mem::discriminant(&other), "sharded message not handled by the gateway");
                return;
            }
        };
        self.metrics.bus_in.with_label_values(&["request"]).inc();
        self.handle_request(&nsp, request);
    }

    /// Answers a sharded request on its requester's shard channel; false
    /// when `response` answers a classic request.
    pub(super) fn respond_sharded(&self, nsp: &str, response: &Response) -> bool {
        let (Some(sharded), Some(requester)) = (
            self.bus.sharded(),
            self.sharded_requesters.get(response.request_id()),
        ) else {
            return false;
        };
        // The sharded protocol has no requests the other answers are for.
        let Some(body) = cluster_response(response.clone()) else {
            return true;
        };
        let msg = ClusterMessage::new(self.uid.clone(), nsp, body);
        let (channel, payload) = sharded.encode_response(&requester, &msg);
        self.spawn_publish(true, channel, payload, "response");
        true
    }
}

/// A SOCKETS_JOIN / SOCKETS_LEAVE as the classic request of the same meaning.
fn rooms_request(uid: Option<String>, r: RoomsChange) -> RoomsRequest {
    RoomsRequest {
        uid,
        opts: Some(RequestOpts {
            rooms: r.opts.rooms,
            except: r.opts.except,
        }),
        rooms: r.rooms,
        ..RoomsRequest::default()
    }
}
