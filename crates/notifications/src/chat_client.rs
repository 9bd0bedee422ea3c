//! The chat service's internal routes (membership, presence): the client lives in kit,
//! shared with the files service.

pub use kit::chat_client::{ChatClient, Membership};
