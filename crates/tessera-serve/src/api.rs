//! The HTTP API in OpenAI's shapes: routes, authentication, request parsing and validation,
//! responses and server-sent-event streams, and OpenAI's error object for every failure.

use crate::engine::{EngineHandle, Event, GenRequest, LogprobsSpec, SubmitError, TokenLogprob};
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tessera::generate::json::Constraint;
use tessera::generate::json_schema::Schema;
use tessera::generate::{FinishReason, SamplingParams};
use tessera::tasks::embed::Embedder;
use tessera::tokenizer::chat::{Message, ModelTokenizer};
use tokio::sync::mpsc::UnboundedReceiver;

/// What every handler shares.
pub struct AppState {
    pub model_name: String,
    pub model_path: PathBuf,
    pub describe: String,
    pub ctx: usize,
    pub tok: Arc<ModelTokenizer>,
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    pub api_key: Option<String>,
    pub embedder: Option<(String, Arc<Mutex<Embedder>>)>,
    pub created: u64,
    pub parallel: usize,
    /// Largest request body (bytes).
    pub max_body: usize,
}

/// Bodies declared larger than the limit are still read (and dropped) up to this size before the
/// 413 answer, so the client gets the answer rather than a broken pipe; beyond it the connection
/// is closed.
const DRAIN_LIMIT: usize = 64 << 20;

type AppRef = Arc<AppState>;

/// The routes, with authentication and the body size limit.
pub fn router(state: AppRef, max_body: usize) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        };
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param,
                         "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Equal strings, compared in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bearer-token check for the API routes and `/metrics` (`/` and `/health` stay open), and the
/// request count by route and status.
async fn auth(State(s): State<AppRef>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let route = match path.as_str() {
        "/"
        | "/health"
        | "/metrics"
        | "/v1/models"
        | "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/tokenize"
        | "/detokenize" => path.clone(),
        _ => "other".to_string(),
    };
    let protected = path.starts_with("/v1/")
        || path == "/metrics"
        || path == "/tokenize"
        || path == "/detokenize";
    if let (true, Some(key)) = (protected, &s.api_key) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given.as_bytes(), key.as_bytes()) {
            s.metrics.request(&route, 401);
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (send 'Authorization: Bearer KEY')",
            )
            .code("invalid_api_key")
            .into_response();
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > s.max_body) {
        if n <= DRAIN_LIMIT {
            let _ = axum::body::to_bytes(req.into_body(), DRAIN_LIMIT).await;
        }
        s.metrics.request(&route, 413);
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body ({n} bytes) is over the limit of {} bytes",
                s.max_body
            ),
        )
        .into_response();
    }
    let r = next.run(req).await;
    s.metrics.request(&route, r.status().as_u16());
    r
}

/// Parse a JSON body: the right content type, within the size limit, valid JSON of the shape.
fn parse<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
        } else {
            ApiError::bad(format!("cannot read the request body: {e}"))
        }
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json (got '{ct}')"),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        let what = if std::str::from_utf8(&body).is_err() {
            "the body is not valid UTF-8".to_string()
        } else {
            format!("invalid request: {e}")
        };
        ApiError::bad(what)
    })
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn index() -> Html<&'static str> {
    Html(include_str!("web/index.html"))
}

async fn health(State(s): State<AppRef>) -> Json<Value> {
    Json(json!({"status": "ok", "model": s.model_name, "slots": s.parallel, "ctx": s.ctx}))
}

async fn metrics(State(s): State<AppRef>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn models(State(s): State<AppRef>) -> Json<Value> {
    let mut data = vec![
        json!({"id": s.model_name, "object": "model", "created": s.created,
                               "owned_by": "tessera"}),
    ];
    if let Some((name, _)) = &s.embedder {
        data.push(json!({"id": name, "object": "model", "created": s.created,
                         "owned_by": "tessera"}));
    }
    Json(json!({"object": "list", "data": data}))
}

/// `stop`: a string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A chat message's content: a string, a list of parts (text parts are joined), or null.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The fields both completion endpoints share.
#[derive(Deserialize, Default)]
struct Common {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    response_format: Option<Value>,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
}

/// `prompt`: a string, token ids, or a list with one of either.
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Prompt,
    #[serde(flatten)]
    common: Common,
    logprobs: Option<i64>,
}

/// Which response shapes a generation uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// A validated generation request.
struct Gen {
    prompt: Vec<u32>,
    params: SamplingParams,
    n: usize,
    stream: bool,
    include_usage: bool,
    logprobs: Option<LogprobsSpec>,
    json: Option<Constraint>,
}

const MAX_N: i64 = 16;
const MAX_TOP_LOGPROBS: i64 = 20;

