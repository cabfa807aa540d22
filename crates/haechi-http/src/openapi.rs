//! The OpenAPI document, generated from the handlers' annotations. The committed copy
//! (`docs/openapi.json`) is checked against this in the test suite.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, dbsafer, mdrm, opmate, vault};

#[derive(OpenApi)]
#[openapi(
    info(title = "Haechi", description = "One server for the MDRM, OPMATE, DBSAFER and Control Room credential vault APIs, and Haechi's own admin API. Every route but the login routes and health takes a token in `Authorization: Bearer <t>`, `Authorization: <t>`, `X-Authorization: <t>` or `?auth=<t>`."),
    paths(
        admin::health, admin::openapi_json, admin::me,
        admin::list_users, admin::create_user, admin::get_user, admin::update_user, admin::delete_user,
        admin::disable_user, admin::enable_user, admin::unlock_user, admin::set_password, admin::set_roles,
        admin::set_allowed_ips, admin::my_tokens, admin::logout, admin::revoke_token,
        admin::user_tokens, admin::revoke_user_token,
        admin::list_roles, admin::create_role, admin::get_role, admin::update_role, admin::delete_role,
        admin::list_audit, admin::verify_audit, admin::export_audit,
        mdrm::login, opmate::login, vault::login, vault::logout,
        mdrm::list, mdrm::execute, mdrm::status, mdrm::control,
        admin::create_workflow, admin::update_workflow, admin::delete_workflow, admin::get_workflow,
        admin::list_versions, admin::get_version, admin::restore_version, admin::diff_versions,
        admin::lock_workflow, admin::unlock_workflow,
        admin::list_workflows, admin::start_execution,
        admin::get_execution, admin::list_executions, admin::control_execution, admin::decide_step,
        admin::step_action, admin::execution_report,
        admin::execution_events,
        opmate::list_nodes, opmate::list_tasks, opmate::create_instance, opmate::rerun_node,
        opmate::list_instances, opmate::get_instance_node, opmate::list_instance_nodes,
        admin::create_enrollment_token, admin::enroll, admin::connect,
        admin::list_nodes, admin::get_node, admin::update_node, admin::revoke_node,
        admin::create_task, admin::update_task, admin::get_task, admin::list_tasks,
        admin::list_revisions, admin::get_revision, admin::get_approval, admin::approval, admin::run_task,
        admin::get_task_schedules, admin::set_task_schedules,
        admin::get_instance, admin::cancel_instance, admin::rerun_node, admin::output,
        admin::export_instance, admin::dry_run,
        admin::list_files, admin::upload_file, admin::file_info, admin::download_file, admin::delete_file,
        admin::list_node_groups, admin::create_node_group, admin::get_node_group,
        admin::update_node_group, admin::delete_node_group,
        admin::list_user_groups, admin::create_user_group, admin::get_user_group,
        admin::update_user_group, admin::delete_user_group,
        vault::list_credentials, vault::create_credential, vault::get_credential, vault::update_credential,
        vault::transfer_credential, vault::delete_credential,
        vault::list_values, vault::create_values, vault::update_value, vault::delete_value,
        vault::list_lockers, vault::list_lockers_advanced, vault::create_locker, vault::get_locker,
        vault::update_locker, vault::delete_locker, vault::list_consumers, vault::add_consumer,
        vault::remove_consumer, vault::list_members, vault::set_member, vault::remove_member,
        vault::add_locker_credential, vault::list_locker_credentials, vault::remove_locker_credential,
        vault::get_mode, vault::set_mode, vault::get_key_status, vault::apply_key,
        vault::vault_status, vault::vault_unseal, vault::rotate_data_key, vault::change_master_key,
        dbsafer::list_policies, dbsafer::get_policy, dbsafer::create_policy, dbsafer::update_policy,
        dbsafer::delete_policy, dbsafer::lock_policies, dbsafer::unlock_policies,
        admin::db::create_target, admin::db::list_targets, admin::db::get_target, admin::db::delete_target,
        admin::db::create_account, admin::db::list_accounts, admin::db::delete_account,
        admin::db::simulate, admin::db::list_sessions, admin::db::end_session,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("x_authorization" = [])),
    tags(
        (name = "admin", description = "Health and the API document"),
        (name = "users", description = "Users of Haechi's one identity"),
        (name = "roles", description = "Roles and permissions"),
        (name = "tokens", description = "The caller's own tokens"),
        (name = "audit", description = "The hash-chained audit log (Auditor)"),
        (name = "mdrm", description = "MDRM-compatible API"),
        (name = "opmate", description = "OPMATE-compatible API"),
        (name = "workflows", description = "Workflow definitions: versioned, grouped, JSON or YAML (docs/workflows.md)"),
        (name = "executions", description = "Workflow executions: steps, control, approval decisions, the transition log"),
        (name = "agents", description = "Agent enrolment and the agents' WebSocket"),
        (name = "nodes", description = "Nodes (machines running haechi agent)"),
        (name = "files", description = "The OPMATE file repository: files scripts get and put through their agent"),
        (name = "tasks", description = "Tasks, revisions, approval, task instances and their output"),
        (name = "vault", description = "Control Room credential vault-compatible API"),
        (name = "dbsafer", description = "DBSAFER-compatible access-policy API (DB Policy Admin)"),
        (name = "db", description = "Database targets and accounts behind the gateway (DB Policy Admin)"),
        (name = "vault-admin", description = "Vault administration: status, unseal, data key rotation, master key change"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "x_authorization",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Authorization"))),
        );
    }
}

/// The document as pretty JSON with a trailing newline (the committed file's exact form).
pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut s = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}
