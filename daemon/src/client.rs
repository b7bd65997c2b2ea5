//! The CLI side of the control socket.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::control::{Line, Progress, Request};

/// Sends `req` to the daemon at `socket`; calls `on_event` for progress lines; returns the final
/// value or the daemon's error.
pub async fn call(
    socket: &Path,
    req: &Request,
    mut on_event: impl FnMut(&Progress),
) -> Result<serde_json::Value> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        anyhow!(
            "cannot reach the btd daemon at {} ({e}); start it with `btd start` (and the same --home)",
            socket.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    w.flush().await?;
    let mut lines = BufReader::new(r).lines();
    while let Some(l) = lines
        .next_line()
        .await
        .context("reading the daemon's reply")?
    {
        match serde_json::from_str::<Line>(&l)
            .with_context(|| format!("unreadable reply from the daemon: {l}"))?
        {
            Line::Event(e) => on_event(&e),
            Line::Ok(v) => return Ok(v),
            Line::Error(e) => bail!("{e}"),
        }
    }
    bail!("the daemon closed the connection without answering")
}
