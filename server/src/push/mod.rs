//! Push: messages from the backend to sessions, by connection id, client id, topic, or to
//! everyone. A shard keeps its own topic -> local subscribers index ([`topics`]) and its slice
//! of the client directory ([`directory`]). Every publish on a topic goes to the topic's owner
//! shard (by hash), which assigns the topic's next sequence number, encodes the Push frame once
//! into a `Bytes`, and hands the same bytes to every shard (one message each); each shard
//! copies them into its subscribers' outbound queues, where they coalesce with other queued
//! frames into one send per connection.

pub(crate) mod broadcast_seen;
pub(crate) mod directory;
pub(crate) mod history;
pub(crate) mod publish_answer;
pub(crate) mod request;
pub(crate) mod resume;
pub(crate) mod state;
pub(crate) mod topics;
