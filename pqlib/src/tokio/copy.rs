//! COPY on the async client: a `Sink` of chunks for COPY FROM STDIN, a `Stream` of chunks for
//! COPY TO STDOUT, and binary-format helpers on top of them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::sync::oneshot;

use super::Client;
use super::driver::{CopyInMessage, CopyTarget, Driving, Work};
use crate::binary_copy::{
    BinaryCopyOutRow, HAS_OIDS, SIGNATURE, Scan, encode_header, encode_row, make_row, scan,
};
use crate::error::{Error, Result};
use crate::types::{ToSql, Type};

/// How many chunks may wait between a sink and the connection task before `send` waits.
const CHANNEL_CHUNKS: usize = 16;
/// Binary rows are gathered into chunks of about this size before they are sent.
const BINARY_CHUNK: usize = 64 * 1024;

impl Client {
    /// Starts a `COPY … FROM STDIN`; send the data through the returned sink, then
    /// [`finish`](CopyInSink::finish) it. Dropping the sink without finishing aborts the COPY.
    ///
    /// The connection is taken out of pipeline mode for the COPY (libpq allows no COPY in
    /// it): other statements on this client wait until the COPY is over.
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let mut sink = client.copy_in("COPY t (a, b) FROM STDIN").await?;
    /// sink.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n")).await?;
    /// let rows = sink.finish().await?;
    /// assert_eq!(rows, 2);
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQputCopyData")]
    pub async fn copy_in(&self, sql: &str) -> Result<CopyInSink> {
        let sql = std::ffi::CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let (sender, receiver) = futures_channel::mpsc::channel(CHANNEL_CHUNKS);
        let started = self
            .request_work(Work::Copy {
                sql,
                target: CopyTarget::In(receiver),
            })
            .await?;
        not_a_copy(started)?;
        Ok(CopyInSink {
            sender: Some(sender),
        })
    }

    /// Starts a `COPY … TO STDOUT` and returns its data as a stream of chunks of whole rows
    /// (up to about 64 KiB of what has arrived). An error that ends the COPY is the stream's last item.
    /// Dropping the stream early makes the connection task read and discard the rest.
    ///
    /// A consumer that falls behind holds the server back: once 16 chunks wait unread, the
    /// connection task stops reading the socket until the stream takes one, so memory stays
    /// bounded (about 1 MiB, plus what libpq has buffered) however much the COPY sends.
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let mut stream = client.copy_out("COPY t TO STDOUT").await?;
    /// while let Some(chunk) = stream.next().await {
    ///     let chunk = chunk?;
    ///     print!("{}", String::from_utf8_lossy(&chunk));
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQgetCopyData")]
    pub async fn copy_out(&self, sql: &str) -> Result<CopyOutStream> {
        let sql = std::ffi::CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let (sender, receiver) = futures_channel::mpsc::channel(CHANNEL_CHUNKS);
        let started = self
            .request_work(Work::Copy {
                sql,
                target: CopyTarget::Out(sender),
            })
            .await?;
        not_a_copy(started)?;
        Ok(CopyOutStream {
            receiver,
            ended: false,
            driving: self.driving(),
        })
    }
}

/// A COPY starts with an empty answer; a statement that was not a COPY answers with results.
fn not_a_copy(results: Vec<crate::handle::PgResult>) -> Result<()> {
    if results.is_empty() {
        Ok(())
    } else {
        Err(Error::bad_input("the statement is not a COPY"))
    }
}

/// The data side of `COPY … FROM STDIN` on the async client: a [`Sink`] of byte chunks (in the
/// COPY's format), made by [`Client::copy_in`].
#[derive(Debug)]
pub struct CopyInSink {
    sender: Option<futures_channel::mpsc::Sender<CopyInMessage>>,
}

impl CopyInSink {
    /// Sends one chunk of COPY data (waiting while the connection task is behind); the same
    /// as `SinkExt::send`. A send abandoned while it waits may already have handed its chunk
    /// over: the chunk is then copied whole, as if the send had completed.
    #[doc(alias = "PQputCopyData")]
    pub async fn send(&mut self, chunk: Bytes) -> Result<()> {
        futures_util_lite::send(self, chunk).await
    }

