//! What `postern status --json` prints and `GET /api/status` serves: one
//! builder for both, so the two never drift apart.

use serde_json::{json, Value};

use crate::config::Config;
use crate::pool::Pools;
use crate::queue::Queue;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("quota store: {0}")]
    Quota(#[from] crate::pool::PoolError),
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
}

/// OAuth state per account, quota per mailbox and pool, the queue per
/// route and the upstream connection caps.
pub async fn json(config: &Config, pools: &Pools, queue: &Queue) -> Result<Value, StatusError> {
    let quota = pools.status(jiff::Timestamp::now()).await?;
    let queue = queue.summary().await?;
    let caps = crate::gate::Board::read(&config.data_dir.join(crate::gate::BOARD_FILE));
    Ok(json!({
        "oauth": crate::auth::oauth::status_json(config),
        "quota": quota,
        "queue": queue,
        "connections": caps,
    }))
}