fn sampling(
    s: &AppState,
    c: &Common,
    prompt_len: usize,
) -> Result<(SamplingParams, usize), ApiError> {
    if prompt_len == 0 {
        return Err(ApiError::bad("the prompt is empty").param("prompt"));
    }
    if prompt_len >= s.ctx {
        return Err(ApiError::bad(format!(
            "the prompt has {prompt_len} tokens; this server's context is {} tokens",
            s.ctx
        ))
        .code("context_length_exceeded"));
    }
    let room = s.ctx - prompt_len;
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => room,
        Some(m) if m >= 1 => (m as usize).min(room),
        Some(m) => {
            return Err(
                ApiError::bad(format!("max_tokens must be at least 1, got {m}"))
                    .param("max_tokens"),
            )
        }
    };
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(
            ApiError::bad(format!("temperature must be in [0, 2], got {temperature}"))
                .param("temperature"),
        );
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(format!("top_p must be in (0, 1], got {top_p}")).param("top_p"));
    }
    let n = c.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::bad(format!("n must be in 1..={MAX_N}, got {n}")).param("n"));
    }
    let stop = match &c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::bad("stop: at most 4 non-empty strings").param("stop"));
    }
    let seed = c.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    Ok((
        SamplingParams {
            temperature,
            top_k: 0,
            top_p,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed,
            max_tokens,
            stop,
            ignore_eos: false,
        },
        n as usize,
    ))
}

impl Common {
    /// The validated generation of `prompt` these fields ask for.
    fn generation(
        &self,
        s: &AppState,
        prompt: Vec<u32>,
        logprobs: Option<LogprobsSpec>,
    ) -> Result<Gen, ApiError> {
        let (params, n) = sampling(s, self, prompt.len())?;
        let json = constraint(self, &params)?;
        Ok(Gen {
            prompt,
            params,
            n,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            logprobs,
            json,
        })
    }
}

/// The constraint `response_format` asks for: none (`text`), `json_object`, or `json_schema`
/// with its schema compiled (unsupported schema features are a 400 naming them). Stop strings
/// could cut a JSON answer, so they are refused with either JSON mode.
fn constraint(c: &Common, params: &SamplingParams) -> Result<Option<Constraint>, ApiError> {
    let Some(f) = &c.response_format else {
        return Ok(None);
    };
    let kind = f.get("type").and_then(Value::as_str);
    if matches!(kind, Some("json_object" | "json_schema")) && !params.stop.is_empty() {
        return Err(
            ApiError::bad("stop strings cannot be combined with a JSON response_format")
                .param("stop"),
        );
    }
    match kind {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::object())),
        Some("json_schema") => {
            let schema = f
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| {
                    ApiError::bad("response_format.json_schema.schema is missing")
                        .param("response_format")
                })?;
            let compiled = Schema::compile(schema)
                .map_err(|e| ApiError::bad(e.to_string()).param("response_format"))?;
            Ok(Some(Constraint::schema(Arc::new(compiled))))
        }
        Some(other) => Err(ApiError::bad(format!(
            "response_format '{other}' is not supported by this server yet"
        ))
        .param("response_format")),
    }
}

fn chat_gen(s: &AppState, r: ChatRequest) -> Result<Gen, ApiError> {
    if r.messages.is_empty() {
        return Err(ApiError::bad("messages must not be empty").param("messages"));
    }
    let mut msgs = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(
                ApiError::bad(format!("messages[{i}]: unknown role '{}'", m.role))
                    .param("messages"),
            );
        }
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut t = String::new();
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") => t.push_str(p.get("text").and_then(Value::as_str).unwrap_or("")),
                        other => {
                            return Err(ApiError::bad(format!(
                                "messages[{i}]: content part type {other:?} is not supported (text only)"
                            ))
                            .param("messages"))
                        }
                    }
                }
                t
            }
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            &m.role
        };
        msgs.push(Message::new(role, text));
    }
    let prompt = s
        .tok
        .prompt_ids(&msgs, true)
        .map_err(|e| ApiError::bad(format!("cannot apply the chat template: {e}")))?;
    let logprobs = match (r.logprobs.unwrap_or(false), r.top_logprobs) {
        (_, Some(k)) if !(0..=MAX_TOP_LOGPROBS).contains(&k) => {
            return Err(
                ApiError::bad(format!("top_logprobs must be in 0..={MAX_TOP_LOGPROBS}"))
                    .param("top_logprobs"),
            )
        }
        (false, Some(_)) => {
            return Err(ApiError::bad("top_logprobs needs logprobs: true").param("top_logprobs"))
        }
        (true, k) => Some(LogprobsSpec {
            top: k.unwrap_or(0) as usize,
        }),
        (false, None) => None,
    };
    r.common.generation(s, prompt, logprobs)
}

