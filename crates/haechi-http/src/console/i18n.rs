//! The console's two languages. Korean is the default; English when the user chose it (cookie
//! `haechi_lang`) or the browser prefers it (`Accept-Language`). Every string of every page is
//! in [`TEXT`], once per language; a unit test checks that every key a template uses is there.

use axum::http::request::Parts;
use axum::http::HeaderMap;

/// The language of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ko,
    En,
}

/// The cookie that keeps a user's choice of language.
pub const LANG_COOKIE: &str = "haechi_lang";

/// (key, Korean, English).
const TEXT: &[(&str, &str, &str)] = &[
    ("app", "Haechi 운영 콘솔", "Haechi console"),
    ("skip", "본문으로 건너뛰기", "Skip to content"),
    ("user_id", "사용자 ID", "User ID"),
    ("password", "비밀번호", "Password"),
    ("login", "로그인", "Log in"),
    ("logout", "로그아웃", "Log out"),
    ("login_title", "콘솔 로그인", "Console login"),
    ("login_failed", "사용자 ID 또는 비밀번호가 올바르지 않거나, 이 계정으로 지금 로그인할 수 없습니다.", "Wrong user ID or password, or this account may not log in now."),
    ("login_busy", "로그인 시도가 너무 많습니다. 잠시 후 다시 시도하세요.", "Too many login attempts; try again shortly."),
    ("login_expired", "로그인 양식이 만료되었습니다. 다시 시도하세요.", "The login form expired; please try again."),
    ("logged_out", "로그아웃되었습니다.", "You have logged out."),
    ("session_expired", "세션이 만료되었습니다. 다시 로그인하세요.", "Your session expired; please log in again."),
    ("expiry_warning", "활동이 없어 곧 세션이 만료됩니다.", "Your session will expire soon for inactivity."),
    ("stay", "세션 연장", "Stay logged in"),
    ("language", "언어", "Language"),
    ("lang_ko", "한국어", "한국어 (Korean)"),
    ("lang_en", "English (영어)", "English"),
    ("change", "변경", "Change"),
    ("nav", "주 메뉴", "Main menu"),
    ("nav_dashboard", "대시보드", "Dashboard"),
    ("nav_workflows", "워크플로", "Workflows"),
    ("nav_executions", "실행 이력", "Runs"),
    ("nav_tasks", "태스크", "Tasks"),
    ("nav_approvals", "승인 대기", "Approvals"),
    ("nav_nodes", "노드", "Nodes"),
    ("signed_in_as", "로그인 사용자", "Signed in as"),
    ("sealed_banner", "자격 증명 금고가 봉인되어 있습니다. 금고 값이 필요한 단계와 DB 게이트웨이 계정은 봉인 해제 전까지 실패합니다.", "The credential vault is sealed. Steps that need vault values and DB gateway accounts fail until it is unsealed."),
    ("running_now", "실행 중인 워크플로", "Runs in progress"),
    ("no_running", "실행 중인 워크플로가 없습니다.", "No run is in progress."),
    ("pending_approvals", "결정 대기 중인 승인", "Approvals waiting for you"),
    ("no_approvals", "결정할 승인이 없습니다.", "Nothing waits for your decision."),
    ("task_approvals", "승인 요청된 태스크", "Tasks waiting for approval"),
    ("missing_nodes", "하트비트가 끊긴 노드", "Nodes with missing heartbeats"),
    ("no_missing_nodes", "모든 노드가 하트비트를 보내고 있습니다.", "Every node is sending heartbeats."),
    ("execution", "실행", "Run"),
    ("workflow", "워크플로", "Workflow"),
    ("status", "상태", "Status"),
    ("started_by", "시작한 사람", "Started by"),
    ("started_at", "시작 시각", "Started"),
    ("ended_at", "종료 시각", "Ended"),
    ("elapsed", "경과 시간", "Elapsed"),
    ("progress", "진행률", "Progress"),
    ("version", "버전", "Version"),
    ("params", "파라미터", "Parameters"),
    ("no_params", "파라미터 없음", "No parameters"),
    ("step", "단계", "Step"),
    ("steps", "단계 목록", "Steps"),
    ("type", "종류", "Type"),
    ("attempts", "시도", "Attempts"),
    ("error", "오류", "Error"),
    ("decision", "결정", "Decision"),
    ("decided_by", "결정한 사람", "Decided by"),
    ("comment", "의견", "Comment"),
    ("graph", "흐름도", "Flowchart"),
    ("graph_desc", "단계와 의존 관계를 나타낸 흐름도. 같은 내용이 아래 단계 목록에 있습니다.", "Flowchart of the steps and their dependencies; the step list below has the same content."),
    ("live", "실시간 갱신 중", "Updating live"),
    ("live_off", "실시간 갱신이 끊겼습니다. 새로 고침하세요.", "Live updates stopped; reload the page."),
    ("controls", "실행 제어", "Run controls"),
    ("Run", "실행", "Run"),
    ("Pause", "일시정지", "Pause"),
    ("Resume", "재개", "Resume"),
    ("Stop", "중지", "Stop"),
    ("Approve", "승인", "Approve"),
    ("Reject", "반려", "Reject"),
    ("Re-run", "재실행", "Re-run"),
    ("Cancel", "취소", "Cancel"),
    ("Request approval", "승인 요청", "Request approval"),
    ("filter", "필터", "Filter"),
    ("apply", "적용", "Apply"),
    ("all", "전체", "All"),
    ("from", "시작일", "From"),
    ("to", "종료일", "To"),
    ("prev_page", "이전 페이지", "Previous page"),
    ("next_page", "다음 페이지", "Next page"),
    ("page_of", "페이지", "Page"),
    ("total", "전체 건수", "Total"),
    ("none", "없음", "None"),
    ("log", "로그", "Log"),
    ("step_log", "단계 로그", "Step log"),
    ("nodes_of_step", "이 단계의 노드", "Nodes of this step"),
    ("node", "노드", "Node"),
    ("exit_code", "종료 코드", "Exit code"),
    ("exec_no", "실행 번호", "execNo"),
    ("reason", "사유", "Reason"),
    ("output", "출력", "Output"),
    ("stdout", "표준 출력", "stdout"),
    ("stderr", "표준 오류", "stderr"),
    ("follow", "따라가기", "Follow"),
    ("search", "검색", "Search"),
    ("load_earlier", "이전 출력 더 보기", "Load earlier output"),
    ("shown_bytes", "표시 중인 바이트", "Bytes shown"),
    ("of_bytes", "전체", "of"),
    ("no_output", "출력이 없습니다.", "No output."),
    ("matches", "일치하는 줄", "Matching lines"),
    ("select_node", "노드를 선택하면 출력을 볼 수 있습니다.", "Choose a node to see its output."),
    ("task_instance", "태스크 인스턴스", "Task instance"),
    ("task", "태스크", "Task"),
    ("arguments", "인자", "Arguments"),
    ("runner", "실행한 사람", "Run by"),
    ("node_grid", "노드별 실행 결과", "Results by node"),
    ("no_nodes", "노드가 없습니다.", "No nodes."),
    ("workflows", "워크플로 목록", "Workflows"),
    ("group", "그룹", "Group"),
    ("name", "이름", "Name"),
    ("description", "설명", "Description"),
    ("updated_at", "수정 시각", "Updated"),
    ("created_by", "만든 사람", "Created by"),
    ("definition", "정의", "Definition"),
    ("run_form", "실행 파라미터", "Run with parameters"),
    ("required", "필수", "required"),
    ("default_is", "기본값", "default"),
    ("versions", "버전 이력", "Versions"),
    ("runs_of_wf", "이 워크플로의 실행", "Runs of this workflow"),
    ("nodes", "노드 목록", "Nodes"),
    ("hostname", "호스트 이름", "Host name"),
    ("ip", "IP 주소", "IP address"),
    ("os", "운영체제", "OS"),
    ("agent_ver", "에이전트 버전", "Agent version"),
    ("heartbeat", "마지막 하트비트", "Last heartbeat"),
    ("heartbeat_age", "하트비트 경과", "Heartbeat age"),
    ("connected", "연결됨", "Connected"),
    ("disconnected", "연결 끊김", "Not connected"),
    ("missing_since", "하트비트 끊김 시작", "Missing since"),
    ("enabled", "사용", "Enabled"),
    ("disabled", "사용 안 함", "Disabled"),
    ("Enable", "사용", "Enable"),
    ("Disable", "사용 중지", "Disable"),
    ("enrol", "노드 등록", "Enrol a node"),
    ("enrol_help", "등록 토큰을 만들고, 새 서버에서 아래 명령을 실행하세요. 토큰은 이 화면에서 한 번만 보입니다.", "Create an enrolment token, then run the command below on the new machine. The token is shown only on this page, once."),
    ("create_token", "등록 토큰 만들기", "Create enrolment token"),
    ("node_id_opt", "노드 ID (선택)", "Node ID (optional)"),
    ("command", "실행할 명령", "Command to run"),
    ("tasks", "태스크 목록", "Tasks"),
    ("owner", "소유자", "Owner"),
    ("approval_status", "승인 상태", "Approval status"),
    ("revision", "리비전", "Revision"),
    ("script", "스크립트", "Script"),
    ("approvals", "승인 대기열", "Approval queue"),
    ("workflow_approvals", "워크플로 승인 단계", "Workflow approval steps"),
    ("role", "역할", "Role"),
    ("requested_by", "요청한 사람", "Requested by"),
    ("requested_at", "요청 시각", "Requested"),
    ("actions", "작업", "Actions"),
    ("open", "열기", "Open"),
    ("error_title", "요청을 처리할 수 없습니다", "The request could not be done"),
    ("forbidden", "이 화면이나 작업에 대한 권한이 없습니다. 아무것도 바뀌지 않았습니다.", "You do not have the right to this page or action. Nothing was changed."),
    ("not_found", "찾을 수 없습니다.", "Not found."),
    ("csrf_failed", "요청의 보안 토큰이 없거나 올바르지 않습니다. 아무것도 바뀌지 않았습니다. 화면을 새로 고친 뒤 다시 시도하세요.", "The request's security token is missing or wrong. Nothing was changed. Reload the page and try again."),
    ("back", "대시보드로", "To the dashboard"),
    ("done_ok", "처리되었습니다.", "Done."),
    ("secs", "초", "s"),
    ("time_zone", "시간대", "Time zone"),
    ("run_on_nodes", "노드에서 실행", "Run on nodes"),
    ("nodes_help", "노드 ID를 공백이나 쉼표로 구분해 입력합니다.", "Node IDs, separated by spaces or commas."),
    ("arguments_help", "한 줄에 인자 하나 (줄 전체가 하나의 인자).", "One argument per line (each line is one whole argument)."),
    ("revisions", "리비전 이력", "Revisions"),
    ("diff", "비교", "Compare"),
    // console-ops
    ("Save", "저장", "Save"),
    ("Delete", "삭제", "Delete"),
    ("Unlock", "잠금 해제", "Unlock"),
    ("nav_users", "사용자", "Users"),
    ("nav_roles", "역할", "Roles"),
    ("my_account", "내 계정", "My account"),
    ("user", "사용자", "User"),
    ("roles", "역할", "Roles"),
    ("permissions", "권한", "Permissions"),
    ("kind", "계정 종류", "Account kind"),
    ("kind_human", "사람 (human)", "person (human)"),
    ("kind_api", "API 전용 (api)", "API only (api)"),
    ("api_no_console", "콘솔 로그인 불가, 비활동 잠금 없음", "no console login, never locked for inactivity"),
    ("allowed_ips", "허용 IP 목록", "IP allow-list"),
    ("allowed_ips_help", "CIDR 또는 주소를 줄마다 하나씩 (쉼표도 가능). 비워 두면 어디서나 허용됩니다.", "One CIDR or address a line (commas work too). Empty allows any address."),
    ("anywhere", "제한 없음", "any address"),
    ("last_login", "마지막 로그인", "Last login"),
    ("never", "없음", "never"),
    ("failed_logins", "연속 로그인 실패", "Failed logins in a row"),
    ("created_at", "생성 시각", "Created"),
    ("user_active", "사용 중", "active"),
    ("user_disabled", "비활성화됨", "disabled"),
    ("user_locked", "잠김", "locked"),
    ("account_state", "계정 상태 변경", "Account state"),
    ("disable_user", "비활성화", "Disable"),
    ("enable_user", "활성화", "Enable"),
    ("new_user", "새 사용자", "New user"),
    ("create_user", "사용자 만들기", "Create user"),
    ("edit_user", "사용자 정보 변경", "Edit user"),
    ("own_roles_note", "자기 자신의 역할은 바꿀 수 없습니다 (서버가 거부합니다).", "Nobody changes their own roles (the server refuses it)."),
    ("set_password", "비밀번호 설정", "Set password"),
    ("new_password", "새 비밀번호", "New password"),
    ("current_password", "현재 비밀번호", "Current password"),
    ("confirm_password", "새 비밀번호 확인", "New password again"),
    ("change_password", "비밀번호 변경", "Change password"),
    ("password_revokes", "비밀번호를 바꾸면 이 사용자의 모든 토큰과 세션이 폐기됩니다.", "Setting a password revokes every token and session of this user."),
    ("own_password_help", "변경하면 이 세션을 포함한 모든 세션이 끝나고 다시 로그인해야 합니다.", "After the change every session of yours, this one included, ends: log in again."),
    ("passwords_differ", "새 비밀번호 두 칸이 서로 다릅니다. 아무것도 바뀌지 않았습니다.", "The two new passwords differ. Nothing was changed."),
    ("password_changed", "비밀번호가 바뀌었습니다. 새 비밀번호로 다시 로그인하세요.", "Your password was changed; log in with the new one."),
    ("live_tokens", "유효한 토큰", "Live tokens"),
    ("my_sessions", "내 세션과 토큰", "My sessions and tokens"),
    ("no_tokens", "유효한 토큰이 없습니다.", "No live token."),
    ("issued_by", "발급 경로", "Issued by"),
    ("client_ip", "클라이언트 IP", "Client IP"),
    ("last_used", "마지막 사용", "Last used"),
    ("expires_at", "만료 시각", "Expires"),
    ("this_session", "현재 세션", "this session"),
    ("revoke", "폐기", "Revoke"),
    ("back_to_users", "사용자 목록으로", "Back to users"),
    ("user_created", "사용자를 만들었습니다.", "The user was created."),
    ("saved_notice", "저장했습니다.", "Saved."),
    ("unlocked_notice", "잠금을 해제했습니다.", "The account was unlocked."),
    ("disabled_notice", "비활성화했습니다. 이 사용자의 토큰은 모두 폐기되었습니다.", "Disabled; every token of the user was revoked."),
    ("enabled_notice", "활성화했습니다.", "Enabled."),
    ("password_set_notice", "비밀번호를 설정했습니다. 이 사용자의 토큰은 모두 폐기되었습니다.", "Password set; every token of the user was revoked."),
    ("revoked_notice", "토큰을 폐기했습니다.", "The token was revoked."),
    ("builtin_roles", "기본 역할", "Built-in roles"),
    ("custom_roles", "사용자 정의 역할", "Custom roles"),
    ("no_custom_roles", "사용자 정의 역할이 없습니다.", "No custom role yet."),
    ("new_role", "새 역할", "New role"),
    ("create_role", "역할 만들기", "Create role"),
    ("role_created", "역할을 만들었습니다.", "The role was created."),
    ("role_deleted", "역할을 삭제했습니다.", "The role was deleted."),
    ("edit_definition", "정의 편집", "Edit the definition"),
    ("not_saved", "저장하지 않았습니다.", "Not saved."),
    ("line", "줄", "line"),
    ("go_to_line", "오류가 있는 줄로 이동: 줄", "Go to the line with the error: line"),
    ("submitted_text", "제출한 정의 (줄 번호 포함)", "The definition you sent, with line numbers"),
    ("error_here", "여기에 오류", "error here"),
    ("format", "형식", "Format"),
    ("saves_new_version", "저장하면 새 버전", "saving makes version"),
    ("changed_by", "변경한 사람", "Changed by"),
    ("current", "현재 버전", "current"),
    ("restore", "복원", "Restore"),
    ("saved_as_version", "저장했습니다. 새 버전:", "Saved as version"),
    ("restored_version", "복원했습니다: 버전", "Restored version"),
    ("diff_from", "비교 기준 버전", "Compare version"),
    ("diff_to", "비교 대상 버전", "with version"),
    ("rto_col", "경과 / 목표 복구 시간(RTO)", "Elapsed against RTO"),
    ("over_rto", "RTO 초과", "over RTO"),
    ("within_rto", "RTO 이내", "within RTO"),
    ("rto_left", "남은 시간", "left"),
    ("no_rto", "RTO 없음", "no RTO"),
    ("exec_history", "이 노드의 실행 이력 (execNo)", "This node's executions (execNo)"),
    ("shown_now", "표시 중", "shown"),
    // console-db: DB access (policies, targets, sessions, simulator) and the audit log.
    ("cdb_Lock", "잠금", "Lock"),
    ("cdb_Unlock", "잠금 해제", "Unlock"),
    ("cdb_Save", "저장", "Save"),
    ("cdb_Delete", "삭제", "Delete"),
    ("cdb_nav_db_policies", "DB 접근 정책", "DB policies"),
    ("cdb_nav_db_targets", "DB 대상·세션", "DB targets"),
    ("cdb_nav_db_simulate", "정책 시뮬레이터", "Policy simulator"),
    ("cdb_nav_audit", "감사 로그", "Audit log"),
    ("cdb_db_menu", "DB 접근 메뉴", "DB access menu"),
    ("cdb_new_policy", "새 정책", "New policy"),
    ("cdb_policy", "정책", "Policy"),
    ("cdb_policies", "정책 목록", "Policies"),
    ("cdb_clear_filters", "필터 지우기", "Clear filters"),
    ("cdb_lock_by_filter", "필터로 잠금·해제", "Lock or unlock by filter"),
    ("cdb_lock_by_filter_help", "위 필터에 맞는 모든 정책을 한 번에 잠그거나 해제합니다. 대상 정책 수", "Locks or unlocks every policy the filters above match, at once. Policies matched"),
    ("cdb_lock_needs_filter", "필터로 잠그거나 해제하려면 먼저 필터를 하나 이상 지정하세요.", "To lock or unlock by filter, set at least one filter first."),
    ("cdb_lock_all", "일치하는 정책 모두 잠금", "Lock all matching"),
    ("cdb_unlock_all", "일치하는 정책 모두 잠금 해제", "Unlock all matching"),
    ("cdb_locked_n", "잠금 완료된 정책 수", "Policies locked"),
    ("cdb_unlocked_n", "잠금 해제된 정책 수", "Policies unlocked"),
    ("cdb_policy_saved", "정책을 저장했습니다.", "The policy was saved."),
    ("cdb_policy_deleted", "정책을 삭제했습니다.", "The policy was deleted."),
    ("cdb_lock_or_delete", "잠금과 삭제", "Lock or delete"),
    ("cdb_back_to_list", "목록으로", "Back to the list"),
    ("cdb_f_policy_id", "정책 코드", "Policy ID"),
    ("cdb_f_user_id", "사용자 ID", "User ID"),
    ("cdb_f_account", "DB 계정", "DB account"),
    ("cdb_f_client_ip_begin", "클라이언트 IP 시작", "Client IP from"),
    ("cdb_f_client_ip_end", "클라이언트 IP 끝", "Client IP to"),
    ("cdb_f_server_address", "서버 주소", "Server address"),
    ("cdb_f_server_port", "서버 포트", "Server port"),
    ("cdb_f_sid", "인스턴스(SID)", "Instance (SID)"),
    ("cdb_f_policy_type", "정책 유형", "Policy type"),
    ("cdb_f_start_date", "유효 시작", "Valid from"),
    ("cdb_f_end_date", "유효 종료", "Valid until"),
    ("cdb_h_policy_id", "비워 두면 POLICY_YYYYMMDDNNN 형식으로 만들어집니다.", "Leave empty to generate one (POLICY_YYYYMMDDNNN)."),
    ("cdb_h_user_id", "게이트웨이에 로그인하는 Haechi 사용자 ID (필수).", "The Haechi user ID that logs in to the gateway (required)."),
    ("cdb_h_account", "DB 대상에 등록된 데이터베이스 계정.", "The database account registered on the target."),
    ("cdb_h_client_ip", "IPv4 또는 IPv6. 비워 두면 모든 주소.", "IPv4 or IPv6; empty for any address."),
    ("cdb_h_client_ip_end", "범위의 끝 (시작 이상). 비워 두면 시작 주소 하나.", "End of the range (not below the start); empty for the start address alone."),
    ("cdb_h_server_address", "DB 대상의 호스트와 같아야 합니다.", "Must be the target's host."),
    ("cdb_h_server_port", "1–65535. 비워 두면 포트 없음 (아무것도 허용하지 않음).", "1–65535; empty for none (the policy then grants nothing)."),
    ("cdb_h_sid", "DB 대상의 데이터베이스 이름. 비워 두면 모두.", "The target's database name; empty for any."),
    ("cdb_h_policy_type", "자유 분류 (필터에 사용).", "A free label (usable as a filter)."),
    ("cdb_h_dates", "서버 시간대 기준. 비워 두면 제한 없음.", "In the server's time zone; empty for no bound."),
    ("cdb_privileges", "SQL 권한", "SQL privileges"),
    ("cdb_priv_read", "조회 (SELECT·SHOW·DESC)", "Read"),
    ("cdb_priv_dml", "데이터 변경 (DML)", "Change data (DML)"),
    ("cdb_priv_tx", "트랜잭션", "Transactions"),
    ("cdb_priv_ddl", "구조 변경 (DDL)", "Change structure (DDL)"),
    ("cdb_priv_dcl", "권한·감사 (DCL)", "Privileges and audit (DCL)"),
    ("cdb_priv_exec", "실행·연결", "Execute and connect"),
    ("cdb_priv_all", "전체 (분류할 수 없는 문장 포함)", "Everything (unclassifiable statements too)"),
    ("cdb_pst_in_force", "적용 중", "in force"),
    ("cdb_pst_locked", "잠김", "locked"),
    ("cdb_pst_expired", "만료됨", "expired"),
    ("cdb_pst_not_yet", "유효 기간 전", "not yet valid"),
    ("cdb_any_address", "모든 주소", "any address"),
    ("cdb_always", "제한 없음", "no limit"),
    ("cdb_client_ips", "클라이언트 IP", "Client IPs"),
    ("cdb_server", "서버", "Server"),
    ("cdb_validity", "유효 기간", "Valid"),
    ("cdb_open_sessions", "지금 열린 게이트웨이 세션", "Gateway sessions open now"),
    ("cdb_open_sessions_help", "이 서버의 게이트웨이를 지나는 세션입니다. 종료하면 연결이 끊기고 그 세션의 문장은 더 실행되지 않습니다.", "Sessions through this server's gateways. Ending one closes its connection; nothing more of it runs."),
    ("cdb_no_open_sessions", "열린 세션이 없습니다.", "No session is open."),
    ("cdb_end_session", "세션 종료", "End session"),
    ("cdb_session_ended", "세션을 종료했습니다.", "The session was ended."),
    ("cdb_session", "세션", "Session"),
    ("cdb_user", "사용자", "User"),
    ("cdb_target", "대상", "Target"),
    ("cdb_protocol", "프로토콜", "Protocol"),
    ("cdb_client_ip", "클라이언트 IP", "Client IP"),
    ("cdb_since", "시작", "Since"),
    ("cdb_statements", "문장 수", "Statements"),
    ("cdb_db_targets", "DB 대상", "Database targets"),
    ("cdb_kind", "종류", "Kind"),
    ("cdb_address", "주소", "Address"),
    ("cdb_database", "데이터베이스", "Database"),
    ("cdb_created_at", "등록 시각", "Registered"),
    ("cdb_accounts", "계정", "Accounts"),
    ("cdb_credential", "금고 자격 증명", "Vault credential"),
    ("cdb_attribute", "속성", "Attribute"),
    ("cdb_registered_by", "등록한 사람", "Registered by"),
    ("cdb_password_from", "비밀번호 (금고 자격 증명 속성)", "Password (vault credential attribute)"),
    ("cdb_choose", "선택하세요", "Choose"),
    ("cdb_add_account", "계정 추가", "Add account"),
    ("cdb_no_readable_credentials", "읽을 수 있는 금고 자격 증명이 없습니다. 소유하거나 소비자 역할로 공유받은 자격 증명만 고를 수 있습니다.", "You can read no vault credential: only credentials you own or consume through a locker can be chosen."),
    ("cdb_add_target", "DB 대상 추가", "Add a database target"),
    ("cdb_target_name", "대상 이름 (클라이언트가 데이터베이스 이름으로 사용)", "Target name (clients give it as the database name)"),
    ("cdb_host", "호스트", "Host"),
    ("cdb_port", "포트", "Port"),
    ("cdb_tls_ca_file", "CA 파일 (verify-full)", "CA file (verify-full)"),
    ("cdb_target_saved", "DB 대상을 등록했습니다.", "The database target was registered."),
    ("cdb_target_deleted", "DB 대상을 삭제했습니다.", "The database target was deleted."),
    ("cdb_account_saved", "계정을 등록했습니다.", "The account was registered."),
    ("cdb_account_deleted", "계정을 삭제했습니다.", "The account was deleted."),
    ("cdb_simulate_help", "게이트웨이와 같은 분류기·정책 매칭·판정 함수로, 이 사용자가 지금 이 문장을 실행할 수 있는지와 그 이유를 보여 줍니다. 아무것도 실행하거나 바꾸지 않습니다.", "With the gateway's own classifier, policy matching and verdict function: whether this person could run this statement now, and why. Nothing is run or changed."),
    ("cdb_sql_statement", "SQL 문장", "SQL statement"),
    ("cdb_simulate", "시뮬레이션", "Simulate"),
    ("cdb_sim_result", "결과", "Result"),
    ("cdb_sim_allowed", "허용 (ALLOWED)", "ALLOWED"),
    ("cdb_sim_refused", "거부 (REFUSED)", "REFUSED"),
    ("cdb_sim_login", "로그인 허용", "Login admitted"),
    ("cdb_sim_dialect", "SQL 방언", "SQL dialect"),
    ("cdb_sim_needs", "필요한 권한", "Privileges needed"),
    ("cdb_sim_missing", "부족한 권한", "Missing"),
    ("cdb_sim_unclassifiable", "분류할 수 없음", "Could not be classified"),
    ("cdb_sim_attribute_names", "속성 표기 이름", "Names in attribute notation"),
    ("cdb_sim_catalog_yes", "대상 카탈로그 스냅샷으로 판정함", "decided by the target's catalog snapshot"),
    ("cdb_sim_catalog_no", "카탈로그 스냅샷이 없어 EXECUTE가 필요한 것으로 봄 (카탈로그를 읽지 못한 세션과 같음)", "no catalog snapshot yet, so each needs EXECUTE (as in a session that could not read it)"),
    ("cdb_sim_granted_by", "권한별 허용 정책", "Which policy grants each privilege"),
    ("cdb_sim_none", "없음", "none"),
    ("cdb_sim_matching", "일치하는 정책", "Matching policies"),
    ("cdb_yes", "예", "yes"),
    ("cdb_no", "아니요", "no"),
    ("cdb_chain", "해시 체인 검증", "Hash chain verification"),
    ("cdb_chain_ok", "무결 (INTACT)", "INTACT"),
    ("cdb_chain_broken", "손상 (BROKEN)", "BROKEN"),
    ("cdb_chain_checked", "검사한 이벤트", "events checked"),
    ("cdb_chain_last", "마지막 검증", "last checked"),
    ("cdb_chain_never", "아직 검증한 적이 없습니다.", "The chain has not been checked yet."),
    ("cdb_verify_now", "지금 검증", "Verify now"),
    ("cdb_verified_now", "체인을 검증했습니다. 결과는 아래와 같습니다.", "The chain was checked; the result is below."),
    ("cdb_a_action", "동작", "Action"),
    ("cdb_h_action", "정확한 동작 또는 접두어 (예: dbpolicy 는 dbpolicy.lock 포함)", "An action, or a prefix (dbpolicy matches dbpolicy.lock)"),
    ("cdb_h_target", "정확히 일치, 끝에 * 를 붙이면 접두어 (예: db-target:*)", "Exact, or a prefix ending in * (db-target:*)"),
    ("cdb_family", "계열", "Family"),
    ("cdb_outcome", "결과", "Outcome"),
    ("cdb_any", "전체", "any"),
    ("cdb_o_success", "성공", "success"),
    ("cdb_o_failure", "실패", "failure"),
    ("cdb_o_denied", "거부", "denied"),
    ("cdb_export_csv", "CSV로 내보내기 (필터 적용 전체)", "Export CSV (every filtered event)"),
    ("cdb_ungroup", "세션별 묶음 풀기", "Show statements one by one"),
    ("cdb_group_sessions", "게이트웨이 문장을 세션별로 묶기", "Group gateway statements by session"),
    ("cdb_shown", "이 페이지의 이벤트", "Events on this page"),
    ("cdb_time", "시각", "Time"),
    ("cdb_source_ip", "출발지 IP", "Source IP"),
    ("cdb_detail", "상세", "Detail"),
    ("cdb_gw_session", "게이트웨이 세션", "Gateway session"),
    ("cdb_whole_session", "이 세션의 모든 문장", "Every statement of this session"),
    ("cdb_statement", "문장", "Statement"),
    ("cdb_v_allowed", "허용", "allowed"),
    ("cdb_v_refused", "거부", "refused"),
    ("cdb_rows", "행", "rows"),
    ("cdb_paging", "페이지 이동", "Pages"),
    ("cdb_newer", "← 최신 이벤트", "← Newer events"),
    ("cdb_older", "이전 이벤트 →", "Older events →"),
    ("cdb_audit_event", "감사 이벤트", "Audit event"),
    ("cdb_back_to_audit", "감사 로그로", "Back to the audit log"),
    ("cdb_hashes", "해시 체인", "Hash chain"),
    ("cdb_hash", "해시", "Hash"),
    ("cdb_prev_hash", "이전 해시", "Previous hash"),
    // console-vault
    ("nav_vault", "자격 증명 금고", "Credential vault"),
    ("v_save", "저장", "Save"),
    ("v_delete", "삭제", "Delete"),
    ("v_reveal", "값 보기", "Reveal"),
    ("v_copy", "복사", "Copy"),
    ("v_unseal", "봉인 해제", "Unseal"),
    ("v_hide", "숨기기", "Hide"),
    ("v_state", "금고 상태", "Vault state"),
    ("v_seal", "봉인 상태", "Seal state"),
    ("v_sealed", "봉인됨 (SEALED)", "SEALED"),
    ("v_unsealed", "봉인 해제됨 (UNSEALED)", "UNSEALED"),
    ("v_sealed_help", "봉인된 동안에는 값을 읽거나 쓸 수 없습니다. 마스터 키를 적용하면 봉인이 해제됩니다.", "While the vault is sealed no value can be read or written. Applying the master key unseals it."),
    ("v_mode", "연결 모드", "Mode"),
    ("v_key_source", "마스터 키 출처", "Master key source"),
    ("v_unseal_title", "마스터 키로 봉인 해제", "Unseal with the master key"),
    ("v_master_key", "마스터 키", "Master key"),
    ("v_master_key_help", "32바이트를 base64로 적은 키입니다. 입력한 키는 화면, 로그, 감사 기록 어디에도 남지 않습니다.", "32 bytes in base64. The key you type is not kept on the page, in the log or in the audit."),
    ("v_mode_change", "연결 모드 변경", "Change the mode"),
    ("v_mode_help", "Express: 서버가 시작할 때 보관한 키로 스스로 봉인을 해제합니다. Manual: 시작할 때마다 봉인되며 보관한 키 파일을 지웁니다. 현재 마스터 키가 필요합니다.", "Express: the server unseals itself at start with a key it keeps. Manual: sealed after every start, and the kept key file is deleted. The current master key is needed."),
    ("v_mode_apply", "모드 변경", "Change mode"),
    ("v_lockers", "보관함", "Lockers"),
    ("v_locker", "보관함", "Locker"),
    ("v_no_lockers", "볼 수 있는 보관함이 없습니다.", "No locker you can see."),
    ("v_your_perms", "내 권한", "Your permissions"),
    ("v_members", "구성원", "Members"),
    ("v_consumers", "소비자 역할", "Consumer roles"),
    ("v_consumers_help", "이 역할을 가진 사용자는 보관함의 자격 증명과 그 값을 읽을 수 있습니다.", "Users holding these roles may read the locker's credentials and their values."),
    ("v_credentials", "자격 증명", "Credentials"),
    ("v_credential", "자격 증명", "Credential"),
    ("v_no_credentials", "볼 수 있는 자격 증명이 없습니다.", "No credential you can see."),
    ("v_attributes", "속성", "Attributes"),
    ("v_attribute", "속성", "Attribute"),
    ("v_attributes_values", "속성과 값", "Attributes and values"),
    ("v_completed", "내 값", "Your values"),
    ("v_complete", "모두 있음", "complete"),
    ("v_incomplete", "빠진 값 있음", "incomplete"),
    ("v_new_locker", "새 보관함", "New locker"),
    ("v_create_locker", "보관함 만들기", "Create locker"),
    ("v_new_credential", "새 자격 증명", "New credential"),
    ("v_create_credential", "자격 증명 만들기", "Create credential"),
    ("v_attr_help", "이름을 적은 줄만 속성이 됩니다. 표준 속성은 값이 하나(소유자가 입력), 사용자별 속성은 사용자마다 자기 값을 입력합니다.", "Only rows with a name become attributes. A standard attribute has one value (set by the owner); a per-user attribute holds each user's own value."),
    ("v_new_attribute", "새 속성", "New attribute"),
    ("v_kind", "종류", "Kind"),
    ("v_standard", "표준 (값 하나)", "Standard (one value)"),
    ("v_user_provided", "사용자별 (userProvided)", "Per user (userProvided)"),
    ("v_masked", "마스킹", "Masked"),
    ("v_value", "값", "Value"),
    ("v_change_value", "값 입력·변경", "Set or change"),
    ("v_reveal_help", "값은 가려져 있고, 이 화면을 여는 것만으로는 어떤 값도 읽지 않습니다. 값 보기와 복사는 누를 때마다 감사 기록에 남는 읽기입니다.", "Values are masked, and opening this page reads none of them. Each Reveal and each Copy is a read recorded in the audit at that moment."),
    ("v_remask_after", "보인 값이 다시 가려지기까지:", "A revealed value is masked again after"),
    ("v_shown_static", "표시 중 (다른 화면으로 가면 사라집니다)", "Shown (gone when you leave this page)"),
    ("v_masked_now", "가려짐", "Masked"),
    ("v_shown_now", "표시 중, 다시 가려지기까지", "Shown; masked again in"),
    ("v_copied", "클립보드에 복사했습니다 (감사 기록됨).", "Copied to the clipboard (audited)."),
    ("v_reveal_failed", "값을 읽지 못했습니다:", "The value could not be read:"),
    ("v_values_sealed", "금고가 봉인되어 값을 읽거나 쓸 수 없습니다. 봉인이 해제되면 값 보기를 사용할 수 있습니다.", "The vault is sealed: values cannot be read or written. Reveal works again once it is unsealed."),
    ("v_sealed_value", "봉인됨: 읽을 수 없음", "Sealed: cannot be read"),
    ("v_value_changed", "마지막 변경", "Last changed"),
    ("v_no_value", "값이 없습니다.", "No value yet."),
    ("v_no_own_value", "내 값이 아직 없습니다.", "You have no value yet."),
    ("v_new_value_for", "새 값:", "New value for"),
    ("v_value_for", "값:", "Value for"),
    ("v_your_value_for", "내 값:", "Your value for"),
    ("v_owner_sets", "표준 속성의 값은 소유자가 입력합니다.", "The owner sets a standard attribute's value."),
    ("v_you_are", "나와의 관계", "You are"),
    ("vw_owner", "소유자", "owner"),
    ("vw_consumer", "소비자 역할 보유", "consumer"),
    ("vw_locker_admin_member", "보관함 관리 구성원", "managing member of its locker"),
    ("vw_admin", "보관함 관리자 (Locker Admin)", "Locker Admin"),
    ("vw_no_values", "이 자격 증명의 값은 소유자와 보관함 소비자 역할만 읽을 수 있습니다. 보관함이나 자격 증명을 관리하는 권한으로는 값을 읽을 수 없습니다.", "The values of this credential are for its owner and the consumers of its locker only; administering lockers or credentials never grants reading them."),
    ("v_in_locker", "이 자격 증명이 있는 보관함:", "This credential is in the locker"),
    ("v_not_in_locker", "보관함에 들어 있지 않습니다.", "It is in no locker."),
    ("v_put_in_locker", "보관함에 넣기", "Put into locker"),
    ("v_put_in", "내 자격 증명 넣기", "Put in a credential"),
    ("v_take_out", "보관함에서 빼기", "Take out of the locker"),
    ("v_add", "추가", "Add"),
    ("v_remove", "제거", "Remove"),
    ("v_add_member", "구성원 추가·권한 변경", "Add a member or change permissions"),
    ("v_add_consumer", "소비자 역할 추가", "Add consumer role"),
    ("v_user", "사용자", "User"),
    ("v_user_help", "사용자 ID, 또는 #번호", "User ID, or #number"),
    ("v_you", "나", "you"),
    ("v_perms", "권한", "Permissions"),
    ("vp_own", "소유 (own)", "own"),
    ("vp_manage", "관리 (manage)", "manage"),
    ("vp_participate", "참여 (participate)", "participate"),
    ("v_edit_locker", "보관함 수정", "Edit locker"),
    ("v_delete_locker", "보관함 삭제", "Delete locker"),
    ("v_delete_confirm", "이 보관함을 삭제합니다 (비어 있어야 합니다)", "Delete this locker (it must be empty)"),
    ("v_edit_credential", "자격 증명 수정", "Edit credential"),
    ("v_delete_credential", "자격 증명 삭제", "Delete credential"),
    ("v_delete_confirm_cred", "속성과 모든 값을 함께 삭제합니다", "Delete it with its attributes and all values"),
    ("v_transfer", "소유자 이전", "Transfer owner"),
    ("v_new_owner", "새 소유자", "New owner"),
    ("v_transfer_button", "이전", "Transfer"),
    ("v_conflict", "충돌: 이 화면을 연 뒤 다른 사람이 먼저 바꿨습니다.", "Conflict: someone changed this after you opened the page."),
    ("v_conflict_help", "저장되지 않았고, 입력한 내용은 아래에 그대로 있습니다. 확인한 뒤 다시 저장하면 내 입력이 적용됩니다.", "Nothing was saved, and what you typed is kept below. Check it, then save again to apply your input."),
    ("v_now_stored", "지금 저장된 내용", "Stored now"),
    ("v_merged", "내가 바꾸지 않은 칸은 지금 저장된 내용으로 채웠고, 양쪽이 모두 바꾼 칸은 아래에 지금 저장된 내용을 함께 보여 줍니다.", "Fields you did not change now show what is stored; where both of you changed a field, what is stored now is shown under it."),
    ("v_refused", "처리하지 않았습니다 (아무것도 바뀌지 않음):", "Not done (nothing changed):"),
    ("vd_unchanged", "바뀐 내용이 없습니다.", "Nothing to change."),
    ("vd_unsealed", "금고의 봉인을 해제했습니다.", "The vault is unsealed."),
    ("vd_mode_changed", "연결 모드를 바꿨습니다.", "The mode is changed."),
    ("vd_locker_created", "보관함을 만들었습니다.", "Locker created."),
    ("vd_locker_saved", "보관함을 저장했습니다.", "Locker saved."),
    ("vd_locker_deleted", "보관함을 삭제했습니다.", "Locker deleted."),
    ("vd_member_saved", "구성원 권한을 저장했습니다.", "Member saved."),
    ("vd_member_removed", "구성원을 제거했습니다.", "Member removed."),
    ("vd_consumer_added", "소비자 역할을 추가했습니다.", "Consumer role added."),
    ("vd_consumer_removed", "소비자 역할을 제거했습니다.", "Consumer role removed."),
    ("vd_cred_added", "자격 증명을 보관함에 넣었습니다.", "Credential put into the locker."),
    ("vd_cred_removed", "자격 증명을 보관함에서 뺐습니다.", "Credential taken out of the locker."),
    ("vd_cred_created", "자격 증명을 만들었습니다. 이제 값을 입력하세요.", "Credential created. Now set its values."),
    ("vd_cred_saved", "자격 증명을 저장했습니다.", "Credential saved."),
    ("vd_cred_transferred", "소유자를 이전했습니다.", "Owner transferred."),
    ("vd_cred_deleted", "자격 증명을 삭제했습니다.", "Credential deleted."),
    ("vd_value_saved", "값을 저장했습니다.", "Value saved."),
    ("vd_value_deleted", "값을 삭제했습니다.", "Value deleted."),
];

