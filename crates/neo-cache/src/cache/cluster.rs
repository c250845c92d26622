//! L2 on a Redis Cluster: the calls that touch many keys, split by hash slot and sent as one
//! pipeline per node, the nodes in parallel; SCAN on every master.
//!
//! redis-rs routes single-key commands by slot and follows `MOVED`/`ASK` itself. A pipeline
//! it sends to one slot's node only, so commands for many slots are grouped here with a slot
//! map of our own (`CLUSTER SLOTS`): one pipeline per node, sent to the node redis-rs holds
//! for the group's first slot. When the two maps disagree (a slot moved, a failover), the
//! node answers the commands it does not own with `MOVED`/`ASK`/`TRYAGAIN`: each of those is
//! sent again on its own through redis-rs' routing (which follows the redirection), and the
//! map is read again on the next call. No such error reaches the caller, and no multi-key
//! command ever spans two slots (no `CROSSSLOT`).

use futures_util::future::join_all;
use neo_redis::ClusterConnections;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisResult, ServerErrorKind, Value};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16_384;
/// A slot no master serves (in our map).
const UNOWNED: u16 = u16::MAX;

/// The hash slot of `key`, by Redis' rule: CRC16 (XMODEM) of the text between the first `{`
/// and the next `}` when that is not empty, otherwise of the whole key.
pub(super) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS as u16
}

/// Which master serves each slot, as `CLUSTER SLOTS` said.
struct SlotMap {
    owner: Box<[u16]>,
    /// `(host, port)` of each master, indexed by `owner`.
    masters: Vec<(String, u16)>,
}

impl SlotMap {
    fn parse(reply: &Value) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut owner = vec![UNOWNED; SLOTS].into_boxed_slice();
        let mut masters: Vec<(String, u16)> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match node.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = node.get(1) else {
                return None;
            };
            let address = (host, u16::try_from(*port).ok()?);
            let index = match masters.iter().position(|m| *m == address) {
                Some(i) => i,
                None => {
                    masters.push(address);
                    masters.len() - 1
                }
            };
            let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
            for slot in owner.get_mut(start..=end)? {
                *slot = u16::try_from(index).ok()?;
            }
        }
        Some(SlotMap { owner, masters })
    }
}

/// The cluster connection and our slot map (read on first use and after a redirection).
#[derive(Clone, Debug)]
pub(super) struct ClusterTier {
    pub(super) connections: ClusterConnections,
    map: Arc<RwLock<Option<Arc<SlotMap>>>>,
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMap")
            .field("masters", &self.masters)
            .finish_non_exhaustive()
    }
}

impl ClusterTier {
    pub(super) fn new(connections: ClusterConnections) -> Self {
        ClusterTier {
            connections,
            map: Arc::new(RwLock::new(None)),
        }
    }

