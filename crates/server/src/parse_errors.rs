//! hyper's own answers to requests it cannot parse (a malformed request
//! line or header, a target or head past its limits), rewritten on the
//! connection's byte stream as problem documents.
//!
//! hyper answers these before any service sees a request and offers no
//! hook to shape the answer: it writes a bare head with `content-length: 0`
//! and closes the connection. Every error tenantd answers is a problem with
//! a stable code, so the connection's writer recognises that exact head
//! (status, `connection: close`, `content-length: 0`, `date`, nothing else,
//! as the whole of one write) and writes a problem in its place. No answer
//! to a request tenantd served has that shape: each carries `x-request-id`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use tenantd_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::problem::ApiError;

/// The problem bodies for hyper's automatic answers, built once per server.
#[derive(Debug)]
pub struct ParseErrorAnswers {
    malformed: Vec<u8>,
    uri_too_long: Vec<u8>,
    head_too_large: Vec<u8>,
}

impl ParseErrorAnswers {
    /// `header_lines` and `head_bytes` are hyper's limits, quoted in the
    /// 431's detail.
    pub fn new(header_lines: usize, head_bytes: usize) -> Arc<Self> {
        let body = |code, detail: String| ApiError::with_detail(code, detail).body(None, None);
        Arc::new(Self {
            malformed: body(
                ErrorCode::MalformedRequest,
                "The request line or a header could not be parsed as HTTP/1.1 (for example, \
                 two different Content-Length values or an unknown Transfer-Encoding)"
                    .to_owned(),
            ),
            uri_too_long: body(
                ErrorCode::UriTooLong,
                "The request target is longer than the server accepts".to_owned(),
            ),
            head_too_large: body(
                ErrorCode::HeadersTooLarge,
                format!(
                    "The request has more than {header_lines} header lines or a head longer \
                     than {head_bytes} bytes"
                ),
            ),
        })
    }

    /// The problem answer that replaces `written` when it is exactly one of
    /// hyper's automatic heads.
    fn replacement(&self, written: &[u8]) -> Option<Vec<u8>> {
        let (status, date) = automatic_head(written)?;
        let body = match status {
            StatusCode::BAD_REQUEST => &self.malformed,
            StatusCode::URI_TOO_LONG => &self.uri_too_long,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => &self.head_too_large,
            _ => return None,
        };
        let mut answer = format!(
            "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: application/problem+json\r\n\
             content-length: {}\r\ndate: ",
            status.as_str(),
            status.canonical_reason().unwrap_or_default(),
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(date);
        answer.extend_from_slice(b"\r\n\r\n");
        answer.extend_from_slice(body);
        Some(answer)
    }
}

/// The status and `date` value of `written` if it is, in full, the head
/// hyper writes for a request it could not parse.
fn automatic_head(written: &[u8]) -> Option<(StatusCode, &[u8])> {
    // The longest is 123 bytes; most writes are told apart by length alone.
    if written.len() > 128 {
        return None;
    }
    let rest = written.strip_prefix(b"HTTP/1.1 ")?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    if ![
        StatusCode::BAD_REQUEST,
        StatusCode::URI_TOO_LONG,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ]
    .contains(&status)
    {
        return None;
    }
    let rest = rest[3..].strip_prefix(b" ")?;
    let rest = rest.strip_prefix(status.canonical_reason()?.as_bytes())?;
    let date = rest
        .strip_prefix(b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: ")?
        .strip_suffix(b"\r\n\r\n")?;
    // An IMF-fixdate, e.g. `Tue, 01 Dec 2026 14:28:00 GMT`.
    (date.len() == 29 && !date.contains(&b'\r')).then_some((status, date))
}

/// A connection's stream whose writes of hyper's automatic heads become
/// problem answers; everything else passes through untouched.
pub struct ProblemStream<IO> {
    inner: IO,
    answers: Arc<ParseErrorAnswers>,
    /// A replacement being written: its bytes, how many are out, and the
    /// length of the write it stands for (reported once it is all out).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<IO> ProblemStream<IO> {
    pub fn new(inner: IO, answers: Arc<ParseErrorAnswers>) -> Self {
        Self {
            inner,
            answers,
            pending: None,
        }
    }
}

impl<IO: AsyncWrite + Unpin> ProblemStream<IO> {
    /// Writes out the pending replacement; ready with the replaced write's
    /// length once every byte is out.
    fn drive_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, out, stands_for)) = &mut self.pending else {
            return Poll::Ready(Ok(0));
        };
        while *out < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*out..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *out += n;
        }
        let stands_for = *stands_for;
        self.pending = None;
        Poll::Ready(Ok(stands_for))
    }

    /// Starts replacing `written` if it is an automatic head.
    fn intercept(&mut self, written: &[u8]) -> bool {
        match self.answers.replacement(written) {
            Some(answer) => {
                self.pending = Some((answer, 0, written.len()));
                true
            }
            None => false,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ProblemStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ProblemStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_some() || self.intercept(buf) {
            return self.drive_pending(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_some() {
            return self.drive_pending(cx);
        }
        // hyper's automatic head is the only buffer of its write.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if self.intercept(only) {
                return self.drive_pending(cx);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const DATE: &str = "Tue, 01 Dec 2026 14:28:00 GMT";

    fn head(status: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
        )
    }

    async fn through_stream(writes: &[&[u8]]) -> String {
        let mut out = Vec::new();
        let mut stream = ProblemStream::new(&mut out, ParseErrorAnswers::new(512, 65_536));
        for write in writes {
            stream.write_all(write).await.unwrap();
        }
        stream.flush().await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn each_automatic_head_becomes_its_problem() {
        for (status, code) in [
            ("400 Bad Request", "malformed_request"),
            ("414 URI Too Long", "uri_too_long"),
            ("431 Request Header Fields Too Large", "headers_too_large"),
        ] {
            let written = through_stream(&[head(status).as_bytes()]).await;
            let (answer_head, body) = written.split_once("\r\n\r\n").unwrap();
            assert!(answer_head.starts_with(&format!("HTTP/1.1 {status}\r\n")));
            assert!(answer_head.contains("content-type: application/problem+json"));
            assert!(answer_head.contains(&format!("content-length: {}", body.len())));
            assert!(answer_head.contains(&format!("date: {DATE}")));
            let problem: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(problem["code"], code);
            assert_eq!(problem["status"].as_u64(), status[..3].parse().ok());
        }
    }

    #[tokio::test]
    async fn anything_but_the_exact_automatic_head_passes_untouched() {
        let served = "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
                      x-request-id: 7\r\ndate: Tue, 01 Dec 2026 14:28:00 GMT\r\n\r\n";
        let other_status = head("404 Not Found");
        let with_body = format!("{}x", head("400 Bad Request"));
        for written in [served, &other_status, &with_body] {
            assert_eq!(through_stream(&[written.as_bytes()]).await, written);
        }
        // Only a whole write is recognised: hyper writes its head in one.
        let automatic = head("400 Bad Request");
        let (first, second) = automatic.split_at(20);
        assert_eq!(
            through_stream(&[first.as_bytes(), second.as_bytes()]).await,
            automatic
        );
    }
}
