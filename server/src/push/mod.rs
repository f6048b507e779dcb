//! Push: messages from the backend to sessions, by connection id, client id, topic, or to
//! everyone. A shard keeps its own topic -> local subscribers index ([`topics`]) and its slice
//! of the client directory ([`directory`]). Every publish on a topic goes to the topic's owner
//! shard (by hash), which assigns the topic's next sequence number, encodes the Push frame once
//! into a `Bytes`, and hands the same bytes to every shard (one message each); each shard
//! copies them into its subscribers' outbound queues, where they coalesce with other queued
//! frames into one send per connection.

pub mod directory;
pub mod request;
pub mod state;
pub mod topics;
