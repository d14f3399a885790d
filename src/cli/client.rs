//! The CLI's HTTP client: hyper's HTTP/1.1 client over the daemon's unix
//! socket, one connection per request, each driven by a current-thread
//! runtime of its own so that the verbs stay plain blocking code.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{self, Stream};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::api::types::{Envelope, Operation};

/// How long one request may take, waits for operations included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3900);

/// Upload chunk size.
const CHUNK: usize = 64 * 1024;

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the corral daemon at {path} (is `corral daemon` running? set --socket or CORRAL_SOCKET)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to the daemon failed")]
    Io(#[from] std::io::Error),
    #[error("connection to the daemon failed")]
    Http(#[from] hyper::Error),
    #[error("bad response from the daemon: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("operation failed: {0}")]
    Operation(String),
}

/// A raw response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What a request carries.
enum Body {
    Empty,
    /// Bytes with their content type.
    Bytes(String, Vec<u8>),
    /// A file streamed with its content type.
    File(String, std::fs::File),
}

type BoxedBody = BoxBody<Bytes, std::io::Error>;

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request and reads the whole response; `body` is its
    /// content type, its bytes and their length.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &mut dyn Read, u64)>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let body = match body {
            Some((ct, reader, len)) => {
                let mut bytes = Vec::new();
                reader.take(len).read_to_end(&mut bytes)?;
                Body::Bytes(ct.to_string(), bytes)
            }
            None => Body::Empty,
        };
        self.exchange(method, path, body, headers)
    }

    /// One request on a runtime of its own, within the request timeout.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.send(method, path, body, headers))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ClientError::Io(std::io::ErrorKind::TimedOut.into())),
            }
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let mut req = Request::builder()
            .method(
                Method::from_bytes(method.as_bytes())
                    .map_err(|e| ClientError::Protocol(e.to_string()))?,
            )
            .uri(path)
            .header(HOST, "corral")
            .header(CONNECTION, "close");
        for (k, v) in headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| ClientError::Protocol(e.to_string()))?,
                HeaderValue::from_str(v).map_err(|e| ClientError::Protocol(e.to_string()))?,
            );
        }
        let body: BoxedBody = match body {
            Body::Empty => {
                req = req.header(CONTENT_LENGTH, 0);
                Empty::new().map_err(|never| match never {}).boxed()
            }
            Body::Bytes(ct, bytes) => {
                req = req
                    .header(CONTENT_TYPE, ct)
                    .header(CONTENT_LENGTH, bytes.len());
                Full::new(Bytes::from(bytes))
                    .map_err(|never| match never {})
                    .boxed()
            }
            Body::File(ct, file) => {
                let len = file.metadata()?.len();
                req = req.header(CONTENT_TYPE, ct).header(CONTENT_LENGTH, len);
                BodyExt::boxed(StreamBody::new(file_frames(tokio::fs::File::from_std(
                    file,
                ))))
            }
        };
        let req = req
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;

        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        drop(sender);
        // The daemon closes the connection; its end is not an error of ours.
        let _ = conn.await;
        Ok(Response { status, body })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Envelope<T>, ClientError> {
        let body = match json {
            Some(j) => Body::Bytes("application/json".into(), j.to_string().into_bytes()),
            None => Body::Empty,
        };
        decode(self.exchange(method, path, body, &[])?)
    }

    /// GET returning the metadata.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<T>("GET", path, None)?
            .metadata
            .ok_or_else(|| ClientError::Protocol("response without metadata".into()))
    }

    /// GET of a plain-text resource.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.request("GET", path, None, &[])?;
        if resp.status >= 400 {
            return Err(api_error(resp));
        }
        Ok(String::from_utf8_lossy(&resp.body).into_owned())
    }

    /// A synchronous call returning metadata.
    pub fn sync<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        self.call::<T>(method, path, json)?
            .metadata
            .ok_or_else(|| ClientError::Protocol("response without metadata".into()))
    }

    /// An asynchronous call: waits for its operation to end.
    pub fn run(
        &self,
        method: &str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Operation, ClientError> {
        let env = self.call::<Operation>(method, path, json)?;
        self.wait(env)
    }

    /// Waits for the operation of an async response.
    pub fn wait(&self, env: Envelope<Operation>) -> Result<Operation, ClientError> {
        let url = env
            .operation
            .ok_or_else(|| ClientError::Protocol("async response without an operation".into()))?;
        let op: Operation = self.get(&format!("{url}/wait?timeout=-1"))?;
        if op.status == "Success" {
            Ok(op)
        } else {
            Err(ClientError::Operation(op.err))
        }
    }

    /// Uploads a file as a raw body (image import).
    pub fn upload(
        &self,
        path: &str,
        file: &Path,
        headers: &[(&str, &str)],
    ) -> Result<Operation, ClientError> {
        let f = std::fs::File::open(file)?;
        let resp = self.exchange(
            "POST",
            path,
            Body::File("application/octet-stream".into(), f),
            headers,
        )?;
        let env = decode::<Operation>(resp)?;
        self.wait(env)
    }
}