fn completion_gen(s: &AppState, r: CompletionRequest) -> Result<Gen, ApiError> {
    let vocab = s.tok.tokenizer.vocab_size() as u32;
    let encode = |t: &str| -> Result<Vec<u32>, ApiError> {
        let mut ids = s
            .tok
            .tokenizer
            .encode(t)
            .map_err(|e| ApiError::bad(format!("cannot tokenize the prompt: {e}")))?;
        s.tok.with_bos(&mut ids);
        Ok(ids)
    };
    let prompt = match r.prompt {
        Prompt::Text(t) => encode(&t)?,
        Prompt::Ids(ids) => ids,
        Prompt::Texts(v) if v.len() == 1 => encode(&v[0])?,
        Prompt::IdLists(v) if v.len() == 1 => v.into_iter().next().unwrap_or_default(),
        _ => {
            return Err(
                ApiError::bad("one prompt per request (send several requests)").param("prompt"),
            )
        }
    };
    if let Some(bad) = prompt.iter().find(|&&i| i >= vocab) {
        return Err(ApiError::bad(format!(
            "token id {bad} is outside the vocabulary ({vocab})"
        ))
        .param("prompt"));
    }
    let logprobs = match r.logprobs {
        None => None,
        Some(k) if (0..=5).contains(&k) => Some(LogprobsSpec { top: k as usize }),
        Some(_) => return Err(ApiError::bad("logprobs must be in 0..=5").param("logprobs")),
    };
    r.common.generation(s, prompt, logprobs)
}

async fn chat(
    State(s): State<AppRef>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let g = match parse::<ChatRequest>(&headers, body).and_then(|r| chat_gen(&s, r)) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    run_generation(s, g, Kind::Chat).await
}

async fn completions(
    State(s): State<AppRef>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let g = match parse::<CompletionRequest>(&headers, body).and_then(|r| completion_gen(&s, r)) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    run_generation(s, g, Kind::Text).await
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Eos | FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{prefix}-{t:x}{:04x}",
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token's text and bytes for the logprobs fields.
fn token_text(tok: &ModelTokenizer, id: u32) -> String {
    tok.tokenizer.decode(&[id]).unwrap_or_default()
}

fn chat_logprob(tok: &ModelTokenizer, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, logprob: f32| {
        let t = token_text(tok, id);
        json!({"token": t, "logprob": logprob, "bytes": t.as_bytes()})
    };
    let mut v = entry(lp.id, lp.logprob);
    v["top_logprobs"] = Value::Array(lp.top.iter().map(|&(i, l)| entry(i, l)).collect());
    v
}

/// Legacy completions' logprobs of one choice.
#[derive(Default)]
struct TextLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top: Vec<serde_json::Map<String, Value>>,
    offsets: Vec<usize>,
    len: usize,
}

impl TextLogprobs {
    fn push(&mut self, tok: &ModelTokenizer, lp: &TokenLogprob) {
        let t = token_text(tok, lp.id);
        self.offsets.push(self.len);
        self.len += t.len();
        self.tokens.push(t);
        self.token_logprobs.push(lp.logprob);
        self.top.push(
            lp.top
                .iter()
                .map(|&(i, l)| (token_text(tok, i), json!(l)))
                .collect(),
        );
    }

    fn json(&self) -> Value {
        json!({"tokens": self.tokens, "token_logprobs": self.token_logprobs,
               "top_logprobs": self.top, "text_offset": self.offsets})
    }
}

/// Queue the request and answer: one JSON body, or an SSE stream.
async fn run_generation(s: AppRef, g: Gen, kind: Kind) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let prompt_tokens = g.prompt.len();
    let req = GenRequest {
        prompt: g.prompt,
        params: g.params,
        n: g.n,
        logprobs: g.logprobs,
        json: g.json,
        events: tx,
        cancel: cancel.clone(),
        received: Instant::now(),
    };
    match s.engine.submit(req) {
        Ok(()) => {}
        Err(SubmitError::Busy) => {
            s.metrics.rejected_busy.add(1);
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "the server is busy (queue full); retry shortly",
            )
            .into_response();
        }
        Err(SubmitError::Closed) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped")
                .into_response()
        }
    }
    let ctx = Ctx {
        s,
        id: new_id(if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }),
        created: now(),
        kind,
        n: g.n,
        prompt_tokens,
        logprobs: g.logprobs.is_some(),
    };
    if g.stream {
        stream_response(ctx, rx, g.include_usage, cancel)
    } else {
        whole_response(ctx, rx).await
    }
}

