//! One shard's slice of the client directory: client id -> the connections with that id.
//! A client id lives on `owner_shard(client_id)`, so finding a client costs one message.

use std::collections::HashMap;

use crate::conn::ConnId;

/// Sessions one client id may hold at once (a directory entry is bounded).
pub(crate) const MAX_SESSIONS_PER_CLIENT: usize = 64;

#[derive(Default)]
pub(crate) struct ClientDirectory {
    clients: HashMap<Box<str>, Vec<ConnId>>,
}

impl ClientDirectory {
    pub(crate) fn register(&mut self, client_id: &str, conn: ConnId) {
        let conns = self.clients.entry(client_id.into()).or_default();
        if !conns.contains(&conn) {
            if conns.len() >= MAX_SESSIONS_PER_CLIENT {
                conns.remove(0);
            }
            conns.push(conn);
        }
    }

    pub(crate) fn unregister(&mut self, client_id: &str, conn: ConnId) {
        if let Some(conns) = self.clients.get_mut(client_id) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                self.clients.remove(client_id);
            }
        }
    }

    pub(crate) fn lookup(&self, client_id: &str) -> &[ConnId] {
        self.clients.get(client_id).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_unregister() {
        let mut directory = ClientDirectory::default();
        directory.register("alice", ConnId(1));
        directory.register("alice", ConnId(2));
        directory.register("alice", ConnId(2));
        assert_eq!(directory.lookup("alice"), &[ConnId(1), ConnId(2)]);
        directory.unregister("alice", ConnId(1));
        directory.unregister("alice", ConnId(2));
        assert!(directory.lookup("alice").is_empty());
    }
}
