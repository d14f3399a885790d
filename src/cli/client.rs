//! A small blocking HTTP/1.1 client over the daemon's unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::types::{Envelope, Operation};

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

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request; `body` is JSON unless `content_type` says otherwise.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &mut dyn Read, u64)>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        stream.set_read_timeout(Some(Duration::from_secs(3900)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match &body {
            Some((ct, _, len)) => head.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {len}\r\n\r\n"
            )),
            None => head.push_str("Content-Length: 0\r\n\r\n"),
        }
        stream.write_all(head.as_bytes())?;
        if let Some((_, reader, _)) = body {
            std::io::copy(reader, &mut stream)?;
        }
        stream.flush()?;
        read_response(BufReader::new(stream))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Envelope<T>, ClientError> {
        let bytes = json.map(|j| j.to_string().into_bytes());
        let resp = match &bytes {
            Some(b) => {
                let mut cur = std::io::Cursor::new(b.as_slice());
                self.request(
                    method,
                    path,
                    Some(("application/json", &mut cur, b.len() as u64)),
                    &[],
                )?
            }
            None => self.request(method, path, None, &[])?,
        };
        decode(resp)
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
        let mut f = std::fs::File::open(file)?;
        let len = f.metadata()?.len();
        let resp = self.request(
            "POST",
            path,
            Some(("application/octet-stream", &mut f, len)),
            headers,
        )?;
        let env = decode::<Operation>(resp)?;
        self.wait(env)
    }
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

fn read_response<R: BufRead>(mut r: R) -> Result<Response, ClientError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bad status line {line:?}")))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                length = v.parse().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| ClientError::Protocol("bad chunk size".into()))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
        let r = read_response(&raw[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = read_response(&raw[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(read_response(&b"garbage\r\n"[..]).is_err());
    }
}