/// What a response needs to know about its request.
struct Ctx {
    s: AppRef,
    id: String,
    created: u64,
    kind: Kind,
    n: usize,
    prompt_tokens: usize,
    logprobs: bool,
}

impl Ctx {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn usage(&self, completion: usize) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
               "total_tokens": self.prompt_tokens + completion})
    }
}

async fn whole_response(ctx: Ctx, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut texts = vec![String::new(); ctx.n];
    let mut chat_lps: Vec<Vec<Value>> = vec![Vec::new(); ctx.n];
    let mut text_lps: Vec<TextLogprobs> = (0..ctx.n).map(|_| TextLogprobs::default()).collect();
    let mut finish: Vec<Option<FinishReason>> = vec![None; ctx.n];
    let mut completion = 0;
    let mut done = 0;
    while done < ctx.n {
        match rx.recv().await {
            Some(Event::Token {
                index,
                text,
                logprob,
            }) => {
                texts[index].push_str(&text);
                if let Some(lp) = logprob {
                    match ctx.kind {
                        Kind::Chat => chat_lps[index].push(chat_logprob(&ctx.s.tok, &lp)),
                        Kind::Text => text_lps[index].push(&ctx.s.tok, &lp),
                    }
                }
            }
            Some(Event::Done {
                index,
                finish: f,
                completion_tokens,
            }) => {
                finish[index] = Some(f);
                completion += completion_tokens;
                done += 1;
            }
            Some(Event::Error(m)) => {
                return ApiError::new(StatusCode::BAD_REQUEST, m).into_response();
            }
            None => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "generation ended early")
                    .into_response()
            }
        }
    }
    let choices: Vec<Value> = (0..ctx.n)
        .map(|i| {
            let f = finish_name(finish[i].unwrap_or(FinishReason::Stop));
            match ctx.kind {
                Kind::Chat => json!({"index": i,
                    "message": {"role": "assistant", "content": texts[i]},
                    "logprobs": if ctx.logprobs { json!({"content": chat_lps[i]}) } else { Value::Null },
                    "finish_reason": f}),
                Kind::Text => json!({"index": i, "text": texts[i],
                    "logprobs": if ctx.logprobs { text_lps[i].json() } else { Value::Null },
                    "finish_reason": f}),
            }
        })
        .collect();
    Json(
        json!({"id": ctx.id, "object": ctx.object(false), "created": ctx.created,
                "model": ctx.s.model_name, "choices": choices, "usage": ctx.usage(completion),
                "system_fingerprint": null}),
    )
    .into_response()
}

/// State of an SSE stream.
struct Streaming {
    ctx: Ctx,
    rx: UnboundedReceiver<Event>,
    pending: VecDeque<String>,
    done: usize,
    completion: usize,
    include_usage: bool,
    finished: bool,
    /// Cancels the generation when the client goes away (the stream is dropped).
    _guard: CancelOnDrop,
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Streaming {
    fn chunk(&self, choices: Value, usage: Option<Value>) -> String {
        let mut v = json!({"id": self.ctx.id, "object": self.ctx.object(true),
                           "created": self.ctx.created, "model": self.ctx.s.model_name,
                           "choices": choices, "system_fingerprint": null});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v.to_string()
    }

    fn token(&self, index: usize, text: String, lp: Option<TokenLogprob>) -> String {
        let tok = &self.ctx.s.tok;
        let c = match self.ctx.kind {
            Kind::Chat => json!({"index": index, "delta": {"content": text},
                "logprobs": lp.map(|l| json!({"content": [chat_logprob(tok, &l)]})),
                "finish_reason": null}),
            Kind::Text => json!({"index": index, "text": text,
                "logprobs": lp.map(|l| { let mut t = TextLogprobs::default(); t.push(tok, &l); t.json() }),
                "finish_reason": null}),
        };
        self.chunk(json!([c]), None)
    }

    fn finish(&self, index: usize, f: FinishReason) -> String {
        let c = match self.ctx.kind {
            Kind::Chat => json!({"index": index, "delta": {}, "logprobs": null,
                                 "finish_reason": finish_name(f)}),
            Kind::Text => json!({"index": index, "text": "", "logprobs": null,
                                 "finish_reason": finish_name(f)}),
        };
        self.chunk(json!([c]), None)
    }

    /// The next `data:` payload, or none at the end.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(p);
            }
            if self.finished {
                return None;
            }
            match self.rx.recv().await {
                Some(Event::Token {
                    index,
                    text,
                    logprob,
                }) => {
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    return Some(self.token(index, text, logprob));
                }
                Some(Event::Done {
                    index,
                    finish,
                    completion_tokens,
                }) => {
                    self.completion += completion_tokens;
                    self.done += 1;
                    self.pending.push_back(self.finish(index, finish));
                    if self.done == self.ctx.n {
                        if self.include_usage {
                            let u = self.chunk(json!([]), Some(self.ctx.usage(self.completion)));
                            self.pending.push_back(u);
                        }
                        self.pending.push_back("[DONE]".into());
                        self.finished = true;
                    }
                }
                Some(Event::Error(m)) => {
                    self.pending.push_back(ApiError::bad(m).body().to_string());
                    self.pending.push_back("[DONE]".into());
                    self.finished = true;
                }
                None => {
                    self.pending.push_back(
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "generation ended early")
                            .body()
                            .to_string(),
                    );
                    self.pending.push_back("[DONE]".into());
                    self.finished = true;
                }
            }
        }
    }
}