    /// Our slot map, read with `CLUSTER SLOTS` when there is none (or `fresh` asks for it).
    async fn slot_map(
        &self,
        conn: &mut ClusterConnection,
        fresh: bool,
    ) -> RedisResult<Arc<SlotMap>> {
        if !fresh
            && let Some(map) = self
                .map
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
        {
            return Ok(Arc::clone(map));
        }
        let reply = conn
            .req_packed_command(redis::cmd("CLUSTER").arg("SLOTS"))
            .await?;
        let map = Arc::new(SlotMap::parse(&reply).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "CLUSTER SLOTS gave an answer that is not a slot map",
            ))
        })?);
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&map));
        Ok(map)
    }

    fn forget_map(&self) {
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Runs every command of `commands` (each on one slot), one pipeline per node, the nodes
    /// in parallel; the answers in order. A command a node does not own is resent through
    /// redis-rs' routing.
    pub(super) async fn scatter(
        &self,
        conn: &mut ClusterConnection,
        slots: &[u16],
        build: impl Fn(usize) -> Cmd,
    ) -> RedisResult<Vec<Value>> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let map = self.slot_map(conn, false).await?;
        // Commands per node (slots no master owns in our map each go alone, by slot).
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        let mut node_group: HashMap<u16, usize> = HashMap::new();
        for (i, &slot) in slots.iter().enumerate() {
            let owner = map.owner[usize::from(slot)];
            if owner == UNOWNED {
                groups.push((slot, vec![i]));
                continue;
            }
            match node_group.get(&owner) {
                Some(&g) => groups[g].1.push(i),
                None => {
                    node_group.insert(owner, groups.len());
                    groups.push((slot, vec![i]));
                }
            }
        }
        let sent = groups.iter().map(|(first_slot, members)| {
            let mut conn = conn.clone();
            let mut pipe = redis::pipe();
            for &i in members {
                pipe.add_command(build(i));
            }
            let route =
                SingleNodeRoutingInfo::SpecificNode(Route::new(*first_slot, SlotAddr::Master));
            async move { conn.route_pipeline(pipe, 0, members.len(), route).await }
        });
        let answers = join_all(sent).await;
        let mut out: Vec<Value> = vec![Value::Nil; slots.len()];
        let mut resend = Vec::new();
        for ((_, members), answer) in groups.iter().zip(answers) {
            // A node whose pipeline failed as a whole (a dropped connection during a
            // failover, a node redis-rs no longer knows) gets each command resent alone.
            let Ok(answer) = answer else {
                resend.extend_from_slice(members);
                continue;
            };
            for (&i, value) in members.iter().zip(answer) {
                match value {
                    Value::ServerError(error) if redirected(error.kind()) => resend.push(i),
                    Value::ServerError(error) => return Err(error.into()),
                    value => out[i] = value,
                }
            }
        }
        if !resend.is_empty() {
            self.forget_map();
            let again = resend.iter().map(|&i| {
                let mut conn = conn.clone();
                let cmd = build(i);
                async move { conn.req_packed_command(&cmd).await }
            });
            for (&i, value) in resend.iter().zip(join_all(again).await) {
                out[i] = value?;
            }
        }
        Ok(out)
    }

    /// The `(host, port)` of every master, read afresh (a failover may have moved them).
    pub(super) async fn masters(
        &self,
        conn: &mut ClusterConnection,
    ) -> RedisResult<Vec<(String, u16)>> {
        Ok(self.slot_map(conn, true).await?.masters.clone())
    }

    /// One SCAN page on the node at `address`.
    pub(super) async fn scan_page(
        conn: &mut ClusterConnection,
        address: &(String, u16),
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: address.0.clone(),
            port: address.1,
        });
        let reply = conn.route_command(cmd, routing).await?;
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Whether a node's refusal means "ask another node" rather than a real failure.
fn redirected(kind: Option<ServerErrorKind>) -> bool {
    matches!(
        kind,
        Some(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
        )
    )
}

/// Positions grouped by slot (`slots` gives each position's), in order of first appearance,
/// with each group's slot: the MGET/DEL of a group stays inside one slot.
pub(super) fn by_slot(slots: impl Iterator<Item = u16>) -> (Vec<u16>, Vec<Vec<usize>>) {
    let mut group_slots = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<u16, usize> = HashMap::new();
    for (i, slot) in slots.enumerate() {
        match index.get(&slot) {
            Some(&g) => groups[g].push(i),
            None => {
                index.insert(slot, groups.len());
                group_slots.push(slot);
                groups.push(vec![i]);
            }
        }
    }
    (group_slots, groups)
}

#[cfg(test)]
mod tests {
    use super::slot;
    use redis::cluster_routing::{Route, SlotAddr};

    #[test]
    fn slots_match_redis_rs_and_the_hash_tag_rule() {
        for key in [
            "",
            "a",
            "neo:orgs:org:1",
            "{user1000}.following",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "foo{bar}{zap}",
            "{",
            "}",
            "}{",
            "a b",
            "x*y",
            "é:ü",
        ] {
            assert_eq!(
                Route::new(slot(key.as_bytes()), SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "{key:?}"
            );
        }
        // Known values from the Redis Cluster specification.
        assert_eq!(slot(b"123456789"), 0x31C3, "CRC16 XMODEM check value");
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }
}
