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
use serde::Serialize;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

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

/// Haechi's own admin API, users to audit; each documented route is declared once, by its
/// handler's `#[utoipa::path]`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(users::me))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::disable_user))
        .routes(routes!(users::enable_user))
        .routes(routes!(users::unlock_user))
        .routes(routes!(users::user_tokens))
        .routes(routes!(users::revoke_user_token))
        .routes(routes!(users::set_password))
        .routes(routes!(users::set_roles))
        .routes(routes!(users::set_allowed_ips))
        .routes(routes!(roles::list_roles, roles::create_role))
        .routes(routes!(
            roles::get_role,
            roles::update_role,
            roles::delete_role
        ))
        .routes(routes!(users::my_tokens))
        .routes(routes!(users::logout))
        .routes(routes!(users::revoke_token))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(audit::export_audit))
        .merge(exec_routes())
        .merge(workflow_routes())
}

/// Workflow definitions and their executions (the workflow engine).
fn workflow_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(
            workflows::list_workflows,
            workflows::create_workflow
        ))
        .routes(routes!(
            workflows::get_workflow,
            workflows::update_workflow,
            workflows::delete_workflow
        ))
        .routes(routes!(workflows::list_versions))
        .routes(routes!(
            workflows::lock_workflow,
            workflows::unlock_workflow
        ))
        .routes(routes!(workflows::get_version))
        .routes(routes!(workflows::restore_version))
        .routes(routes!(workflows::diff_versions))
        .routes(routes!(workflows::start_execution))
        .routes(routes!(executions::list_executions))
        .routes(routes!(executions::get_execution))
        .routes(routes!(executions::control_execution))
        .routes(routes!(executions::execution_events))
        .routes(routes!(executions::decide_step))
        .routes(routes!(executions::step_action))
        .routes(routes!(executions::execution_report))
}

/// Agents, nodes, tasks and task instances (the execution engine).
fn exec_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(agents::create_enrollment_token))
        .routes(routes!(agents::enroll))
        .routes(routes!(agents::connect))
        .routes(routes!(nodes::list_nodes))
        .routes(routes!(nodes::get_node, nodes::update_node))
        .routes(routes!(nodes::revoke_node))
        .routes(routes!(groups::list_node_groups, groups::create_node_group))
        .routes(routes!(
            groups::get_node_group,
            groups::update_node_group,
            groups::delete_node_group
        ))
        .routes(routes!(groups::list_user_groups, groups::create_user_group))
        .routes(routes!(
            groups::get_user_group,
            groups::update_user_group,
            groups::delete_user_group
        ))
        .routes(routes!(files::list_files, files::upload_file).layer(
            // The upload reads at most `files.max_bytes` itself.
            axum::extract::DefaultBodyLimit::disable(),
        ))
        .routes(routes!(files::download_file, files::delete_file))
        .routes(routes!(files::file_info))
        .routes(routes!(tasks::dry_run))
        .routes(routes!(tasks::list_tasks, tasks::create_task))
        .routes(routes!(tasks::get_task, tasks::update_task))
        .routes(routes!(tasks::list_revisions))
        .routes(routes!(tasks::get_revision))
        .routes(routes!(tasks::get_approval, tasks::approval))
        .routes(routes!(tasks::run_task))
        .routes(routes!(
            tasks::get_task_schedules,
            tasks::set_task_schedules
        ))
        .routes(routes!(task_instances::get_instance))
        .routes(routes!(task_instances::export_instance))
        .routes(routes!(task_instances::cancel_instance))
        .routes(routes!(task_instances::rerun_node))
        .routes(routes!(task_instances::output))
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
        crate::openapi_document(),
    )
}
