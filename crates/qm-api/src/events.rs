//! `GET /v1/events`: server-sent events. A client gets the kept events after `?since=` (or
//! the `Last-Event-ID` header), then the live feed; if events it asked for are gone (the ring
//! moved on, or it fell behind), a `stream.gap` event says so and it should re-read the state.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use qm_engine::Engine;
use qm_proto::{EventDoc, to_json};
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    since: Option<u64>,
}

fn sse(e: &EventDoc) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(&e.kind)
        .data(to_json(e))
}

fn gap() -> Event {
    Event::default()
        .event("stream.gap")
        .data("{\"type\":\"stream.gap\",\"detail\":\"events were missed; re-read the state\"}")
}

struct Feed {
    gap: bool,
    backlog: VecDeque<Arc<EventDoc>>,
    live: broadcast::Receiver<Arc<EventDoc>>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("since" = Option<u64>, Query, description = "resume after this event id (or send Last-Event-ID)")),
    responses((status = 200, description = "server-sent events, one per change: `event:` the type, `id:` the event id, `data:` the event as JSON", content_type = "text/event-stream", body = qm_proto::EventDoc)))]
pub(crate) async fn events(
    State(engine): State<Engine>,
    caller: crate::Caller,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.allow(crate::auth::Operation::ReadCluster)?;
    let Query(q) = q.map_err(|e| ApiError::field("since", e.body_text()))?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let sub = engine.subscribe(q.since.or(last));
    let feed = Feed {
        gap: sub.missed,
        backlog: sub.backlog.into(),
        live: sub.live,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        if f.gap {
            f.gap = false;
            return Some((Ok::<_, Infallible>(gap()), f));
        }
        if let Some(e) = f.backlog.pop_front() {
            return Some((Ok(sse(&e)), f));
        }
        match f.live.recv().await {
            Ok(e) => Some((Ok(sse(&e)), f)),
            Err(RecvError::Lagged(_)) => Some((Ok(gap()), f)),
            Err(RecvError::Closed) => None,
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
