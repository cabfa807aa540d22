//! Haechi's own admin API under `/api/v1` (CONTRACT §7): users, roles, the caller's tokens,
//! the audit log, health and the OpenAPI document; agents, nodes, tasks and task instances.

mod agents;
mod audit;
pub mod db;
mod executions;
mod files;
mod groups;
mod nodes;
mod roles;
mod task_instances;
mod tasks;
mod users;
pub(crate) mod wire;
mod workflows;

use axum::extract::State;
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::Serialize;

use crate::AppState;

pub use agents::*;
pub use audit::*;
pub use executions::*;
pub use files::*;
pub use groups::*;
pub use nodes::*;
pub use roles::*;
pub use task_instances::*;
pub use tasks::*;
pub use users::*;
pub use workflows::*;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/me", get(users::me))
        .route(
            "/api/v1/users",
            get(users::list_users).post(users::create_user),
        )
        .route(
            "/api/v1/users/{user_id}",
            get(users::get_user)
                .patch(users::update_user)
                .delete(users::delete_user),
        )
        .route("/api/v1/users/{user_id}/disable", post(users::disable_user))
        .route("/api/v1/users/{user_id}/enable", post(users::enable_user))
        .route("/api/v1/users/{user_id}/unlock", post(users::unlock_user))
        .route("/api/v1/users/{user_id}/tokens", get(users::user_tokens))
        .route(
            "/api/v1/users/{user_id}/tokens/{id}",
            delete(users::revoke_user_token),
        )
        .route("/api/v1/users/{user_id}/password", put(users::set_password))
        .route("/api/v1/users/{user_id}/roles", put(users::set_roles))
        .route(
            "/api/v1/users/{user_id}/allowed-ips",
            put(users::set_allowed_ips),
        )
        .route(
            "/api/v1/roles",
            get(roles::list_roles).post(roles::create_role),
        )
        .route(
            "/api/v1/roles/{role}",
            get(roles::get_role)
                .patch(roles::update_role)
                .delete(roles::delete_role),
        )
        .route("/api/v1/tokens", get(users::my_tokens))
        .route("/api/v1/tokens/current", delete(users::logout))
        .route("/api/v1/tokens/{id}", delete(users::revoke_token))
        .route("/api/v1/audit", get(audit::list_audit))
        .route("/api/v1/audit/verify", get(audit::verify_audit))
        .route("/api/v1/audit/export", get(audit::export_audit))
        .merge(exec_routes())
        .merge(workflow_routes())
}

/// Workflow definitions and their executions (the workflow engine).
fn workflow_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/workflows",
            get(workflows::list_workflows).post(workflows::create_workflow),
        )
        .route(
            "/api/v1/workflows/{id}",
            get(workflows::get_workflow)
                .put(workflows::update_workflow)
                .delete(workflows::delete_workflow),
        )
        .route(
            "/api/v1/workflows/{id}/versions",
            get(workflows::list_versions),
        )
        .route(
            "/api/v1/workflows/{id}/lock",
            post(workflows::lock_workflow).delete(workflows::unlock_workflow),
        )
        .route(
            "/api/v1/workflows/{id}/versions/{version}",
            get(workflows::get_version),
        )
        .route(
            "/api/v1/workflows/{id}/versions/{version}/restore",
            post(workflows::restore_version),
        )
        .route(
            "/api/v1/workflows/{id}/versions/{version}/diff",
            get(workflows::diff_versions),
        )
        .route(
            "/api/v1/workflows/{id}/executions",
            post(workflows::start_execution),
        )
        .route("/api/v1/executions", get(executions::list_executions))
        .route(
            "/api/v1/executions/{execution_id}",
            get(executions::get_execution),
        )
        .route(
            "/api/v1/executions/{execution_id}/control",
            post(executions::control_execution),
        )
        .route(
            "/api/v1/executions/{execution_id}/events",
            get(executions::execution_events),
        )
        .route(
            "/api/v1/executions/{execution_id}/steps/{name}/decision",
            post(executions::decide_step),
        )
        .route(
            "/api/v1/executions/{execution_id}/steps/{name}/actions",
            post(executions::step_action),
        )
        .route(
            "/api/v1/executions/{execution_id}/report",
            get(executions::execution_report),
        )
}

