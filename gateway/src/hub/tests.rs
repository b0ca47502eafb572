//! Unit and property tests of the Hub's invariants, with `u32` handles in
//! place of live sockets.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use engineioxide_core::Sid;
use proptest::prelude::*;

use super::{Hub, NewSocket, Refused};

fn nsp(name: &str) -> Arc<str> {
    Arc::from(name)
}

/// Adds a socket with handle `n`, returning its id.
fn add(hub: &Hub<u32>, ns: &Arc<str>, n: u32, user: Option<&str>) -> Sid {
    let id = Sid::new();
    let user = user.map(Arc::<str>::from);
    hub.add(
        NewSocket {
            nsp: ns,
            id,
            user: user.as_ref(),
            expires_at: None,
        },
        n,
        0,
    )
    .unwrap();
    id
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

#[test]
fn join_and_targets() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    let b = add(&hub, &ns, 2, None);
    assert_eq!(hub.join(a, &["r1", "r2"]), 2);
    assert_eq!(hub.join(b, &["r2"]), 0);
    assert_eq!(sorted(hub.targets(&ns, &["r1"], &[])), [1]);
    assert_eq!(sorted(hub.targets(&ns, &["r2"], &[])), [1, 2]);
    assert_eq!(sorted(hub.targets(&ns, &["r1", "r2"], &[])), [1, 2]);
    assert_eq!(sorted(hub.targets::<&str>(&ns, &[], &[])), [1, 2]);
    assert_eq!(hub.room_count(), 2);
}

#[test]
fn membership_queries() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    hub.join(a, &["r1", "r2"]);
    assert!(hub.is_in(a, "r1"));
    assert!(!hub.is_in(a, "r3"));
    assert!(!hub.is_in(a, a.as_str()), "its own id is not a stored room");
    assert_eq!(hub.rooms_len(a), 2);
    hub.leave(a, &["r1"]);
    assert!(!hub.is_in(a, "r1"));
    assert_eq!(hub.rooms_len(a), 1);
    hub.remove(a);
    assert!(!hub.is_in(a, "r2"));
    assert_eq!(hub.rooms_len(a), 0);
}

#[test]
fn joining_twice_is_one_membership() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    assert_eq!(hub.join(a, &["r", "r"]), 1);
    assert_eq!(hub.rooms_of(a), ["r"]);
    assert_eq!(hub.leave(a, &["r"]), 1);
    assert_eq!(hub.room_count(), 0);
}

#[test]
fn except_removes_members_of_excepted_rooms() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    let b = add(&hub, &ns, 2, None);
    hub.join(a, &["all", "vip"]);
    hub.join(b, &["all"]);
    assert_eq!(hub.targets(&ns, &["all"], &["vip"]), [2]);
    assert_eq!(hub.targets::<&str>(&ns, &[], &["vip"]), [2]);
    assert_eq!(hub.targets(&ns, &["all", "vip"], &["vip"]), [2]);
}

#[test]
fn a_socket_id_is_a_room() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    add(&hub, &ns, 2, None);
    assert_eq!(hub.targets(&ns, &[a.as_str()], &[]), [1]);
    assert!(hub.has_room(&ns, a.as_str()));
    assert_eq!(sorted(hub.targets::<&str>(&ns, &[], &[a.as_str()])), [2]);
    // Not in another namespace.
    assert!(hub.targets(&nsp("/other"), &[a.as_str()], &[]).is_empty());
}

#[test]
fn namespaces_are_separate() {
    let hub = Hub::new();
    let (root, admin) = (nsp("/"), nsp("/admin"));
    let a = add(&hub, &root, 1, None);
    let b = add(&hub, &admin, 2, None);
    hub.join(a, &["r"]);
    hub.join(b, &["r"]);
    assert_eq!(hub.targets(&root, &["r"], &[]), [1]);
    assert_eq!(hub.targets(&admin, &["r"], &[]), [2]);
    assert_eq!(hub.room_count(), 2);
    assert_eq!(hub.socket_count(&root), 1);
    assert_eq!(hub.remove(a), 1);
    assert!(hub.has_room(&admin, "r"));
    assert!(!hub.has_room(&root, "r"));
}