fn stream_response(
    ctx: Ctx,
    rx: UnboundedReceiver<Event>,
    include_usage: bool,
    cancel: Arc<AtomicBool>,
) -> Response {
    let mut st = Streaming {
        ctx,
        rx,
        pending: VecDeque::new(),
        done: 0,
        completion: 0,
        include_usage,
        finished: false,
        _guard: CancelOnDrop(cancel),
    };
    if st.ctx.kind == Kind::Chat {
        for i in 0..st.ctx.n {
            let c = json!([{"index": i, "delta": {"role": "assistant", "content": ""},
                            "logprobs": null, "finish_reason": null}]);
            let first = st.chunk(c, None);
            st.pending.push_back(first);
        }
    }
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        let data = st.next().await?;
        Some((Ok::<_, Infallible>(SseEvent::default().data(data)), st))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    input: EmbedInput,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

async fn embeddings(
    State(s): State<AppRef>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r: EmbeddingRequest = match parse(&headers, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some((name, emb)) = s.embedder.clone() else {
        return ApiError::bad(
            "this server has no embedding model (start it with --embedding-model)",
        )
        .param("model")
        .into_response();
    };
    let texts = match r.input {
        EmbedInput::One(t) => vec![t],
        EmbedInput::Many(v) => v,
    };
    if texts.is_empty() || texts.len() > 2048 {
        return ApiError::bad("input: 1 to 2048 strings")
            .param("input")
            .into_response();
    }
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return ApiError::bad(format!(
                "encoding_format '{other}' (expected float or base64)"
            ))
            .param("encoding_format")
            .into_response()
        }
    };
    let result = tokio::task::spawn_blocking(move || {
        let e = emb.lock().unwrap_or_else(|p| p.into_inner());
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = e.encode_ids(&refs)?;
        let tokens: usize = ids.iter().map(Vec::len).sum();
        let vecs = e.embed_ids(&ids, 32)?;
        Ok::<_, tessera::Error>((vecs, tokens, e.dim()))
    })
    .await;
    let (vecs, tokens, dim) = match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return ApiError::bad(format!("cannot embed: {e}")).into_response(),
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("embedding failed: {e}"),
            )
            .into_response()
        }
    };
    if let Some(d) = r.dimensions {
        if d != dim {
            return ApiError::bad(format!("this model's embeddings have {dim} dimensions"))
                .param("dimensions")
                .into_response();
        }
    }
    let data: Vec<Value> = vecs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let emb = if base64 {
                use base64::Engine as _;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    Json(json!({"object": "list", "data": data, "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}

#[derive(Deserialize)]
struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
}

async fn tokenize(
    State(s): State<AppRef>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r: TokenizeRequest = match parse(&headers, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match s.tok.tokenizer.encode(&r.content) {
        Ok(mut ids) => {
            if r.add_special {
                s.tok.with_bos(&mut ids);
            }
            Json(json!({"tokens": ids})).into_response()
        }
        Err(e) => ApiError::bad(format!("cannot tokenize: {e}")).into_response(),
    }
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

async fn detokenize(
    State(s): State<AppRef>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r: DetokenizeRequest = match parse(&headers, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let vocab = s.tok.tokenizer.vocab_size() as u32;
    if let Some(bad) = r.tokens.iter().find(|&&i| i >= vocab) {
        return ApiError::bad(format!(
            "token id {bad} is outside the vocabulary ({vocab})"
        ))
        .param("tokens")
        .into_response();
    }
    match s.tok.tokenizer.decode(&r.tokens) {
        Ok(t) => Json(json!({"content": t})).into_response(),
        Err(e) => ApiError::bad(format!("cannot detokenize: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
    }
}