    /// Ends the data and waits for the server's verdict: the number of rows copied, or the
    /// error (a constraint violation, malformed data) that made the COPY fail.
    #[doc(alias = "PQputCopyEnd")]
    pub async fn finish(mut self) -> Result<u64> {
        use futures_util_lite::send;
        let mut sender = self
            .sender
            .take()
            .ok_or_else(|| Error::client("the COPY is already finished"))?;
        let (reply, answer) = oneshot::channel();
        send(&mut sender, CopyInMessage::Finish(reply))
            .await
            .map_err(|_| lost())?;
        answer
            .await
            .map_err(|_| Error::closed("the connection task ended during the COPY"))?
    }

    fn sender(&mut self) -> Result<&mut futures_channel::mpsc::Sender<CopyInMessage>> {
        self.sender
            .as_mut()
            .ok_or_else(|| Error::client("the COPY is already finished"))
    }
}

impl Sink<Bytes> for CopyInSink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let sender = self.sender()?;
        Pin::new(sender).poll_ready(cx).map_err(|_| lost())
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        let sender = self.sender()?;
        Pin::new(sender)
            .start_send(CopyInMessage::Data(item))
            .map_err(|_| lost())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let sender = self.sender()?;
        Pin::new(sender).poll_flush(cx).map_err(|_| lost())
    }

    /// Closing the sink without [`CopyInSink::finish`] aborts the COPY.
    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.sender = None;
        Poll::Ready(Ok(()))
    }
}

fn lost() -> Error {
    Error::closed("the connection task ended during the COPY")
}

/// The data of `COPY … TO STDOUT` on the async client, made by [`Client::copy_out`].
pub struct CopyOutStream {
    receiver: futures_channel::mpsc::Receiver<Result<Bytes>>,
    /// The connection task sent the last item (an empty chunk marks a complete COPY; data
    /// chunks are never empty). A channel that closes before it means the COPY was cut off.
    ended: bool,
    /// The stream reads the socket itself while it waits for a chunk, so a chunk needs no
    /// turn of the connection task in between.
    driving: Driving,
}

impl CopyOutStream {
    /// The next chunk, or `None` at the end; the same as `StreamExt::next`.
    #[doc(alias = "PQgetCopyData")]
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        poll_stream(self).await
    }
}

impl std::fmt::Debug for CopyOutStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOutStream")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Stream for CopyOutStream {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let receiver = &mut this.receiver;
        let item = std::task::ready!(
            this.driving
                .poll_until(cx, |cx| Pin::new(&mut *receiver).poll_next(cx))
        );
        let last = match item {
            Some(Ok(chunk)) if !chunk.is_empty() => return Poll::Ready(Some(Ok(chunk))),
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(Err(e)),
            None => Some(Err(Error::closed(
                "the connection was lost during the COPY",
            ))),
        };
        // The COPY is over (complete, failed or cut off): stop driving.
        this.ended = true;
        this.driving.withdraw();
        Poll::Ready(last)
    }
}

/// Writes rows in binary COPY format to a [`CopyInSink`], encoding each value once into a
/// shared buffer (no allocation per field) and sending chunks of about 64 KiB.
///
/// ```no_run
/// use pqlib::tokio::BinaryCopyInWriter;
/// use pqlib::types::Type;
/// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
/// let sink = client.copy_in("COPY t (id, name) FROM STDIN (FORMAT binary)").await?;
/// let mut writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
/// writer.write(&[&1i32, &"one"]).await?;
/// let rows = writer.finish().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BinaryCopyInWriter {
    sink: CopyInSink,
    types: Vec<Type>,
    buffer: BytesMut,
}

impl BinaryCopyInWriter {
    /// Wraps a sink from a `COPY … FROM STDIN (FORMAT binary)` whose columns have `types`.
    pub fn new(sink: CopyInSink, types: &[Type]) -> BinaryCopyInWriter {
        let mut buffer = BytesMut::with_capacity(BINARY_CHUNK);
        encode_header(&mut buffer);
        BinaryCopyInWriter {
            sink,
            types: types.to_vec(),
            buffer,
        }
    }

    /// Appends one row; the values must match the column types in number and type.
    #[doc(alias = "PQputCopyData")]
    pub async fn write(&mut self, values: &[&(dyn ToSql + Sync)]) -> Result<()> {
        encode_row(&mut self.buffer, &self.types, values.iter().copied())?;
        if self.buffer.len() >= BINARY_CHUNK {
            let chunk = self.buffer.split().freeze();
            futures_util_lite::send(&mut self.sink, chunk).await?;
        }
        Ok(())
    }