/// Agents, nodes, tasks and task instances (the execution engine).
fn exec_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/agents/enrollment-tokens",
            post(agents::create_enrollment_token),
        )
        .route("/api/v1/agents/enroll", post(agents::enroll))
        .route("/api/v1/agents/connect", get(agents::connect))
        .route("/api/v1/nodes", get(nodes::list_nodes))
        .route(
            "/api/v1/nodes/{node_id}",
            get(nodes::get_node).patch(nodes::update_node),
        )
        .route("/api/v1/nodes/{node_id}/revoke", post(nodes::revoke_node))
        .route(
            "/api/v1/node-groups",
            get(groups::list_node_groups).post(groups::create_node_group),
        )
        .route(
            "/api/v1/node-groups/{name}",
            get(groups::get_node_group)
                .put(groups::update_node_group)
                .delete(groups::delete_node_group),
        )
        .route(
            "/api/v1/user-groups",
            get(groups::list_user_groups).post(groups::create_user_group),
        )
        .route(
            "/api/v1/user-groups/{name}",
            get(groups::get_user_group)
                .put(groups::update_user_group)
                .delete(groups::delete_user_group),
        )
        .route(
            "/api/v1/files",
            get(files::list_files).post(files::upload_file).layer(
                // The upload reads at most `files.max_bytes` itself.
                axum::extract::DefaultBodyLimit::disable(),
            ),
        )
        .route(
            "/api/v1/files/{name}",
            get(files::download_file).delete(files::delete_file),
        )
        .route("/api/v1/files/{name}/info", get(files::file_info))
        .route("/api/v1/tasks/{task_id}/dry-run", post(tasks::dry_run))
        .route(
            "/api/v1/tasks",
            get(tasks::list_tasks).post(tasks::create_task),
        )
        .route(
            "/api/v1/tasks/{task_id}",
            get(tasks::get_task).put(tasks::update_task),
        )
        .route(
            "/api/v1/tasks/{task_id}/revisions",
            get(tasks::list_revisions),
        )
        .route(
            "/api/v1/tasks/{task_id}/revisions/{revision_no}",
            get(tasks::get_revision),
        )
        .route(
            "/api/v1/tasks/{task_id}/approval",
            get(tasks::get_approval).post(tasks::approval),
        )
        .route("/api/v1/tasks/{task_id}/instances", post(tasks::run_task))
        .route(
            "/api/v1/tasks/{task_id}/schedules",
            get(tasks::get_task_schedules).put(tasks::set_task_schedules),
        )
        .route(
            "/api/v1/task-instances/{instance_no}",
            get(task_instances::get_instance),
        )
        .route(
            "/api/v1/task-instances/{instance_no}/export",
            get(task_instances::export_instance),
        )
        .route(
            "/api/v1/task-instances/{instance_no}/cancel",
            post(task_instances::cancel_instance),
        )
        .route(
            "/api/v1/task-instances/{instance_no}/nodes/{node_id}/rerun",
            post(task_instances::rerun_node),
        )
        .route(
            "/api/v1/task-instances/{instance_no}/nodes/{node_id}/output",
            get(task_instances::output),
        )
}

/// `GET /api/v1/health`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` once the server serves requests; `degraded` while its database cannot be reached
    /// (it still serves what needs no database, and refuses the rest with 503).
    status: &'static str,
    version: &'static str,
    /// `sqlite` or `postgres`.
    store: &'static str,
    /// `ok`, or `unavailable` while the server has no connection to PostgreSQL (it
    /// reconnects by itself).
    database: &'static str,
}

/// Liveness: answers 200 without a token once the server serves requests, also while its
/// database is away (then `status` is `degraded`).
#[utoipa::path(get, path = "/api/v1/health", tag = "admin", security(()),
    responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> axum::Json<Health> {
    let database_up = state.store.signals().connected();
    axum::Json(Health {
        status: if database_up { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        store: match state.store.backend() {
            haechi_store::Backend::Sqlite => "sqlite",
            haechi_store::Backend::Postgres => "postgres",
        },
        database: if database_up { "ok" } else { "unavailable" },
    })
}

/// The OpenAPI document of every route.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "admin", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
}
