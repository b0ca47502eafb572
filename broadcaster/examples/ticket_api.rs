//! A small ticket API that pushes real-time updates through Switchboard.
//!
//! `PUT /api/tickets/{id}` with `{"title": "...", "status": "...", "assignee": 42}` publishes
//! `ticket_updated` to the `role:admin` room and `notification` to `user:<assignee>`, and
//! answers with how many gateways received each event.
//!
//! ```sh
//! SWITCHBOARD_REDIS_URL=redis://127.0.0.1:6379 cargo run -p switchboard-broadcaster --example ticket_api
//! curl -X PUT localhost:3000/api/tickets/7 -H 'content-type: application/json' \
//!      -d '{"title":"Printer on fire","status":"open","assignee":42}'
//! ```

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_broadcaster::{Broadcaster, PublishError};

#[derive(Debug, Deserialize)]
struct TicketUpdate {
    title: String,
    status: String,
    assignee: u64,
}

/// What admins' dashboards receive.
#[derive(Debug, Serialize)]
struct TicketUpdated<'a> {
    id: u64,
    title: &'a str,
    status: &'a str,
    assignee: u64,
}

/// What the assignee receives.
#[derive(Debug, Serialize)]
struct Notification {
    kind: &'static str,
    ticket_id: u64,
    message: String,
}

#[derive(Debug, Serialize)]
struct UpdateResponse {
    id: u64,
    /// Redis subscribers (gateways) that received each event.
    admins_delivery: u64,
    assignee_delivery: u64,
}

async fn update_ticket(
    State(switchboard): State<Broadcaster>,
    Path(id): Path<u64>,
    Json(update): Json<TicketUpdate>,
) -> Result<Json<UpdateResponse>, (StatusCode, String)> {
    // ... persist the ticket here ...

    let updated = TicketUpdated {
        id,
        title: &update.title,
        status: &update.status,
        assignee: update.assignee,
    };
    let notification = Notification {
        kind: "ticket_assigned",
        ticket_id: id,
        message: format!("Ticket #{id} \"{}\" is assigned to you", update.title),
    };

    // Both events in one Redis round trip.
    let mut batch = switchboard.pipeline();
    batch
        .emit(&switchboard.to_role("admin"), "ticket_updated", &updated)
        .and_then(|b| {
            b.emit(
                &switchboard.to_user(update.assignee),
                "notification",
                &notification,
            )
        })
        .map_err(internal)?;
    let deliveries = batch.send().await.map_err(|e| {
        // The ticket is saved; only the real-time push failed. Tell the caller honestly.
        let status = if e.is_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (
            status,
            format!("ticket saved, but the real-time update failed: {e}"),
        )
    })?;

    Ok(Json(UpdateResponse {
        id,
        admins_delivery: deliveries.first().map_or(0, |d| d.subscribers),
        assignee_delivery: deliveries.get(1).map_or(0, |d| d.subscribers),
    }))
}

fn internal(e: PublishError) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url = std::env::var("SWITCHBOARD_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let switchboard = Broadcaster::connect(redis_url)?;
    if let Err(e) = switchboard.ping().await {
        eprintln!("warning: {e} (starting anyway; updates will fail until Redis is back)");
    }

    let app = Router::new()
        .route("/api/tickets/{id}", put(update_ticket))
        .with_state(switchboard);
    let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("ticket API on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