/// A file as body frames, read a chunk at a time.
fn file_frames(
    f: tokio::fs::File,
) -> Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync>> {
    Box::pin(stream::try_unfold(f, |mut f| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Frame::data(Bytes::from(buf)), f)))
    }))
}

fn api_error(resp: Response) -> ClientError {
    let message = serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned());
    ClientError::Api {
        status: resp.status,
        message,
    }
}

fn decode<T: DeserializeOwned>(resp: Response) -> Result<Envelope<T>, ClientError> {
    if resp.status >= 400 {
        return Err(api_error(resp));
    }
    serde_json::from_slice(&resp.body).map_err(|e| ClientError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Serves one canned answer per connection on a fresh socket and
    /// returns the requests it saw.
    fn serve(
        answers: Vec<&'static [u8]>,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        std::thread::JoinHandle<Vec<String>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                loop {
                    let n = s.read(&mut buf).unwrap();
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                seen.push(String::from_utf8_lossy(&req).to_string());
                s.write_all(answer).unwrap();
            }
            seen
        });
        (dir, sock, handle)
    }

    #[test]
    fn reads_length_and_chunked_responses() {
        let (_dir, sock, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"garbage\r\n",
        ]);
        let c = Client::new(&sock);
        let r = c.request("GET", "/1.0", None, &[]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let mut cur = std::io::Cursor::new(&b"{}"[..]);
        let r = c
            .request(
                "POST",
                "/1.0/images",
                Some(("application/json", &mut cur, 2)),
                &[("X-Corral-Alias", "a")],
            )
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(c.request("GET", "/1.0", None, &[]).is_err());
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /1.0 HTTP/1.1\r\n"), "{}", seen[0]);
        assert!(seen[0].contains("host: corral\r\n"));
        assert!(seen[0].contains("connection: close\r\n"));
        assert!(seen[0].contains("content-length: 0\r\n"));
        assert!(seen[1].starts_with("POST /1.0/images HTTP/1.1\r\n"));
        assert!(seen[1].contains("x-corral-alias: a\r\n"));
        assert!(seen[1].contains("content-type: application/json\r\n"));
        assert!(seen[1].ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn uploads_a_file_with_its_length() {
        let (dir, sock, server) = serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]);
        let file = dir.path().join("root.tar");
        let data = vec![7u8; CHUNK * 2 + 5];
        std::fs::write(&file, &data).unwrap();
        let c = Client::new(&sock);
        let r = c
            .exchange(
                "POST",
                "/1.0/images",
                Body::File(
                    "application/octet-stream".into(),
                    std::fs::File::open(&file).unwrap(),
                ),
                &[],
            )
            .unwrap();
        assert_eq!(r.status, 200);
        let seen = server.join().unwrap();
        assert!(seen[0].contains(&format!("content-length: {}\r\n", data.len())));
        assert!(!seen[0].contains("transfer-encoding"));
    }

    #[test]
    fn a_missing_socket_says_how_to_reach_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let c = Client::new(&dir.path().join("none.sock"));
        let e = c.request("GET", "/1.0", None, &[]).err().unwrap();
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("cannot reach the corral daemon at "));
    }
}
