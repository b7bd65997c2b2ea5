//! request-response codec: a u32 big-endian length prefix, then one message in btd's wire codec.
//! The length is checked against the cap before anything is allocated. Every decoded reply is
//! sanitised ([`wire::Sanitize`]): a peer's free text is bounded and cleaned before the node sees it.

use std::io;
use std::marker::PhantomData;

use btd_protocol::wire::{self, MAX_MESSAGE_BYTES};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Codec for one btd request-response protocol (`Req` → `Resp`).
pub struct WireCodec<Req, Resp> {
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> Default for WireCodec<Req, Resp> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for WireCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<Req, Resp> std::fmt::Debug for WireCodec<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireCodec")
    }
}

async fn read_frame<T, M>(io: &mut T) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: DeserializeOwned,
{
    let buf = read_bytes(io).await?;
    wire::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// One length-prefixed frame's bytes, at most [`MAX_MESSAGE_BYTES`] (checked before anything is
/// allocated), all of them or an error.
pub(super) async fn read_bytes<T>(io: &mut T) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"),
        ));
    }
    let mut buf = Vec::with_capacity(len);
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream ended inside a message",
        ));
    }
    Ok(buf)
}

fn frame<M: Serialize>(msg: &M) -> io::Result<Vec<u8>> {
    wire::encode(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

async fn write_frame<T>(io: &mut T, bytes: Vec<u8>) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.flush().await
}

impl<Req, Resp> libp2p::request_response::Codec for WireCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + 'static,
    Resp: Serialize + DeserializeOwned + wire::Sanitize + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut resp: Resp = read_frame(io).await?;
        resp.sanitize();
        Ok(resp)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = frame(&req)?;
        drop(req);
        write_frame(io, bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = frame(&res)?;
        drop(res);
        write_frame(io, bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btd_protocol::wire::{BlobRequest, BlobResponse, ErrorCode, ErrorReply, MAX_TEXT_BYTES};
    use libp2p::request_response::Codec as _;

    #[tokio::test]
    async fn a_peers_reply_is_sanitised_as_it_is_decoded() {
        // A member answering the owner's checkpoint fetch with an error of nearly a whole message.
        let message = format!("\x1b[2J{}", "A".repeat(MAX_MESSAGE_BYTES - 64));
        let reply = BlobResponse::Error(ErrorReply {
            code: ErrorCode::NotFound,
            message,
        });
        let mut bytes = Vec::new();
        let mut codec = WireCodec::<BlobRequest, BlobResponse>::default();
        let proto = StreamProtocol::new(btd_protocol::wire::protocols::BLOB);
        codec
            .write_response(&proto, &mut bytes, reply)
            .await
            .unwrap();
        let got = codec
            .read_response(&proto, &mut futures::io::Cursor::new(bytes))
            .await
            .unwrap();
        let BlobResponse::Error(e) = got else {
            panic!("{got:?}")
        };
        assert!(
            e.message.len() <= MAX_TEXT_BYTES,
            "{} bytes",
            e.message.len()
        );
        assert!(!e.message.contains('\x1b'));
    }
}