#[test]
fn has_room_only_for_occupied_rooms() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    assert!(!hub.has_room(&ns, "r"));
    hub.join(a, &["r"]);
    assert!(hub.has_room(&ns, "r"));
    hub.leave(a, &["r"]);
    assert!(!hub.has_room(&ns, "r"));
}

#[test]
fn all_rooms_lists_rooms_and_socket_ids() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    hub.join(a, &["x", "y"]);
    let mut rooms = hub.all_rooms(&ns);
    rooms.sort();
    let mut want = vec!["x".to_string(), "y".to_string(), a.to_string()];
    want.sort();
    assert_eq!(rooms, want);
}

#[test]
fn joining_after_removal_does_nothing() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    assert_eq!(hub.remove(a), 0);
    assert_eq!(hub.join(a, &["r"]), 0);
    assert_eq!(hub.room_count(), 0);
    assert!(hub.rooms_of(a).is_empty());
    assert_eq!(hub.remove(a), 0);
}

#[test]
fn per_user_limit() {
    let hub: Hub<u32> = Hub::new();
    let ns = nsp("/");
    let u1: Arc<str> = Arc::from("u1");
    let new = |id| NewSocket {
        nsp: &ns,
        id,
        user: Some(&u1),
        expires_at: None,
    };
    let (a, b, c) = (Sid::new(), Sid::new(), Sid::new());
    assert_eq!(hub.add(new(a), 1, 2), Ok(()));
    assert_eq!(hub.add(new(b), 2, 2), Ok(()));
    assert_eq!(hub.add(new(c), 3, 2), Err(Refused::TooManyForUser));
    assert_eq!(hub.user_count(&ns, "u1"), 2);
    // The refused socket was not registered.
    assert_eq!(hub.socket_count(&ns), 2);
    hub.remove(a);
    assert_eq!(hub.user_count(&ns, "u1"), 1);
    assert_eq!(hub.add(new(c), 3, 2), Ok(()));
    // Another namespace counts separately.
    let other = nsp("/other");
    let d = NewSocket {
        nsp: &other,
        id: Sid::new(),
        user: Some(&u1),
        expires_at: None,
    };
    assert_eq!(hub.add(d, 4, 2), Ok(()));
    assert_eq!(hub.user_count(&other, "u1"), 1);
}

#[test]
fn zero_means_no_user_limit() {
    let hub = Hub::new();
    let ns = nsp("/");
    for n in 0..50 {
        add(&hub, &ns, n, Some("u"));
    }
    assert_eq!(hub.user_count(&ns, "u"), 50);
}

#[test]
fn expired_sockets_are_taken_once() {
    let hub: Hub<u32> = Hub::new();
    let ns = nsp("/");
    let with_exp = |id, exp| NewSocket {
        nsp: &ns,
        id,
        user: None,
        expires_at: Some(exp),
    };
    let (a, b) = (Sid::new(), Sid::new());
    hub.add(with_exp(a, 100), 1, 0).unwrap();
    hub.add(with_exp(b, 200), 2, 0).unwrap();
    assert!(hub.take_expired(100).is_empty());
    assert_eq!(hub.take_expired(101), [1]);
    assert!(hub.take_expired(101).is_empty());
    // A removed socket is not reported.
    hub.remove(b);
    assert!(hub.take_expired(1000).is_empty());
    assert_eq!(hub.expiries.len(), 0);
}

#[test]
fn acks_are_taken_once_and_expire() {
    let hub: Hub<u32> = Hub::new();
    let (a, b) = (Sid::new(), Sid::new());
    let id = hub.acks.next_id();
    assert_eq!(hub.acks.next_id(), id + 1);
    let now = Instant::now();
    {
        let mut pending = hub.acks.lock();
        pending.insert(a, id, "req".into(), now + Duration::from_secs(5));
        pending.insert(b, id, "req".into(), now + Duration::from_secs(1));
    }
    assert_eq!(hub.acks.take(a, id).as_deref(), Some("req"));
    assert_eq!(hub.acks.take(a, id), None);
    assert_eq!(hub.acks.take(b, id + 1), None);
    hub.acks.expire(now + Duration::from_secs(2));
    assert_eq!(hub.acks.take(b, id), None);
    assert_eq!(hub.acks.len(), 0);
}