    /// Sends the last rows and the trailer, and returns the number of rows copied.
    #[doc(alias = "PQputCopyEnd")]
    pub async fn finish(mut self) -> Result<u64> {
        self.buffer.put_i16(-1);
        let chunk = self.buffer.split().freeze();
        futures_util_lite::send(&mut self.sink, chunk).await?;
        self.sink.finish().await
    }
}

/// Reads rows in binary COPY format from a [`CopyOutStream`].
///
/// ```no_run
/// use pqlib::tokio::BinaryCopyOutStream;
/// use pqlib::types::Type;
/// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
/// let stream = client.copy_out("COPY t (id) TO STDOUT (FORMAT binary)").await?;
/// let mut rows = BinaryCopyOutStream::new(stream, &[Type::INT4]);
/// while let Some(row) = rows.next().await {
///     let id: i32 = row?.get(0);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BinaryCopyOutStream {
    stream: CopyOutStream,
    types: Arc<[Type]>,
    buffer: BytesMut,
    header_done: bool,
    finished: bool,
}

impl BinaryCopyOutStream {
    /// Wraps a stream from a `COPY … TO STDOUT (FORMAT binary)` whose columns have `types`.
    pub fn new(stream: CopyOutStream, types: &[Type]) -> BinaryCopyOutStream {
        BinaryCopyOutStream {
            stream,
            types: types.into(),
            buffer: BytesMut::new(),
            header_done: false,
            finished: false,
        }
    }

    /// The next row; `None` after the trailer (or after an error).
    #[doc(alias = "PQgetCopyData")]
    pub async fn next(&mut self) -> Option<Result<BinaryCopyOutRow>> {
        if self.finished {
            return None;
        }
        let row = self.next_row().await;
        if !matches!(row, Some(Ok(_))) {
            self.finished = true;
        }
        row
    }

    async fn next_row(&mut self) -> Option<Result<BinaryCopyOutRow>> {
        loop {
            if !self.header_done {
                match header_length(&self.buffer) {
                    Ok(Some(length)) => {
                        self.buffer.advance(length);
                        self.header_done = true;
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.header_done && !self.buffer.is_empty() {
                match scan(&self.buffer, self.types.len()) {
                    Ok(Scan::Row(length)) => {
                        let row = make_row(&self.types, &self.buffer[..length]);
                        self.buffer.advance(length);
                        return Some(Ok(row));
                    }
                    Ok(Scan::Trailer) => {
                        // Whatever follows is the end of the COPY; an error there is reported.
                        while let Some(chunk) = poll_stream(&mut self.stream).await {
                            if let Err(e) = chunk {
                                return Some(Err(e));
                            }
                        }
                        return None;
                    }
                    Ok(Scan::Partial) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            match poll_stream(&mut self.stream).await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    return Some(Err(Error::bad_input(
                        "the COPY data ended before the binary trailer",
                    )));
                }
            }
        }
    }
}

/// The length of the binary COPY header at the start of `buf`, `None` if incomplete.
fn header_length(buf: &[u8]) -> Result<Option<usize>> {
    const FIXED: usize = 19;
    if buf.len() >= SIGNATURE.len() && &buf[..SIGNATURE.len()] != SIGNATURE {
        return Err(Error::bad_input(
            "the COPY data is not in binary format (no PGCOPY signature); use COPY … TO STDOUT (FORMAT binary)",
        ));
    }
    if buf.len() < FIXED {
        return Ok(None);
    }
    let flags = i32::from_be_bytes([buf[11], buf[12], buf[13], buf[14]]);
    if flags & HAS_OIDS != 0 {
        return Err(Error::unsupported("binary COPY data with OIDs"));
    }
    let extension = i32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]);
    let extension = usize::try_from(extension)
        .map_err(|_| Error::bad_input("a negative COPY header extension"))?;
    Ok((buf.len() >= FIXED + extension).then_some(FIXED + extension))
}

async fn poll_stream(stream: &mut CopyOutStream) -> Option<Result<Bytes>> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// The two combinators this module needs, without depending on `futures-util`.
mod futures_util_lite {
    use std::pin::Pin;

    use futures_sink::Sink;

    /// Sends one item and flushes it, as `SinkExt::send` does.
    pub(super) async fn send<S, T>(sink: &mut S, item: T) -> Result<(), S::Error>
    where
        S: Sink<T> + Unpin,
    {
        std::future::poll_fn(|cx| Pin::new(&mut *sink).poll_ready(cx)).await?;
        Pin::new(&mut *sink).start_send(item)?;
        std::future::poll_fn(|cx| Pin::new(&mut *sink).poll_flush(cx)).await
    }
}
