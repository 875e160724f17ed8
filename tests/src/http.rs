//! A small blocking HTTP/1.0 client for the dashboard's endpoints: GET,
//! form POST, and a server-sent-events reader. HTTP/1.0 keeps the bodies
//! plain (no chunked encoding): the server closes the connection at the end.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `host:port` and the path of an `http://host:port/path` URL.
pub fn split(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

/// An answer: status code, headers (lower-cased names) and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub code: u16,
    /// `(name, value)`, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

fn connect(host: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn head(r: &mut BufReader<TcpStream>) -> Result<(u16, Vec<(String, String)>), String> {
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("read status line: {e}"))?;
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)
            .map_err(|e| format!("read header: {e}"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok((code, headers))
}

fn exchange(url: &str, request: impl FnOnce(&str, &str) -> String) -> Result<Response, String> {
    let (host, path) = split(url);
    let mut s = connect(&host)?;
    s.write_all(request(&host, &path).as_bytes())
        .map_err(|e| format!("send to {url}: {e}"))?;
    let mut r = BufReader::new(s);
    let (code, headers) = head(&mut r)?;
    let mut body = String::new();
    r.read_to_string(&mut body)
        .map_err(|e| format!("read body of {url}: {e}"))?;
    Ok(Response {
        code,
        headers,
        body,
    })
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, String> {
    exchange(url, |host, path| {
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")
    })
}

/// Percent-encodes a form value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `POST url` with `fields` as `application/x-www-form-urlencoded`.
pub fn post_form(url: &str, fields: &[(&str, &str)]) -> Result<Response, String> {
    post_form_with(url, fields, None)
}

/// `POST url` with `fields`, sending `token` as `Authorization: Bearer`.
pub fn post_form_with(
    url: &str,
    fields: &[(&str, &str)],
    token: Option<&str>,
) -> Result<Response, String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let body = body.join("&");
    exchange(url, |host, path| {
        format!(
            "POST {path} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    })
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `id:`.
    pub id: String,
    /// Its `event:` name.
    pub event: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// An open `text/event-stream`.
pub struct Sse {
    r: BufReader<TcpStream>,
}

impl Sse {
    /// Opens `url`, sending `Last-Event-ID: last` when given.
    pub fn open(url: &str, last: Option<&str>) -> Result<Self, String> {
        let (host, path) = split(url);
        let mut s = connect(&host)?;
        let resume = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        s.write_all(
            format!(
                "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n{resume}\r\n"
            )
            .as_bytes(),
        )
        .map_err(|e| format!("send to {url}: {e}"))?;
        let mut r = BufReader::new(s);
        let (code, headers) = head(&mut r)?;
        let ct = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if code != 200 || !ct.starts_with("text/event-stream") {
            return Err(format!("{url}: status {code}, content-type {ct:?}"));
        }
        Ok(Self { r })
    }

    /// The next event (comments and keep-alives skipped), within `deadline`.
    pub fn next(&mut self, deadline: Duration) -> Result<SseEvent, String> {
        let until = Instant::now() + deadline;
        let mut ev = SseEvent {
            id: String::new(),
            event: String::new(),
            data: String::new(),
        };
        let mut any = false;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no event within {deadline:?}"));
            }
            self.r
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            let n = self
                .r
                .read_line(&mut line)
                .map_err(|e| format!("read event stream: {e}"))?;
            if n == 0 {
                return Err("the event stream ended".into());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if any {
                    return Ok(ev);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            any = true;
            match field {
                "id" => ev.id = value.to_owned(),
                "event" => ev.event = value.to_owned(),
                "data" => {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}