#[test]
fn removal_forgets_pending_acks() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    hub.acks
        .lock()
        .insert(a, 0, "req".into(), Instant::now() + Duration::from_secs(30));
    hub.remove(a);
    assert_eq!(hub.acks.len(), 0);
}

#[test]
fn shared_by_threads() {
    let hub: Arc<Hub<u32>> = Arc::new(Hub::new());
    let ns = nsp("/");
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (hub, ns) = (hub.clone(), ns.clone());
            std::thread::spawn(move || {
                for n in 0..200 {
                    let id = add(&hub, &ns, t * 1000 + n, Some("u"));
                    hub.join(id, &["shared", &format!("t{t}")]);
                    if n % 2 == 0 {
                        hub.remove(id);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(hub.targets(&ns, &["shared"], &[]).len(), 400);
    assert_eq!(hub.user_count(&ns, "u"), 400);
    assert_eq!(hub.room_count(), 5);
}

#[test]
fn get_finds_registered_sockets_only() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 7, None);
    assert_eq!(hub.get(a), Some(7));
    hub.remove(a);
    assert_eq!(hub.get(a), None);
}

#[test]
fn leaving_a_room_not_joined_changes_nothing() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    let b = add(&hub, &ns, 2, None);
    hub.join(b, &["r"]);
    assert_eq!(hub.leave(a, &["r", "nowhere"]), 0);
    assert_eq!(hub.targets(&ns, &["r"], &[]), [2]);
    assert_eq!(hub.room_count(), 1);
}

#[test]
fn unknown_namespace_is_empty() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    hub.join(a, &["r"]);
    assert!(hub.targets::<&str>("/nope", &[], &[]).is_empty());
    assert!(hub.targets("/nope", &["r"], &[]).is_empty());
    assert!(hub.all_rooms("/nope").is_empty());
    assert_eq!(hub.socket_count("/nope"), 0);
    assert!(!hub.has_room("/nope", "r"));
}

#[test]
fn rooms_of_lists_joined_rooms_in_order() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    hub.join(a, &["user:1", "role:admin"]);
    hub.join(a, &["lobby"]);
    assert_eq!(hub.rooms_of(a), ["user:1", "role:admin", "lobby"]);
    hub.leave(a, &["role:admin"]);
    let mut rooms = hub.rooms_of(a);
    rooms.sort();
    assert_eq!(rooms, ["lobby", "user:1"]);
}

#[test]
fn an_unparsable_room_name_is_just_an_empty_room() {
    let hub = Hub::new();
    let ns = nsp("/");
    add(&hub, &ns, 1, None);
    assert!(hub.targets(&ns, &["not a sid"], &[]).is_empty());
    assert!(!hub.has_room(&ns, ""));
}

#[test]
fn except_a_socket_id() {
    let hub = Hub::new();
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    let b = add(&hub, &ns, 2, None);
    hub.join(a, &["r"]);
    hub.join(b, &["r"]);
    assert_eq!(hub.targets(&ns, &["r"], &[a.as_str()]), [2]);
}

#[test]
fn expiry_without_a_token_expiry_is_never_taken() {
    let hub = Hub::new();
    let ns = nsp("/");
    add(&hub, &ns, 1, None);
    assert!(hub.take_expired(u64::MAX).is_empty());
}

/// One step of a random workload over a few sockets and rooms.
#[derive(Debug, Clone)]
enum Op {
    Add { socket: usize, user: usize },
    Join { socket: usize, rooms: Vec<usize> },
    Leave { socket: usize, rooms: Vec<usize> },
    Remove { socket: usize },
}