impl Lang {
    /// The text of `key` in this language; the key itself when there is none (a unit test
    /// keeps that from happening in a template).
    pub fn t(&self, key: &str) -> &'static str {
        match TEXT.iter().find(|(k, _, _)| *k == key) {
            Some((_, ko, en)) => match self {
                Lang::Ko => ko,
                Lang::En => en,
            },
            None => "?",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "ko" => Some(Lang::Ko),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language of a request: the user's choice, else the browser's first preference
    /// between Korean and English, else Korean.
    pub fn of_headers(headers: &HeaderMap) -> Lang {
        if let Some(l) = cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
            return l;
        }
        let Some(accept) = headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
        else {
            return Lang::Ko;
        };
        let mut best: Option<(f32, Lang)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let lang = if tag == "ko" || tag.starts_with("ko-") {
                Lang::Ko
            } else if tag == "en" || tag.starts_with("en-") {
                Lang::En
            } else {
                continue;
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::Ko, |(_, l)| l)
    }

    pub fn of_parts(parts: &Parts) -> Lang {
        Lang::of_headers(&parts.headers)
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_once_and_complete_in_both_languages() {
        let mut seen = std::collections::HashSet::new();
        for (k, ko, en) in TEXT {
            assert!(seen.insert(*k), "key {k} is twice in TEXT");
            assert!(!ko.is_empty() && !en.is_empty(), "key {k} lacks a text");
        }
    }

    /// Every `t("...")` in a template names a key of [`TEXT`].
    #[test]
    fn every_key_a_template_uses_exists() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/console");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("t(\"").skip(1) {
                let key = &piece[..piece.find('"').unwrap()];
                assert!(
                    TEXT.iter().any(|(k, _, _)| *k == key),
                    "{}: key {key:?} is not in TEXT",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} keys found in the templates");
    }

    #[test]
    fn accept_language_picks_the_preferred_of_korean_and_english() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::ACCEPT_LANGUAGE, v.parse().unwrap());
            Lang::of_headers(&m)
        };
        assert_eq!(h("en-US,en;q=0.9"), Lang::En);
        assert_eq!(h("ko-KR,en;q=0.5"), Lang::Ko);
        assert_eq!(h("fr, en;q=0.3, ko;q=0.2"), Lang::En);
        assert_eq!(h("fr"), Lang::Ko);
        assert_eq!(Lang::of_headers(&HeaderMap::new()), Lang::Ko);
        let mut m = HeaderMap::new();
        m.insert(axum::http::header::ACCEPT_LANGUAGE, "en".parse().unwrap());
        m.insert(
            axum::http::header::COOKIE,
            "a=b; haechi_lang=ko".parse().unwrap(),
        );
        assert_eq!(Lang::of_headers(&m), Lang::Ko);
    }
}