const SOCKETS: usize = 8;
const ROOMS: usize = 5;
const USERS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let rooms = proptest::collection::vec(0..ROOMS, 0..4);
    prop_oneof![
        (0..SOCKETS, 0..USERS).prop_map(|(socket, user)| Op::Add { socket, user }),
        (0..SOCKETS, rooms.clone()).prop_map(|(socket, rooms)| Op::Join { socket, rooms }),
        (0..SOCKETS, rooms).prop_map(|(socket, rooms)| Op::Leave { socket, rooms }),
        (0..SOCKETS).prop_map(|socket| Op::Remove { socket }),
    ]
}

fn room(n: usize) -> String {
    format!("room{n}")
}

/// A plain model the Hub must agree with: socket -> (user, rooms).
type Model = BTreeMap<u32, (usize, BTreeSet<usize>)>;

/// Runs the ops on a Hub and on the model; socket `n` has handle `n`.
fn run(ops: &[Op]) -> (Hub<u32>, Vec<Sid>, Model) {
    let hub = Hub::new();
    let ns = nsp("/");
    let ids: Vec<Sid> = (0..SOCKETS).map(|_| Sid::new()).collect();
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Add { socket, user } => {
                let handle = *socket as u32;
                if model.contains_key(&handle) {
                    continue;
                }
                let new = NewSocket {
                    nsp: &ns,
                    id: ids[*socket],
                    user: Some(&Arc::from(format!("user{user}"))),
                    expires_at: Some(1000 + *socket as u64),
                };
                hub.add(new, handle, 0).unwrap();
                model.insert(handle, (*user, BTreeSet::new()));
            }
            Op::Join { socket, rooms } => {
                let names: Vec<String> = rooms.iter().copied().map(room).collect();
                hub.join(ids[*socket], &names);
                if let Some((_, joined)) = model.get_mut(&(*socket as u32)) {
                    joined.extend(rooms);
                }
            }
            Op::Leave { socket, rooms } => {
                let names: Vec<String> = rooms.iter().copied().map(room).collect();
                hub.leave(ids[*socket], &names);
                if let Some((_, joined)) = model.get_mut(&(*socket as u32)) {
                    for r in rooms {
                        joined.remove(r);
                    }
                }
            }
            Op::Remove { socket } => {
                hub.remove(ids[*socket]);
                model.remove(&(*socket as u32));
            }
        }
    }
    (hub, ids, model)
}

fn members(model: &Model, r: usize) -> BTreeSet<u32> {
    model
        .iter()
        .filter(|(_, (_, rooms))| rooms.contains(&r))
        .map(|(s, _)| *s)
        .collect()
}

proptest! {
    /// A socket is in a room exactly when the room lists the socket.
    #[test]
    fn membership_is_symmetric(ops in proptest::collection::vec(op(), 0..60)) {
        let (hub, ids, model) = run(&ops);
        for r in 0..ROOMS {
            let listed: BTreeSet<u32> = hub.targets("/", &[room(r)], &[]).into_iter().collect();
            prop_assert_eq!(&listed, &members(&model, r));
            for (s, id) in ids.iter().enumerate() {
                let in_room = hub.rooms_of(*id).contains(&room(r));
                prop_assert_eq!(in_room, listed.contains(&(s as u32)));
            }
        }
    }

    /// A room exists only while it has members.
    #[test]
    fn emptied_rooms_disappear(ops in proptest::collection::vec(op(), 0..60)) {
        let (hub, _, model) = run(&ops);
        let occupied = (0..ROOMS).filter(|r| !members(&model, *r).is_empty()).count();
        prop_assert_eq!(hub.room_count(), occupied);
        for r in 0..ROOMS {
            prop_assert_eq!(hub.has_room("/", &room(r)), !members(&model, r).is_empty());
        }
    }

    /// `targets(rooms, except)` is the union of the rooms minus the members
    /// of the excepted rooms, each socket once.
    #[test]
    fn targets_are_union_minus_exceptions(
        ops in proptest::collection::vec(op(), 0..60),
        rooms in proptest::collection::vec(0..ROOMS, 0..4),
        except in proptest::collection::vec(0..ROOMS, 0..3),
    ) {
        let (hub, _, model) = run(&ops);
        let excluded: BTreeSet<u32> = except.iter().flat_map(|r| members(&model, *r)).collect();
        let want: BTreeSet<u32> = if rooms.is_empty() {
            model.keys().copied().collect()
        } else {
            rooms.iter().flat_map(|r| members(&model, *r)).collect()
        };
        let want: Vec<u32> = want.difference(&excluded).copied().collect();
        let names: Vec<String> = rooms.iter().copied().map(room).collect();
        let except: Vec<String> = except.iter().copied().map(room).collect();
        prop_assert_eq!(sorted(hub.targets("/", &names, &except)), want);
    }

    /// Removing every socket leaves an empty hub.
    #[test]
    fn removed_sockets_leave_no_trace(ops in proptest::collection::vec(op(), 0..60)) {
        let (hub, ids, model) = run(&ops);
        for (s, id) in ids.iter().enumerate() {
            if model.contains_key(&(s as u32)) {
                // An ack it owes (only registered sockets get broadcasts).
                hub.acks.lock().insert(*id, 1, "r".into(), Instant::now() + Duration::from_secs(60));
            }
            hub.remove(*id);
            prop_assert!(hub.rooms_of(*id).is_empty());
            prop_assert!(hub.targets("/", &[id.as_str()], &[]).is_empty());
        }
        prop_assert_eq!(hub.room_count(), 0);
        prop_assert_eq!(hub.socket_count("/"), 0);
        prop_assert!(hub.all_rooms("/").is_empty());
        prop_assert_eq!(hub.users.len(), 0);
        prop_assert_eq!(hub.expiries.len(), 0);
        prop_assert_eq!(hub.acks.len(), 0);
    }

    /// Per-user counts match the sockets each user holds.
    #[test]
    fn per_user_counts_match(ops in proptest::collection::vec(op(), 0..60)) {
        let (hub, _, model) = run(&ops);
        for u in 0..USERS {
            let held = model.values().filter(|(user, _)| *user == u).count();
            prop_assert_eq!(hub.user_count("/", &format!("user{u}")), held);
        }
        prop_assert_eq!(hub.socket_count("/"), model.len());
    }
}

#[test]
fn the_room_watcher_hears_each_room_appear_and_disappear() {
    let hub: Hub<u32> = Hub::new();
    let heard = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let sink = heard.clone();
    assert!(
        hub.watch_rooms(Box::new(move |n: &Arc<str>, r: &Arc<str>| {
            sink.lock().unwrap().push((n.to_string(), r.to_string()));
        }))
        .is_ok()
    );
    assert!(
        hub.watch_rooms(Box::new(|_: &Arc<str>, _: &Arc<str>| {}))
            .is_err()
    );
    let take = || std::mem::take(&mut *heard.lock().unwrap());
    let ns = nsp("/");
    let a = add(&hub, &ns, 1, None);
    let b = add(&hub, &ns, 2, None);
    hub.join(a, &["r1", "r2"]);
    assert_eq!(
        take(),
        vec![("/".into(), "r1".into()), ("/".into(), "r2".into())]
    );
    // A second member: the room already exists, nothing to hear.
    hub.join(b, &["r1"]);
    assert!(take().is_empty());
    assert!(hub.has_named_room("/", "r1"));
    // Not the last member: nothing; the last one leaving: the room is gone.
    hub.leave(a, &["r1"]);
    assert!(take().is_empty());
    hub.leave(b, &["r1"]);
    assert_eq!(take(), vec![("/".into(), "r1".into())]);
    assert!(!hub.has_named_room("/", "r1"));
    // A removed socket's rooms disappear with it.
    hub.remove(a);
    assert_eq!(take(), vec![("/".into(), "r2".into())]);
    // A socket id is not a named room.
    assert!(hub.has_room("/", b.as_str()));
    assert!(!hub.has_named_room("/", b.as_str()));
}
